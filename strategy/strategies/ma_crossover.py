"""``ma_crossover``: trade the cross of a fast and a slow moving average.

An up-cross is ``fast_prev < slow_prev and fast > slow``, a down-cross the
mirror (touching is not crossing). With ``allow_short`` a cross reverses the
position (up-cross: go long, down-cross: go short); without it an up-cross
enters long and a down-cross only exits a long.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from strategy.api import BarLike, Context, Signal, Strategy
from strategy.strategies._common import StopParams, atr_stop


class MaCrossoverParams(StopParams):
    fast: int = Field(default=9, ge=1, le=1000)
    slow: int = Field(default=21, ge=2, le=1000)
    kind: Literal["sma", "ema"] = "ema"

    @model_validator(mode="after")
    def _fast_below_slow(self) -> MaCrossoverParams:
        if self.fast >= self.slow:
            raise ValueError(f"fast ({self.fast}) must be below slow ({self.slow})")
        return self


class MaCrossover(Strategy):
    name = "ma_crossover"
    Params = MaCrossoverParams
    params: MaCrossoverParams
    indicator_params = {"fast": ("ema_fast", "period"), "slow": ("ema_slow", "period"), "atr_period": ("atr", "period")}

    def __init__(self, params: MaCrossoverParams) -> None:
        super().__init__(params)
        self._prev_fast: float | None = None
        self._prev_slow: float | None = None

    def indicators(self) -> dict[str, tuple[str, dict[str, Any]]]:
        p = self.params
        return {"fast": (p.kind, {"period": p.fast}), "slow": (p.kind, {"period": p.slow}),
                "atr": ("atr", {"period": p.atr_period})}

    def on_bar(self, bar: BarLike, ctx: Context) -> Signal | None:
        v = ctx.values
        fast, slow = v["fast"], v["slow"]
        pf, ps = self._prev_fast, self._prev_slow
        self._prev_fast, self._prev_slow = fast, slow
        if fast is None or slow is None or pf is None or ps is None:
            return None
        p = self.params
        pos = ctx.position
        up = pf < ps and fast > slow
        down = pf > ps and fast < slow
        if up:
            if pos.is_long:
                return None
            return self._entry("BUY", bar, ctx, "up-cross")
        if down:
            if p.allow_short:
                return None if pos.is_short else self._entry("SELL", bar, ctx, "down-cross")
            return Signal("SELL", "exit", reason="down-cross") if pos.is_long else None
        if p.use_stop and self.stop_touched(bar, pos):
            return Signal("SELL" if pos.is_long else "BUY", "exit", reason="stop")
        return None

    def _entry(self, side: Literal["BUY", "SELL"], bar: BarLike, ctx: Context, why: str) -> Signal | None:
        atr = ctx.values["atr"]
        if atr is None:
            return None
        p = self.params
        return Signal(side, "entry", atr_stop(side, bar.close, atr, p.atr_mult, ctx.instrument.tick_size), why)
