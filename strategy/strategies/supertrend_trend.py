"""``supertrend_trend``: follow the Supertrend's direction.

A flip of the Supertrend direction to up enters long (reversing a short); a
flip to down goes short with ``allow_short``, else exits the long. Only flips
trade (not the first ready bar's direction), so a start mid-trend waits for
the next flip.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from strategy.api import BarLike, Context, Signal, Strategy
from strategy.strategies._common import StopParams, atr_stop


class SupertrendParams(StopParams):
    period: int = Field(default=10, ge=1, le=500)
    multiplier: float = Field(default=3.0, gt=0, le=20)


class SupertrendTrend(Strategy):
    name = "supertrend_trend"
    Params = SupertrendParams
    params: SupertrendParams
    indicator_params = {"period": ("supertrend", "period"), "multiplier": ("supertrend", "multiplier"),
                        "atr_period": ("atr", "period")}

    def __init__(self, params: SupertrendParams) -> None:
        super().__init__(params)
        self._prev_dir: int | None = None

    def indicators(self) -> dict[str, tuple[str, dict[str, Any]]]:
        p = self.params
        return {"st": ("supertrend", {"period": p.period, "multiplier": p.multiplier}),
                "atr": ("atr", {"period": p.atr_period})}

    def on_bar(self, bar: BarLike, ctx: Context) -> Signal | None:
        st = ctx.values["st"]
        if st is None:
            return None
        direction = st["direction"]
        prev, self._prev_dir = self._prev_dir, direction
        p = self.params
        pos = ctx.position
        atr = ctx.values["atr"]
        tick = ctx.instrument.tick_size
        if prev is not None and direction != prev:
            if direction > 0:
                if pos.is_long or atr is None:
                    return None
                return Signal("BUY", "entry", atr_stop("BUY", bar.close, atr, p.atr_mult, tick), "supertrend up")
            if p.allow_short:
                if pos.is_short or atr is None:
                    return None
                return Signal("SELL", "entry", atr_stop("SELL", bar.close, atr, p.atr_mult, tick), "supertrend down")
            return Signal("SELL", "exit", reason="supertrend down") if pos.is_long else None
        if p.use_stop and self.stop_touched(bar, pos):
            return Signal("SELL" if pos.is_long else "BUY", "exit", reason="stop")
        return None
