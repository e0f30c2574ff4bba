"""A transactional outbox in Postgres (table ``outbox``): messages written with the decision, sent after it.

A service writes the messages of a decision (fills, order updates) in the same transaction as the
decision (:func:`put`); after the commit it produces them, flushes, and deletes them (:func:`pending`,
:func:`done`). A crash between the commit and the delete sends them again at the next start:
consumers dedupe by natural key (fill_id, order_id + status), so that is harmless, and nothing
decided is ever left unsent.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import psycopg


def put(conn: psycopg.Connection[Any], source: str, msgs: Iterable[tuple[str, bytes | None, bytes]]) -> list[int]:
    """Queue ``(topic, key, value)`` messages in the caller's transaction; their ids."""
    rows = [(source, t, k, v) for t, k, v in msgs]
    if not rows:
        return []
    ids: list[int] = []
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO outbox (source, topic, key, value) VALUES (%s, %s, %s, %s) RETURNING id", rows,
                        returning=True)
        for _ in cur.results():
            r = cur.fetchone()
            if r is not None:
                ids.append(int(r[0]))
    return ids


def pending(conn: psycopg.Connection[Any], source: str, limit: int = 10_000
            ) -> list[tuple[int, str, bytes | None, bytes]]:
    """What ``source`` queued and has not sent, oldest first."""
    rows = conn.execute("SELECT id, topic, key, value FROM outbox WHERE source = %s ORDER BY id LIMIT %s",
                        (source, limit)).fetchall()
    return [(int(i), t, bytes(k) if k is not None else None, bytes(v)) for i, t, k, v in rows]


def done(conn: psycopg.Connection[Any], ids: Sequence[int]) -> None:
    if ids:
        conn.execute("DELETE FROM outbox WHERE id = ANY(%s)", (list(ids),))


def send(pool: Any, producer: Any, source: str, limit: int = 10_000) -> int:
    """Produce what ``source`` queued, flush, delete it; returns how many (raises on a broker or database
    failure: nothing is deleted before the flush, so what failed is sent at the next call)."""
    total = 0
    while True:
        with pool.connection() as conn, conn.transaction():
            rows = pending(conn, source, limit)
        if not rows:
            return total
        for _id, topic, key, value in rows:
            producer.produce(topic, value, key)
        producer.flush(30)
        with pool.connection() as conn, conn.transaction():
            done(conn, [r[0] for r in rows])
        total += len(rows)
        if len(rows) < limit:
            return total
