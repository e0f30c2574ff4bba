"""1-minute aggregator: ``bars.1s`` -> ``bars.1m`` + ``bars_1m``.

Rolls clock-aligned 1 s bars into 1 m bars with :class:`compute.bar_rollup.BarRollup`
(open of the first child, close of the last, max/min, summed volume and ticks).
A parent closes when child event time passes its end + grace, or by wall time
for a quiet instrument; replayed children are deduplicated by their ``ts``.

    python -m compute.bar_aggregator_1m [--grace-ms 0] [--wall-grace-ms 20000] [--silent-close-ms 30000]

The wall-clock defaults and the rule they obey are derived in :mod:`compute.holds`; a
configuration that breaks the rule exits 2 with one line (``BAR_HOLD_RULE=warn`` only warns,
for a stage fed directly by a test or a replay rather than by the upstream stage).
"""

from __future__ import annotations

import sys

from compute import holds
from compute.bar_service import check_args, make_parser
from compute.rollup_service import RollupService, add_silent_flag, check_hold_rule
from core.service import run_service
from core.topics import bars_topic


class BarAggregator1m(RollupService):
    """1 s bars to 1 m bars."""

    name = "bar_aggregator_1m"
    group_id = "bar_aggregator_1m"
    input_topic = bars_topic("1s")
    state_tfs = ("1m",)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    ap = make_parser("python -m compute.bar_aggregator_1m", __doc__.splitlines()[0], "AGG_GRACE_MS",
                     holds.AGG_GRACE_MS, holds.AGG_1M_WALL_GRACE_MS, "AGG_1M_WALL_GRACE_MS")
    add_silent_flag(ap)
    args = ap.parse_args(argv)
    check_args(ap, args)
    check_hold_rule(args, "1m")
    return run_service(lambda s, m: BarAggregator1m(s, m, args), BarAggregator1m.name)


if __name__ == "__main__":
    sys.exit(main())
