"""``--fills-from-db``: what a recorded session (paper, dry or live) did with each order, as the fill model.

For every order the session's runner decided in the date range: its fills from the ``fills`` table
(time, side, quantity, price, in time order) and its final OMS status. The replay applies a fill
before the first bar of its instrument that closes after the fill's time, which is when the live
runner saw it, and an order that ended without fills (rejected by risk or the budget guard,
cancelled, expired) is reported to the engine at that instrument's next bar, as live. With the
same bars, registry and risk config, the engine then decides the same orders as the session did.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from backtest.data import ist_range_ms
from backtest.replay import Recorded


def load_recorded(dsn: str, start: date, end: date) -> dict[str, Recorded]:
    from core.db import connect  # noqa: PLC0415

    lo, hi = ist_range_ms(start, end)
    with connect(dsn) as conn:
        orders = conn.execute(
            "SELECT order_id, status FROM orders WHERE signal_ts >= to_timestamp(%s / 1000.0) "
            "AND signal_ts < to_timestamp(%s / 1000.0)", (lo, hi)).fetchall()
        fills = conn.execute(
            "SELECT f.order_id, (extract(epoch FROM f.ts) * 1000)::bigint, f.side, f.qty, f.price FROM fills f "
            "JOIN orders o USING (order_id) WHERE o.signal_ts >= to_timestamp(%s / 1000.0) "
            "AND o.signal_ts < to_timestamp(%s / 1000.0) ORDER BY f.ts, f.fill_id", (lo, hi)).fetchall()
    by_order: dict[str, list[tuple[int, str, int, float]]] = {}
    for oid, ts, side, qty, price in fills:
        by_order.setdefault(str(oid), []).append((int(ts), str(side), int(qty), float(price)))
    out: dict[str, Recorded] = {}
    for oid, status in orders:
        out[str(oid)] = Recorded(tuple(by_order.get(str(oid), ())), str(status))
    return out


def session_orders(dsn: str, start: date, end: date, strategies: set[str]) -> dict[str, tuple[str, int, str]]:
    """order_id -> (side, signal_ts ms, strategy) of the session's orders of ``strategies`` in the range."""
    from core.db import connect  # noqa: PLC0415

    lo, hi = ist_range_ms(start, end)
    with connect(dsn) as conn:
        rows = conn.execute(
            "SELECT order_id, side, (extract(epoch FROM signal_ts) * 1000)::bigint, strategy FROM orders "
            "WHERE signal_ts >= to_timestamp(%s / 1000.0) AND signal_ts < to_timestamp(%s / 1000.0) "
            "AND strategy = ANY(%s)", (lo, hi, sorted(strategies))).fetchall()
    return {str(o): (str(s), int(t), str(st)) for o, s, t, st in rows}


def first_difference(ours: list[dict[str, Any]], theirs: dict[str, tuple[str, int, str]]) -> str | None:
    """The earliest (by signal time) order that one side decided and the other did not, or decided
    differently; None when both decided the same orders (id, side, signal time)."""
    diffs: list[tuple[int, str]] = []
    mine = {o["order_id"]: o for o in ours}
    for oid, o in mine.items():
        t = theirs.get(oid)
        if t is None:
            diffs.append((o["signal_ts"], f"{oid} ({o['strategy']} {o['side']} at {o['signal_ts']}): "
                                          f"the backtest decided it, the session did not"))
        elif (t[0], t[1]) != (o["side"], o["signal_ts"]):
            diffs.append((o["signal_ts"], f"{oid}: backtest {o['side']} at {o['signal_ts']}, "
                                          f"session {t[0]} at {t[1]}"))
    for oid, (side, ts, strat) in theirs.items():
        if oid not in mine:
            diffs.append((ts, f"{oid} ({strat} {side} at {ts}): the session decided it, the backtest did not"))
    return min(diffs)[1] if diffs else None
