"""Postgres side of the archiver: describe a table, fingerprint, export to parquet, delete.

Any table with a time column can be archived; the parquet schema follows the
table's own columns (all of them, in table order), so the archive reads back
as exactly the database rows. Types map as follows (``pg_type`` is kept in
each field's metadata):

==========================  ===================================
Postgres                    Arrow / parquet
==========================  ===================================
bigint, integer, smallint   int64, int32, int16
double precision, real      float64, float32
boolean                     bool
timestamptz                 timestamp[us, UTC]
timestamp                   timestamp[us]
date                        date32
text, varchar, char         string
anything else (numeric,     string (the value's text form)
jsonb, uuid, ...)
==========================  ===================================

The partition's time column is either ``timestamptz`` or a bigint of epoch
milliseconds (the event contract's tick timestamps). Rows are written sorted
by the primary key (else by the time column and then every column), in fixed
size row groups, so the same rows always produce the same bytes with the same
pyarrow version.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
from psycopg import sql

from compute.sinks.archive_plan import ArchiveError, DayWindow, SourceState
from compute.sinks.archive_store import sha256_file
from core.errors import ConfigError

BATCH_ROWS = 262_144  # rows per fetch and per parquet row group
COMPRESSION = "zstd"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_EPOCH_US = "(extract(epoch from {col}) * 1000000)::bigint"
_TYPES: dict[str, tuple[pa.DataType, str]] = {
    # udt_name -> (arrow type, select expression template)
    "int8": (pa.int64(), "{col}"),
    "int4": (pa.int32(), "{col}"),
    "int2": (pa.int16(), "{col}"),
    "float8": (pa.float64(), "{col}"),
    "float4": (pa.float32(), "{col}"),
    "bool": (pa.bool_(), "{col}"),
    "timestamptz": (pa.timestamp("us", tz="UTC"), _EPOCH_US),
    "timestamp": (pa.timestamp("us"), _EPOCH_US),
    "date": (pa.date32(), "({col} - date '1970-01-01')"),
    "text": (pa.string(), "{col}"),
    "varchar": (pa.string(), "{col}"),
    "bpchar": (pa.string(), "{col}"),
}
# Timestamps and dates travel as integers (microseconds / days): exact and fast.
_INT_CARRIED = {"timestamptz": pa.int64(), "timestamp": pa.int64(), "date": pa.int32()}


@dataclass(frozen=True, slots=True)
class Column:
    """One table column and how it is selected and typed in parquet."""

    name: str
    pg_type: str

    @property
    def arrow_type(self) -> pa.DataType:
        return _TYPES.get(self.pg_type, (pa.string(), ""))[0]

    def select_expr(self) -> sql.Composable:
        template = _TYPES.get(self.pg_type, (None, "{col}::text"))[1]
        return sql.SQL(template).format(col=sql.Identifier(self.name))

    def to_arrow(self, values: list[Any]) -> pa.Array:
        carried = _INT_CARRIED.get(self.pg_type)
        if carried is not None:
            return pa.array(values, type=carried).cast(self.arrow_type)
        return pa.array(values, type=self.arrow_type)


@dataclass(frozen=True, slots=True)
class SourceTable:
    """A table to archive: its columns, partition time column and sort order."""

    name: str
    columns: tuple[Column, ...]
    ts_column: str
    ts_epoch_ms: bool  # True when the time column is a bigint of epoch milliseconds
    order_by: tuple[str, ...]

    @property
    def has_updated_at(self) -> bool:
        return any(c.name == "updated_at" and c.pg_type == "timestamptz" for c in self.columns)

    def schema(self, metadata: dict[str, str]) -> pa.Schema:
        fields = [pa.field(c.name, c.arrow_type, metadata={"pg_type": c.pg_type}) for c in self.columns]
        return pa.schema(fields, metadata=metadata)

    def window_params(self, window: DayWindow) -> tuple[Any, Any]:
        if self.ts_epoch_ms:
            return window.start_ms, window.end_ms
        return window.start, window.end

    def where_clause(self) -> sql.Composable:
        """``ts >= %s AND ts < %s`` on the time column (params from :meth:`window_params`)."""
        return sql.SQL("{ts} >= %s AND {ts} < %s").format(ts=sql.Identifier(self.ts_column))


def table_exists(conn: psycopg.Connection[Any], name: str) -> bool:
    """True when ``name`` resolves to a table or view on the search path."""
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
    return bool(row and row[0])


def describe_table(conn: psycopg.Connection[Any], name: str, ts_candidates: tuple[str, ...] = ("ts",)
                   ) -> SourceTable:
    """Read a table's columns and primary key; ConfigError if unusable for archiving."""
    if not table_exists(conn, name):
        raise ConfigError(f"table {name!r} does not exist")
    cols = conn.execute(
        "SELECT a.attname, t.typname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
        "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        (name,)).fetchall()
    columns = tuple(Column(str(n), str(t)) for n, t in cols)
    by_name = {c.name: c for c in columns}
    ts_col = next((c for c in ts_candidates if c in by_name), None)
    if ts_col is None:
        raise ConfigError(f"table {name!r} has none of the time columns {', '.join(ts_candidates)}")
    ts_type = by_name[ts_col].pg_type
    if ts_type not in ("timestamptz", "int8"):
        raise ConfigError(f"table {name!r}: time column {ts_col!r} is {ts_type}; need timestamptz "
                          "or bigint epoch milliseconds")
    pk = conn.execute(
        "SELECT a.attname FROM pg_index i JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, ord) "
        "ON true JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
        "WHERE i.indrelid = to_regclass(%s) AND i.indisprimary ORDER BY k.ord", (name,)).fetchall()
    order = tuple(str(r[0]) for r in pk) or (ts_col, *(c.name for c in columns if c.name != ts_col))
    return SourceTable(name, columns, ts_col, ts_type == "int8", order)


def fingerprint(conn: psycopg.Connection[Any], src: SourceTable, window: DayWindow) -> SourceState:
    """Row count and newest ``updated_at`` of one partition (cheap: an index range scan)."""
    upd = sql.SQL("max(updated_at)") if src.has_updated_at else sql.SQL("NULL::timestamptz")
    q = sql.SQL("SELECT count(*), {upd} FROM {t} WHERE {w}").format(
        upd=upd, t=sql.Identifier(src.name), w=src.where_clause())
    row = conn.execute(q, src.window_params(window)).fetchone()
    assert row is not None
    return SourceState(int(row[0]), row[1])


@dataclass(frozen=True, slots=True)
class ExportResult:
    """What one export wrote: row count, byte size, SHA-256 and the time span covered."""

    rows: int
    size_bytes: int
    sha256: str
    min_ts: datetime | None
    max_ts: datetime | None


def export_partition(conn: psycopg.Connection[Any], src: SourceTable, window: DayWindow, path: Path,
                     metadata: dict[str, str], on_batch: Callable[[int], None] | None = None) -> ExportResult:
    """Stream one partition into a zstd parquet file at ``path`` (bounded memory).

    Run it inside the same REPEATABLE READ transaction as :func:`fingerprint`
    so the file holds exactly the rows that were counted. ``on_batch`` gets the
    running row count after each batch (progress for big partitions).
    """
    schema = src.schema({**metadata, "tradestack.source_table": src.name,
                         "tradestack.order_by": ",".join(src.order_by)})
    q = sql.SQL("SELECT {cols} FROM {t} WHERE {w} ORDER BY {order}").format(
        cols=sql.SQL(", ").join(c.select_expr() for c in src.columns), t=sql.Identifier(src.name),
        w=src.where_clause(), order=sql.SQL(", ").join(sql.Identifier(c) for c in src.order_by))
    ts_index = [c.name for c in src.columns].index(src.ts_column)
    rows = 0
    min_ts: Any = None
    max_ts: Any = None
    with pq.ParquetWriter(path, schema, compression=COMPRESSION, use_dictionary=True,
                          write_statistics=True) as writer, \
            conn.cursor(name=f"archive_{src.name}") as cur:
        cur.itersize = BATCH_ROWS
        cur.execute(q, src.window_params(window))
        while batch := cur.fetchmany(BATCH_ROWS):
            arrays = [col.to_arrow(list(vals)) for col, vals in zip(src.columns, zip(*batch, strict=True),
                                                                   strict=True)]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema), row_group_size=BATCH_ROWS)
            rows += len(batch)
            lo, hi = min(r[ts_index] for r in batch), max(r[ts_index] for r in batch)
            min_ts = lo if min_ts is None else min(min_ts, lo)
            max_ts = hi if max_ts is None else max(max_ts, hi)
            if on_batch is not None:
                on_batch(rows)
    return ExportResult(rows, path.stat().st_size, sha256_file(path), _ts_value(src, min_ts),
                        _ts_value(src, max_ts))


def _ts_value(src: SourceTable, raw: Any) -> datetime | None:
    """The time column's selected value (epoch us or epoch ms) as an aware datetime."""
    if raw is None:
        return None
    if src.ts_epoch_ms:
        return _EPOCH + timedelta(milliseconds=int(raw))
    return _EPOCH + timedelta(microseconds=int(raw))


def delete_partition(conn: psycopg.Connection[Any], src: SourceTable, window: DayWindow, expected_rows: int,
                     archived_max_updated_at: datetime | None) -> int:
    """Delete one archived partition's rows; raise (so the caller rolls back) unless exactly right.

    Only rows not updated since the archive are deleted, and the delete must
    remove exactly ``expected_rows`` and leave the partition empty: a row
    written or updated concurrently makes the counts disagree and the caller's
    transaction is rolled back, keeping every row.
    """
    params: list[Any] = list(src.window_params(window))
    guard = sql.SQL("")
    if src.has_updated_at and archived_max_updated_at is not None:
        guard = sql.SQL(" AND updated_at <= %s")
        params.append(archived_max_updated_at)
    deleted = conn.execute(sql.SQL("DELETE FROM {t} WHERE {w}{g}").format(
        t=sql.Identifier(src.name), w=src.where_clause(), g=guard), params).rowcount
    left = fingerprint(conn, src, window).row_count
    if deleted != expected_rows or left != 0:
        raise ArchiveError(f"{src.name} {window.trading_date}: delete would remove {deleted} rows "
                           f"(archived {expected_rows}, {left} left); rolled back, rows kept")
    return int(deleted)
