"""The OMS: the single authority for order state, a library every stage calls (not a service).

Each stage opens an :class:`OmsTx` inside its own Postgres transaction::

    with db.transaction(pool) as conn:
        tx = OmsTx(conn, source="risk_manager", now_ms=now)
        states = tx.ensure(order_dicts, Status.NEW)    # insert missing rows, lock all, read their state
        tx.transition(oid, Status.SIZED, "risk 1.0% of equity", qty=12, fields={"risk": {...}})
        updates = tx.finish()                            # write rows + audit; the OrderUpdates to publish

- **Idempotent upsert by order_id**: :meth:`OmsTx.ensure` inserts an order that is missing at the
  state the caller's message implies (``orders`` -> NEW, ``orders.sized`` -> SIZED, ...), so the
  order in which the stages' writes land never matters; existing rows are never overwritten.
- **Transitions** go through :mod:`execution.oms_core`'s matrix. Applied: the row changes, its
  ``version`` goes up by one and ``order_audit`` gets a row with that version (unique per order:
  an audit row per applied change, never two). A replay is a no-op. Illegal: an ``order_audit``
  row with ``applied = false`` (once per distinct attempt) and the ``oms_illegal_transitions_total``
  counter; the order does not change.
- **Fills** (:meth:`OmsTx.fill`): always inserted into ``fills`` by ``fill_id`` (a duplicate is a
  no-op), then counted on the order with the overfill guard. ``fills`` is the record of executions
  (``positions`` follows it by trigger, and risk reads positions), so a trade that happened is kept
  even when the state machine refuses to count it on the order (an overfill, a fill on an unsized,
  NEW, SIZED or rejected order): only the order's update is refused, audited and counted.
- Every applied change comes back from :meth:`OmsTx.finish` as an OrderUpdate for ``order.updates``;
  the caller produces them after its transaction commits. :func:`replay_updates` re-reads a
  stage's audited updates, so a stage that re-drives a decided order (a crash between the commit
  and the produce) publishes them again (consumers key on order_id and status: harmless).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg

from core.metrics import Metrics
from execution import oms_core
from execution.oms_core import FINAL, WORKING, OrderState, Outcome, Status

__all__ = ["FINAL", "WORKING", "OmsTx", "OrderState", "Outcome", "Status", "OmsMetrics", "order_from_row",
           "replay_updates", "load_orders", "ORDER_FIELDS"]

#: Order contract fields stored in their own columns; anything else of a message goes to ``extra``.
ORDER_FIELDS = ("order_id", "strategy", "instrument_token", "symbol", "exchange", "side", "order_type", "product",
                "price", "trigger_price", "stop_loss", "qty", "tf", "signal_ts", "created_ts")
_JSON_FIELDS = ("risk", "budget", "extra")
#: Columns a transition may set besides status/qty/filled_qty/avg_price.
UPDATABLE = frozenset({"risk", "budget", "broker_order_id", "venue", "status_detail"})

_INSERT = ("INSERT INTO orders (order_id, strategy, instrument_token, symbol, exchange, side, order_type, product, "
           "price, trigger_price, stop_loss, qty, tf, signal_ts, created_ts, risk, budget, extra, status, version) "
           "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 1) "
           "ON CONFLICT (order_id) DO NOTHING RETURNING order_id")
_SELECT = ("SELECT order_id, status, qty, filled_qty, avg_price, version, strategy, instrument_token FROM orders "
           "WHERE order_id = ANY(%s) ORDER BY order_id FOR UPDATE")
_UPDATE = ("UPDATE orders SET status = %s, qty = %s, filled_qty = %s, avg_price = %s, version = %s, "
           "status_detail = COALESCE(%s, status_detail), "
           "risk = CASE WHEN %s THEN %s::jsonb ELSE risk END, budget = CASE WHEN %s THEN %s::jsonb ELSE budget END, "
           "broker_order_id = COALESCE(%s, broker_order_id), venue = COALESCE(%s, venue), updated_at = now() "
           "WHERE order_id = %s")
_AUDIT = ("INSERT INTO order_audit (order_id, from_status, to_status, ts, source, detail, applied, version, "
          "filled_qty) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING")


class OmsMetrics:
    """The OMS's counters, registered on the calling service's registry."""

    def __init__(self, metrics: Metrics) -> None:
        self.transitions = metrics.counter("oms_transitions_total", "Applied OMS transitions", ["to_status"])
        self.illegal = metrics.counter("oms_illegal_transitions_total",
                                       "Transitions refused by the OMS matrix (recorded, never applied)",
                                       ["from_status", "to_status"])


def _dt(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)


def _ms(dt: datetime | None) -> int | None:
    return None if dt is None else round(dt.timestamp() * 1000)


def _json(v: Any) -> str | None:
    return None if v is None else orjson.dumps(v).decode()


@dataclass(slots=True)
class _Live:
    """An order's state during one transaction: the core state plus pending column changes."""

    state: OrderState
    version: int
    #: (strategy, instrument_token): the order the books' rows are locked in (see finish)
    book_key: tuple[str, int] = ("", 0)
    fields: dict[str, Any] = field(default_factory=dict)
    dirty: bool = False


@dataclass(slots=True)
class OmsTx:
    """The OMS inside one caller's transaction (see the module docstring)."""

    conn: psycopg.Connection[Any]
    source: str
    now_ms: int
    metrics: OmsMetrics | None = None
    _live: dict[str, _Live] = field(default_factory=dict)
    _audit: list[tuple[Any, ...]] = field(default_factory=list)
    _updates: list[dict[str, Any]] = field(default_factory=list)
    outcomes: list[tuple[str, Outcome]] = field(default_factory=list)

    # -- reading / creating ----------------------------------------------------
    def ensure(self, orders: Sequence[dict[str, Any]], status: Status) -> dict[str, OrderState]:
        """Insert the orders that have no row (at ``status``, with the message's fields), then lock
        and read every one of them. Returns order_id -> state (already-known ids included)."""
        ids = [o["order_id"] for o in orders if o["order_id"] not in self._live]
        if not ids:
            return {o["order_id"]: self._live[o["order_id"]].state for o in orders}
        by_id = {o["order_id"]: o for o in orders}
        with self.conn.cursor() as cur:
            # Lock first: an insert racing another stage's insert of the same id resolves by ON CONFLICT.
            rows = cur.execute(_SELECT, (ids,)).fetchall()
            found = {r[0] for r in rows}
            missing = [by_id[i] for i in sorted(set(ids) - found)]
            created: list[str] = []
            if missing:  # one pipelined round trip; RETURNING tells which inserts won a race
                cur.executemany(_INSERT, [_insert_row(o, status) for o in missing], returning=True)
                for _ in cur.results():
                    row = cur.fetchone()
                    if row is not None:
                        created.append(row[0])
            if missing:
                rows = cur.execute(_SELECT, (ids,)).fetchall()
        for oid, st, qty, filled, avg, version, strat, tok in rows:
            self._live[oid] = _Live(OrderState(oid, Status(st), qty, filled or 0, avg), version, (strat, tok))
        for oid in created:
            o = by_id[oid]
            out = oms_core.create(oid, status, o.get("qty"), f"created from the {status} message")
            self._record(oid, out, version=1)
        return {o["order_id"]: self._live[o["order_id"]].state for o in orders if o["order_id"] in self._live}

    def load(self, order_ids: Iterable[str]) -> dict[str, OrderState]:
        """Lock and read existing orders (unknown ids are absent from the result)."""
        ids = [i for i in order_ids if i not in self._live]
        if ids:
            for oid, st, qty, filled, avg, version, strat, tok in self.conn.execute(_SELECT, (ids,)).fetchall():
                self._live[oid] = _Live(OrderState(oid, Status(st), qty, filled or 0, avg), version, (strat, tok))
        return {i: self._live[i].state for i in order_ids if i in self._live}

    def state(self, order_id: str) -> OrderState | None:
        live = self._live.get(order_id)
        return live.state if live else None

    # -- changing --------------------------------------------------------------
    def transition(self, order_id: str, to: Status, detail: str | None = None, *, qty: int | None = None,
                   fields: dict[str, Any] | None = None) -> Outcome:
        """Offer ``to``; on an applied change the ``fields`` columns are set too."""
        live = self._require(order_id)
        out = oms_core.transition(live.state, to, detail, qty=qty)
        return self._offer(order_id, out, fields)

    def kite_status(self, order_id: str, kite_status: str, filled: int, detail: str | None = None,
                    fields: dict[str, Any] | None = None) -> Outcome:
        """Offer a Kite order snapshot's status (interim statuses, ``UPDATE``, ...)."""
        live = self._require(order_id)
        return self._offer(order_id, oms_core.apply_kite(live.state, kite_status, filled, detail), fields)

    def annotate(self, order_id: str, fields: dict[str, Any]) -> None:
        """Set bookkeeping columns (``broker_order_id``, ``venue``, ...) without a transition: no version, no
        audit row (only :data:`UPDATABLE` columns)."""
        bad = set(fields) - UPDATABLE
        if bad:
            raise ValueError(f"OMS cannot set {sorted(bad)}")
        live = self._require(order_id)
        live.fields.update(fields)
        live.dirty = True

    def cancel_failed(self, order_id: str, detail: str | None = None) -> Outcome:
        live = self._require(order_id)
        return self._offer(order_id, oms_core.cancel_failed(live.state, detail), None)

    def fill(self, fill: dict[str, Any]) -> Outcome | None:
        """Record a Fill (contract dict) and count it on its order. None: a duplicate fill_id.

        The fill goes into ``fills`` whatever the state machine says of the order: an execution
        that happened stays on record (and in ``positions``); a refusal ("illegal") only means
        the order's ``filled_qty``/status did not move, and is audited as refused.
        """
        live = self._require(fill["order_id"])
        out = oms_core.apply_fill(live.state, fill["qty"], fill["price"], fill["fill_id"])
        if fill["qty"] <= 0:
            # Not an execution (fills.qty > 0 by CHECK): nothing to record, the refusal is audited.
            return self._offer(fill["order_id"], out, None)
        # Inserted first: a fill already recorded is a duplicate before anything else (offered to the
        # state machine again it would look like an overfill and be audited as refused). Its strategy is
        # the order's: positions are the strategy's whatever label the venue's message carried.
        row = self.conn.execute(
            "INSERT INTO fills (fill_id, order_id, broker_order_id, instrument_token, side, qty, price, ts, "
            "venue, strategy) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (fill_id) DO NOTHING RETURNING fill_id",
            (fill["fill_id"], fill["order_id"], fill.get("broker_order_id"), fill["instrument_token"],
             fill["side"], fill["qty"], fill["price"], _dt(fill["ts"]), fill["venue"],
             live.book_key[0] or fill.get("strategy"))).fetchone()
        if row is None:
            return None
        return self._offer(fill["order_id"], out, None)

    # -- writing ---------------------------------------------------------------
    def finish(self) -> list[dict[str, Any]]:
        """Write the changed rows and the audit; return the OrderUpdates to publish (in order)."""
        with self.conn.cursor() as cur:
            rows = []
            # Updated in (strategy, instrument) order: the triggers lock the books' rows (risk_pending,
            # risk_order_counts) of each order they touch, and every stage taking them in the same order
            # cannot deadlock another.
            for oid, live in sorted(self._live.items(), key=lambda kv: (kv[1].book_key, kv[0])):
                if not live.dirty:
                    continue
                st, f = live.state, live.fields
                rows.append((st.status.value, st.qty, st.filled_qty, st.avg_price, live.version,
                             f.get("status_detail"), "risk" in f, _json(f.get("risk")), "budget" in f,
                             _json(f.get("budget")), f.get("broker_order_id"), f.get("venue"), oid))
                live.dirty = False
                live.fields = {}
            if rows:
                cur.executemany(_UPDATE, rows)
            if self._audit:
                cur.executemany(_AUDIT, self._audit)
        self._audit = []
        out, self._updates = self._updates, []
        return out

    # -- internals -------------------------------------------------------------
    def _require(self, order_id: str) -> _Live:
        live = self._live.get(order_id)
        if live is None:
            raise KeyError(f"order {order_id} not loaded in this OMS transaction (ensure/load it first)")
        return live

    def _offer(self, order_id: str, out: Outcome, fields: dict[str, Any] | None) -> Outcome:
        live = self._live[order_id]
        if out.kind == "illegal":
            st = live.state
            self._audit.append((order_id, st.status.value, _attempted(out), _dt(self.now_ms), self.source,
                                out.detail, False, None, st.filled_qty))
            if self.metrics is not None:
                self.metrics.illegal.labels(st.status.value, _attempted(out)).inc()
        elif out.applied:
            if fields:
                bad = set(fields) - UPDATABLE
                if bad:
                    raise ValueError(f"OMS cannot set {sorted(bad)}")
                live.fields.update(fields)
            live.state = out.after
            live.version += 1
            live.dirty = True
            self._record(order_id, out, live.version)
        self.outcomes.append((order_id, out))
        return out

    def _record(self, order_id: str, out: Outcome, version: int) -> None:
        before = out.before.status.value if out.before else None
        after = out.after.status.value
        self._audit.append((order_id, before, after, _dt(self.now_ms), self.source, out.detail, True, version,
                            out.after.filled_qty))
        self._updates.append({"order_id": order_id, "from_status": before, "to_status": after, "ts": self.now_ms,
                              "source": self.source, "detail": out.detail, "filled_qty": out.after.filled_qty,
                              "qty": out.after.qty, "version": version})
        if self.metrics is not None:
            self.metrics.transitions.labels(after).inc()


def _attempted(out: Outcome) -> str:
    """The status an illegal outcome tried to reach (from its detail), for the audit row."""
    d = out.detail or ""
    if "-> " in d:
        return d.split("-> ", 1)[1].split(" ", 1)[0]
    return out.before.status.value if out.before else "?"


def _insert_row(o: dict[str, Any], status: Status) -> tuple[Any, ...]:
    extra = o.get("extra")
    rest = {k: v for k, v in o.items() if k not in ORDER_FIELDS and k not in _JSON_FIELDS}
    if rest:
        extra = {**(extra or {}), **rest}
    return (o["order_id"], o["strategy"], o["instrument_token"], o["symbol"], o["exchange"], o["side"],
            o["order_type"], o["product"], o.get("price"), o.get("trigger_price"), o.get("stop_loss"), o.get("qty"),
            o.get("tf"), _dt(o.get("signal_ts")), _dt(o.get("created_ts")), _json(o.get("risk")),
            _json(o.get("budget")), _json(extra), status.value)


_ROW_COLS = ("order_id, strategy, instrument_token, symbol, exchange, side, order_type, product, price, "
             "trigger_price, stop_loss, qty, tf, signal_ts, created_ts, risk, budget, extra, status, "
             "filled_qty, avg_price, status_detail, broker_order_id, venue, version")


def order_from_row(row: Sequence[Any]) -> dict[str, Any]:
    """An order dict (the message contract + status fields) from a ``SELECT {_ROW_COLS}`` row."""
    (oid, strat, tok, sym, exch, side, otype, prod, price, trig, stop, qty, tf, sig, created, risk, budget, extra,
     status, filled, avg, detail, boid, venue, version) = row
    return {"order_id": oid, "strategy": strat, "instrument_token": tok, "symbol": sym, "exchange": exch,
            "side": side, "order_type": otype, "product": prod, "price": price, "trigger_price": trig,
            "stop_loss": stop, "qty": qty, "tf": tf, "signal_ts": _ms(sig), "created_ts": _ms(created),
            "risk": risk, "budget": budget, "extra": extra, "status": status, "filled_qty": filled,
            "avg_price": avg, "status_detail": detail, "broker_order_id": boid, "venue": venue,
            "version": version}


def load_orders(conn: psycopg.Connection[Any], *, ids: Sequence[str] | None = None,
                statuses: Sequence[str] | None = None, older_than_ms: int | None = None,
                limit: int = 10_000) -> list[dict[str, Any]]:
    """Orders by id, or by status (optionally only those unchanged for ``older_than_ms``), oldest first."""
    where: list[str] = []
    params: list[Any] = []
    if ids is not None:
        where.append("order_id = ANY(%s)")
        params.append(list(ids))
    if statuses is not None:
        where.append("status = ANY(%s)")
        params.append(list(statuses))
    if older_than_ms is not None:
        where.append("updated_at < now() - make_interval(secs => %s)")
        params.append(older_than_ms / 1000)
    sql = f"SELECT {_ROW_COLS} FROM orders" + (f" WHERE {' AND '.join(where)}" if where else "") + \
        " ORDER BY created_ts, order_id LIMIT %s"
    return [order_from_row(r) for r in conn.execute(sql, (*params, limit)).fetchall()]


def replay_updates(conn: psycopg.Connection[Any], order_ids: Sequence[str], source: str) -> list[dict[str, Any]]:
    """The OrderUpdates ``source`` applied to these orders (from the audit), oldest first."""
    if not order_ids:
        return []
    rows = conn.execute(
        "SELECT order_id, from_status, to_status, ts, detail, filled_qty, version FROM order_audit "
        "WHERE order_id = ANY(%s) AND source = %s AND applied ORDER BY order_id, version",
        (list(order_ids), source)).fetchall()
    return [{"order_id": oid, "from_status": fr, "to_status": to, "ts": _ms(ts), "source": source, "detail": d,
             "filled_qty": fq, "version": v} for oid, fr, to, ts, d, fq, v in rows]
