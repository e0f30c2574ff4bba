"""The rollup stream service both aggregators run: child bars -> parent bars (:class:`compute.bar_rollup.BarRollup`).

:mod:`compute.bar_aggregator_1m` (1s -> 1m) and :mod:`compute.bar_aggregator_1m_to_multi`
(1m -> 3m..60m) subclass :class:`RollupService` with their topics, timeframes and
wall-clock defaults (derived in :mod:`compute.holds`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from compute import holds
from compute.bar_rollup import BarRollup
from compute.bar_service import BarService, WallClockGate
from core.cli import env_int


class RollupService(BarService):
    """Rolls ``source_tf`` bars into ``target_tfs``."""

    source_tf = "1s"
    target_tfs: Sequence[str] = ("1m",)
    #: Must exceed what the builder can hold a 1 s bar back, its restarts included (compute.holds).
    wall_default = holds.AGG_1M_WALL_GRACE_MS
    #: Input quiet longer than this is a stall (1 s bars arrive every second while the builder runs).
    live_window_ms = holds.LIVE_WINDOW_MS

    def build_core(self) -> BarRollup:
        if self.args.group:
            self.group_id = self.args.group
        wall = self.args.wall_grace_ms if self.args.wall_grace_ms is not None else self.wall_default
        return BarRollup(self.source_tf, self.target_tfs, grace_ms=self.args.grace_ms, wall_grace_ms=wall)

    def build_gate(self) -> WallClockGate:
        return WallClockGate(self.live_window_ms, self.args.silent_close_ms)

    def restore(self, state: Sequence[tuple[str, int, int, int | None]], partitions: dict[int, int]) -> None:
        for tf, token, last_ts, _cum in state:
            self.core.restore(token, tf, last_ts, partitions[token])

    def late_and_dups(self) -> tuple[int, int]:
        return self.core.late_bars, self.core.duplicate_bars


def add_silent_flag(ap: argparse.ArgumentParser, env: str = "AGG_SILENT_CLOSE_MS",
                    default: int = holds.AGG_SILENT_CLOSE_MS) -> None:
    """``--silent-close-ms``: close quiet bars by wall time only after the whole input was silent this long."""
    ap.add_argument("--silent-close-ms", type=int, default=env_int(env, default),
                    help="when no input at all arrives (upstream restarting or session over), wait this long "
                         f"before closing bars by wall time (env {env}, default {default})")


def check_hold_rule(args: argparse.Namespace, stage: str) -> None:
    """Exit 2 with one line when this stage's knobs break the hold rule (:func:`compute.holds.check_chain`).

    The upstream stages' knobs come from the same environment the supervisor gives every bar
    service; this stage's flags override its own. ``BAR_HOLD_RULE=warn`` prints the line and goes on.
    """
    wall, silent = (("agg_1m_wall_grace_ms", "agg_silent_close_ms") if stage == "1m"
                    else ("agg_multi_wall_grace_ms", "agg_multi_silent_close_ms"))
    try:
        knobs = holds.knobs_from_env(**{wall: args.wall_grace_ms, "agg_grace_ms": args.grace_ms,
                                        silent: args.silent_close_ms})
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    problems = holds.check_chain(knobs, stage)
    if not problems:
        return
    if os.environ.get("BAR_HOLD_RULE") == "warn":
        print(f"warning: unsafe wall-clock knobs (BAR_HOLD_RULE=warn): {problems[0]}", file=sys.stderr)
        return
    print(f"error: unsafe wall-clock knobs: {problems[0]} (see compute/holds.py)", file=sys.stderr)
    raise SystemExit(2)
