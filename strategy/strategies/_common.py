"""Pieces the shipped strategies share: the ATR stop params and the stop price rule."""

from __future__ import annotations

from pydantic import Field

from strategy.api import Params, Side


class StopParams(Params):
    """Every entry carries an ATR-based stop: ``atr_mult`` x ATR(``atr_period``) from the close.

    ``use_stop``: when true, a bar that trades at or through the stop also exits
    the position; when false the stop is only the risk manager's sizing distance.
    """

    allow_short: bool = False
    use_stop: bool = True
    atr_period: int = Field(default=14, ge=1, le=500)
    atr_mult: float = Field(default=2.0, gt=0, le=20)


def atr_stop(side: Side, close: float, atr: float, mult: float, tick: float) -> float:
    """The stop for an entry at ``close``: below it for BUY, above it for SELL, on the tick grid.

    At least one tick away from the close, so the risk distance is never zero.
    """
    dist = max(atr * mult, tick)
    raw = close - dist if side == "BUY" else close + dist
    return round(round(raw / tick) * tick, 10)
