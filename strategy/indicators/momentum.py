"""Momentum oscillators: RSI (Wilder), MACD, stochastic (slow, SMA-smoothed), as TA-Lib computes them.

TA-Lib facts these follow (checked against talib 0.8.2 / TA-Lib C 0.8.1, see tests/unit/test_indicators.py):

- RSI: average gain/loss seeded with the plain mean of the first ``period`` changes, then
  Wilder-smoothed (``avg = (avg * (period - 1) + x) / period``); first value on bar ``period + 1``.
  The averages are scaled by a hoisted 1/period and the change split without a branch (TA-Lib's
  #410 form, bit-identical). RSI = 100 * gain / (gain + loss), and 0 when gain + loss is exactly
  0 (a series that has never moved, or both decayed to 0): TA-Lib 0.8.1 answers 0 there (later
  TA-Lib answers 50, #480); the sum is tested exactly, not against a band (#253).
- MACD: both EMAs produce their first value on the slow EMA's first bar. The fast EMA is not
  seeded from the first ``fast`` closes but from the ``fast`` closes ending on bar ``slow``
  (the closes before are ignored). The signal EMA is seeded with the mean of the first ``signal``
  MACD values; first output on bar ``slow + signal - 1``.
- STOCH: fast %K = (close - lowest low) / (highest high - lowest low) * 100 over ``k_period``
  (that operation order), 0 when the range is zero relative to its extremes (TA_IS_ZERO_SCALED:
  ``range <= 1e-14 * (|high| + |low|)``, a flat window); slow %K = SMA(fast %K, k_smooth), %D = SMA(slow %K,
  d_period); first output on bar ``k_period + k_smooth + d_period - 2``.
"""

from __future__ import annotations

from collections import deque
from typing import Any, ClassVar

from strategy.indicators.base import TA_EPSILON, BarLike, Indicator, Param, WindowExtremes, validate_params


class RSI(Indicator):
    """Wilder's relative strength index of the close (TA-Lib RSI, unstable period 0)."""

    __slots__ = ("period", "_inv", "_prev", "_n", "_gain", "_loss")
    name: ClassVar[str] = "rsi"
    PARAMS: ClassVar[tuple[Param, ...]] = (Param("period", "int", 14, 2),)

    def __init__(self, period: int = 14) -> None:
        self.period: int = validate_params(type(self), {"period": period})["period"]
        self._inv = 1.0 / self.period
        self.warmup = self.period + 1
        self.reset()

    def reset(self) -> None:
        """Forget every bar seen."""
        self._prev: float | None = None
        self._n = 0
        self._gain = 0.0
        self._loss = 0.0
        self.value: float | None = None

    def update(self, bar: BarLike) -> float | None:
        x = bar.close
        prev = self._prev
        self._prev = x
        if prev is None:
            return None
        d = x - prev
        up = d if d > 0.0 else 0.0  # TA-Lib's branch-free split: loss += up - d is exactly -d or 0
        if self.value is not None:
            p1 = self.period - 1
            gain = (self._gain * p1 + up) * self._inv
            loss = (self._loss * p1 + (up - d)) * self._inv
        else:
            self._gain += up
            self._loss += up - d
            self._n += 1
            if self._n < self.period:
                return None
            gain = self._gain * self._inv
            loss = self._loss * self._inv
        self._loss = loss
        self._gain = gain
        t = gain + loss
        v = 100.0 * (gain / t) if t > 0.0 else 0.0
        self.value = v
        return v


class MACD(Indicator):
    """MACD = EMA(fast) - EMA(slow) of the close, signal = EMA(signal) of MACD, hist = MACD - signal.

    Returns ``{"macd", "signal", "hist"}``. Seeding as TA-Lib (module docstring): the fast EMA
    starts on the slow EMA's first bar, seeded with the mean of the ``fast`` closes ending there.
    """

    __slots__ = ("fast", "slow", "signal", "_kf", "_ks", "_kg", "_closes", "_ef", "_es", "_eg", "_n", "_gsum")
    name: ClassVar[str] = "macd"
    PARAMS: ClassVar[tuple[Param, ...]] = (Param("fast", "int", 12, 2), Param("slow", "int", 26, 2),
                                           Param("signal", "int", 9, 1))

    def __init__(self, fast: int = 12, slow: int = 26, signal: int = 9) -> None:
        p = validate_params(type(self), {"fast": fast, "slow": slow, "signal": signal})
        self.fast, self.slow, self.signal = p["fast"], p["slow"], p["signal"]
        self._kf = 2.0 / (self.fast + 1)
        self._ks = 2.0 / (self.slow + 1)
        self._kg = 2.0 / (self.signal + 1)
        self.warmup = self.slow + self.signal - 1
        self.reset()

    @classmethod
    def check(cls, params: dict[str, Any]) -> None:
        if params["fast"] >= params["slow"]:
            raise ValueError(f"macd: fast must be < slow (got fast={params['fast']}, slow={params['slow']})")

    def reset(self) -> None:
        """Forget every bar seen."""
        self._closes: list[float] = []  # only until the EMAs are seeded (slow closes)
        self._ef: float | None = None
        self._es = 0.0
        self._eg = 0.0
        self._n = 0  # MACD values summed into the signal seed so far
        self._gsum = 0.0
        self.value: dict[str, float] | None = None

    def update(self, bar: BarLike) -> dict[str, float] | None:
        x = bar.close
        ef = self._ef
        if ef is None:
            closes = self._closes
            closes.append(x)
            if len(closes) < self.slow:
                return None
            s = 0.0
            for c in closes:
                s += c
            es = s / self.slow
            s = 0.0
            for c in closes[self.slow - self.fast:]:
                s += c
            ef = s / self.fast
            self._closes = []
        else:
            ef = (x - ef) * self._kf + ef
            es = self._es
            es = (x - es) * self._ks + es
        self._ef = ef
        self._es = es
        m = ef - es
        if self.value is not None:
            g = self._eg
            g = (m - g) * self._kg + g
        else:
            self._gsum += m
            self._n += 1
            if self._n < self.signal:
                return None
            g = self._gsum / self.signal
        self._eg = g
        v = {"macd": m, "signal": g, "hist": m - g}
        self.value = v
        return v


class Stoch(Indicator):
    """Slow stochastic: ``{"k", "d"}`` with SMA smoothing (TA-Lib STOCH, slowk_matype = slowd_matype = 0).

    The window's highest high and lowest low come from monotonic deques (O(1) amortised per bar).
    """

    __slots__ = ("k_period", "k_smooth", "d_period", "_ext", "_kq", "_ksum", "_dq", "_dsum")
    name: ClassVar[str] = "stoch"
    PARAMS: ClassVar[tuple[Param, ...]] = (Param("k_period", "int", 14, 1), Param("k_smooth", "int", 3, 1),
                                           Param("d_period", "int", 3, 1))

    def __init__(self, k_period: int = 14, k_smooth: int = 3, d_period: int = 3) -> None:
        p = validate_params(type(self), {"k_period": k_period, "k_smooth": k_smooth, "d_period": d_period})
        self.k_period, self.k_smooth, self.d_period = p["k_period"], p["k_smooth"], p["d_period"]
        self.warmup = self.k_period + self.k_smooth + self.d_period - 2
        self.reset()

    def reset(self) -> None:
        """Forget every bar seen."""
        self._ext = WindowExtremes(self.k_period)
        self._kq: deque[float] = deque()  # fast %K values in the slow-%K window
        self._ksum = 0.0
        self._dq: deque[float] = deque()  # slow %K values in the %D window
        self._dsum = 0.0
        self.value: dict[str, float] | None = None

    def update(self, bar: BarLike) -> dict[str, float] | None:
        ext = self._ext.push(bar.high, bar.low)
        if ext is None:
            return None
        highest, lowest = ext
        diff = highest - lowest
        # a flat window (range zero relative to its own extremes, TA_IS_ZERO_SCALED) gives 0
        fk = (bar.close - lowest) / diff * 100.0 if diff > TA_EPSILON * (abs(highest) + abs(lowest)) else 0.0
        kq = self._kq
        kq.append(fk)
        ks = self._ksum + fk
        if len(kq) < self.k_smooth:
            self._ksum = ks
            return None
        sk = ks / self.k_smooth
        self._ksum = ks - kq.popleft()
        dq = self._dq
        dq.append(sk)
        ds = self._dsum + sk
        if len(dq) < self.d_period:
            self._dsum = ds
            return None
        d = ds / self.d_period
        self._dsum = ds - dq.popleft()
        v = {"k": sk, "d": d}
        self.value = v
        return v
