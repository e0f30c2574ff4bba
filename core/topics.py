"""Topic names of DESIGN section 4, in one place."""

from __future__ import annotations

TICKS = "ticks"
BAR_TFS = ("1s", "1m", "3m", "5m", "15m", "30m", "60m")
ORDERS = "orders"
ORDERS_SIZED = "orders.sized"
ORDERS_ALLOWED = "orders.allowed"
FILLS = "fills"
ORDER_UPDATES = "order.updates"
DLQ = "dlq"


def bars_topic(tf: str) -> str:
    """Topic carrying bars of timeframe ``tf`` (``bars.1s`` ... ``bars.60m``)."""
    if tf not in BAR_TFS:
        raise ValueError(f"unknown timeframe {tf!r}; expected one of {', '.join(BAR_TFS)}")
    return f"bars.{tf}"


def all_topics(partitions: int) -> dict[str, int]:
    """Every stack topic with its partition count (DLQ gets one partition)."""
    topics = {TICKS: partitions, ORDERS: partitions, ORDERS_SIZED: partitions,
              ORDERS_ALLOWED: partitions, FILLS: partitions, ORDER_UPDATES: partitions, DLQ: 1}
    for tf in BAR_TFS:
        topics[bars_topic(tf)] = partitions
    return topics
