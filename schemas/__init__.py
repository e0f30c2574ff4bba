"""Event contracts (pydantic models) and their generated JSON Schemas."""

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

__all__ = ["CONTRACTS", "AllowedOrder", "Bar", "Fill", "Order", "OrderUpdate", "SizedOrder", "Tick"]
