"""What is in use, read from Postgres: the risk services' view of positions, pending entries and PnL.

Nothing here is kept in memory between batches: ``used`` is read, each batch, from tables Postgres
keeps in step with the rows that define it, by triggers in the same transaction as each write
(13_risk.sql): ``positions`` from ``fills``, ``risk_pending`` (entries on their way) and
``risk_order_counts`` (allowed orders per second/minute/IST day of signal_ts) from ``orders``. So a
restart can never reset it, it cannot drift from what the OMS recorded whichever stage wrote it, and
reading it costs the same on the first order of the day and the five-thousandth. Exposure is
notional: an open position at its average cost (``positions.avg_price``), a pending entry at the price it was sized at.

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


def _positions_q(tokens: Sequence[int] | None) -> tuple[str, tuple[Any, ...]]:
    sql = ("SELECT strategy, instrument_token, net_qty, avg_price FROM positions "
           "WHERE net_qty <> 0")  # positions: a table kept from fills by a trigger (13_risk.sql)
    if tokens is None:
        return sql, ()
    return sql + " AND instrument_token = ANY(%s)", (list(tokens),)


def _positions(rows: Sequence[Sequence[Any]]) -> dict[tuple[str, int], tuple[int, float]]:
    out: dict[tuple[str, int], tuple[int, float]] = {}
    for strat, tok, net, avg in rows:  # avg_price: the open quantity's average cost (14_paper.sql)
        out[(strat or "", int(tok))] = (int(net), float(avg))
    return out


def open_positions(conn: psycopg.Connection[Any], tokens: Sequence[int] | None = None
                   ) -> dict[tuple[str, int], tuple[int, float]]:
    """(strategy, token) -> (net qty, average entry price) of every open position."""
    return _positions(conn.execute(*_positions_q(tokens)).fetchall())


def _pending_q(include_sized: bool, tokens: Sequence[int] | None) -> tuple[str, tuple[Any, ...]]:
    q, n = ("pending_qty + sized_qty", "pending_notional + sized_notional") if include_sized else \
        ("pending_qty", "pending_notional")
    sql = f"SELECT strategy, instrument_token, {q}, {n} FROM risk_pending WHERE {q} > 0"
    if tokens is None:
        return sql, ()
    return sql + " AND instrument_token = ANY(%s)", (list(tokens),)


def pending_entries(conn: psycopg.Connection[Any], include_sized: bool = False,
                    tokens: Sequence[int] | None = None) -> list[tuple[str, int, int, float]]:
    """(strategy, token, unfilled qty, notional at the sized entry price) of entries on their way (ALLOWED ..
    CANCEL_REQUESTED; with ``include_sized`` also SIZED), from ``risk_pending`` (kept by a trigger on orders)."""
    rows = conn.execute(*_pending_q(include_sized, tokens)).fetchall()
    return [(st, int(t), int(qty), float(nv)) for st, t, qty, nv in rows]


def _closes_q(pairs: Sequence[tuple[int, int]], max_age_ms: int | None) -> tuple[str, tuple[Any, ...]]:
    age = _dt(0) if max_age_ms is None else None
    return ("SELECT w.t, w.at, b.close FROM unnest(%s::bigint[], %s::timestamptz[]) AS w(t, at), "
            "LATERAL (SELECT close FROM bars_1s WHERE instrument_token = w.t AND ts < w.at "
            "AND ts >= COALESCE(%s::timestamptz, w.at - make_interval(secs => %s)) ORDER BY ts DESC LIMIT 1) b",
            ([t for t, _ in pairs], [_dt(a) for _, a in pairs], age, (max_age_ms or 0) / 1000))


def _closes(rows: Sequence[Sequence[Any]]) -> dict[tuple[int, int], float]:
    return {(int(t), _ms(at)): float(c) for t, at, c in rows}


def latest_closes(conn: psycopg.Connection[Any], wants: Sequence[tuple[int, int]],
                  max_age_ms: int | None = None) -> dict[tuple[int, int], float]:
    """(token, at_ms) -> close of the token's latest 1 s bar with ``ts <= at_ms`` (not older than
    ``max_age_ms``), for every pair in one query."""
    pairs = sorted(set(wants))
    if not pairs:
        return {}
    return _closes(conn.execute(*_closes_q(pairs, max_age_ms)).fetchall())


def _by_instrument(positions: dict[tuple[str, int], tuple[int, float]],
                   pending: Sequence[Sequence[Any]]) -> dict[int, tuple[int, float]]:
    out: dict[int, tuple[int, float]] = {}
    for (_s, tok), (net, avg) in positions.items():
        q, n = out.get(tok, (0, 0.0))
        out[tok] = (q + abs(net), n + abs(net) * avg)
    for _s, tok, q, notional in pending:
        q0, n0 = out.get(int(tok), (0, 0.0))
        out[int(tok)] = (q0 + int(q), n0 + float(notional))
    return out


def instrument_exposure(conn: psycopg.Connection[Any], tokens: Sequence[int]) -> dict[int, tuple[int, float]]:
    """token -> (|qty|, notional) held or pending (SIZED included) on it across strategies (the manager's
    position limits)."""
    return _by_instrument(open_positions(conn, tokens), pending_entries(conn, include_sized=True, tokens=tokens))


Closes = dict[tuple[int, int], float]
Held = dict[int, tuple[int, float]]
ExitRoom = dict[tuple[str, int, str], tuple[int, int]]
#: An exit still able to trade (the predicate of the partial index orders_open_exits_idx, 13_risk.sql).
_OPEN_EXIT = ("o.status IN ('SIZED', 'ALLOWED', 'SUBMITTED', 'OPEN', 'PARTIALLY_FILLED', 'CANCEL_REQUESTED') "
              "AND COALESCE(o.extra->>'intent', 'entry') <> 'entry' AND o.qty IS NOT NULL")


def sizing_reads(conn: psycopg.Connection[Any], wants: Sequence[tuple[int, int]], max_age_ms: int | None,
                 tokens: Sequence[int], exit_keys: Sequence[tuple[str, int, str]] = ()
                 ) -> tuple[Closes, Held, ExitRoom]:
    """:func:`latest_closes`, :func:`instrument_exposure` and, per (strategy, token, side) of an exit, (the
    strategy's net filled position, the unfilled qty of its exits on that side still able to trade), in
    one pipeline (one round trip)."""
    pairs = sorted(set(wants))
    keys = sorted(set(exit_keys))
    with conn.pipeline():
        c_close = conn.execute(*_closes_q(pairs, max_age_ms)) if pairs else None
        c_pos = conn.execute(*_positions_q(tokens)) if tokens else None
        c_pend = conn.execute(*_pending_q(True, tokens)) if tokens else None
        c_exit = conn.execute(
            "SELECT k.s, k.t, k.side, COALESCE(p.net_qty, 0), COALESCE((SELECT sum(o.qty - o.filled_qty) "
            "FROM orders o WHERE o.strategy = k.s AND o.instrument_token = k.t AND o.side = k.side "
            f"AND {_OPEN_EXIT}), 0) "
            "FROM unnest(%s::text[], %s::bigint[], %s::text[]) AS k(s, t, side) "
            "LEFT JOIN positions p ON p.strategy = k.s AND p.instrument_token = k.t",
            ([s_ for s_, _, _ in keys], [t for _, t, _ in keys], [sd for _, _, sd in keys])) if keys else None
    closes = _closes(c_close.fetchall()) if c_close is not None else {}
    held = _by_instrument(_positions(c_pos.fetchall()), c_pend.fetchall()) if c_pos is not None and \
        c_pend is not None else {}
    exits = {(st, int(t), sd): (int(net), int(q)) for st, t, sd, net, q in c_exit.fetchall()} \
        if c_exit is not None else {}
    return closes, held, exits


_KILL = "SELECT active, reason FROM risk_kill_switch WHERE id"


def kill_switch(conn: psycopg.Connection[Any]) -> tuple[bool, str | None]:
    row = conn.execute(_KILL).fetchone()
    return (bool(row[0]), row[1]) if row else (False, None)


def _day_pnl_q(day_ordinal: int, mark_at_ms: int) -> tuple[str, tuple[Any, ...]]:
    start = ist_midnight_ms(date.fromordinal(day_ordinal))
    return ("WITH f AS (SELECT instrument_token AS t, COALESCE(sum(qty) FILTER (WHERE side = 'BUY'), 0) AS bq, "
            "COALESCE(sum(qty * price) FILTER (WHERE side = 'BUY'), 0) AS bv, "
            "COALESCE(sum(qty) FILTER (WHERE side = 'SELL'), 0) AS sq, "
            "COALESCE(sum(qty * price) FILTER (WHERE side = 'SELL'), 0) AS sv "
            "FROM fills WHERE ts >= %s AND ts < %s GROUP BY strategy, instrument_token) "
            "SELECT f.bq, f.bv, f.sq, f.sv, m.close FROM f LEFT JOIN LATERAL (SELECT close FROM bars_1s "
            "WHERE instrument_token = f.t AND ts <= %s ORDER BY ts DESC LIMIT 1) m ON true",
            (_dt(start), _dt(start + DAY_MS), _dt(mark_at_ms)))


def day_pnl_of(rows: Sequence[Sequence[Any]]) -> float:
    """The day's PnL from per-(strategy, token) rows (bought qty, bought value, sold qty, sold value, mark)."""
    total = 0.0
    for bq, bv, sq, sv, mark in rows:
        ab = bv / bq if bq else 0.0
        asl = sv / sq if sq else 0.0
        matched = min(bq, sq)
        if matched:
            total += matched * (asl - ab)
        net = bq - sq
        if net > 0 and mark is not None:
            total += net * (mark - ab)
        elif net < 0 and mark is not None:
            total += -net * (asl - mark)
    return float(total)


def day_pnl(conn: psycopg.Connection[Any], day_ordinal: int, mark_at_ms: int) -> float:
    """PnL of one IST day: realised from its fills, the rest marked to the latest 1 s bar at ``mark_at_ms``."""
    return day_pnl_of(conn.execute(*_day_pnl_q(day_ordinal, mark_at_ms)).fetchall())


_WINDOWS = {"s": "second", "m": "minute", "d": "day"}


def _counts_q(signal_ts: Sequence[int]) -> tuple[str, tuple[Any, ...]]:
    secs = sorted({ts // 1000 for ts in signal_ts})
    mins = sorted({ts // 60_000 for ts in signal_ts})
    days = sorted({ist_date(ts).toordinal() for ts in signal_ts})
    return ("SELECT strategy, win, key, n FROM risk_order_counts WHERE (win = 's' AND key = ANY(%s)) "
            "OR (win = 'm' AND key = ANY(%s)) OR (win = 'd' AND key = ANY(%s))", (secs, mins, days))


def _counts(rows: Sequence[Sequence[Any]]) -> dict[tuple[str, str, int], int]:
    out: dict[tuple[str, str, int], int] = {}
    for strat, win, key, n in rows:
        for who in (strat, ACCOUNT):
            k = (who, _WINDOWS[win], int(key))
            out[k] = out.get(k, 0) + int(n)
    return out


def order_counts(conn: psycopg.Connection[Any], signal_ts: Sequence[int]) -> dict[tuple[str, str, int], int]:
    """Allowed orders per (strategy or ACCOUNT, window, key) for the windows of these signal times, from
    ``risk_order_counts`` (kept by a trigger on orders)."""
    return _counts(conn.execute(*_counts_q(signal_ts)).fetchall())


def load_book(conn: psycopg.Connection[Any], orders: Sequence[dict[str, Any]], lock_key: int | None = None) -> Book:
    """The :class:`Book` a batch of sized orders is decided against (they are SIZED: in no pending total,
    no count, until the guard decides them).

    Every read goes out in one pipeline (a single round trip to Postgres), after ``pg_advisory_xact_lock
    (lock_key)`` when given (guards deciding against the same books take turns).
    """
    stamps = [int(o["signal_ts"]) for o in orders]
    days = sorted({ist_date(ts).toordinal() for ts in stamps})
    with conn.pipeline():
        if lock_key is not None:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key,))
        c_kill = conn.execute(_KILL)
        c_pos = conn.execute(*_positions_q(None))
        c_pend = conn.execute(*_pending_q(False, None))
        c_days = [(d, conn.execute(*_day_pnl_q(d, max(ts for ts in stamps if ist_date(ts).toordinal() == d))))
                  for d in days]
        c_cnt = conn.execute(*_counts_q(stamps)) if stamps else None
    row = c_kill.fetchone()
    book = Book(kill=bool(row[0]) if row else False, kill_reason=row[1] if row else None)
    for (strat, tok), (net, avg) in _positions(c_pos.fetchall()).items():
        book.used_by_strategy[strat] = book.used_by_strategy.get(strat, 0.0) + abs(net) * avg
        book.open_keys.add((strat, tok))
    for strat, tok, _q, notional in c_pend.fetchall():
        book.used_by_strategy[strat] = book.used_by_strategy.get(strat, 0.0) + float(notional)
        book.pending_by_strategy[strat] = book.pending_by_strategy.get(strat, 0.0) + float(notional)
        book.open_keys.add((strat, int(tok)))
    for d, c in c_days:
        book.day_pnl[d] = day_pnl_of(c.fetchall())
    if c_cnt is not None:
        book.counts.update(_counts(c_cnt.fetchall()))
    return book
