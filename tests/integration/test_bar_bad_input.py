"""Bad input on every topic the bar services consume: dlq with a reason, no exit, bars keep coming.

bar_builder_1s (each engine), bar_aggregator_1m and bar_aggregator_1m_to_multi run as real
processes on the real broker and Postgres while a live-paced stream of several instruments
flows; poison is injected on ``ticks``, ``bars.1s`` and ``bars.1m`` (issue 8, acceptance). The two
engines' runs go side by side (each its own broker, database and processes): they are paced by the
wall clock.
"""

from __future__ import annotations

import signal
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest

from core import bus
from core.topics import TICKS, all_topics
from tests.conftest import _fresh_db as fresh_db, query, run_module, tansu_broker
from tests.e2e.pipeline import base_service_env, selected_engines
from tests.integration.test_stream_delivery import _drain

pytestmark = pytest.mark.integration

TOKENS = (256265, 408065, 738561, 2953217)
FUTURE_MS = int(5.5 * 3_600_000)  # an IST time read as UTC
STREAM_S = 32


def _bar(token: int, tf: str, ts: int, **change: object) -> bytes:
    bar = {"instrument_token": token, "tf": tf, "ts": ts, "open": 10.0, "high": 11.0, "low": 9.0, "close": 10.5,
           "volume": 5, "ticks": 2, "cum_volume": 100, **change}
    return orjson.dumps(bar)


def _poison_ticks(now: int) -> list[tuple[bytes, bytes]]:
    tok = TOKENS[0]
    tick = b'{"instrument_token": %d, "exchange_ts": %d, "ltp": %s, "volume": %s}'
    return [
        (b"t-undecodable", b"\xff\xfe\x00garbage"),
        (b"t-wrong-type", orjson.dumps({"instrument_token": "x", "exchange_ts": now, "ltp": 1.0})),
        (b"t-nan", tick % (tok, now, b"NaN", b"1")),
        (b"t-infinity", tick % (tok, now, b"Infinity", b"1")),
        (b"t-1e400", tick % (tok, now, b"1e400", b"1")),
        (b"t-u64-volume", tick % (tok, now, b"100.0", str(2**64 - 1).encode())),
        (b"t-negative-volume", tick % (tok, now, b"100.0", b"-5")),
        (b"t-future", tick % (tok, now + FUTURE_MS, b"100.0", b"1")),
        (b"k" * 200_000, b"{not json"),
    ]


def _poison_bars(tf: str, ts: int) -> list[tuple[bytes, bytes]]:
    tok = TOKENS[0]
    raw = b'{"instrument_token": %d, "tf": "%s", "ts": %d, "open": %s, "high": 11.0, "low": 9.0, "close": 10.5, ' \
          b'"volume": 5, "ticks": 2, "cum_volume": 100}'
    return [
        (b"b-undecodable", b"\xff\xfe\x00garbage"),
        (b"b-wrong-type", _bar(tok, tf, ts, volume="5")),
        (b"b-nan", raw % (tok, tf.encode(), ts, b"NaN")),
        (b"b-1e400", raw % (tok, tf.encode(), ts, b"1e400")),
        (b"b-u64-volume", _bar(tok, tf, ts, volume=2**64 - 1)),
        (b"b-ticks-2**40", _bar(tok, tf, ts, ticks=2**40)),
        (b"b-negative-volume", _bar(tok, tf, ts, volume=-1)),
        (b"b-negative-cum", _bar(tok, tf, ts, cum_volume=-5)),
        (b"b-high-below-low", _bar(tok, tf, ts, high=8.0, low=9.0, open=8.5, close=8.5)),
        (b"b-future", _bar(tok, tf, ts + FUTURE_MS)),
        (b"k" * 200_000, b"{not json"),
    ]


def _bad_input_run(engine: str, pg_server: str, tmp_path: Path) -> None:
    """One engine's run on its own broker and database; raises what its test must report."""
    with tansu_broker() as broker:
        _check_bad_input(engine, broker, fresh_db(pg_server), base_service_env(), tmp_path)


@pytest.fixture(scope="module")
def bad_input_runs(request: pytest.FixtureRequest, pg_server: str,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Future[None]]]:
    """Both engines' runs side by side (each its own broker, database and processes): a run is paced by
    the wall clock, so one after the other only waits twice as long. Each engine's test waits for its own."""
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="bad-input") as pool:
        yield {engine: pool.submit(_bad_input_run, engine, pg_server, tmp_path_factory.mktemp(f"bad-{engine}"))
               for engine in selected_engines(request, TEST)}


TEST = "test_bad_input_on_every_bar_topic_lands_in_dlq_and_bars_keep_coming"


@pytest.mark.parametrize("engine", ["native", "python"])
def test_bad_input_on_every_bar_topic_lands_in_dlq_and_bars_keep_coming(bad_input_runs, engine):
    bad_input_runs[engine].result(timeout=300)


def _check_bad_input(engine: str, broker: str, fresh_pg_dsn: str, service_env: dict[str, str],
                     tmp_path: Path) -> None:
    bus.ensure_topics(broker, all_topics(1))
    env = {**service_env, "KAFKA_BOOTSTRAP_SERVERS": broker, "POSTGRES_DSN": fresh_pg_dsn, "BAR_ENGINE": engine,
           "KAFKA_PARTITIONS": "1"}
    procs = {m: run_module(f"compute.{m}", env, log_path=tmp_path / f"{m}.log")
             for m in ("bar_builder_1s", "bar_aggregator_1m", "bar_aggregator_1m_to_multi")}

    def alive() -> None:
        for name, proc in procs.items():
            assert proc.poll() is None, f"{name} exited: " + (tmp_path / f"{name}.log").read_text()[-2000:]

    # Live-paced event time, shifted back (< 1 min, well inside every window) so a minute ends 8 s in.
    wall0 = int(time.time() * 1000)
    minute = wall0 - wall0 % 60_000
    start = minute + 52_000 if minute + 52_000 <= wall0 else minute - 8_000
    shift = wall0 - start
    boundary = start + 8_000
    p = bus.Producer(broker)
    poison: dict[str, list[tuple[bytes, bytes]]] = {}
    try:
        time.sleep(3)  # the services join their groups
        alive()
        sent = 0
        t_begin = time.monotonic()
        while time.monotonic() - t_begin < STREAM_S:
            now_ev = int(time.time() * 1000) - shift
            for i, tok in enumerate(TOKENS):
                p.produce(TICKS, orjson.dumps({"instrument_token": tok, "exchange_ts": now_ev, "ltp": 100.0 + i,
                                               "volume": 1000 + sent}), str(tok).encode())
            sent += 1
            elapsed = time.monotonic() - t_begin
            if not poison and elapsed > 12:  # after the first minute boundary: inject on every topic
                poison = {TICKS: _poison_ticks(now_ev), "bars.1s": _poison_bars("1s", now_ev - now_ev % 1000),
                          "bars.1m": _poison_bars("1m", boundary)}
                for topic, items in poison.items():
                    for key, value in items:
                        p.produce(topic, value, key)
            p.poll(0)
            time.sleep(0.25)
        p.flush()
        time.sleep(4)  # the last buckets close by wall time
        alive()

        expected = sum(len(v) for v in poison.values())
        dlq = _drain(broker, "dlq", expected, 30)
        by_topic = Counter(dict(m.headers() or [])["source_topic"].decode() for m in dlq)
        assert by_topic == {t: len(v) for t, v in poison.items()}, by_topic
        for m in dlq:
            h = {k: v.decode(errors="replace") for k, v in m.headers()}
            assert h.get("error"), h
        errors = {(dict(m.headers())["source_topic"].decode(), m.key()): dict(m.headers())["error"].decode()
                  for m in dlq if len(m.key() or b"") < 100}
        assert errors[("bars.1s", b"b-future")].startswith("implausible")
        assert errors[("bars.1m", b"b-future")].startswith("implausible")
        assert errors[("bars.1m", b"b-high-below-low")].startswith("schema")
        assert errors[(TICKS, b"t-future")].startswith("implausible")  # both engines apply the same window

        # Every instrument keeps its normal rate: one 1s bar per second of stream, the poisoned one too.
        end = start + STREAM_S * 1000
        rows = query(fresh_pg_dsn, "SELECT instrument_token, count(*) FROM bars_1s WHERE ts >= to_timestamp(%s) "
                                   "AND ts < to_timestamp(%s) GROUP BY 1", (start + 1000) / 1000, (end - 3000) / 1000)
        counts = {int(t): int(n) for t, n in rows}  # type: ignore[call-overload]
        assert set(counts) == set(TOKENS), counts
        median = statistics.median(counts.values())
        assert median >= STREAM_S - 6 and all(n >= median - 1 for n in counts.values()), counts
        m1 = query(fresh_pg_dsn, "SELECT instrument_token FROM bars_1m WHERE ts = to_timestamp(%s)",
                   (boundary - 60_000) / 1000)
        assert sorted(int(r[0]) for r in m1) == sorted(TOKENS)  # type: ignore[call-overload]
        alive()
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for name, proc in procs.items():
            assert proc.wait(30) == 0, name
