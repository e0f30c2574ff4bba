"""Reconciliation: the broker's order book and trades applied to our tables through the OMS.

Run by the gateway at start-up (before it takes a new order) and by the poller periodically and on
order postbacks. The broker is the truth about its orders; our side changes only through the OMS:

- a broker order whose ``tag`` is one of our placements is adopted (a placement left ``sending`` or
  ``uncertain`` by a crash or an ambiguous reply becomes ``placed``), its row in ``live_orders``
  upserted, and its status offered to the OMS (``OmsTx.kite_status``: stale snapshots are no-ops);
- a trade of one of our orders not yet recorded becomes a fill (``fill_id`` ``kite-<trade_id>``,
  deduplicated), before the status, so FILLED follows the fills;
- alerts (``broker_alerts``, a log line and a metric): a broker order with no tag of ours (placed by
  hand, or by another program), a tag on two broker orders (a duplicate placement), our placed
  order missing from the broker's book.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg

from core.clock import IST
from execution.oms import OmsTx
from execution.oms_core import UnknownKiteStatus

log = logging.getLogger(__name__)

_LIVE_COLS = ("broker_order_id, order_id, exchange_order_id, parent_order_id, status, status_message, variety, "
              "exchange, tradingsymbol, instrument_token, transaction_type, order_type, product, validity, quantity, "
              "filled_quantity, pending_quantity, cancelled_quantity, price, trigger_price, average_price, tag, "
              "venue, order_timestamp, exchange_timestamp, raw")
UPSERT_LIVE = (f"INSERT INTO live_orders ({_LIVE_COLS}) VALUES ({', '.join(['%s'] * 26)}) "
               "ON CONFLICT (broker_order_id) DO UPDATE SET status = EXCLUDED.status, "
               "status_message = EXCLUDED.status_message, exchange_order_id = EXCLUDED.exchange_order_id, "
               "filled_quantity = EXCLUDED.filled_quantity, pending_quantity = EXCLUDED.pending_quantity, "
               "cancelled_quantity = EXCLUDED.cancelled_quantity, price = EXCLUDED.price, "
               "trigger_price = EXCLUDED.trigger_price, average_price = EXCLUDED.average_price, "
               "exchange_timestamp = EXCLUDED.exchange_timestamp, raw = EXCLUDED.raw, updated_at = now()")

#: Kite statuses after which an order works no more.
FINAL_KITE = frozenset({"COMPLETE", "CANCELLED", "REJECTED", "LAPSED"})

#: The row a placement writes from its own request (the broker's view, from the poller, wins).
INSERT_LIVE_IF_NEW = (f"INSERT INTO live_orders ({_LIVE_COLS}) VALUES ({', '.join(['%s'] * 26)}) "
                      "ON CONFLICT (broker_order_id) DO NOTHING")


def kite_time_ms(v: Any) -> int | None:
    """A Kite timestamp (naive IST datetime from the client, or an IST string) in epoch ms."""
    if v is None or v == "":
        return None
    if isinstance(v, str):
        try:
            v = datetime.fromisoformat(v)
        except ValueError:
            return None
    if not isinstance(v, datetime):
        return None
    if v.tzinfo is None:
        v = v.replace(tzinfo=IST)
    return round(v.timestamp() * 1000)


def _dt(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)


def live_row(o: dict[str, Any], order_id: str, venue: str = "live") -> tuple[Any, ...]:
    """A ``live_orders`` row from a Kite order record."""
    raw = orjson.dumps(o, default=str).decode()
    return (str(o["order_id"]), order_id, o.get("exchange_order_id"), o.get("parent_order_id"), o.get("status") or "?",
            o.get("status_message"), o.get("variety") or "regular", o.get("exchange"), o.get("tradingsymbol"),
            o.get("instrument_token"), o.get("transaction_type"), o.get("order_type"), o.get("product"),
            o.get("validity"), o.get("quantity"), o.get("filled_quantity") or 0, o.get("pending_quantity"),
            o.get("cancelled_quantity"), o.get("price"), o.get("trigger_price"), o.get("average_price"), o.get("tag"),
            venue, _dt(kite_time_ms(o.get("order_timestamp"))), _dt(kite_time_ms(o.get("exchange_timestamp"))), raw)


@dataclass
class Placement:
    order_id: str
    tag: str
    state: str
    broker_order_id: str | None
    strategy: str
    instrument_token: int
    side: str


@dataclass
class ReconResult:
    """What a pass did (for metrics and logs) and the fills to publish."""

    adopted: list[str] = field(default_factory=list)
    fills: list[dict[str, Any]] = field(default_factory=list)
    statuses: int = 0
    alerts: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, ref, detail)


def today_start() -> datetime:
    """IST midnight of today: Kite's order book and trades are today's only."""
    now = datetime.now(IST)
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def load_placements(conn: psycopg.Connection[Any]) -> dict[str, Placement]:
    """Today's live placements by tag (the orders they belong to, for fills)."""
    rows = conn.execute(
        "SELECT p.order_id, p.tag, p.state, p.broker_order_id, o.strategy, o.instrument_token, o.side "
        "FROM broker_placements p JOIN orders o USING (order_id) WHERE p.venue = 'live' AND p.created_at >= %s",
        (today_start(),)).fetchall()
    return {r[1]: Placement(r[0], r[1], r[2], r[3], r[4], int(r[5]), r[6]) for r in rows}


def reconcile(conn: psycopg.Connection[Any], tx: OmsTx, book: list[dict[str, Any]], trades: list[dict[str, Any]],
              only: Iterable[str] | None = None, statuses: bool = True) -> ReconResult:
    """Apply the broker's ``book`` and ``trades`` (see the module docstring). ``only``: broker order ids to
    look at (an order postback's), else everything; ``statuses=False``: adopt placements only (a lookup by
    tag without the trades: states move with their fills, in a full pass)."""
    res = ReconResult()
    placements = load_placements(conn)
    wanted = set(only) if only is not None else None
    ours = _adopt(conn, placements, [o for o in book if wanted is None or str(o["order_id"]) in wanted], res)
    if not statuses:
        record_alerts(conn, res.alerts)
        return res
    tx.load(sorted({p.order_id for p in ours.values()}))
    _fills(tx, ours, trades, res)  # fills first: FILLED follows the fills, never the other way round
    _statuses(conn, tx, ours, book, res)
    if only is None:
        seen = {str(o["order_id"]) for o in book}
        for p in placements.values():
            if p.state == "placed" and p.broker_order_id and p.broker_order_id not in seen:
                res.alerts.append(("missing_at_broker", p.broker_order_id, f"our order {p.order_id} (tag {p.tag})"))
    record_alerts(conn, res.alerts)
    return res


def _adopt(conn: psycopg.Connection[Any], placements: dict[str, Placement], book: list[dict[str, Any]],
           res: ReconResult) -> dict[str, Placement]:
    """Broker order id -> our placement, by tag; placements the book shows become ``placed``."""
    by_tag: dict[str, list[dict[str, Any]]] = {}
    for o in book:
        by_tag.setdefault(o.get("tag") or "", []).append(o)
    ours: dict[str, Placement] = {}
    for tag, orders in by_tag.items():
        p = placements.get(tag) if tag else None
        if p is None:
            for o in orders:
                res.alerts.append(("unknown_broker_order", str(o["order_id"]),
                                   f"{o.get('transaction_type')} {o.get('quantity')} {o.get('tradingsymbol')} "
                                   f"tag={tag or '-'} status={o.get('status')}"))
            continue
        orders.sort(key=lambda o: (str(o.get("order_timestamp") or ""), str(o["order_id"])))
        if len(orders) > 1:
            res.alerts.append(("duplicate_tag", tag, "broker orders " + ", ".join(str(o["order_id"]) for o in orders)))
        # a working broker order we must not have: a tag's later orders, or one placed for an order we closed
        strays = orders[1:] if p.state not in ("cancelled", "rejected") else orders
        for o in strays:
            if str(o.get("status") or "").upper() not in FINAL_KITE:
                res.alerts.append(("stray_order", str(o["order_id"]), f"tag {tag} ({p.state}): to be cancelled"))
        for o in orders:
            ours[str(o["order_id"])] = p
        first = str(orders[0]["order_id"])
        if p.state != "placed" or p.broker_order_id != first:
            conn.execute("UPDATE broker_placements SET state = 'placed', broker_order_id = %s, next_try_at = NULL, "
                         "updated_at = now() WHERE order_id = %s", (first, p.order_id))
            if p.state != "placed":
                res.adopted.append(p.order_id)
            p.state, p.broker_order_id = "placed", first
    return ours


def _fills(tx: OmsTx, ours: dict[str, Placement], trades: list[dict[str, Any]], res: ReconResult) -> None:
    for t in sorted(trades, key=lambda t: (str(t.get("fill_timestamp") or ""), str(t.get("trade_id")))):
        p = ours.get(str(t.get("order_id")))
        if p is None:
            continue
        ts = kite_time_ms(t.get("fill_timestamp") or t.get("exchange_timestamp")) or 0
        fill = {"fill_id": f"kite-{t['trade_id']}", "order_id": p.order_id, "broker_order_id": str(t["order_id"]),
                "instrument_token": p.instrument_token, "side": t.get("transaction_type") or p.side,
                "qty": int(t["quantity"]), "price": float(t["average_price"]), "ts": ts, "venue": "live",
                "strategy": p.strategy}
        if tx.fill(fill) is not None:
            res.fills.append(fill)


def _statuses(conn: psycopg.Connection[Any], tx: OmsTx, ours: dict[str, Placement], book: list[dict[str, Any]],
              res: ReconResult) -> None:
    rows = []
    book_by_id = {str(o["order_id"]): o for o in book}
    for boid, p in ours.items():
        o = book_by_id[boid]
        rows.append(live_row(o, p.order_id))
        if boid != p.broker_order_id:
            continue  # a duplicate: alerted; our order follows the first one
        tx.annotate(p.order_id, {"broker_order_id": boid, "venue": "live"})
        try:
            out = tx.kite_status(p.order_id, str(o["status"]), int(o.get("filled_quantity") or 0),
                                 o.get("status_message"))
        except UnknownKiteStatus as exc:
            res.alerts.append(("unknown_status", boid, str(exc)))
            continue
        if out.applied:
            res.statuses += 1
    if rows:
        conn.cursor().executemany(UPSERT_LIVE, rows)


def record_alerts(conn: psycopg.Connection[Any], alerts: list[tuple[str, str, str]]) -> None:
    if alerts:
        conn.cursor().executemany(
            "INSERT INTO broker_alerts (kind, ref, detail) VALUES (%s, %s, %s) ON CONFLICT (kind, ref) DO UPDATE "
            "SET last_seen = now(), detail = EXCLUDED.detail, cleared = false", alerts)
