"""1-minute aggregator: ``bars.1s`` -> ``bars.1m`` + ``bars_1m``.

Rolls clock-aligned 1 s bars into 1 m bars with :class:`compute.bar_rollup.BarRollup`
(open of the first child, close of the last, max/min, summed volume and ticks).
A parent closes when child event time passes its end + grace, or by wall time
for a quiet instrument; replayed children are deduplicated by their ``ts``.

    python -m compute.bar_aggregator_1m [--grace-ms 0] [--wall-grace-ms 6000] [--silent-close-ms 30000]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from compute.bar_rollup import BarRollup
from compute.bar_service import BarService, WallClockGate, check_args, env_int, make_parser
from core.service import run_service
from core.topics import bars_topic


class RollupService(BarService):
    """Rolls ``source_tf`` bars into ``target_tfs``."""

    source_tf = "1s"
    target_tfs: Sequence[str] = ("1m",)
    #: 1 s bars arrive every second while the builder runs; its longest hold is grace + wall grace (~4 s).
    wall_default = 6000

    def build_core(self) -> BarRollup:
        if self.args.group:
            self.group_id = self.args.group
        wall = self.args.wall_grace_ms if self.args.wall_grace_ms is not None else self.wall_default
        return BarRollup(self.source_tf, self.target_tfs, grace_ms=self.args.grace_ms, wall_grace_ms=wall)

    def build_gate(self) -> WallClockGate:
        return WallClockGate(LIVE_WINDOW_MS, self.args.silent_close_ms)

    def restore(self, state: Sequence[tuple[str, int, int, int | None]], partitions: dict[int, int]) -> None:
        for tf, token, last_ts, _cum in state:
            self.core.restore(token, tf, last_ts, partitions[token])

    def late_and_dups(self) -> tuple[int, int]:
        return self.core.late_bars, self.core.duplicate_bars


#: Input silent longer than this means the upstream is paused: the gate's clock stops.
LIVE_WINDOW_MS = 5000


def add_silent_flag(ap: argparse.ArgumentParser) -> None:
    """``--silent-close-ms``: close quiet bars by wall time only after the whole input was silent this long."""
    ap.add_argument("--silent-close-ms", type=int, default=env_int("AGG_SILENT_CLOSE_MS", 30000),
                    help="when no input at all arrives (upstream restarting or session over), wait this long "
                         "before closing bars by wall time (env AGG_SILENT_CLOSE_MS, default 30000)")


class BarAggregator1m(RollupService):
    """1 s bars to 1 m bars."""

    name = "bar_aggregator_1m"
    group_id = "bar_aggregator_1m"
    input_topic = bars_topic("1s")
    state_tfs = ("1m",)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    ap = make_parser("python -m compute.bar_aggregator_1m", __doc__.splitlines()[0], "AGG_GRACE_MS", 0, 6000,
                     "AGG_1M_WALL_GRACE_MS")
    add_silent_flag(ap)
    args = ap.parse_args(argv)
    check_args(ap, args)
    return run_service(lambda s, m: BarAggregator1m(s, m, args), BarAggregator1m.name)


if __name__ == "__main__":
    sys.exit(main())
