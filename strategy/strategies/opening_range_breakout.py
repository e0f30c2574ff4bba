"""``opening_range_breakout``: trade the break of the session's opening range.

The opening range is the high and low of the bars inside the first
``range_minutes`` of the session (a bar counts when it ends by then). After
it, a close above the range high enters long, a close below the range low
enters short (with ``allow_short``; without it, it exits a long), at most
``max_entries`` entries a session. The range resets at each session open
(from the exchange calendar), so overnight data never mixes days.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from strategy.api import TF_MS, BarLike, Context, Signal, Strategy
from strategy.strategies._common import StopParams, atr_stop


class OrbParams(StopParams):
    range_minutes: int = Field(default=15, ge=1, le=375)
    max_entries: int = Field(default=1, ge=1, le=100)


class OpeningRangeBreakout(Strategy):
    name = "opening_range_breakout"
    Params = OrbParams
    params: OrbParams
    indicator_params = {"atr_period": ("atr", "period")}

    def __init__(self, params: OrbParams) -> None:
        super().__init__(params)
        self._session_open: int | None = None
        self._hi = float("-inf")
        self._lo = float("inf")
        self._entries = 0

    def indicators(self) -> dict[str, tuple[str, dict[str, Any]]]:
        return {"atr": ("atr", {"period": self.params.atr_period})}

    def on_bar(self, bar: BarLike, ctx: Context) -> Signal | None:
        s = ctx.session
        if s.open_ms is None:
            return None
        if s.open_ms != self._session_open:
            self._session_open, self._hi, self._lo, self._entries = s.open_ms, float("-inf"), float("inf"), 0
        p = self.params
        range_end = s.open_ms + p.range_minutes * 60_000
        if bar.ts < s.open_ms:
            return None
        if bar.ts + TF_MS[ctx.tf] <= range_end:
            self._hi = max(self._hi, bar.high)
            self._lo = min(self._lo, bar.low)
            return None
        pos = ctx.position
        if p.use_stop and self.stop_touched(bar, pos):
            return Signal("SELL" if pos.is_long else "BUY", "exit", reason="stop")
        if self._hi == float("-inf"):
            return None  # the range had no bar (data started late): no breakout level today
        atr = ctx.values["atr"]
        tick = ctx.instrument.tick_size
        if bar.close > self._hi and not pos.is_long:
            if atr is None or self._entries >= p.max_entries:
                return None
            self._entries += 1
            return Signal("BUY", "entry", atr_stop("BUY", bar.close, atr, p.atr_mult, tick),
                          f"close above range high {self._hi:g}")
        if bar.close < self._lo:
            if p.allow_short and not pos.is_short:
                if atr is None or self._entries >= p.max_entries:
                    return None
                self._entries += 1
                return Signal("SELL", "entry", atr_stop("SELL", bar.close, atr, p.atr_mult, tick),
                              f"close below range low {self._lo:g}")
            if pos.is_long:
                return Signal("SELL", "exit", reason=f"close below range low {self._lo:g}")
        return None
