"""Pure planning for the parquet archiver: dates, object keys, destinations, decisions.

No I/O here. The archiver (:mod:`compute.sinks.s3_archiver`) wires these
functions to Postgres and an object store.

Partitions are one timeframe (``1s`` ... ``60m``, or ``ticks``) times one IST
trading date. A trading date ``D`` covers ``[D 00:00 IST, D+1 00:00 IST)``, the
whole local calendar day (pre-open and post-close bars included), which is
``[D-1 18:30 UTC, D 18:30 UTC)``. Object keys are deterministic, so a rerun
writes the same key and never a second copy::

    bars/tf=1m/date=2026-11-20/part-0.parquet
    ticks/date=2026-11-20/part-0.parquet
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from core.clock import IST
from core.errors import ConfigError, TradestackError
from core.topics import BAR_TFS

TICKS = "ticks"
MAX_RANGE_DAYS = 3700  # ~10 years: a longer range is almost certainly a typo
PART = 0  # one object per partition today; ``part-N`` leaves room for appends later

_KEY_RE = re.compile(r"^(?:bars/tf=(?P<tf>[0-9]+[sm])|ticks)"
                     r"/date=(?P<date>\d{4}-\d{2}-\d{2})/part-(?P<part>\d+)\.parquet$")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


# ---------------------------------------------------------------------------
# dates


def parse_date(text: str, what: str = "date") -> date:
    """``YYYY-MM-DD`` -> date; anything else is a one-line ConfigError."""
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(f"--{what}: expected YYYY-MM-DD, got {text!r}") from None


def date_range(start: date, end: date) -> list[date]:
    """Every date from ``start`` to ``end`` inclusive (ConfigError if reversed or absurdly long)."""
    if end < start:
        raise ConfigError(f"--from {start} is after --to {end}")
    days = (end - start).days + 1
    if days > MAX_RANGE_DAYS:
        raise ConfigError(f"date range of {days} days is longer than {MAX_RANGE_DAYS}; split it")
    return [start + timedelta(days=i) for i in range(days)]


def today_ist(now: datetime) -> date:
    """The IST calendar date at the aware instant ``now``."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(IST).date()


@dataclass(frozen=True, slots=True)
class DayWindow:
    """One IST trading date as a half-open UTC interval ``[start, end)``."""

    trading_date: date
    start: datetime
    end: datetime

    @property
    def start_ms(self) -> int:
        """``start`` in epoch milliseconds (for tables that store epoch-ms integers)."""
        return int(self.start.timestamp() * 1000)

    @property
    def end_ms(self) -> int:
        """``end`` in epoch milliseconds."""
        return int(self.end.timestamp() * 1000)


def day_window(d: date) -> DayWindow:
    """The UTC interval of IST calendar day ``d``."""
    start = datetime(d.year, d.month, d.day, tzinfo=IST).astimezone(UTC)
    return DayWindow(d, start, start + timedelta(days=1))


def retention_cutoff(today: date, retain_days: int) -> date:
    """Partitions dated strictly before the returned date are older than ``retain_days``.

    ``retain_days=30`` on 2026-11-24 keeps 2026-10-25 ... 2026-11-24 in the
    database and makes 2026-10-24 and earlier eligible (once verified-archived).
    """
    if retain_days < 1:
        raise ConfigError(f"--retain-days must be >= 1, got {retain_days}")
    return today - timedelta(days=retain_days)


# ---------------------------------------------------------------------------
# timeframes and keys


def parse_timeframes(text: str) -> tuple[str, ...]:
    """``"1m,5m"`` / ``"all"`` / ``"ticks"`` -> canonical, de-duplicated tuple.

    ``all`` means every bar timeframe plus ``ticks``; the caller drops
    ``ticks`` (with a clear log line) when no ticks table exists.
    """
    items = [p.strip() for p in text.split(",") if p.strip()]
    if not items:
        raise ConfigError("--tf: empty; give e.g. 1m,5m or all")
    wanted: set[str] = set()
    for item in items:
        if item == "all":
            wanted.update(BAR_TFS)
            wanted.add(TICKS)
        elif item in BAR_TFS or item == TICKS:
            wanted.add(item)
        else:
            raise ConfigError(f"--tf: unknown timeframe {item!r}; "
                              f"expected {', '.join(BAR_TFS)}, ticks or all")
    order = (*BAR_TFS, TICKS)
    return tuple(tf for tf in order if tf in wanted)


def bar_table(tf: str) -> str:
    """The Postgres table holding bars of ``tf`` (``bars_1m``)."""
    if tf not in BAR_TFS:
        raise ValueError(f"not a bar timeframe: {tf!r}")
    return f"bars_{tf}"


def object_key(tf: str, d: date, part: int = PART) -> str:
    """Deterministic object key of one partition, relative to the destination root."""
    if tf == TICKS:
        return f"ticks/date={d.isoformat()}/part-{part}.parquet"
    if tf not in BAR_TFS:
        raise ValueError(f"unknown timeframe {tf!r}")
    return f"bars/tf={tf}/date={d.isoformat()}/part-{part}.parquet"


def parse_object_key(key: str) -> tuple[str, date, int]:
    """Inverse of :func:`object_key`: ``(tf, date, part)``; ValueError if it is not one of ours."""
    m = _KEY_RE.match(key)
    if not m:
        raise ValueError(f"not an archive key: {key!r}")
    tf = m.group("tf") or TICKS
    if tf != TICKS and tf not in BAR_TFS:
        raise ValueError(f"not an archive key (timeframe {tf!r}): {key!r}")
    return tf, date.fromisoformat(m.group("date")), int(m.group("part"))


# ---------------------------------------------------------------------------
# destinations


@dataclass(frozen=True, slots=True)
class LocalDest:
    """A directory on the local filesystem."""

    path: str


@dataclass(frozen=True, slots=True)
class S3Dest:
    """A bucket and an optional key prefix (no leading/trailing slash)."""

    bucket: str
    prefix: str = ""

    @property
    def location(self) -> str:
        """``s3://bucket/prefix`` (the value recorded in ``archived_ranges.location``)."""
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def full_key(self, key: str) -> str:
        """The object's key inside the bucket."""
        return f"{self.prefix}/{key}" if self.prefix else key


def parse_destination(text: str) -> LocalDest | S3Dest:
    """``s3://bucket[/prefix]`` or a local directory path."""
    text = text.strip()
    if not text:
        raise ConfigError("--dest: empty")
    if text.startswith("s3://"):
        rest = text[len("s3://"):]
        bucket, _, prefix = rest.partition("/")
        if not _BUCKET_RE.match(bucket) or ".." in bucket:
            raise ConfigError(f"--dest: invalid S3 bucket name {bucket!r}")
        segments = [s for s in prefix.split("/") if s]
        if any(s in (".", "..") for s in segments):
            raise ConfigError(f"--dest: prefix must not contain '.' or '..' segments: {prefix!r}")
        return S3Dest(bucket, "/".join(segments))
    if "://" in text:
        raise ConfigError(f"--dest: unsupported scheme in {text!r}; use a directory or s3://bucket/prefix")
    return LocalDest(text)


# ---------------------------------------------------------------------------
# decisions


@dataclass(frozen=True, slots=True)
class SourceState:
    """What the database holds for one partition right now (one consistent snapshot)."""

    row_count: int
    max_updated_at: datetime | None = None  # None when the table has no updated_at column


@dataclass(frozen=True, slots=True)
class ArchiveRecord:
    """One row of ``archived_ranges``: a verified archive of one partition at one location."""

    tf: str
    trading_date: date
    location: str
    object_key: str
    row_count: int
    size_bytes: int
    sha256: str
    source_table: str = ""
    source_max_updated_at: datetime | None = None
    min_ts: datetime | None = None
    max_ts: datetime | None = None
    archived_at: datetime | None = None
    verified_at: datetime | None = None
    purged_at: datetime | None = None
    purged_rows: int | None = None


@dataclass(frozen=True, slots=True)
class ObjectStat:
    """What the store says about an object: its size and SHA-256 (None if unknown)."""

    size: int
    sha256: str | None


class Action(enum.StrEnum):
    """What the archiver does with one partition."""

    ARCHIVE = "archive"
    SKIP = "skip"  # already archived and unchanged
    EMPTY = "empty"  # nothing in the database for this partition
    CONFLICT = "conflict"  # rows reappeared after a purge: never overwrite the archive


@dataclass(frozen=True, slots=True)
class Decision:
    """An action plus the reason shown on the progress line."""

    action: Action
    reason: str


def decide(source: SourceState, record: ArchiveRecord | None, stored: ObjectStat | None) -> Decision:
    """Archive, skip, or refuse one partition.

    ``stored`` is the store's view of ``record.object_key`` (None if missing or
    not looked up). A partition is skipped only when the ledger's row count and
    source fingerprint match the database and the object is present with the
    recorded size and checksum; anything else re-archives to the same key.
    A purged partition is never overwritten (its rows are gone from Postgres).
    """
    if record is not None and record.purged_at is not None:
        if source.row_count == 0:
            return Decision(Action.SKIP, "archived and purged from the database")
        return Decision(Action.CONFLICT, f"{source.row_count} rows appeared after the partition was purged; "
                                         "archive left untouched")
    if source.row_count == 0:
        if record is not None:
            return Decision(Action.SKIP, "archived; no rows left in the database, archive kept")
        return Decision(Action.EMPTY, "no rows")
    if record is None:
        return Decision(Action.ARCHIVE, "not archived yet")
    if record.row_count != source.row_count:
        return Decision(Action.ARCHIVE, f"row count changed {record.row_count}->{source.row_count}")
    if record.source_max_updated_at != source.max_updated_at:
        return Decision(Action.ARCHIVE, "rows updated since the archive")
    if stored is None:
        return Decision(Action.ARCHIVE, "archived object missing")
    if stored.size != record.size_bytes or stored.sha256 != record.sha256:
        return Decision(Action.ARCHIVE, "archived object differs from the record")
    return Decision(Action.SKIP, "already archived")


class PurgeAction(enum.StrEnum):
    """What retention does with one archived partition's database rows."""

    DELETE = "delete"  # archive verified, database unchanged since: rows may go
    KEEP = "keep"  # anything doubtful: the rows stay
    NOTHING = "nothing"  # already purged, or no rows left


@dataclass(frozen=True, slots=True)
class PurgeVerdict:
    """A retention action plus the reason shown on the progress line."""

    action: PurgeAction
    reason: str


def purge_verdict(record: ArchiveRecord, source: SourceState, stored: ObjectStat | None,
                  stored_rows: int | None) -> PurgeVerdict:
    """May the database rows of an archived partition be deleted?

    Only when the object exists with the recorded size, checksum and row count
    (``stored_rows`` is read back from the object's parquet footer) and the
    database still holds exactly the archived rows (same count, no update
    since). Everything else keeps the rows.
    """
    if record.purged_at is not None:
        return PurgeVerdict(PurgeAction.NOTHING, "already purged")
    if stored is None:
        return PurgeVerdict(PurgeAction.KEEP, "archive object missing; rows kept")
    if stored.sha256 != record.sha256 or stored.size != record.size_bytes:
        return PurgeVerdict(PurgeAction.KEEP,
                            "archive object does not match the recorded checksum; rows kept")
    if stored_rows != record.row_count:
        return PurgeVerdict(PurgeAction.KEEP,
                            f"archive holds {stored_rows} rows, record says {record.row_count}; rows kept")
    if source.row_count == 0:
        return PurgeVerdict(PurgeAction.NOTHING, "no rows left in the database")
    if source.row_count != record.row_count:
        return PurgeVerdict(PurgeAction.KEEP, f"database has {source.row_count} rows, archive "
                                              f"{record.row_count}; rerun the archive first; rows kept")
    if source.max_updated_at != record.source_max_updated_at:
        return PurgeVerdict(PurgeAction.KEEP,
                            "rows updated since the archive; rerun the archive first; rows kept")
    return PurgeVerdict(PurgeAction.DELETE, "archive verified")


class ArchiveError(TradestackError):
    """A partition could not be archived, verified or purged (one line; exit 1, rerun resumes)."""
