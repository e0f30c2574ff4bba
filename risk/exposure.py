"""What is in use, read from Postgres: the risk services' view of positions, pending entries and PnL.

Nothing here is kept in memory between batches: ``used`` is read, each batch, from tables Postgres
keeps in step with the rows that define it, by triggers in the same transaction as each write
(13_risk.sql): ``positions`` from ``fills``, ``risk_pending`` (entries on their way) and
``risk_order_counts`` (allowed orders per second/minute/IST day of signal_ts) from ``orders``. So a
restart can never reset it, it cannot drift from what the OMS recorded whichever stage wrote it, and
reading it costs the same on the first order of the day and the five-thousandth. Exposure is
notional: an open position at its average entry price, a pending entry at the price it was sized at.

Daily PnL (the loss limit) is the IST day of the orders' ``signal_ts``: fills of that day matched
buy against sell (realised), the rest marked to the latest 1 s bar at or before the signal
(unrealised; without a bar, at cost). Positions carried in from earlier days count in the
exposure, not in the day's PnL.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

import psycopg

from core.sessions import DAY_MS, ist_date, ist_midnight_ms
from risk.budget import ACCOUNT, Book

#: OMS states of an entry that still holds budget for its unfilled part (risk_pending's trigger uses the same).
PENDING = ("ALLOWED", "SUBMITTED", "OPEN", "PARTIALLY_FILLED", "CANCEL_REQUESTED")


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _ms(dt: datetime) -> int:
    return round(dt.timestamp() * 1000)


def open_positions(conn: psycopg.Connection[Any], tokens: Sequence[int] | None = None
                   ) -> dict[tuple[str, int], tuple[int, float]]:
    """(strategy, token) -> (net qty, average entry price) of every open position."""
    sql = ("SELECT strategy, instrument_token, net_qty, buy_qty, buy_value, sell_qty, sell_value FROM positions "
           "WHERE net_qty <> 0")  # positions: a table kept from fills by a trigger (13_risk.sql)
    params: tuple[Any, ...] = ()
    if tokens is not None:
        sql += " AND instrument_token = ANY(%s)"
        params = (list(tokens),)
    out: dict[tuple[str, int], tuple[int, float]] = {}
    for strat, tok, net, bq, bv, sq, sv in conn.execute(sql, params).fetchall():
        avg = (bv / bq if bq else 0.0) if net > 0 else (sv / sq if sq else 0.0)
        out[(strat or "", int(tok))] = (int(net), float(avg))
    return out


def pending_entries(conn: psycopg.Connection[Any], include_sized: bool = False,
                    tokens: Sequence[int] | None = None) -> list[tuple[str, int, int, float]]:
    """(strategy, token, unfilled qty, notional at the sized entry price) of entries on their way (ALLOWED ..
    CANCEL_REQUESTED; with ``include_sized`` also SIZED), from ``risk_pending`` (kept by a trigger on orders)."""
    q, n = ("pending_qty + sized_qty", "pending_notional + sized_notional") if include_sized else \
        ("pending_qty", "pending_notional")
    sql = f"SELECT strategy, instrument_token, {q}, {n} FROM risk_pending WHERE {q} > 0"
    params: list[Any] = []
    if tokens is not None:
        sql += " AND instrument_token = ANY(%s)"
        params.append(list(tokens))
    return [(s, int(t), int(qty), float(nv)) for s, t, qty, nv in conn.execute(sql, params).fetchall()]


def latest_closes(conn: psycopg.Connection[Any], wants: Sequence[tuple[int, int]],
                  max_age_ms: int | None = None) -> dict[tuple[int, int], float]:
    """(token, at_ms) -> close of the token's latest 1 s bar with ``ts <= at_ms`` (not older than
    ``max_age_ms``), for every pair in one query."""
    pairs = sorted(set(wants))
    if not pairs:
        return {}
    age = _dt(0) if max_age_ms is None else None
    rows = conn.execute(
        "SELECT w.t, w.at, b.close FROM unnest(%s::bigint[], %s::timestamptz[]) AS w(t, at), "
        "LATERAL (SELECT close FROM bars_1s WHERE instrument_token = w.t AND ts <= w.at "
        "AND ts >= COALESCE(%s::timestamptz, w.at - make_interval(secs => %s)) ORDER BY ts DESC LIMIT 1) b",
        ([t for t, _ in pairs], [_dt(a) for _, a in pairs], age,
         (max_age_ms or 0) / 1000)).fetchall()
    return {(int(t), _ms(at)): float(c) for t, at, c in rows}


def instrument_exposure(conn: psycopg.Connection[Any], tokens: Sequence[int]) -> dict[int, tuple[int, float]]:
    """token -> (|qty|, notional) held or pending on it across strategies (the manager's position limits)."""
    out: dict[int, tuple[int, float]] = {}
    for (_s, tok), (net, avg) in open_positions(conn, tokens).items():
        q, n = out.get(tok, (0, 0.0))
        out[tok] = (q + abs(net), n + abs(net) * avg)
    for _s, tok, q, notional in pending_entries(conn, include_sized=True, tokens=tokens):
        q0, n0 = out.get(tok, (0, 0.0))
        out[tok] = (q0 + q, n0 + notional)
    return out


def kill_switch(conn: psycopg.Connection[Any]) -> tuple[bool, str | None]:
    row = conn.execute("SELECT active, reason FROM risk_kill_switch WHERE id").fetchone()
    return (bool(row[0]), row[1]) if row else (False, None)


def day_pnl(conn: psycopg.Connection[Any], day_ordinal: int, mark_at_ms: int) -> float:
    """PnL of one IST day: realised from its fills, the rest marked to the latest 1 s bar at ``mark_at_ms``."""
    start = ist_midnight_ms(date.fromordinal(day_ordinal))
    rows = conn.execute(
        "SELECT instrument_token, COALESCE(sum(qty) FILTER (WHERE side = 'BUY'), 0), "
        "COALESCE(sum(qty * price) FILTER (WHERE side = 'BUY'), 0), "
        "COALESCE(sum(qty) FILTER (WHERE side = 'SELL'), 0), "
        "COALESCE(sum(qty * price) FILTER (WHERE side = 'SELL'), 0) "
        "FROM fills WHERE ts >= %s AND ts < %s GROUP BY strategy, instrument_token",
        (_dt(start), _dt(start + DAY_MS))).fetchall()
    if not rows:
        return 0.0
    marks = {t: c for (t, _), c in latest_closes(conn, [(int(r[0]), mark_at_ms) for r in rows]).items()}
    total = 0.0
    for tok, bq, bv, sq, sv in rows:
        ab = bv / bq if bq else 0.0
        asl = sv / sq if sq else 0.0
        matched = min(bq, sq)
        if matched:
            total += matched * (asl - ab)
        net = bq - sq
        mark = marks.get(int(tok))
        if net > 0 and mark is not None:
            total += net * (mark - ab)
        elif net < 0 and mark is not None:
            total += -net * (asl - mark)
    return float(total)


def order_counts(conn: psycopg.Connection[Any], signal_ts: Sequence[int]) -> dict[tuple[str, str, int], int]:
    """Allowed orders per (strategy or ACCOUNT, window, key) for the windows of these signal times, from
    ``risk_order_counts`` (kept by a trigger on orders)."""
    secs = sorted({ts // 1000 for ts in signal_ts})
    mins = sorted({ts // 60_000 for ts in signal_ts})
    days = sorted({ist_date(ts).toordinal() for ts in signal_ts})
    out: dict[tuple[str, str, int], int] = {}
    names = {"s": "second", "m": "minute", "d": "day"}
    for strat, win, key, n in conn.execute(
            "SELECT strategy, win, key, n FROM risk_order_counts WHERE (win = 's' AND key = ANY(%s)) "
            "OR (win = 'm' AND key = ANY(%s)) OR (win = 'd' AND key = ANY(%s))", (secs, mins, days)).fetchall():
        for who in (strat, ACCOUNT):
            k = (who, names[win], int(key))
            out[k] = out.get(k, 0) + int(n)
    return out


def load_book(conn: psycopg.Connection[Any], orders: Sequence[dict[str, Any]]) -> Book:
    """The :class:`Book` a batch of sized orders is decided against (they are SIZED: in no pending total,
    no count, until the guard decides them)."""
    kill, reason = kill_switch(conn)
    book = Book(kill=kill, kill_reason=reason)
    for (strat, tok), (net, avg) in open_positions(conn).items():
        book.used_by_strategy[strat] = book.used_by_strategy.get(strat, 0.0) + abs(net) * avg
        book.open_keys.add((strat, tok))
    for strat, tok, _q, notional in pending_entries(conn):
        book.used_by_strategy[strat] = book.used_by_strategy.get(strat, 0.0) + notional
        book.pending_by_strategy[strat] = book.pending_by_strategy.get(strat, 0.0) + notional
        book.open_keys.add((strat, tok))
    stamps = [int(o["signal_ts"]) for o in orders]
    if stamps:
        for d in sorted({ist_date(ts).toordinal() for ts in stamps}):
            at = max(ts for ts in stamps if ist_date(ts).toordinal() == d)
            book.day_pnl[d] = day_pnl(conn, d, at)
        book.counts.update(order_counts(conn, stamps))
    return book
