"""Multi-timeframe aggregator: ``bars.1m`` -> ``bars.3m|5m|15m|30m|60m`` + ``bars_{tf}m``.

Buckets are anchored to the session open (09:15 IST for NSE/BSE), so 60 m bars
are 09:15-10:15, ..., 14:15-15:15, 15:15-15:30 (the last one truncated at the
close); see :mod:`compute.sessions`.

Optional vendor verification (off by default): ``--verify-vendor kite`` compares
closed bars with Kite's historical candles of the same interval in a background
thread, counts and logs mismatches, and only with ``--verify-correct`` replaces
our values, recording each correction; see :mod:`compute.vendor_verify_runner`.

    python -m compute.bar_aggregator_1m_to_multi [--tfs 3m,5m,15m,30m,60m] [--grace-ms 0]
        [--verify-vendor kite [--verify-every-s 300] [--verify-lag-s 120]
         [--verify-tolerance price=0ticks,volume=0%] [--verify-correct]]
"""

from __future__ import annotations

import argparse
import sys

from compute import holds
from compute.bar_rollup import BarRollup
from compute.bar_service import check_args, make_parser
from compute.bars import MULTI_MINUTE_TFS
from compute.rollup_service import RollupService, add_silent_flag, check_hold_rule
from compute.vendor_verify_runner import (
    VendorCheckConfig,
    VendorCheckThread,
    add_vendor_flags,
    start_vendor_check,
    vendor_config,
)
from core.metrics import Metrics
from core.service import run_service
from core.settings import Settings
from core.topics import bars_topic


class BarAggregatorMulti(RollupService):
    """1 m bars to session-anchored multi-minute bars."""

    name = "bar_aggregator_1m_to_multi"
    group_id = "bar_aggregator_1m_to_multi"
    input_topic = bars_topic("1m")
    source_tf = "1m"
    target_tfs = MULTI_MINUTE_TFS
    state_tfs = MULTI_MINUTE_TFS
    #: Must exceed the 1m aggregator's longest hold of a quiet instrument's bar (its wall grace, a stall
    #: of up to its silent close, the builder's hold and restarts; derived in compute.holds), so a quiet
    #: instrument's last 1m bar is never late here.
    wall_default = holds.AGG_MULTI_WALL_GRACE_MS
    #: 1 m bars come once a minute per instrument (all at about the same time): a shorter window would
    #: stop the gate's clock between every two minutes and leave it ever further behind.
    live_window_ms = holds.LIVE_WINDOW_MULTI_MS

    def __init__(self, settings: Settings, metrics: Metrics, args: argparse.Namespace,
                 verify: VendorCheckConfig | None = None) -> None:
        super().__init__(settings, metrics, args)
        self.verify = verify
        self.verifier: VendorCheckThread | None = None

    def start(self) -> None:
        super().start()
        if self.verify is not None and self.verifier is None:
            # Its own thread, DB connection and Kite client: a slow vendor never holds up the bars.
            assert isinstance(self.core, BarRollup)  # the same sessions as the bars it checks
            self.verifier = start_vendor_check(self.verify, self.settings, self.metrics, self.core.calendar)

    def stop(self) -> None:
        if self.verifier is not None:
            self.verifier.stop()
        super().stop()


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    ap = make_parser("python -m compute.bar_aggregator_1m_to_multi", __doc__.splitlines()[0],
                     "AGG_GRACE_MS", holds.AGG_GRACE_MS, holds.AGG_MULTI_WALL_GRACE_MS, "AGG_MULTI_WALL_GRACE_MS")
    ap.add_argument("--tfs", default=",".join(MULTI_MINUTE_TFS),
                    help="comma-separated target timeframes (default: all of 3m,5m,15m,30m,60m)")
    add_silent_flag(ap, "AGG_MULTI_SILENT_CLOSE_MS", holds.AGG_MULTI_SILENT_CLOSE_MS)
    add_vendor_flags(ap)
    args = ap.parse_args(argv)
    check_args(ap, args)
    check_hold_rule(args, "multi")
    tfs = tuple(t.strip() for t in args.tfs.split(",") if t.strip())
    bad = [t for t in tfs if t not in MULTI_MINUTE_TFS]
    if bad or not tfs:
        ap.error(f"--tfs: unknown timeframe(s) {', '.join(bad) or '(none given)'}; "
                 f"choose from {','.join(MULTI_MINUTE_TFS)}")

    verify = vendor_config(ap, args, tfs)

    class Configured(BarAggregatorMulti):
        target_tfs = tfs
        state_tfs = tfs

    return run_service(lambda s, m: Configured(s, m, args, verify), BarAggregatorMulti.name)


if __name__ == "__main__":
    sys.exit(main())
