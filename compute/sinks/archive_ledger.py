"""The ``archived_ranges`` ledger (infra/postgres/init/04_archive.sql): read, record, mark purged.

A row is written only after its object was published and verified, so the
ledger never claims an archive that is not there; a crash before the write
just means the next run archives that partition again (same key).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from datetime import date
from typing import Any

import psycopg

from compute.sinks.archive_plan import ArchiveRecord
from core.db import upsert_sql

TABLE = "archived_ranges"
_COLUMNS = tuple(f.name for f in fields(ArchiveRecord))
_KEY = ("tf", "trading_date", "location")
_WRITE_COLUMNS = ("tf", "trading_date", "location", "object_key", "row_count", "size_bytes", "sha256",
                  "source_table", "source_max_updated_at", "min_ts", "max_ts")
# A re-archive replaces the record and clears any purge mark (it only happens when rows exist).
_RECORD_SQL = (upsert_sql(TABLE, _WRITE_COLUMNS, _KEY)
               + ", archived_at = now(), verified_at = now(), purged_at = NULL, purged_rows = NULL")


def _record(row: Sequence[Any]) -> ArchiveRecord:
    return ArchiveRecord(**dict(zip(_COLUMNS, row, strict=True)))


def get(conn: psycopg.Connection[Any], tf: str, trading_date: date, location: str) -> ArchiveRecord | None:
    """The ledger row of one partition at one location, if any."""
    row = conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM {TABLE} "
                       "WHERE tf = %s AND trading_date = %s AND location = %s",
                       (tf, trading_date, location)).fetchone()
    return _record(row) if row else None


def record(conn: psycopg.Connection[Any], rec: ArchiveRecord) -> None:
    """Insert or replace the ledger row for a freshly verified archive."""
    conn.execute(_RECORD_SQL, tuple(getattr(rec, c) for c in _WRITE_COLUMNS))


def purge_candidates(conn: psycopg.Connection[Any], location: str, tfs: Sequence[str],
                     before: date) -> list[ArchiveRecord]:
    """Unpurged ledger rows at ``location`` for ``tfs`` dated before ``before``, oldest first."""
    rows = conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM {TABLE} WHERE location = %s AND tf = ANY(%s) "
                        "AND trading_date < %s AND purged_at IS NULL ORDER BY trading_date, tf",
                        (location, list(tfs), before)).fetchall()
    return [_record(r) for r in rows]


def mark_purged(conn: psycopg.Connection[Any], rec: ArchiveRecord, rows: int) -> None:
    """Note that retention deleted ``rows`` database rows of this partition."""
    conn.execute(f"UPDATE {TABLE} SET purged_at = now(), purged_rows = %s "
                 "WHERE tf = %s AND trading_date = %s AND location = %s",
                 (rows, rec.tf, rec.trading_date, rec.location))
