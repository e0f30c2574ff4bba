"""Bar series for the indicator tests: the GOOG daily sample and a generated NSE-like 1m series.

The generated series is what the daily sample lacks: overnight and weekend gaps (in ``ts`` and
in price), ties on a 0.05 tick grid, runs of identical OHLC with zero volume (short pauses and
one long halt, long enough for Wilder averages to decay towards TA-Lib's zero threshold).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

import numpy as np

from core.clock import IST

SESSION_MINUTES = 375  # NSE 09:15-15:30 IST


@dataclass(frozen=True, slots=True)
class Bar:
    """The bar shape the indicators read."""

    open: float
    high: float
    low: float
    close: float
    volume: float
    ts: int


@dataclass(frozen=True)
class Series:
    """OHLCV columns (float64 numpy arrays, ts int64 epoch ms) and the same rows as :class:`Bar` objects."""

    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    ts: np.ndarray

    def bars(self) -> list[Bar]:
        cols = zip(self.open.tolist(), self.high.tolist(), self.low.tolist(), self.close.tolist(),
                   self.volume.tolist(), self.ts.tolist(), strict=True)
        return [Bar(*row) for row in cols]

    def __len__(self) -> int:
        return len(self.close)


def goog_daily() -> Series:
    """backtesting.py's GOOG sample (2148 daily bars, 2004-2013), ts at 00:00 UTC of each date."""
    from backtesting.test import GOOG

    ts = (GOOG.index.to_numpy().astype("datetime64[ms]").astype(np.int64))
    return Series(*(GOOG[c].to_numpy(dtype=np.float64) for c in ("Open", "High", "Low", "Close", "Volume")), ts=ts)


def _session_opens(n_sessions: int, first: date) -> list[int]:
    """Epoch ms of 09:15 IST on ``n_sessions`` consecutive weekdays from ``first``."""
    out: list[int] = []
    d = first
    while len(out) < n_sessions:
        if d.weekday() < 5:
            out.append(int(datetime(d.year, d.month, d.day, 9, 15, tzinfo=IST).timestamp() * 1000))
        d += timedelta(days=1)
    return out


def intraday_1m(n: int = 60_000, seed: int = 7, tick: float = 0.05) -> Series:
    """``n`` 1m bars of a seeded random walk over NSE sessions, with gaps and flat stretches (module docstring)."""
    rng = np.random.default_rng(seed)
    n_sessions = -(-n // SESSION_MINUTES)
    opens = _session_opens(n_sessions, date(2024, 1, 1))
    ts = np.concatenate([o + 60_000 * np.arange(SESSION_MINUTES, dtype=np.int64) for o in opens])[:n]
    minute = np.tile(np.arange(SESSION_MINUTES), n_sessions)[:n]
    ret = rng.normal(0.0, 0.0008, n)
    ret[minute == 0] += rng.normal(0.0, 0.01, int((minute == 0).sum()))  # the overnight gap
    flat = np.zeros(n, dtype=bool)
    for start in rng.integers(0, n - 100, n // 400):  # short pauses: 2..60 identical bars
        flat[start:start + int(rng.integers(2, 61))] = True
    halt = n // 3
    flat[halt:halt + 900] = True  # a long halt (spans a session boundary)
    close = np.empty(n)
    open_ = np.empty(n)
    high = np.empty(n)
    low = np.empty(n)
    price = 1000.0
    wick = np.abs(rng.normal(0.0, 0.0006, (n, 2)))
    for i in range(n):
        o = price
        if flat[i]:
            open_[i] = high[i] = low[i] = close[i] = o
            continue
        c = round(o * np.exp(ret[i]) / tick) * tick
        if minute[i] == 0:  # the session opens where the gap put it
            o = c
            c = round(o * np.exp(rng.normal(0.0, 0.0008)) / tick) * tick
        open_[i] = o
        close[i] = c
        high[i] = round(max(o, c) * (1 + wick[i, 0]) / tick) * tick
        low[i] = round(min(o, c) * (1 - wick[i, 1]) / tick) * tick
        price = c
    volume = rng.integers(1, 5000, n).astype(np.float64)
    volume[flat] = 0.0
    volume[rng.random(n) < 0.01] = 0.0  # an occasional bar with no trades but a price
    return Series(open_, high, low, close, volume, ts)
