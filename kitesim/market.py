"""The simulated market: per-instrument state driven by a seeded random walk or a replay.

Pure logic, no I/O and no wall clock: :meth:`Market.advance` is given the
simulated time and returns the ticks that happened up to it, in time order.
Each instrument has its own ``random.Random`` seeded from ``(seed, token)``, so
the k-th tick of an instrument is the same on every run with the same seed,
whatever else is subscribed or traded. User orders do not move the market.
"""

from __future__ import annotations

import heapq
import math
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import date

from core.universe import Instrument
from kitesim.clock import DAY_S, ist_date, midnight, next_session_open
from kitesim.packets import DEPTH_LEVELS, U32_MAX, DepthLevel, Snapshot

#: Per-tick volatility as a fraction of price (~1.2 % a day at ~1.5 ticks/s).
SIGMA_PER_TICK = 5e-5
#: Pull back toward the reference price per tick (keeps long runs bounded).
MEAN_REVERSION = 5e-5


@dataclass(frozen=True, slots=True)
class TradeEvent:
    """One market event for an instrument; prices in integer wire units.

    ``volume``/``oi`` given by a replay override the simulated cumulative values;
    ``bid``/``ask`` (and quantities) seed level 1 of the depth.
    """

    ts: float
    token: int
    price: int
    qty: int
    volume: int | None = None
    oi: int | None = None
    bid: int | None = None
    ask: int | None = None
    bid_qty: int | None = None
    ask_qty: int | None = None


def instrument_rng(seed: int, token: int, purpose: str = "walk") -> random.Random:
    """Deterministic RNG of one instrument (string seeds hash the same in every process)."""
    return random.Random(f"kitesim:{seed}:{token}:{purpose}")


class InstrumentState:
    """Evolving day state of one instrument; :meth:`apply` turns an event into a Snapshot."""

    def __init__(self, inst: Instrument, rng: random.Random) -> None:
        self.inst = inst
        self.token = inst.instrument_token
        self.tick = inst.tick_units
        self.lot = max(1, inst.lot_size)
        self.rng = rng
        ref = round(inst.last_price * inst.price_divisor)
        self.day: date | None = None
        self._day_start = self._day_end = 0.0
        self.value_sum = 0  # sum(price * qty) for the day's average price ...
        self.qty_sum = 0  # ... over the quantity seen (a replay's first volume has no price history)
        self.seq = 0
        self.is_future = inst.instrument_type == "FUT"
        self.tbq = self.lot * rng.randint(20_000, 200_000) if inst.tradable else 0
        self.tsq = self.lot * rng.randint(20_000, 200_000) if inst.tradable else 0
        oi = self.lot * rng.randint(50_000, 150_000) if self.is_future else 0
        self.snap = Snapshot(instrument_token=self.token, last_price=ref, open=ref, high=ref, low=ref,
                             close=ref, oi=oi, oi_day_high=oi, oi_day_low=oi)

    def apply(self, ev: TradeEvent) -> Snapshot:
        """Apply one event (rolling the day over on a new IST date) and return the new snapshot."""
        s = self.snap
        if not self._day_start <= ev.ts < self._day_end:
            first = self.day is None
            self.day = ist_date(ev.ts)
            self._day_start = midnight(self.day)
            self._day_end = self._day_start + DAY_S
            self.value_sum = self.qty_sum = 0
            close = s.close if first else s.last_price
            s = replace(s, open=0, high=0, low=0, close=close, volume=0, avg_price=0,
                        oi_day_high=s.oi, oi_day_low=s.oi)
        price = max(ev.price, self.tick)
        qty = ev.qty if self.inst.tradable else 0
        volume = s.volume + qty if ev.volume is None else ev.volume
        volume = min(volume, U32_MAX)
        self.value_sum += price * qty
        self.qty_sum += qty
        avg = round(self.value_sum / self.qty_sum) if self.qty_sum else price
        oi = s.oi
        if ev.oi is not None:
            oi = ev.oi
        elif self.is_future and qty:
            oi = max(0, oi + (int(self.rng.random() * 3) - 1) * qty)
        if self.inst.tradable:
            rand = self.rng.random
            self.tbq = max(self.lot, self.tbq + (int(rand() * 101) - 50) * self.lot)
            self.tsq = max(self.lot, self.tsq + (int(rand() * 101) - 50) * self.lot)
            buy, sell = self._depth(price, ev)
        else:
            buy, sell = s.buy, s.sell
        self.seq += 1
        sec = int(ev.ts)
        self.snap = Snapshot(
            instrument_token=self.token, last_price=price, seq=self.seq, ts=ev.ts, last_qty=qty,
            avg_price=avg if self.inst.tradable else 0, volume=volume if self.inst.tradable else 0,
            total_buy_qty=self.tbq, total_sell_qty=self.tsq,
            open=s.open or price, high=max(s.high, price), low=min(s.low, price) if s.low else price,
            close=s.close, last_trade_time=sec, oi=oi,
            oi_day_high=max(s.oi_day_high, oi), oi_day_low=min(s.oi_day_low, oi) if s.oi_day_low else oi,
            exchange_timestamp=sec, buy=buy, sell=sell)
        return self.snap

    def _depth(self, price: int, ev: TradeEvent) -> tuple[tuple[DepthLevel, ...], tuple[DepthLevel, ...]]:
        """Five levels a side around the last price (level 1 from the event when given)."""
        rng, tick = self.rng, self.tick
        spread = (1, 1, 1, 2, 2, 3)[int(rng.random() * 6)]
        bid1 = ev.bid if ev.bid else price - int(rng.random() * (spread + 1)) * tick
        ask1 = ev.ask if ev.ask else bid1 + spread * tick
        bid1 = max(bid1, tick)
        ask1 = max(ask1, bid1 + tick)
        mean_lots = 40 if price / self.inst.price_divisor > 100 else 400

        def side(first: int, step: int, first_qty: int | None) -> tuple[DepthLevel, ...]:
            levels, p, rand, lot = [], first, rng.random, self.lot
            for i in range(DEPTH_LEVELS):
                if i == 0 and first_qty:
                    qty = first_qty
                else:  # exponential size in lots
                    qty = lot * (int(-mean_lots * math.log(1.0 - rand())) + 1)
                levels.append(DepthLevel(qty, max(p, 0), 1 + int(rand() * 25)))
                p += step if rand() < 0.67 else 2 * step
            return tuple(levels)

        return side(bid1, -tick, ev.bid_qty), side(ask1, tick, ev.ask_qty)


class EventSource(ABC):
    """Base of event sources (the random walk, a replay)."""

    @abstractmethod
    def events_until(self, now: float, limit: int | None = None) -> list[TradeEvent]:  # pragma: no cover
        """Events with ``ts <= now`` in time order (at most ``limit``; the rest stay due)."""


class RandomWalk(EventSource):
    """Seeded event source: each instrument ticks 1-2 times a second on its own schedule.

    Prices move on the tick grid with a Gaussian step (plus a slowly varying
    drift and a pull toward the reference price); trade sizes are whole lots.
    With ``market_hours`` ticks only happen in the 09:15-15:30 IST session.
    """

    def __init__(self, instruments: Iterable[Instrument], seed: int, start: float,
                 market_hours: bool = False, min_interval: float = 0.5, max_interval: float = 1.0) -> None:
        self.market_hours = market_hours
        self.min_interval, self.max_interval = min_interval, max_interval
        self._walkers: dict[int, _Walker] = {}
        self._heap: list[tuple[float, int]] = []
        for inst in instruments:
            w = _Walker(inst, instrument_rng(seed, inst.instrument_token))
            self._walkers[inst.instrument_token] = w
            first = self._schedule(start + w.rng.uniform(0, max_interval))
            heapq.heappush(self._heap, (first, inst.instrument_token))

    def _schedule(self, ts: float) -> float:
        return next_session_open(ts) if self.market_hours else ts

    def events_until(self, now: float, limit: int | None = None) -> list[TradeEvent]:
        """Events with ``ts <= now`` in time order (at most ``limit``; the rest stay due)."""
        out: list[TradeEvent] = []
        while self._heap and self._heap[0][0] <= now and (limit is None or len(out) < limit):
            ts, token = heapq.heappop(self._heap)
            w = self._walkers[token]
            out.append(w.step(ts))
            nxt = ts + w.rng.uniform(self.min_interval, self.max_interval)
            heapq.heappush(self._heap, (self._schedule(nxt), token))
        return out

    def next_event_time(self) -> float | None:
        """When the next event is due (None when there are no instruments)."""
        return self._heap[0][0] if self._heap else None


class _Walker:
    """Price/size generator of one instrument."""

    def __init__(self, inst: Instrument, rng: random.Random) -> None:
        self.rng = rng
        self.token = inst.instrument_token
        self.tick = inst.tick_units
        self.lot = max(1, inst.lot_size)
        self.tradable = inst.tradable
        self.ref = round(inst.last_price * inst.price_divisor)
        self.price = self.ref
        self.drift = 0.0
        self.mean_lots = 60 if inst.last_price > 100 else 600

    def step(self, ts: float) -> TradeEvent:
        rng = self.rng
        sigma = max(0.6, self.price * SIGMA_PER_TICK / self.tick)
        self.drift = 0.995 * self.drift + rng.gauss(0.0, 0.005 * sigma)
        pull = -MEAN_REVERSION * (self.price - self.ref) / self.tick
        move = round(rng.gauss(self.drift + pull, sigma))
        self.price = max(self.tick, self.price + move * self.tick)
        qty = self.lot * (int(rng.expovariate(1 / self.mean_lots)) + 1) if self.tradable else 0
        return TradeEvent(ts=ts, token=self.token, price=self.price, qty=qty)


class Market:
    """The market model: instrument states fed by an event source.

    ``source`` is anything with ``events_until(now) -> list[TradeEvent]`` (a
    :class:`RandomWalk` or a replay). ``on_event`` observers (e.g. the candle
    book) see every applied event with its snapshot.
    """

    def __init__(self, instruments: Iterable[Instrument], seed: int, source: EventSource) -> None:
        self.instruments = {i.instrument_token: i for i in instruments}
        self.states = {t: InstrumentState(i, instrument_rng(seed, t, "book")) for t,
                       i in self.instruments.items()}
        self.source = source
        self.observers: list[Callable[[TradeEvent, Snapshot], None]] = []
        self.ticks_generated: dict[int, int] = dict.fromkeys(self.instruments, 0)

    def advance(self, now: float, limit: int | None = None) -> list[Snapshot]:
        """Apply the events due by ``now`` (at most ``limit``); return the new snapshots in time order."""
        out: list[Snapshot] = []
        for ev in self.source.events_until(now, limit):
            token = ev.token
            state = self.states.get(token)
            if state is None:
                continue
            snap = state.apply(ev)
            self.ticks_generated[token] += 1
            for obs in self.observers:
                obs(ev, snap)
            out.append(snap)
        return out

    def latest(self, token: int) -> Snapshot | None:
        """The instrument's current snapshot (None if unknown)."""
        st = self.states.get(token)
        return st.snap if st else None

    def last_price(self, token: int) -> float | None:
        """Last price in rupees."""
        st = self.states.get(token)
        return st.snap.last_price / st.inst.price_divisor if st else None

