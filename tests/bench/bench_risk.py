"""Risk benchmarks: ``orders`` -> risk.manager_v2 -> ``orders.sized`` -> risk.order_budget_guard -> ``orders.allowed``.

    python -m tests.bench.run_all --only risk [--quick]

Both services run as processes (the shipped modules, as the supervisor starts them) on the embedded
broker (one partition) and Postgres (fsync on). Equity is pinned to the configured capital (no broker
call in the loop; a margins call is cached for ``margins_ttl_s`` in live use anyway), caps are set
high so every order is decided on the full path (OMS upsert, sizing reads, budget book, audit,
``order.updates``) and allowed.

- Throughput: a backlog of orders produced at once; orders/s from the first produce call to the last
  ``orders.allowed`` message (its broker timestamp), median of the runs.
- Latency at a steady rate: orders paced at 500/s (5 every 10 ms); for each order, the
  ``orders.allowed`` message's timestamp minus the order's produce time; p50/p99.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, time as dtime
from pathlib import Path
from typing import Any

import orjson
import psycopg
from confluent_kafka import Consumer, TopicPartition

from core import bus
from core.clock import IST
from core.migrate import apply_migrations
from tests.bench.bench_bars import embedded_pg
from tests.bench.harness import Section, embedded_broker, fmt_rate, machine_notes
from tests.conftest import ROOT, free_port
from tests.integration.kite_harness import scrape, wait_for

DAY = date(2026, 11, 20)
TOKENS = {408065: ("INFY", 1500.0), 2953217: ("TCS", 3100.0), 738561: ("RELIANCE", 1500.0),
          341249: ("HDFCBANK", 1000.0)}
BUDGET = """
capital: 1000000000000
equity_source: capital
risk_per_trade_pct: 0.5
max_notional_per_order: 1000000
max_open_positions: 1000000
daily_loss_limit: 1000000
allowed_products: [MIS]
entry_hours: {within_session: true}
order_caps: {per_second: 1000000, per_minute: 1000000, per_day: 10000000}
buckets:
  default: {pct: 100}
"""


def _ts(hh: int, mm: int) -> int:
    return int(datetime.combine(DAY, dtime(hh, mm), IST).timestamp() * 1000)


def make_orders(n: int, tag: str) -> list[dict[str, Any]]:
    """``n`` MARKET entries on 4 instruments x 50 strategies, signals 1 ms apart from 10:00 IST."""
    toks = list(TOKENS)
    t0 = _ts(10, 0)
    out = []
    for i in range(n):
        tok = toks[i % 4]
        sym, px = TOKENS[tok]
        out.append({"order_id": f"{tag}{i:07d}", "strategy": f"s{i % 50}", "instrument_token": tok, "symbol": sym,
                    "exchange": "NSE", "side": "BUY", "order_type": "MARKET", "product": "MIS", "price": None,
                    "trigger_price": None, "stop_loss": px - 10, "qty": None, "tf": "1m", "signal_ts": t0 + i,
                    "created_ts": t0 + i, "extra": {"intent": "entry", "reason": "bench", "ref_price": px}})
    return out


class Services:
    def __init__(self, bootstrap: str, dsn: str, work: Path) -> None:
        (work / "risk_budget.yaml").write_text(BUDGET)
        self.env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=bootstrap, POSTGRES_DSN=dsn, PYTHONPATH=str(ROOT),
                        KAFKA_PARTITIONS="1", RISK_BUDGET=str(work / "risk_budget.yaml"), PYTHONUNBUFFERED="1")
        self.procs: list[subprocess.Popen[bytes]] = []
        for module, svc in (("risk.manager_v2", "risk_manager"), ("risk.order_budget_guard", "order_budget_guard")):
            port = free_port()
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", module], env={**self.env, "METRICS_PORT": str(port)}, cwd=ROOT,
                stdout=subprocess.DEVNULL, stderr=(work / f"{svc}.log").open("wb")))
            wait_for(lambda p=port, s=svc: scrape(p).get(f"tradestack_{s}_up") == 1.0, 60, 0.2, f"{svc} up")

    def close(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait(60)


def _seed(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        for tok, (_sym, px) in TOKENS.items():
            conn.execute("INSERT INTO bars_1s (instrument_token, ts, open, high, low, close, volume, ticks) "
                         "VALUES (%s, %s, %s, %s, %s, %s, 10, 1)",
                         (tok, datetime.fromtimestamp((_ts(9, 59) + 59_000) / 1000, UTC), px, px, px, px))


def _reader(bootstrap: str) -> Consumer:
    """A consumer of orders.allowed from its current end (assign: no group join, slow on Tansu)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False, "fetch.wait.max.ms": 10})
    _low, high = c.get_watermark_offsets(TopicPartition("orders.allowed", 0), timeout=10)
    c.assign([TopicPartition("orders.allowed", 0, high)])
    return c


def _read_allowed(c: Consumer, want: set[str], timeout: float) -> dict[str, float]:
    """order_id -> broker timestamp (s) of its orders.allowed message, until every id of ``want`` is seen
    (Tansu's high watermark may lag: messages from before the assign offset are skipped by id)."""
    got: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(got) < len(want) and time.monotonic() < deadline:
            for m in c.consume(10_000, 0.2):
                if m.error() is None:
                    oid = orjson.loads(m.value())["order_id"]
                    if oid in want:
                        got.setdefault(oid, m.timestamp()[1] / 1000)
    finally:
        c.close()
    return got


def throughput(bootstrap: str, n: int, tag: str) -> float:
    orders = make_orders(n, tag)
    c = _reader(bootstrap)
    p = bus.Producer(bootstrap)
    t0 = time.time()
    for o in orders:
        p.produce("orders", orjson.dumps(o), o["order_id"].encode())
    p.flush()
    got = _read_allowed(c, {o['order_id'] for o in orders}, 300)
    if len(got) < n:
        raise RuntimeError(f"only {len(got)} of {n} orders allowed")
    return n / (max(got.values()) - t0)


def paced_latency(bootstrap: str, rate: int, seconds: float, tag: str, dsn: str = "") -> tuple[float, float, int]:
    n = int(rate * seconds)
    orders = make_orders(n, tag)
    c = _reader(bootstrap)
    p = bus.Producer(bootstrap)
    sent: dict[str, float] = {}
    chunk = max(1, rate // 100)  # every 10 ms
    t0 = time.perf_counter()
    for k in range(0, n, chunk):
        now = time.time()
        for o in orders[k:k + chunk]:
            o["created_ts"] = int(now * 1000)
            p.produce("orders", orjson.dumps(o), o["order_id"].encode())
            sent[o["order_id"]] = now
        p.flush()
        sleep = t0 + (k + chunk) / rate - time.perf_counter()
        if sleep > 0:
            time.sleep(sleep)
    got = _read_allowed(c, set(sent), 120)
    lat = sorted(got[i] - sent[i] for i in got if i in sent)
    if len(lat) < n:
        with psycopg.connect(dsn) as conn:
            st = conn.execute("SELECT status, status_detail, count(*) FROM orders WHERE order_id LIKE %s "
                              "GROUP BY 1, 2", (f"{tag}%",)).fetchall()
        raise RuntimeError(f"only {len(lat)} of {n} orders allowed in the latency run: {st}")
    return lat[len(lat) // 2], lat[int(len(lat) * 0.99)], len(lat)


def run(quick: bool = False) -> Section:
    runs = 1 if quick else 3
    n = 2_000 if quick else 10_000
    with embedded_broker() as bootstrap, embedded_pg() as pg:
        dsn = f"{pg}/risk_{uuid.uuid4().hex[:8]}"
        apply_migrations(dsn)
        _seed(dsn)
        bus.ensure_topics(bootstrap, {"orders": 1, "orders.sized": 1, "orders.allowed": 1, "order.updates": 1,
                                      "dlq": 1, "fills": 1})
        work = Path(tempfile.mkdtemp(prefix="bench-risk-"))
        svc = Services(bootstrap, dsn, work)
        try:
            time.sleep(3)  # group joins settle
            paced_latency(bootstrap, 100, 2, "w", dsn)  # warm the path (connections, caches)
            rates = [throughput(bootstrap, n, f"t{r}_") for r in range(runs)]
            p50, p99, n_lat = paced_latency(bootstrap, 500, 10 if quick else 20, "l", dsn)
        finally:
            svc.close()
    sec = Section("risk", "Risk: orders -> orders.sized -> orders.allowed through both services")
    sec.lines += [
        f"Machine: {machine_notes()}. Broker: Tansu (embedded, in-memory), one partition; Postgres 18 embedded "
        "(fsync on). Both services as processes (python -m risk.manager_v2, python -m risk.order_budget_guard); "
        "equity pinned to capital, caps high: every order takes the full path (OMS upsert and lock, sizing reads, "
        "budget book from the tables, versioned audit, order.updates) and is allowed. Target (issue 10): "
        "p99 < 25 ms at 500 orders/s.",
        "",
        "| what | figure | runs |",
        "|---|---:|---|",
        f"| throughput, a backlog of {n:,} orders, first produce to last orders.allowed | "
        f"**{fmt_rate(statistics.median(rates))} orders/s** | {', '.join(fmt_rate(r) for r in rates)} |",
        f"| latency at 500 orders/s ({n_lat:,} orders), produce to orders.allowed | **p50 {p50 * 1000:.1f} ms, "
        f"p99 {p99 * 1000:.1f} ms** | 1 |",
        "",
        "The p99 < 25 ms target is missed. Where the time goes (py-spy, wall clock, both services at 500 "
        "orders/s on this machine, 2026-12-04): each stage's batch (~10 orders) costs 10-20 ms, of which the "
        "Postgres transaction is about half (the commit's WAL flush alone ~18% of the stage's wall time; "
        "the OMS lock/insert/update/audit and the risk reads, one pipelined round trip each), the broker "
        "flush ~8% and the synchronous offset commit ~7%; an order waits for the batch in progress, then its "
        "own, in each of the two stages, so the median is 2-4 batch times. Spikes (p99) come from bursts "
        "meeting a batch in progress and from Postgres bloat in a burst this size (40k orders updated twice "
        "leave ~80k dead tuples before autovacuum's first pass). Throughput falls across consecutive runs "
        "for the same reason. What would close it: one process for both stages (one transaction, one "
        "produce and one commit per batch instead of two each), fewer indexes rewritten per state change "
        "(HOT updates), and a broker whose produce/commit round trips are shorter than the embedded Tansu's; "
        "the decisions themselves (sizing, budget) are microseconds. Earlier profiles that found aggregates "
        "over orders/fills (43-56% of the time at 10k pending orders) led to the trigger-kept books.",
    ]
    return sec


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv).render())
