"""1-second bar builder: ``ticks`` -> ``bars.1s`` + ``bars_1s``.

Exact, order-independent bar semantics live in :mod:`compute.bars` and
:class:`compute.tick_to_bar.BarBuilder`. Bars close on event time (bucket end +
grace) and, for quiet instruments, on wall time. The commit watermark never
passes a tick whose bar is not yet emitted, so ``kill -9`` at any moment loses
no bar and duplicates none (replays upsert identical rows).

    python -m compute.bar_builder_1s [--grace-ms 2000] [--wall-grace-ms 2000]
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from compute.bar_service import BarService, check_args, make_parser
from compute.tick_to_bar import BarBuilder
from core.service import run_service
from core.topics import TICKS


class BarBuilderService(BarService):
    """Ticks to 1 s bars."""

    name = "bar_builder_1s"
    group_id = "bar_builder_1s"
    input_topic = TICKS
    state_tfs = ("1s",)
    batch_size = 10000

    def build_core(self) -> BarBuilder:
        if self.args.group:
            self.group_id = self.args.group
        return BarBuilder(grace_ms=self.args.grace_ms, wall_grace_ms=self.args.wall_grace_ms)

    def restore(self, state: Sequence[tuple[str, int, int, int | None]], partitions: dict[int, int]) -> None:
        for _tf, token, last_ts, cum in state:
            self.core.restore(token, last_ts, cum, partitions[token])

    def late_and_dups(self) -> tuple[int, int]:
        return self.core.late_ticks, self.core.duplicate_ticks


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    ap = make_parser("python -m compute.bar_builder_1s", __doc__.splitlines()[0], "BAR_GRACE_MS", 2000, 2000,
                     "BAR_WALL_GRACE_MS")
    args = ap.parse_args(argv)
    check_args(ap, args)
    return run_service(lambda s, m: BarBuilderService(s, m, args), BarBuilderService.name)


if __name__ == "__main__":
    sys.exit(main())
