"""Event contracts of DESIGN section 4 as pydantic models.

Timestamps are integers, epoch milliseconds UTC; prices are floats in rupees.
Unknown extra fields are allowed and kept (``extra="allow"``), so producers can
add optional fields without breaking consumers. These models are the contract,
the JSON Schemas are generated from them (``python -m schemas.export``).

The rules are those of the fast decoders (DESIGN section 6: out of range is
poison), with the ranges of :mod:`schemas.limits`: validation is strict, as
for JSON decoded by orjson (an int field takes only an int: not ``true``, not
``1.0``, not ``"1"``; a float field takes an int or a float), floats are finite,
tokens and timestamps are within the tables' ranges. Hot paths (the bar
builder, the aggregators) keep their own decoders and validate only the fields
they read; ``tests/unit/test_contract_decoders.py`` holds them to these models.
Everything else builds and reads messages with :func:`schemas.encode` /
:func:`schemas.decode`.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.limits import (
    MAX_BAR_TICKS_PER_S,
    MAX_BAR_VOLUME_PER_S,
    MAX_CUM_VOLUME,
    MAX_TICK_VOLUME,
    MAX_TOKEN,
    MAX_TS_MS,
    MIN_TS_MS,
    max_bar_ticks,
    max_bar_volume,
)

Timeframe = Literal["1s", "1m", "3m", "5m", "15m", "30m", "60m"]
Side = Literal["BUY", "SELL"]
OrderType = Literal["MARKET", "LIMIT", "SL", "SL-M"]
Product = Literal["MIS", "CNC", "NRML"]
Venue = Literal["paper", "dry", "live"]
EpochMs = Annotated[int, Field(ge=MIN_TS_MS, lt=MAX_TS_MS)]
"""Epoch milliseconds UTC in [2000-01-01, 2100-01-01) (:data:`schemas.limits.MIN_TS_MS`, ``MAX_TS_MS``)."""
Token = Annotated[int, Field(gt=0, lt=MAX_TOKEN)]
"""An ``instrument_token``: fits the ``bigint`` columns."""
Quantity = Annotated[int, Field(ge=0, lt=2**63)]
"""A non-negative count that fits ``bigint``."""

_CONFIG = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)


class Event(BaseModel):
    """Base: extra fields allowed and kept; strict types; finite floats."""

    model_config = _CONFIG


class DepthLevel(BaseModel):
    """One price level of market depth."""

    model_config = _CONFIG
    price: float
    qty: Quantity
    orders: Quantity


class Depth(BaseModel):
    """Five levels of bids (``buy``) and asks (``sell``)."""

    model_config = _CONFIG
    buy: list[DepthLevel] = Field(max_length=5)
    sell: list[DepthLevel] = Field(max_length=5)


class Tick(Event):
    """A market data update for one instrument (topic ``ticks``, key instrument_token)."""

    instrument_token: Token
    exchange_ts: EpochMs = Field(description="exchange timestamp, epoch ms UTC")
    recv_ts: EpochMs = Field(description="when our ingestion received it, epoch ms UTC")
    ltp: float
    volume: Annotated[int, Field(ge=0, lt=MAX_TICK_VOLUME)] | None = Field(
        description="cumulative day volume (Kite volume_traded), in [0, 2**40)")
    last_qty: Quantity | None
    oi: Quantity | None
    bid: float | None
    ask: float | None
    bid_qty: Quantity | None
    ask_qty: Quantity | None
    depth: Depth | None = None


class Bar(Event):
    """An OHLCV bar (topics ``bars.<tf>``, key instrument_token)."""

    instrument_token: Token
    tf: Timeframe
    ts: EpochMs = Field(description="bucket start, epoch ms UTC: a whole second for 1s bars, a whole minute "
                                    "for the others (multi-minute bars are anchored to the session open)")
    open: float
    high: float
    low: float
    close: float
    volume: int = Field(ge=0, le=max_bar_volume("60m"),
                        description=f"volume traded inside the bucket, at most {MAX_BAR_VOLUME_PER_S} "
                                    "per second of the timeframe")
    ticks: int = Field(ge=0, le=max_bar_ticks("60m"),
                       description=f"at most {MAX_BAR_TICKS_PER_S} per second of the timeframe")
    cum_volume: Annotated[int, Field(ge=0, lt=MAX_CUM_VOLUME)] | None = Field(
        default=None, description="the last tick's cumulative day volume (null when the feed has none)")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.ts % (1000 if self.tf == "1s" else 60_000):
            raise ValueError(f"ts {self.ts} is not aligned to {self.tf}")
        if not (self.low <= self.open <= self.high and self.low <= self.close <= self.high):
            raise ValueError("prices inconsistent: need low <= open, close <= high")
        if self.volume > max_bar_volume(self.tf):
            raise ValueError(f"volume above {max_bar_volume(self.tf)} for {self.tf}")
        if self.ticks > max_bar_ticks(self.tf):
            raise ValueError(f"ticks above {max_bar_ticks(self.tf)} for {self.tf}")
        return self


class Order(Event):
    """A strategy's order intent (topics ``orders``, ``orders.sized``, ``orders.allowed``)."""

    order_id: str = Field(min_length=1, description="deterministic from strategy, instrument, side, signal time")
    strategy: str
    instrument_token: Token
    symbol: str
    exchange: str
    side: Side
    order_type: OrderType
    product: Product
    price: float | None
    trigger_price: float | None
    stop_loss: float | None
    qty: int | None = Field(description="null until the risk manager sizes it")
    tf: str
    signal_ts: EpochMs
    created_ts: EpochMs


class SizedOrder(Order):
    """An order after risk sizing (topic ``orders.sized``)."""

    qty: int = Field(gt=0)
    risk: dict[str, object]


class AllowedOrder(SizedOrder):
    """An order that passed the budget guard (topic ``orders.allowed``)."""

    budget: dict[str, object]


class Fill(Event):
    """An execution (topic ``fills``, key order_id)."""

    fill_id: str
    order_id: str
    broker_order_id: str
    instrument_token: Token
    side: Side
    qty: int = Field(gt=0)
    price: float
    ts: EpochMs
    venue: Venue
    strategy: str


class OrderUpdate(Event):
    """An OMS state transition (topic ``order.updates``, key order_id)."""

    order_id: str
    from_status: str | None
    to_status: str
    ts: EpochMs
    source: str
    detail: str | None


CONTRACTS: dict[str, type[BaseModel]] = {
    "tick": Tick,
    "bar": Bar,
    "order": Order,
    "order_sized": SizedOrder,
    "order_allowed": AllowedOrder,
    "fill": Fill,
    "order_update": OrderUpdate,
}
