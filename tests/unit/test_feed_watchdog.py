"""Sharding, market hours and the staleness watchdog (pure, driven by a hand clock)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, strategies as st

from core.errors import ConfigError
from ingestion.shards import shard_tokens
from ingestion.watchdog import FeedWatchdog, MarketHours

IST = timezone(timedelta(hours=5, minutes=30))


def ist(y: int, mo: int, d: int, h: int, mi: int, s: int = 0) -> float:
    return datetime(y, mo, d, h, mi, s, tzinfo=IST).timestamp()


FRI_1000 = ist(2026, 11, 20, 10, 0)  # a Friday, in session


# -- sharding ---------------------------------------------------------------------------

def test_shard_when_small_universe_then_one_connection():
    assert shard_tokens([3, 1, 2]) == [[3, 1, 2]]


def test_shard_when_4000_then_two_balanced_connections():
    shards = shard_tokens(range(4000))
    assert [len(s) for s in shards] == [2000, 2000]


def test_shard_when_9000_then_three_full_connections():
    assert [len(s) for s in shard_tokens(range(9000))] == [3000, 3000, 3000]


def test_shard_when_more_than_9000_then_config_error():
    with pytest.raises(ConfigError, match="9001 instruments.*at most 9000"):
        shard_tokens(range(9001))


def test_shard_when_empty_then_config_error():
    with pytest.raises(ConfigError):
        shard_tokens([])


@given(n=st.integers(1, 9000), per=st.integers(1, 3000))
def test_shard_invariants(n, per):
    if n > 3 * per:
        with pytest.raises(ConfigError):
            shard_tokens(range(n), per)
        return
    shards = shard_tokens(range(n), per)
    assert [t for s in shards for t in s] == list(range(n))
    assert len(shards) <= 3 and all(0 < len(s) <= per for s in shards)
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


# -- market hours -------------------------------------------------------------------------

def test_market_hours_default_is_nse_session_on_weekdays():
    mh = MarketHours()
    assert not mh.is_open(ist(2026, 11, 20, 9, 14, 59))
    assert mh.is_open(ist(2026, 11, 20, 9, 15))
    assert mh.is_open(ist(2026, 11, 20, 15, 29, 59))
    assert not mh.is_open(ist(2026, 11, 20, 15, 30))
    assert not mh.is_open(ist(2026, 11, 21, 10, 0))  # Saturday
    assert mh.session_start(FRI_1000) == ist(2026, 11, 20, 9, 15)


def test_market_hours_parse_variants():
    assert MarketHours.parse("always").is_open(ist(2026, 11, 22, 3, 0))
    daily = MarketHours.parse("10:00-11:00/daily")
    assert daily.is_open(ist(2026, 11, 22, 10, 30)) and not daily.is_open(ist(2026, 11, 22, 11, 0))
    for bad in ("9-15", "15:30-09:15", "09:15-15:30/sometimes", "25:00-26:00"):
        with pytest.raises(ConfigError):
            MarketHours.parse(bad)


# -- watchdog -------------------------------------------------------------------------------

def _wd(now: float = FRI_1000, hours: MarketHours | None = None) -> FeedWatchdog:
    wd = FeedWatchdog([[1, 2], [3]], hours or MarketHours(), stale_after_s=60, silence_after_s=15, now=now)
    wd.connected(0, now)
    wd.connected(1, now)
    return wd


def test_connection_with_ticks_when_checked_then_not_silent():
    wd = _wd()
    for s in range(1, 30):
        wd.frame(0, FRI_1000 + s, True)
        wd.frame(1, FRI_1000 + s, True)
    assert wd.check(FRI_1000 + 30).silent_shards == []


def test_heartbeats_only_in_market_hours_when_beyond_silence_then_forced_reconnect():
    wd = _wd()
    for s in range(1, 20):
        wd.frame(0, FRI_1000 + s, False)  # heartbeats, no data
        wd.frame(1, FRI_1000 + s, True)
    report = wd.check(FRI_1000 + 16)
    assert report.market_open and report.silent_shards == [0]
    # The clock restarts: no second verdict until another silence period passed.
    assert wd.check(FRI_1000 + 20).silent_shards == []
    assert wd.check(FRI_1000 + 31.5).silent_shards == [0]


def test_heartbeats_only_outside_market_hours_then_not_silent():
    night = ist(2026, 11, 20, 22, 0)
    wd = _wd(night)
    for s in range(1, 60):
        wd.frame(0, night + s, False)
        wd.frame(1, night + s, False)
    report = wd.check(night + 60)
    assert not report.market_open and report.silent_shards == [] and report.stale == []


def test_no_frames_at_all_outside_market_hours_then_forced_reconnect():
    night = ist(2026, 11, 20, 22, 0)
    wd = _wd(night)
    assert wd.check(night + 16).silent_shards == [0, 1]


def test_disconnected_shard_when_checked_then_left_to_kiteticker_reconnect():
    wd = _wd()
    wd.disconnected(1)
    assert wd.check(FRI_1000 + 100).silent_shards == [0]


def test_instrument_without_ticks_when_beyond_stale_after_then_reported_stale():
    wd = _wd()
    wd.ticks([1, 2, 3], FRI_1000 + 10)
    wd.ticks([1, 3], FRI_1000 + 65)
    assert wd.check(FRI_1000 + 69).stale == []
    assert wd.check(FRI_1000 + 71).stale == [2]


def test_stale_is_counted_from_session_open_not_from_yesterday():
    before_open = ist(2026, 11, 20, 9, 0)
    wd = _wd(before_open)
    wd.ticks([1], ist(2026, 11, 19, 15, 29))  # yesterday's last tick
    assert wd.check(ist(2026, 11, 20, 9, 15, 30)).stale == []
    assert wd.check(ist(2026, 11, 20, 9, 16, 1)).stale == [1, 2, 3]
    assert wd.check(ist(2026, 11, 20, 9, 10)).stale == []  # before the open: nothing is stale


def test_watchdog_rejects_non_positive_thresholds():
    with pytest.raises(ConfigError):
        FeedWatchdog([[1]], MarketHours(), stale_after_s=0)


# -- exchange calendar: holidays ------------------------------------------------------------

HOLIDAY_1100 = ist(2026, 11, 10, 11, 0)  # Tuesday, Diwali Balipratipada: NSE closed (configs/sessions.yaml)


def test_market_hours_on_an_nse_holiday_then_closed_all_day_and_open_the_next_day():
    mh = MarketHours()
    assert not any(mh.is_open(HOLIDAY_1100 + h * 3600) for h in range(-2, 5))
    assert mh.is_open(ist(2026, 11, 11, 9, 15)) and MarketHours.parse("nse").is_open(ist(2026, 11, 11, 10, 0))


def test_watchdog_on_a_holiday_with_heartbeats_only_then_no_reconnects_and_no_stale_all_day():
    wd = _wd(HOLIDAY_1100)
    reports = []
    for s in range(1, 4 * 3600, 1):  # four hours of 1 s heartbeats and no ticks, checked every second
        wd.frame(0, HOLIDAY_1100 + s, False)
        wd.frame(1, HOLIDAY_1100 + s, False)
        reports.append(wd.check(HOLIDAY_1100 + s))
    assert not any(r.market_open or r.silent_shards or r.stale for r in reports)
