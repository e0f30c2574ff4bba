"""Protective stops at the broker (Freqtrade's "stoploss on exchange"): for when our stack is down.

For the strategies ``configs/execution.yaml`` names (``protective_stops.strategies``), once an entry
with a ``stop_loss`` has filled at the broker, the poller creates an SL-M exit for the filled
quantity, triggered at that stop (an ``orders`` row at ALLOWED, intent ``protective_stop``, sent to
``orders.allowed`` for the gateway), and links it to the position in ``protective_stops``.

- A strategy's exit (exit, square_off, flatten) on that position makes the gateway cancel the stop
  first and hold the exit until the stop is final (:func:`hold_exit`): cancelled -> the exit goes,
  less whatever the stop filled meanwhile; filled -> the exit is rejected, the position is closed.
- A triggered stop's fills come in through the poller like any fill: they close the position in
  ``positions`` (and the strategy runner sees them on ``fills``).
- The stop orders are ordinary orders at the broker with our tag: reconciled at start-up like every
  other order.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg

from core.topics import ORDERS_ALLOWED
from execution.config import ProtectiveStops
from execution.oms import OmsTx, Status

EXIT_INTENTS = ("exit", "square_off", "flatten")


@dataclass
class Actions:
    messages: list[tuple[str, bytes | None, bytes]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)


def stop_order_id(entry_order_id: str) -> str:
    """Our order id of an entry's protective stop (20 hex chars: also its Kite tag)."""
    return hashlib.blake2b(f"protective_stop|{entry_order_id}".encode(), digest_size=10).hexdigest()


def maintain(conn: psycopg.Connection[Any], tx: OmsTx, cfg: ProtectiveStops, now_ms: int) -> Actions:
    """Place stops for newly filled entries; follow the stops' own outcomes."""
    acts = Actions()
    if not cfg.strategies:
        return acts
    rows = conn.execute(
        "SELECT o.order_id, o.strategy, o.instrument_token, o.symbol, o.exchange, o.side, o.product, o.tf, "
        "o.filled_qty, o.stop_loss FROM orders o WHERE o.status = 'FILLED' AND o.venue = 'live' "
        "AND o.stop_loss IS NOT NULL AND COALESCE(o.extra->>'intent', 'entry') = 'entry' "
        "AND NOT EXISTS (SELECT 1 FROM protective_stops p WHERE p.entry_order_id = o.order_id)").fetchall()
    for oid, strat, tok, sym, exch, side, product, tf, filled, stop in rows:
        if not cfg.applies(strat) or not filled:
            continue
        sid = stop_order_id(oid)
        order = {"order_id": sid, "strategy": strat, "instrument_token": int(tok), "symbol": sym, "exchange": exch,
                 "side": "SELL" if side == "BUY" else "BUY", "order_type": "SL-M", "product": product,
                 "price": None, "trigger_price": float(stop), "stop_loss": None, "qty": int(filled), "tf": tf or "",
                 "signal_ts": now_ms, "created_ts": now_ms,
                 "risk": {"source": "protective_stop", "entry_order_id": oid},
                 "budget": {"decision": "allowed", "exit": True, "source": "protective_stop"},
                 "extra": {"intent": "protective_stop", "entry_order_id": oid}}
        tx.ensure([order], Status.ALLOWED)
        conn.execute("INSERT INTO protective_stops (entry_order_id, stop_order_id, strategy, instrument_token, qty, "
                     "trigger_price, state) VALUES (%s, %s, %s, %s, %s, %s, 'active') ON CONFLICT DO NOTHING",
                     (oid, sid, strat, tok, filled, stop))
        acts.messages.append((ORDERS_ALLOWED, sid.encode(), orjson.dumps(order)))
        acts.counts["placed"] += 1
    # the stops' own outcomes (a triggered stop's fills closed the position; a cancel freed the exit)
    for sid, state, status in conn.execute(
            "SELECT p.stop_order_id, p.state, o.status FROM protective_stops p JOIN orders o "
            "ON o.order_id = p.stop_order_id WHERE p.state IN ('active', 'cancelling')").fetchall():
        new = "done" if status == "FILLED" else "cancelled" if status in ("CANCELLED", "REJECTED", "EXPIRED") else None
        if new is not None and new != state:
            conn.execute("UPDATE protective_stops SET state = %s, updated_at = now() WHERE stop_order_id = %s",
                         (new, sid))
            acts.counts["filled" if new == "done" else "ended"] += 1
    return acts


def hold_exit(conn: psycopg.Connection[Any], tx: OmsTx, order: dict[str, Any], stops: bool = True
              ) -> tuple[str, int]:
    """What to do with an order about to be sent: ``("send", qty)``; ``("hold", 0)`` while the position's
    protective stop is being cancelled; ``("reject", 0)`` for an exit with nothing left to close.

    An exit is capped at what its strategy holds on the side it closes, read now (a protective stop that
    triggered, a flatten, may have closed it since the risk manager sized the exit): never a reversal.
    """
    intent = (order.get("extra") or {}).get("intent")
    if intent not in EXIT_INTENTS:
        return "send", int(order["qty"])
    if stops:
        hold = _stop_first(conn, tx, order)
        if hold:
            return "hold", 0
    row = conn.execute("SELECT net_qty FROM positions WHERE strategy = %s AND instrument_token = %s FOR UPDATE",
                       (order["strategy"], order["instrument_token"])).fetchone()
    net = int(row[0]) if row else 0
    held = net if order["side"] == "SELL" else -net
    qty = min(int(order["qty"]), max(0, held))
    return ("send", qty) if qty > 0 else ("reject", 0)


def _stop_first(conn: psycopg.Connection[Any], tx: OmsTx, order: dict[str, Any]) -> bool:
    """True while the exit must wait: its position's protective stops are asked to cancel first, and it goes
    once every one is final (what they filled is then gone from the position)."""
    oid = order["order_id"]
    linked = conn.execute(
        "SELECT o.status FROM protective_stops p JOIN orders o ON o.order_id = p.stop_order_id "
        "WHERE p.exit_order_id = %s", (oid,)).fetchall()
    if linked:
        return any(st not in ("FILLED", "CANCELLED", "REJECTED", "EXPIRED") for (st,) in linked)
    active = conn.execute(
        "SELECT p.stop_order_id FROM protective_stops p WHERE p.strategy = %s AND p.instrument_token = %s "
        "AND p.state = 'active' ORDER BY p.created_at", (order["strategy"], order["instrument_token"])).fetchall()
    if not active:
        return False
    states = tx.load([sid for (sid,) in active])
    for (sid,) in active:
        st = states.get(sid)
        if st is None:
            continue
        if st.status == Status.ALLOWED:  # not taken by the gateway yet: it never will be
            tx.transition(sid, Status.CANCELLED, f"exit {oid} came first", fields={"status_detail": "exit first"})
        elif st.status in (Status.SUBMITTED, Status.OPEN, Status.PARTIALLY_FILLED):
            tx.transition(sid, Status.CANCEL_REQUESTED, f"exit {oid} cancels the protective stop first")
        conn.execute("UPDATE protective_stops SET state = 'cancelling', exit_order_id = %s, updated_at = now() "
                     "WHERE stop_order_id = %s", (oid, sid))
    return True
