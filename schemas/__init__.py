"""Event contracts (pydantic models), their generated JSON Schemas, and the codec to use them on the bus."""

from schemas.codec import decode, encode
from schemas.models import (
    CONTRACTS,
    AllowedOrder,
    Bar,
    Fill,
    Order,
    OrderUpdate,
    SizedOrder,
    Tick,
)

__all__ = ["CONTRACTS", "AllowedOrder", "Bar", "Fill", "Order", "OrderUpdate", "SizedOrder", "Tick", "decode",
           "encode"]
