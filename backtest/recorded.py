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


def session_orders(dsn: str, start: date, end: date, strategies: set[str]) -> dict[str, tuple[Any, ...]]:
    """order_id -> (side, signal_ts ms, strategy, qty, status) of the session's orders of ``strategies``
    in the range (``qty``: as the risk manager sized it; null for an entry it refused)."""
    from core.db import connect  # noqa: PLC0415

    lo, hi = ist_range_ms(start, end)
    with connect(dsn) as conn:
        rows = conn.execute(
            "SELECT order_id, side, (extract(epoch FROM signal_ts) * 1000)::bigint, strategy, qty, status, risk "
            "FROM orders WHERE signal_ts >= to_timestamp(%s / 1000.0) AND signal_ts < to_timestamp(%s / 1000.0) "
            "AND strategy = ANY(%s)", (lo, hi, sorted(strategies))).fetchall()
    return {str(o): (str(s), int(t), str(st), q, str(status), r or {}) for o, s, t, st, q, status, r in rows}


def differences(ours: list[Any], theirs: dict[str, tuple[Any, ...]]) -> tuple[str | None, str | None, int]:
    """(the earliest order decided differently, the earliest order sized differently, how many were sized
    differently), by signal time; None when they agree.

    An order differs when one side decided it and the other did not, or with another side or signal time:
    that is the decision engine's parity, and it holds whatever the timing of the live stages. Sizing
    differs when our risk sizing gives another quantity (or refusal) than the session's risk manager did:
    equal when the live manager saw what the backtest sees. One live effect can break it: entries of one
    instrument and signal time that compete for its position cap are sized in the order the manager
    receives them, and the ``orders`` topic is keyed by order id, so that order can vary.

    ``ours``: the replay's order rows (``order``, ``qty`` as our sizing gave it, ``sized_status``)."""
    orders: list[tuple[int, str]] = []
    sizes: list[tuple[int, str]] = []
    mine = {r.order["order_id"]: r for r in ours}
    for oid, r in mine.items():
        o = r.order
        t = theirs.get(oid)
        what = f"{oid} ({o['strategy']} {o['side']} {o['extra'].get('intent')} at {o['signal_ts']})"
        if t is None:
            orders.append((o["signal_ts"], f"{what}: the backtest decided it, the session did not"))
            continue
        side, ts, _, qty, status, risk = t
        if (side, ts) != (o["side"], o["signal_ts"]):
            orders.append((o["signal_ts"], f"{what}: the session has {side} at {ts}"))
        elif (status == "REJECTED_RISK") != (r.sized_status == "REJECTED_RISK"):
            sizes.append((o["signal_ts"], f"{what}: risk sizing {r.sized_status or f'qty {r.qty}'} here "
                                          f"({_why(r.risk)}), {status if status == 'REJECTED_RISK' else f'qty {qty}'} "
                                          f"in the session ({_why(risk)})"))
        elif status != "REJECTED_RISK" and qty != r.qty:
            sizes.append((o["signal_ts"], f"{what}: sized qty {r.qty} here, {qty} in the session "
                                          f"(here {_why(r.risk)}; session {_why(risk)})"))
    for oid, (side, ts, strat, *_) in theirs.items():
        if oid not in mine:
            orders.append((ts, f"{oid} ({strat} {side} at {ts}): the session decided it, the backtest did not"))
    return (min(orders)[1] if orders else None, min(sizes)[1] if sizes else None, len(sizes))


def _why(risk: dict[str, Any]) -> str:
    """The sizing facts behind a quantity, from a risk record."""
    keys = ("reason", "detail", "entry_price", "price_source", "stop_loss", "equity", "qty_risk", "caps",
            "position_qty", "position_notional", "exit_available")
    return ", ".join(f"{k} {risk[k]}" for k in keys if k in risk)
