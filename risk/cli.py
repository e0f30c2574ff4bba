"""The command line both risk services share: ``--budget`` and ``--group``, then the service runtime."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from core.metrics import Metrics
from core.service import run_service
from core.settings import Settings
from risk.config import default_path, load_budget


def run_risk_service(cls: Any, prog: str, doc: str, argv: list[str] | None = None) -> int:
    """Parse the shared flags and run ``cls(settings, metrics, budget)`` until SIGTERM."""
    ap = argparse.ArgumentParser(prog=prog, description=doc.splitlines()[0])
    ap.add_argument("--budget", type=Path, default=None,
                    help="risk policy (env RISK_BUDGET, default <config dir>/risk_budget.yaml)")
    ap.add_argument("--group", help=f"consumer group id (default {cls.group_id})")
    args = ap.parse_args(argv)

    def factory(settings: Settings, metrics: Metrics) -> Any:
        svc = cls(settings, metrics, load_budget(args.budget or default_path()))
        if args.group:
            svc.group_id = args.group
        return svc

    return run_service(factory, cls.name)
