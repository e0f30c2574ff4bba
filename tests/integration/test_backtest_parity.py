"""Live/backtest parity: the backtester decides exactly the orders a live session decided.

The live path runs as real processes on the embedded broker and Postgres: recorded ticks (two
instruments, 40 minutes of one NSE session, a second apart) are fed at an accelerated pace (a market
minute in 3.5 s) through the 1 s bar builder and the 1 m aggregator to the strategy runner
(two strategies and a two-member ensemble), the risk manager and budget guard (equity pinned to the
configured capital) and the paper gateway's matcher, which fills the orders on the ticks. Then
``python -m backtest run --from-db ... --fills-from-db`` replays the bars the session stored with
the same registry, ensembles and risk config, taking each order's recorded fills as the fill
model. Both must produce the same orders: the test compares the backtest's Orders, encoded as the
runner encodes them, with every message on the session's ``orders`` topic, byte for byte, and the
CLI compares (id, side, signal time) with the ``orders`` table; any difference fails with the
first diverging order.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import time
from datetime import date, datetime, time as dtime
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from core import bus, codec
from core.clock import IST
from core.topics import ORDERS, TICKS, all_topics
from tests.conftest import ROOT, query
from tests.integration.kite_harness import read_topic, start_service, stop_process, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAY = date(2026, 11, 20)
TOKENS = {408065: 1560.0, 2953217: 3150.0}  # INFY, TCS (configs/tokens.csv)
MINUTES = 40
BATCH_S = 10          # ticks produced per batch (event seconds)
# wall seconds between batches: a market minute in 3.5 s. An order fills a few market seconds after its bar;
# the next bar is decided ~55 market seconds later, ~3 s of wall time: the live runner and risk manager see
# every fill before the next bar unless a stage stalls that long (the backtest applies fills by event time)
WALL_PER_BATCH = 0.58

REGISTRY = {
    "defaults": {"product": "MIS", "square_off": "15:15"},
    "strategies": [
        {"id": "mac", "strategy": "ma_crossover", "timeframes": ["1m"], "instruments": ["INFY", "TCS"],
         "params": {"fast": 3, "slow": 8, "kind": "sma", "allow_short": True, "use_stop": True, "atr_period": 5}},
        {"id": "st", "strategy": "supertrend_trend", "timeframes": ["1m"], "instruments": ["INFY", "TCS"],
         "params": {"period": 5, "multiplier": 1.0, "allow_short": True, "atr_period": 5}},
        {"id": "rsi", "strategy": "rsi_reversion", "timeframes": ["1m"], "instruments": ["INFY", "TCS"],
         "params": {"period": 5, "oversold": 35, "overbought": 65, "allow_short": True, "atr_period": 5}},
        {"id": "mac_fast", "strategy": "ma_crossover", "timeframes": ["1m"], "instruments": ["INFY", "TCS"],
         "params": {"fast": 2, "slow": 5, "kind": "ema", "allow_short": True, "use_stop": False,
                    "atr_period": 5}},
    ],
}
ENSEMBLES = {"ensembles": [{"id": "vote", "members": ["rsi", "mac_fast"], "mode": "any", "on_conflict": "flat"}]}


def ts_at(hh: int, mm: int, ss: int = 0) -> int:
    return int(datetime.combine(DAY, dtime(hh, mm, ss), IST).timestamp() * 1000)


def make_ticks(seed: int = 11) -> list[dict[str, Any]]:
    """A tick per second per instrument from 09:15:00 for MINUTES minutes: a random walk on the 0.05 grid
    with a five-level book around it and the day's volume rising."""
    rng = random.Random(seed)
    px = dict(TOKENS)
    vol = dict.fromkeys(TOKENS, 0)
    out = []
    start = ts_at(9, 15)
    for s in range(MINUTES * 60):
        for tok in TOKENS:
            px[tok] = max(10.0, round(round((px[tok] + rng.gauss(0, 0.9)) / 0.05) * 0.05, 2))
            q = rng.randint(1, 400)
            vol[tok] += q
            p = px[tok]
            bids = [(round(p - 0.05 * (k + 1), 2), 5000) for k in range(5)]
            asks = [(round(p + 0.05 * (k + 1), 2), 5000) for k in range(5)]
            ts = start + s * 1000 + 200
            out.append({"instrument_token": tok, "exchange_ts": ts, "recv_ts": ts + 3, "ltp": p, "volume": vol[tok],
                        "last_qty": q, "oi": None, "bid": bids[0][0], "ask": asks[0][0], "bid_qty": 5000,
                        "ask_qty": 5000,
                        "depth": {"buy": [{"price": a, "qty": b, "orders": 3} for a, b in bids],
                                  "sell": [{"price": a, "qty": b, "orders": 3} for a, b in asks]}})
    return out


def sentinels(last: dict[int, dict[str, Any]], cut_ms: int) -> list[dict[str, Any]]:
    """Two closing ticks per instrument after the cut (see tests/e2e/pipeline.with_sentinels)."""
    return [{**t, "exchange_ts": cut_ms + off, "recv_ts": cut_ms + off + 5} for off in (59_000, 62_000)
            for t in last.values()]


def feed(bootstrap: str, ticks: list[dict[str, Any]]) -> None:
    producer = bus.Producer(bootstrap)
    batch_ms = BATCH_S * 1000
    first = ticks[0]["exchange_ts"]
    n = 0
    t0 = time.monotonic()
    for t in ticks:
        k = (t["exchange_ts"] - first) // batch_ms
        if k > n:
            producer.flush(10)
            n = k
            wait = t0 + n * WALL_PER_BATCH - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        producer.produce(TICKS, codec.dumps(t), str(t["instrument_token"]).encode())
    producer.flush(30)


SERVICES = {
    "builder": ("compute.bar_builder_1s", "bar_builder_1s"),
    "agg": ("compute.bar_aggregator_1m", "bar_aggregator_1m"),
    "runner": ("strategy.runner_modular", "strategy_runner"),
    "manager": ("risk.manager_v2", "risk_manager"),
    "guard": ("risk.order_budget_guard", "order_budget_guard"),
    "paper": ("execution.paper_gateway_matcher", "paper_gateway"),
}


def _stable(dsn: str, seconds: float = 4.0, timeout: float = 90.0) -> None:
    """Wait until no order moves and nothing waits at an intermediate state for ``seconds``."""
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        snap = query(dsn, "SELECT count(*), COALESCE(sum(version), 0), "
                          "count(*) FILTER (WHERE status IN ('NEW', 'SIZED', 'ALLOWED')) FROM orders")[0]
        fills = query(dsn, "SELECT count(*) FROM fills")[0][0]
        cur = (snap, fills)
        if cur != last:
            last, since = cur, time.monotonic()
        elif snap[2] == 0 and time.monotonic() - since >= seconds:
            return
        time.sleep(0.5)
    raise TimeoutError(f"orders still moving after {timeout}s: {last}")


def test_backtest_replays_the_live_session_order_for_order(tmp_path: Path, fresh_pg_dsn: str, broker: str) -> None:
    dsn = fresh_pg_dsn
    reg = tmp_path / "registry.yaml"
    reg.write_text(yaml.safe_dump(REGISTRY, sort_keys=False))
    ens = tmp_path / "ensemble.yaml"
    ens.write_text(yaml.safe_dump(ENSEMBLES, sort_keys=False))
    budget = yaml.safe_load((ROOT / "configs" / "risk_budget.yaml").read_text())
    budget["equity_source"] = "capital"  # pinned on both sides
    # entries of one instrument and bar competing for its position cap are sized in the order the risk
    # manager receives them, which the order-id keyed topic does not fix (backtest.recorded.differences);
    # without the cap every quantity depends on its own order only, and sizing must match exactly
    budget["max_position_notional"] = None
    risk = tmp_path / "risk_budget.yaml"
    risk.write_text(yaml.safe_dump(budget, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KAFKA_PARTITIONS": "3", "PYTHONUNBUFFERED": "1",
           "KAFKA_BOOTSTRAP_SERVERS": broker, "POSTGRES_DSN": dsn, "TRADING_MODE": "paper",
           "RISK_BUDGET": str(risk), "STRATEGY_REGISTRY": str(reg), "STRATEGY_ENSEMBLES": str(ens),
           "STRATEGY_MAX_AGE_S": "0", "STRATEGY_WARMUP_BARS": "0", "TRADESTACK_REGISTRY_OVERLAY": str(tmp_path / "no"),
           # only event time closes bars here: a wall-clock close of the (past-dated) last bucket would
           # add a bar the session may or may not decide before it is stopped
           "AGG_SILENT_CLOSE_MS": "600000"}
    bus.ensure_topics(broker, all_topics(3))
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, (module, service) in SERVICES.items():
            procs[name], _ = start_service(module, env, tmp_path / f"{name}.log", service, timeout=90)
        ticks = make_ticks()
        cut = ts_at(9, 15) + MINUTES * 60_000
        last = {t["instrument_token"]: t for t in ticks}
        feed(broker, ticks + sentinels(last, cut))
        for name, p in procs.items():
            assert p.poll() is None, f"{name} exited: {(tmp_path / f'{name}.log').read_text()[-3000:]}"
        _stable(dsn)
        wait_for(lambda: query(dsn, "SELECT count(*) FROM strategy_progress WHERE tf = '1m' AND "
                                    "last_ts >= to_timestamp(%s / 1000.0)", cut)[0][0] >= len(TOKENS),
                 60, 0.5, "the runner decided the last bar")
    finally:
        for name in ("builder", "agg", "runner", "manager", "guard", "paper"):
            stop_process(procs.pop(name, None), 30)

    n_bars = query(dsn, "SELECT count(*) FROM bars_1m")[0][0]
    session = query(dsn, "SELECT count(*), count(*) FILTER (WHERE status = 'FILLED') FROM orders")[0]
    assert n_bars >= MINUTES * len(TOKENS), n_bars
    assert session[1] >= 10, f"the session should trade: {session}"  # a parity of nothing proves nothing

    # -- the backtester, through its command line ----------------------------------------------------
    out = tmp_path / "bt"
    cli = subprocess.run(
        [str(ROOT / ".venv/bin/python"), "-m", "backtest", "run", "--from-db", "--symbols", "INFY,TCS", "--tf", "1m",
         "--from", DAY.isoformat(), "--to", DAY.isoformat(), "--registry", str(reg), "--ensembles", str(ens),
         "--risk-config", str(risk), "--fills-from-db", "--out", str(out), "--quiet"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    if cli.returncode != 0:  # keep what explains it beside the test's logs
        rows = query(dsn, "SELECT order_id, strategy, side, status, qty, filled_qty, "
                          "(extract(epoch FROM signal_ts) * 1000)::bigint, extra->>'intent', risk::text "
                          "FROM orders ORDER BY signal_ts, order_id")
        (tmp_path / "session_orders.json").write_text(json.dumps(rows, default=str, indent=1))
    assert cli.returncode == 0, cli.stdout + cli.stderr + f"\n(session orders: {tmp_path / 'session_orders.json'})"
    assert "parity: the backtest decided the session's" in cli.stdout, cli.stdout
    parity = json.loads((out / "parity.json").read_text())
    assert parity["first_difference"] is None and parity["orders_backtest"] == session[0], parity
    assert parity["sizing_differences"] == 0, parity

    # -- byte for byte against the orders topic ----------------------------------------------------------
    live = read_topic(broker, ORDERS, idle=2.0, timeout=60)
    from backtest.recorded import load_recorded
    from backtest.run import Job, execute
    from strategy.runner_core import encode_order

    os.environ["POSTGRES_DSN"] = dsn
    job = Job(source="db", symbols=("INFY", "TCS"), tf="1m", start=DAY, end=DAY, dsn=dsn, registry=reg,
              ensembles=ens, risk_config=str(risk), progress=False)
    ours = [r.order for r in execute(job, load_recorded(dsn, DAY, DAY)).result.orders]
    def key(o):
        return ((o["signal_ts"], o["order_id"]))
    live_by_id = {o["order_id"]: o for o in live}
    assert len(live_by_id) == len(live), "the session sent an order twice"
    theirs = sorted(live_by_id.values(), key=key)
    mine = sorted(ours, key=key)
    for a, b in zip(mine, theirs, strict=False):
        assert encode_order(a) == orjson.dumps(b), f"first diverging order: backtest {a} vs session {b}"
    assert len(mine) == len(theirs), (f"backtest {len(mine)} orders, session {len(theirs)}; first extra: "
                                      f"{(mine[len(theirs):] or theirs[len(mine):])[:1]}")
    intents = {o["extra"]["intent"] for o in mine}
    assert {"entry", "exit"} <= intents, intents
    assert any(o["strategy"] == "vote" for o in mine), "the ensemble decided nothing"
