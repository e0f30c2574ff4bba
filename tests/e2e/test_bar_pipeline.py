"""The bar pipeline end to end against the real broker and Postgres, on the shipped wall-clock defaults.

Exactness: ticks with out-of-order arrival within the grace, duplicates, gaps,
quiet instruments and a cumulative-volume reset go through
bar_builder_1s -> bar_aggregator_1m -> bar_aggregator_1m_to_multi; every row
and field of bars_1s ... bars_60m must equal an independent pandas reference.

Crash safety: a live stream (event times are the real send times, one second
of stream per second) while the three services are SIGKILLed and restarted;
the builder is killed right after sparse instruments' last ticks before a
minute ends, so their 1 s bars are held across the restart and the 1 m
aggregator's wall grace is what keeps their 1 m bars whole. The final tables
must equal the reference, for both builder engines (the two engines' runs go
side by side on one live stream, each on its own broker, database and
processes: they wait on the wall clock, so running them in turn only doubles
the wait).

No test sets a wall-clock knob (compute.holds derives the defaults): every
stream ends with two sentinel ticks per instrument (tests.e2e.pipeline.with_sentinels)
that close, by event time, every bucket ending by a minute after the cut, so a
test waits seconds, not the defaults' minutes. Buckets still open then (in the
live test, multi-minute ones around the cut) must not be in the tables.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from compute import holds
from compute.bars import ALL_TFS
from tests.conftest import _fresh_db as fresh_db, tansu_broker
from tests.e2e.pipeline import (
    BAR_SERVICES,
    base_service_env,
    bucket_end,
    closed_by,
    db_rows,
    live_feed,
    produce_ticks,
    selected_engines,
    service_env_without_wall_knobs,
    shift_to_live,
    start_service,
    stop_all,
    wait_for_rows,
    with_sentinels,
)
from tests.reference.bars_pandas import frame_rows, reference_bars
from tests.reference.tickgen import INDEX_TOKEN, QUIET_TOKEN, TickGenConfig, generate_ticks, ist_ms

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

Stream = tuple[list[dict], dict[str, list[tuple]], int]
BUILDER = "compute.bar_builder_1s"
CLONE_TOKEN = 500003  # zlib.crc32(b"500003") % 3 == 2


def _reference(ticks: list[dict]) -> dict[str, list[tuple]]:
    return {tf: frame_rows(df) for tf, df in reference_bars(ticks).items()}


@pytest.fixture(scope="module")
def stream() -> Stream:
    # 2024-03-12 08:55-15:50 IST, fed as a backlog; the last post-close 60 m bucket is 15:30-16:30.
    cfg = TickGenConfig(seed=11, dense_instruments=5)
    ticks = generate_ticks(cfg)
    assert all(_reference(ticks)[tf] for tf in ALL_TFS), "the stream must produce bars of every timeframe"
    ticks, settle = with_sentinels(ticks, ist_ms(cfg.day, "16:30"))
    return ticks, _reference(ticks), settle


def _live_stream() -> Stream:
    """90-150 s of live ticks ending at the first minute boundary ``cut`` at least 98 s from now.

    Seven dense instruments (gapless ones on each of the 3 partitions, so the 1 m aggregator's clock
    runs), a quiet and an index instrument, each of the two sparse ones with an extra tick 0.7 s
    before every minute boundary (the bar the builder kill holds back). The first tick goes out
    about 8 s from now (the services start meanwhile).
    """
    lead_ms, min_span_ms = 8000, 90_000
    now = int(time.time() * 1000)
    live_cut = -(-(now + lead_ms + min_span_ms) // 60_000) * 60_000
    span_s = (live_cut - now - lead_ms) // 1000
    gen_cut = ist_ms("2024-03-12", "11:15")
    start_ms = gen_cut - span_s * 1000
    start = time.strftime("%H:%M:%S", time.gmtime((start_ms + 19_800_000) / 1000))
    cfg = TickGenConfig(seed=5, dense_instruments=6, windows=[(start, "11:15:00")], span=(start, "11:15:00"),
                        quiet_every_s=(8, 30), index_every_s=(1, 20))
    ticks, cut = shift_to_live(generate_ticks(cfg), gen_cut, lead_s=lead_ms / 1000 - 1, now_ms=now)
    assert cut == live_cut
    first = ticks[0]["_arrival_ms"]
    extra = []
    for boundary in range(cut - 60_000 * ((cut - first) // 60_000), cut + 1, 60_000):
        for tok in (QUIET_TOKEN, INDEX_TOKEN):
            before = [t for t in ticks if t["instrument_token"] == tok and t["exchange_ts"] < boundary - 700]
            if before:
                ts = boundary - 700
                extra.append({**before[-1], "exchange_ts": ts, "recv_ts": ts + 10, "_arrival_ms": ts + 100})
    # a gapless dense instrument on partition 2 too (CRC32 of the key, librdkafka's default), so
    # every input partition of the 1 m aggregator flows and its clock keeps time with the wall
    extra += [{**t, "instrument_token": CLONE_TOKEN} for t in ticks if t["instrument_token"] == 400000]
    ticks, settle = with_sentinels(sorted(ticks + extra, key=lambda t: t["_arrival_ms"]), cut)
    return ticks, _reference(ticks), settle


def _env(service_env: dict[str, str], bootstrap: str, dsn: str, engine: str) -> dict[str, str]:
    env = service_env_without_wall_knobs(service_env, KAFKA_BOOTSTRAP_SERVERS=bootstrap, POSTGRES_DSN=dsn,
                                         BAR_ENGINE=engine)
    assert not set(holds.ENV.values()) & set(env), "the services must run on the shipped wall-clock defaults"
    return env


def _expected_counts(ref: dict[str, list[tuple]], settle: int) -> dict[str, int]:
    """Rows that must be in the tables soon: the reference's buckets that end by ``settle``."""
    return {tf: len(rows) for tf, rows in closed_by(ref, settle).items()}


def _assert_equal_to_reference(got: dict[str, list[tuple]], ref: dict[str, list[tuple]], settle: int) -> None:
    closed_got, closed_ref = closed_by(got, settle), closed_by(ref, settle)
    for tf in ALL_TFS:
        assert len(closed_got[tf]) == len(closed_ref[tf]), \
            f"{tf}: {len(closed_got[tf])} rows, reference {len(closed_ref[tf])}"
        for g, r in zip(closed_got[tf], closed_ref[tf], strict=True):
            assert g == r, f"{tf}: row differs\n  got {g}\n  ref {r}"
        # A bucket still open at settle time was not closed early; after it, at most the last sentinel's
        # 1 s bar (it closes by wall time 2 s after its end, 1 min after the feed).
        early = [r for r in got[tf] if bucket_end(r) > settle and (tf, r[2]) != ("1s", settle + 2000)]
        assert not early, f"{tf}: bars of buckets still open at {settle}: {early[:3]}"


@pytest.mark.parametrize("engine", ["native", "python"])
def test_pipeline_bars_equal_pandas_reference(broker, fresh_pg_dsn, service_env, tmp_path, stream, engine):
    ticks, ref, settle = stream
    env = _env(service_env, broker, fresh_pg_dsn, engine)
    produce_ticks(broker, ticks)
    procs = {m: start_service(m, env, tmp_path) for m in BAR_SERVICES}
    expected = _expected_counts(ref, settle)
    # every bar but, per instrument (8), the one holding the last sentinel (its bucket is still open)
    assert expected == {tf: len(ref[tf]) - 8 for tf in ALL_TFS}
    try:
        wait_for_rows(fresh_pg_dsn, expected, 120, procs)
        time.sleep(1.0)  # anything beyond the reference would show up now
        got = db_rows(fresh_pg_dsn)
    finally:
        codes = stop_all(procs)
    assert {tf: len(rows) for tf, rows in closed_by(got, settle).items()} == expected
    _assert_equal_to_reference(got, ref, settle)
    assert all(c == 0 for c in codes.values()), f"graceful stop exit codes: {codes}"
    assert f"engine={engine}" in (tmp_path / "bar_builder_1s.log").read_text()


def _kill_plan(ticks: list[dict], cut: int, rng: random.Random) -> list[tuple[float, str]]:
    """``(wall time s, service)``: the builder 0.3 s after each minute boundary (sparse bars held), the
    aggregators and more builder kills in between; at least 5 s apart, so one restart at a time."""
    first = ticks[0]["_arrival_ms"]
    plan = [((b + 300) / 1000, BUILDER) for b in range(first - first % 60_000 + 60_000, cut + 1, 60_000)]
    t = first / 1000 + 6
    others = ["compute.bar_aggregator_1m", "compute.bar_aggregator_1m_to_multi", BUILDER]
    while t < cut / 1000 - 3:
        if all(abs(t - p) >= 5 for p, _ in plan):
            plan.append((t, others[len(plan) % 3]))
        t += rng.uniform(7.0, 11.0)
    return sorted(plan)


@dataclass
class LiveRun:
    """What one engine's live kill run left behind, for its test to check."""

    ref: dict[str, list[tuple]]
    settle: int
    expected: dict[str, int]
    kills: list[str]
    got: dict[str, list[tuple]]
    builder_log: str


def _live_run(engine: str, stream: Stream, plan: list[tuple[float, str]], pg_server: str,
              log_dir: Path) -> LiveRun:
    """Feed the live stream to a fresh broker, database and pipeline on ``engine``, SIGKILLing by ``plan``."""
    ticks, ref, settle = stream
    with tansu_broker() as broker:
        dsn = fresh_db(pg_server)
        env = _env(base_service_env(), broker, dsn, engine)
        procs = {m: start_service(m, env, log_dir) for m in BAR_SERVICES}
        expected = _expected_counts(ref, settle)
        kills: list[str] = []
        try:
            done = threading.Event()
            feeder = live_feed(broker, ticks, done)
            for at, victim in plan:
                time.sleep(max(0.0, at - time.time()))
                assert procs[victim].poll() is None, f"{victim} exited by itself with {procs[victim].returncode}"
                procs[victim].send_signal(signal.SIGKILL)
                procs[victim].wait(10)
                kills.append(victim)
                procs[victim] = start_service(victim, env, log_dir)
            feeder.join(30)
            assert done.is_set()
            wait_for_rows(dsn, expected, 120, procs)
            time.sleep(1.0)
            got = db_rows(dsn)
        finally:
            stop_all(procs)
    return LiveRun(ref, settle, expected, kills, got, (log_dir / "bar_builder_1s.log").read_text())


@pytest.fixture(scope="module")
def live_runs(request: pytest.FixtureRequest, pg_server: str,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Future[LiveRun]]]:
    """Both engines' live kill runs, side by side on one live stream (each its own broker, database and
    processes): the runs are paced by the wall clock, so running them one after the other only waits
    twice as long. Each engine's test waits for its own run and checks it."""
    stream = _live_stream()
    plan = _kill_plan(stream[0], stream[2] - 60_000, random.Random(2026))
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="live-run") as pool:
        runs = {engine: pool.submit(_live_run, engine, stream, plan, pg_server,
                                    tmp_path_factory.mktemp(f"live-{engine}"))
                for engine in selected_engines(request, LIVE_TEST)}
        yield runs


LIVE_TEST = "test_pipeline_when_live_feed_and_sigkills_on_default_knobs_then_tables_equal_reference"


@pytest.mark.parametrize("engine", ["native", "python"])
def test_pipeline_when_live_feed_and_sigkills_on_default_knobs_then_tables_equal_reference(live_runs, engine):
    run = live_runs[engine].result(timeout=600)
    kills, got, ref, settle, expected = run.kills, run.got, run.ref, run.settle, run.expected
    assert len(kills) >= 8 and set(kills) == set(BAR_SERVICES), kills
    assert {tf: len(rows) for tf, rows in closed_by(got, settle).items()} == expected
    _assert_equal_to_reference(got, ref, settle)
    assert run.builder_log.count(f"engine={engine}") == 1 + kills.count(BUILDER)
