"""Pure archive planning: IST day windows, deterministic keys, destinations, archive/purge decisions."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from compute.sinks.archive_plan import (
    Action,
    ArchiveRecord,
    LocalDest,
    ObjectStat,
    PurgeAction,
    S3Dest,
    SourceState,
    date_range,
    day_window,
    decide,
    object_key,
    parse_date,
    parse_destination,
    parse_object_key,
    parse_timeframes,
    purge_verdict,
    retention_cutoff,
    today_ist,
)
from compute.sinks.s3_archiver import build_parser, job_from_args
from core.errors import ConfigError
from core.topics import BAR_TFS

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def test_day_window_covers_the_ist_calendar_day_in_utc():
    w = day_window(date(2026, 11, 20))
    assert w.start == datetime(2026, 11, 19, 18, 30, tzinfo=UTC)
    assert w.end == datetime(2026, 11, 20, 18, 30, tzinfo=UTC)
    assert w.end_ms - w.start_ms == 86_400_000
    assert w.start_ms == int(w.start.timestamp() * 1000)


def test_session_bars_fall_inside_their_trading_date_and_midnight_ist_starts_the_next():
    w = day_window(date(2026, 11, 20))
    open_ist = datetime(2026, 11, 20, 3, 45, tzinfo=UTC)  # 09:15 IST
    last_60m = datetime(2026, 11, 20, 9, 45, tzinfo=UTC)  # 15:15 IST
    assert w.start <= open_ist < w.end and w.start <= last_60m < w.end
    next_midnight = datetime(2026, 11, 20, 18, 30, tzinfo=UTC)
    assert not (w.start <= next_midnight < w.end)
    assert day_window(date(2026, 11, 21)).start == next_midnight


def test_today_ist_rolls_over_at_1830_utc():
    assert today_ist(datetime(2026, 11, 20, 18, 29, 59, tzinfo=UTC)) == date(2026, 11, 20)
    assert today_ist(datetime(2026, 11, 20, 18, 30, tzinfo=UTC)) == date(2026, 11, 21)
    with pytest.raises(ValueError):
        today_ist(datetime(2026, 11, 20))


@pytest.mark.parametrize("tf", BAR_TFS)
def test_object_key_is_deterministic_and_round_trips(tf):
    key = object_key(tf, date(2026, 11, 20))
    assert key == f"bars/tf={tf}/date=2026-11-20/part-0.parquet"
    assert object_key(tf, date(2026, 11, 20)) == key
    assert parse_object_key(key) == (tf, date(2026, 11, 20), 0)


def test_ticks_key_has_no_timeframe_level():
    key = object_key("ticks", date(2026, 1, 2))
    assert key == "ticks/date=2026-01-02/part-0.parquet"
    assert parse_object_key(key) == ("ticks", date(2026, 1, 2), 0)


@pytest.mark.parametrize("bad", ["bars/tf=2m/date=2026-11-20/part-0.parquet", "bars/tf=1m/part-0.parquet",
                                 "x/bars/tf=1m/date=2026-11-20/part-0.parquet",
                                 "bars/tf=1m/date=2026-11-20/a.csv"])
def test_parse_object_key_rejects_foreign_keys(bad):
    with pytest.raises(ValueError):
        parse_object_key(bad)


def test_object_key_rejects_unknown_timeframe():
    with pytest.raises(ValueError):
        object_key("2m", date(2026, 11, 20))


def test_parse_timeframes_all_is_every_bar_tf_plus_ticks_in_canonical_order():
    assert parse_timeframes("all") == (*BAR_TFS, "ticks")
    assert parse_timeframes("5m, 1m,5m") == ("1m", "5m")
    assert parse_timeframes("ticks") == ("ticks",)


@pytest.mark.parametrize("bad", ["", " , ", "2m", "1m,bogus"])
def test_parse_timeframes_rejects_bad_input_with_one_line(bad):
    with pytest.raises(ConfigError) as err:
        parse_timeframes(bad)
    assert "\n" not in str(err.value)


def test_date_range_is_inclusive_and_rejects_reversed_or_huge_ranges():
    assert date_range(date(2026, 11, 19), date(2026, 11, 21)) == [date(2026, 11, 19), date(2026, 11, 20),
                                                                   date(2026, 11, 21)]
    assert date_range(date(2026, 11, 19), date(2026, 11, 19)) == [date(2026, 11, 19)]
    with pytest.raises(ConfigError, match="after"):
        date_range(date(2026, 11, 21), date(2026, 11, 19))
    with pytest.raises(ConfigError, match="longer"):
        date_range(date(2000, 1, 1), date(2026, 1, 1))


def test_parse_date_names_the_flag():
    assert parse_date("2026-11-20") == date(2026, 11, 20)
    with pytest.raises(ConfigError, match="--from"):
        parse_date("20-11-2026", "from")


def test_retention_cutoff_keeps_n_days_before_today():
    assert retention_cutoff(date(2026, 11, 24), 30) == date(2026, 10, 25)
    assert retention_cutoff(date(2026, 11, 24), 1) == date(2026, 11, 23)
    with pytest.raises(ConfigError):
        retention_cutoff(date(2026, 11, 24), 0)


@pytest.mark.parametrize("text, expected", [
    ("s3://my-bucket", S3Dest("my-bucket", "")),
    ("s3://my-bucket/", S3Dest("my-bucket", "")),
    ("s3://my-bucket/a/b/", S3Dest("my-bucket", "a/b")),
    ("s3://my-bucket//a//b", S3Dest("my-bucket", "a/b")),
    ("var/archive", LocalDest("var/archive")),
    ("/abs/dir", LocalDest("/abs/dir")),
])
def test_parse_destination(text, expected):
    assert parse_destination(text) == expected


@pytest.mark.parametrize("bad", ["s3://", "s3://Bad_Bucket", "s3://b/../x", "gs://bucket/x", ""])
def test_parse_destination_rejects_bad_values(bad):
    with pytest.raises(ConfigError):
        parse_destination(bad)


def test_s3_location_and_full_key():
    d = S3Dest("bkt", "archive/prod")
    assert d.location == "s3://bkt/archive/prod"
    assert d.full_key("bars/x") == "archive/prod/bars/x"
    assert S3Dest("bkt").location == "s3://bkt" and S3Dest("bkt").full_key("k") == "k"


# --- decisions ---------------------------------------------------------------

def _rec(**kw):
    base = dict(tf="1m", trading_date=date(2026, 11, 20), location="/a", object_key="k", row_count=10,
                size_bytes=100, sha256="abc", source_max_updated_at=T0)
    base.update(kw)
    return ArchiveRecord(**base)


GOOD = ObjectStat(100, "abc")


def test_decide_new_partition_is_archived_and_empty_is_skipped():
    assert decide(SourceState(10, T0), None, None).action is Action.ARCHIVE
    assert decide(SourceState(0, None), None, None).action is Action.EMPTY


def test_decide_unchanged_and_present_is_skipped():
    assert decide(SourceState(10, T0), _rec(), GOOD).action is Action.SKIP


@pytest.mark.parametrize("state, stored, reason", [
    (SourceState(11, T0), GOOD, "row count changed"),
    (SourceState(10, T0 + timedelta(seconds=1)), GOOD, "updated"),
    (SourceState(10, T0), None, "missing"),
    (SourceState(10, T0), ObjectStat(100, "zzz"), "differs"),
    (SourceState(10, T0), ObjectStat(99, "abc"), "differs"),
])
def test_decide_rearchives_when_anything_disagrees(state, stored, reason):
    d = decide(state, _rec(), stored)
    assert d.action is Action.ARCHIVE and reason in d.reason


def test_decide_never_overwrites_a_purged_archive():
    purged = _rec(purged_at=T0, purged_rows=10)
    assert decide(SourceState(0, None), purged, None).action is Action.SKIP
    assert decide(SourceState(3, T0), purged, None).action is Action.CONFLICT


def test_decide_keeps_archive_when_database_rows_vanished():
    assert decide(SourceState(0, None), _rec(), None).action is Action.SKIP


def test_purge_only_when_archive_verified_and_database_unchanged():
    assert purge_verdict(_rec(), SourceState(10, T0), GOOD, 10).action is PurgeAction.DELETE


@pytest.mark.parametrize("state, stored, rows", [
    (SourceState(10, T0), None, None),  # object missing
    (SourceState(10, T0), ObjectStat(100, "bad"), 10),  # checksum mismatch
    (SourceState(10, T0), ObjectStat(101, "abc"), 10),  # size mismatch
    (SourceState(10, T0), GOOD, 9),  # footer disagrees
    (SourceState(12, T0), GOOD, 10),  # new rows since the archive
    (SourceState(10, T0 + timedelta(seconds=5)), GOOD, 10),  # rows updated since
])
def test_purge_keeps_rows_when_anything_is_doubtful(state, stored, rows):
    assert purge_verdict(_rec(), state, stored, rows).action is PurgeAction.KEEP


def test_purge_nothing_when_already_purged_or_empty():
    assert purge_verdict(_rec(purged_at=T0), SourceState(0), GOOD, 10).action is PurgeAction.NOTHING
    assert purge_verdict(_rec(), SourceState(0), GOOD, 10).action is PurgeAction.NOTHING


# --- argument validation -------------------------------------------------------

def _job(*argv):
    return job_from_args(build_parser().parse_args(list(argv)))


def test_job_from_single_date_and_range():
    j = _job("--date", "2026-11-20", "--tf", "1m,5m")
    assert j.dates == (date(2026, 11, 20),) and j.tfs == ("1m", "5m") and not j.ticks_required
    j = _job("--from", "2026-11-19", "--to", "2026-11-20", "--tf", "ticks,1m")
    assert len(j.dates) == 2 and j.ticks_required
    assert _job("--date", "2026-11-20").tfs == (*BAR_TFS, "ticks")


@pytest.mark.parametrize("argv, match", [
    (("--from", "2026-11-19"), "--to"),
    (("--date", "2026-11-19", "--to", "2026-11-20"), "--to"),
    (("--date", "2026-11-19", "--retain-days", "0"), "retain"),
    (("--date", "19/11/2026"), "--date"),
])
def test_job_rejects_bad_combinations(argv, match):
    with pytest.raises(ConfigError, match=match):
        _job(*argv)
