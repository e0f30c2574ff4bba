"""Event contracts of DESIGN section 4 as pydantic models.

Timestamps are integers, epoch milliseconds UTC; prices are floats in rupees.
Unknown extra fields are allowed and kept (``extra="allow"``), so producers can
add optional fields without breaking consumers. Hot paths (the bar builder)
decode with orjson and validate only what they use; these models are the
contract, the JSON Schemas are generated from them (``python -m schemas.export``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Timeframe = Literal["1s", "1m", "3m", "5m", "15m", "30m", "60m"]
Side = Literal["BUY", "SELL"]
OrderType = Literal["MARKET", "LIMIT", "SL", "SL-M"]
Product = Literal["MIS", "CNC", "NRML"]
Venue = Literal["paper", "dry", "live"]
EpochMs = int


class Event(BaseModel):
    """Base: extra fields allowed and kept."""

    model_config = ConfigDict(extra="allow")


class DepthLevel(BaseModel):
    """One price level of market depth."""

    model_config = ConfigDict(extra="allow")
    price: float
    qty: int
    orders: int


class Depth(BaseModel):
    """Five levels of bids (``buy``) and asks (``sell``)."""

    model_config = ConfigDict(extra="allow")
    buy: list[DepthLevel] = Field(max_length=5)
    sell: list[DepthLevel] = Field(max_length=5)


class Tick(Event):
    """A market data update for one instrument (topic ``ticks``, key instrument_token)."""

    instrument_token: int
    exchange_ts: EpochMs = Field(description="exchange timestamp, epoch ms UTC")
    recv_ts: EpochMs = Field(description="when our ingestion received it, epoch ms UTC")
    ltp: float
    volume: int | None = Field(description="cumulative day volume (Kite volume_traded)")
    last_qty: int | None
    oi: int | None
    bid: float | None
    ask: float | None
    bid_qty: int | None
    ask_qty: int | None
    depth: Depth | None = None


class Bar(Event):
    """An OHLCV bar (topics ``bars.<tf>``, key instrument_token)."""

    instrument_token: int
    tf: Timeframe
    ts: EpochMs = Field(description="bucket start, epoch ms UTC")
    open: float
    high: float
    low: float
    close: float
    volume: int = Field(ge=0, description="volume traded inside the bucket")
    ticks: int = Field(ge=0)


class Order(Event):
    """A strategy's order intent (topics ``orders``, ``orders.sized``, ``orders.allowed``)."""

    order_id: str = Field(min_length=1, description="deterministic from strategy, instrument, side, signal time")
    strategy: str
    instrument_token: int
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
    instrument_token: int
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
