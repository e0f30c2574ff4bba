"""The Zerodha gateway and poller as real processes against kitesim, through the real ``kiteconnect`` client.

- 1,000 allowed orders in one burst, with replies lost after placement (5xx after processing, a reply
  slower than the client's timeout, HTTP 400 "Order request timed out"), orders that sit in PUT ORDER REQ
  RECEIVED, a token that expires mid-run and
  is renewed with ``kite_session set-token``, and a kill -9 of the gateway: no tag is placed twice at the
  broker, the pacer keeps kitesim from ever answering 429, every order ends placed or rejected with a
  reason, and after the poller's reconciliation our states and filled quantities equal the broker's;
- dry mode records what it would send and sends nothing; live mode without confirmation exits 2;
- the poller repairs a fill and a status change it had missed, and flags an order placed by hand;
- a protective stop follows a filled entry, is cancelled by the strategy's exit first, and closes the
  position when the market triggers it; flatten leaves no open order and no position;
- an unregistered IP halts order calls with the fix named, and they resume once it is registered; the
  daily login stores a token owner-only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from kiteconnect import KiteConnect

from core import bus
from core.settings import PROJECT_ROOT
from core.topics import ORDERS_ALLOWED, all_topics
from kitesim.testing import control, running_simulator
from tests.conftest import free_port, query, run_module
from tests.integration.kite_harness import scrape, start_service, stop_process, wait_for

pytestmark = pytest.mark.integration

SYMBOLS = {408065: ("INFY", 5), 2953217: ("TCS", 3), 738561: ("RELIANCE", 4), 341249: ("HDFCBANK", 6)}
KITE_TO_OMS = {"COMPLETE": "FILLED", "CANCELLED": "CANCELLED", "REJECTED": "REJECTED", "OPEN": "OPEN"}
CONFIG = """
pacer: {per_second: 8, per_minute: 390, per_day: 5000}
market_protection: -1
request_timeout_s: 1.0
placer_threads: 4
ambiguous: {first_lookup_s: 0.3, window_s: 8.0}
poll_interval_s: 0.5
"""


def allowed(i: int, token: int, kind: str = "MARKET", qty: int | None = None, price: float | None = None,
            side: str | None = None) -> dict[str, Any]:
    sym, q = SYMBOLS[token]
    ts = int(time.time() * 1000)
    return {"order_id": f"zg{i:05d}", "strategy": "zg_1m", "instrument_token": token, "symbol": sym, "exchange": "NSE",
            "side": side or ("BUY" if i % 2 else "SELL"), "order_type": kind, "product": "MIS", "price": price,
            "trigger_price": None, "stop_loss": None, "qty": qty or q, "tf": "1m", "signal_ts": ts, "created_ts": ts,
            "risk": {"sizing_source": "test"}, "budget": {"decision": "allowed"}, "extra": {"intent": "entry"}}


class Stack:
    """Gateway (+ poller) processes on one broker, database and in-process kitesim."""

    def __init__(self, tmp: Path, bootstrap: str, dsn: str, sim: Any, mode: str = "live", config: str = "") -> None:
        self.tmp, self.bootstrap, self.dsn, self.sim = tmp, bootstrap, dsn, sim
        cfg = tmp / "execution.yaml"
        cfg.write_text(CONFIG + config)
        self.env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "PYTHONUNBUFFERED": "1", "KAFKA_PARTITIONS": "3",
                    "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "POSTGRES_DSN": dsn, "TRADING_MODE": mode,
                    "LIVE_TRADING_CONFIRM": "yes", "KITE_ROOT": sim.http_url, "KITE_WS_ROOT": sim.ws_url,
                    "KITE_API_KEY": "sim", "KITE_ACCESS_TOKEN": "sim-token", "EXECUTION_CONFIG": str(cfg),
                    "TRADESTACK_VAR_DIR": str(tmp / "var")}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}
        self.producer = bus.Producer(bootstrap)
        self.kite = KiteConnect("sim", access_token="sim-token", root=sim.http_url)

    def start(self, name: str) -> None:
        module = {"gateway": "execution.zerodha_gateway", "poller": "execution.zerodha_poller"}[name]
        self.procs[name], self.ports[name] = start_service(module, self.env, self.tmp / f"{name}.log",
                                                           f"zerodha_{name}")

    def kill9(self, name: str) -> None:
        p = self.procs.pop(name)
        p.send_signal(signal.SIGKILL)
        p.wait(10)

    def stop(self, name: str) -> int | None:
        return stop_process(self.procs.pop(name, None), 30)

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(name)

    def send(self, orders: list[dict[str, Any]]) -> None:
        for o in orders:
            self.producer.produce(ORDERS_ALLOWED, orjson.dumps(o), o["order_id"].encode())
        self.producer.flush()

    def placements(self) -> dict[str, tuple[str, str | None, str | None]]:
        return {oid: (st, boid, err) for oid, st, boid, err in query(
            self.dsn, "SELECT order_id, state, broker_order_id, last_error FROM broker_placements")}  # type: ignore[misc]

    def orders(self) -> dict[str, tuple[str, int, str | None]]:
        return {oid: (st, fq, d) for oid, st, fq, d in query(
            self.dsn, "SELECT order_id, status, filled_qty, status_detail FROM orders")}  # type: ignore[misc]

    def log(self, name: str) -> str:
        p = self.tmp / f"{name}.log"
        return p.read_text() if p.exists() else ""


@pytest.fixture()
def stack(tmp_path: Path, broker: str, fresh_pg_dsn: str):
    bus.ensure_topics(broker, all_topics(3))
    made: list[Stack] = []
    sims: list[Any] = []

    def make(mode: str = "live", config: str = "", **sim_config: Any) -> Stack:
        sim = running_simulator(**{"seed": 11, **sim_config})
        sims.append(sim)
        s = Stack(tmp_path, broker, fresh_pg_dsn, sim.__enter__(), mode, config)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()
    for sim in sims:
        sim.__exit__(None, None, None)


def test_1000_orders_through_lost_replies_token_expiry_and_kill9_are_placed_at_most_once(stack) -> None:
    s = stack()
    s.start("gateway")
    tokens = list(SYMBOLS)
    orders = [allowed(i, tokens[i % 4], "LIMIT" if i % 10 == 0 else "MARKET", price=1.0 if i % 10 == 0 else None,
                      side="BUY" if i % 10 == 0 else None) for i in range(1000)]  # a BUY at 1.00: the broker's RMS
    orders[7]["order_type"], orders[7]["price"] = "LIMIT", 1.03  # off the 0.05 grid: the broker rejects it
    control(s.sim.http_url, "/_sim/faults", {"http_5xx_rate": 0.02, "http_5xx_paths": ["/orders/regular"],
                                             "http_5xx_after_processing": True, "order_reply": "timeout",
                                             "order_reply_rate": 0.02, "order_reply_delay_ms": 1500})
    s.send(orders)
    placed = lambda: sum(1 for st, *_ in s.placements().values() if st in ("placed", "rejected"))  # noqa: E731
    wait_for(lambda: placed() >= 250, 90, 0.2, "250 orders through")
    control(s.sim.http_url, "/_sim/faults", {"order_reply": "http_400_timeout", "order_reply_rate": 0.03,
                                             "order_stuck_s": 1.0})  # orders sit in PUT ORDER REQ RECEIVED a while
    s.kill9("gateway")  # mid-burst, calls in flight
    s.start("gateway")
    wait_for(lambda: placed() >= 500, 90, 0.2, "500 orders through")
    control(s.sim.http_url, "/_sim/session", {"expire_all": True})  # the token dies mid-run
    wait_for(lambda: 'HALT Kite rejected the access token' in s.log("gateway"), 30, 0.2, "token halt")
    stuck = placed()
    time.sleep(1.5)
    assert placed() <= stuck + 4  # halted: at most the calls that were in flight
    token = KiteConnect("sim", root=s.sim.http_url).generate_session("rt-1", api_secret="sim-secret")["access_token"]
    out = subprocess.run([sys.executable, "-m", "execution.kite_session", "set-token", token], env=s.env,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    control(s.sim.http_url, "/_sim/faults", method="DELETE")
    wait_for(lambda: placed() == 1000, 180, 0.5, "every order placed or rejected")
    s.kite.set_access_token(token)
    book = s.kite.orders()
    tags = Counter(o["tag"] for o in book if o["tag"])
    assert max(tags.values()) == 1, [t for t, n in tags.items() if n > 1]  # no order placed twice
    assert set(tags) == {o["order_id"] for o in orders if s.placements()[o["order_id"]][0] == "placed"}
    pl = s.placements()
    rejected = {oid for oid, (st, *_r) in pl.items() if st == "rejected"}
    assert rejected == {"zg00007"} and "tick size" in (pl["zg00007"][2] or "").lower()
    assert s.orders()["zg00007"][0] == "REJECTED"
    stats = control(s.sim.http_url, "/_sim/stats")
    assert stats["rate_limited"].get("orders", 0) == 0  # the pacer held Kite's limit under the burst
    # the poller reconciles: our states and filled quantities equal the broker's
    s.start("poller")
    by_tag = {o["tag"]: o for o in book if o["tag"]}

    def matches() -> bool:
        mine = s.orders()
        fresh_book = {o["tag"]: o for o in s.kite.orders() if o["tag"]}
        return all(mine[t][0] == KITE_TO_OMS.get(o["status"], mine[t][0]) and mine[t][1] == o["filled_quantity"]
                   for t, o in fresh_book.items())
    wait_for(matches, 60, 0.5, "our states and fills equal the broker's")
    assert len(by_tag) == 999
    assert Counter(st for st, *_ in s.orders().values()) == Counter(
        KITE_TO_OMS[o["status"]] for o in s.kite.orders() if o["tag"]) + Counter({"REJECTED": 1})
    assert "adopted order_id=" in s.log("gateway")  # lost replies were found by tag, not placed again


def test_dry_mode_sends_nothing_and_live_without_confirmation_exits_2(stack) -> None:
    s = stack("dry")
    s.start("gateway")
    s.send([allowed(i, 408065) for i in range(5)])
    wait_for(lambda: sum(1 for st, *_ in s.orders().values() if st == "CANCELLED") == 5, 30, 0.2, "dry orders")
    assert s.kite.orders() == []  # kitesim's order book stays empty
    rows = query(s.dsn, "SELECT venue, status, tag FROM live_orders ORDER BY tag")
    assert len(rows) == 5 and all(v == "dry" and st == "DRY" for v, st, _t in rows)
    assert {d for _s, _q, d in s.orders().values()} == {"dry mode: not sent to the broker"}
    env = {**s.env, "TRADING_MODE": "live", "LIVE_TRADING_CONFIRM": ""}
    out = subprocess.run([sys.executable, "-m", "execution.zerodha_gateway"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2 and "LIVE_TRADING_CONFIRM=yes" in out.stderr
    assert len([ln for ln in out.stderr.splitlines() if ln.startswith("error:")]) == 1


def test_poller_repairs_a_missed_fill_and_status_and_flags_a_hand_placed_order(stack) -> None:
    s = stack()
    s.start("gateway")
    s.send([allowed(1, 408065), allowed(2, 2953217, "LIMIT", price=2900.0, side="BUY")])  # rests: 8% under
    wait_for(lambda: all(st == "placed" for st, *_ in s.placements().values()) and len(s.placements()) == 2, 30,
             0.2, "both placed")
    s.stop("gateway")  # from here only the broker knows: the market order filled, the LIMIT gets cancelled by hand
    boid = s.placements()["zg00002"][1]
    s.kite.cancel_order("regular", boid)
    hand = s.kite.place_order(variety="regular", exchange="NSE", tradingsymbol="INFY", transaction_type="BUY",
                              quantity=1, product="MIS", order_type="MARKET", market_protection=-1)
    assert s.orders()["zg00001"][:2] == ("SUBMITTED", 0) and s.orders()["zg00002"][0] == "SUBMITTED"
    s.start("poller")
    wait_for(lambda: s.orders()["zg00001"][:2] == ("FILLED", 5) and s.orders()["zg00002"][0] == "CANCELLED", 30,
             0.2, "repaired")
    fills = query(s.dsn, "SELECT fill_id, qty, venue FROM fills WHERE order_id = 'zg00001'")
    assert sum(q for _f, q, _v in fills) == 5 and all(f.startswith("kite-") and v == "live" for f, _q, v in fills)
    wait_for(lambda: query(s.dsn, "SELECT kind FROM broker_alerts WHERE ref = %s", hand) ==
             [("unknown_broker_order",)], 20, 0.2, "hand-placed order flagged")
    assert f"ALERT unknown_broker_order ref={hand}" in s.log("poller")
    assert scrape(s.ports["poller"])['tradestack_zerodha_poller_alerts{kind="unknown_broker_order"}'] == 1


def _replay(path: Path, t0_ms: int) -> Path:
    """INFY flat at 1500 for the whole minute; TCS flat at 3100 for 25 s, then down to 3080 (its stop is 3090)."""
    rows = ["instrument_token,exchange_ts,ltp,volume,last_qty,bid,ask,bid_qty,ask_qty"]
    for i in range(240):
        ts = t0_ms + i * 250
        rows.append(f"408065,{ts},1500.00,{1000 + i},1,1499.95,1500.05,500,500")
        tcs = 3100.00 if i < 100 else 3080.00
        rows.append(f"2953217,{ts},{tcs:.2f},{1000 + i},1,{tcs - 0.05:.2f},{tcs + 0.05:.2f},500,500")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_protective_stop_follows_the_entry_is_cancelled_by_the_exit_and_closes_the_position(stack, tmp_path) -> None:
    replay = _replay(tmp_path / "replay.csv", int(time.time() * 1000))
    s = stack(config="protective_stops: {strategies: [zg_*]}\n", replay=replay, seed=3)
    s.start("gateway")
    s.start("poller")
    infy = {**allowed(1, 408065, side="BUY", qty=10), "stop_loss": 1495.0}
    tcs = {**allowed(2, 2953217, side="BUY", qty=10), "stop_loss": 3090.0}
    s.send([infy, tcs])

    def stops() -> dict[int, tuple[str, str, str]]:
        return {int(tok): (sid, st, ost) for sid, tok, st, ost in query(
            s.dsn, "SELECT p.stop_order_id, p.instrument_token, p.state, o.status FROM protective_stops p "
                   "JOIN orders o ON o.order_id = p.stop_order_id")}  # type: ignore[misc]
    wait_for(lambda: {k: v[2] for k, v in stops().items()} == {408065: "OPEN", 2953217: "OPEN"}, 40, 0.2,
             "both stops working at the broker")
    book = {o["tag"]: o for o in s.kite.orders()}
    infy_stop = book[stops()[408065][0]]
    assert (infy_stop["order_type"], infy_stop["transaction_type"], infy_stop["trigger_price"],
            infy_stop["quantity"], infy_stop["status"]) == ("SL-M", "SELL", 1495.0, 10, "TRIGGER PENDING")
    # the strategy exits INFY: the stop is cancelled first, then the exit goes
    s.send([{**allowed(3, 408065, side="SELL", qty=10), "extra": {"intent": "exit"}}])
    wait_for(lambda: s.orders().get("zg00003", ("",))[0] == "FILLED", 40, 0.2, "the exit filled")
    assert stops()[408065][1:] == ("cancelled", "CANCELLED")
    by_tag = {o["tag"]: o for o in s.kite.orders()}
    hist = s.kite.order_history(by_tag[stops()[408065][0]]["order_id"])
    cancelled_at = next(h["order_timestamp"] for h in hist if h["status"] == "CANCELLED")
    assert cancelled_at <= by_tag["zg00003"]["order_timestamp"]  # cancelled before the exit was placed
    # TCS falls through its stop: the broker's stop sells, and the position is closed in our tables
    wait_for(lambda: stops()[2953217][1:] == ("done", "FILLED"), 60, 0.3, "the TCS stop triggered and filled")
    pos = dict(query(s.dsn, "SELECT instrument_token, net_qty FROM positions WHERE strategy = 'zg_1m'"))
    assert pos == {408065: 0, 2953217: 0}
    assert 'tradestack_zerodha_poller_protective_stops_total{action="placed"}' in scrape(s.ports["poller"])


def test_flatten_against_kitesim_leaves_no_open_order_and_no_position(stack) -> None:
    s = stack()
    s.start("gateway")
    s.start("poller")
    for name, module in (("manager", "risk.manager_v2"), ("guard", "risk.order_budget_guard")):
        s.ports[name] = port = free_port()
        s.procs[name] = run_module(module, {**s.env, "METRICS_PORT": str(port)}, log_path=s.tmp / f"{name}.log")
    s.send([allowed(1, 408065, side="BUY", qty=12), allowed(2, 2953217, side="SELL", qty=4),
            allowed(3, 341249, "LIMIT", price=900.0, side="BUY", qty=6)])  # rests ~9% under HDFCBANK
    wait_for(lambda: [s.orders().get(f"zg0000{i}", ("",))[0] for i in (1, 2, 3)] == ["FILLED", "FILLED", "OPEN"], 40,
             0.2, "two positions and an open order")
    for name in ("manager", "guard"):
        wait_for(lambda name=name: scrape(s.ports[name]).get(
            f"tradestack_{'risk_manager' if name == 'manager' else 'order_budget_guard'}_up") == 1.0, 60, 0.2, name)
    out = subprocess.run([sys.executable, "-m", "execution.flatten", "--yes", "--wait-s", "20"], env=s.env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "kill switch ON" in out.stdout and "cancels requested from the venue: 1" in out.stdout
    assert "exit SELL 12 NSE:INFY for zg_1m (position +12)" in out.stdout
    assert "exit BUY 4 NSE:TCS for zg_1m (position -4)" in out.stdout

    def flat() -> bool:
        working = query(s.dsn, "SELECT count(*) FROM orders WHERE status IN ('ALLOWED', 'SUBMITTED', 'OPEN', "
                               "'PARTIALLY_FILLED', 'CANCEL_REQUESTED', 'NEW', 'SIZED')")[0][0]
        open_pos = query(s.dsn, "SELECT count(*) FROM positions WHERE net_qty <> 0")[0][0]
        return working == 0 and open_pos == 0
    wait_for(flat, 60, 0.3, "no open order and no open position")
    assert s.orders()["zg00003"][0] == "CANCELLED"
    broker = {o["tag"]: o["status"] for o in s.kite.orders()}
    assert broker["zg00003"] == "CANCELLED" and sum(st == "COMPLETE" for st in broker.values()) == 4
    assert query(s.dsn, "SELECT active FROM risk_kill_switch") == [(True,)]


def test_unregistered_ip_halts_with_the_fix_then_resumes_and_login_stores_a_token(stack) -> None:
    s = stack(config="ip_retry_s: 1.0\n")
    control(s.sim.http_url, "/_sim/faults", {"ip_not_registered": True})
    s.start("gateway")
    s.send([allowed(1, 408065), allowed(2, 2953217)])
    wait_for(lambda: "IP Whitelist" in s.log("gateway"), 30, 0.2, "the IP halt")
    halt = [ln for ln in s.log("gateway").splitlines() if "HALT" in ln]
    assert len(halt) == 1 and "register its static IP in the Kite Connect developer console" in halt[0]
    assert scrape(s.ports["gateway"])['tradestack_zerodha_gateway_halted{reason="ip_not_registered"}'] == 1
    assert s.kite.orders() == [] and {st for st, *_ in s.placements().values()} == {"queued"}
    control(s.sim.http_url, "/_sim/faults", method="DELETE")  # the IP got registered
    wait_for(lambda: {st for st, *_ in s.placements().values()} == {"placed"}, 30, 0.2, "resumed")
    assert scrape(s.ports["gateway"])['tradestack_zerodha_gateway_halted{reason="ip_not_registered"}'] == 0
    assert "order requests are accepted again" in s.log("gateway")
    # the daily login: a request token exchanged for an access token, stored owner-only, never printed
    out = subprocess.run([sys.executable, "-m", "execution.kite_session", "login", "--request-token", "rt-9"],
                         env={**s.env, "KITE_API_SECRET": "sim-secret"}, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "stored the access token" in out.stdout, out.stdout + out.stderr
    stored = s.tmp / "var" / "secrets" / "kite_session.json"
    token = orjson.loads(stored.read_bytes())["access_token"]
    assert token not in out.stdout and oct(stored.stat().st_mode & 0o777) == "0o600"
    assert KiteConnect("sim", access_token=token, root=s.sim.http_url).margins("equity")["net"] > 0
    st = subprocess.run([sys.executable, "-m", "execution.kite_session", "status"], env=s.env, capture_output=True,
                        text=True, timeout=60)
    assert "by login" in st.stdout and token not in st.stdout
    bad = subprocess.run([sys.executable, "-m", "execution.kite_session", "login", "--request-token", "rt-9"],
                         env={**s.env, "KITE_API_SECRET": ""}, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "KITE_API_SECRET is not set" in bad.stderr


def test_stale_placements_expire_strays_are_cancelled_refused_cancels_retried_and_exits_capped(stack) -> None:
    s = stack()
    from execution.oms import OmsTx, Status

    with __import__("psycopg").connect(s.dsn) as conn:  # a placement left queued yesterday (a halt never lifted)
        tx = OmsTx(conn, "test", int(time.time() * 1000))
        tx.ensure([allowed(90, 408065)], Status.ALLOWED)
        tx.transition("zg00090", Status.SUBMITTED, "queued")
        tx.finish()
        conn.execute("INSERT INTO broker_placements (order_id, tag, venue, state, created_at) VALUES "
                     "('zg00090', 'zg00090', 'live', 'queued', now() - interval '1 day')")
    s.start("gateway")
    assert s.orders()["zg00090"][0] == "EXPIRED" and s.placements()["zg00090"][0] == "cancelled"
    s.start("poller")
    control(s.sim.http_url, "/_sim/faults", {"order_stuck_s": 2.0})  # cancels are refused while it is stuck
    s.send([allowed(1, 341249, "LIMIT", price=900.0, side="BUY", qty=3)])
    wait_for(lambda: s.placements().get("zg00001", ("",))[0] == "placed", 20, 0.1, "placed")
    with __import__("psycopg").connect(s.dsn) as conn:
        tx = OmsTx(conn, "operator", int(time.time() * 1000))
        tx.load(["zg00001"])
        tx.transition("zg00001", Status.CANCEL_REQUESTED, "operator")
        tx.finish()
    wait_for(lambda: s.orders()["zg00001"][0] == "CANCELLED", 30, 0.2, "cancelled after the refusals")
    assert "cancel not taken order_id=zg00001" in s.log("gateway")
    control(s.sim.http_url, "/_sim/faults", method="DELETE")
    # a second broker order under one of our tags (as if a lost reply's order appeared after the window)
    s.send([allowed(2, 341249, "LIMIT", price=900.0, side="BUY", qty=2)])
    wait_for(lambda: s.placements().get("zg00002", ("",))[0] == "placed", 20, 0.1, "placed")
    dup = s.kite.place_order(variety="regular", exchange="NSE", tradingsymbol="HDFCBANK", transaction_type="BUY",
                             quantity=2, product="MIS", order_type="LIMIT", price=900.0, tag="zg00002")
    wait_for(lambda: {o["order_id"]: o["status"] for o in s.kite.orders()}[dup] == "CANCELLED", 30, 1.0,
             "the stray order cancelled")  # (1 s: the test shares Kite's 10 requests/s with the poller)
    first = s.placements()["zg00002"][1]
    assert {o["order_id"]: o["status"] for o in s.kite.orders()}[first] == "OPEN"  # ours untouched
    assert query(s.dsn, "SELECT kind FROM broker_alerts WHERE ref = 'zg00002'") == [("duplicate_tag",)]
    # exits are capped at what is held when they are sent
    s.send([allowed(3, 408065, side="BUY", qty=5)])
    wait_for(lambda: s.orders().get("zg00003", ("",))[0] == "FILLED", 30, 0.2, "entry filled")
    wait_for(lambda: query(s.dsn, "SELECT net_qty FROM positions WHERE instrument_token = 408065") == [(5,)], 20,
             0.2, "position recorded")
    s.send([{**allowed(4, 408065, side="SELL", qty=9), "extra": {"intent": "exit"}},
            {**allowed(5, 2953217, side="SELL", qty=2), "extra": {"intent": "exit"}}])
    wait_for(lambda: s.orders().get("zg00004", ("",))[0] == "FILLED" and s.orders().get("zg00005", ("",))[0] ==
             "REJECTED", 30, 0.2, "capped and refused exits")
    sent = {o["tag"]: o["quantity"] for o in s.kite.orders()}
    assert sent["zg00004"] == 5 and "zg00005" not in sent
    assert "holds nothing" in (s.orders()["zg00005"][2] or "")
