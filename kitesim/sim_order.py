"""One simulated Kite order: the record the order engine and the portfolio share.

Its own module so :mod:`kitesim.portfolio` (which books an order's trades) and
:mod:`kitesim.orders` (which runs its lifecycle and holds the portfolio) both
depend on it and not on each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.universe import Instrument
from kitesim.clock import ist_str


@dataclass
class SimOrder:
    """One simulated order (prices in wire units, converted for output)."""

    order_id: str
    variety: str
    inst: Instrument
    transaction_type: str
    order_type: str
    product: str
    validity: str
    quantity: int
    price: int
    trigger_price: int
    disclosed_quantity: int
    tag: str | None
    market_protection: float  # -1 (automatic), 0 (none: LIMIT/SL) or a percentage in (0, 100]
    validity_ttl: int | None
    order_ts: float
    guid: str
    status: str = "PUT ORDER REQ RECEIVED"
    status_message: str | None = None
    exchange_order_id: str | None = None
    exchange_ts: float | None = None
    update_ts: float | None = None
    filled_quantity: int = 0
    filled_value: int = 0
    cancelled_quantity: int = 0
    modifications: int = 0
    cancel_due: float | None = None
    accept_due: float | None = None  # wall time an order held in PUT ORDER REQ RECEIVED moves on
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def pending(self) -> int:
        """Quantity still working."""
        return self.quantity - self.filled_quantity - self.cancelled_quantity

    @property
    def is_buy(self) -> bool:
        """BUY side."""
        return self.transaction_type == "BUY"

    def average_price(self) -> float:
        """Average fill price in rupees (0 before any fill)."""
        if not self.filled_quantity:
            return 0.0
        return rupees(self.filled_value / self.filled_quantity, self.inst.price_divisor)

    def as_dict(self, status: str | None = None) -> dict[str, Any]:
        """The Kite order record (``status`` overrides, e.g. ``UPDATE`` for postbacks)."""
        div = self.inst.price_divisor
        final = self.status in ("COMPLETE", "CANCELLED", "REJECTED")
        return {
            "placed_by": "SIM001", "order_id": self.order_id, "exchange_order_id": self.exchange_order_id,
            "parent_order_id": None, "status": status or self.status, "status_message": self.status_message,
            "status_message_raw": self.status_message, "order_timestamp": ist_str(self.order_ts),
            "exchange_update_timestamp": ist_str(self.update_ts) if self.update_ts else None,
            "exchange_timestamp": ist_str(self.exchange_ts) if self.exchange_ts else None,
            "variety": self.variety, "modified": self.modifications > 0, "exchange": self.inst.exchange,
            "tradingsymbol": self.inst.tradingsymbol, "instrument_token": self.inst.instrument_token,
            "order_type": self.order_type, "transaction_type": self.transaction_type,
            "validity": self.validity, "validity_ttl": self.validity_ttl, "product": self.product,
            "quantity": self.quantity, "disclosed_quantity": self.disclosed_quantity,
            "price": rupees(self.price, div), "trigger_price": rupees(self.trigger_price, div),
            "average_price": self.average_price(), "filled_quantity": self.filled_quantity,
            "pending_quantity": 0 if final else self.pending, "cancelled_quantity": self.cancelled_quantity,
            "market_protection": self.market_protection, "meta": {}, "tag": self.tag,
            "tags": [self.tag] if self.tag else None, "guid": self.guid,
        }


def rupees(units: float, divisor: int) -> float:
    """Wire units to rupees, rounded to two digits beyond the divisor's precision."""
    return round(units / divisor, len(str(divisor)) + 1)
