"""The bar pipeline end to end against the real broker and Postgres.

Exactness: ticks with out-of-order arrival within the grace, duplicates, gaps,
quiet instruments and a cumulative-volume reset go through
bar_builder_1s -> bar_aggregator_1m -> bar_aggregator_1m_to_multi; every row
and field of bars_1s ... bars_60m must equal an independent pandas reference.

Crash safety: the same stream, produced gradually while the three services are
SIGKILLed at random moments and restarted; the final tables must be identical.
"""

from __future__ import annotations

import random
import signal
import threading
import time

import pytest

from compute.bars import ALL_TFS
from tests.e2e.pipeline import BAR_SERVICES, db_rows, produce_ticks, start_service, stop_all, wait_for_rows
from tests.reference.bars_pandas import frame_rows, reference_bars
from tests.reference.tickgen import TickGenConfig, generate_ticks

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


@pytest.fixture(scope="module")
def stream() -> tuple[list[dict], dict[str, list[tuple]]]:
    ticks = generate_ticks(TickGenConfig(seed=11, dense_instruments=5))
    ref = {tf: frame_rows(df) for tf, df in reference_bars(ticks).items()}
    return ticks, ref


# Wall-clock closing knobs (defaults in the services: builder 2 s, 1m 6 s, multi 45 s, silent close 30 s).
# Without kills the stream arrives in one go, so short values keep the test quick. With kills, an
# aggregator's input stalls while its upstream restarts (~3-10 s): silent close must exceed that, and each
# stage's wall grace must exceed what the stage before can hold back (builder: 2*grace + wall grace).
FAST = {"AGG_SILENT_CLOSE_MS": "6000", "AGG_MULTI_WALL_GRACE_MS": "15000"}
CRASH_SAFE = {"BAR_WALL_GRACE_MS": "4000", "AGG_1M_WALL_GRACE_MS": "10000", "AGG_SILENT_CLOSE_MS": "15000",
              "AGG_MULTI_WALL_GRACE_MS": "30000"}


def _env(service_env: dict[str, str], bootstrap: str, dsn: str, knobs: dict[str, str]) -> dict[str, str]:
    env = dict(service_env)
    env.update({"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "POSTGRES_DSN": dsn, **knobs})
    return env


def _assert_equal_to_reference(got: dict[str, list[tuple]], ref: dict[str, list[tuple]]) -> None:
    for tf in ALL_TFS:
        assert len(got[tf]) == len(ref[tf]), f"{tf}: {len(got[tf])} rows, reference {len(ref[tf])}"
        for g, r in zip(got[tf], ref[tf], strict=True):
            assert g == r, f"{tf}: row differs\n  got {g}\n  ref {r}"


@pytest.mark.parametrize("engine", ["native", "python"])
def test_pipeline_bars_equal_pandas_reference(broker, fresh_pg_dsn, service_env, tmp_path, stream, engine):
    ticks, ref = stream
    assert all(ref[tf] for tf in ALL_TFS), "the generated stream must produce bars of every timeframe"
    env = _env(service_env, broker, fresh_pg_dsn, {**FAST, "BAR_ENGINE": engine})
    produce_ticks(broker, ticks)
    procs = {m: start_service(m, env, tmp_path) for m in BAR_SERVICES}
    try:
        counts = wait_for_rows(fresh_pg_dsn, {tf: len(ref[tf]) for tf in ALL_TFS}, 120, procs)
        time.sleep(1.0)  # anything beyond the reference would show up now
        got = db_rows(fresh_pg_dsn)
    finally:
        codes = stop_all(procs)
    _assert_equal_to_reference(got, ref)
    assert counts
    assert all(c == 0 for c in codes.values()), f"graceful stop exit codes: {codes}"
    assert f"engine={engine}" in (tmp_path / "bar_builder_1s.log").read_text()


def test_pipeline_survives_random_sigkills_with_identical_tables(broker, fresh_pg_dsn, service_env, tmp_path,
                                                                  stream):
    ticks, ref = stream
    env = _env(service_env, broker, fresh_pg_dsn, CRASH_SAFE)
    rng = random.Random(2026)
    procs = {m: start_service(m, env, tmp_path) for m in BAR_SERVICES}
    # A live-like feed: small chunks, short pauses (well under the builder's wall grace).
    chunks = [ticks[i:i + 50] for i in range(0, len(ticks), 50)]
    done = threading.Event()

    def feed() -> None:
        for chunk in chunks:
            produce_ticks(broker, chunk)
            time.sleep(0.25)
        done.set()

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    kills: list[str] = []
    try:
        while not done.is_set() or len(kills) < 6:
            time.sleep(rng.uniform(1.5, 4.0))
            victim = rng.choice(BAR_SERVICES)
            procs[victim].send_signal(signal.SIGKILL)
            procs[victim].wait(10)
            kills.append(victim)
            procs[victim] = start_service(victim, env, tmp_path)
        feeder.join(120)
        wait_for_rows(fresh_pg_dsn, {tf: len(ref[tf]) for tf in ALL_TFS}, 150, procs)
        time.sleep(1.0)
        got = db_rows(fresh_pg_dsn)
    finally:
        stop_all(procs)
    assert len(kills) >= 5 and len(set(kills)) == 3, kills
    _assert_equal_to_reference(got, ref)
