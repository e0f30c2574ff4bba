"""Zerodha gateway: ``orders.allowed`` -> Kite Connect REST (``TRADING_MODE`` dry or live), each order placed
at most once.

- **dry**: records what it would send (``live_orders`` venue ``dry`` with the request, the OMS moves
  ALLOWED -> SUBMITTED -> CANCELLED "dry mode: not sent") and never calls an order endpoint.
- **live**: refuses to start (one line, exit 2) unless ``LIVE_TRADING_CONFIRM=yes``.

Every order taken gets a row in ``broker_placements`` (the at-most-once ledger) and a Kite ``tag``
derived from its order_id (:func:`execution.kite_broker.tag_for`). Per batch:

1. intake: orders at ALLOWED (from the topic, and re-driven from the table) move to SUBMITTED with a
   ``queued`` placement, in one transaction; then the offsets are committed (Postgres is the queue);
2. dispatch, paced on wall time below Kite's limits (``configs/execution.yaml``: 8/s, 400/min,
   5000/day; over the pace orders wait, never fail): the placements to send are marked ``sending``
   in one transaction, then placed by a small pool of threads (a slow reply holds no other order);
3. results (:func:`execution.kite_broker.classify`): placed -> ``placed`` and the broker order id;
   rejected (the broker's InputException/OrderException) -> REJECTED with its message; ambiguous
   (timeout, 5xx, 429, NetworkException, 400 "Order request timed out") -> ``uncertain``: the tag is
   looked up in the broker's order book (first after ``ambiguous.first_lookup_s``, then with backoff)
   and the order adopted if it is there; only when it has not appeared within ``ambiguous.window_s``
   is it placed again; a ``sending`` row found at start-up is uncertain too (a crash mid-call);
4. cancels: orders the OMS has at CANCEL_REQUESTED (flatten, an exit cancelling a protective stop)
   are cancelled at the broker, paced like placements;
5. halts: a TokenException stops every broker call (gauge ``halted{reason="token"}``, one log line)
   until a renewed token appears (``python -m execution.kite_session set-token|login``), then resumes;
   "IP not registered" stops order requests with a line naming the fix, and retries every minute.

At start-up, before taking a new order, the broker's book and trades are reconciled into our tables
(:mod:`execution.broker_recon`). Status changes after placement and fills come from the broker via
:mod:`execution.zerodha_poller`.

    python -m execution.zerodha_gateway [--config configs/execution.yaml] [--group ID]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg

from core import db
from core.errors import ConfigError, PoisonMessage, TransientError
from core.metrics import Metrics
from core.ratelimit import RateLimiter
from core.service import run_service
from core.settings import Settings
from core.stream import Emission, RecordProcessor
from core.topics import FILLS, ORDER_UPDATES, ORDERS_ALLOWED
from execution import broker_recon, oms, outbox, placements, protective_stops
from execution.config import ExecutionConfig, load_execution
from execution.kite_broker import KiteOrders, Reply, place_params, tag_for
from execution.kite_session import TokenSource, session_path
from execution.oms import OmsMetrics, OmsTx, Status
from execution.venue_service import VenueService
from schemas import AllowedOrder
from schemas.codec import decode

LOCK_KEY = 7_202_612  # pg_advisory_lock: one gateway
#: A cancel the broker refused (the order still being validated, a cancel already on its way) is asked again.
CANCEL_RETRY_S = 3.0
HALT_MESSAGES = {
    "token": "Kite rejected the access token (expired at 06:00 IST or revoked): order calls halted until a new one "
             "is stored: python -m execution.kite_session login --request-token RT (or set-token TOKEN)",
    "ip_not_registered": "Kite refuses order requests from this machine's IP: register its static IP in the Kite "
                         "Connect developer console (Profile > IP Whitelist; at most 2, one change a week); order "
                         "calls halted, one retried every ip_retry_s (configs/execution.yaml)",
}


class AllowedInput(RecordProcessor):
    def decode(self, topic: str, value: bytes | None) -> Any:
        order = decode(AllowedOrder, value).model_dump()
        if order["qty"] <= 0:
            raise PoisonMessage(f"qty must be positive, got {order['qty']}")
        return order

    def process_records(self, records: Any, now_ms: int) -> Emission:
        return Emission(rows=list(records))


def _dt(ms: float | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)


class ZerodhaGateway(VenueService):
    name = "zerodha_gateway"
    group_id = "zerodha_gateway"
    input_topics = (ORDERS_ALLOWED,)
    batch_size = 500

    def __init__(self, settings: Settings, metrics: Metrics, cfg: ExecutionConfig) -> None:
        super().__init__(settings, metrics)
        self.cfg = cfg
        self.mode = settings.trading_mode
        self.dry = self.mode != "live"
        self.tokens = TokenSource(session_path(settings), settings.kite_access_token.get_secret_value())
        self.kite: KiteOrders | None = None
        self.pacer = RateLimiter(windows=cfg.pacer.windows())
        self.pool_exec = ThreadPoolExecutor(cfg.placer_threads, thread_name_prefix="kite")
        self.queue: deque[str] = deque()  # order ids whose placement is queued (ready to send)
        self.inflight: dict[Future[Reply], tuple[str, str, int]] = {}  # future -> (kind, order_id, token version)
        self.lookup: Future[list[dict[str, Any]]] | None = None
        self.halt: str | None = None
        self._halt_until = 0.0
        self._token_version = 0
        self._next_token_check = 0.0
        self._next_uncertain = 0.0
        self._next_cancels = 0.0
        self._cancel_sent: dict[str, float] = {}  # order id -> when its cancel was last sent
        self._stray: set[str] = set()  # broker order ids to cancel: a tag's second order, or one for a cancelled order
        self.held: list[str] = []  # exits waiting for their position's protective stop to be cancelled
        self._next_held = 0.0
        self._orders: dict[str, dict[str, Any]] = {}  # order contract of queued/sending ones
        self._started = False
        self._lock_conn: psycopg.Connection[Any] | None = None
        self.oms_metrics = OmsMetrics(metrics)
        m = metrics
        self.m_calls = m.counter("broker_calls_total", "Kite order calls by kind and outcome", ["call", "outcome"])
        self.m_halted = m.gauge("halted", "1 while broker calls are halted", ["reason"])
        self.m_queue = m.gauge("queued_orders", "Orders waiting for the pacer or a retry")
        self.m_uncertain = m.gauge("uncertain_orders", "Orders whose placement is being looked up by tag")
        self.m_adopted = m.counter("adopted_total", "Orders found at the broker by tag instead of placed again")
        self.m_latency = m.histogram("allowed_to_call_seconds",
                                     "From reading an order on orders.allowed to the broker's reply (wall clock)",
                                     buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0, 5.0))
        self._read_at: dict[str, float] = {}
        for reason in HALT_MESSAGES:
            self.m_halted.labels(reason).set(0)

    # -- wiring ----------------------------------------------------------------------------
    def build_processor(self) -> AllowedInput:
        return AllowedInput()

    def start(self) -> None:
        super().start()
        if self._started:
            return
        self._single_instance()
        if not self.dry:
            self._expire_stale()
            self.kite = KiteOrders(self.settings.kite_api_key.get_secret_value(), self.tokens.current(),
                                   self.settings.kite_root, self.cfg.request_timeout_s)
            self._token_version = self.tokens.version
            self._startup_recon()
        self._load_open()
        self._send_outbox()
        self._started = True
        self.log.info("gateway ready mode=%s queued=%d pacer=%d/s,%d/min,%d/day market_protection=%g", self.mode,
                      len(self.queue), self.cfg.pacer.per_second, self.cfg.pacer.per_minute, self.cfg.pacer.per_day,
                      self.cfg.market_protection)

    def _single_instance(self) -> None:
        """One gateway at a time (its pacer is its own; Kite counts every request of the account): a second
        one waits here, retried by the runtime, until the first stops."""
        if self._lock_conn is not None:
            return
        conn = psycopg.connect(self.settings.dsn, autocommit=True)
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()
        if not row or not row[0]:
            conn.close()
            raise TransientError("another zerodha_gateway is running (its advisory lock is held): waiting")
        self._lock_conn = conn

    def _expire_stale(self) -> None:
        """Open placements from an earlier day: Kite's book (today's) cannot confirm them and they must not be
        sent a day late. Their orders end EXPIRED; the poller's alerts cover anything left at the broker."""
        assert self.pool is not None
        with db.transaction(self.pool) as conn:
            stale = placements.stale_open(conn, broker_recon.today_start())
            if not stale:
                return
            tx = OmsTx(conn, self.name, int(time.time() * 1000), self.oms_metrics)
            states = tx.load([oid for oid, _s in stale])
            detail = "left open from an earlier day: not sent (or not confirmed) before that day ended"
            for oid, state in stale:
                st = states.get(oid)
                if st is not None and st.status in (Status.SUBMITTED, Status.CANCEL_REQUESTED):
                    tx.transition(oid, Status.EXPIRED, detail, fields={"status_detail": detail})
                placements.set_state(conn, oid, "cancelled", f"{detail} (was {state})")
            self._queue_messages(conn, [], tx.finish())
        self.log.warning("expired placements=%d left open from an earlier day", len(stale))

    def _startup_recon(self) -> None:
        """The broker's book into our tables before any new order is taken (a crash's loose ends)."""
        assert self.kite is not None and self.pool is not None
        try:
            book, trades = self.kite.orders(), self.kite.trades()
        except Exception as exc:  # noqa: BLE001 - the broker unreachable: start is retried
            raise TransientError(f"start-up reconciliation: broker unavailable: {type(exc).__name__}: {exc}") from exc
        with db.transaction(self.pool) as conn:
            tx = OmsTx(conn, self.name, int(time.time() * 1000), self.oms_metrics)
            res = broker_recon.reconcile(conn, tx, book, trades)
            updates = tx.finish()
            self._queue_messages(conn, res.fills, updates)
        self.log.info("start-up reconciliation broker_orders=%d trades=%d adopted=%d fills=%d statuses=%d alerts=%d",
                      len(book), len(trades), len(res.adopted), len(res.fills), res.statuses, len(res.alerts))

    def _load_open(self) -> None:
        """Placements not finished: queued ones wait for the pacer, sending/uncertain ones are looked up. The
        pacer counts the order requests the previous run made (Kite counts them whoever sent them)."""
        assert self.pool is not None
        with db.transaction(self.pool) as conn:
            self.pacer.prime(placements.request_ages(conn))
            rows = placements.load_open(conn)
            self._remember(conn, [r[0] for r in rows])
        self.queue.extend(oid for oid, state in rows if state == "queued")

    def _reload_queue(self) -> None:
        """After a failed intake (its commit may have landed): the queued placements memory lacks."""
        assert self.pool is not None
        with db.transaction(self.pool) as conn:
            missing = [oid for oid in placements.queued_ids(conn) if oid not in self._orders]
            self._remember(conn, missing)
        self.queue.extend(oid for oid in missing if oid in self._orders and oid not in self.queue)

    def _remember(self, conn: psycopg.Connection[Any], ids: list[str]) -> None:
        for o in oms.load_orders(conn, ids=ids):
            self._orders[o["order_id"]] = o

    # -- the loop ----------------------------------------------------------------------------
    def step(self) -> None:
        assert self.consumer is not None
        msgs = self.consumer.poll_batch(self.batch_size, self.poll_timeout)
        self._failed = True
        self._track_consumed(msgs)
        emission = self.processor.process(msgs, int(time.time() * 1000))
        now = time.monotonic()
        for r in emission.rows or []:
            self._read_at.setdefault(r.value["order_id"], now)
        orders = [r.value for r in (emission.rows or [])]
        orders += self._redrive.due(self.pool, {o["order_id"] for o in orders})
        if orders and not self._db_retry(lambda: self._intake(orders), on_failure=self._reload_queue):
            return
        if emission.rejects and not self._deliver(Emission(rejects=emission.rejects)):
            return
        if self._outbox_waiting:
            self._send_outbox()
        self._commit(self.processor.committable(dict(self._consumed)))
        self._failed = False
        if not self.dry:
            self._broker_work()
        self._maybe_report_lag()

    def _broker_work(self) -> None:
        self._check_token()
        self._collect()
        sending = self.halt is None or (self.halt == "ip_not_registered" and time.monotonic() >= self._halt_until)
        if sending:
            self._dispatch()
        self._cancels(send=sending)
        self._lookups()
        self.m_queue.set(len(self.queue))

    # -- intake --------------------------------------------------------------------------------
    def _intake(self, orders: list[dict[str, Any]]) -> None:
        assert self.pool is not None
        now_ms = int(time.time() * 1000)
        by_id: dict[str, dict[str, Any]] = {}
        for o in orders:
            by_id.setdefault(o["order_id"], o)
        unique = list(by_id.values())
        taken: list[dict[str, Any]] = []
        now_sent: list[dict[str, Any]] = []
        with db.transaction(self.pool) as conn:
            tx = OmsTx(conn, self.name, now_ms, self.oms_metrics)
            states = tx.ensure(unique, Status.ALLOWED)
            rows: list[tuple[str, str, str, str, int]] = []
            for o in unique:
                if states[o["order_id"]].status != Status.ALLOWED:
                    continue  # taken before (a replay, a re-drive racing the topic) or decided otherwise
                o = {**o, "qty": states[o["order_id"]].qty or o["qty"]}
                tag = tag_for(o["order_id"])
                if self.dry:
                    self._record_dry(conn, tx, o, tag)
                    rows.append((o["order_id"], tag, "dry", "dry", 0))
                    continue
                tx.transition(o["order_id"], Status.SUBMITTED, f"queued for Kite (tag {tag})", fields={"venue": "live"})
                if self._send_now(o, len(now_sent)):  # marked 'sending' in this transaction: one commit, not two
                    rows.append((o["order_id"], tag, "live", "sending", 1))
                    now_sent.append(o)
                else:
                    rows.append((o["order_id"], tag, "live", "queued", 0))
                    taken.append(o)
            placements.insert(conn, rows)
            placements.record_requests(conn, "place", len(now_sent))
            self._queue_messages(conn, [], tx.finish())
        for o in taken:
            self._orders[o["order_id"]] = o
            self.queue.append(o["order_id"])
        for o in now_sent:
            self._orders[o["order_id"]] = o
            self._submit_place(o["order_id"], int(o["qty"]))

    def _send_now(self, o: dict[str, Any], already: int) -> bool:
        """May this order go to the broker straight from intake (nothing ahead of it, a caller free)?"""
        if self.halt is not None or self.queue or self.held or len(self.inflight) + already >= self.cfg.placer_threads:
            return False
        # an exit goes through _mark_sending: capped at what is held then, after its protective stop
        return (o.get("extra") or {}).get("intent") not in protective_stops.EXIT_INTENTS

    def _submit_place(self, oid: str, qty: int) -> None:
        assert self.kite is not None
        o = {**self._orders[oid], "qty": qty}
        params = place_params(o, tag_for(oid), self.cfg.market_protection)
        self.inflight[self.pool_exec.submit(self._paced, self.kite.place, params)] = ("place", oid,
                                                                                        self._token_version)

    def _paced(self, call: Any, arg: Any) -> Reply:
        """In a caller thread: wait for the pacer, then call at once. The pace is kept on the moment a request
        leaves (taken earlier, calls queued behind a slow reply would leave together and break Kite's second)."""
        self.pacer.acquire()
        return call(arg)  # type: ignore[no-any-return]

    def _record_dry(self, conn: psycopg.Connection[Any], tx: OmsTx, o: dict[str, Any], tag: str) -> None:
        """What a live gateway would have sent, recorded, and the order closed (it never trades)."""
        params = place_params(o, tag, self.cfg.market_protection)
        boid = f"DRY{tag}"
        tx.transition(o["order_id"], Status.SUBMITTED, "dry mode: recorded", fields={"venue": "dry",
                                                                                    "broker_order_id": boid})
        tx.transition(o["order_id"], Status.CANCELLED, "dry mode: not sent to the broker",
                      fields={"status_detail": "dry mode: not sent to the broker"})
        rec = {**params, "order_id": boid, "status": "DRY", "instrument_token": o["instrument_token"],
               "quantity": params["quantity"]}
        conn.execute(broker_recon.UPSERT_LIVE, broker_recon.live_row(rec, o["order_id"], venue="dry"))

    # -- dispatch ------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        """Hand queued orders to the callers (each waits for the pacer): marked ``sending`` first (one
        transaction), then the calls."""
        if self.held and time.monotonic() >= self._next_held:
            self.queue.extendleft(reversed(self.held))  # exits waiting on a protective stop: look again
            self.held = []
        batch: list[str] = []
        most = 1 if self.halt == "ip_not_registered" else self.cfg.placer_threads  # blocked: one probe
        while self.queue and len(self.inflight) + len(batch) < most:
            batch.append(self.queue.popleft())
        if not batch:
            return
        assert self.pool is not None and self.kite is not None
        qty: dict[str, int] = {}
        ok = self._db_retry(lambda: qty.update(self._mark_sending(batch)))
        if not ok:
            self.queue.extendleft(reversed(batch))
            return
        for oid in batch:
            if oid in qty:  # (else held or rejected: a protective stop goes first)
                self._submit_place(oid, qty[oid])
        if self.halt == "ip_not_registered":
            self._halt_until = time.monotonic() + self.cfg.ip_retry_s  # one probe per interval while blocked

    def _mark_sending(self, ids: list[str]) -> dict[str, int]:
        """Mark the orders to send ``sending`` (before any call); the quantity to send of each. An exit whose
        position has a protective stop at the broker waits for the stop to be cancelled (held), and is
        rejected if the stop closed the position (:func:`execution.protective_stops.hold_exit`)."""
        assert self.pool is not None
        send: dict[str, int] = {}
        held: list[str] = []
        with db.transaction(self.pool) as conn:
            tx = OmsTx(conn, self.name, int(time.time() * 1000), self.oms_metrics)
            states = tx.load(ids)  # row locks: a flatten or an adoption cannot slip in between
            queued = placements.lock_queued(conn, ids)
            for oid in ids:
                o = self._orders.get(oid)
                st = states.get(oid)
                if o is None or oid not in queued or st is None:
                    self._orders.pop(oid, None)  # adopted, cancelled or taken care of meanwhile: nothing to send
                    continue
                if st.status != Status.SUBMITTED:  # a cancel request came first: it is never sent
                    self._close_unsent(conn, tx, oid, st.status)
                    continue
                what, n = protective_stops.hold_exit(conn, tx, o, self.cfg.protective_stops.strategies != [])
                if what == "send":
                    send[oid] = n
                elif what == "hold":
                    held.append(oid)
                else:
                    detail = "exit not sent: the strategy holds nothing on that side any more"
                    tx.transition(oid, Status.REJECTED, detail, fields={"status_detail": detail})
                    placements.set_state(conn, oid, "rejected", detail)
                    self._orders.pop(oid, None)
            placements.mark_sending(conn, list(send))
            self._queue_messages(conn, [], tx.finish())
        if held:
            self.held.extend(held)
            self._next_held = time.monotonic() + 1.0
        return send

    # -- results ---------------------------------------------------------------------------------
    def _collect(self) -> None:
        done = [f for f in self.inflight if f.done()]
        if not done:
            return
        results = []
        for f in done:
            kind, oid, version = self.inflight.pop(f)
            reply = f.result()
            if reply.outcome == "token" and version != self._token_version:
                reply = Reply("not_sent", "sent with the token before the renewal")  # not a new expiry
            results.append(((kind, oid), reply))
        now = time.monotonic()
        for (kind, oid), reply in results:
            self.m_calls.labels(kind, reply.outcome).inc()
            t = self._read_at.pop(oid, None) if kind == "place" else None
            if t is not None:
                self.m_latency.observe(now - t)
        self._db_retry(lambda: self._apply(results))

    def _apply(self, results: list[tuple[tuple[str, str], Reply]]) -> None:
        assert self.pool is not None
        now_ms = int(time.time() * 1000)
        requeue: list[str] = []
        with db.transaction(self.pool) as conn:
            tx = OmsTx(conn, self.name, now_ms, self.oms_metrics)
            tx.load([oid for (_k, oid), _r in results])
            for (kind, oid), reply in results:
                if kind == "cancel":
                    # Whatever the reply, the request stays CANCEL_REQUESTED until the broker's book shows the
                    # order final (the poller): a refused cancel (still PUT ORDER REQ RECEIVED, a cancel already
                    # on its way) is asked again after CANCEL_RETRY_S.
                    if reply.outcome != "ok":
                        self.log.warning("cancel not taken order_id=%s reply=%s: asked again in %.0fs", oid,
                                         reply.message, CANCEL_RETRY_S)
                    if reply.outcome in ("token", "ip_blocked"):
                        self._set_halt("token" if reply.outcome == "token" else "ip_not_registered")
                    continue
                requeue += self._placed_result(conn, tx, oid, reply, now_ms)
                if self.halt == "ip_not_registered" and reply.outcome in ("placed", "rejected", "ambiguous"):
                    self.halt = None  # order requests reach the order book again
                    self.m_halted.labels("ip_not_registered").set(0)
                    self.log.warning("order requests are accepted again: resuming")
            self._queue_messages(conn, [], tx.finish())
        self.queue.extend(requeue)

    def _placed_result(self, conn: psycopg.Connection[Any], tx: OmsTx, oid: str, reply: Reply, now_ms: int
                       ) -> list[str]:
        """Record one placement's reply; the ids to send again (nothing reached the broker)."""
        o = self._orders.get(oid, {})
        if reply.outcome == "placed":
            assert reply.broker_order_id is not None
            placements.placed(conn, oid, reply.broker_order_id)
            tx.annotate(oid, {"broker_order_id": reply.broker_order_id})
            rec = {"order_id": reply.broker_order_id, "status": "PUT ORDER REQ RECEIVED", "tag": tag_for(oid),
                   "exchange": o.get("exchange"), "tradingsymbol": o.get("symbol"),
                   "instrument_token": o.get("instrument_token"), "transaction_type": o.get("side"),
                   "order_type": o.get("order_type"), "product": o.get("product"), "quantity": o.get("qty"),
                   "price": o.get("price"), "trigger_price": o.get("trigger_price")}
            conn.execute(broker_recon.INSERT_LIVE_IF_NEW, broker_recon.live_row(rec, oid))  # the poller's is newer
            self._orders.pop(oid, None)
            return []
        if reply.outcome == "rejected":
            detail = f"broker rejected: {reply.message}"
            placements.set_state(conn, oid, "rejected", reply.message)
            st = tx.state(oid)  # a cancel requested meanwhile: the order simply never was (no REJECTED after it)
            to = Status.CANCELLED if st is not None and st.status == Status.CANCEL_REQUESTED else Status.REJECTED
            tx.transition(oid, to, detail, fields={"status_detail": detail})
            self.log.warning("order rejected by the broker order_id=%s reason=%s", oid, reply.message)
            self._orders.pop(oid, None)
            return []
        if reply.outcome == "ambiguous":
            placements.uncertain(conn, oid, reply.message, self.cfg.ambiguous.first_lookup_s)
            self.log.warning("ambiguous reply, looking the order up by tag before anything else order_id=%s "
                             "reply=%s", oid, reply.message)
            self._next_uncertain = min(self._next_uncertain, time.monotonic() + self.cfg.ambiguous.first_lookup_s)
            return []
        # not sent (connection refused), or halted before reaching the order book: send again later
        if reply.outcome in ("token", "ip_blocked"):
            self._set_halt("token" if reply.outcome == "token" else "ip_not_registered")
        placements.set_state(conn, oid, "queued", reply.message)
        return [oid]

    # -- lookups of uncertain placements -----------------------------------------------------------
    def _lookups(self) -> None:
        assert self.kite is not None
        if self.lookup is not None:
            if not self.lookup.done():
                return
            fut, self.lookup = self.lookup, None
            try:
                book = fut.result()
            except Exception as exc:  # noqa: BLE001 - the book could not be read: try again shortly
                self.m_calls.labels("orders", type(exc).__name__).inc()
                self._next_uncertain = time.monotonic() + 1.0
                if type(exc).__name__ == "TokenException":
                    self._set_halt("token")
                return
            self._db_retry(lambda: self._resolve(book))
            return
        if time.monotonic() < self._next_uncertain or self.halt == "token":
            return
        self._next_uncertain = time.monotonic() + 0.5
        if self.pool is None:
            return
        try:
            with db.transaction(self.pool) as conn:
                due = placements.uncertain_due(conn)
        except Exception as exc:  # noqa: BLE001 - asked again at the next pass
            if not db.is_transient(exc):
                raise
            return
        self.m_uncertain.set(due)
        if due:
            self.lookup = self.pool_exec.submit(self.kite.orders)

    def _resolve(self, book: list[dict[str, Any]]) -> None:
        """Uncertain placements against the order book: adopt by tag, wait, or send again."""
        assert self.pool is not None
        window = self.cfg.ambiguous.window_s
        requeue: list[str] = []
        with db.transaction(self.pool) as conn:
            tx = OmsTx(conn, self.name, int(time.time() * 1000), self.oms_metrics)
            res = broker_recon.reconcile(conn, tx, book, [], statuses=False)  # adoption only: fills are the poller's
            for oid in res.adopted:
                self.m_adopted.inc()
                self._orders.pop(oid, None)
                self.log.info("adopted order_id=%s: found at the broker by its tag, not placed again", oid)
            for oid, attempts in placements.requeue_expired(conn, window):
                self.log.warning("not at the broker %.0fs after an ambiguous reply: placing again (same tag) "
                                 "order_id=%s attempts=%d", window, oid, attempts)
                requeue.append(oid)
            self._remember(conn, [o for o in requeue if o not in self._orders])
            self._queue_messages(conn, res.fills, tx.finish())
        self.queue.extend(requeue)
        self._next_uncertain = time.monotonic() + 0.2

    # -- cancels ----------------------------------------------------------------------------------
    def _cancels(self, send: bool) -> None:
        """Cancel requests: one not sent yet is closed in our tables (also while halted); a placed one is
        cancelled at the broker (``send``), asked again every CANCEL_RETRY_S until the book shows it final;
        broker orders found twice under one tag (or placed for an order we cancelled) are cancelled too."""
        now = time.monotonic()
        if now < self._next_cancels or self.pool is None:
            return
        self._next_cancels = now + 1.0
        assert self.kite is not None
        try:
            with db.transaction(self.pool) as conn:
                rows = placements.cancel_requests(conn)
                self._stray |= {ref for (ref,) in conn.execute(
                    "SELECT ref FROM broker_alerts WHERE kind = 'stray_order' AND NOT cleared").fetchall()}
        except Exception as exc:  # noqa: BLE001 - the next pass asks again
            if not db.is_transient(exc):
                raise
            return
        never_sent = [oid for oid, _b, state in rows if state == "queued" and oid not in self._in_flight_ids()]
        if never_sent:
            self._db_retry(lambda: self._cancel_unsent(never_sent))
        if not send:
            return
        todo = [(oid, boid) for oid, boid, state in rows if state == "placed" and boid]
        todo += [(f"dup:{boid}", boid) for boid in sorted(self._stray)]
        todo = [(oid, boid) for oid, boid in todo
                if now - self._cancel_sent.get(oid, -1e9) >= CANCEL_RETRY_S][:self.cfg.placer_threads]
        if not todo or not self._db_retry(lambda: self._record(todo)):
            return
        for oid, boid in todo:
            self._cancel_sent[oid] = now
            self._stray.discard(boid)
            self.inflight[self.pool_exec.submit(self._paced, self.kite.cancel, boid)] = ("cancel", oid,
                                                                                           self._token_version)

    def _in_flight_ids(self) -> set[str]:
        return {oid for _k, oid, _v in self.inflight.values()}

    def _record(self, todo: list[tuple[str, str]]) -> None:
        assert self.pool is not None
        with db.transaction(self.pool) as conn:
            placements.record_requests(conn, "cancel", len(todo))
            strays = [boid for oid, boid in todo if oid.startswith("dup:")]
            if strays:
                conn.execute("UPDATE broker_alerts SET cleared = true WHERE kind = 'stray_order' AND ref = ANY(%s)",
                             (strays,))
                self.log.warning("cancelling stray broker orders=%s (a tag's second order, or one we closed)",
                                 ",".join(strays))

    def _cancel_unsent(self, ids: list[str]) -> None:
        """A cancel request for an order we have not sent yet: it never will be."""
        assert self.pool is not None
        with db.transaction(self.pool) as conn:
            tx = OmsTx(conn, self.name, int(time.time() * 1000), self.oms_metrics)
            states = tx.load(ids)
            for oid in ids:
                st = states.get(oid)
                if st is not None:
                    self._close_unsent(conn, tx, oid, st.status)
            self._queue_messages(conn, [], tx.finish())
        for oid in ids:
            if oid in self.queue:
                self.queue.remove(oid)
            if oid in self.held:
                self.held.remove(oid)
            self._orders.pop(oid, None)

    def _close_unsent(self, conn: psycopg.Connection[Any], tx: OmsTx, oid: str, status: Status) -> None:
        """An order whose cancel request came before we sent it: closed in our tables, never sent."""
        detail = "cancelled before it was sent to the broker"
        if status == Status.CANCEL_REQUESTED:
            tx.transition(oid, Status.CANCELLED, detail, fields={"status_detail": detail})
        placements.set_state(conn, oid, "cancelled", detail)
        self._orders.pop(oid, None)

    # -- halts and tokens ---------------------------------------------------------------------------
    def _set_halt(self, reason: str) -> None:
        if self.halt != reason:
            self.log.error("HALT %s", HALT_MESSAGES[reason])
        self.halt = reason
        for r in HALT_MESSAGES:
            self.m_halted.labels(r).set(1 if r == reason else 0)
        if reason == "ip_not_registered":
            self._halt_until = time.monotonic() + self.cfg.ip_retry_s

    def _check_token(self) -> None:
        now = time.monotonic()
        if now < self._next_token_check:
            return
        self._next_token_check = now + 2.0
        token = self.tokens.current()
        if self.tokens.version != self._token_version and self.kite is not None:
            self._token_version = self.tokens.version
            self.kite.set_token(token)
            if self.halt == "token":
                self.halt = None
                self.m_halted.labels("token").set(0)
                self.log.warning("a renewed access token was stored: broker calls resume")

    # -- re-drive, outbox ------------------------------------------------------------------------------
    def _queue_messages(self, conn: psycopg.Connection[Any], fills: list[dict[str, Any]],
                        updates: list[dict[str, Any]]) -> None:
        ids = outbox.put(conn, self.name, [(FILLS, f["order_id"].encode(), orjson.dumps(f)) for f in fills] +
                         [(ORDER_UPDATES, u["order_id"].encode(), orjson.dumps(u)) for u in updates])
        self._outbox_waiting = self._outbox_waiting or bool(ids)

    def stop(self) -> None:
        self.pool_exec.shutdown(wait=True, cancel_futures=False)
        if self._lock_conn is not None:
            self._lock_conn.close()
        if self.inflight and self.pool is not None:
            self._collect()  # record what the calls in flight came to (else: uncertain at the next start)
        super().stop()

    def heartbeat_fields(self) -> dict[str, Any]:
        return {**super().heartbeat_fields(), "mode": self.mode, "queued": len(self.queue),
                "inflight": len(self.inflight), "halt": self.halt or "-"}



def check_mode(settings: Settings) -> None:
    """Live trading needs an explicit confirmation (ConfigError: exit 2)."""
    if settings.trading_mode == "live" and os.environ.get("LIVE_TRADING_CONFIRM", "") != "yes":
        raise ConfigError("TRADING_MODE=live places real orders: set LIVE_TRADING_CONFIRM=yes to confirm "
                          "(README: going live)")
    if settings.trading_mode not in ("dry", "live"):
        raise ConfigError(f"TRADING_MODE={settings.trading_mode}: the Zerodha gateway runs in dry or live mode "
                          "(paper mode fills through execution.paper_gateway_matcher)")


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    ap = argparse.ArgumentParser(prog="python -m execution.zerodha_gateway",
                                 description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--config", help="execution settings (env EXECUTION_CONFIG, default <config dir>/execution.yaml)")
    ap.add_argument("--group", help=f"consumer group id (default {ZerodhaGateway.group_id})")
    args = ap.parse_args(argv)

    def factory(settings: Settings, metrics: Metrics) -> ZerodhaGateway:
        check_mode(settings)
        svc = ZerodhaGateway(settings, metrics, load_execution(args.config))
        if args.group:
            svc.group_id = args.group
        return svc

    return run_service(factory, ZerodhaGateway.name)


if __name__ == "__main__":
    sys.exit(main())
