"""Archive bars (and ticks, when a ticks table exists) from Postgres to zstd parquet, locally or on S3.

One object per timeframe and IST trading date, under a deterministic key
(``bars/tf=1m/date=2026-11-20/part-0.parquet``, ``ticks/date=.../part-0.parquet``)
below the destination: a directory (default ``var/archive``) or
``s3://bucket/prefix``. Per partition::

    fingerprint + export in one REPEATABLE READ snapshot -> publish (atomic)
    -> read back (size, SHA-256, parquet footer row count) -> record in archived_ranges

A partition already recorded with the same row count, the same newest
``updated_at`` and an object matching the recorded size and SHA-256 is
skipped, so a rerun uploads nothing, and a run killed midway resumes where it
stopped (a published but unrecorded object is simply written again).

``--retain-days N`` then deletes database rows of partitions dated more than N
days before today (IST) whose archive at this destination is recorded, read
back in full (SHA-256 and footer row count) and still matches the database
(same count, no update since). Rows without such an archive are never deleted.
It looks at every recorded partition at the destination for the selected
timeframes, not only the dates of this run.

Ticks: there is no ticks table in the base schema. ``--tf all`` includes ticks
only when a table named ``--ticks-table`` (default ``ticks``) exists, with a
``ts`` (timestamptz) or ``exchange_ts`` (timestamptz or bigint epoch ms)
column; otherwise it says so and archives bars only. ``--tf ticks`` without
the table is an error.

Usage::

    python -m compute.sinks.s3_archiver --date 2026-11-20
    python -m compute.sinks.s3_archiver --from 2026-11-01 --to 2026-11-20 --tf 1m,5m \\
        --dest s3://bucket/prefix --endpoint-url http://127.0.0.1:9000 --retain-days 30

Progress goes to stderr, one line per partition. Exit codes: 0 done, 1 a
partition failed (rerun resumes), 2 bad arguments or configuration.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, NoReturn

import psycopg
from psycopg import IsolationLevel

from compute.sinks import archive_ledger as ledger
from compute.sinks.archive_export import (
    SourceTable,
    delete_partition,
    describe_table,
    export_partition,
    fingerprint,
    table_exists,
)
from compute.sinks.archive_plan import (
    TICKS,
    Action,
    ArchiveError,
    ArchiveRecord,
    LocalDest,
    PurgeAction,
    S3Dest,
    bar_table,
    date_range,
    day_window,
    decide,
    object_key,
    parse_date,
    parse_destination,
    parse_timeframes,
    purge_verdict,
    retention_cutoff,
    today_ist,
)
from compute.sinks.archive_store import LocalStore, ObjectStore, S3Store, make_store
from core.db import connect
from core.errors import EXIT_CONFIG, EXIT_OK, EXIT_UNEXPECTED, ConfigError, TransientError
from core.logs import kv, setup_logging
from core.settings import child_environment, load_settings

SERVICE = "s3_archiver"
log = logging.getLogger(SERVICE)
TICKS_TS_COLUMNS = ("ts", "exchange_ts")
PROGRESS_EVERY = 10.0  # seconds between "exporting" lines inside one big partition


@dataclass(frozen=True, slots=True)
class ArchiveJob:
    """What one run does (parsed and validated arguments)."""

    dates: tuple[date, ...]
    tfs: tuple[str, ...]
    retain_days: int | None = None
    dry_run: bool = False
    ticks_table: str = "ticks"
    ticks_required: bool = False  # ticks asked for by name (not just via "all")


@dataclass(slots=True)
class RunSummary:
    """Counters of one run (logged as the final line; returned for tests)."""

    archived: int = 0
    skipped: int = 0
    empty: int = 0
    conflicts: int = 0
    rows: int = 0
    bytes: int = 0
    purged: int = 0
    purged_rows: int = 0
    kept: int = 0


class Archiver:
    """Wires the pure plan to Postgres and an object store for one run."""

    def __init__(self, dsn: str, store: ObjectStore, job: ArchiveJob, today: date | None = None) -> None:
        self.dsn, self.store, self.job = dsn, store, job
        self.today = today or today_ist(datetime.now(UTC))
        self.summary = RunSummary()

    def run(self) -> RunSummary:
        """Archive every partition of the job, then apply retention; raises ArchiveError on a failure."""
        with connect(self.dsn, autocommit=True) as main, connect(self.dsn) as snap:
            snap.isolation_level = IsolationLevel.REPEATABLE_READ
            snap.read_only = True
            tables = self._resolve_tables(main)
            if not self.job.dry_run:
                self._lock(main)
                self.store.clean_staging()
            if self.job.dates and self.job.dates[-1] >= self.today:
                log.warning("range reaches today (IST) %s: today's partitions may still grow and will be "
                            "re-archived by a later run", self.today)
            parts = [(d, tf) for d in self.job.dates for tf in tables]
            for i, (d, tf) in enumerate(parts, 1):
                self._archive_one(main, snap, tables[tf], tf, d, f"{i}/{len(parts)}")
            if self.job.retain_days is not None:
                self._retention(main, tables)
        s = self.summary
        log.info("done %s", kv(location=self.store.location, archived=s.archived, skipped=s.skipped,
                               empty=s.empty, conflicts=s.conflicts, rows=s.rows, bytes=s.bytes,
                               purged=s.purged, purged_rows=s.purged_rows, kept=s.kept,
                               dry_run=self.job.dry_run))
        return s

    # -- setup -------------------------------------------------------------

    def _resolve_tables(self, conn: psycopg.Connection[Any]) -> dict[str, SourceTable]:
        tables: dict[str, SourceTable] = {}
        for tf in self.job.tfs:
            if tf != TICKS:
                tables[tf] = describe_table(conn, bar_table(tf))
            elif table_exists(conn, self.job.ticks_table):
                tables[tf] = describe_table(conn, self.job.ticks_table, TICKS_TS_COLUMNS)
            elif self.job.ticks_required:
                raise ConfigError(f"--tf ticks: no table {self.job.ticks_table!r} in the database "
                                  "(ticks are not persisted by this stack; see --ticks-table)")
            else:
                log.info("ticks skipped: no table %r in the database; archiving bars only",
                         self.job.ticks_table)
        return tables

    def _lock(self, conn: psycopg.Connection[Any]) -> None:
        """One archiver per location at a time (session advisory lock, released on disconnect)."""
        row = conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))",
                           (f"archiver:{self.store.location}",)).fetchone()
        if not (row and row[0]):
            raise ArchiveError(f"another archiver is running for {self.store.location}")

    # -- archive -----------------------------------------------------------

    def _archive_one(self, main: psycopg.Connection[Any], snap: psycopg.Connection[Any], src: SourceTable,
                     tf: str, d: date, progress: str) -> None:
        started = time.monotonic()
        window = day_window(d)
        key = object_key(tf, d)
        rec = ledger.get(main, tf, d, self.store.location)
        with snap.transaction():
            state = fingerprint(snap, src, window)
        stored = None
        if rec is not None and rec.purged_at is None and state.row_count:
            stored = self.store.stat(key)
        decision = decide(state, rec, stored)
        if decision.action is not Action.ARCHIVE or self.job.dry_run:
            self._note(decision.action, tf, d, progress, rows=state.row_count, reason=decision.reason,
                       started=started)
            return
        with self.store.staging() as staging:
            path = staging / "part.parquet"
            with snap.transaction():  # count and export from one snapshot: the file holds what was counted
                state = fingerprint(snap, src, window)
                result = export_partition(snap, src, window, path, {
                    "tradestack.tf": tf, "tradestack.trading_date": d.isoformat(),
                    "tradestack.timezone": "Asia/Kolkata"}, self._export_progress(tf, d, state.row_count))
            if result.rows != state.row_count:
                raise ArchiveError(f"tf={tf} date={d}: exported {result.rows} rows, "
                                   f"counted {state.row_count}")
            self.store.put_file(key, path, result.sha256, result.rows)
        self._verify(key, result.rows, result.size_bytes, result.sha256)
        ledger.record(main, ArchiveRecord(
            tf=tf, trading_date=d, location=self.store.location, object_key=key, row_count=result.rows,
            size_bytes=result.size_bytes, sha256=result.sha256, source_table=src.name,
            source_max_updated_at=state.max_updated_at, min_ts=result.min_ts, max_ts=result.max_ts))
        self.summary.rows += result.rows
        self.summary.bytes += result.size_bytes
        self._note(Action.ARCHIVE, tf, d, progress, rows=result.rows, reason=decision.reason, started=started,
                   size=result.size_bytes, url=self.store.url(key))

    @staticmethod
    def _export_progress(tf: str, d: date, total: int) -> Callable[[int], None]:
        """A batch callback logging at most every PROGRESS_EVERY seconds while a big partition exports."""
        last = time.monotonic()

        def report(rows: int) -> None:
            nonlocal last
            if time.monotonic() - last >= PROGRESS_EVERY:
                last = time.monotonic()
                log.info("exporting %s", kv(tf=tf, date=d.isoformat(), rows=rows, of=total))
        return report

    def _verify(self, key: str, rows: int, size: int, sha256: str) -> None:
        """Read the published object back: size, checksum and the parquet footer's row count."""
        stat = self.store.stat(key)
        if stat is None:
            raise ArchiveError(f"{self.store.url(key)}: missing right after upload")
        if stat.size != size or stat.sha256 != sha256:
            raise ArchiveError(f"{self.store.url(key)}: read back {stat.size} bytes sha256={stat.sha256}, "
                               f"uploaded {size} bytes sha256={sha256}")
        got = self.store.footer_rows(key)
        if got != rows:
            raise ArchiveError(f"{self.store.url(key)}: parquet footer says {got} rows, uploaded {rows}")

    def _note(self, action: Action, tf: str, d: date, progress: str, *, rows: int, reason: str,
              started: float, size: int | None = None, url: str | None = None) -> None:
        s = self.summary
        counter = {Action.ARCHIVE: "archived", Action.SKIP: "skipped", Action.EMPTY: "empty",
                   Action.CONFLICT: "conflicts"}[action]
        shown = action.value
        if self.job.dry_run and action is Action.ARCHIVE:
            shown = "would-archive"
        else:
            setattr(s, counter, getattr(s, counter) + 1)
        fields: dict[str, Any] = {"n": progress, "tf": tf, "date": d.isoformat(), "action": shown,
                                  "rows": rows}
        if size is not None:
            fields["bytes"] = size
        fields["seconds"] = f"{time.monotonic() - started:.2f}"
        fields["reason"] = reason
        if url:
            fields["object"] = url
        level = logging.WARNING if action is Action.CONFLICT else logging.INFO
        log.log(level, "partition %s", kv(**fields))

    # -- retention ---------------------------------------------------------

    def _retention(self, main: psycopg.Connection[Any], tables: Mapping[str, SourceTable]) -> None:
        assert self.job.retain_days is not None
        cutoff = retention_cutoff(self.today, self.job.retain_days)
        candidates = ledger.purge_candidates(main, self.store.location, list(tables), cutoff)
        log.info("retention %s", kv(retain_days=self.job.retain_days, before=cutoff.isoformat(),
                                    candidates=len(candidates)))
        for rec in candidates:
            self._purge_one(main, tables[rec.tf], rec)

    def _purge_one(self, main: psycopg.Connection[Any], src: SourceTable, rec: ArchiveRecord) -> None:
        window = day_window(rec.trading_date)
        stored = self.store.read_back(rec.object_key)
        rows = None
        if stored is not None and (stored.size, stored.sha256) == (rec.size_bytes, rec.sha256):
            try:
                rows = self.store.footer_rows(rec.object_key)
            except ArchiveError as exc:  # unreadable archive: the verdict keeps the rows
                log.warning("retention %s", kv(tf=rec.tf, date=rec.trading_date.isoformat(), error=str(exc)))
        verdict = purge_verdict(rec, fingerprint(main, src, window), stored, rows)
        fields = {"tf": rec.tf, "date": rec.trading_date.isoformat(), "rows": rec.row_count}
        if verdict.action is not PurgeAction.DELETE:
            if verdict.action is PurgeAction.KEEP:
                self.summary.kept += 1
            log.log(logging.WARNING if verdict.action is PurgeAction.KEEP else logging.INFO, "retention %s",
                    kv(**fields, action=verdict.action.value, reason=verdict.reason))
            return
        if self.job.dry_run:
            log.info("retention %s", kv(**fields, action="would-delete", reason=verdict.reason))
            return
        try:
            with main.transaction():
                deleted = delete_partition(main, src, window, rec.row_count, rec.source_max_updated_at)
                ledger.mark_purged(main, rec, deleted)
        except ArchiveError as exc:  # concurrent write: rolled back, rows kept, not a run failure
            self.summary.kept += 1
            log.warning("retention %s", kv(**fields, action="keep", reason=str(exc)))
            return
        self.summary.purged += 1
        self.summary.purged_rows += deleted
        log.info("retention %s", kv(**fields, action="deleted", reason=verdict.reason))


# ---------------------------------------------------------------------------
# CLI


_EPILOG = """\
examples:
  python -m compute.sinks.s3_archiver --date 2026-11-20
  python -m compute.sinks.s3_archiver --from 2026-11-01 --to 2026-11-20 --tf 1m,5m \\
      --dest s3://bucket/prefix --endpoint-url http://127.0.0.1:9000 --retain-days 30

S3 credentials only from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (/ AWS_SESSION_TOKEN).
Progress: one line per partition on stderr. Reruns skip verified partitions.
exit codes: 0 done, 1 a partition failed (rerun resumes), 2 bad arguments or configuration
"""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m compute.sinks.s3_archiver``."""
    ap = _Parser(prog="python -m compute.sinks.s3_archiver", epilog=_EPILOG,
                 formatter_class=argparse.RawDescriptionHelpFormatter,
                 description="Archive bars (and ticks if a ticks table exists) from Postgres to zstd "
                             "parquet, partitioned by timeframe and IST trading date, in a local directory "
                             "or on S3.")
    when = ap.add_mutually_exclusive_group(required=True)
    when.add_argument("--date", help="one IST trading date, YYYY-MM-DD")
    when.add_argument("--from", dest="date_from", metavar="D", help="first date of a range (needs --to)")
    ap.add_argument("--to", dest="date_to", metavar="D", help="last date of a range, inclusive")
    ap.add_argument("--tf", default="all", help="comma list of 1s,1m,3m,5m,15m,30m,60m,ticks or 'all' "
                                                "(default: all; ticks only if the ticks table exists)")
    ap.add_argument("--dest", help="directory or s3://bucket/prefix (default: var/archive)")
    ap.add_argument("--endpoint-url", help="S3 endpoint (MinIO, moto, ...); default AWS_ENDPOINT_URL or AWS")
    ap.add_argument("--retain-days", type=int, metavar="N",
                    help="after archiving, delete database rows of verified-archived partitions older "
                         "than N days")
    ap.add_argument("--dry-run", action="store_true",
                    help="show what would be archived/deleted; change nothing")
    ap.add_argument("--ticks-table", default="ticks", help="table holding ticks (default: ticks)")
    ap.add_argument("--dsn", help="Postgres DSN (default: POSTGRES_DSN)")
    return ap


def job_from_args(args: argparse.Namespace) -> ArchiveJob:
    """Validate parsed arguments into a job (ConfigError with one line)."""
    if args.date:
        if args.date_to:
            raise ConfigError("--to needs --from, not --date")
        dates = [parse_date(args.date, "date")]
    else:
        if not args.date_to:
            raise ConfigError("--from needs --to")
        dates = date_range(parse_date(args.date_from, "from"), parse_date(args.date_to, "to"))
    if args.retain_days is not None and args.retain_days < 1:
        raise ConfigError(f"--retain-days must be >= 1, got {args.retain_days}")
    named = {p.strip() for p in args.tf.split(",")}
    return ArchiveJob(dates=tuple(dates), tfs=parse_timeframes(args.tf), retain_days=args.retain_days,
                      dry_run=args.dry_run, ticks_table=args.ticks_table, ticks_required=TICKS in named)


def main(argv: Sequence[str] | None = None, *, s3_client: Any = None, today: date | None = None) -> int:
    """CLI entry point (``s3_client`` and ``today`` are injection points for tests)."""
    args = build_parser().parse_args(argv)
    setup_logging(SERVICE)
    try:
        job = job_from_args(args)
        settings = load_settings()
        dest = parse_destination(args.dest) if args.dest else LocalDest(str(settings.var_dir / "archive"))
        store = make_store(dest, child_environment(), args.endpoint_url, client=s3_client)
        if isinstance(store, S3Store):
            store.check_bucket()
        elif isinstance(store, LocalStore) and not job.dry_run:
            Path(store.root).mkdir(parents=True, exist_ok=True)
        Archiver(args.dsn or settings.dsn, store, job, today=today).run()
        return EXIT_OK
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (ArchiveError, TransientError) as exc:
        log.error("failed: %s; rerun to resume", exc)
        return EXIT_UNEXPECTED
    except (psycopg.Error, OSError) as exc:
        log.error("failed: %s: %s; rerun to resume", type(exc).__name__, str(exc).strip().splitlines()[0]
                  if str(exc).strip() else "")
        return EXIT_UNEXPECTED


__all__ = ["ArchiveJob", "Archiver", "RunSummary", "S3Dest", "build_parser", "job_from_args", "main"]

if __name__ == "__main__":
    sys.exit(main())
