"""BarRollup (1s -> 1m, 1m -> 3m..60m), session anchoring, and the whole chain vs the pandas reference."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given, settings, strategies as st

from compute.bar_builder_core import BarBuilder
from compute.bar_rollup import BarRollup
from compute.bars import MULTI_MINUTE_TFS, BadBarInput, Bar, bucket_bounds
from compute.sessions import DEFAULT_SESSIONS, NSE, Session, SessionCalendar
from tests.reference.bars_pandas import ALL_TFS, frame_rows, reference_bars
from tests.reference.chain import run_chain
from tests.reference.tickgen import TickGenConfig, generate_ticks, ist_ms

IST = timezone(timedelta(hours=5, minutes=30))
DAY = "2024-03-12"
TOKEN = 738561


def at(hhmmss: str, day: str = DAY) -> int:
    return ist_ms(day, hhmmss)


def hhmm(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, IST).strftime("%H:%M")


def child(ts: int, o: float, h: float, low: float, c: float, volume: int = 10, ticks: int = 2,
          tf: str = "1m", token: int = TOKEN, cum: int | None = None) -> dict[str, Any]:
    return {"instrument_token": token, "tf": tf, "ts": ts, "open": o, "high": h, "low": low, "close": c,
            "volume": volume, "ticks": ticks, "cum_volume": cum}


def feed(rollup: BarRollup, children: list[dict[str, Any]], partition: int = 0, start: int = 0) -> None:
    for i, c in enumerate(children):
        rollup.add(c, partition, start + i)


# --------------------------------------------------------------------------- session anchoring
@pytest.mark.parametrize(("tf", "t", "start", "end"), [
    ("60m", "09:15", "09:15", "10:15"),
    ("60m", "10:14", "09:15", "10:15"),
    ("60m", "10:15", "10:15", "11:15"),
    ("60m", "14:59", "14:15", "15:15"),
    ("60m", "15:15", "15:15", "15:30"),   # last session bucket truncated at the close
    ("60m", "15:29", "15:15", "15:30"),
    ("30m", "15:20", "15:15", "15:30"),
    ("30m", "09:44", "09:15", "09:45"),
    ("15m", "15:16", "15:15", "15:30"),
    ("5m", "09:19", "09:15", "09:20"),
    ("3m", "15:28", "15:27", "15:30"),
    ("60m", "09:00", "08:15", "09:15"),   # pre-open: anchored backwards from the open
    ("60m", "09:14", "08:15", "09:15"),
    ("5m", "09:08", "09:05", "09:10"),
    ("60m", "00:10", "00:00", "00:15"),   # first bucket of the day truncated at midnight
    ("60m", "15:30", "15:30", "16:30"),   # post-close: anchored to the close
    ("60m", "23:45", "23:30", "00:00"),   # last bucket truncated at midnight
    ("1m", "15:29", "15:29", "15:30"),
])
def test_nse_bucket_bounds(tf: str, t: str, start: str, end: str) -> None:
    lo, hi = bucket_bounds(at(t + ":37"), tf, NSE)
    assert (hhmm(lo), hhmm(hi)) == (start, end)
    assert lo <= at(t + ":37") < hi


def test_sixty_minute_buckets_over_the_nse_session() -> None:
    starts = sorted({bucket_bounds(at(f"{h:02d}:{m:02d}"), "60m", NSE) for h in range(9, 16) for m in range(60)
                     if at("09:15") <= at(f"{h:02d}:{m:02d}") < at("15:30")})
    assert [(hhmm(a), hhmm(b)) for a, b in starts] == [
        ("09:15", "10:15"), ("10:15", "11:15"), ("11:15", "12:15"), ("12:15", "13:15"), ("13:15", "14:15"),
        ("14:15", "15:15"), ("15:15", "15:30")]


@given(ts=st.integers(at("00:00"), at("23:59:59") + 999), tf=st.sampled_from(MULTI_MINUTE_TFS))
def test_anchored_buckets_tile_the_day_and_nest_every_minute(ts: int, tf: str) -> None:
    lo, hi = bucket_bounds(ts, tf, NSE)
    assert lo <= ts < hi
    assert bucket_bounds(lo, tf, NSE) == (lo, hi) and bucket_bounds(hi - 1, tf, NSE) == (lo, hi)
    m_lo, m_hi = bucket_bounds(ts, "1m", NSE)
    assert lo <= m_lo and m_hi <= hi


def test_calendar_uses_each_exchanges_session() -> None:
    cal = SessionCalendar(exchange_of={1: "MCX", 2: "NSE"})
    assert cal.session_for(1) is DEFAULT_SESSIONS["MCX"] and cal.session_for(3) is NSE
    lo, hi = bucket_bounds(at("23:10"), "60m", cal.session_for(1))
    assert (hhmm(lo), hhmm(hi)) == ("23:00", "23:30")


def test_session_validation() -> None:
    with pytest.raises(ValueError):
        Session.from_hhmm("X", "15:30", "09:15")
    with pytest.raises(ValueError):
        Session.from_hhmm("X", "9:15am", "15:30")
    with pytest.raises(ValueError):
        Session("X", 1, 60_000 * 60)
    with pytest.raises(ValueError):
        SessionCalendar(exchange_of={1: "NOPE"})


# --------------------------------------------------------------------------- rollup contents
def test_one_minute_bar_from_one_second_children() -> None:
    rollup = BarRollup("1s", ["1m"])
    t = at("10:00")
    feed(rollup, [child(t + 2000, 10, 11, 9.5, 10.5, 5, 1, "1s", cum=105),
                  child(t + 59_000, 10.5, 12, 10, 11.5, 7, 3, "1s", cum=112),
                  child(t + 60_000, 11.5, 11.5, 11.5, 11.5, 1, 1, "1s", cum=113)])
    (bar,) = rollup.advance(None)
    assert bar.to_row() == (TOKEN, "1m", t, 10.0, 12.0, 9.5, 11.5, 12, 4, 112)


def test_sixty_minute_bars_are_anchored_at_0915_and_truncated_at_1530() -> None:
    rollup = BarRollup("1m", ["60m"])
    minutes = ["09:15", "10:14", "10:15", "15:14", "15:15", "15:29"]
    feed(rollup, [child(at(m), 10 + i, 10 + i, 10 + i, 10 + i, volume=i) for i, m in enumerate(minutes)])
    bars = rollup.advance(None) + rollup.close_all()
    assert [(hhmm(b.ts), b.open, b.close, b.volume) for b in bars] == [
        ("09:15", 10, 11, 1), ("10:15", 12, 12, 2), ("14:15", 13, 13, 3), ("15:15", 14, 15, 9)]


def test_parent_closes_as_soon_as_its_last_child_arrives() -> None:
    rollup = BarRollup("1m", ["5m", "60m"])
    feed(rollup, [child(at("09:15"), 1, 1, 1, 1), child(at("09:19"), 2, 2, 2, 2)])
    assert [(b.tf, hhmm(b.ts)) for b in rollup.advance(None)] == [("5m", "09:15")]
    rollup.add(child(at("15:29"), 3, 3, 3, 3), 0, 2)
    assert [(b.tf, hhmm(b.ts)) for b in rollup.advance(None)] == [("5m", "15:25"), ("60m", "09:15"),
                                                                  ("60m", "15:15")]


def test_duplicate_child_replaces_the_earlier_copy_and_is_counted() -> None:
    rollup = BarRollup("1m", ["5m"])
    c = child(at("09:16"), 10, 11, 9, 10.5, volume=100, ticks=4)
    feed(rollup, [child(at("09:15"), 9, 9, 9, 9, volume=1, ticks=1), c, dict(c)])
    (bar,) = rollup.close_all()
    assert (bar.volume, bar.ticks, rollup.duplicate_bars) == (101, 5, 1)


def test_child_of_an_emitted_parent_is_late_and_dropped() -> None:
    rollup = BarRollup("1m", ["5m"])
    feed(rollup, [child(at("09:15"), 1, 1, 1, 1), child(at("09:20"), 2, 2, 2, 2)])
    assert len(rollup.advance(None)) == 1
    rollup.add(child(at("09:17"), 5, 5, 5, 5), 0, 2)
    assert rollup.late_bars == 1
    assert [hhmm(b.ts) for b in rollup.close_all()] == ["09:20"]


def test_replayed_children_after_upstream_restart_change_nothing() -> None:
    rollup = BarRollup("1m", ["5m"])
    kids = [child(at(f"09:{m}"), m, m + 1, m - 1, m, volume=m) for m in range(15, 22)]
    feed(rollup, kids[:5])
    feed(rollup, kids[2:], start=5)  # upstream re-sends what it had produced before its crash
    bars = rollup.advance(None) + rollup.close_all()
    assert [(hhmm(b.ts), b.volume) for b in bars] == [("09:15", 85), ("09:20", 41)]


def test_quiet_instrument_parent_closes_by_wall_clock() -> None:
    rollup = BarRollup("1s", ["1m"], wall_grace_ms=8000)
    t = at("10:00")
    rollup.add(child(t + 5000, 1, 1, 1, 1, tf="1s"), 0, 0)
    assert rollup.advance(t + 9000) == []
    assert rollup.advance(t + 60_000 + 7999) == []
    assert [b.ts for b in rollup.advance(t + 68_000)] == [t]


def test_committable_offsets_hold_children_of_open_parents() -> None:
    rollup = BarRollup("1m", ["5m", "15m"])
    feed(rollup, [child(at("09:15"), 1, 1, 1, 1), child(at("09:19"), 1, 1, 1, 1)], start=100)
    rollup.advance(None)
    assert rollup.committable_offsets() == {0: 100}   # the 15m parent still holds offset 100
    rollup.close_all()
    assert rollup.committable_offsets() == {0: 102}


def test_restore_skips_children_of_durable_parents() -> None:
    rollup = BarRollup("1m", ["5m"])
    rollup.restore(TOKEN, "5m", at("09:15"))
    feed(rollup, [child(at("09:18"), 1, 1, 1, 1), child(at("09:21"), 2, 2, 2, 2)])
    bars = rollup.close_all()
    assert [hhmm(b.ts) for b in bars] == ["09:20"] and rollup.skipped_bars == 1


def test_bad_children_are_rejected() -> None:
    rollup = BarRollup("1m", ["5m"])
    with pytest.raises(BadBarInput):
        rollup.add(child(at("09:15"), 1, 1, 1, 1, tf="1s"), 0, 0)
    with pytest.raises(BadBarInput):
        rollup.add({"instrument_token": 1, "tf": "1m"}, 0, 0)
    with pytest.raises(BadBarInput):
        rollup.add(dict(child(at("09:15"), 1, 1, 1, 1), volume=1.5), 0, 0)
    with pytest.raises(BadBarInput):
        rollup.add(dict(child(at("09:15"), 1, 1, 1, 1), open="1.0"), 0, 0)
    assert rollup.committable_offsets() == {} and rollup.open_bars == 0


_OUT_OF_RANGE = [
    ("nan open", {"open": float("nan")}),
    ("inf high", {"high": float("inf")}),
    ("-inf low", {"low": float("-inf")}),
    ("high < low", {"high": 9.0, "low": 10.0, "open": 9.0, "close": 9.0}),
    ("open above high", {"open": 12.0}),
    ("close below low", {"close": 8.0}),
    ("volume 2**64-1", {"volume": 2**64 - 1}),
    ("negative volume", {"volume": -1}),
    ("ticks 2**40", {"ticks": 2**40}),
    ("negative ticks", {"ticks": -1}),
    ("cum_volume -5", {"cum_volume": -5}),
    ("cum_volume 2**40", {"cum_volume": 2**40}),
    ("bool volume", {"volume": True}),
    ("token 0", {"instrument_token": 0}),
    ("token 2**63", {"instrument_token": 2**63}),
    ("ts before 2000", {"ts": 60_000}),
    ("ts not aligned to 1m", {"ts": at("10:00") + 1}),
]


@pytest.mark.parametrize(("case", "change"), _OUT_OF_RANGE, ids=[c for c, _ in _OUT_OF_RANGE])
def test_out_of_range_child_is_rejected_and_changes_nothing(case: str, change: dict[str, Any]) -> None:
    rollup = BarRollup("1m", ["5m"])
    good = child(at("10:00"), 10, 11, 9, 10.5, cum=100)
    rollup.add(good, 0, 0)
    before = (rollup.committable_offsets(), rollup.open_bars, rollup.accepted_bars, rollup.late_bars)
    with pytest.raises(BadBarInput):
        rollup.add({**good, "ts": at("10:01"), **change}, 0, 1)
    assert (rollup.committable_offsets(), rollup.open_bars, rollup.accepted_bars, rollup.late_bars) == before
    assert rollup._wm.last[0] == 0  # noqa: SLF001 - the rejected offset was not recorded
    (bar,) = rollup.close_all()
    assert bar.to_row() == (TOKEN, "5m", at("10:00"), 10.0, 11.0, 9.0, 10.5, 10, 2, 100)


def test_children_at_the_caps_roll_up_into_a_parent_within_its_caps() -> None:
    """Sixty 1m children at the 1m caps make a 60m parent that the 60m caps (and the columns) accept."""
    from schemas.limits import max_bar_ticks, max_bar_volume
    rollup = BarRollup("1m", ["60m"])
    start = at("10:15")
    feed(rollup, [child(start + i * 60_000, 1, 1, 1, 1, max_bar_volume("1m"), max_bar_ticks("1m"),
                        cum=2**40 - 1) for i in range(60)])
    (bar,) = rollup.close_all()
    assert bar.volume == max_bar_volume("60m") < 2**63
    assert bar.ticks == max_bar_ticks("60m") < 2**31


def test_invalid_configuration_is_refused() -> None:
    with pytest.raises(ValueError):
        BarRollup("1m", ["1s"])
    with pytest.raises(ValueError):
        BarRollup("1m", [])
    with pytest.raises(ValueError):
        BarRollup("1m", ["5m"]).restore(TOKEN, "15m", at("09:15"))


def test_drop_partitions_forgets_instruments() -> None:
    rollup = BarRollup("1m", ["5m"])
    rollup.add(child(at("09:15"), 1, 1, 1, 1, token=1), 0, 0)
    rollup.add(child(at("09:15"), 1, 1, 1, 1, token=2), 1, 0)
    rollup.drop_partitions([0])
    assert [b.instrument_token for b in rollup.close_all()] == [2]
    assert rollup.committable_offsets() == {1: 1}


def test_bar_objects_are_accepted_as_children() -> None:
    rollup = BarRollup("1s", ["1m"])
    rollup.add(Bar(TOKEN, "1s", at("10:00"), 1.0, 2.0, 0.5, 1.5, 3, 1, 3), 0, 0)
    (bar,) = rollup.close_all()
    assert bar.to_row() == (TOKEN, "1m", at("10:00"), 1.0, 2.0, 0.5, 1.5, 3, 1, 3)


# --------------------------------------------------------------------------- whole chain vs reference
def assert_chain_matches_reference(ticks: list[dict[str, Any]], **kwargs: Any) -> None:
    chain = run_chain(ticks, **kwargs)
    got = chain.by_tf()
    ref = reference_bars(ticks)
    assert (chain.builder.late_ticks, chain.r1m.late_bars, chain.rmulti.late_bars) == (0, 0, 0)
    for tf in ALL_TFS:
        assert got.get(tf, []) == frame_rows(ref[tf]), tf
    keys = [bar.key for bar in chain.emitted]
    assert len(keys) == len(set(keys)), "every bar is emitted exactly once"


def test_chain_matches_reference_on_a_generated_day_with_a_live_wall_clock() -> None:
    ticks = generate_ticks(TickGenConfig(seed=11))
    assert_chain_matches_reference(ticks, wall_clock=True)


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), second_resolution=st.booleans(), wall_clock=st.booleans(),
       batch=st.sampled_from([1, 20, 400]), disorder=st.sampled_from([0, 800, 2000]))
def test_chain_matches_reference_on_random_streams(seed: int, second_resolution: bool, wall_clock: bool,
                                                   batch: int, disorder: int) -> None:
    cfg = TickGenConfig(seed=seed, dense_instruments=2, second_resolution=second_resolution,
                        max_disorder_ms=disorder, windows=[("09:14:40", "09:15:40"), ("15:29:30", "15:30:20")],
                        span=("09:00", "15:45"), quiet_every_s=(60, 600))
    assert_chain_matches_reference(generate_ticks(cfg), wall_clock=wall_clock, batch=batch)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), crash_frac=st.floats(0.05, 0.95), last_durable=st.booleans())
def test_rollup_crash_and_restart_gives_the_same_parents(seed: int, crash_frac: float, last_durable: bool) -> None:
    # children: 1m bars of a generated day, as the 1m topic would carry them
    cfg = TickGenConfig(seed=seed, dense_instruments=2, span=("09:00", "15:45"), quiet_every_s=(30, 300))
    builder, r1m = BarBuilder(), BarRollup("1s", ["1m"])
    for i, t in enumerate(generate_ticks(cfg)):
        builder.add(t, 0, i)
    for i, b in enumerate(builder.close_all()):
        r1m.add(b, 0, i)
    children = [b.to_dict() for b in r1m.advance(None) + r1m.close_all()]
    messages = [(c, c["instrument_token"] % 2, 0) for c in children]
    offsets = [0, 0]
    for idx, (c, p, _) in enumerate(messages):
        messages[idx] = (c, p, offsets[p])
        offsets[p] += 1

    def fresh() -> BarRollup:
        return BarRollup("1m", list(MULTI_MINUTE_TFS))

    whole = fresh()
    for c, p, o in messages:
        whole.add(c, p, o)
    expected = {b.key: b for b in whole.advance(None) + whole.close_all()}

    crash_at, batch = max(1, int(len(messages) * crash_frac)), 16
    durable: dict[tuple[int, str, int], Bar] = {}
    produced: dict[tuple[int, str, int], Bar] = {}
    committed: dict[int, int] = {}
    first = fresh()
    for lo in range(0, crash_at, batch):
        for c, p, o in messages[lo:min(lo + batch, crash_at)]:
            first.add(c, p, o)
        out = first.advance(None)
        produced.update((b.key, b) for b in out)
        last_batch = lo + batch >= crash_at
        if not last_batch or last_durable:
            durable.update((b.key, b) for b in out)
        if not last_batch:
            committed = first.committable_offsets()
    second = fresh()
    latest: dict[tuple[int, str], int] = {}
    for token, tf, ts in durable:
        latest[(token, tf)] = max(ts, latest.get((token, tf), ts))
    for (token, tf), ts in latest.items():
        second.restore(token, tf, ts)
    for c, p, o in messages:
        if o >= committed.get(p, 0):
            second.add(c, p, o)
    for bar in second.advance(None) + second.close_all():
        if bar.key in produced:
            assert orjson.dumps(produced[bar.key].to_dict()) == orjson.dumps(bar.to_dict())
        durable[bar.key] = bar
    assert durable == expected
