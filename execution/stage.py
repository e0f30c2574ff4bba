"""An order stage: consume orders at one OMS state, decide each once, publish what the database says.

The risk manager (``orders`` -> ``orders.sized``), the budget guard (``orders.sized`` ->
``orders.allowed``) and the gateways are stages. Per batch:

1. poll; undecodable or out-of-range messages go to ``dlq`` (counted, the stage goes on);
2. add the orders the table says wait at the stage's input state that no message brought: at
   start all of them (the embedded broker restarts empty: Postgres is the outbox), then every
   :attr:`OrderStage.redrive_interval` those unchanged for :attr:`OrderStage.redrive_after` s;
3. one Postgres transaction: the OMS upserts missing rows, locks them, and the stage decides the
   orders still at its input state (:meth:`OrderStage.decide`); orders already past it are not
   decided again: the decision recorded before is published again if the order still sits at the
   stage's output state (a crash between this commit and the produce);
4. produce the outputs and the OMS's ``order.updates``, ``flush()``;
5. commit the offsets.

The decision is made in the database first, then published: a decision is taken exactly once (a
replay, a re-drive or a restart re-publishes it, never re-decides it), and every message on the
output topic is a decision the database holds. Downstream stages dedupe by order_id and OMS state.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg
from confluent_kafka import Message
from pydantic import BaseModel

from core import bus, db
from core.cli import env_int
from core.errors import PoisonMessage, TransientError
from core.metrics import Metrics
from core.service import Backoff
from core.settings import Settings
from core.stream import Emission, OutMessage, Record, RecordProcessor, StreamService
from core.topics import ORDER_UPDATES
from execution import oms
from execution.oms import OmsMetrics, OmsTx, Status
from execution.redrive import Redrive
from schemas.codec import decode


def decision_order(order: dict[str, Any]) -> tuple[int, int, str, str]:
    """The order in which a stage decides a batch: signal time, instrument, strategy, order id."""
    return (int(order.get("signal_ts") or 0), int(order.get("instrument_token") or 0), str(order.get("strategy")),
            str(order.get("order_id")))

class OrderDecoder(RecordProcessor):
    """Decode each message as the stage's contract model; poison (and a non-positive qty) is rejected."""

    def __init__(self, model: type[BaseModel]) -> None:
        self.model = model

    def decode(self, topic: str, value: bytes | None) -> Any:
        order = decode(self.model, value).model_dump()
        qty = order.get("qty")
        if qty is not None and qty <= 0:
            raise PoisonMessage(f"qty must be positive or null, got {qty}")
        return order

    def process_records(self, records: Sequence[Record], now_ms: int) -> Emission:
        return Emission(rows=[r.value for r in records])


@dataclass(slots=True)
class Decision:
    """What a stage decided for one order: the state to move it to, and its output message (if any)."""

    to: Status
    detail: str | None = None
    qty: int | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    output: dict[str, Any] | None = None
    reason: str | None = None


def _strip(row: dict[str, Any]) -> dict[str, Any]:
    """An order message from an ``orders`` row (the OMS's bookkeeping columns dropped, nulls kept)."""
    out = {k: v for k, v in row.items()
           if k not in ("status", "filled_qty", "avg_price", "status_detail", "broker_order_id", "venue", "version")}
    if out.get("extra") is None:
        out.pop("extra", None)
    return out


class OrderStage(StreamService):
    """Base of the order stages (see the module docstring)."""

    input_model: type[BaseModel]
    input_status: Status
    output_topic: str
    #: States this stage decides to; an order found at one of them (and not yet further) re-publishes.
    output_states: frozenset[Status]
    #: Output states that carry a message on ``output_topic`` (e.g. SIZED, not REJECTED_RISK).
    passing_states: frozenset[Status]
    #: Where an order the stage cannot decide goes (an exception deciding it): the state and its jsonb column.
    reject_state: Status
    reject_field: str
    batch_size = 500
    poll_timeout = 0.005
    redrive_interval = 5.0
    redrive_after = 10.0
    redrive_limit = 2000
    #: A batch slower than this is logged with where its time went (env ``STAGE_SLOW_BATCH_MS``).
    slow_batch_s = 0.25

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        super().__init__(settings, metrics)
        self.oms_metrics = OmsMetrics(metrics)
        self.m_decisions = metrics.counter("decisions_total", "Orders decided, by resulting OMS state", ["status"])
        self.m_redriven = metrics.counter("redriven_total", "Orders re-driven from the orders table")
        self.m_republished = metrics.counter("republished_total", "Earlier decisions published again")
        self.m_latency = metrics.histogram(
            "decision_latency_seconds", "created_ts of the order to its decision being published (wall clock)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0))
        self._redrive = Redrive(self.input_status.value, self.log, self.redrive_interval, self.redrive_after,
                                self.redrive_limit, self.m_redriven.inc)
        self.slow_batch_s = env_int("STAGE_SLOW_BATCH_MS", int(self.slow_batch_s * 1000)) / 1000
        self._db_backoff = Backoff()

    # -- to override ----------------------------------------------------------
    @abstractmethod
    def decide(self, conn: psycopg.Connection[Any], tx: OmsTx, orders: list[dict[str, Any]]) -> list[Decision]:
        """Decide orders that wait at :attr:`input_status` (same order as given)."""

    def after_batch(self, conn: psycopg.Connection[Any], decided: list[tuple[dict[str, Any], Decision]]) -> None:
        """Hook inside the batch's transaction (e.g. write a summary)."""

    def on_decided(self, decided: list[tuple[dict[str, Any], Decision]]) -> None:
        """Hook once the batch's decisions are committed and published (metrics: a retried batch counts once)."""

    def prepare(self, orders: list[dict[str, Any]]) -> None:
        """Hook before the batch's transaction: broker calls that must not hold row locks (equity)."""

    # -- wiring ---------------------------------------------------------------
    def build_processor(self) -> OrderDecoder:
        return OrderDecoder(self.input_model)

    def build_consumer(self, bootstrap: str) -> Any:
        # An order waits on no batch: the broker answers a fetch within 5 ms (default 100 ms, which
        # cost each stage ~50 ms of latency at 500 orders/s), and a backlog is drained in large batches.
        return bus.DrainingConsumer(bootstrap, self.group_id, self.input_topics, on_revoke=self._on_revoke,
                                    on_assign=self._on_assign, on_lost=self._on_lost,
                                    **{"client.id": self.name, "fetch.wait.max.ms": 5})

    def build_sink(self) -> Any:
        return _no_sink  # the pool is opened by StreamService; rows are written in step()

    def step(self) -> None:
        assert self.consumer is not None and self.producer is not None
        msgs = self.consumer.poll_batch(self.batch_size, self.poll_timeout)
        t0 = time.perf_counter()
        self._failed = True
        self._track_consumed(msgs)
        emission = self.processor.process(msgs, int(time.time() * 1000))
        orders: list[dict[str, Any]] = list(emission.rows or [])
        redriven = self._redrive_candidates({o["order_id"] for o in orders})
        orders.extend(redriven)
        if not orders and not emission.rejects:
            self._failed = False
            self._maybe_report_lag()
            return
        t1 = time.perf_counter()
        self._batch_decided: list[tuple[dict[str, Any], Decision]] = []
        self.prepare(orders)
        out = self._decide_all(orders, emission.rejects)
        if out is None:
            return  # stop requested while the database was down: nothing committed
        t2 = time.perf_counter()
        if not self._deliver(Emission(messages=out, rejects=emission.rejects)):
            return
        t3 = time.perf_counter()
        self._commit(self.processor.committable(dict(self._consumed)))
        self._failed = False
        self.on_decided(self._batch_decided)
        t4 = time.perf_counter()
        self.m_batch.observe(t4 - t0)
        if t4 - t0 > self.slow_batch_s:
            self.log.warning("slow batch orders=%d total_ms=%.0f decode_ms=%.0f decide_ms=%.0f produce_ms=%.0f "
                             "commit_ms=%.0f", len(orders), (t4 - t0) * 1000, (t1 - t0) * 1000, (t2 - t1) * 1000,
                             (t3 - t2) * 1000, (t4 - t3) * 1000)
        now = time.time() * 1000
        for o in orders:
            created = o.get("created_ts")
            if isinstance(created, int) and 0 <= now - created < 3_600_000:
                self.m_latency.observe((now - created) / 1000)
        self._maybe_report_lag()

    # -- internals ------------------------------------------------------------
    def _redrive_candidates(self, have: set[str]) -> list[dict[str, Any]]:
        return [_strip(r) for r in self._redrive.due(self.pool, have)]

    def _decide_all(self, orders: list[dict[str, Any]], rejects: list[tuple[Message, str]]) -> list[OutMessage] | None:
        """Decide the batch in one transaction (retried while the database is down); None if stopped."""
        seen: set[str] = set()
        unique = []
        for o in orders:
            if o["order_id"] not in seen:
                seen.add(o["order_id"])
                unique.append(o)
        while True:
            try:
                return self._decide_tx(unique)
            except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:
                if len(unique) == 1:
                    self._dead_letter_row(unique[0], exc)
                    return []
                out: list[OutMessage] = []
                for o in unique:  # find the order the database refuses; decide the others
                    sub = self._decide_all([o], [])
                    if sub is None:
                        return None
                    out.extend(sub)
                return out
            except Exception as exc:  # noqa: BLE001
                if not db.is_transient(exc):
                    raise
                self.m_retry.labels("upsert").inc()
                delay = self._db_backoff.next_delay()
                self.log.warning("database unavailable, retrying the batch in %.1fs (nothing committed): %s",
                                 delay, type(exc).__name__)
                if self.sleep(delay):
                    return None

    def _decide_tx(self, orders: list[dict[str, Any]]) -> list[OutMessage]:
        assert self.pool is not None
        now_ms = int(time.time() * 1000)
        msgs: list[OutMessage] = []
        with db.transaction(self.pool) as conn:
            tx = OmsTx(conn, self.name, now_ms, self.oms_metrics)
            states = tx.ensure(orders, self.input_status)
            # decided in one canonical order whatever order the partitions delivered them in, so two
            # entries that share a limit (an instrument's position cap, a bucket) are decided alike live,
            # in a replay and in the backtester (backtest.replay sizes a bar's orders in this order too)
            todo = sorted((o for o in orders if states[o["order_id"]].status == self.input_status),
                          key=decision_order)
            again = [o["order_id"] for o in orders if states[o["order_id"]].status in self.output_states]
            decisions = self._decide_each(conn, tx, todo) if todo else []
            decided: list[tuple[dict[str, Any], Decision]] = []
            for o, d in zip(todo, decisions, strict=True):
                out = tx.transition(o["order_id"], d.to, d.detail, qty=d.qty, fields=d.fields)
                if out.applied:
                    decided.append((o, d))
                    if d.output is not None:
                        msgs.append(OutMessage(self.output_topic, o["order_id"].encode(), orjson.dumps(d.output)))
            self.after_batch(conn, decided)
            updates = tx.finish()
            if again:
                msgs.extend(self._republish(conn, again))
        # committed: only now do these decisions count (a retried transaction must not count twice)
        self._batch_decided.extend(decided)
        for _o, d in decided:
            self.m_decisions.labels(d.to.value).inc()
        msgs.extend(OutMessage(ORDER_UPDATES, u["order_id"].encode(), orjson.dumps(u)) for u in updates)
        self._db_backoff.reset()
        return msgs

    def _decide_each(self, conn: psycopg.Connection[Any], tx: OmsTx, todo: list[dict[str, Any]]) -> list[Decision]:
        """:meth:`decide` on the batch. If it raises (not a database error), each order is tried alone to
        find the ones that raise; those are rejected ``invalid_order``, and the rest are decided again
        together (one book for the batch, as always): one bad order never stops a stage (it would
        crash-loop on its own re-drive)."""
        try:
            return self.decide(conn, tx, todo)
        except psycopg.Error:
            raise
        except Exception:  # noqa: BLE001 - isolate the culprits below
            self._raise_if_aborted(conn)
        bad: dict[str, Decision] = {}
        for o in todo:
            try:
                self.decide(conn, tx, [o])
            except psycopg.Error:
                raise
            except Exception:  # noqa: BLE001
                self._raise_if_aborted(conn)
                bad[o["order_id"]] = self._invalid(o)
        good = [o for o in todo if o["order_id"] not in bad]
        decided = iter(self.decide(conn, tx, good) if good else [])
        return [bad[o["order_id"]] if o["order_id"] in bad else next(decided) for o in todo]

    @staticmethod
    def _raise_if_aborted(conn: psycopg.Connection[Any]) -> None:
        """A Python error raised while a query of the same pipeline failed leaves the transaction
        aborted: that is a database problem (retry the batch), not a bad order."""
        from psycopg.pq import TransactionStatus

        if conn.info.transaction_status == TransactionStatus.INERROR:
            raise TransientError("the transaction was aborted while deciding: retrying the batch")

    def _invalid(self, order: dict[str, Any]) -> Decision:
        import traceback

        err = traceback.format_exc().strip().splitlines()[-1][:300]
        detail = f"invalid_order: cannot decide: {err}"
        self.log.warning("order cannot be decided, rejected order_id=%s error=%s", order.get("order_id"), err)
        return Decision(self.reject_state, detail, fields={self.reject_field: {"reason": "invalid_order",
                                                                              "detail": detail},
                                                           "status_detail": detail}, reason="invalid_order")

    def _republish(self, conn: psycopg.Connection[Any], ids: list[str]) -> list[OutMessage]:
        rows = oms.load_orders(conn, ids=ids)
        out = [OutMessage(self.output_topic, r["order_id"].encode(), orjson.dumps(_strip(r)))
               for r in rows if Status(r["status"]) in self.passing_states]
        out.extend(OutMessage(ORDER_UPDATES, u["order_id"].encode(), orjson.dumps(u))
                   for u in oms.replay_updates(conn, ids, self.name))
        self.m_republished.inc(len(ids))
        return out


def _no_sink(_conn: psycopg.Connection[Any], _rows: Any) -> None:
    return None
