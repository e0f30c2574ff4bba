"""Validate every config file the stack reads (``make check-config``).

Prints one line per file (``ok`` or the one-line error) and exits 2 if any is bad,
or if a file in the config directory has no check (so a new config cannot go
unvalidated).

Checks are registered, not imported from the layers: each layer lists its files in
a module-level ``CONFIG_CHECKS`` (a list of :data:`ConfigCheck`) and names that
list in ``pyproject.toml``::

    [project.entry-points."tradestack.config_checks"]
    orchestrator = "orchestrator.config:CONFIG_CHECKS"

A check's file name is relative to the config directory (``--config-dir``), or an
absolute path for a file that lives with its layer (``strategy/registry.yaml``).
Core's own files are in :data:`CORE_CHECKS` below. A new entry point is seen after
``make setup`` (which re-runs when pyproject.toml changes; ``make check-config`` runs it).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from pathlib import Path

from core.config import load_config
from core.errors import ConfigError
from core.settings import load_settings

ConfigCheck = tuple[str, Callable[[Path], object]]
"""``(file name in the config directory, loader that raises a one-line ConfigError)``."""

ENTRY_POINT_GROUP = "tradestack.config_checks"


def _universe(path: Path) -> object:
    from core.universe import load_universe

    return load_universe(path)


def _docker_stack(path: Path) -> object:
    from core.docker_env import DockerStack

    return load_config(path, DockerStack)


def _sessions(path: Path) -> object:
    from core.sessions import parse_calendar

    return parse_calendar(path)


CORE_CHECKS: list[ConfigCheck] = [
    ("tokens.csv", _universe),
    ("sessions.yaml", _sessions),
    ("docker_stack.json", _docker_stack),
]


def registered_checks() -> list[ConfigCheck]:
    """Core's checks, then every layer's ``CONFIG_CHECKS`` found through the entry points (sorted by name)."""
    checks = list(CORE_CHECKS)
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            layer = ep.load()
        except ImportError as exc:
            raise ConfigError(f"config checks {ep.name} ({ep.value}): cannot import: {exc}") from None
        checks += list(layer)
    names = [name for name, _ in checks]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"config checks: more than one check for {', '.join(dup)}")
    return checks


def unchecked_files(config_dir: Path, checks: Iterable[ConfigCheck]) -> list[Path]:
    """Config files (``*.yaml``, ``*.yml``, ``*.json``, ``*.csv``) in ``config_dir`` that no check covers."""
    known = {name for name, _ in checks}
    kinds = {".yaml", ".yml", ".json", ".csv"}
    return sorted(p for p in config_dir.iterdir() if p.suffix in kinds and p.name not in known)


def run_checks(config_dir: Path, checks: list[ConfigCheck]) -> int:
    """Check every registered file; returns the number of problems (each printed as one line)."""
    bad = 0
    for name, check in checks:
        path = config_dir / name
        try:
            check(path)
            print(f"ok    {path}")
        except ConfigError as exc:
            bad += 1
            print(f"error {exc}", file=sys.stderr)
    for path in unchecked_files(config_dir, checks) if config_dir.is_dir() else []:
        bad += 1
        print(f"error {path}: no check registered for this file (add it to a CONFIG_CHECKS list, "
              "see core/check_config.py)", file=sys.stderr)
    return bad


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    ap = argparse.ArgumentParser(prog="python -m core.check_config", description=__doc__.splitlines()[0])
    ap.add_argument("--config-dir", type=Path, help="default: TRADESTACK_CONFIG_DIR or configs/")
    args = ap.parse_args(argv)
    try:
        settings = load_settings()
        checks = registered_checks()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 2 if run_checks(args.config_dir or settings.config_dir, checks) else 0


if __name__ == "__main__":
    sys.exit(main())
