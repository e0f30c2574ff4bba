"""Run the production bar cores chained in-process: ticks -> 1s -> 1m -> 3m..60m.

Used by the unit tests to compare against :mod:`tests.reference.bars_pandas`.
Offsets are the tick's position in the stream (one partition per stream unless
``partition_of`` says otherwise); the wall clock, when simulated, is each
tick's ``_arrival_ms`` (see :mod:`tests.reference.tickgen`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from compute.bar_builder_core import BarBuilder
from compute.bar_rollup import BarRollup
from compute.bars import MULTI_MINUTE_TFS, Bar


@dataclass
class Chain:
    """Builder + 1m rollup + multi rollup wired like the services, bars collected per tf (upsert)."""

    grace_ms: int = 2000
    builder_wall_grace_ms: int = 2000
    rollup_1m_wall_grace_ms: int = 8000
    rollup_multi_wall_grace_ms: int = 20000
    builder: BarBuilder = field(init=False)
    r1m: BarRollup = field(init=False)
    rmulti: BarRollup = field(init=False)
    bars: dict[tuple[int, str, int], Bar] = field(default_factory=dict, init=False)
    emitted: list[Bar] = field(default_factory=list, init=False)
    _off1: int = field(default=0, init=False)
    _off2: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.builder = BarBuilder(self.grace_ms, self.builder_wall_grace_ms)
        self.r1m = BarRollup("1s", ["1m"], wall_grace_ms=self.rollup_1m_wall_grace_ms)
        self.rmulti = BarRollup("1m", list(MULTI_MINUTE_TFS), wall_grace_ms=self.rollup_multi_wall_grace_ms)

    def _collect(self, bars: Iterable[Bar]) -> None:
        for bar in bars:
            self.emitted.append(bar)
            self.bars[bar.key] = bar

    def step(self, now_ms: int | None) -> None:
        """One service poll cycle for each stage: advance and pass the emitted bars downstream."""
        out1s = self.builder.advance(now_ms)
        self._collect(out1s)
        for bar in out1s:
            self.r1m.add(bar, 0, self._off1)
            self._off1 += 1
        out1m = self.r1m.advance(now_ms)
        self._collect(out1m)
        for bar in out1m:
            self.rmulti.add(bar, 0, self._off2)
            self._off2 += 1
        self._collect(self.rmulti.advance(now_ms))

    def finish(self) -> None:
        """End of stream: close everything, stage by stage."""
        self.step(None)
        for bar in self.builder.close_all():
            self._collect([bar])
            self.r1m.add(bar, 0, self._off1)
            self._off1 += 1
        for bar in self.r1m.advance(None) + self.r1m.close_all():
            self._collect([bar])
            self.rmulti.add(bar, 0, self._off2)
            self._off2 += 1
        self._collect(self.rmulti.advance(None) + self.rmulti.close_all())

    def by_tf(self) -> dict[str, list[tuple[Any, ...]]]:
        """Collected bars as sorted row tuples per timeframe."""
        out: dict[str, list[tuple[Any, ...]]] = {}
        for key in sorted(self.bars, key=lambda k: (k[1], k[0], k[2])):
            out.setdefault(key[1], []).append(self.bars[key].to_row())
        return out


def run_chain(ticks: Iterable[Mapping[str, Any]], *, batch: int = 50, wall_clock: bool = True,
              poll_ms: int = 500, partition_of: Callable[[Mapping[str, Any]], int] | None = None,
              **kwargs: Any) -> Chain:
    """Feed ``ticks`` in order through a :class:`Chain`.

    Like a service loop (``consume(batch, timeout=poll_ms)``), every stage
    advances after each ``batch`` ticks or ``poll_ms`` of simulated wall time
    (the ticks' ``_arrival_ms``), whichever comes first, so the wall clock moves
    smoothly instead of jumping over quiet periods.
    """
    chain = Chain(**kwargs)
    offsets: dict[int, int] = {}
    now: int | None = None
    stepped: int | None = None  # wall time of the last step
    for i, tick in enumerate(ticks, 1):
        arrival = tick.get("_arrival_ms") if wall_clock else None
        if arrival is not None:
            if now is None:
                now = stepped = arrival
            assert stepped is not None
            while stepped + poll_ms <= arrival:  # the poll timed out: advance on the clock alone
                stepped += poll_ms
                chain.step(stepped)
            now = arrival
        part = partition_of(tick) if partition_of else 0
        off = offsets.get(part, 0)
        offsets[part] = off + 1
        chain.builder.add(tick, part, off)
        if i % batch == 0:
            chain.step(now)
            stepped = now
    chain.finish()
    return chain
