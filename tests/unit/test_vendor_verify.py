"""Vendor verification, pure parts: which buckets are ready, how they compare, what is logged, the flags."""

from __future__ import annotations

import argparse
from datetime import datetime

import pytest

from compute.sessions import NSE
from compute.vendor_verify import in_session, mismatch_lines, narrow_to_ours, pending_window, verify_bars
from compute.vendor_verify_runner import add_vendor_flags, vendor_config
from ingestion.bar_merge import IST, Candle, Tolerance

MIN = 60_000


def ist(hh: int, mm: int, day: int = 20) -> int:
    return int(datetime(2026, 11, day, hh, mm, tzinfo=IST).timestamp() * 1000)


def bar(ts: int, close: float = 100.0, volume: int = 10, high: float | None = None) -> Candle:
    return Candle(ts, 100.0, high if high is not None else max(100.5, close), min(99.5, close), close, volume)


def day_of_5m(n: int = 75) -> list[Candle]:
    return [bar(ist(9, 15) + i * 5 * MIN, close=100.0 + i * 0.05, volume=100 + i) for i in range(n)]


# -- pending_window ---------------------------------------------------------------------------

def test_pending_window_when_cutoff_inside_a_bucket_then_ends_at_that_bucket_start():
    assert pending_window(NSE, "5m", ist(10, 7), ist(11, 0), None, ist(9, 15)) == (ist(9, 15), ist(10, 5))


def test_pending_window_when_our_bars_lag_then_ends_after_our_last_durable_bar():
    assert pending_window(NSE, "5m", ist(12, 0), ist(9, 50), None, ist(9, 15)) == (ist(9, 15), ist(9, 55))


def test_pending_window_when_verified_before_then_resumes_there():
    assert pending_window(NSE, "15m", ist(12, 0), ist(11, 45), ist(10, 45), ist(9, 15)) == (ist(10, 45), ist(12, 0))


def test_pending_window_when_lookback_starts_mid_bucket_then_whole_bucket_included():
    assert pending_window(NSE, "30m", ist(12, 0), ist(11, 15), None, ist(9, 50)) == (ist(9, 45), ist(11, 45))
    # a verified point older than the lookback does not reach back past it
    assert pending_window(NSE, "30m", ist(12, 0), ist(11, 15), ist(9, 15), ist(9, 50))[0] == ist(9, 45)


def test_pending_window_when_everything_verified_then_none():
    assert pending_window(NSE, "5m", ist(12, 0), ist(10, 0), ist(10, 5), ist(9, 15)) is None
    assert pending_window(NSE, "5m", ist(9, 16), ist(9, 15), None, ist(9, 15)) is None  # first bucket still open


def test_pending_window_when_day_over_then_truncated_last_60m_bucket_included():
    assert pending_window(NSE, "60m", ist(16, 0), ist(15, 15), ist(14, 15), ist(9, 15)) == (ist(14, 15), ist(15, 30))
    # before the close the 15:15 bucket is still open: only 14:15 is ready
    assert pending_window(NSE, "60m", ist(15, 29), ist(15, 15), ist(14, 15), ist(9, 15)) == (ist(14, 15), ist(15, 15))


def test_narrow_to_ours_when_lookback_spans_days_then_starts_at_open_of_our_first_day():
    window = (ist(9, 15, day=10), ist(15, 30))
    assert narrow_to_ours(NSE, window, [ist(15, 30, day=19), ist(9, 20), ist(9, 25)]) == (ist(9, 15), ist(15, 30))
    assert narrow_to_ours(NSE, (ist(11, 0), ist(15, 30)), [ist(11, 5)]) == (ist(11, 0), ist(15, 30))
    assert narrow_to_ours(NSE, window, [ist(15, 30, day=19), ist(8, 0)]) is None  # only outside the session


def test_in_session_is_0915_to_1530_ist():
    assert in_session(NSE, ist(9, 15)) and in_session(NSE, ist(15, 29))
    assert not in_session(NSE, ist(9, 14)) and not in_session(NSE, ist(15, 30))


# -- verify_bars -------------------------------------------------------------------------------

WINDOW = (ist(9, 15), ist(15, 30))


def test_identical_bars_when_verified_then_all_matched():
    ref = day_of_5m()
    res = verify_bars(ref, {c.ts: c for c in ref}, "5m", NSE, 0.05, Tolerance(), WINDOW, token=7)
    assert (res.checked, res.matched, res.reference) == (75, 75, 75)
    assert res.mismatches == [] and res.missing_ours == [] and res.missing_vendor == [] and res.invalid == []


def test_high_and_volume_off_when_verified_then_one_mismatch_with_both_fields():
    ref = day_of_5m()
    ours = {c.ts: c for c in ref}
    wrong = ref[3]
    ours[wrong.ts] = Candle(wrong.ts, wrong.open, wrong.high + 1.0, wrong.low, wrong.close, wrong.volume + 50)
    res = verify_bars(ref, ours, "5m", NSE, 0.05, Tolerance(), WINDOW, token=7)
    (m,) = res.mismatches
    assert m.ts == wrong.ts and m.fields == ("high", "volume") and m.action == "update"
    assert m.old == {"high": wrong.high + 1.0, "volume": wrong.volume + 50}
    assert m.new == {"high": wrong.high, "volume": wrong.volume} and m.bar == wrong
    assert res.field_counts() == {"high": 1, "volume": 1} and res.matched == 74
    plan = res.corrections()
    assert [c.action for c in plan.changes] == ["update"] and plan.inserted == 0

    # Applying the correction makes the next comparison clean.
    ours[wrong.ts] = m.bar
    assert verify_bars(ref, ours, "5m", NSE, 0.05, Tolerance(), WINDOW).mismatches == []


def test_small_difference_within_tolerance_when_verified_then_matched():
    ref = day_of_5m(3)
    ours = {c.ts: c for c in ref}
    ours[ref[1].ts] = Candle(ref[1].ts, ref[1].open, ref[1].high + 0.10, ref[1].low, ref[1].close, ref[1].volume + 1)
    assert verify_bars(ref, ours, "5m", NSE, 0.05, Tolerance.parse("price=2ticks,volume=1%"), WINDOW).mismatches == []
    assert len(verify_bars(ref, ours, "5m", NSE, 0.05, Tolerance.parse("price=1tick,volume=1%"), WINDOW)
               .mismatches) == 1


def test_one_sided_buckets_when_verified_then_counted_separately_and_nothing_to_correct():
    ref = day_of_5m(6)
    ours = {c.ts: c for c in ref if c.ts != ref[2].ts}
    extra = bar(ist(9, 15) + 6 * 5 * MIN)
    ours[extra.ts] = extra
    res = verify_bars(ref, ours, "5m", NSE, 0.05, Tolerance(), WINDOW)
    assert res.missing_ours == [ref[2].ts] and res.missing_vendor == [extra.ts]
    assert res.checked == 5 and res.corrections().changes == []


def test_bars_outside_window_or_session_when_verified_then_ignored():
    ref = day_of_5m(10)
    post_close = bar(ist(15, 30))
    ours = {c.ts: c for c in ref} | {post_close.ts: post_close}
    res = verify_bars(ref, ours, "5m", NSE, 0.05, Tolerance(), (ist(9, 25), ist(9, 45)))
    assert (res.checked, res.reference, res.missing_vendor) == (4, 4, [])
    res = verify_bars(ref, ours, "5m", NSE, 0.05, Tolerance(), (ist(9, 15), ist(16, 0)))
    assert res.missing_vendor == []  # the vendor has no post-close candles: not a mismatch


def test_misaligned_or_duplicate_vendor_candles_when_verified_then_invalid_not_compared():
    ours = {ist(9, 15): bar(ist(9, 15)), ist(10, 15): bar(ist(10, 15))}
    vendor = [bar(ist(9, 15)), bar(ist(9, 15)), bar(ist(10, 0))]  # a clock-aligned 60m candle at 10:00
    res = verify_bars(vendor, ours, "60m", NSE, 0.05, Tolerance(), WINDOW)
    assert [r for _ts, r in res.invalid] == ["duplicate candle", "not a session-anchored 60m bucket start"]
    assert res.checked == 1 and res.missing_vendor == [ist(10, 15)]


def test_many_mismatches_when_logged_then_limited_with_one_summary_line():
    ref = day_of_5m(30)
    ours = {c.ts: Candle(c.ts, c.open, c.high, c.low, c.close, c.volume + 1) for c in ref}
    res = verify_bars(ref, ours, "5m", NSE, 0.05, Tolerance(), WINDOW, token=42)
    lines = mismatch_lines([res], 5, corrected=False)
    assert len(lines) == 6
    assert lines[0].startswith("vendor mismatch tf=5m instrument_token=42 bar=2026-11-20 09:15 IST "
                               "ours->vendor: volume 101->100")
    assert lines[-1] == "vendor mismatches not logged one by one: 25 more (5m=25, not corrected)"


# -- flags -------------------------------------------------------------------------------------

def _parse(*argv: str) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    ap = argparse.ArgumentParser(prog="t")
    add_vendor_flags(ap)
    return ap, ap.parse_args(list(argv))


def test_flags_when_not_given_then_verification_off(monkeypatch):
    for k in ("VERIFY_VENDOR", "VERIFY_CORRECT", "VERIFY_TOLERANCE"):
        monkeypatch.delenv(k, raising=False)
    ap, args = _parse()
    assert vendor_config(ap, args, ("5m",)) is None


def test_flags_when_given_then_config_with_parsed_tolerance():
    ap, args = _parse("--verify-vendor", "kite", "--verify-every-s", "60", "--verify-lag-s", "30",
                      "--verify-tolerance", "price=1tick,volume=2%", "--verify-correct")
    cfg = vendor_config(ap, args, ("3m", "60m"))
    assert cfg is not None and cfg.tfs == ("3m", "60m") and cfg.correct and cfg.source == "vendor:kite"
    assert (cfg.every_s, cfg.lag_s) == (60, 30) and cfg.tolerance == Tolerance(price_ticks=1, volume_pct=2)


def test_flags_from_environment(monkeypatch):
    monkeypatch.setenv("VERIFY_VENDOR", "kite")
    monkeypatch.setenv("VERIFY_CORRECT", "1")
    monkeypatch.setenv("VERIFY_EVERY_S", "10")
    ap, args = _parse()
    cfg = vendor_config(ap, args, ("5m",))
    assert cfg is not None and cfg.correct and cfg.every_s == 10 and cfg.lag_s == 120


@pytest.mark.parametrize("argv, needle", [
    (["--verify-correct"], "--verify-correct needs --verify-vendor"),
    (["--verify-vendor", "kite", "--verify-tolerance", "price=lots"], "--verify-tolerance 'price=lots'"),
    (["--verify-vendor", "kite", "--verify-every-s", "0"], "--verify-every-s"),
    (["--verify-vendor", "kite", "--verify-rate", "50"], "--verify-rate"),
])
def test_bad_flags_exit_2_with_one_line(argv, needle, capsys, monkeypatch):
    monkeypatch.delenv("VERIFY_CORRECT", raising=False)
    monkeypatch.delenv("VERIFY_VENDOR", raising=False)
    ap, args = _parse(*argv)
    with pytest.raises(SystemExit) as exc:
        vendor_config(ap, args, ("5m",))
    assert exc.value.code == 2 and needle in capsys.readouterr().err


def test_service_help_lists_the_verify_flags(capsys):
    from compute.bar_aggregator_1m_to_multi import main

    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0
    assert all(f in out for f in ("--verify-vendor", "--verify-every-s", "--verify-lag-s", "--verify-tolerance",
                                  "--verify-correct", "price=0ticks,volume=0%"))
