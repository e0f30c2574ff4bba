"""The risk services end to end: ``orders`` -> risk.manager_v2 -> ``orders.sized`` -> risk.order_budget_guard ->
``orders.allowed``, real processes on the embedded broker and Postgres, equity from kitesim's margins
through the real ``kiteconnect`` client.

- sized and allowed orders (and rejections with reasons) in the table, on the topics and on ``order.updates``;
  the sized quantity is the risk formula on kitesim's equity; poison goes to ``dlq``;
- a failing margins API: flagged fallback sizing on the configured capital, never a crash;
- a guard restart keeps the used budget (derived from the tables, never reset);
- the kill switch blocks entries within 1 s of ``on`` (exits pass), and ``off`` lets them through again;
- an embedded broker that restarted empty: orders waiting at NEW and SIZED in the table are re-driven;
- kill -9 of each service in the middle of 1,000 orders: every order gets exactly one risk decision and
  ``orders.allowed`` carries exactly the orders the table says were allowed.
"""

from __future__ import annotations

import math
import signal
import subprocess
import time
from collections import Counter
from datetime import UTC, date, datetime, time as dtime
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from kiteconnect import KiteConnect

from core import bus
from core.clock import IST
from core.topics import DLQ, ORDER_UPDATES, ORDERS, ORDERS_ALLOWED, ORDERS_SIZED, all_topics
from execution.oms import OmsTx, Status
from kitesim.testing import control, running_simulator
from tests.conftest import query
from tests.integration.kite_harness import metric_sum, read_topic, scrape, start_service, stop_process, wait_for
from tests.integration.test_stream_delivery import _drain

pytestmark = pytest.mark.integration

DAY = date(2026, 11, 20)  # a Friday, an NSE trading day
INFY, TCS, RELIANCE, HDFCBANK = 408065, 2953217, 738561, 341249
SYMBOL = {INFY: "INFY", TCS: "TCS", RELIANCE: "RELIANCE", HDFCBANK: "HDFCBANK"}
PRICE = {INFY: 1500.0, TCS: 3100.0, RELIANCE: 1500.0, HDFCBANK: 1000.0}

BUDGET = """
capital: {capital}
equity_source: {equity_source}
margins_ttl_s: 30
margins_timeout_s: 2
margins_retry_s: 1
risk_per_trade_pct: 0.5
default_stop_pct: 1.0
max_notional_per_order: {max_notional}
max_open_positions: {max_open}
daily_loss_limit: 50000
allowed_products: [MIS]
entry_hours: {{within_session: true, stop_before_close_min: 15}}
order_caps: {{per_second: 1000, per_minute: 10000, per_day: 100000}}
buckets:
  small: {{pct: {small_pct}, strategies: [small_*]}}
  default: {{pct: 50}}
"""
FINAL_RISK = ("ALLOWED", "REJECTED_RISK", "REJECTED_BUDGET")


def ts_at(hh: int, mm: int, ss: int = 0) -> int:
    return int(datetime.combine(DAY, dtime(hh, mm, ss), IST).timestamp() * 1000)


def order(oid: str, token: int = INFY, *, strategy: str = "mac_1m", side: str = "BUY", intent: str = "entry",
          qty: int | None = None, stop: float | None = None, product: str = "MIS",
          signal_ts: int | None = None) -> dict[str, Any]:
    ts = signal_ts or ts_at(10, 0)
    px = PRICE[token]
    if stop is None and intent == "entry":
        stop = px - 10 if side == "BUY" else px + 10
    return {"order_id": oid, "strategy": strategy, "instrument_token": token, "symbol": SYMBOL[token],
            "exchange": "NSE", "side": side, "order_type": "MARKET", "product": product, "price": None,
            "trigger_price": None, "stop_loss": stop if intent == "entry" else None,
            "qty": qty if intent != "entry" else None, "tf": "1m", "signal_ts": ts, "created_ts": ts,
            "extra": {"intent": intent, "reason": "test", "ref_price": px}}


def produce(bootstrap: str, orders: list[dict[str, Any]], topic: str = ORDERS) -> None:
    p = bus.Producer(bootstrap)
    for o in orders:
        p.produce(topic, orjson.dumps(o), o["order_id"].encode())
    p.flush()


def statuses(dsn: str) -> dict[str, str]:
    return dict(query(dsn, "SELECT order_id, status FROM orders"))  # type: ignore[arg-type]


def wait_final(dsn: str, ids: list[str], timeout: float = 60.0) -> dict[str, str]:
    want = set(ids)

    def done() -> bool:
        st = statuses(dsn)
        return all(st.get(i) in FINAL_RISK for i in want)

    wait_for(done, timeout, 0.1, f"{len(ids)} orders decided")
    return {k: v for k, v in statuses(dsn).items() if k in want}


def seed_bars(dsn: str, at_ms: int) -> None:
    """A 1 s bar per instrument a second before ``at_ms`` (the entry price of MARKET orders)."""
    with psycopg.connect(dsn) as conn:
        for tok, px in PRICE.items():
            ts = datetime.fromtimestamp((at_ms - 1000) / 1000, tz=UTC)
            conn.execute("INSERT INTO bars_1s (instrument_token, ts, open, high, low, close, volume, ticks) "
                         "VALUES (%s, %s, %s, %s, %s, %s, 10, 1) ON CONFLICT DO NOTHING",
                         (tok, ts, px, px, px, px))


class Risk:
    """The two services as child processes on one broker, database and simulator."""

    def __init__(self, tmp: Path, bootstrap: str, dsn: str, kite_root: str, **budget: Any) -> None:
        cfg = {"capital": 1_000_000, "equity_source": "broker", "max_notional": 500_000, "max_open": 50,
               "small_pct": 10, **budget}
        self.budget_path = tmp / "risk_budget.yaml"
        self.budget_path.write_text(BUDGET.format(**cfg))
        self.tmp, self.bootstrap, self.dsn = tmp, bootstrap, dsn
        self.env = {**_base_env(), "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "POSTGRES_DSN": dsn, "KITE_ROOT": kite_root,
                    "KITE_API_KEY": "sim", "KITE_ACCESS_TOKEN": "sim-token", "RISK_BUDGET": str(self.budget_path)}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}

    def start(self, name: str) -> None:
        module = {"manager": "risk.manager_v2", "guard": "risk.order_budget_guard"}[name]
        self.procs[name], self.ports[name] = start_service(module, self.env, self.tmp / f"{name}.log", _svc(name))

    def start_all(self) -> None:
        self.start("manager")
        self.start("guard")

    def kill9(self, name: str) -> None:
        p = self.procs.pop(name)
        p.send_signal(signal.SIGKILL)
        p.wait(10)

    def stop(self, name: str) -> int | None:
        return stop_process(self.procs.pop(name, None), 30)

    def metrics(self, name: str) -> dict[str, float]:
        return scrape(self.ports[name])

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(name)

    def log(self, name: str) -> str:
        p = self.tmp / f"{name}.log"
        return p.read_text() if p.exists() else ""


def _svc(name: str) -> str:
    return {"manager": "risk_manager", "guard": "order_budget_guard"}[name]


def _base_env() -> dict[str, str]:
    import os

    from core.settings import PROJECT_ROOT

    env = dict(os.environ)
    env.update({"PYTHONPATH": str(PROJECT_ROOT), "KAFKA_PARTITIONS": "3", "PYTHONUNBUFFERED": "1"})
    return env


@pytest.fixture()
def sim():
    with running_simulator(seed=7) as s:
        yield s


@pytest.fixture()
def risk(tmp_path: Path, broker: str, fresh_pg_dsn: str, sim):
    bus.ensure_topics(broker, all_topics(3))
    made: list[Risk] = []

    def make(**budget: Any) -> Risk:
        r = Risk(tmp_path, broker, fresh_pg_dsn, sim.http_url, **budget)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def test_orders_are_sized_on_broker_equity_allowed_or_rejected_with_reasons(risk, sim) -> None:
    r = risk(capital=10_000_000)  # buckets of 5,000,000: budgets do not bind here
    seed_bars(r.dsn, ts_at(10, 0))
    net = KiteConnect("sim", access_token="sim-token", root=sim.http_url).margins("equity")["net"]
    entries = [order(f"e{i}", tok) for i, tok in enumerate(PRICE)]
    for o in entries[1:]:  # the first is priced by the bar that decided it, the others (no ref_price) by 1 s bars
        del o["extra"]["ref_price"]
    bad_product = order("nrml", INFY, product="NRML")
    late = order("late", TCS, signal_ts=ts_at(15, 20))  # within 15 min of the close
    exit_ = order("x1", HDFCBANK, side="SELL", intent="exit", qty=9, strategy="other_1m")
    stray = order("x2", TCS, side="SELL", intent="exit", qty=5, strategy="other_1m")  # nothing held on TCS
    with psycopg.connect(r.dsn) as conn:  # other_1m holds 7 HDFCBANK: the exit of 9 is trimmed to 7
        conn.execute("INSERT INTO fills (fill_id, order_id, instrument_token, side, qty, price, ts, venue, strategy) "
                     "VALUES ('f0', 'old', %s, 'BUY', 7, 990, now(), 'paper', 'other_1m')", (HDFCBANK,))
    r.start_all()
    produce(r.bootstrap, [*entries, bad_product, late, exit_, stray])
    p = bus.Producer(r.bootstrap)
    p.produce(ORDERS, b"\xff not json", b"poison")
    p.produce(ORDERS, orjson.dumps({**order("neg"), "qty": -5}), b"neg")
    p.flush()
    ids = [o["order_id"] for o in [*entries, bad_product, late, exit_, stray]]
    st = wait_final(r.dsn, ids)
    assert st["nrml"] == "REJECTED_RISK" and st["late"] == "REJECTED_RISK" and st["x2"] == "REJECTED_RISK"
    assert all(st[o["order_id"]] == "ALLOWED" for o in entries) and st["x1"] == "ALLOWED", \
        query(r.dsn, "SELECT order_id, status_detail FROM orders")
    rows = {oid: (qty, risk_, budget, detail) for oid, qty, risk_, budget, detail in query(
        r.dsn, "SELECT order_id, qty, risk, budget, status_detail FROM orders")}
    assert rows["nrml"][1]["reason"] == "product_not_allowed" and rows["nrml"][3].startswith("product_not_allowed")
    assert rows["late"][1]["reason"] == "outside_entry_hours"
    for o in entries:  # qty = floor(equity x 0.5% / 10), the stop 10 below the 1 s bar close
        qty, rk, bd, _ = rows[o["order_id"]]
        assert rk["sizing_source"] == "broker" and rk["equity"] == pytest.approx(net)
        source = "ref_price" if o["order_id"] == "e0" else "bar_1s"
        assert rk["price_source"] == source and rk["entry_price"] == PRICE[o["instrument_token"]]
        want = math.floor(net * 0.005 / 10)
        want = min(want, math.floor(500_000 / PRICE[o["instrument_token"]]))  # max_notional_per_order
        assert qty == want, (o["order_id"], qty, want)
        assert bd["decision"] == "allowed" and bd["bucket"] == "default"
    assert rows["x1"][0] == 7 and rows["x1"][1]["exit_requested"] == 9 and rows["x1"][2]["exit"] is True
    assert rows["x2"][1]["reason"] == "exit_without_position"
    # topics carry exactly the table's decisions
    sized = {m["order_id"] for m in read_topic(r.bootstrap, ORDERS_SIZED, idle=1.0)}
    allowed = read_topic(r.bootstrap, ORDERS_ALLOWED, idle=1.0)
    assert sized == {i for i in ids if st[i] != "REJECTED_RISK"}
    assert {m["order_id"] for m in allowed} == {i for i in ids if st[i] == "ALLOWED"}
    assert all(m["qty"] == rows[m["order_id"]][0] and m["budget"]["decision"] == "allowed" for m in allowed)
    updates = read_topic(r.bootstrap, ORDER_UPDATES, idle=1.0)
    seen = Counter((u["order_id"], u["to_status"]) for u in updates)
    assert seen[("nrml", "REJECTED_RISK")] == 1 and seen[("e0", "SIZED")] == 1 and seen[("e0", "ALLOWED")] == 1
    audit = query(r.dsn, "SELECT order_id, from_status, to_status, version FROM order_audit WHERE applied "
                         "AND order_id = 'e0' ORDER BY version")
    assert [(a[1], a[2], a[3]) for a in audit] == [(None, "NEW", 1), ("NEW", "SIZED", 2), ("SIZED", "ALLOWED", 3)]
    dlq = _drain(r.bootstrap, DLQ, 2, timeout=20)
    assert sorted(m.key() for m in dlq) == [b"neg", b"poison"]  # undecodable, negative qty; the service went on
    m = r.metrics("manager")
    assert metric_sum(m, "tradestack_risk_manager_rejects_total") == 3
    assert m['tradestack_risk_manager_rejects_total{reason="product_not_allowed"}'] == 1


def test_failing_margins_api_sizes_on_capital_flagged_fallback(risk, sim) -> None:
    r = risk(capital=400_000)
    seed_bars(r.dsn, ts_at(10, 0))
    control(sim.http_url, "/_sim/faults", {"http_5xx_rate": 1.0, "http_5xx_paths": ["/user/margins"]})
    r.start_all()
    produce(r.bootstrap, [order("f1", INFY), order("f2", TCS)])
    wait_final(r.dsn, ["f1", "f2"])
    for oid, tok, qty, rk in query(r.dsn, "SELECT order_id, instrument_token, qty, risk FROM orders"):
        assert rk["sizing_source"] == "fallback" and rk["equity"] == 400_000
        assert qty == min(math.floor(400_000 * 0.005 / 10), math.floor(500_000 / PRICE[tok])), oid  # 200 / 161
    assert r.metrics("manager")["tradestack_risk_manager_sizing_fallback_total"] >= 2
    assert r.procs["manager"].poll() is None
    # the broker recovers: sizing goes back to its equity (after margins_retry_s)
    control(sim.http_url, "/_sim/faults", {"http_5xx_rate": 0.0})
    time.sleep(1.5)
    produce(r.bootstrap, [order("f3", RELIANCE)])
    wait_final(r.dsn, ["f3"])
    assert query(r.dsn, "SELECT risk->>'sizing_source' FROM orders WHERE order_id = 'f3'")[0][0] == "broker"


def test_guard_restart_keeps_the_used_budget(risk) -> None:
    # equity pinned at 1,000,000: qty 5,000 / 10 = 500, capped by max_notional 40,000 to 26 x 1500 = 39,000
    # per entry; bucket small = 12% = 120,000: three entries fit, a fourth does not
    r = risk(equity_source="capital", max_notional=40_000, small_pct=12)
    seed_bars(r.dsn, ts_at(10, 0))
    r.start_all()
    first = [order(f"s{i}", INFY, strategy=f"small_{i}") for i in range(2)]
    produce(r.bootstrap, first)
    assert set(wait_final(r.dsn, ["s0", "s1"]).values()) == {"ALLOWED"}
    assert r.stop("guard") == 0
    r.start("guard")
    more = [order(f"s{i}", INFY, strategy=f"small_{i}", signal_ts=ts_at(10, 1)) for i in range(2, 4)]
    produce(r.bootstrap, more)
    st = wait_final(r.dsn, ["s2", "s3"])
    # a guard that forgot the first two (78,000) would allow both
    assert sorted(st.values()) == ["ALLOWED", "REJECTED_BUDGET"]
    rejected = next(k for k, v in st.items() if v == "REJECTED_BUDGET")
    budget = query(r.dsn, "SELECT budget FROM orders WHERE order_id = %s", rejected)[0][0]
    assert budget["reason"] == "bucket_exhausted" and budget["bucket_used"] == pytest.approx(117_000)
    used, pending = query(r.dsn, "SELECT used, pending FROM risk_budget_usage WHERE bucket = 'small'")[0]
    assert used == pytest.approx(117_000) and pending == pytest.approx(117_000)  # no fills: all pending


def test_kill_switch_blocks_entries_within_a_second_and_exits_pass(risk) -> None:
    r = risk(equity_source="capital", capital=10_000_000)
    seed_bars(r.dsn, ts_at(10, 0))
    with psycopg.connect(r.dsn) as conn:  # mac_1m holds 10 INFY: its exit closes them
        conn.execute("INSERT INTO fills (fill_id, order_id, instrument_token, side, qty, price, ts, venue, strategy) "
                     "VALUES ('f0', 'old', %s, 'BUY', 10, 1500, now(), 'paper', 'mac_1m')", (INFY,))
    r.start_all()
    produce(r.bootstrap, [order("warm", INFY)])
    wait_final(r.dsn, ["warm"])
    env = {**r.env}
    on = subprocess.run([_py(), "-m", "risk.kill_switch", "on", "--reason", "test halt"], env=env,
                        capture_output=True, text=True, timeout=30)
    assert on.returncode == 0 and "ON" in on.stdout, on.stderr
    t_on = time.monotonic()
    produce(r.bootstrap, [order("k1", TCS, signal_ts=ts_at(10, 2)),
                          order("kx", INFY, side="SELL", intent="exit", qty=3, signal_ts=ts_at(10, 2))])
    produced_after = time.monotonic() - t_on
    st = wait_final(r.dsn, ["k1", "kx"])
    # an entry that reached the guard less than 1 s after `on` returned is blocked; the exit passes
    assert produced_after < 1.0, f"the entry was produced {produced_after:.2f}s after on: not a 1 s test"
    assert st == {"k1": "REJECTED_BUDGET", "kx": "ALLOWED"}
    assert query(r.dsn, "SELECT budget->>'reason' FROM orders WHERE order_id = 'k1'")[0][0] == "kill_switch"
    status = subprocess.run([_py(), "-m", "risk.kill_switch", "status"], env=env, capture_output=True, text=True,
                            timeout=30)
    assert status.returncode == 0 and "ON" in status.stdout and "test halt" in status.stdout
    wait_for(lambda: r.metrics("guard")["tradestack_order_budget_guard_kill_switch"] == 1.0, 10, 0.2, "gauge")
    assert "kill switch ON" in r.log("guard")
    off = subprocess.run([_py(), "-m", "risk.kill_switch", "off"], env=env, capture_output=True, text=True,
                         timeout=30)
    assert off.returncode == 0 and "off" in off.stdout
    produce(r.bootstrap, [order("k2", RELIANCE, signal_ts=ts_at(10, 3))])
    assert wait_final(r.dsn, ["k2"]) == {"k2": "ALLOWED"}
    log = query(r.dsn, "SELECT active FROM risk_kill_switch_log ORDER BY id")
    assert [a for (a,) in log] == [True, False]


def _py() -> str:
    import sys

    return sys.executable


def test_orders_waiting_in_the_table_are_redriven_after_an_empty_broker(risk) -> None:
    """The broker is fresh (nothing on any topic), the table holds orders at NEW and at SIZED."""
    r = risk(equity_source="capital", capital=10_000_000)
    seed_bars(r.dsn, ts_at(10, 0))
    new = [order(f"n{i}", tok) for i, tok in enumerate(PRICE)]
    sized = [{**order(f"z{i}", tok, signal_ts=ts_at(10, 1)), "qty": 5,
              "risk": {"entry_price": PRICE[tok], "sizing_source": "capital"}} for i, tok in enumerate(PRICE)]
    with psycopg.connect(r.dsn) as conn:
        tx = OmsTx(conn, "strategy_runner", ts_at(10, 0))
        tx.ensure(new, Status.NEW)
        tx.ensure(sized, Status.SIZED)
        tx.finish()
        # a row no message could carry (no signal time): it cannot be decided; it must not stop the others
        conn.execute("INSERT INTO orders (order_id, strategy, instrument_token, symbol, exchange, side, order_type, "
                     "product, status) VALUES ('broken', 'mac_1m', %s, 'INFY', 'NSE', 'BUY', 'MARKET', 'MIS', 'NEW')",
                     (INFY,))
    r.start_all()
    ids = [o["order_id"] for o in new + sized]
    st = wait_final(r.dsn, [*ids, "broken"])
    assert st.pop("broken") == "REJECTED_RISK"
    assert query(r.dsn, "SELECT risk->>'reason' FROM orders WHERE order_id = 'broken'")[0][0] == "invalid_order"
    assert set(st.values()) == {"ALLOWED"}
    assert not query(r.dsn, "SELECT order_id FROM orders WHERE status IN ('NEW', 'SIZED')")
    allowed = {m["order_id"] for m in read_topic(r.bootstrap, ORDERS_ALLOWED, idle=1.0)}
    assert allowed == set(ids)
    assert "re-driving orders=5 waiting at NEW" in r.log("manager")
    assert r.procs["manager"].poll() is None


def _assert_one_decision_each(r: Risk, ids: list[str]) -> None:
    st = wait_final(r.dsn, ids, timeout=120)
    assert len(st) == len(ids)
    # exactly one decision per stage per order in the audit
    per = Counter((oid, src) for oid, src in query(
        r.dsn, "SELECT order_id, source FROM order_audit WHERE applied AND to_status = ANY(%s)",
        ["SIZED", "REJECTED_RISK", "ALLOWED", "REJECTED_BUDGET"]))
    for oid in ids:
        assert per[(oid, "risk_manager")] == 1, oid
        if st[oid] != "REJECTED_RISK":
            assert per[(oid, "order_budget_guard")] == 1, oid
    allowed_topic = {m["order_id"] for m in read_topic(r.bootstrap, ORDERS_ALLOWED, idle=1.5, timeout=60)}
    assert allowed_topic == {i for i, s in st.items() if s == "ALLOWED"}
    sized_topic = {m["order_id"] for m in read_topic(r.bootstrap, ORDERS_SIZED, idle=1.0, timeout=60)}
    assert sized_topic == {i for i, s in st.items() if s != "REJECTED_RISK"}


def stream(n: int) -> list[dict[str, Any]]:
    """``n`` orders a second apart from 09:30: entries on 25 strategies x 4 instruments, every 10th an exit,
    every 50th a product the policy refuses."""
    out = []
    toks = list(PRICE)
    for i in range(n):
        ts = ts_at(9, 30) + i * 1000
        tok = toks[i % 4]
        strat = f"st{i % 25}_1m"
        if i % 10 == 9:
            out.append(order(f"o{i:04d}", tok, strategy=strat, side="SELL", intent="exit", qty=1 + i % 7,
                             signal_ts=ts))
        else:
            out.append(order(f"o{i:04d}", tok, strategy=strat, product="CNC" if i % 50 == 7 else "MIS",
                             signal_ts=ts))
    return out


@pytest.mark.parametrize("victim", ["manager", "guard"])
def test_kill9_mid_stream_of_1000_orders_one_decision_each(risk, victim: str) -> None:
    r = risk(equity_source="capital", capital=100_000_000, max_open=1000)
    seed_bars(r.dsn, ts_at(9, 30))
    orders = stream(1000)
    r.start_all()
    produce(r.bootstrap, orders[:400])
    wait_for(lambda: query(r.dsn, "SELECT count(*) FROM orders WHERE status <> 'NEW'")[0][0] >= 100, 60, 0.05,
             "some decided")
    produce(r.bootstrap, orders[400:700])
    decided_at_kill = query(r.dsn, "SELECT count(*) FROM orders WHERE status = ANY(%s)", list(FINAL_RISK))[0][0]
    r.kill9(victim)
    assert decided_at_kill < 700, "everything was decided before the kill: not mid-stream"
    produce(r.bootstrap, orders[700:])
    time.sleep(0.5)
    r.start(victim)
    _assert_one_decision_each(r, [o["order_id"] for o in orders])


def test_make_risk_v2_mid_stream_restarts_exactly_the_risk_group(tmp_path: Path, risk, sim) -> None:
    """The supervisor runs the shipped risk services (plus a bystander); `make risk-v2` in the middle of
    1,000 orders restarts those two only, and every order still gets exactly one decision."""
    import os
    import threading

    import yaml

    from core.settings import PROJECT_ROOT
    from orchestrator.control import RunPaths, request
    from tests.conftest import free_port

    r = risk(equity_source="capital", capital=100_000_000, max_open=1000)
    seed_bars(r.dsn, ts_at(9, 30))
    shipped = yaml.safe_load((PROJECT_ROOT / "configs/process_supervisor.yaml").read_text())
    services = {n: {k: v for k, v in shipped["services"][n].items() if k != "depends_on"}
                for n in ("risk_manager", "order_budget_guard")}
    assert {s["group"] for s in services.values()} == {"risk"}
    services["bystander"] = {"cmd": [_py(), "-c", "import time; time.sleep(600)"], "group": "other",
                             "ready_after": 0.2}
    cfg_path = tmp_path / "supervisor.yaml"
    cfg_path.write_text(yaml.safe_dump({"env": {}, "services": services}, sort_keys=False))
    var = tmp_path / "var"
    env = {**r.env, "TRADESTACK_VAR_DIR": str(var), "RISK_MANAGER_METRICS_PORT": str(free_port()),
           "BUDGET_GUARD_METRICS_PORT": str(free_port()), "TRADING_MODE": "paper"}
    env.pop("METRICS_PORT", None)
    sup = subprocess.Popen([_py(), "-m", "orchestrator.process_supervisor", "--config", str(cfg_path)],
                           cwd=PROJECT_ROOT, env=env, stdout=(tmp_path / "sup.out").open("wb"),
                           stderr=subprocess.STDOUT, start_new_session=True)
    paths = RunPaths(var)

    def pids() -> dict[str, int]:
        return {s["name"]: s["pid"] for s in request(paths.socket, {"cmd": "status"}, timeout=5)["services"]}

    try:
        ready = subprocess.run([_py(), "-m", "orchestrator.ctl", "wait-ready", "--timeout", "90"], cwd=PROJECT_ROOT,
                               env=env, capture_output=True, text=True, timeout=120)
        assert ready.returncode == 0, ready.stdout + ready.stderr + (tmp_path / "sup.out").read_text()
        before = pids()
        orders = stream(1000)

        def feed() -> None:  # ~125 orders/s for 8 s
            p = bus.Producer(r.bootstrap)
            for i, o in enumerate(orders):
                p.produce(ORDERS, orjson.dumps(o), o["order_id"].encode())
                if i % 25 == 24:
                    p.flush()
                    time.sleep(0.2)
            p.flush()

        t = threading.Thread(target=feed)
        t.start()
        wait_for(lambda: query(r.dsn, "SELECT count(*) FROM orders WHERE status <> 'NEW'")[0][0] >= 150, 60, 0.05,
                 "some decided")
        assert t.is_alive(), "the feed ended before the restart: not mid-stream"
        made = subprocess.run(["make", "--no-print-directory", "risk-v2"], cwd=PROJECT_ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
        t.join(60)
        assert made.returncode == 0, made.stdout + made.stderr
        assert "risk_manager" in made.stdout and "order_budget_guard" in made.stdout and "bystander" not in made.stdout
        after = pids()
        assert after["bystander"] == before["bystander"]
        assert after["risk_manager"] != before["risk_manager"]
        assert after["order_budget_guard"] != before["order_budget_guard"]
        _assert_one_decision_each(r, [o["order_id"] for o in orders])
    finally:
        subprocess.run([_py(), "-m", "orchestrator.ctl", "stop", "--timeout", "60"], cwd=PROJECT_ROOT, env=env,
                       capture_output=True, timeout=90)
        try:
            sup.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(sup.pid, signal.SIGKILL)


def test_risk_services_survive_a_database_restart_and_an_empty_broker_restart(tmp_path: Path, sim) -> None:
    """Postgres stops mid-stream and comes back; later the broker restarts empty. The services never die,
    and every order (also those produced while Postgres was down) gets exactly one decision."""
    from core.migrate import apply_migrations
    from orchestrator.kafka_launcher import start_tansu
    from orchestrator.pg_launcher import start_embedded_postgres, stop as stop_embedded_postgres
    from tests.conftest import free_port, wait_tcp

    pg_port, k_port = free_port(), free_port()
    data = tmp_path / "pgdata"
    pg = start_embedded_postgres(data, pg_port)
    wait_tcp(pg_port, 60)
    dsn = f"postgresql://tradestack@127.0.0.1:{pg_port}/restart"
    apply_migrations(dsn)
    seed_bars(dsn, ts_at(9, 30))
    broker = start_tansu(k_port)
    wait_tcp(k_port)
    bootstrap = f"127.0.0.1:{k_port}"
    bus.ensure_topics(bootstrap, all_topics(3))
    r = Risk(tmp_path, bootstrap, dsn, sim.http_url, equity_source="capital", capital=100_000_000, max_open=1000)
    orders = stream(300)
    try:
        r.start_all()
        produce(bootstrap, orders[:100])
        wait_final(dsn, [o["order_id"] for o in orders[:100]])
        stop_embedded_postgres(pg)
        produce(bootstrap, orders[100:200])
        time.sleep(3)  # the services retry with backoff meanwhile
        assert all(p.poll() is None for p in r.procs.values()), "a service died while Postgres was down"
        pg = start_embedded_postgres(data, pg_port)
        wait_tcp(pg_port, 60)
        wait_final(dsn, [o["order_id"] for o in orders[:200]], timeout=90)
        broker.terminate()
        broker.wait(10)
        broker = start_tansu(k_port)  # back empty, on the same port
        wait_tcp(k_port)
        bus.ensure_topics(bootstrap, all_topics(3))
        # as the strategy runner does: produce, then the row at NEW. The consumers' positions are past the
        # new broker's offsets (Tansu answers no OFFSET_OUT_OF_RANGE), so these arrive by the re-drive of
        # NEW rows unchanged for 10 s: Postgres is the outbox
        produce(bootstrap, orders[200:])
        with psycopg.connect(dsn) as conn:
            tx = OmsTx(conn, "strategy_runner", ts_at(9, 30))
            tx.ensure(orders[200:], Status.NEW)
            tx.finish()
        # librdkafka does not support a topic re-created under the same name (a new topic id, as an empty
        # Tansu gives): a client may crash with SIGSEGV on reconnect (librdkafka issue 4898: "restart the
        # clients"). The supervisor restarts a service that died (restart policy on-failure); do the same.
        deadline = time.monotonic() + 120
        ids = [o["order_id"] for o in orders]
        while time.monotonic() < deadline:
            for name in [n for n, p in r.procs.items() if p.poll() is not None]:
                r.procs.pop(name)
                r.start(name)
            st = statuses(dsn)
            if all(st.get(i) in FINAL_RISK for i in ids):
                break
            time.sleep(0.5)
        st = {i: statuses(dsn).get(i) for i in ids}
        assert all(v in FINAL_RISK for v in st.values()), Counter(st.values())
        assert all(p.poll() is None for p in r.procs.values())
        per = Counter(oid for (oid,) in query(
            dsn, "SELECT order_id FROM order_audit WHERE applied AND source = 'risk_manager' AND to_status = ANY(%s)",
            ["SIZED", "REJECTED_RISK"]))
        assert set(per) == set(st) and set(per.values()) == {1}
        assert "retrying" in r.log("manager") + r.log("guard")
    finally:
        r.close()
        broker.terminate()
        broker.wait(10)
        stop_embedded_postgres(pg)
