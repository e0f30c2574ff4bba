"""Session VWAP: typical price weighted by bar volume, cumulative from the session open.

Definition: ``vwap = sum(tp * volume) / sum(volume)`` with ``tp = (high + low + close) / 3``,
summed over the bars of the current session. A bar whose IST trading date (Asia/Kolkata,
``core.clock.IST``; the bar's ``ts`` is its bucket start in epoch ms UTC) differs from the
previous bar's starts a new session, so the overnight (and weekend) gap resets it. Until the
session has traded any volume the output is None (there is no price to average yet).
"""

from __future__ import annotations

from typing import ClassVar

from core.clock import IST
from strategy.indicators.base import BarLike, Indicator, Param

_DAY_MS = 86_400_000
_IST_OFFSET_MS = int(IST.utcoffset(None).total_seconds() * 1000)


def ist_day(ts_ms: int) -> int:
    """Days since 1970-01-01 of the IST date of ``ts_ms`` (IST has no DST: a fixed offset suffices)."""
    return (ts_ms + _IST_OFFSET_MS) // _DAY_MS


class VWAP(Indicator):
    """Volume-weighted average price of the typical price, reset at each IST trading date."""

    __slots__ = ("_day", "_pv", "_vol")
    name: ClassVar[str] = "vwap"
    PARAMS: ClassVar[tuple[Param, ...]] = ()

    def __init__(self) -> None:
        self.warmup = 1
        self.reset()

    def reset(self) -> None:
        """Forget every bar seen."""
        self._day: int | None = None
        self._pv = 0.0
        self._vol = 0.0
        self.value: float | None = None

    def update(self, bar: BarLike) -> float | None:
        day = (bar.ts + _IST_OFFSET_MS) // _DAY_MS
        vol = bar.volume
        if day != self._day:
            self._day = day
            self._pv = 0.0
            self._vol = 0.0
            self.value = None
        if vol:
            self._pv += (bar.high + bar.low + bar.close) / 3.0 * vol
            self._vol += vol
        if not self._vol:
            return None
        v = self._pv / self._vol
        self.value = v
        return v
