"""Re-drive: the orders the ``orders`` table holds at a stage's input state that no message brought.

The embedded broker restarts empty and Postgres is the outbox, so every order stage (the risk services,
the gateways) also takes, at start, every order waiting at its input state, then every ``interval``
seconds those unchanged for ``after`` seconds (a message lost, a stage that crashed between its commit
and its produce). The OMS makes a decision taken twice a no-op.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from psycopg_pool import ConnectionPool

from core import db
from execution import oms


class Redrive:
    """When to scan and what to take (see the module docstring)."""

    def __init__(self, status: str, log: logging.Logger, interval: float = 5.0, after: float = 10.0,
                 limit: int = 2000, on_redriven: Callable[[int], None] | None = None) -> None:
        self.status, self.log = status, log
        self.interval, self.after, self.limit = interval, after, limit
        self.on_redriven = on_redriven
        self._next = 0.0  # at start: everything waiting

    def due(self, pool: ConnectionPool | None, have: set[str]) -> list[dict[str, Any]]:
        """Order rows to take now (none between scans; ``have``: ids this batch brought already)."""
        now = time.monotonic()
        if now < self._next or pool is None:
            return []
        first = self._next == 0.0
        self._next = now + self.interval
        try:
            with db.transaction(pool) as conn:
                rows = oms.load_orders(conn, statuses=[self.status], limit=self.limit,
                                       older_than_ms=None if first else int(self.after * 1000))
        except Exception as exc:  # noqa: BLE001 - a failed scan is retried at the next interval
            if not db.is_transient(exc):
                raise
            self.log.warning("re-drive scan failed, next in %.0fs: %s", self.interval, type(exc).__name__)
            return []
        out = [r for r in rows if r["order_id"] not in have]
        if out:
            if self.on_redriven is not None:
                self.on_redriven(len(out))
            self.log.info("re-driving orders=%d waiting at %s (%s)", len(out), self.status,
                          "start-up" if first else f"unchanged > {self.after:.0f}s")
        return out
