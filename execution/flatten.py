"""The operator's panic button, in every mode (paper, dry, live): stop new entries, cancel, close.

    python -m execution.flatten [--strategy S] [--yes] [--wait-s 30]
    make flatten [STRATEGY=S]

1. turns the kill switch on (new entries are refused by the budget guard; exits still pass). The switch
   is the account's: with ``--strategy`` too, every strategy's entries stop until ``make kill-switch-off``;
2. cancels every open order: one the venue has not taken yet (ALLOWED) is cancelled in the table,
   a working one (SUBMITTED, OPEN, PARTIALLY_FILLED) is set to CANCEL_REQUESTED and its venue (the
   paper gateway, or the Zerodha gateway at the broker) cancels it; waits up to ``--wait-s`` for them;
3. exits every open position through the normal path: a MARKET exit per strategy and instrument
   (intent ``flatten``, the position's quantity) goes on ``orders`` to the risk manager, the guard
   (exits pass the kill switch) and the venue. A position with a protective stop at the broker has
   the stop cancelled first by the gateway.

It prints what it did. Without ``--yes`` it asks for confirmation (and refuses, exit 2, when there is
no terminal to ask). Turn entries back on afterwards with ``make kill-switch-off``.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from typing import Any

import orjson
import psycopg

from core import bus
from core.settings import load_settings
from core.topics import ORDER_UPDATES, ORDERS
from execution.oms import OmsTx, Status
from risk.kill_switch import set_switch

WORKING = ("SUBMITTED", "OPEN", "PARTIALLY_FILLED")


def cancel_open(conn: psycopg.Connection[Any], strategy: str | None, now_ms: int
                ) -> tuple[int, int, list[dict[str, Any]]]:
    """(cancelled in the table, cancel requested from the venue, the OrderUpdates to publish)."""
    where = "status = ANY(%s)" + (" AND strategy = %s" if strategy else "")
    params: tuple[Any, ...] = (["ALLOWED", *WORKING],) + ((strategy,) if strategy else ())
    ids = [r[0] for r in conn.execute(f"SELECT order_id FROM orders WHERE {where} ORDER BY order_id", params)]
    tx = OmsTx(conn, "flatten", now_ms)
    states = tx.load(ids)  # locked: decided on the state a venue can no longer change under us
    direct = requested = 0
    for oid, st in states.items():
        if st.status == Status.ALLOWED:
            tx.transition(oid, Status.CANCELLED, "flatten: cancelled before the venue took it",
                          fields={"status_detail": "flatten"})
            direct += 1
        elif st.status.value in WORKING:
            tx.transition(oid, Status.CANCEL_REQUESTED, "flatten")
            requested += 1
    return direct, requested, tx.finish()


def open_positions(conn: psycopg.Connection[Any], strategy: str | None) -> list[dict[str, Any]]:
    """Open positions with what an exit order needs (symbol, exchange, product, tf from their last order)."""
    sql = ("SELECT p.strategy, p.instrument_token, p.net_qty, o.symbol, o.exchange, o.product, o.tf "
           "FROM positions p JOIN LATERAL (SELECT symbol, exchange, product, tf FROM orders x WHERE x.strategy = "
           "p.strategy AND x.instrument_token = p.instrument_token ORDER BY x.created_ts DESC LIMIT 1) o ON true "
           "WHERE p.net_qty <> 0" + (" AND p.strategy = %s" if strategy else "") + " ORDER BY 1, 2")
    rows = conn.execute(sql, (strategy,) if strategy else ()).fetchall()
    return [{"strategy": s, "instrument_token": int(t), "net_qty": int(n), "symbol": sym, "exchange": ex,
             "product": prod, "tf": tf or ""} for s, t, n, sym, ex, prod, tf in rows]


def exit_order(pos: dict[str, Any], now_ms: int) -> dict[str, Any]:
    side = "SELL" if pos["net_qty"] > 0 else "BUY"
    key = f"{pos['strategy']}|{pos['instrument_token']}|{side}|flatten|{now_ms}".encode()
    oid = hashlib.blake2b(key, digest_size=10).hexdigest()  # 20 hex chars: also a valid Kite tag
    return {"order_id": oid, "strategy": pos["strategy"], "instrument_token": pos["instrument_token"],
            "symbol": pos["symbol"], "exchange": pos["exchange"], "side": side, "order_type": "MARKET",
            "product": pos["product"], "price": None, "trigger_price": None, "stop_loss": None,
            "qty": abs(pos["net_qty"]), "tf": pos["tf"], "signal_ts": now_ms, "created_ts": now_ms,
            "extra": {"intent": "flatten", "reason": "operator flatten"}}


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    ap = argparse.ArgumentParser(prog="python -m execution.flatten", description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--strategy", help="only this strategy's orders and positions (default: all)")
    ap.add_argument("--yes", action="store_true", help="do it without asking")
    ap.add_argument("--wait-s", type=float, default=30.0, help="how long to wait for the cancels (default 30)")
    args = ap.parse_args(argv)
    scope = f"strategy {args.strategy}" if args.strategy else "every strategy"
    if not args.yes:
        if not sys.stdin.isatty():
            print("error: refusing to flatten without --yes (no terminal to confirm on)", file=sys.stderr)
            return 2
        if input(f"Kill switch on, cancel every open order and exit every position of {scope}? [yes/N] ") != "yes":
            print("nothing done")
            return 1
    settings = load_settings()
    now_ms = int(time.time() * 1000)
    with psycopg.connect(settings.dsn) as conn:
        set_switch(conn, True, f"flatten ({scope})", "flatten")
        conn.commit()
        print(f"kill switch ON: new entries are refused ({scope} flattening)")
        direct, requested, updates = cancel_open(conn, args.strategy, now_ms)
        conn.commit()
        producer = bus.Producer(settings.kafka_bootstrap_servers, **{"client.id": "flatten"})
        for u in updates:
            producer.produce(ORDER_UPDATES, orjson.dumps(u), u["order_id"].encode())
        producer.flush(30)
        print(f"orders cancelled before any venue took them: {direct}; cancels requested from the venue: {requested}")
        left = _wait_cancels(conn, args.strategy, args.wait_s)
        if left:
            print(f"WARNING: {left} cancel(s) still pending after {args.wait_s:g}s (the venue is down or slow); "
                  "exits are sent anyway and the risk manager caps them at what is held")
        positions = open_positions(conn, args.strategy)
        orders = [exit_order(p, now_ms) for p in positions]
        if orders:
            tx = OmsTx(conn, "flatten", now_ms)
            tx.ensure(orders, Status.NEW)
            created = tx.finish()
            conn.commit()
            for o in orders:
                producer.produce(ORDERS, orjson.dumps(o), o["order_id"].encode())
            for u in created:
                producer.produce(ORDER_UPDATES, orjson.dumps(u), u["order_id"].encode())
            producer.flush(30)
    for o, p in zip(orders, positions, strict=True):
        print(f"exit {o['side']} {o['qty']} {o['exchange']}:{o['symbol']} for {o['strategy']} "
              f"(position {p['net_qty']:+d}) order_id={o['order_id']}")
    print(f"exits sent: {len(orders)}; follow them with `make status` / the orders table; "
          "`make kill-switch-off` allows entries again")
    return 0


def _wait_cancels(conn: psycopg.Connection[Any], strategy: str | None, wait_s: float) -> int:
    deadline = time.monotonic() + wait_s
    sql = "SELECT count(*) FROM orders WHERE status = 'CANCEL_REQUESTED'" + (" AND strategy = %s" if strategy else "")
    while True:
        row = conn.execute(sql, (strategy,) if strategy else ()).fetchone()
        conn.rollback()
        left = int(row[0]) if row else 0
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main())
