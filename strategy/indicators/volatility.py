"""Range and volatility indicators: ATR, Bollinger bands, Donchian channel, Supertrend.

ATR, BBANDS and MAX/MIN follow TA-Lib (checked against talib 0.8.2 / TA-Lib C 0.8.1):

- ATR: true range from the second bar on (the first bar has no previous close), seeded with the
  plain mean of the first ``period`` true ranges, then Wilder-smoothed
  as TA-Lib 0.8 writes it, ``atr = alpha * tr + beta * atr`` with ``beta = (period - 1) / period``,
  ``alpha = 1 - beta``; first value on bar ``period + 1``. TA-Lib fuses that step into an FMA, which
  Python 3.11 lacks, so ATR (and Supertrend) agree with it to ~1 ulp per step, not bit for bit.
- BBANDS (SMA middle): population standard deviation, TA-Lib 0.8's cancellation-free
  shifted-sum variance (see :class:`Bollinger`); a flat window gives exactly 0.
- Donchian is TA-Lib MAX(high) / MIN(low) with middle = (upper + lower) / 2. It returns a dict
  like the other channels, because a channel has two sides.
"""

from __future__ import annotations

import math
from collections import deque
from typing import ClassVar

from strategy.indicators.base import BarLike, Indicator, Param, WindowExtremes, validate_params


class ATR(Indicator):
    """Average true range, Wilder smoothing, TA-Lib seeding (module docstring); period 1 is the true range."""

    __slots__ = ("period", "_alpha", "_beta", "_pc", "_n", "_sum")
    name: ClassVar[str] = "atr"
    PARAMS: ClassVar[tuple[Param, ...]] = (Param("period", "int", 14, 1),)

    def __init__(self, period: int = 14) -> None:
        self.period: int = validate_params(type(self), {"period": period})["period"]
        # TA-Lib's two-coefficient Wilder step: beta first, alpha = 1 - beta, so alpha + beta == 1 exactly
        self._beta: float = (self.period - 1) / self.period
        self._alpha: float = 1.0 - self._beta
        self.warmup = self.period + 1
        self.reset()

    def reset(self) -> None:
        """Forget every bar seen."""
        self._pc: float | None = None
        self._n = 0
        self._sum = 0.0
        self.value: float | None = None

    def update(self, bar: BarLike) -> float | None:
        h = bar.high
        lo = bar.low
        pc = self._pc
        self._pc = bar.close
        if pc is None:
            return None
        tr = h - lo
        x = abs(pc - h)
        if x > tr:
            tr = x
        x = abs(pc - lo)
        if x > tr:
            tr = x
        prev: float | None = self.value
        if prev is not None:
            v = self._alpha * tr + self._beta * prev
        else:
            self._sum += tr
            self._n += 1
            if self._n < self.period:
                return None
            v = self._sum / self.period
        self.value = v
        return v


class Bollinger(Indicator):
    """Bollinger bands ``{"upper", "middle", "lower"}``: SMA(period) +- stddev * population standard deviation.

    The variance is TA-Lib 0.8's cancellation-free form (its ``var.c``, #118/#243): running sums of
    deviations from a shift near the window, ``var = sum(d^2)/n - (sum(d)/n)^2``, re-anchored on the
    window mean with a fresh two-pass when the shift goes stale (variance under 1e-6 of the mean
    squared deviation, a departing outlier, or every 32 windows), so the cost stays O(1) amortised.
    A re-anchored variance under 1e-12 of its scale is 0, which is what a flat window gives.
    """

    __slots__ = ("period", "stddev", "_q", "_total", "_inv", "_shift", "_s1", "_s2", "_since")
    name: ClassVar[str] = "bollinger"
    PARAMS: ClassVar[tuple[Param, ...]] = (Param("period", "int", 20, 2), Param("stddev", "float", 2.0, 0.0))

    def __init__(self, period: int = 20, stddev: float = 2.0) -> None:
        p = validate_params(type(self), {"period": period, "stddev": stddev})
        self.period, self.stddev = p["period"], p["stddev"]
        self._inv = 1.0 / self.period
        self.warmup = self.period
        self.reset()

    def reset(self) -> None:
        """Forget every bar seen."""
        self._q: deque[float] = deque()
        self._total = 0.0
        self._shift: float | None = None
        self._s1 = 0.0
        self._s2 = 0.0
        self._since = 32 * self.period
        self.value: dict[str, float] | None = None

    def update(self, bar: BarLike) -> dict[str, float] | None:
        x = bar.close
        q = self._q
        q.append(x)
        total = self._total + x
        p = self.period
        shift = self._shift
        if shift is None:  # the first value of the first window anchors the shift
            shift = self._shift = x
        d = x - shift
        s1 = self._s1 + d
        s2 = self._s2 + d * d
        if self.value is None and len(q) < p:
            self._total = total
            self._s1 = s1
            self._s2 = s2
            return None
        inv = self._inv
        mean = total / p
        m1 = s1 * inv
        var = s2 * inv - m1 * m1
        old = q.popleft()
        self._total = total - old
        d = old - shift
        s1 -= d
        d *= d
        s2 -= d
        self._since -= 1
        if var < 0.000001 * (s2 * inv) or d > 1000000.0 * s2 or self._since <= 0:
            var, s1, s2 = self._reseed(old)
        self._s1 = s1
        self._s2 = s2
        dev = math.sqrt(var) * self.stddev
        v = {"upper": mean + dev, "middle": mean, "lower": mean - dev}
        self.value = v
        return v

    def _reseed(self, old: float) -> tuple[float, float, float]:
        """Shift := window mean, sums rebuilt by a two-pass over the window (``old`` + ``_q``); O(period), rare."""
        self._since = 32 * self.period
        inv = self._inv
        t = old
        for x in self._q:
            t += x
        shift = self._shift = t * inv
        d = old - shift
        s1 = d
        s2 = d * d
        for x in self._q:
            d = x - shift
            s1 += d
            s2 += d * d
        m1 = s1 * inv
        var = s2 * inv - m1 * m1
        if var < 0.000000000001 * (s2 * inv):
            var = 0.0
        d = old - shift
        s1 -= d
        s2 -= d * d
        return var, s1, s2


class Donchian(Indicator):
    """Donchian channel ``{"upper", "middle", "lower"}``: highest high and lowest low of ``period`` bars.

    Monotonic deques of (index, price) keep the window extremes in O(1) amortised per bar.
    """

    __slots__ = ("period", "_ext")
    name: ClassVar[str] = "donchian"
    PARAMS: ClassVar[tuple[Param, ...]] = (Param("period", "int", 20, 2),)

    def __init__(self, period: int = 20) -> None:
        self.period: int = validate_params(type(self), {"period": period})["period"]
        self.warmup = self.period
        self.reset()

    def reset(self) -> None:
        """Forget every bar seen."""
        self._ext = WindowExtremes(self.period)
        self.value: dict[str, float] | None = None

    def update(self, bar: BarLike) -> dict[str, float] | None:
        ext = self._ext.push(bar.high, bar.low)
        if ext is None:
            return None
        upper, lower = ext
        v = {"upper": upper, "middle": (upper + lower) / 2.0, "lower": lower}
        self.value = v
        return v


class Supertrend(Indicator):
    """Supertrend ``{"value", "direction"}`` on hl2 with TA-Lib's Wilder ATR (same seeding as :class:`ATR`).

    Definition (TradingView's ``ta.supertrend``, direction sign flipped so that +1 is up):
    basic bands ``hl2 +- multiplier * atr``; the final upper band keeps its previous value unless the
    basic upper is lower or the previous close closed above it; the final lower band keeps its
    previous value unless the basic lower is higher or the previous close closed below it. In a
    down trend (-1) a close above the final upper band turns it up (+1); in an up trend a close
    below the final lower band turns it down. ``value`` is the final lower band when up, the upper
    when down. The first value is on the ATR's first bar, direction -1 (down) with the basic bands,
    as TradingView starts.
    """

    __slots__ = ("period", "multiplier", "_atr", "_pc", "_up", "_dn", "_dir")
    name: ClassVar[str] = "supertrend"
    PARAMS: ClassVar[tuple[Param, ...]] = (Param("period", "int", 10, 1), Param("multiplier", "float", 3.0, 0.0))

    def __init__(self, period: int = 10, multiplier: float = 3.0) -> None:
        p = validate_params(type(self), {"period": period, "multiplier": multiplier})
        self.period, self.multiplier = p["period"], p["multiplier"]
        self._atr = ATR(self.period)
        self.warmup = self._atr.warmup
        self.reset()

    def reset(self) -> None:
        """Forget every bar seen."""
        self._atr.reset()
        self._pc = 0.0
        self._up = 0.0  # final upper band
        self._dn = 0.0  # final lower band
        self._dir = -1
        self.value: dict[str, float | int] | None = None

    def update(self, bar: BarLike) -> dict[str, float | int] | None:
        atr = self._atr.update(bar)
        close = bar.close
        pc = self._pc
        self._pc = close
        if atr is None:
            return None
        mid = (bar.high + bar.low) / 2.0
        band = self.multiplier * atr
        up = mid + band
        dn = mid - band
        if self.value is None:
            direction = -1
        else:
            prev_up = self._up
            prev_dn = self._dn
            if not (up < prev_up or pc > prev_up):
                up = prev_up
            if not (dn > prev_dn or pc < prev_dn):
                dn = prev_dn
            if self._dir == -1:
                direction = 1 if close > up else -1
            else:
                direction = -1 if close < dn else 1
        self._up = up
        self._dn = dn
        self._dir = direction
        v: dict[str, float | int] = {"value": dn if direction == 1 else up, "direction": direction}
        self.value = v
        return v
