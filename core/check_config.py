"""Validate every config file the stack reads (``make check-config``).

Prints one line per file (``ok`` or the one-line error) and exits 2 if any is bad.
Each layer registers its files here as it grows.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.config import load_config
from core.errors import ConfigError
from core.settings import load_settings


def _checks(config_dir: Path) -> list[tuple[Path, Callable[[Path], Any]]]:
    from core.docker_env import DockerStack
    from core.universe import load_universe
    from orchestrator.config import load_supervisor_config

    return [
        (config_dir / "process_supervisor.yaml", lambda p: load_supervisor_config(p)),
        (config_dir / "tokens.csv", load_universe),
        (config_dir / "docker_stack.json", lambda p: load_config(p, DockerStack)),
    ]


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    ap = argparse.ArgumentParser(prog="python -m core.check_config", description=__doc__.splitlines()[0])
    ap.add_argument("--config-dir", type=Path, help="default: TRADESTACK_CONFIG_DIR or configs/")
    args = ap.parse_args(argv)
    bad = 0
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    config_dir = args.config_dir or settings.config_dir
    for path, check in _checks(config_dir):
        try:
            check(path)
            print(f"ok    {path}")
        except ConfigError as exc:
            bad += 1
            print(f"error {exc}", file=sys.stderr)
    return 2 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
