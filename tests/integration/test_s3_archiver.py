"""The parquet archiver against a real Postgres, a local directory and an S3 endpoint (moto server mode).

Covers: exact round trip of every column, idempotent reruns (no new uploads,
no new ledger rows), resume after a crash midway, read-back verification,
retention that deletes only verified-archived old rows, the optional ticks
table, and the CLI (progress lines, one-line errors, exit codes).
"""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pyarrow.parquet as pq
import pytest

from compute.sinks.archive_plan import ArchiveError, S3Dest, day_window, object_key
from compute.sinks.archive_store import LocalStore, S3Store
from compute.sinks.s3_archiver import ArchiveJob, Archiver
from tests.conftest import ROOT, free_port, query

pytestmark = pytest.mark.integration

D1, D2, D3, D4 = date(2026, 11, 17), date(2026, 11, 18), date(2026, 11, 19), date(2026, 11, 20)
TODAY = date(2026, 11, 24)
TOKENS = (738561, 256265)
# The columns this test writes; the archive must carry every column of the table (SELECT *).
BAR_COLUMNS = ("instrument_token", "ts", "open", "high", "low", "close", "volume", "ticks", "updated_at")


# --- fixtures and helpers -------------------------------------------------------

@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """An S3 API served by moto on a free loopback port."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one access-log line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


class PutCounter:
    """Counts upload requests a boto3 client sends (PutObject and multipart starts)."""

    def __init__(self, client: Any) -> None:
        self.keys: list[str] = []
        for op in ("PutObject", "CreateMultipartUpload"):
            client.meta.events.register(f"before-call.s3.{op}", self._seen)

    def _seen(self, params: dict[str, Any], **_: Any) -> None:
        self.keys.append(str(params.get("url_path", "")))


def s3_client(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                        aws_secret_access_key="testing", region_name="us-east-1")


def new_bucket(client: Any) -> str:
    name = f"arch-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=name)
    return name


def seed_bars(dsn: str, tf: str, days: tuple[date, ...], per_day: int = 12) -> int:
    """Insert bars across each IST day, including both edges and sub-second timestamps."""
    rows = []
    for d in days:
        w = day_window(d)
        offsets = [timedelta(0), timedelta(days=1) - timedelta(microseconds=1)]
        offsets += [timedelta(hours=3, minutes=45 + i, microseconds=i * 1111) for i in range(per_day - 2)]
        for tok in TOKENS:
            for i, off in enumerate(offsets):
                px = 100.0 + i / 3 + tok % 7
                rows.append((tok, w.start + off, px, px + 0.55, px - 0.45, px + 0.1, 10**12 + i, i,
                             datetime(2026, 11, 21, tzinfo=UTC) + timedelta(microseconds=i * 7 + tok % 13)))
    with psycopg.connect(dsn) as conn:
        conn.cursor().executemany(
            f"INSERT INTO bars_{tf} ({', '.join(BAR_COLUMNS)}) VALUES ({', '.join(['%s'] * 9)})", rows)
        if "cum_volume" in table_columns(conn, f"bars_{tf}"):  # nullable: exercise values and NULLs
            conn.execute(f"UPDATE bars_{tf} SET cum_volume = volume * 3 WHERE ticks % 2 = 0")
    return len(rows)


def table_columns(conn: psycopg.Connection[Any], table: str) -> list[str]:
    cur = conn.execute(f"SELECT * FROM {table} LIMIT 0")
    return [c.name for c in cur.description or ()]


def db_rows(dsn: str, tf: str, d: date) -> list[dict[str, Any]]:
    """Every column of the partition's rows, in the archive's order (primary key)."""
    w = day_window(d)
    with psycopg.connect(dsn) as conn:
        cur = conn.execute(f"SELECT * FROM bars_{tf} WHERE ts >= %s AND ts < %s "
                           "ORDER BY instrument_token, ts", (w.start, w.end))
        names = [c.name for c in cur.description or ()]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def ledger(dsn: str) -> list[tuple[Any, ...]]:
    return query(dsn, "SELECT tf, trading_date, location, object_key, row_count, size_bytes, sha256, "
                      "archived_at, verified_at, purged_at, purged_rows FROM archived_ranges "
                      "ORDER BY trading_date, tf")


def run(dsn: str, store: Any, days: tuple[date, ...], tfs: tuple[str, ...] = ("1m", "5m"),
        retain_days: int | None = None, dry_run: bool = False):
    job = ArchiveJob(dates=days, tfs=tfs, retain_days=retain_days, dry_run=dry_run)
    return Archiver(dsn, store, job, today=TODAY).run()


# --- round trips -------------------------------------------------------------

def test_local_round_trip_reads_back_exactly_the_database_rows(fresh_pg_dsn, tmp_path, caplog):
    seed_bars(fresh_pg_dsn, "1m", (D1, D2))
    seed_bars(fresh_pg_dsn, "5m", (D1,), per_day=5)
    store = LocalStore(tmp_path / "archive")
    caplog.set_level("INFO")

    summary = run(fresh_pg_dsn, store, (D1, D2))

    assert (summary.archived, summary.empty) == (3, 1)  # 5m on D2 has no rows: no object
    for tf, d in (("1m", D1), ("1m", D2), ("5m", D1)):
        path = tmp_path / "archive" / "bars" / f"tf={tf}" / f"date={d}" / "part-0.parquet"
        table = pq.read_table(path)
        with psycopg.connect(fresh_pg_dsn) as conn:
            assert table.column_names == table_columns(conn, f"bars_{tf}")
        assert set(BAR_COLUMNS) <= set(table.column_names)
        assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == "ZSTD"
        assert table.to_pylist() == db_rows(fresh_pg_dsn, tf, d)
    assert not (tmp_path / "archive" / "bars" / "tf=5m" / f"date={D2}").exists()
    rows = ledger(fresh_pg_dsn)
    assert [(r[0], r[1], r[4]) for r in rows] == [("1m", D1, 24), ("5m", D1, 10), ("1m", D2, 24)]
    assert all(r[2] == str((tmp_path / "archive").resolve()) for r in rows)
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("partition ")]
    assert len(progress) == 4 and "n=1/4" in progress[0] and "action=archive" in progress[0]


def test_s3_round_trip_then_rerun_uploads_nothing_and_adds_no_ledger_rows(fresh_pg_dsn, s3_endpoint):
    seed_bars(fresh_pg_dsn, "1m", (D1, D2))
    seed_bars(fresh_pg_dsn, "5m", (D1, D2), per_day=4)
    client = s3_client(s3_endpoint)
    bucket = new_bucket(client)
    puts = PutCounter(client)
    store = S3Store(client, S3Dest(bucket, "tradestack/prod"))

    first = run(fresh_pg_dsn, store, (D1, D2))

    assert first.archived == 4 and len(puts.keys) == 4
    key = f"tradestack/prod/{object_key('1m', D2)}"
    body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert pq.read_table(io.BytesIO(body)).to_pylist() == db_rows(fresh_pg_dsn, "1m", D2)
    heads = {k["Key"]: (k["ETag"], k["LastModified"]) for k in
             client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert len(heads) == 4
    before = ledger(fresh_pg_dsn)
    assert all(r[2] == f"s3://{bucket}/tradestack/prod" for r in before)

    second = run(fresh_pg_dsn, store, (D1, D2))

    assert (second.archived, second.skipped) == (0, 4)
    assert len(puts.keys) == 4  # no new PUT
    assert {k["Key"]: (k["ETag"], k["LastModified"]) for k in
            client.list_objects_v2(Bucket=bucket)["Contents"]} == heads
    assert ledger(fresh_pg_dsn) == before  # same rows, archived_at untouched


def test_changed_rows_are_rearchived_to_the_same_key(fresh_pg_dsn, tmp_path):
    seed_bars(fresh_pg_dsn, "1m", (D1,))
    store = LocalStore(tmp_path)
    run(fresh_pg_dsn, store, (D1,), ("1m",))
    with psycopg.connect(fresh_pg_dsn) as conn:
        conn.execute("UPDATE bars_1m SET close = close + 1, updated_at = now() "
                     "WHERE ts = (SELECT min(ts) FROM bars_1m)")

    again = run(fresh_pg_dsn, store, (D1,), ("1m",))

    assert again.archived == 1
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet"))
    assert files == [object_key("1m", D1)]
    assert pq.read_table(tmp_path / files[0]).to_pylist() == db_rows(fresh_pg_dsn, "1m", D1)
    assert len(ledger(fresh_pg_dsn)) == 1


# --- resume and verification ---------------------------------------------------

class _Crash(Exception):
    """Stands in for the process dying."""


class CrashAfterPublish(LocalStore):
    """Publishes ``survive`` objects, then dies right after publishing the next (before the ledger write)."""

    def __init__(self, root: Path, survive: int) -> None:
        super().__init__(root)
        self.survive = survive
        self.published: list[str] = []

    def put_file(self, key: str, path: Path, sha256: str, rows: int) -> None:
        super().put_file(key, path, sha256, rows)
        self.published.append(key)
        if len(self.published) > self.survive:
            raise _Crash(key)


def test_resume_after_a_crash_midway_completes_only_the_rest(fresh_pg_dsn, tmp_path):
    days = (D1, D2, D3)
    seed_bars(fresh_pg_dsn, "1m", days)
    seed_bars(fresh_pg_dsn, "5m", days, per_day=4)
    crashing = CrashAfterPublish(tmp_path, survive=2)
    with pytest.raises(_Crash):
        run(fresh_pg_dsn, crashing, days)
    leftover = tmp_path / ".staging" / "run-killed" / "part.parquet"  # what a kill -9 mid-export leaves
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"partial")
    assert len(crashing.published) == 3 and len(ledger(fresh_pg_dsn)) == 2  # third object is unrecorded

    resumed = CrashAfterPublish(tmp_path, survive=100)
    summary = run(fresh_pg_dsn, resumed, days)

    assert (summary.skipped, summary.archived) == (2, 4)
    assert resumed.published[0] == crashing.published[2]  # the unrecorded one is redone, same key
    assert set(resumed.published).isdisjoint(crashing.published[:2])
    assert len(ledger(fresh_pg_dsn)) == 6
    for tf in ("1m", "5m"):
        for d in days:
            assert pq.read_table(tmp_path / object_key(tf, d)).to_pylist() == db_rows(fresh_pg_dsn, tf, d)
    assert not list((tmp_path / ".staging").iterdir())


def test_failed_read_back_is_not_recorded(fresh_pg_dsn, tmp_path, monkeypatch):
    seed_bars(fresh_pg_dsn, "1m", (D1,))
    monkeypatch.setattr(LocalStore, "footer_rows", lambda self, key: 1)
    with pytest.raises(ArchiveError, match="footer says 1 rows"):
        run(fresh_pg_dsn, LocalStore(tmp_path), (D1,), ("1m",))
    assert ledger(fresh_pg_dsn) == []


# --- retention -----------------------------------------------------------------

def _count(dsn: str, d: date, tf: str = "1m") -> int:
    return len(db_rows(dsn, tf, d))


def test_retention_deletes_only_verified_archived_old_rows(fresh_pg_dsn, tmp_path):
    old_unarchived = date(2026, 11, 16)
    seed_bars(fresh_pg_dsn, "1m", (old_unarchived, D1, D2, D3, D4))
    store = LocalStore(tmp_path)
    run(fresh_pg_dsn, store, (D1, D2, D3, D4), ("1m",))
    (tmp_path / object_key("1m", D2)).unlink()  # archive missing
    with psycopg.connect(fresh_pg_dsn) as conn:  # D3 changed after its archive
        w = day_window(D3)
        conn.execute("UPDATE bars_1m SET volume = volume + 1, updated_at = now() WHERE ts = %s", (w.start,))
    corrupt = tmp_path / object_key("1m", D4)  # D4: same size, different bytes
    data = bytearray(corrupt.read_bytes())
    data[10] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    before = {d: _count(fresh_pg_dsn, d) for d in (old_unarchived, D1, D2, D3, D4)}

    # today 2026-11-24, keep 3 days: every date up to 2026-11-20 is old enough
    dry = run(fresh_pg_dsn, store, (), ("1m",), retain_days=3, dry_run=True)
    assert dry.purged == 0 and {d: _count(fresh_pg_dsn, d) for d in before} == before

    summary = run(fresh_pg_dsn, store, (), ("1m",), retain_days=3)

    assert (summary.purged, summary.purged_rows, summary.kept) == (1, 24, 3)
    after = {d: _count(fresh_pg_dsn, d) for d in before}
    assert after == {**before, D1: 0}
    purged = {r[1]: (r[9] is not None, r[10]) for r in ledger(fresh_pg_dsn)}
    assert purged == {D1: (True, 24), D2: (False, None), D3: (False, None), D4: (False, None)}
    # the purged partition's archive is never overwritten by a later run
    sha_before = ledger(fresh_pg_dsn)[0][6]
    again = run(fresh_pg_dsn, store, (D1,), ("1m",))
    assert again.skipped == 1 and ledger(fresh_pg_dsn)[0][6] == sha_before
    assert len(pq.read_table(tmp_path / object_key("1m", D1))) == 24


def test_retention_respects_the_window_and_verifies_s3_objects_in_full(fresh_pg_dsn, s3_endpoint):
    seed_bars(fresh_pg_dsn, "1m", (D1, D4))
    client = s3_client(s3_endpoint)
    bucket = new_bucket(client)
    store = S3Store(client, S3Dest(bucket, ""))
    run(fresh_pg_dsn, store, (D1, D4), ("1m",))
    # Replace D1's object with other bytes but keep the metadata our HEAD check trusts.
    key = object_key("1m", D1)
    head = client.head_object(Bucket=bucket, Key=key)
    client.put_object(Bucket=bucket, Key=key, Body=b"x" * head["ContentLength"], Metadata=head["Metadata"])

    summary = run(fresh_pg_dsn, store, (), ("1m",), retain_days=4)  # cutoff 2026-11-20: D1 old, D4 not

    assert (summary.purged, summary.kept) == (0, 1)  # full read-back caught the swap
    assert _count(fresh_pg_dsn, D1) == 24 and _count(fresh_pg_dsn, D4) == 24


# --- ticks and the CLI -----------------------------------------------------------

TICKS_DDL = """CREATE TABLE ticks (
    instrument_token bigint NOT NULL, exchange_ts bigint NOT NULL, ltp double precision NOT NULL,
    volume bigint, depth jsonb, note text, PRIMARY KEY (instrument_token, exchange_ts))"""


def _cli(dsn: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "POSTGRES_DSN": dsn, **(env or {})}
    return subprocess.run([sys.executable, "-m", "compute.sinks.s3_archiver", *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=60)


def test_cli_local_run_dry_run_ticks_and_one_line_errors(fresh_pg_dsn, tmp_path):
    seed_bars(fresh_pg_dsn, "1m", (D1,))
    dest = tmp_path / "arch"

    r = _cli(fresh_pg_dsn, "--tf", "ticks", "--date", str(D1), "--dest", str(dest))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no table 'ticks'" in r.stderr

    r = _cli(fresh_pg_dsn, "--date", str(D1), "--dest", str(dest), "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "ticks skipped: no table 'ticks'" in r.stderr and "action=would-archive" in r.stderr
    assert not list(tmp_path.rglob("*.parquet")) and ledger(fresh_pg_dsn) == []

    w = day_window(D1)
    with psycopg.connect(fresh_pg_dsn) as conn:
        conn.execute(TICKS_DDL)
        conn.execute("INSERT INTO ticks VALUES (1, %s, 10.5, 7, '{\"buy\": []}', NULL), (1, %s, 10.75, NULL, "
                     "NULL, 'last')", (w.start_ms, w.end_ms - 1))
        conn.execute("INSERT INTO ticks VALUES (1, %s, 9.0, 1, NULL, 'next day')", (w.end_ms,))
    r = _cli(fresh_pg_dsn, "--date", str(D1), "--tf", "1m,ticks", "--dest", str(dest))
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if " partition " in ln]
    assert len(lines) == 2 and all("action=archive" in ln for ln in lines)
    ticks = pq.read_table(dest / object_key("ticks", D1)).to_pylist()
    assert ticks == [{"instrument_token": 1, "exchange_ts": w.start_ms, "ltp": 10.5, "volume": 7,
                      "depth": '{"buy": []}', "note": None},
                     {"instrument_token": 1, "exchange_ts": w.end_ms - 1, "ltp": 10.75, "volume": None,
                      "depth": None, "note": "last"}]

    for bad in (["--date", "2026-13-01"], ["--from", str(D1)], ["--date", str(D1), "--tf", "2m"],
                ["--date", str(D1), "--retain-days", "0"], ["--date", str(D1), "--dest", "gs://x/y"],
                ["--date", str(D1), "--dest", str(dest), "--endpoint-url", "http://127.0.0.1:1"], []):
        r = _cli(fresh_pg_dsn, *bad)
        assert r.returncode == 2, (bad, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, (bad, r.stderr)


def test_cli_s3_with_env_credentials_and_missing_bucket(fresh_pg_dsn, s3_endpoint):
    seed_bars(fresh_pg_dsn, "5m", (D2,), per_day=3)
    client = s3_client(s3_endpoint)
    bucket = new_bucket(client)
    creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}

    r = _cli(fresh_pg_dsn, "--date", str(D2), "--tf", "5m", "--dest", f"s3://{bucket}/p",
             "--endpoint-url", s3_endpoint, env=creds)

    assert r.returncode == 0, r.stderr
    assert f"s3://{bucket}/p/{object_key('5m', D2)}" in r.stderr and "testing" not in r.stderr
    body = client.get_object(Bucket=bucket, Key=f"p/{object_key('5m', D2)}")["Body"].read()
    assert pq.read_table(io.BytesIO(body)).to_pylist() == db_rows(fresh_pg_dsn, "5m", D2)

    no_creds = {k: "" for k in creds}
    r = _cli(fresh_pg_dsn, "--date", str(D2), "--dest", f"s3://{bucket}", "--endpoint-url", s3_endpoint,
             env=no_creds)
    assert r.returncode == 2 and "AWS_ACCESS_KEY_ID" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = _cli(fresh_pg_dsn, "--date", str(D2), "--dest", "s3://no-such-bucket-x", "--endpoint-url",
             s3_endpoint, env=creds)
    assert r.returncode == 2 and "does not exist" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_second_archiver_on_the_same_location_is_refused(fresh_pg_dsn, tmp_path):
    seed_bars(fresh_pg_dsn, "1m", (D1,))
    store = LocalStore(tmp_path)
    with psycopg.connect(fresh_pg_dsn, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (f"archiver:{store.location}",))
        with pytest.raises(ArchiveError, match="another archiver"):
            run(fresh_pg_dsn, store, (D1,), ("1m",))
    assert run(fresh_pg_dsn, store, (D1,), ("1m",)).archived == 1
