"""Pure parts of the daily historical merge: plan, tolerance, vendor CSV, rate limiter."""

from __future__ import annotations

from datetime import date, datetime

import pytest
from hypothesis import given, strategies as st

from core.errors import ConfigError
from core.ratelimit import RateLimiter
from ingestion.bar_merge import (
    IST,
    Candle,
    Tolerance,
    kite_candles,
    parse_time_ms,
    plan_merge,
    read_vendor_csv,
    session_window,
)

DAY = date(2026, 11, 20)
WINDOW = session_window(DAY)
T0 = WINDOW[0]


def c(i: int, close: float = 100.0, volume: int = 10, **kw) -> Candle:
    base = dict(ts=T0 + i * 60_000, open=100.0, high=max(100.5, close), low=min(99.5, close), close=close,
                volume=volume)
    base.update(kw)
    return Candle(**base)


def test_session_window_is_0915_to_1530_ist():
    assert WINDOW[1] - WINDOW[0] == 375 * 60_000
    assert datetime.fromtimestamp(WINDOW[0] / 1000, IST).strftime("%H:%M") == "09:15"


def test_identical_bars_when_planned_then_nothing_to_do():
    ref = [c(i) for i in range(5)]
    plan = plan_merge(ref, {x.ts: x for x in ref}, 0.05, Tolerance(), WINDOW)
    assert plan.changes == [] and plan.unchanged == 5 and plan.reference == 5


def test_missing_minutes_when_planned_then_gaps_inserted_with_full_values():
    ref = [c(i) for i in range(5)]
    ours = {x.ts: x for x in ref if x.ts not in (ref[1].ts, ref[3].ts)}
    plan = plan_merge(ref, ours, 0.05, Tolerance(), WINDOW)
    assert [(ch.action, ch.reason, ch.ts) for ch in plan.changes] == [("insert", "gap", ref[1].ts),
                                                                       ("insert", "gap", ref[3].ts)]
    assert plan.changes[0].old is None and plan.changes[0].new == ref[1].values()
    assert plan.inserted == 2 and plan.unchanged == 3


def test_wrong_close_when_planned_then_update_records_only_changed_fields():
    ref = [c(0, close=100.3, volume=50)]
    ours = {ref[0].ts: c(0, close=100.0, volume=50)}
    plan = plan_merge(ref, ours, 0.05, Tolerance(), WINDOW)
    (ch,) = plan.changes
    assert (ch.action, ch.reason) == ("update", "mismatch")
    assert ch.old == {"close": 100.0} and ch.new == {"close": 100.3}
    assert "close 100->100.3 (+6 ticks)" in ch.detail
    assert ch.bar == ref[0]


def test_difference_within_tolerance_when_planned_then_unchanged():
    ref = [c(0, close=100.1, volume=1000)]
    ours = {ref[0].ts: c(0, close=100.05, volume=1010)}
    assert plan_merge(ref, ours, 0.05, Tolerance(price_ticks=1, volume_pct=1), WINDOW).changes == []
    assert plan_merge(ref, ours, 0.05, Tolerance(price_abs=0.05, volume_abs=10), WINDOW).changes == []
    assert len(plan_merge(ref, ours, 0.05, Tolerance(), WINDOW).changes) == 1


def test_volume_beyond_tolerance_when_planned_then_corrected():
    ref = [c(0, volume=1000)]
    ours = {ref[0].ts: c(0, volume=1100)}
    (ch,) = plan_merge(ref, ours, 0.05, Tolerance(volume_pct=5), WINDOW).changes
    assert ch.old == {"volume": 1100} and ch.new == {"volume": 1000} and "volume 1100->1000" in ch.detail


def test_bars_outside_window_and_extra_bars_left_alone():
    ref = [c(-1), c(0), c(375)]  # 09:14 and 15:30 are outside the session
    ours = {c(0).ts: c(0), c(5).ts: c(5)}
    plan = plan_merge(ref, ours, 0.05, Tolerance(), WINDOW)
    assert plan.changes == [] and plan.reference == 1 and plan.extra == 1


def test_malformed_reference_candle_when_planned_then_skipped_and_reported():
    bad = c(0, high=99.0)
    plan = plan_merge([bad, c(1)], {}, 0.05, Tolerance(), WINDOW)
    assert plan.invalid == [(bad.ts, "high/low do not bound open/close")]
    assert [ch.ts for ch in plan.changes] == [c(1).ts]


@given(closes=st.lists(st.integers(1900, 2100), min_size=1, max_size=30),
       ours_closes=st.lists(st.integers(1900, 2100), min_size=30, max_size=30),
       present=st.lists(st.booleans(), min_size=30, max_size=30), tol_ticks=st.integers(0, 3))
def test_applying_a_plan_makes_the_next_plan_empty(closes, ours_closes, present, tol_ticks):
    ref = [c(i, close=x * 0.05, high=200.0, low=1.0, volume=x) for i, x in enumerate(closes)]
    ours = {r.ts: c(i, close=ours_closes[i] * 0.05, high=200.0, low=1.0, volume=ours_closes[i])
            for i, r in enumerate(ref) if present[i]}
    tol = Tolerance(price_ticks=tol_ticks)
    plan = plan_merge(ref, ours, 0.05, tol, WINDOW)
    for ch in plan.changes:
        ours[ch.ts] = ch.bar
    again = plan_merge(ref, ours, 0.05, tol, WINDOW)
    assert again.changes == []
    assert again.unchanged == len(ref)


def test_tolerance_parse():
    assert Tolerance.parse("price=2ticks,volume=1%") == Tolerance(price_ticks=2, volume_pct=1)
    assert Tolerance.parse("price=0.1,volume=500") == Tolerance(price_abs=0.1, volume_abs=500)
    assert Tolerance.parse("price=1tick") == Tolerance(price_ticks=1)
    assert Tolerance.parse("") == Tolerance()
    for bad in ("price", "speed=1", "price=abc", "volume=-1", "price=-2ticks"):
        with pytest.raises(ConfigError):
            Tolerance.parse(bad)


def test_parse_time_formats_agree():
    want = T0
    assert parse_time_ms("2026-11-20 09:15:00") == want
    assert parse_time_ms("2026-11-20 09:15") == want
    assert parse_time_ms("2026-11-20T09:15:00+0530") == want
    assert parse_time_ms("2026-11-20T03:45:00+0000") == want
    assert parse_time_ms(str(want)) == want
    with pytest.raises(ValueError):
        parse_time_ms("yesterday")


def test_vendor_csv_with_tokens_symbols_and_bad_rows():
    text = ("instrument_token,symbol,date,open,high,low,close,volume,extra\n"
            "738561,,2026-11-20 09:15:00,10,11,9,10.5,100,x\n"
            ",NSE:INFY,2026-11-20T09:16:00+0530,20,21,19,20.5,200,x\n"
            ",NSE:NOPE,2026-11-20 09:17:00,1,1,1,1,1,x\n"
            "738561,,not-a-time,1,1,1,1,1,x\n")
    out, skipped = read_vendor_csv(text, {"NSE:INFY": 408065}.get)
    assert skipped == 2
    assert out[738561] == [Candle(T0, 10, 11, 9, 10.5, 100)]
    assert out[408065] == [Candle(T0 + 60_000, 20, 21, 19, 20.5, 200)]
    with pytest.raises(ConfigError):
        read_vendor_csv("a,b\n1,2\n", lambda s: None)


def test_kite_records_to_candles():
    rec = {"date": datetime(2026, 11, 20, 9, 15, tzinfo=IST), "open": 1, "high": 2, "low": 0.5, "close": 1.5,
           "volume": 7}
    assert kite_candles([rec]) == [Candle(T0, 1.0, 2.0, 0.5, 1.5, 7)]


def test_rate_limiter_never_allows_more_than_rate_in_a_window():
    now = [0.0]
    calls: list[float] = []

    def sleep(s: float) -> None:
        now[0] += s

    rl = RateLimiter(3, per=1.0, margin=0.05, clock=lambda: now[0], sleep=sleep)
    for _ in range(10):
        rl.acquire()
        calls.append(now[0])
        now[0] += 0.01
    for i in range(len(calls) - 3):
        assert calls[i + 3] - calls[i] >= 1.0, calls
    assert calls[2] < 0.1  # the first three go at once
