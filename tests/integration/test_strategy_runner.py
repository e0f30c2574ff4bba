"""strategy.runner_modular end to end on the embedded broker and Postgres.

Bars of one NSE session go onto ``bars.1m``; the runner (a real process) decides
with a small ma_crossover and writes ``orders`` + the ``orders`` table. The
expected orders come from the pure decision engine run in this process over the
same bars (warm-up bars without orders), so every check is against an exact set:

- bars in, orders out, byte-identical to the engine's, and two runs alike;
- poison on every input topic goes to ``dlq`` and decisions go on;
- kill -9 mid-stream and a restart: the table holds exactly the expected orders
  (no duplicate, none missing), the restart's catch-up included;
- warm-up from ``bars_1m``: an order on the first live bars (impossible without
  history, as slow=8 needs 8 bars) proves indicators were ready.
"""

from __future__ import annotations

import random
import signal
import time
from datetime import UTC, date, datetime, time as dtime
from pathlib import Path

import orjson
import pytest

from compute.bars import Bar
from core import bus
from core.clock import IST
from core.topics import DLQ, FILLS, ORDER_UPDATES, ORDERS, all_topics
from strategy.registry import load_registry
from strategy.runner_core import encode_order
from strategy.runner_modular import build_engine
from tests.conftest import query, run_module
from tests.integration.test_stream_delivery import _drain

pytestmark = pytest.mark.integration

SYMBOLS = ("INFY", "TCS", "RELIANCE", "HDFCBANK")
DAY = date(2026, 11, 20)
REGISTRY = """
strategies:
  - id: mac
    strategy: ma_crossover
    timeframes: [1m]
    instruments: [{symbols}]
    params: {{fast: 3, slow: 8, kind: sma, allow_short: true, use_stop: true, atr_period: 5}}
"""


def _open_ms() -> int:
    return int(datetime.combine(DAY, dtime(9, 15), IST).timestamp() * 1000)


def session_bars(tokens: list[int], n: int, seed: int = 3) -> list[Bar]:
    """``n`` 1m bars per token from the open, a seeded random walk, interleaved by time."""
    rng = random.Random(seed)
    px = {t: 1000.0 + 100 * i for i, t in enumerate(tokens)}
    out = []
    for k in range(n):
        for t in tokens:
            o = px[t]
            c = round(o + rng.choice((-1, 1)) * rng.random() * 4, 2)
            hi, lo = round(max(o, c) + rng.random(), 2), round(min(o, c) - rng.random(), 2)
            out.append(Bar(t, "1m", _open_ms() + k * 60_000, o, hi, lo, c, rng.randint(0, 900), 10))
            px[t] = c
    return out


@pytest.fixture()
def setup(tmp_path: Path, broker: str, fresh_pg_dsn: str, service_env: dict[str, str]):
    reg_path = tmp_path / "registry.yaml"
    reg_path.write_text(REGISTRY.format(symbols=", ".join(SYMBOLS)))
    env = {**service_env, "KAFKA_BOOTSTRAP_SERVERS": broker, "POSTGRES_DSN": fresh_pg_dsn, "KAFKA_PARTITIONS": "3",
           "STRATEGY_REGISTRY": str(reg_path), "STRATEGY_ENSEMBLES": str(tmp_path / "none.yaml"),
           "STRATEGY_MAX_AGE_S": "0"}  # the bars are of a past session: decide them all
    bus.ensure_topics(broker, all_topics(3))
    reg = load_registry(reg_path, ensembles=tmp_path / "none.yaml")
    tokens = sorted(next(iter(reg.specs)).tokens)
    return env, reg, tokens


def expected_orders(reg, warm: list[Bar], live: list[Bar]) -> list[bytes]:
    engine = build_engine(reg)
    for b in warm:
        engine.on_bar(b, "1m", emit=False)
    return [encode_order(o) for b in live for o in engine.on_bar(b, "1m")]


def produce_bars(broker: str, bars: list[Bar], poison: bool = False) -> None:
    p = bus.Producer(broker)
    for i, b in enumerate(bars):
        p.produce("bars.1m", orjson.dumps(b.to_dict()), str(b.instrument_token).encode())
        if poison and i == len(bars) // 2:
            bad = {**b.to_dict(), "high": b.low - 1}
            p.produce("bars.1m", orjson.dumps(bad), b"x")
            p.produce("bars.1m", b"\xff not json", b"x")
            p.produce("bars.1m", orjson.dumps({**b.to_dict(), "tf": "5m"}), b"x")
            p.produce(FILLS, b'{"fill_id": 1}', b"x")
            p.produce(ORDER_UPDATES, b"[]", b"x")
    p.flush()


def wait_rows(dsn: str, n: int, timeout: float = 90.0) -> int:
    deadline = time.monotonic() + timeout
    got = 0
    while time.monotonic() < deadline:
        got = query(dsn, "SELECT count(*) FROM orders")[0][0]
        if got >= n:
            time.sleep(1.0)  # extras would show now
            return query(dsn, "SELECT count(*) FROM orders")[0][0]
        time.sleep(0.3)
    return got


def wait_log(path: Path, text: str, count: int = 1, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().count(text) >= count:
            return
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not in {path} after {timeout}s")


def stop(proc, sig=signal.SIGTERM) -> int:
    proc.send_signal(sig)
    return proc.wait(30)


def test_bars_in_orders_out_identical_to_the_engine_and_poison_to_dlq(setup, broker, fresh_pg_dsn, pg_server,
                                                                      tmp_path):
    env, reg, tokens = setup
    bars = session_bars(tokens, 120)
    want = expected_orders(reg, [], bars)
    assert len(want) > 20
    produce_bars(broker, bars, poison=True)
    proc = run_module("strategy.runner_modular", env, log_path=tmp_path / "runner.log")
    try:
        assert wait_rows(fresh_pg_dsn, len(want)) == len(want)
        got = [m.value() for m in _drain(broker, ORDERS, len(want))]
        assert sorted(got) == sorted(want)  # every byte equal (partitions interleave, so compare as sets)
        dlq = _drain(broker, DLQ, 5, timeout=20)
        assert sorted(m.headers() and dict(m.headers())["source_topic"] for m in dlq) == \
            [b"bars.1m", b"bars.1m", b"bars.1m", FILLS.encode(), ORDER_UPDATES.encode()]
        assert proc.poll() is None
        rows = query(fresh_pg_dsn, "SELECT status, count(*) FROM orders GROUP BY status")
        assert rows == [("NEW", len(want))]
    finally:
        assert stop(proc) == 0
    # a second run (its own consumer group and database) over the same bars decides byte-identically
    from tests.conftest import _fresh_db

    dsn2 = _fresh_db(pg_server)
    proc = run_module("strategy.runner_modular", {**env, "POSTGRES_DSN": dsn2}, "--group", "runner_b",
                      log_path=tmp_path / "runner2.log")
    try:
        assert wait_rows(dsn2, len(want)) == len(want)
        again = [m.value() for m in _drain(broker, ORDERS, 2 * len(want))]
        assert sorted(again) == sorted(want + want)
    finally:
        assert stop(proc) == 0


def test_kill_9_mid_stream_restart_leaves_exactly_the_expected_orders(setup, broker, fresh_pg_dsn, tmp_path):
    env, reg, tokens = setup
    bars = session_bars(tokens, 300, seed=11)
    want = expected_orders(reg, [], bars)
    want_ids = sorted(orjson.loads(w)["order_id"] for w in want)
    log = tmp_path / "runner.log"
    proc = run_module("strategy.runner_modular", env, log_path=log)
    time.sleep(4)  # started and subscribed
    p = bus.Producer(broker)
    for i, b in enumerate(bars):
        p.produce("bars.1m", orjson.dumps(b.to_dict()), str(b.instrument_token).encode())
        if i % 40 == 0:
            p.flush()
            time.sleep(0.05)
        if i == len(bars) // 2:
            p.flush()
            # wait for some orders, then kill mid-stream
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and query(fresh_pg_dsn, "SELECT count(*) FROM orders")[0][0] == 0:
                time.sleep(0.1)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
    p.flush()
    before = query(fresh_pg_dsn, "SELECT count(*) FROM orders")[0][0]
    assert 0 < before < len(want_ids)
    # the aggregator has written bars_1m as it produced bars.1m: the restart warms up on what was decided
    # (up to strategy_progress) and decides the rest from the table and the topic, each bar once
    _insert_history(fresh_pg_dsn, bars)
    proc = run_module("strategy.runner_modular", env, log_path=log)
    try:
        assert wait_rows(fresh_pg_dsn, len(want_ids)) == len(want_ids)
        ids = [r[0] for r in query(fresh_pg_dsn, "SELECT order_id FROM orders ORDER BY order_id")]
        assert ids == want_ids
        assert "catch_up_bars=" in log.read_text()
    finally:
        assert stop(proc) == 0


def _insert_history(dsn: str, bars: list[Bar]) -> None:
    import psycopg

    if not bars:
        return
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        cur.executemany("INSERT INTO bars_1m (instrument_token, ts, open, high, low, close, volume, ticks) "
                        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                        [(b.instrument_token, datetime.fromtimestamp(b.ts / 1000, UTC), b.open, b.high, b.low,
                          b.close, b.volume, b.ticks) for b in bars])


def test_warm_up_from_bars_1m_makes_the_first_live_bars_decide(setup, broker, fresh_pg_dsn, tmp_path):
    env, reg, tokens = setup
    bars = session_bars(tokens, 160, seed=5)
    n_hist = 100 * len(tokens)
    hist, live = bars[:n_hist], bars[n_hist:]
    want = expected_orders(reg, hist, live)
    first_live_ts = live[0].ts
    early = [w for w in want if orjson.loads(w)["signal_ts"] <= first_live_ts + 3 * 60_000]
    # the data must have a decision in the first live bars, which slow=8 cannot make from live bars alone
    assert early, "choose a seed with an early cross"
    _insert_history(fresh_pg_dsn, hist)
    produce_bars(broker, live)
    proc = run_module("strategy.runner_modular", env, log_path=tmp_path / "runner.log")
    try:
        assert wait_rows(fresh_pg_dsn, len(want)) == len(want)
        got = [m.value() for m in _drain(broker, ORDERS, len(want))]
        assert sorted(got) == sorted(want)
    finally:
        assert stop(proc) == 0
    text = (tmp_path / "runner.log").read_text()
    assert f"warmup_bars={n_hist}" in text


def test_restart_resumes_the_position_from_fills_and_strategy_state(tmp_path, broker, fresh_pg_dsn, service_env):
    """Entry, its fill (table and topic, as a gateway writes them), kill -9, restart: the down-cross exits
    exactly the filled quantity, once, though the fill is replayed on the topic."""
    reg_path = tmp_path / "registry.yaml"
    reg_path.write_text("strategies:\n  - {id: mac, strategy: ma_crossover, timeframes: [1m], instruments: [INFY],\n"
                        "     params: {fast: 2, slow: 3, kind: sma, atr_period: 2}}\n")
    env = {**service_env, "KAFKA_BOOTSTRAP_SERVERS": broker, "POSTGRES_DSN": fresh_pg_dsn, "KAFKA_PARTITIONS": "3",
           "STRATEGY_REGISTRY": str(reg_path), "STRATEGY_ENSEMBLES": str(tmp_path / "none.yaml"),
           "STRATEGY_MAX_AGE_S": "0"}
    bus.ensure_topics(broker, all_topics(3))
    token = 408065
    t0 = int(datetime.combine(DAY, dtime(10, 0), IST).timestamp() * 1000)
    closes = [10.0, 10.0, 10.0, 9.0, 12.0, 12.0, 9.0]  # up-cross on bar 4, down-cross on bar 6
    bars = [Bar(token, "1m", t0 + i * 60_000, c, c + 0.5, c - 0.5, c, 100, 5) for i, c in enumerate(closes)]
    log = tmp_path / "runner.log"
    proc = run_module("strategy.runner_modular", env, log_path=log)
    try:
        wait_log(log, "service running")  # its start-up warm-up is over: these bars are new to it
        _insert_history(fresh_pg_dsn, bars[:5])
        produce_bars(broker, bars[:5])
        assert wait_rows(fresh_pg_dsn, 1) == 1
        ((oid, side, qty),) = query(fresh_pg_dsn, "SELECT order_id, side, qty FROM orders")
        assert (side, qty) == ("BUY", None)
        fill = {"fill_id": "f-1", "order_id": oid, "broker_order_id": "b-1", "instrument_token": token, "side": "BUY",
                "qty": 7, "price": 12.0, "ts": t0 + 5 * 60_000, "venue": "paper", "strategy": "mac"}
        query(fresh_pg_dsn, "INSERT INTO fills (fill_id, order_id, broker_order_id, instrument_token, side, qty, "
                            "price, ts, venue, strategy) VALUES (%s, %s, %s, %s, %s, %s, %s, to_timestamp(%s), %s, "
                            "%s) RETURNING fill_id", "f-1", oid, "b-1", token, "BUY", 7, 12.0,
              fill["ts"] / 1000, "paper", "mac")
        p = bus.Producer(broker)
        p.produce(FILLS, orjson.dumps(fill), oid.encode())
        p.flush()
        time.sleep(2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert query(fresh_pg_dsn, "SELECT direction FROM strategy_state WHERE strategy = 'mac'") == [(1,)]
        p.produce(FILLS, orjson.dumps(fill), oid.encode())  # replayed: must not count twice
        p.flush()
        proc = run_module("strategy.runner_modular", env, log_path=log)
        wait_log(log, "service running", count=2)
        _insert_history(fresh_pg_dsn, bars[5:])
        produce_bars(broker, bars[5:])
        assert wait_rows(fresh_pg_dsn, 2) == 2
        rows = query(fresh_pg_dsn, "SELECT side, qty, extra->>'intent' FROM orders ORDER BY signal_ts")
        assert rows == [("BUY", None, "entry"), ("SELL", 7, "exit")]
        assert query(fresh_pg_dsn, "SELECT direction FROM strategy_state WHERE strategy = 'mac'") == [(0,)]
    finally:
        assert stop(proc) == 0
