"""What is in use, read from Postgres: the risk services' view of positions, pending entries and PnL.

Nothing here is kept in memory between batches: ``used`` is derived, each batch, from the rows that
define it (``fills`` through the ``positions`` view, and entries still on their way in ``orders``),
so a restart can never reset it and it cannot drift from what the OMS recorded. Exposure is
notional: an open position at its average entry price, a pending entry at the price it was sized at.

Daily PnL (the loss limit) is the IST day of the orders' ``signal_ts``: fills of that day matched
buy against sell (realised), the rest marked to the latest 1 s bar at or before the signal
(unrealised; without a bar, at cost). Positions carried in from earlier days count in the
exposure, not in the day's PnL.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime
from typing import Any

import psycopg

from core.sessions import DAY_MS, ist_date, ist_midnight_ms
from risk.budget import ACCOUNT, Book

#: OMS states of an entry that still holds budget for its unfilled part.
PENDING = ("ALLOWED", "SUBMITTED", "OPEN", "PARTIALLY_FILLED", "CANCEL_REQUESTED")
#: A pending entry also counts while the guard has not decided it yet (SIZED) for the manager's limits.
PENDING_OR_SIZED = ("SIZED", *PENDING)


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def open_positions(conn: psycopg.Connection[Any], tokens: Sequence[int] | None = None
                   ) -> dict[tuple[str, int], tuple[int, float]]:
    """(strategy, token) -> (net qty, average entry price) of every open position."""
    sql = ("SELECT strategy, instrument_token, net_qty, buy_qty, buy_value, sell_qty, sell_value FROM positions "
           "WHERE net_qty <> 0")
    params: tuple[Any, ...] = ()
    if tokens is not None:
        sql += " AND instrument_token = ANY(%s)"
        params = (list(tokens),)
    out: dict[tuple[str, int], tuple[int, float]] = {}
    for strat, tok, net, bq, bv, sq, sv in conn.execute(sql, params).fetchall():
        avg = (bv / bq if bq else 0.0) if net > 0 else (sv / sq if sq else 0.0)
        out[(strat or "", int(tok))] = (int(net), float(avg))
    return out


def pending_entries(conn: psycopg.Connection[Any], statuses: Sequence[str] = PENDING,
                    tokens: Sequence[int] | None = None, exclude: Iterable[str] = ()
                    ) -> list[tuple[str, str, int, int, float]]:
    """(order_id, strategy, token, unfilled qty, sized entry price) of entries still on their way."""
    sql = ("SELECT order_id, strategy, instrument_token, qty - filled_qty, "
           "COALESCE((risk->>'entry_price')::float8, price, (extra->>'ref_price')::float8) "
           "FROM orders WHERE status = ANY(%s) AND COALESCE(extra->>'intent', 'entry') = 'entry' AND qty IS NOT NULL")
    params: list[Any] = [list(statuses)]
    if tokens is not None:
        sql += " AND instrument_token = ANY(%s)"
        params.append(list(tokens))
    skip = set(exclude)
    return [(oid, s, int(t), int(q), float(p or 0.0)) for oid, s, t, q, p in conn.execute(sql, params).fetchall()
            if oid not in skip and q > 0]


def latest_closes(conn: psycopg.Connection[Any], tokens: Sequence[int], at_ms: int,
                  max_age_ms: int | None = None) -> dict[int, float]:
    """token -> close of its latest 1 s bar with ``ts <= at_ms`` (and not older than ``max_age_ms``)."""
    if not tokens:
        return {}
    lo = _dt(at_ms - max_age_ms) if max_age_ms is not None else _dt(0)
    rows = conn.execute(
        "SELECT t, b.close FROM unnest(%s::bigint[]) AS t, LATERAL (SELECT close FROM bars_1s "
        "WHERE instrument_token = t AND ts <= %s AND ts >= %s ORDER BY ts DESC LIMIT 1) b",
        (sorted(set(tokens)), _dt(at_ms), lo)).fetchall()
    return {int(t): float(c) for t, c in rows}


def instrument_exposure(conn: psycopg.Connection[Any], tokens: Sequence[int]) -> dict[int, tuple[int, float]]:
    """token -> (|qty|, notional) held or pending on it across strategies (the manager's position limits)."""
    out: dict[int, tuple[int, float]] = {}
    for (_s, tok), (net, avg) in open_positions(conn, tokens).items():
        q, n = out.get(tok, (0, 0.0))
        out[tok] = (q + abs(net), n + abs(net) * avg)
    for _oid, _s, tok, q, p in pending_entries(conn, PENDING_OR_SIZED, tokens):
        q0, n0 = out.get(tok, (0, 0.0))
        out[tok] = (q0 + q, n0 + q * p)
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
    marks = latest_closes(conn, [int(r[0]) for r in rows], mark_at_ms)
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


def order_counts(conn: psycopg.Connection[Any], signal_ts: Sequence[int], exclude: Iterable[str] = ()
                 ) -> dict[tuple[str, str, int], int]:
    """Allowed orders per (strategy or ACCOUNT, window, key) for the windows of these signal times.

    Two aggregates per IST day touched: per strategy for the day, and per strategy and second over the
    minutes the batch's signals fall in (minute counts are sums of those seconds).
    """
    out: dict[tuple[str, str, int], int] = {}
    skip = list(exclude)

    def add(who: str, window: str, key: int, n: int) -> None:
        for w in (who, ACCOUNT):
            out[(w, window, key)] = out.get((w, window, key), 0) + n

    for d in sorted({ist_date(ts).toordinal() for ts in signal_ts}):
        start = ist_midnight_ms(date.fromordinal(d))
        day = [ts for ts in signal_ts if ist_date(ts).toordinal() == d]
        for strat, n in conn.execute(
                "SELECT strategy, count(*) FROM orders WHERE signal_ts >= %s AND signal_ts < %s "
                "AND budget->>'decision' = 'allowed' AND NOT (order_id = ANY(%s)) GROUP BY strategy",
                (_dt(start), _dt(start + DAY_MS), skip)).fetchall():
            add(strat, "day", d, int(n))
        lo, hi = min(day) // 60_000 * 60_000, (max(day) // 60_000 + 1) * 60_000
        for strat, sec, n in conn.execute(
                "SELECT strategy, floor(extract(epoch FROM signal_ts))::bigint, count(*) FROM orders "
                "WHERE signal_ts >= %s AND signal_ts < %s AND budget->>'decision' = 'allowed' "
                "AND NOT (order_id = ANY(%s)) GROUP BY 1, 2", (_dt(lo), _dt(hi), skip)).fetchall():
            add(strat, "second", int(sec), int(n))
            add(strat, "minute", int(sec) // 60, int(n))
    return out


def load_book(conn: psycopg.Connection[Any], orders: Sequence[dict[str, Any]]) -> Book:
    """The :class:`Book` a batch of sized orders is decided against (those orders themselves excluded)."""
    ids = [o["order_id"] for o in orders]
    kill, reason = kill_switch(conn)
    book = Book(kill=kill, kill_reason=reason)
    for (strat, tok), (net, avg) in open_positions(conn).items():
        book.used_by_strategy[strat] = book.used_by_strategy.get(strat, 0.0) + abs(net) * avg
        book.open_keys.add((strat, tok))
    for _oid, strat, tok, q, p in pending_entries(conn, exclude=ids):
        book.used_by_strategy[strat] = book.used_by_strategy.get(strat, 0.0) + q * p
        book.pending_by_strategy[strat] = book.pending_by_strategy.get(strat, 0.0) + q * p
        book.open_keys.add((strat, tok))
    stamps = [int(o["signal_ts"]) for o in orders]
    if stamps:
        for d in sorted({ist_date(ts).toordinal() for ts in stamps}):
            at = max(ts for ts in stamps if ist_date(ts).toordinal() == d)
            book.day_pnl[d] = day_pnl(conn, d, at)
        book.counts.update(order_counts(conn, stamps, exclude=ids))
    return book
