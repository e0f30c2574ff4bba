"""Paper gateway: ``orders.allowed`` -> simulated execution against the market on ``ticks`` -> ``fills``.

The venue model (latency, depth walks on the C++ matcher, queue positions, stops, DAY expiry) is
:mod:`execution.paper_venue`; this module is its wiring under the delivery discipline:

1. poll ``orders.allowed`` and ``ticks`` together; poison goes to ``dlq`` (counted, the service goes on);
2. add the orders the table holds at ALLOWED that no message brought (at start all of them, then
   every 5 s those unchanged for 10 s: the embedded broker restarts empty, Postgres is the outbox),
   and the orders at CANCEL_REQUESTED (every second);
3. when the batch touches our orders (an order, a cancel, a tick of an instrument where one works):
   one Postgres transaction applies the batch in message order: each new order moves ALLOWED ->
   SUBMITTED and enters the venue, each tick moves the market, and every fill and state change
   goes through the OMS (``fills``, ``orders``, ``order_audit``, ``positions``) with the venue's
   rows (``paper_orders``), the marks of the ticks applied (``paper_quotes``: a tick consumed again
   after a crash is recognised and skipped) and the messages to send (``outbox``). Ticks of
   instruments without our orders only move the in-memory market;
4. after the commit: produce the outbox (``fills``, ``order.updates``), flush, delete it; then commit
   the offsets. A crash anywhere loses nothing and sends no fill twice with different contents:
   fill ids are ``<order_id>-<n>``, the n-th execution of that order.

If the transaction fails (the database restarted), the venue is rebuilt from Postgres and the same
batch is applied again. One instance (ticks are keyed by instrument, orders by order id).

    python -m execution.paper_gateway_matcher [--latency-ms 50] [--max-ahead-ms 300000] [--group ID]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson
import psycopg

from core import db
from core.cli import env_int
from core.errors import PoisonMessage
from core.metrics import Metrics
from core.service import run_service
from core.sessions import load_calendar
from core.settings import Settings
from core.stream import Emission, Record, RecordProcessor
from core.topics import FILLS, ORDER_UPDATES, ORDERS_ALLOWED, TICKS
from execution import oms, outbox, paper_store
from execution.oms import OmsMetrics, OmsTx, Status
from execution.paper_market import decode_tick, quote_from_tick
from execution.paper_venue import PaperVenue, RejectedOrder, VenueFill, VenueStatus
from execution.venue_service import VenueService
from schemas import AllowedOrder
from schemas.codec import decode
from schemas.limits import DEFAULT_MAX_AHEAD_MS, MAX_AHEAD_LIMIT_MS

DEFAULT_LATENCY_MS = 50


class GatewayInput(RecordProcessor):
    """Decode ``orders.allowed`` (the AllowedOrder contract) and ``ticks`` (the fields the venue reads).

    A tick (or an order's signal) more than ``max_ahead_ms`` past max(the latest tick seen, the wall
    clock) is implausible: to ``dlq``, as in the bar services, so one bad timestamp cannot expire
    every order or hold one back for hours.
    """

    def __init__(self, max_ahead_ms: int = DEFAULT_MAX_AHEAD_MS) -> None:
        self.max_ahead_ms = max_ahead_ms
        self.watermark = 0
        self._now = 0

    def process(self, msgs: Any, now_ms: int) -> Emission:
        self._now = now_ms
        return super().process(msgs, now_ms)

    def decode(self, topic: str, value: bytes | None) -> Any:
        if topic == TICKS:
            t = decode_tick(value)
            self._plausible(t["exchange_ts"], "exchange_ts")
            self.watermark = max(self.watermark, t["exchange_ts"])
            return t
        order = decode(AllowedOrder, value).model_dump()
        if order["qty"] <= 0:
            raise PoisonMessage(f"qty must be positive, got {order['qty']}")
        self._plausible(order["signal_ts"], "signal_ts")
        return order

    def _plausible(self, ts: int, name: str) -> None:
        limit = max(self.watermark, self._now) + self.max_ahead_ms
        if ts > limit:
            raise PoisonMessage(f"implausible: {name} {ts} more than {self.max_ahead_ms} ms past max(latest tick, "
                                "wall clock)")

    def process_records(self, records: Any, now_ms: int) -> Emission:
        return Emission(rows=list(records))


class PaperGateway(VenueService):
    name = "paper_gateway"
    group_id = "paper_gateway"
    input_topics = (ORDERS_ALLOWED, TICKS)
    batch_size = 5000
    cancel_interval = 1.0

    def __init__(self, settings: Settings, metrics: Metrics, latency_ms: int = DEFAULT_LATENCY_MS,
                 max_ahead_ms: int = DEFAULT_MAX_AHEAD_MS) -> None:
        self.max_ahead_ms = max_ahead_ms
        super().__init__(settings, metrics)
        self.latency_ms = latency_ms
        self.calendar = load_calendar()
        self.venue = PaperVenue(self.calendar, latency_ms)
        self.oms_metrics = OmsMetrics(metrics)
        self._restored = False
        self._next_cancels = 0.0
        self._universe = paper_store.universe_tick_sizes(settings.config_dir / "tokens.csv")
        self._tick_sizes: dict[int, float | None] = {}  # from the instrument master, for tokens outside it
        self._batch_fills: list[dict[str, Any]] = []
        m = metrics
        self.m_fills = m.counter("fills_total", "Paper fills recorded", ["side"])
        self.m_fill_qty = m.counter("fill_qty_total", "Quantity filled at the paper venue")
        self.m_status = m.counter("orders_total", "Orders by the state the venue moved them to", ["status"])
        self.m_working = m.gauge("working_orders", "Our orders working at the venue", ["state"])
        self.m_replayed = m.counter("ticks_replayed_total", "Ticks at or below an instrument's mark, skipped")
        self.m_redriven = m.counter("redriven_total", "ALLOWED orders re-driven from the orders table")
        self._redrive.on_redriven = self.m_redriven.inc
        self.m_latency = m.histogram("order_to_venue_seconds", "created_ts of an order to its SUBMITTED (wall clock)",
                                     buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0))

    # -- wiring -------------------------------------------------------------------------------
    def build_processor(self) -> GatewayInput:
        return GatewayInput(self.max_ahead_ms)

    def start(self) -> None:
        super().start()
        if self._restored:
            return
        assert self.pool is not None
        self._reload()
        self._send_outbox()  # what a crash left between a commit and its produce
        self._restored = True

    def _reload(self) -> None:
        """The venue as Postgres has it (start-up, and after a failed transaction)."""
        assert self.pool is not None
        with db.transaction(self.pool) as conn:
            orders, quotes, next_seq = paper_store.load_live(conn)
        venue = PaperVenue(self.calendar, self.latency_ms, next_seq)
        venue.restore(orders, quotes, max((q.ts for q in quotes.values()), default=0))
        self.venue = venue
        self.log.info("venue restored working_orders=%d marks=%d next_seq=%d latency_ms=%d", len(orders),
                      len(quotes), next_seq, self.latency_ms)
        self._report()

    # -- the loop -----------------------------------------------------------------------------
    def step(self) -> None:
        assert self.consumer is not None and self.producer is not None
        msgs = self.consumer.poll_batch(self.batch_size, self.poll_timeout)
        self._failed = True
        self._track_consumed(msgs)
        emission = self.processor.process(msgs, int(time.time() * 1000))
        records: list[Record] = list(emission.rows or [])
        extra = self._redrive.due(self.pool, {r.value["order_id"] for r in records if r.topic == ORDERS_ALLOWED})
        cancels = self._cancel_requests()
        if records or extra or cancels:
            if not self._apply_batch(records, extra, cancels):
                return  # stop requested while the database was down: nothing committed
        if emission.rejects and not self._deliver(Emission(rejects=emission.rejects)):
            return
        if self._outbox_waiting:
            self._send_outbox()
        self._commit(self.processor.committable(dict(self._consumed)))
        self._failed = False
        self._maybe_report_lag()

    def _apply_batch(self, records: list[Record], extra: list[dict[str, Any]], cancels: list[str]) -> bool:
        expiry = self.venue.next_expiry()
        touches = bool(extra or cancels) or any(
            r.topic == ORDERS_ALLOWED or self._working(r.value["instrument_token"])
            or (expiry is not None and r.value["exchange_ts"] >= expiry) for r in records)
        if not touches:  # only the market moved where nothing of ours works: memory only
            for r in records:
                self._tick(r.value)
            if not (self.venue.effects or self.venue.dirty):
                return True
            # (not expected: the checks above foresee every change) write it; the ticks are marks now
        # a failed transaction leaves the venue moved in memory: back to what was committed, then again
        return self._db_retry(lambda: self._transaction(records, extra, cancels), on_failure=self._reload)

    def _transaction(self, records: list[Record], extra: list[dict[str, Any]], cancels: list[str]) -> None:
        assert self.pool is not None
        now_ms = int(time.time() * 1000)
        orders = [r.value for r in records if r.topic == ORDERS_ALLOWED] + extra
        self._batch_fills = []
        with db.transaction(self.pool) as conn:
            tx = OmsTx(conn, self.name, now_ms, self.oms_metrics)
            states = tx.ensure(orders, Status.ALLOWED) if orders else {}
            sizes = self._sizes(conn, {o["instrument_token"] for o in orders})
            for r in records:  # in message order; each record's effects through the OMS before the next
                if r.topic == ORDERS_ALLOWED:
                    self._receive(tx, r.value, states, sizes)
                elif self._tick(r.value):
                    self._apply_effects(tx)
            for o in extra:
                self._receive(tx, o, states, sizes)
            for oid in cancels:
                self._cancel(tx, oid)
            self._apply_effects(tx)
            fills, updates = self._batch_fills, tx.finish()
            _, changed = self.venue.drain()
            paper_store.write_orders(conn, changed)
            # the mark of every instrument with our orders: the tick a restart resumes from (not only this
            # batch's: a tick may have moved the market in memory while nothing of ours worked there)
            live_tokens = {po.token for po in self.venue.orders.values()} | {po.token for po in changed}
            quotes = {t: self.venue.markets[t].quote for t in live_tokens if t in self.venue.markets}
            paper_store.write_quotes(conn, {t: q for t, q in quotes.items() if q is not None})
            queued = outbox.put(
                conn, self.name, [(FILLS, f["order_id"].encode(), orjson.dumps(f)) for f in fills] +
                [(ORDER_UPDATES, u["order_id"].encode(), orjson.dumps(u)) for u in updates])
        self._outbox_waiting = self._outbox_waiting or bool(queued)
        # committed: count
        for f in fills:
            self.m_fills.labels(f["side"]).inc()
            self.m_fill_qty.inc(f["qty"])
        for u in updates:
            if u["from_status"] != u["to_status"]:
                self.m_status.labels(u["to_status"]).inc()
        self._report()

    def _receive(self, tx: OmsTx, o: dict[str, Any], states: dict[str, Any], sizes: Callable[[int], float | None]
                 ) -> None:
        st = states.get(o["order_id"])
        if st is None or st.status != Status.ALLOWED:
            return  # already at the venue (a replay, a re-drive racing the topic) or decided otherwise
        states[o["order_id"]] = oms.OrderState(o["order_id"], Status.SUBMITTED, st.qty)
        o = {**o, "qty": st.qty or o["qty"]}
        try:
            po = self.venue.receive(o, sizes(o["instrument_token"]))
        except RejectedOrder as exc:
            detail = f"paper venue: {exc}"
            tx.transition(o["order_id"], Status.REJECTED, detail, fields={"status_detail": detail, "venue": "paper"})
            self.log.warning("order rejected order_id=%s reason=%s", o["order_id"], exc)
            return
        tx.transition(o["order_id"], Status.SUBMITTED, f"paper venue: arrives at {po.arrival_ts}",
                      fields={"venue": "paper", "broker_order_id": f"P{po.seq}"})
        created = o.get("created_ts")
        now = time.time() * 1000
        if isinstance(created, int) and 0 <= now - created < 3_600_000:
            self.m_latency.observe((now - created) / 1000)
        self._apply_effects(tx)  # latency 0: it may have traded already

    def _cancel(self, tx: OmsTx, order_id: str) -> None:
        known = tx.load([order_id]).get(order_id)
        if known is None or known.status != Status.CANCEL_REQUESTED:
            return
        if not self.venue.cancel(order_id, self.venue.clock, "cancelled on request"):
            tx.transition(order_id, Status.CANCELLED, "cancel requested: nothing working at the paper venue")

    def _tick(self, t: dict[str, Any]) -> bool:
        token = t["instrument_token"]
        size = self._universe.get(token) or self._tick_sizes.get(token)
        if size is None:
            return False  # an instrument we cannot price: no order of ours can work there either
        applied = self.venue.on_tick(token, quote_from_tick(t, size))
        if not applied:
            self.m_replayed.inc()
        return applied

    def _apply_effects(self, tx: OmsTx) -> None:
        """Move the venue's effects through the OMS (new Fill messages go to ``_batch_fills``)."""
        effects, self.venue.effects = self.venue.effects, []
        ids = sorted({e.order_id for e in effects})
        if ids:
            tx.load(ids)
        for e in effects:
            po = self.venue.dirty.get(e.order_id)
            if isinstance(e, VenueFill):
                assert po is not None
                fill = {"fill_id": e.fill_id, "order_id": e.order_id, "broker_order_id": f"P{po.seq}",
                        "instrument_token": po.token, "side": po.side, "qty": e.qty, "price": e.price, "ts": e.ts,
                        "venue": "paper", "strategy": po.strategy}
                if tx.fill(fill) is not None:
                    self._batch_fills.append(fill)
            elif isinstance(e, VenueStatus):
                fields = {"status_detail": e.detail} if e.status != Status.OPEN else None
                tx.transition(e.order_id, e.status, e.detail, fields=fields)

    def _working(self, token: int) -> bool:
        m = self.venue.markets.get(token)
        return m is not None and bool(m.pending or m.stops or m.resting)

    def _sizes(self, conn: psycopg.Connection[Any], tokens: set[int]) -> Callable[[int], float | None]:
        missing = [t for t in tokens if t not in self._tick_sizes and t not in self._universe]
        if missing:
            found = paper_store.db_tick_sizes(conn, missing)
            for t in missing:
                self._tick_sizes[t] = found.get(t)
        return lambda t: self._universe.get(t) or self._tick_sizes.get(t)

    # -- re-drive, cancels, outbox ---------------------------------------------------------------
    def _cancel_requests(self) -> list[str]:
        now = time.monotonic()
        if now < self._next_cancels or self.pool is None:
            return []
        self._next_cancels = now + self.cancel_interval
        try:
            with db.transaction(self.pool) as conn:
                return paper_store.cancel_requests(conn)
        except Exception as exc:  # noqa: BLE001 - retried at the next interval
            if not db.is_transient(exc):
                raise
            return []

    def _report(self) -> None:
        counts = {"pending": 0, "stop": 0, "resting": 0}
        for po in self.venue.orders.values():
            counts[po.state] = counts.get(po.state, 0) + 1
        for state, n in counts.items():
            self.m_working.labels(state).set(n)

    def heartbeat_fields(self) -> dict[str, Any]:
        return {**super().heartbeat_fields(), "working": len(self.venue.orders),
                "instruments": len(self.venue.markets)}


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    ap = argparse.ArgumentParser(prog="python -m execution.paper_gateway_matcher",
                                 description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--latency-ms", type=int, default=None,
                    help=f"decision-to-venue latency (env PAPER_LATENCY_MS, default {DEFAULT_LATENCY_MS})")
    ap.add_argument("--max-ahead-ms", type=int, default=None,
                    help="a tick or signal further than this past max(latest tick, wall clock) goes to dlq "
                         f"(env PAPER_MAX_AHEAD_MS, default {DEFAULT_MAX_AHEAD_MS})")
    ap.add_argument("--group", help=f"consumer group id (default {PaperGateway.group_id})")
    args = ap.parse_args(argv)
    latency = args.latency_ms if args.latency_ms is not None else env_int("PAPER_LATENCY_MS", DEFAULT_LATENCY_MS)
    ahead = args.max_ahead_ms if args.max_ahead_ms is not None else env_int("PAPER_MAX_AHEAD_MS",
                                                                             DEFAULT_MAX_AHEAD_MS)
    if latency < 0:
        ap.error(f"--latency-ms must be >= 0, got {latency}")
    if not 0 < ahead <= MAX_AHEAD_LIMIT_MS:
        ap.error(f"--max-ahead-ms must be in (0, {MAX_AHEAD_LIMIT_MS}], got {ahead}")

    def factory(settings: Settings, metrics: Metrics) -> PaperGateway:
        svc = PaperGateway(settings, metrics, latency, ahead)
        if args.group:
            svc.group_id = args.group
        return svc

    return run_service(factory, PaperGateway.name)


if __name__ == "__main__":
    sys.exit(main())
