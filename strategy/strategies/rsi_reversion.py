"""``rsi_reversion``: fade RSI extremes, exit when RSI comes back to the middle.

Long entry when RSI(``period``) falls below ``oversold`` while flat; the long
exits when RSI rises to ``exit_level`` or above. With ``allow_short`` the
mirror: short when RSI rises above ``overbought``, cover at ``exit_level`` or
below. A level (not a cross) triggers, so an entry can come on the first ready
bar; the engine's position keeps it from repeating.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from strategy.api import BarLike, Context, Signal, Strategy
from strategy.strategies._common import StopParams, atr_stop


class RsiReversionParams(StopParams):
    period: int = Field(default=14, ge=2, le=500)
    oversold: float = Field(default=30.0, gt=0, lt=100)
    overbought: float = Field(default=70.0, gt=0, lt=100)
    exit_level: float = Field(default=50.0, gt=0, lt=100)

    @model_validator(mode="after")
    def _levels_ordered(self) -> RsiReversionParams:
        if not self.oversold < self.exit_level < self.overbought:
            raise ValueError(f"need oversold < exit_level < overbought, got {self.oversold}, "
                             f"{self.exit_level}, {self.overbought}")
        return self


class RsiReversion(Strategy):
    name = "rsi_reversion"
    Params = RsiReversionParams
    params: RsiReversionParams
    indicator_params = {"period": ("rsi", "period"), "atr_period": ("atr", "period")}

    def indicators(self) -> dict[str, tuple[str, dict[str, Any]]]:
        p = self.params
        return {"rsi": ("rsi", {"period": p.period}), "atr": ("atr", {"period": p.atr_period})}

    def on_bar(self, bar: BarLike, ctx: Context) -> Signal | None:
        rsi, atr = ctx.values["rsi"], ctx.values["atr"]
        if rsi is None:
            return None
        p = self.params
        pos = ctx.position
        if pos.is_long:
            if rsi >= p.exit_level:
                return Signal("SELL", "exit", reason=f"rsi {rsi:.2f} >= {p.exit_level:g}")
            if p.use_stop and self.stop_touched(bar, pos):
                return Signal("SELL", "exit", reason="stop")
            return None
        if pos.is_short:
            if rsi <= p.exit_level:
                return Signal("BUY", "exit", reason=f"rsi {rsi:.2f} <= {p.exit_level:g}")
            if p.use_stop and self.stop_touched(bar, pos):
                return Signal("BUY", "exit", reason="stop")
            return None
        if atr is None:
            return None
        tick = ctx.instrument.tick_size
        if rsi < p.oversold:
            return Signal("BUY", "entry", atr_stop("BUY", bar.close, atr, p.atr_mult, tick),
                          f"rsi {rsi:.2f} < {p.oversold:g}")
        if p.allow_short and rsi > p.overbought:
            return Signal("SELL", "entry", atr_stop("SELL", bar.close, atr, p.atr_mult, tick),
                          f"rsi {rsi:.2f} > {p.overbought:g}")
        return None
