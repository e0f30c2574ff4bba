"""The C++ price-time matcher (DESIGN sections 8 and 11): ``import matcher_cpp``.

``matcher_cpp.OrderBook()`` is one instrument's book; prices are integer ticks and quantities
integers. ``submit``, ``cancel``, ``modify`` and ``set_last_price`` return the events each call
caused, in order (:class:`Event`: ``kind``, ``order_id``, ``maker_id``, ``taker_id``, ``price``,
``qty``, ``reason``); ``batch`` runs numpy arrays of operations and returns events as arrays
(codes index :data:`KINDS`, :data:`REASONS`, :data:`SIDES`, :data:`ORDER_TYPES`, :data:`OPS`).
The semantics are listed in ``matcher_cpp/src/matcher.hpp``; ``tests/reference/matcher_ref.py``
is the same book in plain Python, and a differential fuzz test holds the two to identical events.

Built by ``make setup`` (setup.py); ``make native`` rebuilds it after a source change.
"""

from matcher_cpp._matcher import (
    KINDS,
    MAX_PRICE,
    MAX_QTY,
    MAX_SPAN,
    OPS,
    ORDER_TYPES,
    REASONS,
    SIDES,
    Event,
    OrderBook,
    workload,
)

__all__ = ["KINDS", "MAX_PRICE", "MAX_QTY", "MAX_SPAN", "OPS", "ORDER_TYPES", "REASONS", "SIDES", "Event",
           "OrderBook", "workload"]
