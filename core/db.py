"""The one Postgres pool (psycopg 3 + psycopg_pool) and small upsert helpers."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from core.errors import TransientError

log = logging.getLogger(__name__)


def make_pool(dsn: str, min_size: int = 1, max_size: int = 4, name: str = "tradestack",
              wait_timeout: float = 30.0) -> ConnectionPool:
    """Open a pool; waits up to ``wait_timeout`` for the server (raises TransientError)."""
    pool = ConnectionPool(dsn, min_size=min_size, max_size=max_size, name=name, open=False,
                          kwargs={"autocommit": False}, reconnect_timeout=300)
    pool.open(wait=False)
    try:
        pool.wait(timeout=wait_timeout)
    except Exception as exc:  # noqa: BLE001 - psycopg_pool raises PoolTimeout
        pool.close()
        raise TransientError(f"postgres not reachable: {type(exc).__name__}") from None
    return pool


def connect(dsn: str, timeout: float = 30.0, autocommit: bool = False) -> psycopg.Connection[Any]:
    """One connection with retries until ``timeout`` (for CLIs and migrations)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return psycopg.connect(dsn, autocommit=autocommit, connect_timeout=5)
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                raise TransientError(f"postgres not reachable: {str(exc).strip().splitlines()[0]}") from None
            time.sleep(0.3)


@contextmanager
def transaction(pool: ConnectionPool) -> Iterator[psycopg.Connection[Any]]:
    """A pooled connection inside one transaction (commit on success, rollback on error)."""
    with pool.connection() as conn, conn.transaction():
        yield conn


def upsert_sql(table: str, columns: Sequence[str], key: Sequence[str],
               update: Sequence[str] | None = None) -> str:
    """``INSERT ... ON CONFLICT (key) DO UPDATE`` for the given columns (idempotent writes)."""
    cols = ", ".join(columns)
    params = ", ".join(["%s"] * len(columns))
    upd = [c for c in (update if update is not None else columns) if c not in key]
    if upd:
        action = "DO UPDATE SET " + ", ".join(f"{c} = EXCLUDED.{c}" for c in upd)
    else:
        action = "DO NOTHING"
    return f"INSERT INTO {table} ({cols}) VALUES ({params}) ON CONFLICT ({', '.join(key)}) {action}"


def is_transient(exc: BaseException) -> bool:
    """True for connection-level failures worth retrying (server restart, network)."""
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError | TransientError) or (
        type(exc).__name__ in ("PoolTimeout", "PoolClosed"))
