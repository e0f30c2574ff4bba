"""The bar pipeline end to end against the real broker and Postgres, on the shipped wall-clock defaults.

Exactness: ticks with out-of-order arrival within the grace, duplicates, gaps,
quiet instruments and a cumulative-volume reset go through
bar_builder_1s -> bar_aggregator_1m -> bar_aggregator_1m_to_multi; every row
and field of bars_1s ... bars_60m must equal an independent pandas reference.

Crash safety: a stream produced at live pace (one second of event time per
second) while the three services are SIGKILLed at random moments and
restarted; the final tables must equal the reference, for both builder engines.

No test sets a wall-clock knob (compute.holds derives the defaults): every
stream ends with two sentinel ticks per instrument (tests.e2e.pipeline.with_sentinels)
that close the last buckets by event time, so a test waits seconds, not the
defaults' minutes, for its last bars. The streams' event times are on a past
day, so a quiet instrument's bar closes by wall time at ``seen + wall grace``,
never later than it would live (``max(bucket end, seen) + wall grace``): the
holds are tested at least as hard as live.
"""

from __future__ import annotations

import random
import signal
import threading
import time

import pytest

from compute import holds
from compute.bars import ALL_TFS
from tests.e2e.pipeline import (
    BAR_SERVICES,
    db_rows,
    live_feed,
    produce_ticks,
    sentinel_rows,
    service_env_without_wall_knobs,
    split_at,
    start_service,
    stop_all,
    wait_for_rows,
    with_sentinels,
)
from tests.reference.bars_pandas import frame_rows, reference_bars
from tests.reference.tickgen import TickGenConfig, generate_ticks, ist_ms

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

Stream = tuple[list[dict], dict[str, list[tuple]], int]


def _stream(cfg: TickGenConfig, cut_hhmm: str) -> Stream:
    ticks = generate_ticks(cfg)
    ref = {tf: frame_rows(df) for tf, df in reference_bars(ticks).items()}
    assert all(ref[tf] for tf in ALL_TFS), "the generated stream must produce bars of every timeframe"
    cut = ist_ms(cfg.day, cut_hhmm)
    return with_sentinels(ticks, cut), ref, cut


@pytest.fixture(scope="module")
def stream() -> Stream:
    # 08:55-15:50 IST; the last post-close 60 m bucket is 15:30-16:30.
    return _stream(TickGenConfig(seed=11, dense_instruments=5), "16:30")


@pytest.fixture(scope="module")
def live_stream() -> Stream:
    # 100 s of event time ending at 11:15 IST (a bucket edge of every timeframe), with a quiet
    # instrument whose gaps (8-30 s) straddle the 1 m stage's 20 s wall grace.
    cfg = TickGenConfig(seed=5, dense_instruments=3, windows=[("11:13:20", "11:15:00")],
                        span=("11:13:20", "11:15:00"), quiet_every_s=(8, 30), index_every_s=(1, 20))
    return _stream(cfg, "11:15")


def _env(service_env: dict[str, str], bootstrap: str, dsn: str, engine: str) -> dict[str, str]:
    env = service_env_without_wall_knobs(service_env, KAFKA_BOOTSTRAP_SERVERS=bootstrap, POSTGRES_DSN=dsn,
                                         BAR_ENGINE=engine)
    assert not set(holds.ENV.values()) & set(env), "the services must run on the shipped wall-clock defaults"
    return env


def _expected_counts(ticks: list[dict], ref: dict[str, list[tuple]], cut: int) -> dict[str, int]:
    extra = sentinel_rows(ticks, cut)
    return {tf: len(ref[tf]) + extra[tf] for tf in ALL_TFS}


def _assert_equal_to_reference(got: dict[str, list[tuple]], ref: dict[str, list[tuple]], ticks: list[dict],
                               cut: int) -> None:
    before, after = split_at(got, cut)
    for tf in ALL_TFS:
        assert len(before[tf]) == len(ref[tf]), f"{tf}: {len(before[tf])} rows, reference {len(ref[tf])}"
        for g, r in zip(before[tf], ref[tf], strict=True):
            assert g == r, f"{tf}: row differs\n  got {g}\n  ref {r}"
    # At or after the cut: only the sentinels' own bars (1 s at cut and cut + 61 s, 1 m at cut).
    tokens = {t["instrument_token"] for t in ticks}
    allowed = {"1s": {cut, cut + 61_000}, "1m": {cut}}
    for tf in ALL_TFS:
        stray = [r for r in after[tf] if r[0] not in tokens or r[2] not in allowed.get(tf, set())]
        assert not stray, f"{tf}: rows that are not the sentinels' own: {stray[:3]}"


@pytest.mark.parametrize("engine", ["native", "python"])
def test_pipeline_bars_equal_pandas_reference(broker, fresh_pg_dsn, service_env, tmp_path, stream, engine):
    ticks, ref, cut = stream
    env = _env(service_env, broker, fresh_pg_dsn, engine)
    produce_ticks(broker, ticks)
    procs = {m: start_service(m, env, tmp_path) for m in BAR_SERVICES}
    expected = _expected_counts(ticks, ref, cut)
    try:
        wait_for_rows(fresh_pg_dsn, expected, 120, procs)
        time.sleep(1.0)  # anything beyond the reference would show up now
        got = db_rows(fresh_pg_dsn)
    finally:
        codes = stop_all(procs)
    assert {tf: len(rows) for tf, rows in got.items()} == expected
    _assert_equal_to_reference(got, ref, ticks, cut)
    assert all(c == 0 for c in codes.values()), f"graceful stop exit codes: {codes}"
    assert f"engine={engine}" in (tmp_path / "bar_builder_1s.log").read_text()


@pytest.mark.parametrize("engine", ["native", "python"])
def test_pipeline_when_live_feed_and_random_sigkills_on_default_knobs_then_tables_equal_reference(
        broker, fresh_pg_dsn, service_env, tmp_path, live_stream, engine):
    ticks, ref, cut = live_stream
    env = _env(service_env, broker, fresh_pg_dsn, engine)
    rng = random.Random(2026)
    procs = {m: start_service(m, env, tmp_path) for m in BAR_SERVICES}
    expected = _expected_counts(ticks, ref, cut)
    kills: list[str] = []
    try:
        done = threading.Event()
        feeder = live_feed(broker, ticks, done)
        victim = ""
        while not done.is_set() or len(kills) < 8:
            time.sleep(rng.uniform(4.0, 9.0))
            # never the same service twice in a row: one restart at a time stays within the silent close
            victim = rng.choice([m for m in BAR_SERVICES if m != victim])
            assert procs[victim].poll() is None, f"{victim} exited by itself with {procs[victim].returncode}"
            procs[victim].send_signal(signal.SIGKILL)
            procs[victim].wait(10)
            kills.append(victim)
            procs[victim] = start_service(victim, env, tmp_path)
        feeder.join(30)
        wait_for_rows(fresh_pg_dsn, expected, 150, procs)
        time.sleep(1.0)
        got = db_rows(fresh_pg_dsn)
    finally:
        stop_all(procs)
    assert len(kills) >= 8 and set(kills) == set(BAR_SERVICES), kills
    assert {tf: len(rows) for tf, rows in got.items()} == expected
    _assert_equal_to_reference(got, ref, ticks, cut)
    log = (tmp_path / "bar_builder_1s.log").read_text()
    assert log.count(f"engine={engine}") == 1 + kills.count("compute.bar_builder_1s")
