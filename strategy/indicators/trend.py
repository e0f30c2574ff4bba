"""Trend strength: ADX with +DI / -DI, exactly as TA-Lib's ADX, PLUS_DI and MINUS_DI (unstable period 0).

TA-Lib's seeding (checked against talib 0.8.2 / TA-Lib C 0.8.1):

- +DM / -DM / TR are summed over the first ``period - 1`` bar-to-bar moves (bars 2..period), then
  Wilder-smoothed as ``s = s - s / period + x`` (not ``(s * (period - 1) + x) / period``).
  A move counts as +DM when ``up > 0 and up > down``, as -DM when ``down > 0 and down > up``.
- +DI = 100 * +DM / TR, -DI likewise, both 0 when TR is exactly 0 (TA-Lib #253: tested exactly).
- DX = 100 * |+DI - -DI| / (+DI + -DI). The first ADX is the sum of the ``period`` DX values of
  bars period+1 .. 2*period divided by ``period``, then ``adx = (adx * (period - 1) + dx) / period``.
  A bar whose TR is 0 or whose DI sum is zero within 1e-14 (TA_IS_ZERO) adds nothing to that sum and leaves the ADX
  unchanged afterwards. First value on bar ``2 * period`` (lookback ``2 * period - 1``).
"""

from __future__ import annotations

from typing import ClassVar

from strategy.indicators.base import TA_EPSILON, BarLike, Indicator, Param, validate_params


class ADX(Indicator):
    """Average directional index ``{"adx", "plus_di", "minus_di"}`` (None until the ADX has its first value)."""

    __slots__ = ("period", "_n", "_ph", "_pl", "_pc", "_pdm", "_mdm", "_tr", "_sumdx", "_adx")
    name: ClassVar[str] = "adx"
    PARAMS: ClassVar[tuple[Param, ...]] = (Param("period", "int", 14, 2),)

    def __init__(self, period: int = 14) -> None:
        self.period: int = validate_params(type(self), {"period": period})["period"]
        self.warmup = 2 * self.period
        self.reset()

    def reset(self) -> None:
        """Forget every bar seen."""
        self._n = 0  # bars seen
        self._ph = self._pl = self._pc = 0.0
        self._pdm = self._mdm = self._tr = 0.0
        self._sumdx = 0.0
        self._adx = 0.0
        self.value: dict[str, float] | None = None

    def update(self, bar: BarLike) -> dict[str, float] | None:
        h = bar.high
        lo = bar.low
        n = self._n
        self._n = n + 1
        pc = self._pc
        diff_p = h - self._ph
        diff_m = self._pl - lo
        self._ph = h
        self._pl = lo
        self._pc = bar.close
        if n == 0:
            return None
        tr = h - lo
        x = abs(h - pc)
        if x > tr:
            tr = x
        x = abs(lo - pc)
        if x > tr:
            tr = x
        p = self.period
        pdm = self._pdm
        mdm = self._mdm
        if n < p:  # summing the first period - 1 moves
            if diff_m > 0.0 and diff_p < diff_m:
                self._mdm = mdm + diff_m
            elif diff_p > 0.0 and diff_p > diff_m:
                self._pdm = pdm + diff_p
            self._tr += tr
            return None
        mdm -= mdm / p
        pdm -= pdm / p
        if diff_m > 0.0 and diff_p < diff_m:
            mdm += diff_m
        elif diff_p > 0.0 and diff_p > diff_m:
            pdm += diff_p
        s = self._tr
        s = s - s / p + tr
        self._tr = s
        self._pdm = pdm
        self._mdm = mdm
        adx = self._adx
        if s <= 0.0:
            mdi = pdi = 0.0
        else:
            mdi = 100.0 * (mdm / s)
            pdi = 100.0 * (pdm / s)
            t = mdi + pdi
            if not -TA_EPSILON < t < TA_EPSILON:
                dx = 100.0 * (abs(mdi - pdi) / t)
                if n >= 2 * p:
                    adx = (adx * (p - 1) + dx) / p
                else:
                    self._sumdx += dx
        if n < 2 * p - 1:
            return None
        if n == 2 * p - 1:
            adx = self._sumdx / p
        self._adx = adx
        v = {"adx": adx, "plus_di": pdi, "minus_di": mdi}
        self.value = v
        return v
