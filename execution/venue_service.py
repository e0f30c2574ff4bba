"""What the two venues' services share: ``orders.allowed`` in, the OMS in Postgres, an outbox out.

:class:`VenueService` is a :class:`core.stream.StreamService` whose consumer drains what librdkafka
has fetched (an order waits on no batch), whose rows are written by the service itself in its own
transactions (no generic sink), which re-drives the ALLOWED orders no message brought
(:class:`execution.redrive.Redrive`) and sends its transactional outbox after each commit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from confluent_kafka import KafkaException

from core import bus, db
from core.errors import TransientError
from core.metrics import Metrics
from core.service import Backoff
from core.settings import Settings
from core.stream import StreamService
from execution import outbox
from execution.oms import Status
from execution.redrive import Redrive


class VenueService(StreamService):
    """Base of the paper gateway and the Zerodha gateway."""

    poll_timeout = 0.005
    redrive_interval = 5.0
    redrive_after = 10.0

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        super().__init__(settings, metrics)
        self._redrive = Redrive(Status.ALLOWED.value, self.log, self.redrive_interval, self.redrive_after)
        self._outbox_waiting = True  # at start: whatever a crash left between a commit and its produce
        self._db_backoff = Backoff()

    def build_sink(self) -> Any:
        return _no_sink  # the pool is opened by StreamService; the service writes in its own transactions

    def build_consumer(self, bootstrap: str) -> Any:
        return bus.DrainingConsumer(bootstrap, self.group_id, list(self.input_topics), on_revoke=self._on_revoke,
                                    on_assign=self._on_assign, on_lost=self._on_lost,
                                    **{"client.id": self.name, "fetch.wait.max.ms": 5})

    def _send_outbox(self) -> None:
        """Produce what committed transactions queued (a failure: sent at the next step)."""
        try:
            outbox.send(self.pool, self.producer, self.name)
            self._outbox_waiting = False
        except Exception as exc:  # noqa: BLE001
            if not (db.is_transient(exc) or isinstance(exc, TransientError | KafkaException)):
                raise
            self._outbox_waiting = True
            self.log.warning("outbox delivery failed, retried at the next step: %s", type(exc).__name__)

    def _db_retry(self, fn: Callable[[], Any], on_failure: Callable[[], None] | None = None) -> bool:
        """Run a database step until it succeeds (``on_failure`` after each transient failure, e.g. a reload of
        state that moved in memory); False if a stop was requested meanwhile."""
        while True:
            try:
                fn()
                self._db_backoff.reset()
                return True
            except Exception as exc:  # noqa: BLE001
                if not db.is_transient(exc):
                    raise
                self._outbox_waiting = True  # the commit may have landed before the connection broke
                self.m_retry.labels("upsert").inc()
                delay = self._db_backoff.next_delay()
                self.log.warning("database unavailable, retrying in %.1fs (nothing committed): %s", delay,
                                 type(exc).__name__)
                if self.sleep(delay):
                    return False
                if on_failure is not None:
                    try:
                        on_failure()
                    except Exception as again:  # noqa: BLE001 - still down: the next attempt tries again
                        if not db.is_transient(again):
                            raise


def _no_sink(_conn: psycopg.Connection[Any], _rows: Any) -> None:
    return None
