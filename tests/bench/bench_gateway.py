"""The Zerodha gateway against kitesim: orders.allowed -> broker call latency, and the pacer under a burst.

    python -m tests.bench.bench_gateway [--quick]

The gateway runs as a process (``TRADING_MODE=live``, the shipped module) on the embedded broker and
Postgres; kitesim runs in this process with its rate limits on and answers at once (~1 ms). Each order
carries ``created_ts`` = the wall time just before it is produced to ``orders.allowed``; kitesim's order
engine records the wall time each placement reaches it (a timing hook of this bench), so the latency is
our own pipeline: produce, consume, the intake transaction, the ``sending`` mark, the HTTP request.

1. latency: orders at 5/s (under the 8/s pacer, so none waits for it): p50/p99;
2. pacer: a burst of orders produced at once: placements per calendar second (max, median), the whole
   rate, and the 429s kitesim sent (target: zero).
"""

from __future__ import annotations

import os
import statistics
import time
import uuid
from collections import Counter
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import orjson

from core import bus
from core.settings import PROJECT_ROOT
from core.topics import ORDERS_ALLOWED, all_topics
from tests.bench.bench_bars import embedded_pg
from tests.bench.harness import Section, embedded_broker, machine_notes

CONFIG = "pacer: {per_second: 8, per_minute: 390, per_day: 5000}\nrequest_timeout_s: 7.0\n"


def _order(i: int, tag: str) -> dict[str, Any]:
    ts = int(time.time() * 1000)
    return {"order_id": f"{tag}{i:06d}", "strategy": "bench_1m", "instrument_token": 408065, "symbol": "INFY",
            "exchange": "NSE", "side": "BUY" if i % 2 else "SELL", "order_type": "MARKET", "product": "MIS",
            "price": None, "trigger_price": None, "stop_loss": None, "qty": 1, "tf": "1m", "signal_ts": ts,
            "created_ts": ts, "risk": {}, "budget": {}, "extra": {"intent": "entry"}}


def _hook(sim: Any) -> dict[str, float]:
    """Wall time each placement reaches kitesim's order engine, by tag."""
    seen: dict[str, float] = {}
    engine = sim.sim.engine
    place = engine.place

    def timed(variety: str, form: Any, *args: Any) -> str:
        seen.setdefault(str(form.get("tag")), time.time())
        return place(variety, form, *args)

    engine.place = timed
    return seen


def measure(quick: bool = False) -> dict[str, Any]:
    from kitesim.testing import control, running_simulator
    from tests.conftest import free_port, run_module
    from tests.integration.kite_harness import scrape, stop_process, wait_for

    n_lat, n_burst = (60, 300) if quick else (200, 1000)
    with embedded_broker() as bootstrap, embedded_pg() as pg, running_simulator(seed=5) as sim, \
            TemporaryDirectory() as tmp:
        dsn = f"{pg}/gw_{uuid.uuid4().hex[:8]}"
        from core.migrate import apply_migrations

        apply_migrations(dsn)
        bus.ensure_topics(bootstrap, all_topics(1))
        cfg = Path(tmp) / "execution.yaml"
        cfg.write_text(CONFIG)
        port = free_port()
        env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
               "KAFKA_PARTITIONS": "1", "POSTGRES_DSN": dsn, "TRADING_MODE": "live", "LIVE_TRADING_CONFIRM": "yes",
               "KITE_ROOT": sim.http_url, "KITE_API_KEY": "sim", "KITE_ACCESS_TOKEN": "sim-token",
               "EXECUTION_CONFIG": str(cfg), "TRADESTACK_VAR_DIR": str(Path(tmp) / "var"), "METRICS_PORT": str(port)}
        proc = run_module("execution.zerodha_gateway", env, log_path=Path(tmp) / "gateway.log")
        try:
            wait_for(lambda: scrape(port).get("tradestack_zerodha_gateway_up") == 1.0, 60, 0.2, "gateway up")
            seen = _hook(sim)
            producer = bus.Producer(bootstrap)
            warm = [_order(i, "warm") for i in range(5)]  # the consumer group joins; connections open
            for o in warm:
                producer.produce(ORDERS_ALLOWED, orjson.dumps(o), o["order_id"].encode())
            producer.flush()
            wait_for(lambda: all(o["order_id"] in seen for o in warm), 60, 0.1, "warm-up orders placed")
            time.sleep(1.0)
            sent: dict[str, int] = {}
            for i in range(n_lat):  # paced under the pacer
                o = _order(i, "lat")
                sent[o["order_id"]] = o["created_ts"]
                producer.produce(ORDERS_ALLOWED, orjson.dumps(o), o["order_id"].encode())
                producer.flush()
                time.sleep(0.2)
            wait_for(lambda: all(k in seen for k in sent), 60, 0.1, "latency orders placed")
            lat = sorted((seen[k] * 1000 - ts) for k, ts in sent.items())
            before = control(sim.http_url, "/_sim/stats")["rate_limited"].get("orders", 0)
            burst = [_order(i, "bur") for i in range(n_burst)]
            t0 = time.time()
            for o in burst:
                producer.produce(ORDERS_ALLOWED, orjson.dumps(o), o["order_id"].encode())
            producer.flush()
            wait_for(lambda: all(o["order_id"] in seen for o in burst), n_burst / 6 + 60, 0.2, "burst placed")
            times = sorted(seen[o["order_id"]] for o in burst)
            per_second = Counter(int(t) for t in times)
            full = [n for s, n in per_second.items() if int(times[0]) < s < int(times[-1])]  # whole seconds only
            rate_limited = control(sim.http_url, "/_sim/stats")["rate_limited"].get("orders", 0) - before
        finally:
            stop_process(proc, 30)
    return {"n_lat": n_lat, "p50": statistics.median(lat), "p99": lat[int(0.99 * (len(lat) - 1))], "max": lat[-1],
            "n_burst": n_burst, "burst_s": times[-1] - t0, "rate": n_burst / (times[-1] - t0),
            "max_per_s": max(per_second.values()), "median_per_s": statistics.median(full) if full else 0,
            "rate_limited": rate_limited}


def run(quick: bool = False) -> Section:
    r = measure(quick)
    lines = [
        f"Machine: {machine_notes()}. Gateway process (TRADING_MODE=live) on the embedded broker (one partition) and "
        "Postgres; kitesim in the bench's process, rate limits on, answering at once. Latency: from just before an "
        "order is produced to orders.allowed to the moment its placement reaches kitesim's order engine (produce, "
        "consume, the intake transaction, the 'sending' mark, the HTTP request).",
        "",
        "| measure | figure | target |",
        "|---|---:|---|",
        f"| orders.allowed -> broker call, p50 ({r['n_lat']} orders at 5/s) | {r['p50']:.1f} ms | |",
        f"| orders.allowed -> broker call, p99 | {r['p99']:.1f} ms (max {r['max']:.1f}) | < 20 ms: "
        f"{'met' if r['p99'] < 20 else 'MISSED'} |",
        f"| burst of {r['n_burst']} orders: placed in | {r['burst_s']:.1f} s ({r['rate']:.2f}/s) | pacer 8/s |",
        f"| burst: placements per calendar second, max / median | {r['max_per_s']} / {r['median_per_s']:g} | "
        "Kite refuses more than 10 |",
        f"| burst: HTTP 429s from kitesim | {r['rate_limited']} | 0: {'met' if r['rate_limited'] == 0 else 'MISSED'} |",
    ]
    return Section("gateway", "Zerodha gateway against kitesim: latency and pacing", lines)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m tests.bench.bench_gateway", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    print(run(args.quick).render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
