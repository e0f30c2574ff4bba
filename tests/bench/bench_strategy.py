"""Strategy layer benchmarks: the pure decision engine, the runner service loop, bar-to-order latency.

    python -m tests.bench.run_all --only strategy [--quick]

- Pure engine (no I/O, this process): 200 instruments x one NSE session of 1 m bars
  (375 each, a seeded random walk), bars/s for one ``ma_crossover`` and for four
  strategies voting in a ``k_of_n`` ensemble; and, on one instrument's 75k-bar
  series, the engine against backtesting.py running its own SMA crossover example
  (``SmaCross``, the same 10/30 SMAs), timed alike (the whole run over the prepared bars).
- Runner service loop: :class:`strategy.runner_modular.StrategyRunner` in this process
  on the embedded broker and Postgres (produce, flush, upsert orders and progress,
  commit), four strategies; the timer starts when its first bar is consumed.
- Bar-to-order latency: the runner as a process; a minute's bars of all instruments
  produced at once every 50 ms (1200x a live session); for each order, the order
  message's timestamp (created in the runner) minus the produce time of the bar
  that made it.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date, datetime, time as dtime
from pathlib import Path
from typing import Any

import orjson

from compute.bars import Bar
from core import bus
from core.clock import IST
from core.metrics import Metrics
from core.migrate import apply_migrations
from core.sessions import load_calendar
from core.settings import load_settings
from core.universe import Instrument, expected_segment_code, make_token
from strategy.registry import RegistryFile, build_registry
from strategy.runner_modular import StrategyRunner, build_engine
from tests.bench.bench_bars import embedded_pg
from tests.bench.harness import Section, embedded_broker, fmt_rate, machine_notes
from tests.conftest import ROOT

DAY = date(2026, 11, 20)
N_INSTRUMENTS = 200
ONE = {"strategies": [{"id": "mac", "strategy": "ma_crossover", "timeframes": ["1m"], "instruments": "all",
                       "params": {"fast": 10, "slow": 30, "kind": "sma", "allow_short": True}}]}
FOUR = {"strategies": [
    {"id": "mac", "strategy": "ma_crossover", "timeframes": ["1m"], "instruments": "all",
     "params": {"fast": 10, "slow": 30, "kind": "ema", "allow_short": True}},
    {"id": "rsi", "strategy": "rsi_reversion", "timeframes": ["1m"], "instruments": "all",
     "params": {"period": 14, "allow_short": True}},
    {"id": "st", "strategy": "supertrend_trend", "timeframes": ["1m"], "instruments": "all",
     "params": {"period": 10, "multiplier": 3.0, "allow_short": True}},
    {"id": "orb", "strategy": "opening_range_breakout", "timeframes": ["1m"], "instruments": "all",
     "params": {"range_minutes": 15, "allow_short": True}}]}
ENSEMBLE = "ensembles:\n  - {id: vote, members: [mac, rsi, st, orb], mode: k_of_n, k: 2}\n"


def universe(n: int = N_INSTRUMENTS) -> list[Instrument]:
    code = expected_segment_code("NSE", "NSE")
    return [Instrument(exchange_token=1000 + i, tradingsymbol=f"SYM{i:03d}", exchange="NSE", segment="NSE",
                       instrument_type="EQ", instrument_token=make_token(1000 + i, code), tick_size=0.05,
                       lot_size=1, last_price=100.0 + i) for i in range(n)]


def session_bars(tokens: list[int], days: list[date], seed: int = 7) -> list[Bar]:
    """375 1 m bars per token per day (09:15-15:30 IST), interleaved by time, a seeded random walk."""
    rng = random.Random(seed)
    px = {t: 100.0 + (t % 500) for t in tokens}
    out = []
    for day in days:
        open_ms = int(datetime.combine(day, dtime(9, 15), IST).timestamp() * 1000)
        for k in range(375):
            ts = open_ms + k * 60_000
            for t in tokens:
                o = px[t]
                c = round(max(1.0, o * (1 + rng.gauss(0, 0.002))), 2)
                hi = round(max(o, c) * (1 + rng.random() * 0.001), 2)
                lo = round(min(o, c) * (1 - rng.random() * 0.001), 2)
                out.append(Bar(t, "1m", ts, o, hi, lo, c, rng.randint(0, 5000), 20))
                px[t] = c
    return out


def trading_days(n: int) -> list[date]:
    cal = load_calendar()
    day, out = date(2025, 1, 1), []
    while len(out) < n:
        if cal.session("NSE", day) is not None:
            out.append(day)
        day = date.fromordinal(day.toordinal() + 1)
    return out


def _registry(doc: dict[str, Any], uni: list[Instrument], ensembles: str | None = None) -> Any:
    d = Path(tempfile.mkdtemp(prefix="bench-reg-"))
    ens = None
    if ensembles:
        ens = d / "ensemble.yaml"
        ens.write_text(ensembles)
    return build_registry(d / "registry.yaml", RegistryFile.model_validate(doc), uni, ens)


def engine_rate(reg: Any, bars: list[Bar], runs: int) -> tuple[float, list[float], int]:
    rates, orders = [], 0
    for _ in range(runs):
        eng = build_engine(reg)
        on_bar = eng.on_bar
        t0 = time.perf_counter()
        n = 0
        for b in bars:
            n += len(on_bar(b, "1m"))
        rates.append(len(bars) / (time.perf_counter() - t0))
        orders = n
    return statistics.median(rates), rates, orders


def backtesting_py_rate(bars: list[Bar], runs: int) -> tuple[float, list[float], int]:
    """backtesting.py's SmaCross (its README example) over the same series: bars/s of ``Backtest.run``."""
    import warnings

    import pandas as pd
    from backtesting import Backtest

    from tests.reference.sma_cross import sma_cross

    SmaCross = sma_cross()
    df = pd.DataFrame({"Open": [b.open for b in bars], "High": [b.high for b in bars], "Low": [b.low for b in bars],
                       "Close": [b.close for b in bars], "Volume": [b.volume for b in bars]},
                      index=pd.to_datetime([b.ts for b in bars], unit="ms"))
    rates, trades = [], 0
    for _ in range(runs):
        bt = Backtest(df, SmaCross, cash=10_000_000, commission=0.0, finalize_trades=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            stats = bt.run()
            rates.append(len(bars) / (time.perf_counter() - t0))
        trades = int(stats["# Trades"])
    return statistics.median(rates), rates, trades


def runner_rate(bootstrap: str, pg: str, reg: Any, bars: list[Bar]) -> tuple[float, int]:
    """Bars/s of the runner's service loop in this process, from its first consumed bar to its last."""
    dsn = f"{pg}/bench_{uuid.uuid4().hex[:8]}"
    apply_migrations(dsn)
    topic_bars = [orjson.dumps(b.to_dict()) for b in bars]
    p = bus.Producer(bootstrap)
    for b, v in zip(bars, topic_bars, strict=True):
        p.produce("bars.1m", v, str(b.instrument_token).encode())
    p.flush()
    settings = load_settings(kafka_bootstrap_servers=bootstrap, postgres_dsn=dsn, kafka_partitions=1)
    args = argparse.Namespace(registry=None, ensembles=None, warmup_bars=300, group=f"bench-{uuid.uuid4().hex[:8]}",
                              max_ahead_ms=300_000, max_age_s=0)
    svc = StrategyRunner(settings, Metrics(f"bench_runner_{uuid.uuid4().hex[:6]}"), args, registry=reg)
    svc.start()
    core = svc.processor
    batch = svc.batch_size
    svc.batch_size = 1
    while core.counts["bars"] == 0:  # type: ignore[attr-defined]
        svc.step()
    svc.batch_size = batch
    first = core.counts["bars"]  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    while core.counts["bars"] < len(bars):  # type: ignore[attr-defined]
        svc.step()
    rate = (len(bars) - first) / (time.perf_counter() - t0)
    orders = svc.engine.counts["orders"]
    svc.request_stop()
    svc.stop()
    return rate, orders


def latency(bootstrap: str, pg: str, uni: list[Instrument], bars: list[Bar]) -> tuple[float, float, int]:
    """p50/p99 seconds from a bar's produce to its order's creation, the runner as a process."""
    dsn = f"{pg}/lat_{uuid.uuid4().hex[:8]}"
    apply_migrations(dsn)
    work = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    cfg = work / "configs"
    shutil.copytree(ROOT / "configs", cfg)
    cols = ("instrument_token", "exchange_token", "tradingsymbol", "name", "exchange", "segment",
            "instrument_type", "tick_size", "lot_size", "last_price")
    (cfg / "tokens.csv").write_text(",".join(cols) + "\n" + "".join(
        f"{i.instrument_token},{i.exchange_token},{i.tradingsymbol},{i.tradingsymbol},NSE,NSE,EQ,0.05,1,"
        f"{i.last_price}\n" for i in uni))
    import yaml

    (work / "registry.yaml").write_text(yaml.safe_dump(FOUR))
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=bootstrap, POSTGRES_DSN=dsn, PYTHONPATH=str(ROOT),
               METRICS_PORT="0", KAFKA_PARTITIONS="1", TRADESTACK_CONFIG_DIR=str(cfg),
               STRATEGY_REGISTRY=str(work / "registry.yaml"), STRATEGY_ENSEMBLES=str(work / "none.yaml"),
               STRATEGY_MAX_AGE_S="0")  # historical bars: decide them
    group = f"lat-{uuid.uuid4().hex[:8]}"
    runner = subprocess.Popen([sys.executable, "-m", "strategy.runner_modular", "--group", group], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=(work / "runner.log").open("wb"))
    time.sleep(8)  # start-up and group join before the feed starts
    p = bus.Producer(bootstrap)
    sent: dict[tuple[int, int], float] = {}
    by_minute: dict[int, list[Bar]] = {}
    for b in bars:
        by_minute.setdefault(b.ts, []).append(b)
    for ts in sorted(by_minute):
        now = time.time()
        for b in by_minute[ts]:
            p.produce("bars.1m", orjson.dumps(b.to_dict()), str(b.instrument_token).encode())
            sent[(b.instrument_token, b.ts)] = now
        p.flush()
        time.sleep(0.05)
    time.sleep(3)
    runner.terminate()
    runner.wait(30)
    c = bus.Consumer(bootstrap, f"lat-read-{uuid.uuid4().hex[:8]}", ["orders"])
    lat: list[float] = []
    idle, deadline = 0, time.monotonic() + 30
    while idle < 3 and time.monotonic() < deadline:
        msgs = c.poll_batch(10000, 1.0)
        if lat or msgs:
            idle = 0 if msgs else idle + 1
        for m in msgs:
            o = orjson.loads(m.value())
            at = sent.get((o["instrument_token"], o["signal_ts"] - 60_000))
            if at is not None:
                lat.append(m.timestamp()[1] / 1000 - at)
    c.close()
    lat.sort()
    if not lat:
        raise RuntimeError(f"no orders in the latency run; log in {work}")
    return lat[len(lat) // 2], lat[int(len(lat) * 0.99)], len(lat)


def run(quick: bool = False) -> Section:
    runs = 3 if quick else 5
    uni = universe()
    tokens = [i.instrument_token for i in uni]
    bars = session_bars(tokens, [DAY])
    one, four = _registry(ONE, uni), _registry(FOUR, uni, ENSEMBLE)
    four_alone = _registry(FOUR, uni)
    e1, e1_runs, o1 = engine_rate(one, bars, runs)
    by_inst = sorted(bars, key=lambda b: (b.instrument_token, b.ts))  # the backtester's order
    e1s, e1s_runs, o1s = engine_rate(one, by_inst, runs)
    e4, e4_runs, o4 = engine_rate(four, bars, runs)
    e4a, e4a_runs, o4a = engine_rate(four_alone, bars, runs)
    single = session_bars([tokens[0]], trading_days(20 if quick else 200), seed=3)
    es, es_runs, os_ = engine_rate(_registry(ONE, uni[:1]), single, runs)
    bp, bp_runs, bp_trades = backtesting_py_rate(single, 3)
    with embedded_broker() as bootstrap, embedded_pg() as pg:
        r4_all = [runner_rate(bootstrap, pg, four_alone, bars) for _ in range(1 if quick else 3)]
    r4_runs = [r for r, _ in r4_all]
    r4, r4_orders = statistics.median(r4_runs), r4_all[0][1]
    with embedded_broker() as bootstrap, embedded_pg() as pg:
        live = session_bars(tokens, [DAY], seed=9)[: N_INSTRUMENTS * (60 if quick else 150)]
        p50, p99, n_lat = latency(bootstrap, pg, uni, live)

    def runs_txt(xs: list[float]) -> str:
        return ", ".join(fmt_rate(x) for x in xs)

    sec = Section("strategy", "Strategy: pure decision engine, runner service loop, bar-to-order latency")
    sec.lines += [
        f"Machine: {machine_notes()}. Broker: Tansu (embedded, in-memory), one partition; Postgres 18 embedded.",
        f"Bars: {N_INSTRUMENTS} instruments x one NSE session of 1 m bars ({len(bars):,} bars), seeded random walk; "
        f"medians of {runs} runs. Targets (issue 9): pure engine >= 300k bars/s for one ma_crossover, runner "
        ">= 50k bars/s with 4 strategies, bar-to-order p99 < 20 ms.",
        "",
        "| what | bars/s (median) | runs | orders |",
        "|---|---:|---|---:|",
        f"| pure engine, 1 ma_crossover (sma 10/30), bars interleaved by time (live order) | **{fmt_rate(e1)}** | "
        f"{runs_txt(e1_runs)} | {o1:,} |",
        f"| pure engine, 1 ma_crossover, the same bars one instrument at a time (a backtest's order) | "
        f"**{fmt_rate(e1s)}** | {runs_txt(e1s_runs)} | {o1s:,} |",
        f"| pure engine, 4 strategies, each trading | {fmt_rate(e4a)} | {runs_txt(e4a_runs)} | {o4a:,} |",
        f"| pure engine, 4 strategies voting in a k_of_n ensemble | {fmt_rate(e4)} | {runs_txt(e4_runs)} | {o4:,} |",
        f"| runner service loop (broker + Postgres), 4 strategies | **{fmt_rate(r4)}** | {runs_txt(r4_runs)} | "
        f"{r4_orders:,} |",
        "",
        f"One instrument, {len(single):,} bars ({len(single) // 375} sessions): pure engine 1 ma_crossover "
        f"{fmt_rate(es)} bars/s (runs {runs_txt(es_runs)}, {os_:,} orders) vs backtesting.py `SmaCross` 10/30 "
        f"{fmt_rate(bp)} bars/s (runs {runs_txt(bp_runs)}, {bp_trades:,} trades): **{es / bp:.1f}x**. "
        "backtesting.py precomputes its indicators vectorised and also fills orders and tracks equity; "
        "our engine decides orders and leaves filling to the gateway (the backtester adds that later).",
        "",
        f"Bar-to-order latency (the runner as a process, 4 strategies, a minute's {N_INSTRUMENTS} bars every 50 ms, "
        f"{n_lat:,} orders): p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, from the bar's produce call to "
        "the order message's creation in the runner (consume, decode, decide, encode).",
    ]
    return sec


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv).render())
