"""A deterministic synthetic tick source: seeded random walks on tick-size grids.

Each instrument ticks 1-2 times per second of event time (uniform gaps of
0.5-1.0 s by default; ``gap_ms`` makes it denser for benchmarks), moves its
last price by a few ticks, keeps a bid/ask one tick around it, and grows a
cumulative day volume. Indices (not tradable) carry no volume, quantities or
quotes. The same seed, universe and start time give the same ticks, so tests
and benchmarks are reproducible.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class WalkInstrument:
    """Per-instrument walk state."""

    token: int
    tick: float  # tick size in rupees
    price_ticks: int  # last price in ticks
    volume: int
    tradable: bool
    lot: int


def _ticks(price: float, tick: float) -> int:
    return max(1, round(price / tick))


class SyntheticMarket:
    """Generates Tick-contract dicts in event-time order.

    ``instruments`` is a sequence of ``(token, tick_size, start_price, tradable, lot_size)``.
    """

    def __init__(self, instruments: Sequence[tuple[int, float, float, bool, int]], seed: int,
                 start_ms: int, gap_ms: tuple[int, int] = (500, 1000)) -> None:
        if not instruments:
            raise ValueError("empty universe")
        if not 0 < gap_ms[0] <= gap_ms[1]:
            raise ValueError(f"bad gap range {gap_ms}")
        self.gap_ms = gap_ms
        self.rng = random.Random(seed)
        self.state: dict[int, WalkInstrument] = {}
        self.heap: list[tuple[int, int]] = []
        for token, tick, price, tradable, lot in instruments:
            self.state[token] = WalkInstrument(token, tick, _ticks(price, tick),
                                               self.rng.randint(10_000, 500_000) if tradable else 0,
                                               tradable, max(1, lot))
            heapq.heappush(self.heap, (start_ms + self.rng.randint(0, 999), token))

    def next_due_ms(self) -> int:
        """Event time of the next tick."""
        return self.heap[0][0]

    def next_tick(self, recv_ts: int | None = None) -> dict[str, Any]:
        """Pop the next tick (event-time order) and schedule that instrument's following one."""
        ts, token = heapq.heappop(self.heap)
        st = self.state[token]
        rng = self.rng
        step = rng.choice((-3, -2, -1, -1, 0, 0, 1, 1, 2, 3))
        st.price_ticks = max(1, st.price_ticks + step)
        heapq.heappush(self.heap, (ts + rng.randint(*self.gap_ms), token))
        tick = st.tick
        ltp = round(st.price_ticks * tick, 6)
        out: dict[str, Any] = {"instrument_token": token, "exchange_ts": ts,
                               "recv_ts": recv_ts if recv_ts is not None else ts + rng.randint(1, 30),
                               "ltp": ltp}
        if st.tradable:
            last_qty = st.lot * rng.randint(1, 50)
            st.volume += last_qty
            out.update(volume=st.volume, last_qty=last_qty, oi=None,
                       bid=round((st.price_ticks - 1) * tick, 6), ask=round((st.price_ticks + 1) * tick, 6),
                       bid_qty=st.lot * rng.randint(1, 200), ask_qty=st.lot * rng.randint(1, 200))
        else:
            out.update(volume=None, last_qty=None, oi=None, bid=None, ask=None, bid_qty=None, ask_qty=None)
        return out

    def ticks_until(self, until_ms: int) -> Iterator[dict[str, Any]]:
        """Every tick with event time < ``until_ms``."""
        while self.heap[0][0] < until_ms:
            yield self.next_tick()
