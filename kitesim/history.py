"""Historical candles consistent with the simulated market, deterministic for a seed.

Days from the simulator's start date on come from the live ticks (minute
candles recorded by :class:`CandleBook`). Earlier trading days are synthesised:
a seeded chain of daily closes that ends, on the last trading day before the
start, at the instrument's reference price (the live market's previous close),
and inside each day a seeded Brownian bridge of 375 minute candles from
09:15 to 15:29 IST. Longer intervals are aggregations of the minute candles
(anchored at 09:15; ``day`` candles at 00:00 IST), so every interval agrees.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable
from datetime import date, timedelta
from functools import lru_cache

import numpy as np

from core.universe import Instrument
from kitesim.clock import (
    DAY_S,
    SESSION_OPEN_S,
    is_trading_day,
    ist_date,
    ist_iso,
    midnight,
    previous_trading_day,
)
from kitesim.errors import InputError
from kitesim.market import TradeEvent
from kitesim.packets import Snapshot

#: interval name -> (minutes, most days one request may span), as Kite enforces.
INTERVALS: dict[str, tuple[int, int]] = {
    "minute": (1, 60), "3minute": (3, 100), "5minute": (5, 100), "10minute": (10, 100),
    "15minute": (15, 200), "30minute": (30, 200), "60minute": (60, 400), "day": (0, 2000),
}
SESSION_MINUTES = 375
DAILY_SIGMA = 0.012
#: Live minute candles kept per instrument (older ones are dropped).
LIVE_MINUTES_KEPT = 5 * 1440

Candle = tuple[float, int, int, int, int, int]  # start epoch, o, h, l, c (wire units), volume


class CandleBook:
    """Minute candles built from the live simulated ticks (observer of :class:`Market`)."""

    def __init__(self, keep: int = LIVE_MINUTES_KEPT) -> None:
        self.keep = keep
        self._book: dict[int, OrderedDict[int, list[int]]] = {}

    def record(self, ev: TradeEvent, snap: Snapshot) -> None:
        """Add one tick to its minute candle."""
        minute = int(ev.ts // 60) * 60
        book = self._book.setdefault(snap.instrument_token, OrderedDict())
        c = book.get(minute)
        p = snap.last_price
        if c is None:
            book[minute] = [p, p, p, p, snap.last_qty]
            while len(book) > self.keep:
                book.popitem(last=False)
        else:
            c[1] = max(c[1], p)
            c[2] = min(c[2], p)
            c[3] = p
            c[4] += snap.last_qty

    def minutes(self, token: int, start: float, end: float) -> list[Candle]:
        """Live minute candles starting in ``[start, end]``, in time order."""
        book = self._book.get(token)
        if not book:
            return []
        return [(float(m), *c) for m, c in sorted(book.items()) if start <= m <= end]  # type: ignore[misc]


class HistoryGenerator:
    """Serves ``/instruments/historical`` candles for one simulator run."""

    def __init__(self, instruments: Iterable[Instrument], seed: int, start_day: date,
                 book: CandleBook) -> None:
        self.instruments = {i.instrument_token: i for i in instruments}
        self.seed = seed
        self.start_day = start_day
        self.book = book
        self._closes: dict[int, dict[date, float]] = {}

    # ------------------------------------------------------------------ synthetic days

    def _daily_return(self, token: int, d: date) -> float:
        rng = np.random.default_rng([self.seed, token, d.toordinal(), 1])
        return float(rng.normal(0.0, DAILY_SIGMA))

    def close_of(self, token: int, d: date) -> float:
        """Synthetic close (wire units, unrounded) of trading day ``d`` before the start day."""
        inst = self.instruments[token]
        closes = self._closes.setdefault(token, {})
        if d in closes:
            return closes[d]
        # Walk back from the last pre-start trading day, whose close is the reference price.
        day = previous_trading_day(self.start_day)
        value = inst.last_price * inst.price_divisor
        if not closes:
            closes[day] = value
        else:
            day = min(closes)
            value = closes[day]
        while day > d:
            value = value / math.exp(self._daily_return(token, day))
            day = previous_trading_day(day)
            closes[day] = value
        return closes[d]

    def _day_arrays(self, token: int, d: date) -> _DayArrays:
        inst = self.instruments[token]
        prev_close = self.close_of(token, previous_trading_day(d))
        close = self.close_of(token, d)
        return _bridge_day(self.seed, token, d.toordinal(), prev_close, close, inst.tick_units,
                           max(1, inst.lot_size), inst.tradable)

    def synthetic_day(self, token: int, d: date) -> list[Candle]:
        """375 seeded minute candles of trading day ``d`` (before the start day)."""
        o, h, lo, c, v = self._day_arrays(token, d)
        t0 = midnight(d) + SESSION_OPEN_S
        return [(t0 + 60 * i, int(o[i]), int(h[i]), int(lo[i]), int(c[i]), int(v[i])) for i in range(len(o))]

    def _day_candle(self, token: int, d: date) -> Candle | None:
        if d >= self.start_day:
            day0 = midnight(d)
            rows = aggregate(self.book.minutes(token, day0, day0 + DAY_S - 1), 0)
            return rows[0] if rows else None
        if not is_trading_day(d):
            return None
        o, h, lo, c, v = self._day_arrays(token, d)
        return (midnight(d), int(o[0]), int(h.max()), int(lo.min()), int(c[-1]), int(v.sum()))

    # ------------------------------------------------------------------ public API

    def minute_candles(self, token: int, start: float, end: float) -> list[Candle]:
        """Minute candles starting in ``[start, end]`` (synthetic before the start day, live after)."""
        out: list[Candle] = []
        d = ist_date(start)
        last = ist_date(end)
        while d <= last:
            if d >= self.start_day:
                lo, hi = max(start, midnight(d)), min(end, midnight(d) + DAY_S - 1)
                out.extend(self.book.minutes(token, lo, hi))
            elif is_trading_day(d):
                out.extend(c for c in self.synthetic_day(token, d) if start <= c[0] <= end)
            d += timedelta(days=1)
        return out

    def candles(self, token: int, interval: str, start: float, end: float,
                with_oi: bool = False) -> list[list[object]]:
        """Kite ``candles`` rows ``[iso_time, o, h, l, c, v(, oi)]`` in rupees."""
        inst = self.instruments.get(token)
        if inst is None:
            raise InputError("invalid token")
        if interval not in INTERVALS:
            raise InputError("invalid interval")
        if end < start:
            raise InputError("invalid from/to: `from` is after `to`")
        minutes, max_days = INTERVALS[interval]
        if (end - start) / DAY_S > max_days:
            raise InputError(f"interval exceeds max limit: {max_days} days")
        if interval == "day":
            start = midnight(ist_date(start))
            rows = []
            d = ist_date(start)
            while d <= ist_date(end):
                day = self._day_candle(token, d)
                if day is not None:
                    rows.append(day)
                d += timedelta(days=1)
        else:
            # fetch to the end of the last bucket starting by `end`, so it is complete
            rows = aggregate(self.minute_candles(token, start, end + minutes * 60 - 1), minutes)
        div = inst.price_divisor
        digits = len(str(div)) - 1
        out: list[list[object]] = []
        for ts, o, h, lo, c, v in rows:
            if not start <= ts <= end:
                continue
            row: list[object] = [ist_iso(ts), round(o / div, digits), round(h / div, digits),
                                 round(lo / div, digits), round(c / div, digits), int(v)]
            if with_oi:
                row.append(0)
            out.append(row)
        return out


def aggregate(minutes: list[Candle], size: int) -> list[Candle]:
    """Aggregate minute candles into ``size``-minute buckets anchored at 09:15 IST (0 = day)."""
    if size == 1:
        return minutes
    buckets: dict[float, list[float]] = {}
    for ts, o, h, lo, c, v in minutes:
        day0 = midnight(ist_date(ts))
        if size == 0:
            key = day0
        else:
            anchor = day0 + SESSION_OPEN_S
            key = anchor + math.floor((ts - anchor) / (size * 60)) * size * 60
        b = buckets.get(key)
        if b is None:
            buckets[key] = [o, h, lo, c, v]
        else:
            b[1] = max(b[1], h)
            b[2] = min(b[2], lo)
            b[3] = c
            b[4] += v
    return [(k, int(b[0]), int(b[1]), int(b[2]), int(b[3]), int(b[4])) for k, b in sorted(buckets.items())]


_DayArrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@lru_cache(maxsize=8192)
def _bridge_day(seed: int, token: int, ordinal: int, prev_close: float, close: float, tick: int,
                lot: int, tradable: bool) -> _DayArrays:
    """A seeded Brownian bridge from a gapped open to ``close``: 375 minute (o, h, l, c, v) arrays."""
    rng = np.random.default_rng([seed, token, ordinal, 2])
    n = SESSION_MINUTES
    sigma = DAILY_SIGMA / math.sqrt(n)
    log_open = math.log(prev_close) + rng.normal(0.0, DAILY_SIGMA / 4)
    log_close = math.log(close)
    walk = np.concatenate(([0.0], np.cumsum(rng.normal(0.0, sigma, n))))
    frac = np.arange(n + 1) / n
    path = log_open + frac * (log_close - log_open) + walk - frac * walk[-1]
    prices = np.maximum(tick, np.rint(np.exp(path) / tick) * tick).astype(np.int64)
    level = np.exp(path[1:]) / tick
    wick_hi = np.rint(np.abs(rng.normal(0.0, sigma / 2, n)) * level).astype(np.int64) * tick
    wick_lo = np.rint(np.abs(rng.normal(0.0, sigma / 2, n)) * level).astype(np.int64) * tick
    o, c = prices[:-1], prices[1:]
    h = np.maximum(o, c) + wick_hi
    lo = np.maximum(tick, np.minimum(o, c) - wick_lo)
    # U-shaped intraday volume profile (busy open and close).
    shape = 1.0 + 2.0 * (np.linspace(-1.0, 1.0, n) ** 2)
    if tradable:
        v = ((rng.gamma(2.0, 60.0, n) * shape).astype(np.int64) + 1) * lot
    else:
        v = np.zeros(n, np.int64)
    return o, h, lo, c, v
