"""core.check_config: layers register their config checks; core imports no layer; no file goes unchecked."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from core.check_config import CORE_CHECKS, registered_checks, unchecked_files

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"


def _run(config_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "core.check_config", "--config-dir", str(config_dir)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_core_check_config_imports_no_layer():
    code = ("import sys, core.check_config\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'orchestrator', 'compute', 'ingestion', "
            "'kitesim', 'strategy', 'risk', 'execution', 'monitoring', 'backtest'}))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_layers_checks_are_found_through_the_entry_points():
    names = [name for name, _ in registered_checks()]
    assert names[: len(CORE_CHECKS)] == [name for name, _ in CORE_CHECKS]
    assert "process_supervisor.yaml" in names  # orchestrator's, via pyproject's entry point
    assert len(names) == len(set(names))


def test_every_registered_shipped_config_is_valid():
    for name, check in registered_checks():
        check(CONFIGS / name)  # raises ConfigError if not


def _registered_copy(tmp_path: Path) -> Path:
    d = tmp_path / "configs"
    d.mkdir()
    for name, _ in registered_checks():
        if not Path(name).is_absolute():  # a file outside the config dir (strategy/registry.yaml) stays put
            shutil.copy(CONFIGS / name, d / name)
    return d


def test_cli_ok_on_the_registered_files(tmp_path):
    d = _registered_copy(tmp_path)
    r = _run(d)
    assert r.returncode == 0, r.stderr
    outside = [name for name, _ in registered_checks() if Path(name).is_absolute()]
    assert outside == [str(ROOT / "strategy" / "registry.yaml")]
    assert sorted(line.split()[1] for line in r.stdout.splitlines()) == sorted(
        [str(p) for p in d.iterdir()] + outside)


def test_a_config_file_without_a_check_fails(tmp_path):
    d = _registered_copy(tmp_path)
    (d / "strategies.yaml").write_text("a: 1\n")
    assert unchecked_files(d, registered_checks()) == [d / "strategies.yaml"]
    r = _run(d)
    assert r.returncode == 2
    assert f"{d / 'strategies.yaml'}: no check registered" in r.stderr


def test_a_bad_layer_file_is_one_line_naming_it(tmp_path):
    d = _registered_copy(tmp_path)
    (d / "process_supervisor.yaml").write_text("services: [unclosed\n")
    r = _run(d)
    assert r.returncode == 2
    errors = [line for line in r.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "process_supervisor.yaml" in errors[0]
