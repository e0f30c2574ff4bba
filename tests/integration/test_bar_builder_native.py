"""The bar builder service on its native engine (librdkafka batches -> C++ core), as a real process.

Poison ticks go to ``dlq`` with provenance headers while good ticks become bars; the service
survives an empty restart of the embedded broker; the python engine gives the same rows. The
scenarios that mostly wait (poison per engine, the broker restart) run side by side in the background
from the module's first test, each on its own broker, database and process.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest

from core import bus
from core.topics import TICKS, all_topics
from tests.conftest import _fresh_db as fresh_db, free_port, query, run_module, tansu_broker, wait_tcp
from tests.e2e.pipeline import base_service_env, selected_engines
from tests.integration.test_stream_delivery import _drain

pytestmark = pytest.mark.integration

T0 = 1_710_215_100_000  # 2024-03-12 09:15 IST, whole second


def _tick(token: int, ts: int, ltp: float, volume: int) -> bytes:
    return orjson.dumps({"instrument_token": token, "exchange_ts": ts, "ltp": ltp, "volume": volume})


def _produce_run(bootstrap: str, token: int, start_ms: int, ltp0: float, vol_step: int) -> None:
    """Ten ticks of one instrument, 500 ms apart (five 1 s buckets)."""
    p = bus.Producer(bootstrap)
    for i in range(10):
        p.produce(TICKS, _tick(token, start_ms + i * 500, ltp0 + i, vol_step * i), str(token).encode())
    p.flush()


def _wait_bars(dsn: str, n: int, timeout: float, proc) -> int:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    got = 0
    while time.monotonic() < deadline:
        got = int(query(dsn, "SELECT count(*) FROM bars_1s")[0][0])  # type: ignore[arg-type]
        if got >= n:
            return got
        assert proc.poll() is None, "the builder died"
        time.sleep(0.3)
    return got


def _env(service_env: dict[str, str], bootstrap: str, dsn: str, engine: str) -> dict[str, str]:
    return {**service_env, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "POSTGRES_DSN": dsn, "BAR_ENGINE": engine,
            "KAFKA_PARTITIONS": "1"}


POISON_TEST = "test_poison_to_dlq_good_ticks_to_bars"


@pytest.fixture(scope="module")
def background(request: pytest.FixtureRequest, pg_server: str,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Future[None]]]:
    """The scenarios that mostly wait on the wall clock, started side by side (each its own broker,
    database and process): both engines' poison runs and the broker restart (which waits out the
    builder's 30 s bounded flush to the emptied broker). Each test waits for its own and re-raises."""
    names = {item.originalname for item in request.session.items if item.module is request.module}
    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="builder") as pool:
        runs: dict[str, Future[None]] = {}
        if RESTART_TEST in names:
            runs["restart"] = pool.submit(_broker_restart_run, pg_server, tmp_path_factory.mktemp("restart"))
        for engine in selected_engines(request, POISON_TEST):
            runs[engine] = pool.submit(_poison_run, engine, pg_server, tmp_path_factory.mktemp(f"poison-{engine}"))
        yield runs


@pytest.fixture(scope="module", autouse=True)
def _start_background(background: dict[str, Future[None]]) -> None:
    """Start :func:`background` with the module's first test, so the restart overlaps the others."""


@pytest.mark.parametrize("engine", ["native", "python"])
def test_poison_to_dlq_good_ticks_to_bars(background, engine):
    background[engine].result(timeout=240)


def _poison_run(engine: str, pg_server: str, tmp_path: Path) -> None:
    with tansu_broker() as broker:
        _check_poison(engine, broker, fresh_db(pg_server), base_service_env(), tmp_path)


def _check_poison(engine: str, broker: str, fresh_pg_dsn: str, service_env: dict[str, str], tmp_path: Path) -> None:
    bus.ensure_topics(broker, all_topics(1))
    p = bus.Producer(broker)
    good = [_tick(256265, T0 + i * 400, 100.0 + i, 1000 + 10 * i) for i in range(20)]  # buckets T0..T0+7s
    poison = {
        b"bad-json": b"{not json",
        b"not-object": b"[1, 2]",
        b"bad-type": orjson.dumps({"instrument_token": "x", "exchange_ts": T0, "ltp": 1.0}),
        b"out-of-range": orjson.dumps({"instrument_token": 256265, "exchange_ts": 5, "ltp": 1.0}),
        b"no-ltp": orjson.dumps({"instrument_token": 256265, "exchange_ts": T0 + 100}),
    }
    for i, v in enumerate(good):
        p.produce(TICKS, v, b"256265")
        if i == 5:
            for k, bad in poison.items():
                p.produce(TICKS, bad, k)
    p.flush()
    log = tmp_path / "builder.log"
    proc = run_module("compute.bar_builder_1s", _env(service_env, broker, fresh_pg_dsn, engine), log_path=log)
    try:
        # Buckets T0..T0+7s; with no later tick the last ones close by wall time (2 s).
        assert _wait_bars(fresh_pg_dsn, 8, 60, proc) == 8, log.read_text()[-2000:]
        dlq = [m for m in _drain(broker, "dlq", len(poison), 30)
               if dict(m.headers() or [])["source_topic"].decode() == TICKS]
        assert sorted(m.key() for m in dlq) == sorted(poison)
        for m in dlq:
            h = {k: v.decode() for k, v in m.headers()}
            assert m.value() == poison[m.key()]
            assert h["source_partition"] == "0" and int(h["source_offset"]) in range(6, 11)
        errors = {m.key(): dict(m.headers())["error"].decode() for m in dlq}
        assert errors[b"bad-json"].startswith("invalid JSON")
        assert errors[b"not-object"] == "message is not a JSON object"
        assert errors[b"out-of-range"].startswith("schema:") and "out of range" in errors[b"out-of-range"]
        assert errors[b"bad-type"].startswith("schema:") and errors[b"no-ltp"].startswith("schema:")
        rows = query(fresh_pg_dsn, "SELECT extract(epoch from ts)::bigint * 1000, open, high, low, close, volume, "
                                   "ticks FROM bars_1s ORDER BY ts")
        assert rows[0] == (T0, 100.0, 102.0, 100.0, 102.0, 20, 3)  # first volume sets the baseline
        assert sum(r[6] for r in rows) == 20
        assert f"engine={engine}" in log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


RESTART_TEST = "test_native_builder_survives_broker_restart"


def _broker_restart_run(pg_server: str, tmp_path: Path) -> None:
    from orchestrator.kafka_launcher import start_tansu

    fresh_pg_dsn, service_env = fresh_db(pg_server), base_service_env()

    port = free_port()
    broker = start_tansu(port)
    wait_tcp(port)
    bootstrap = f"127.0.0.1:{port}"
    bus.ensure_topics(bootstrap, all_topics(1))
    log = tmp_path / "builder.log"
    proc = run_module("compute.bar_builder_1s", _env(service_env, bootstrap, fresh_pg_dsn, "native"), log_path=log)

    def produce(start_ms: int) -> None:
        _produce_run(bootstrap, 408065, start_ms, 50.0, 10)

    try:
        produce(T0)
        assert _wait_bars(fresh_pg_dsn, 5, 60, proc) == 5, log.read_text()[-2000:]
        broker.terminate()
        broker.wait(15)
        time.sleep(2)
        assert proc.poll() is None, "the builder must not die while the broker is down"
        broker = start_tansu(port)  # in-memory: back with no topics and no offsets
        wait_tcp(port)
        bus.ensure_topics(bootstrap, all_topics(1))
        produce(T0 + 60_000)
        assert _wait_bars(fresh_pg_dsn, 10, 90, proc) == 10, log.read_text()[-3000:]
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        broker.terminate()
        broker.wait(15)
    assert code == 0


def test_native_builder_rejoins_after_losing_its_partitions(broker, fresh_pg_dsn, service_env, tmp_path):
    """Frozen past the session timeout (SIGSTOP), the member loses its partitions; on waking it drops
    their state without committing, rejoins, and the bars still come out exactly once."""
    bus.ensure_topics(broker, all_topics(1))
    log = tmp_path / "builder.log"
    proc = run_module("compute.bar_builder_1s", _env(service_env, broker, fresh_pg_dsn, "native"), log_path=log)

    def produce(start_ms: int) -> None:
        _produce_run(broker, 5633, start_ms, 10.0, 100)

    try:
        produce(T0)
        assert _wait_bars(fresh_pg_dsn, 5, 60, proc) == 5, log.read_text()[-2000:]
        proc.send_signal(signal.SIGSTOP)
        time.sleep(10)  # > session.timeout.ms (6 s)
        proc.send_signal(signal.SIGCONT)
        produce(T0 + 60_000)
        assert _wait_bars(fresh_pg_dsn, 10, 60, proc) == 10, log.read_text()[-2000:]
        time.sleep(3)
        text = log.read_text()
        assert "partitions lost" in text and text.count("partitions assigned") >= 2
        rows = query(fresh_pg_dsn, "SELECT ticks, volume FROM bars_1s ORDER BY ts")
        assert len(rows) == 10 and sum(r[0] for r in rows) == 20  # type: ignore[misc]
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def test_native_builder_survives_broker_restart(background):
    """Last in the module: its run started with the first test and overlapped the others."""
    background["restart"].result(timeout=240)
