"""Moving averages of the close: SMA, EMA, WMA, computed the way TA-Lib computes them.

The arithmetic follows TA-Lib 0.8.1's own order of operations (running total: add the new close,
divide, then drop the oldest; WMA's periodic re-anchoring), so SMA and WMA agree with ``talib``
bit for bit and a long run does not drift away from it.
"""

from __future__ import annotations

from collections import deque
from typing import ClassVar

from strategy.indicators.base import BarLike, Indicator, Param, validate_params


class SMA(Indicator):
    """Simple moving average of ``period`` closes (TA-Lib SMA; first value on bar ``period``)."""

    __slots__ = ("period", "_q", "_total")
    name: ClassVar[str] = "sma"
    PARAMS: ClassVar[tuple[Param, ...]] = (Param("period", "int", 20, 1),)

    def __init__(self, period: int = 20) -> None:
        self.period: int = validate_params(type(self), {"period": period})["period"]
        self.warmup = self.period
        self.reset()

    def reset(self) -> None:
        """Forget every bar seen."""
        self._q: deque[float] = deque()
        self._total = 0.0
        self.value: float | None = None

    def update(self, bar: BarLike) -> float | None:
        x = bar.close
        q = self._q
        q.append(x)
        total = self._total + x
        if self.value is None and len(q) < self.period:
            self._total = total
            return None
        v = total / self.period
        self._total = total - q.popleft()
        self.value = v
        return v


class EMA(Indicator):
    """Exponential moving average, k = 2 / (period + 1), seeded with the SMA of the first ``period`` closes.

    That seed is TA-Lib's default (non-Metastock) compatibility mode; the first value is on bar ``period``.
    TA-Lib fuses ``(x - ema) * k + ema`` into an FMA (Python 3.11 has none): agreement is ~1 ulp, not bit for bit.
    """

    __slots__ = ("period", "_k", "_n", "_sum")
    name: ClassVar[str] = "ema"
    PARAMS: ClassVar[tuple[Param, ...]] = (Param("period", "int", 20, 1),)

    def __init__(self, period: int = 20) -> None:
        self.period: int = validate_params(type(self), {"period": period})["period"]
        self._k: float = 2.0 / (self.period + 1)
        self.warmup = self.period
        self.reset()

    def reset(self) -> None:
        """Forget every bar seen."""
        self._n = 0
        self._sum = 0.0
        self.value: float | None = None

    def update(self, bar: BarLike) -> float | None:
        x = bar.close
        prev: float | None = self.value
        if prev is not None:
            v = (x - prev) * self._k + prev
            self.value = v
            return v
        self._sum += x
        self._n += 1
        if self._n < self.period:
            return None
        v = self._sum / self.period
        self.value = v
        return v


class WMA(Indicator):
    """Linearly weighted moving average (weights 1..period, newest heaviest), TA-Lib's running-sum form.

    TA-Lib keeps ``periodSum`` (the weighted sum) and ``periodSub`` (the plain sum) and moves both
    per bar instead of re-weighting the window, and since 0.8 (#255) rebuilds both from the window
    every ``8 * period`` bars so rounding does not pile up; doing the same keeps the results
    bit-identical (amortised O(1)). Period 1 is the close itself.
    """

    __slots__ = ("period", "_q", "_wsum", "_sum", "_trail", "_div", "_since")
    name: ClassVar[str] = "wma"
    PARAMS: ClassVar[tuple[Param, ...]] = (Param("period", "int", 20, 1),)

    def __init__(self, period: int = 20) -> None:
        self.period: int = validate_params(type(self), {"period": period})["period"]
        self._div = float(self.period) * (self.period + 1) / 2.0
        self.warmup = self.period
        self.reset()

    def reset(self) -> None:
        """Forget every bar seen."""
        self._q: deque[float] = deque()
        self._wsum = 0.0
        self._sum = 0.0
        self._trail = 0.0
        self._since = 8 * self.period
        self.value: float | None = None

    def update(self, bar: BarLike) -> float | None:
        x = bar.close
        p = self.period
        if p == 1:
            self.value = x
            return x
        q = self._q
        q.append(x)
        n = len(q)
        if n < p:
            self._sum += x
            self._wsum += x * n
            return None
        s = self._sum + x - self._trail
        ws = self._wsum + x * p
        self._since -= 1
        if self._since <= 0:  # re-anchor: rebuild both sums from the window, oldest first
            self._since = 8 * p
            s = ws = 0.0
            w = 1
            for y in q:
                s += y
                ws += y * w
                w += 1
        self._trail = q.popleft()
        v: float = ws / self._div
        self._wsum = ws - s
        self._sum = s
        self.value = v
        return v
