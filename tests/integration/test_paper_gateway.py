"""The paper gateway as a real process on the embedded broker and Postgres, fed hand-made ticks.

- a MARKET order fills at the VWAP of the depth it walks; fills reach the ``fills`` topic and table,
  the OMS moves the order SUBMITTED -> FILLED on ``order.updates``, and ``position_pnl`` holds the
  position at average cost with its PnL;
- a resting buy at the best bid fills only after the queue ahead has traded; a restart (SIGTERM) in
  between keeps the order and its queue position;
- kill -9 in the middle of a stream of orders and ticks: after the restart no fill is recorded or
  sent twice with different contents, the topic carries exactly the table's fills, and every order's
  filled quantity is the sum of its fills;
- orders at ALLOWED in the table that no message brings (an empty broker) are re-driven; a cancel
  request is honoured; poison on both topics goes to ``dlq``.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections import defaultdict
from datetime import date, datetime, time as dtime
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from core import bus
from core.clock import IST
from core.topics import DLQ, FILLS, ORDER_UPDATES, ORDERS_ALLOWED, TICKS, all_topics
from tests.conftest import free_port, query, run_module
from tests.integration.kite_harness import read_topic, scrape, stop_process, wait_for
from tests.integration.test_stream_delivery import _drain

pytestmark = pytest.mark.integration

DAY = date(2026, 11, 20)
INFY, TCS = 408065, 2953217


def ts_at(hh: int, mm: int, ss: float = 0) -> int:
    return int(datetime.combine(DAY, dtime(hh, mm), IST).timestamp() * 1000 + ss * 1000)


def tick(token: int, ts: int, ltp: float, volume: int, bids: list[tuple[float, int]],
         asks: list[tuple[float, int]]) -> dict[str, Any]:
    return {"instrument_token": token, "exchange_ts": ts, "recv_ts": ts + 3, "ltp": ltp, "volume": volume,
            "last_qty": 1, "oi": None, "bid": bids[0][0] if bids else None, "ask": asks[0][0] if asks else None,
            "bid_qty": bids[0][1] if bids else None, "ask_qty": asks[0][1] if asks else None,
            "depth": {"buy": [{"price": p, "qty": q, "orders": 1} for p, q in bids],
                      "sell": [{"price": p, "qty": q, "orders": 1} for p, q in asks]}}


def allowed(oid: str, token: int = INFY, side: str = "BUY", qty: int = 10, otype: str = "MARKET",
            price: float | None = None, ts: int | None = None, strategy: str = "s_1m") -> dict[str, Any]:
    ts = ts or ts_at(10, 0)
    return {"order_id": oid, "strategy": strategy, "instrument_token": token, "symbol": "INFY", "exchange": "NSE",
            "side": side, "order_type": otype, "product": "MIS", "price": price, "trigger_price": None,
            "stop_loss": None, "qty": qty, "tf": "1m", "signal_ts": ts, "created_ts": ts,
            "risk": {"sizing_source": "test"}, "budget": {"decision": "allowed"}, "extra": {"intent": "entry"}}


BIDS = [(1500.00, 300), (1499.95, 200), (1499.90, 500)]
ASKS = [(1500.05, 100), (1500.10, 200), (1500.20, 400)]


class Gateway:
    """The gateway process with its broker and database."""

    def __init__(self, tmp: Path, bootstrap: str, dsn: str, latency_ms: int = 50) -> None:
        import os

        from core.settings import PROJECT_ROOT

        self.tmp, self.bootstrap, self.dsn = tmp, bootstrap, dsn
        self.env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "KAFKA_PARTITIONS": "3", "PYTHONUNBUFFERED": "1",
                    "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "POSTGRES_DSN": dsn, "PAPER_LATENCY_MS": str(latency_ms)}
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.producer = bus.Producer(bootstrap)

    def start(self) -> None:
        self.port = free_port()
        self.proc = run_module("execution.paper_gateway_matcher", {**self.env, "METRICS_PORT": str(self.port)},
                               log_path=self.tmp / "gateway.log")
        wait_for(lambda: scrape(self.port).get("tradestack_paper_gateway_up") == 1.0, 60, 0.2, "gateway up")

    def stop(self) -> int | None:
        code = stop_process(self.proc, 30)
        self.proc = None
        return code

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def send(self, *, orders: list[dict[str, Any]] = (), ticks: list[dict[str, Any]] = ()) -> None:  # type: ignore[assignment]
        for o in orders:
            self.producer.produce(ORDERS_ALLOWED, orjson.dumps(o), o["order_id"].encode())
        for t in ticks:
            self.producer.produce(TICKS, orjson.dumps(t), str(t["instrument_token"]).encode())
        self.producer.flush()

    def orders(self) -> dict[str, tuple[str, int, float | None]]:
        return {oid: (st, fq, avg) for oid, st, fq, avg in query(
            self.dsn, "SELECT order_id, status, filled_qty, avg_price FROM orders")}  # type: ignore[misc]

    def fills(self, oid: str | None = None) -> list[tuple[str, int, float]]:
        rows = query(self.dsn, "SELECT order_id, qty, price FROM fills ORDER BY order_id, fill_id")
        return [r for r in rows if oid is None or r[0] == oid]  # type: ignore[misc]

    def wait_status(self, oid: str, *status: str, timeout: float = 30.0) -> None:
        wait_for(lambda: self.orders().get(oid, ("",))[0] in status, timeout, 0.1, f"{oid} in {status}")

    def log(self) -> str:
        p = self.tmp / "gateway.log"
        return p.read_text() if p.exists() else ""


@pytest.fixture()
def gateway(tmp_path: Path, broker: str, fresh_pg_dsn: str):
    bus.ensure_topics(broker, all_topics(3))
    g = Gateway(tmp_path, broker, fresh_pg_dsn)
    yield g
    g.stop()


def test_market_order_fills_at_the_depth_walk_vwap_and_becomes_a_position(gateway: Gateway) -> None:
    g = gateway
    g.start()
    g.send(ticks=[tick(INFY, ts_at(9, 59, 59), 1500.0, 10_000, BIDS, ASKS)])
    g.send(orders=[allowed("m1", qty=250)])
    g.wait_status("m1", "SUBMITTED")  # it waits for the market's next tick (event time)
    g.send(ticks=[tick(INFY, ts_at(10, 0, 1), 1500.0, 10_000, BIDS, ASKS)])
    g.wait_status("m1", "FILLED")
    assert g.fills("m1") == [("m1", 100, 1500.05), ("m1", 150, 1500.10)]
    st, filled, avg = g.orders()["m1"]
    assert filled == 250 and avg == pytest.approx((100 * 1500.05 + 150 * 1500.10) / 250)
    # exit half at the bid side
    g.send(orders=[allowed("x1", side="SELL", qty=125, ts=ts_at(10, 1))])
    g.wait_status("x1", "SUBMITTED")
    g.send(ticks=[tick(INFY, ts_at(10, 1, 1), 1500.0, 10_100, BIDS, ASKS)])
    g.wait_status("x1", "FILLED")
    assert g.fills("x1") == [("x1", 125, 1500.0)]
    pnl = query(g.dsn, "SELECT net_qty, avg_price, realized_pnl FROM position_pnl WHERE strategy = 's_1m'")
    assert pnl[0][0] == 125 and pnl[0][1] == pytest.approx(avg)
    assert pnl[0][2] == pytest.approx(125 * (1500.0 - avg))
    topic = read_topic(g.bootstrap, FILLS, idle=1.0)
    assert sorted((f["fill_id"], f["qty"], f["price"], f["venue"]) for f in topic) == [
        ("m1-1", 100, 1500.05, "paper"), ("m1-2", 150, 1500.10, "paper"), ("x1-1", 125, 1500.0, "paper")]
    ups = [(u["from_status"], u["to_status"]) for u in read_topic(g.bootstrap, ORDER_UPDATES, idle=1.0)
           if u["order_id"] == "m1"]
    assert ups == [(None, "ALLOWED"), ("ALLOWED", "SUBMITTED"), ("SUBMITTED", "PARTIALLY_FILLED"),
                   ("PARTIALLY_FILLED", "FILLED")]
    assert query(g.dsn, "SELECT venue, broker_order_id IS NOT NULL FROM orders WHERE order_id = 'm1'") == [
        ("paper", True)]


def test_resting_buy_fills_only_after_the_queue_ahead_and_survives_a_restart(gateway: Gateway) -> None:
    g = gateway
    g.start()
    g.send(ticks=[tick(INFY, ts_at(10, 0), 1500.0, 10_000, BIDS, ASKS)])
    g.send(orders=[allowed("l1", otype="LIMIT", price=1500.00, qty=50, ts=ts_at(10, 0, 1))])
    g.wait_status("l1", "SUBMITTED")
    g.send(ticks=[tick(INFY, ts_at(10, 0, 2), 1500.0, 10_000, BIDS, ASKS)])
    g.wait_status("l1", "OPEN")
    assert query(g.dsn, "SELECT queue_ahead, state FROM paper_orders WHERE order_id = 'l1'") == [(300, "resting")]
    g.send(ticks=[tick(INFY, ts_at(10, 0, 3), 1500.0, 10_200, [(1500.00, 150)] + BIDS[1:], ASKS)])
    wait_for(lambda: query(g.dsn, "SELECT queue_ahead FROM paper_orders WHERE order_id = 'l1'") == [(100,)], 20, 0.1,
             "queue ahead 100")
    assert g.fills("l1") == []
    assert g.stop() == 0  # a restart mid-day
    g.start()
    assert "venue restored working_orders=1" in g.log()
    g.send(ticks=[tick(INFY, ts_at(10, 0, 3), 1500.0, 10_200, [(1500.00, 150)] + BIDS[1:], ASKS),  # a replay
                  tick(INFY, ts_at(10, 0, 4), 1500.0, 10_330, [(1500.00, 60)] + BIDS[1:], ASKS)])
    g.wait_status("l1", "PARTIALLY_FILLED")
    assert g.fills("l1") == [("l1", 30, 1500.0)]  # 130 traded: 100 cleared the queue, 30 reached us
    g.send(ticks=[tick(INFY, ts_at(10, 0, 5), 1500.0, 10_400, [(1500.00, 60)] + BIDS[1:], ASKS)])
    g.wait_status("l1", "FILLED")
    assert g.fills("l1") == [("l1", 30, 1500.0), ("l1", 20, 1500.0)]
    assert scrape(g.port)["tradestack_paper_gateway_ticks_replayed_total"] >= 1


def test_kill_9_mid_stream_sends_no_fill_twice(gateway: Gateway) -> None:
    g = gateway
    g.start()
    base = ts_at(11, 0)
    ticks, orders = [], []
    for i in range(400):  # a market that keeps trading, orders of every kind arriving meanwhile
        px = 1500.0 + 0.05 * ((i // 7) % 9 - 4)
        bids = [(round(px - 0.05 * k, 2), 100 + 10 * k) for k in range(5)]
        asks = [(round(px + 0.05 * (k + 1), 2), 100 + 10 * k) for k in range(5)]
        ticks.append(tick(INFY, base + i * 250, px, 100_000 + 40 * i, bids, asks))
        if i % 4 == 0:
            kind = ("MARKET", "LIMIT")[(i // 4) % 2]
            side = ("BUY", "SELL")[(i // 8) % 2]
            price = round(px - 0.05 if side == "BUY" else px + 0.05, 2) if kind == "LIMIT" else None
            orders.append(allowed(f"k{i}", side=side, qty=30 + i % 50, otype=kind, price=price, ts=base + i * 250))
    def chunk(i: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return [o for o in orders if base + i * 250 <= o["signal_ts"] < base + (i + 40) * 250], ticks[i:i + 40]

    for i in range(0, 400, 40):
        chunk_orders, chunk_ticks = chunk(i)
        g.send(orders=chunk_orders)
        if i == 200:  # killed while it takes these orders and ticks in
            g.send(ticks=chunk_ticks)
            time.sleep(0.05)
            g.kill9()
            g.start()
            continue
        for o in chunk_orders:  # then the market moves on past their arrival
            g.wait_status(o["order_id"], "SUBMITTED", "OPEN", "PARTIALLY_FILLED", "FILLED", "CANCELLED")
        g.send(ticks=chunk_ticks)
        if i == 160:
            wait_for(lambda: len(g.fills()) > 5, 30, 0.05, "fills before the kill")
    ids = [o["order_id"] for o in orders]
    wait_for(lambda: all(g.orders().get(i, ("",))[0] in ("FILLED", "OPEN", "PARTIALLY_FILLED", "CANCELLED")
                         for i in ids), 60, 0.2, "every order at the venue")
    time.sleep(1.5)  # the last outbox flush
    table = query(g.dsn, "SELECT fill_id, order_id, qty, price FROM fills")
    topic = read_topic(g.bootstrap, FILLS, idle=1.5)
    contents: dict[str, set[tuple[Any, ...]]] = defaultdict(set)
    for f in topic:
        contents[f["fill_id"]].add((f["order_id"], f["qty"], f["price"]))
    assert all(len(v) == 1 for v in contents.values()), "a fill id was sent with two different contents"
    assert {fid: next(iter(v)) for fid, v in contents.items()} == {r[0]: (r[1], r[2], r[3]) for r in table}
    per_order: dict[str, int] = defaultdict(int)
    for _fid, oid, qty, _px in table:
        per_order[oid] += qty
    st = g.orders()
    assert all(st[oid][1] == per_order.get(oid, 0) for oid in ids)
    assert sum(per_order.values()) > 0 and query(g.dsn, "SELECT count(*) FROM outbox") == [(0,)]
    live = dict(query(g.dsn, "SELECT order_id, filled FROM paper_orders"))
    assert all(live[oid] == st[oid][1] for oid in ids)
    restored = [line for line in g.log().splitlines() if "venue restored" in line]
    assert len(restored) == 2 and "working_orders=0 " not in restored[1]  # the kill left orders working


def test_redrive_outbox_cancel_expiry_and_poison(gateway: Gateway) -> None:
    g = gateway
    from execution.oms import OmsTx, Status

    with psycopg.connect(g.dsn) as conn:  # allowed while the broker was away: only the table has it
        tx = OmsTx(conn, "test", ts_at(10, 0))
        tx.ensure([allowed("r1", qty=5, ts=ts_at(10, 0))], Status.ALLOWED)
        tx.finish()
        # a crash between a commit and its produce left a fill in the outbox: the next start sends it
        conn.execute("INSERT INTO outbox (source, topic, key, value) VALUES ('paper_gateway', 'fills', 'old', %s)",
                     (orjson.dumps({"fill_id": "old-1", "order_id": "old"}),))
    g.start()
    wait_for(lambda: query(g.dsn, "SELECT count(*) FROM outbox") == [(0,)], 20, 0.1, "outbox sent")
    assert [f["fill_id"] for f in read_topic(g.bootstrap, FILLS, idle=0.5)] == ["old-1"]
    g.wait_status("r1", "SUBMITTED")
    g.send(ticks=[tick(INFY, ts_at(10, 0, 1), 1500.0, 10_000, BIDS, ASKS)])
    g.wait_status("r1", "FILLED")
    g.send(orders=[allowed("c1", otype="LIMIT", price=1490.00, qty=5, ts=ts_at(10, 0, 2))])
    g.wait_status("c1", "SUBMITTED")
    g.send(ticks=[tick(INFY, ts_at(10, 0, 3), 1500.0, 10_000, BIDS, ASKS)])
    g.wait_status("c1", "OPEN")
    with psycopg.connect(g.dsn) as conn:
        tx = OmsTx(conn, "operator", ts_at(10, 1))
        tx.load(["c1"])
        tx.transition("c1", Status.CANCEL_REQUESTED, "flatten")
        tx.finish()
    g.wait_status("c1", "CANCELLED")
    assert query(g.dsn, "SELECT state FROM paper_orders WHERE order_id = 'c1'") == [("done",)]
    g.producer.produce(TICKS, b"{not json", b"1")
    g.producer.produce(TICKS, orjson.dumps({**tick(INFY, ts_at(10, 2), 1500.0, 1, BIDS, ASKS), "ltp": "x"}), b"2")
    g.producer.produce(ORDERS_ALLOWED, orjson.dumps({**allowed("bad"), "qty": 0}), b"bad")
    far = int(time.time() * 1000) + 3_600_000  # an hour ahead of the wall clock: implausible
    g.producer.produce(TICKS, orjson.dumps(tick(INFY, far, 1500.0, 10_000, BIDS, ASKS)), b"3")
    g.producer.flush()
    dlq = _drain(g.bootstrap, DLQ, 4, timeout=20)
    assert sorted(m.key() for m in dlq) == [b"1", b"2", b"3", b"bad"]
    g.send(orders=[allowed("after", qty=5, ts=ts_at(10, 2))])
    g.wait_status("after", "SUBMITTED")
    g.send(ticks=[tick(INFY, ts_at(10, 2, 1), 1500.0, 10_000, BIDS, ASKS)])
    g.wait_status("after", "FILLED")  # it went on
    # a DAY order expires at the close, on the first tick after it of any instrument
    g.send(orders=[allowed("day", token=TCS, otype="LIMIT", price=3000.00, qty=5, ts=ts_at(15, 0))])
    g.wait_status("day", "SUBMITTED")
    g.send(ticks=[tick(TCS, ts_at(15, 0, 1), 3100.0, 500, [(3099.95, 10)], [(3100.05, 10)])])
    g.wait_status("day", "OPEN")
    g.send(ticks=[tick(INFY, ts_at(15, 30, 1), 1500.0, 10_000, BIDS, ASKS)])
    g.wait_status("day", "EXPIRED")
    assert query(g.dsn, "SELECT status_detail FROM orders WHERE order_id = 'day'") == [
        ("DAY order expired at the session close",)]
