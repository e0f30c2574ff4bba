"""The strategy API: what a strategy sees (:class:`Context`), what it says (:class:`Signal`).

A strategy is one class (:class:`Strategy`) with a typed params model (unknown
params rejected), the indicators it needs (built with
:func:`strategy.indicators.create`, updated by the decision engine before
``on_bar``) and ``on_bar(bar, ctx) -> Signal | None``. It holds no I/O and reads
no clock: everything time-related comes from the bar's ``ts`` (event time) and
the session facts in ``ctx``, so a replay, an accelerated paper session and a
backtest decide exactly like live.

A :class:`Signal` states an intent, not an order:

- ``entry`` on side BUY (go long) or SELL (go short), with a ``stop_loss``
  (ATR-based in the shipped strategies; risk sizes from it). An entry against
  an opposite position reverses it (the engine emits the exit, then the entry).
- ``exit`` on side SELL (close a long) or BUY (close a short); ignored when there
  is nothing on that side to close.

The engine (:mod:`strategy.engine`) turns signals into Orders, keeps positions
from fills and applies the session rules (no entries outside the session, the
MIS square-off).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol

from pydantic import BaseModel, ConfigDict

Side = Literal["BUY", "SELL"]
Kind = Literal["entry", "exit"]

TF_MS: dict[str, int] = {"1s": 1_000, "1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000,
                         "30m": 1_800_000, "60m": 3_600_000, "1d": 86_400_000}
"""A timeframe's bucket length in milliseconds (``1d``: daily bars, backtests only; the live stack decides on
``1m``..``60m``)."""


class BarLike(Protocol):
    """What strategies and indicators read from a bar (a :class:`schemas.Bar` or any bar record)."""

    instrument_token: int
    ts: int
    open: float
    high: float
    low: float
    close: float
    volume: int


@dataclass(frozen=True, slots=True)
class Signal:
    """A strategy's intent on one bar (see the module docstring)."""

    side: Side
    kind: Kind
    stop_loss: float | None = None
    reason: str = ""
    strength: float = 1.0

    @property
    def direction(self) -> int:
        """+1 for BUY, -1 for SELL."""
        return 1 if self.side == "BUY" else -1


@dataclass(frozen=True, slots=True)
class InstrumentInfo:
    """The instrument facts a strategy may use (from ``configs/tokens.csv``)."""

    instrument_token: int
    symbol: str
    exchange: str
    tick_size: float
    lot_size: int

    def round_to_tick(self, price: float) -> float:
        """The nearest price on the tick grid."""
        return round(round(price / self.tick_size) * self.tick_size, 10)


@dataclass(slots=True)
class Position:
    """One (strategy, instrument) position as the engine knows it.

    ``qty`` (signed) and ``avg_price`` come from fills; ``direction`` is what the
    strategy's decided orders aim at (+1 long, -1 short, 0 flat), which leads
    ``qty`` while an order is on its way. ``stop`` is the active entry's stop.
    """

    qty: int = 0
    avg_price: float = 0.0
    direction: int = 0
    stop: float | None = None
    entry_ts: int | None = None

    @property
    def is_long(self) -> bool:
        return self.direction > 0

    @property
    def is_short(self) -> bool:
        return self.direction < 0

    @property
    def is_flat(self) -> bool:
        return self.direction == 0


@dataclass(frozen=True, slots=True)
class SessionFacts:
    """The exchange session around a bar, from the one calendar in :mod:`core.sessions`."""

    open_ms: int | None
    close_ms: int | None
    square_off_ms: int | None

    def in_session(self, ts_ms: int) -> bool:
        """``ts_ms`` is inside the regular (or special) session."""
        return self.open_ms is not None and self.close_ms is not None and self.open_ms <= ts_ms < self.close_ms

    def minutes_since_open(self, ts_ms: int) -> float | None:
        """Minutes from the session open to ``ts_ms`` (None without a session)."""
        return None if self.open_ms is None else (ts_ms - self.open_ms) / 60_000


@dataclass(slots=True)
class Context:
    """What ``on_bar`` sees: position, indicator values, instrument, session, decision time."""

    instrument: InstrumentInfo
    position: Position
    session: SessionFacts
    tf: str
    decision_ts: int
    """Event time of the decision: the bar's close, ``ts`` + the timeframe (ms UTC)."""
    values: dict[str, Any]
    """The strategy's indicators' latest outputs by name (None while warming up)."""


class Params(BaseModel):
    """Base of every strategy's params model: unknown params are rejected, values typed."""

    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)


BaseParams = Params
"""The params base under another name: inside :class:`Strategy` the name ``Params`` is the class attribute."""


class Strategy(ABC):
    """Base class: subclasses set ``name``, ``Params`` and implement ``indicators`` and ``on_bar``.

    One instance runs one (strategy, instrument, timeframe): it may keep state
    between bars (e.g. previous indicator values). ``warmup`` is the number of
    bars before every indicator is ready.
    """

    name: ClassVar[str] = ""
    Params: ClassVar[type[Params]] = Params
    timeframes: ClassVar[tuple[str, ...]] = ("1m", "3m", "5m", "15m", "30m", "60m")
    """The timeframes the strategy may run on."""
    indicator_params: ClassVar[dict[str, tuple[str, str]]] = {}
    """``{param: (configs/indicators.yaml entry, its parameter)}``: where a param the registry leaves out
    comes from, per timeframe (e.g. ``{"period": ("rsi", "period")}``); else the Params default."""

    params: BaseParams
    """The validated params (subclasses narrow the type to their own ``Params``)."""

    def __init__(self, params: BaseParams) -> None:
        self.params = params

    def indicators(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """``{value name: (indicator name, params)}``; the engine builds and updates them."""
        return {}

    @abstractmethod
    def on_bar(self, bar: BarLike, ctx: Context) -> Signal | None:
        """The strategy's intent on this closed bar, or None."""

    @staticmethod
    def stop_touched(bar: BarLike, pos: Position) -> bool:
        """The bar traded at or through the active stop of the position."""
        if pos.stop is None or pos.is_flat:
            return False
        return bar.low <= pos.stop if pos.is_long else bar.high >= pos.stop
