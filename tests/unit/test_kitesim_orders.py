"""Simulated order management against a hand-driven market: lifecycle, matching, postbacks, RMS."""

from __future__ import annotations

from typing import Any

import pytest

from core.universe import by_key, load_universe
from kitesim.errors import InputError
from kitesim.orders import MARKET_PROTECTION_REQUIRED, MAX_MODIFICATIONS, OrderEngine
from kitesim.packets import DepthLevel, Snapshot
from kitesim.server import DEFAULT_TOKENS

UNIVERSE = by_key(load_universe(DEFAULT_TOKENS))
RELIANCE = 738561
T0 = 1_764_822_600.0  # 2025-12-04 10:00 IST


class FakeMarket:
    """Snapshots set by the test; RELIANCE starts at 1000.00 with 10 @ each level, 5 paise apart."""

    def __init__(self) -> None:
        self.snaps: dict[int, Snapshot] = {}
        self.seq = 0
        self.set(RELIANCE, ltp=100_000)

    def set(self, token: int, ltp: int, qty: int = 10, last_qty: int = 0, close: int = 100_000) -> Snapshot:
        self.seq += 1
        buy = tuple(DepthLevel(qty, ltp - 5 * i, 1) for i in range(5))
        sell = tuple(DepthLevel(qty, ltp + 5 + 5 * i, 1) for i in range(5))
        snap = Snapshot(instrument_token=token, last_price=ltp, seq=self.seq, ts=T0 + self.seq, close=close,
                        last_qty=last_qty, open=close, high=max(ltp, close), low=min(ltp, close), buy=buy, sell=sell)
        self.snaps[token] = snap
        return snap

    def latest(self, token: int) -> Snapshot | None:
        return self.snaps.get(token)


@pytest.fixture()
def market() -> FakeMarket:
    return FakeMarket()


@pytest.fixture()
def postbacks() -> list[dict[str, Any]]:
    return []


@pytest.fixture()
def engine(market: FakeMarket, postbacks: list[dict[str, Any]]) -> OrderEngine:
    e = OrderEngine(UNIVERSE, market.latest, lambda: T0, seed=1, cash=1_000_000.0)
    e.listeners.append(postbacks.append)
    return e


def order(**kw: Any) -> dict[str, str]:
    form = {"exchange": "NSE", "tradingsymbol": "RELIANCE", "transaction_type": "BUY", "quantity": "10",
            "product": "MIS", "order_type": "MARKET", "market_protection": "-1"}
    for k, v in kw.items():
        if v is None:
            form.pop(k, None)  # None removes a default field
        else:
            form[k] = str(v)
    return form


def last(engine: OrderEngine, oid: str) -> dict[str, Any]:
    return engine.history(oid)[-1]


def test_market_order_walks_the_depth(engine: OrderEngine, postbacks: list[dict[str, Any]]) -> None:
    oid = engine.place("regular", order(quantity=25))

    trades = engine.order_trades(oid)
    assert [(t["quantity"], t["average_price"]) for t in trades] == [(10, 1000.05), (10, 1000.1), (5, 1000.15)]
    assert last(engine, oid)["status"] == "COMPLETE"
    assert last(engine, oid)["average_price"] == pytest.approx((10 * 1000.05 + 10 * 1000.1 + 5 * 1000.15) / 25)
    assert [p["status"] for p in postbacks] == ["OPEN", "UPDATE", "UPDATE", "COMPLETE"]


def test_market_order_bigger_than_depth_stays_open_and_fills_later(engine: OrderEngine,
                                                                   market: FakeMarket) -> None:
    oid = engine.place("regular", order(quantity=60))
    partial = last(engine, oid)

    engine.on_market(market.set(RELIANCE, ltp=100_010))

    assert partial["status"] == "OPEN" and partial["filled_quantity"] == 50 and partial["pending_quantity"] == 10
    assert last(engine, oid)["status"] == "COMPLETE"


def test_depth_is_shared_between_orders_on_the_same_tick(engine: OrderEngine) -> None:
    a = engine.place("regular", order(quantity=40))
    b = engine.place("regular", order(quantity=40))

    assert last(engine, a)["filled_quantity"] == 40
    assert last(engine, b)["filled_quantity"] == 10


def test_limit_rests_then_fills_when_a_trade_prints_through(engine: OrderEngine, market: FakeMarket) -> None:
    oid = engine.place("regular", order(order_type="LIMIT", price="999.00", market_protection=None))
    assert last(engine, oid)["status"] == "OPEN"

    engine.on_market(market.set(RELIANCE, ltp=99_950, last_qty=4))  # bid side moves, ask 999.55: not crossed
    four = last(engine, oid)
    engine.on_market(market.set(RELIANCE, ltp=99_800, last_qty=100))  # asks from 998.05: crossed

    assert four["filled_quantity"] == 0
    assert last(engine, oid)["status"] == "COMPLETE"
    assert all(t["average_price"] <= 999.0 for t in engine.order_trades(oid))


def test_stop_loss_waits_for_trigger(engine: OrderEngine, market: FakeMarket) -> None:
    oid = engine.place("regular", order(order_type="SL-M", trigger_price="1002.00", quantity=5))
    assert last(engine, oid)["status"] == "TRIGGER PENDING"

    engine.on_market(market.set(RELIANCE, ltp=100_150))
    still = last(engine, oid)["status"]
    engine.on_market(market.set(RELIANCE, ltp=100_200))

    assert still == "TRIGGER PENDING"
    assert last(engine, oid)["status"] == "COMPLETE"
    assert engine.order_trades(oid)[0]["average_price"] == 1002.05


def test_ioc_remainder_is_cancelled(engine: OrderEngine) -> None:
    oid = engine.place("regular", order(order_type="LIMIT", price="1000.05", validity="IOC", quantity=15,
                                        market_protection=None))

    final = last(engine, oid)
    assert final["status"] == "CANCELLED"
    assert final["filled_quantity"] == 10 and final["cancelled_quantity"] == 5


def test_delayed_cancel_can_still_fill(engine: OrderEngine, market: FakeMarket) -> None:
    oid = engine.place("regular", order(order_type="LIMIT", price="990.00", market_protection=None, quantity=5))
    engine.cancel("regular", oid, delay_s=0.5, wall_now=100.0)
    pending = last(engine, oid)["status"]

    engine.on_market(market.set(RELIANCE, ltp=98_900, last_qty=2))
    engine.process_due(100.6)
    final = last(engine, oid)

    assert pending == "CANCEL PENDING"
    assert final["status"] == "COMPLETE"  # the fill won the race


def test_modify_then_cancel_and_modification_limit(engine: OrderEngine, postbacks: list[dict[str, Any]]) -> None:
    oid = engine.place("regular", order(order_type="LIMIT", price="990.00", market_protection=None))
    for i in range(MAX_MODIFICATIONS):
        engine.modify("regular", oid, {"price": f"{980 - i}.00"})

    with pytest.raises(InputError, match="modifications"):
        engine.modify("regular", oid, {"price": "950.00"})
    engine.cancel("regular", oid)

    assert last(engine, oid)["status"] == "CANCELLED" and last(engine, oid)["modified"]
    assert postbacks[-1]["status"] == "CANCELLED"
    assert sum(p["status"] == "UPDATE" for p in postbacks) == MAX_MODIFICATIONS
    with pytest.raises(InputError, match="CANCELLED"):
        engine.modify("regular", oid, {"price": "950.00"})


def test_insufficient_funds_and_holdings_reject(engine: OrderEngine) -> None:
    big = engine.place("regular", order(quantity=100_000, product="CNC"))
    short = engine.place("regular", order(transaction_type="SELL", product="CNC", tradingsymbol="IDEA"))

    assert last(engine, big)["status"] == "REJECTED" and "Insufficient funds" in last(engine, big)["status_message"]
    assert last(engine, short)["status"] == "REJECTED"
    assert "Insufficient holdings" in last(engine, short)["status_message"]


def test_price_outside_circuit_is_rejected(engine: OrderEngine) -> None:
    oid = engine.place("regular", order(order_type="LIMIT", price="1300.00", market_protection=None))

    assert last(engine, oid)["status"] == "REJECTED" and "circuit" in last(engine, oid)["status_message"]


def test_amo_waits_for_the_next_tick(engine: OrderEngine, market: FakeMarket) -> None:
    oid = engine.place("amo", order())
    waiting = last(engine, oid)["status"]

    engine.on_market(market.set(RELIANCE, ltp=100_000))

    assert waiting == "AMO REQ RECEIVED"
    assert last(engine, oid)["status"] == "COMPLETE"


@pytest.mark.parametrize(("changes", "message"), [
    ({"quantity": "0"}, "quantity"),
    ({"quantity": "abc"}, "quantity"),
    ({"order_type": "LIMIT", "price": "1000.03", "market_protection": None}, "tick size"),
    ({"market_protection": None}, MARKET_PROTECTION_REQUIRED[:20]),
    ({"tag": "has space"}, "tag"),
    ({"tag": "x" * 21}, "tag"),
    ({"tradingsymbol": "NIFTY 50"}, "index"),
    ({"tradingsymbol": "NOPE"}, "does not exist"),
    ({"product": "BO"}, "product"),
    ({"order_type": "SL", "price": "1000", "trigger_price": "990", "market_protection": None}, "higher than"),
    ({"order_type": "LIMIT", "market_protection": None}, "price"),
])
def test_invalid_input_raises(engine: OrderEngine, changes: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        engine.place("regular", order(**changes))


def test_unsupported_variety(engine: OrderEngine) -> None:
    with pytest.raises(InputError, match="(?i)variety"):
        engine.place("co", order())


def test_positions_follow_trades(engine: OrderEngine, market: FakeMarket) -> None:
    engine.place("regular", order(quantity=10))
    engine.on_market(market.set(RELIANCE, ltp=100_100))
    engine.place("regular", order(quantity=4, transaction_type="SELL"))

    (pos,) = engine.portfolio.positions()["net"]
    assert pos["quantity"] == 6 and pos["buy_quantity"] == 10 and pos["sell_quantity"] == 4
    assert pos["realised"] == pytest.approx(4 * (1001.0 - 1000.05))
    assert engine.portfolio.margins("equity")["net"] < 1_000_000.0
    with pytest.raises(InputError):
        engine.portfolio.margins("crypto")

