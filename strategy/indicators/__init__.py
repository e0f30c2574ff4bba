"""Incremental technical indicators for the strategy layer (DESIGN section 11).

``create(name, **params)`` returns an indicator; ``update(bar)`` takes anything with
``open, high, low, close, volume, ts`` (ts = epoch ms UTC, bar bucket start) and returns None
while warming up, then a float, or a dict for multi-output indicators:

========== ============================== ===================================
name       parameters (defaults)           output
========== ============================== ===================================
sma        period=20                      float
ema        period=20                      float
wma        period=20                      float
rsi        period=14 (>= 2)               float, 0..100
atr        period=14                      float
macd       fast=12, slow=26, signal=9     {macd, signal, hist}
bollinger  period=20 (>= 2), stddev=2.0   {upper, middle, lower}
stoch      k_period=14, k_smooth=3,       {k, d}
           d_period=3
adx        period=14 (>= 2)               {adx, plus_di, minus_di}
vwap       (none)                         float, per IST session
supertrend period=10, multiplier=3.0      {value, direction} (+1 up, -1 down)
donchian   period=20 (>= 2)               {upper, middle, lower}
========== ============================== ===================================

``donchian`` returns a dict although TA-Lib's MAX/MIN are two functions: a channel has two
sides (and a middle), the same shape as ``bollinger``.

Every TA-Lib-backed indicator gives TA-Lib's values (its seeding, its zero-division results)
and its first value on the bar of TA-Lib's first non-NaN output; ``warmup`` is that bar's
1-based number (TA-Lib's lookback + 1). Each indicator also has ``value`` (the last output),
``ready`` and ``reset()``. Updates are O(1) per bar with no numpy: this is the backtester's
inner loop.
"""

from __future__ import annotations

from typing import Any

from strategy.indicators.averages import EMA, SMA, WMA
from strategy.indicators.base import BarLike, Indicator, Param, validate_params as _validate
from strategy.indicators.momentum import MACD, RSI, Stoch
from strategy.indicators.trend import ADX
from strategy.indicators.volatility import ATR, Bollinger, Donchian, Supertrend
from strategy.indicators.volume import VWAP

INDICATORS: dict[str, type[Indicator]] = {
    cls.name: cls for cls in (SMA, EMA, WMA, RSI, ATR, MACD, Bollinger, Stoch, ADX, VWAP, Supertrend, Donchian)
}
"""Every indicator by its ``create`` name."""

NAMES: tuple[str, ...] = tuple(INDICATORS)


def indicator_class(name: str) -> type[Indicator]:
    """The class behind ``name``; ValueError naming the unknown indicator and the known ones."""
    try:
        return INDICATORS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown indicator {name!r} (expected one of: {', '.join(NAMES)})") from None


def validate_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters ``create(name, **params)`` would use (defaults filled in), or a one-line ValueError."""
    return _validate(indicator_class(name), params)


def create(name: str, **params: Any) -> Indicator:
    """A fresh indicator ``name`` with ``params`` (see the module table); ValueError on a bad name or param."""
    cls = indicator_class(name)
    return cls(**_validate(cls, params))


__all__ = ["ADX", "ATR", "EMA", "INDICATORS", "MACD", "NAMES", "RSI", "SMA", "VWAP", "WMA", "BarLike", "Bollinger",
           "Donchian", "Indicator", "Param", "Stoch", "Supertrend", "create", "indicator_class", "validate_params"]
