"""``broker_placements`` (15_broker.sql): the Zerodha gateway's at-most-once ledger, one row per order.

States: ``queued`` (never sent) -> ``sending`` (written before the call) -> ``placed`` | ``rejected`` |
``uncertain`` (an ambiguous reply: looked up by tag, placed again only after the window) ; ``queued``
again when nothing reached the broker; ``cancelled`` (a cancel request came first); ``dry``.
``broker_requests`` counts the order requests sent, for the pacer of the next run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

OPEN_STATES = ("queued", "sending", "uncertain")


def insert(conn: psycopg.Connection[Any], rows: Sequence[tuple[str, str, str, str, int]]) -> None:
    """New placements ``(order_id, tag, venue, state, attempts)``; an existing one is kept."""
    if rows:
        conn.cursor().executemany(
            "INSERT INTO broker_placements (order_id, tag, venue, state, attempts) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (order_id) DO NOTHING", rows)


def mark_sending(conn: psycopg.Connection[Any], ids: Sequence[str]) -> None:
    if ids:
        conn.execute("UPDATE broker_placements SET state = 'sending', attempts = attempts + 1, updated_at = now() "
                     "WHERE order_id = ANY(%s)", (list(ids),))
        record_requests(conn, "place", len(ids))


def placed(conn: psycopg.Connection[Any], order_id: str, broker_order_id: str) -> None:
    conn.execute("UPDATE broker_placements SET state = 'placed', broker_order_id = %s, last_error = NULL, "
                 "next_try_at = NULL, updated_at = now() WHERE order_id = %s", (broker_order_id, order_id))


def set_state(conn: psycopg.Connection[Any], order_id: str, state: str, error: str | None = None) -> None:
    """``rejected``, ``queued`` or ``cancelled``, with the reason."""
    conn.execute("UPDATE broker_placements SET state = %s, last_error = COALESCE(%s, last_error), "
                 "uncertain_since = CASE WHEN %s = 'queued' THEN NULL ELSE uncertain_since END, updated_at = now() "
                 "WHERE order_id = %s", (state, error[:500] if error else None, state, order_id))


def uncertain(conn: psycopg.Connection[Any], order_id: str, error: str, first_lookup_s: float) -> None:
    conn.execute("UPDATE broker_placements SET state = 'uncertain', last_error = %s, uncertain_since = "
                 "COALESCE(uncertain_since, now()), next_try_at = now() + make_interval(secs => %s), "
                 "updated_at = now() WHERE order_id = %s", (error[:500], first_lookup_s, order_id))


def load_open(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    """``(order_id, state)`` of the open placements, oldest first; a ``sending`` one (a crash mid-call)
    becomes ``uncertain``, due for a lookup now."""
    rows = conn.execute("SELECT order_id, state FROM broker_placements WHERE state = ANY(%s) "
                        "ORDER BY created_at, order_id", (list(OPEN_STATES),)).fetchall()
    conn.execute("UPDATE broker_placements SET state = 'uncertain', uncertain_since = COALESCE(uncertain_since, "
                 "now()), next_try_at = now() WHERE state = 'sending'")
    return [(r[0], r[1]) for r in rows]


def uncertain_due(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM broker_placements WHERE state = 'uncertain' AND next_try_at <= now()"
                       ).fetchone()
    return int(row[0]) if row else 0


def requeue_expired(conn: psycopg.Connection[Any], window_s: float) -> list[tuple[str, int]]:
    """Uncertain placements not found at the broker for ``window_s``: back to ``queued`` (to be placed again,
    same tag); the others due now get their next lookup with backoff (0.5 s doubling per attempt, <= 10 s)."""
    late = [(r[0], int(r[1])) for r in conn.execute(
        "UPDATE broker_placements SET state = 'queued', uncertain_since = NULL, updated_at = now() "
        "WHERE state = 'uncertain' AND next_try_at <= now() AND uncertain_since <= now() - make_interval(secs => %s) "
        "RETURNING order_id, attempts", (window_s,)).fetchall()]
    conn.execute("UPDATE broker_placements SET next_try_at = now() + LEAST(make_interval(secs => 10), "
                 "make_interval(secs => 0.5 * power(2, LEAST(attempts, 5)))) WHERE state = 'uncertain' "
                 "AND next_try_at <= now()")
    return late


def cancel_requests(conn: psycopg.Connection[Any]) -> list[tuple[str, str | None, str]]:
    """``(order_id, broker_order_id, placement state)`` of live orders the OMS has at CANCEL_REQUESTED."""
    return [(r[0], r[1], r[2]) for r in conn.execute(
        "SELECT o.order_id, p.broker_order_id, p.state FROM orders o JOIN broker_placements p USING (order_id) "
        "WHERE o.status = 'CANCEL_REQUESTED' AND p.venue = 'live'").fetchall()]


def record_requests(conn: psycopg.Connection[Any], kind: str, n: int) -> None:
    """Order requests about to be sent (the pacer of the next run counts them)."""
    if n:
        conn.execute("INSERT INTO broker_requests (kind) SELECT %s FROM generate_series(1, %s)", (kind, n))


def request_ages(conn: psycopg.Connection[Any]) -> list[float]:
    """Seconds since each order request of the last day (older than two days are deleted)."""
    conn.execute("DELETE FROM broker_requests WHERE at < now() - interval '2 days'")
    return [float(a) for (a,) in conn.execute(
        "SELECT extract(epoch FROM now() - at) FROM broker_requests WHERE at > now() - interval '1 day'")]


def lock_queued(conn: psycopg.Connection[Any], ids: Sequence[str]) -> set[str]:
    """Of ``ids``, the placements still ``queued`` (row-locked until the caller commits)."""
    if not ids:
        return set()
    return {r[0] for r in conn.execute("SELECT order_id FROM broker_placements WHERE order_id = ANY(%s) AND "
                                       "state = 'queued' FOR UPDATE", (list(ids),)).fetchall()}


def queued_ids(conn: psycopg.Connection[Any]) -> list[str]:
    return [r[0] for r in conn.execute("SELECT order_id FROM broker_placements WHERE state = 'queued' "
                                       "ORDER BY created_at, order_id").fetchall()]


def stale_open(conn: psycopg.Connection[Any], since: Any) -> list[tuple[str, str]]:
    """Open placements created before ``since`` (an earlier trading day: Kite's book no longer lists them)."""
    return [(r[0], r[1]) for r in conn.execute(
        "SELECT order_id, state FROM broker_placements WHERE state = ANY(%s) AND created_at < %s",
        (list(OPEN_STATES), since)).fetchall()]
