"""kitesim's pure pieces for Kite's 1 April 2026 rules: calendar-second order limits, market
protection, the order_reply / order_stuck_s / ip_not_registered faults, session control."""

from __future__ import annotations

from typing import Any

import pytest
from kiteconnect import KiteConnect

from core.universe import by_key, load_universe
from kitesim.auth import CALENDAR_LIMITS, RequestLimits, SessionStore, check_token_text
from kitesim.errors import InputError, NetworkError, TokenError
from kitesim.faults import FaultConfig, Faults
from kitesim.limits import IST_OFFSET_S, CalendarLimiter, window_key
from kitesim.orders import MARKET_PROTECTION_REQUIRED, RECEIVED, OrderEngine
from kitesim.packets import DepthLevel, Snapshot
from kitesim.server import DEFAULT_TOKENS

UNIVERSE = by_key(load_universe(DEFAULT_TOKENS))
RELIANCE = 738561
T0 = 1_764_822_600.0  # 2025-12-04 10:00:00 IST, a whole second (and minute)


class Clock:
    """A hand-driven clock."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def burst(limiter: CalendarLimiter, n: int) -> int:
    """How many of ``n`` calls at the clock's current time are allowed."""
    return sum(limiter.try_acquire() for _ in range(n))


# ---------------------------------------------------------------- calendar-window order limits


def test_orders_are_counted_per_calendar_second_not_a_sliding_window() -> None:
    clock = Clock(T0 + 0.9)
    limiter = CalendarLimiter((("second", 10),), clock=clock)

    assert burst(limiter, 10) == 10
    assert not limiter.try_acquire()
    clock.t = T0 + 1.1  # 0.2 s later, but the next calendar second: a sliding window would refuse
    assert burst(limiter, 12) == 10
    clock.t = T0 + 1.999
    assert not limiter.try_acquire()
    clock.t = T0 + 2.0
    assert limiter.try_acquire()


def test_a_refused_call_is_not_counted() -> None:
    clock = Clock(T0)
    limiter = CalendarLimiter((("second", 10), ("minute", 15)), clock=clock)

    assert burst(limiter, 30) == 10  # 20 refused in the first second
    clock.t += 1
    assert burst(limiter, 30) == 5  # the minute holds 10 + 5, whatever was refused
    assert limiter.counts() == {"second": 5, "minute": 15}
    clock.t = T0 + 60
    assert limiter.counts() == {"second": 0, "minute": 0}
    assert burst(limiter, 1) == 1


def test_minute_and_ist_day_windows() -> None:
    midnight_ist = 1_764_786_600.0  # 2025-12-04 00:00:00 IST = 2025-12-03 18:30 UTC
    assert (midnight_ist + IST_OFFSET_S) % 86_400 == 0
    assert window_key("day", midnight_ist - 0.001) + 1 == window_key("day", midnight_ist)
    assert window_key("minute", T0 + 59.9) + 1 == window_key("minute", T0 + 60)

    clock = Clock(midnight_ist - 3600)  # 23:00 IST
    limiter = CalendarLimiter(CALENDAR_LIMITS["orders"], clock=clock)
    per_minute = []
    for minute in range(60):  # 10 tries every second for an hour
        allowed = 0
        for second in range(60):
            clock.t = midnight_ist - 3600 + 60 * minute + second
            allowed += burst(limiter, 10)
        per_minute.append(allowed)
    assert per_minute[:12] == [400] * 12 and per_minute[12] == 200  # 5000 a day, used by 23:12:20
    assert sum(per_minute) == 5000
    clock.t = midnight_ist  # a new IST day (not a UTC one) starts the count again
    assert burst(limiter, 11) == 10


def test_request_limits_use_the_wall_clock_for_orders_per_api_key_and_count_429s() -> None:
    wall, mono = Clock(T0 + 0.95), Clock(0.0)
    limits = RequestLimits(monotonic=mono, wall=wall)

    for _ in range(10):
        limits.check("sim", "orders")
    with pytest.raises(NetworkError, match="Too many requests") as err:
        limits.check("sim", "orders")
    limits.check("other-app", "orders")  # per api_key
    wall.t += 0.1  # the next calendar second; the monotonic clock did not move at all
    for _ in range(10):
        limits.check("sim", "orders")

    assert err.value.http_status == 429 and err.value.error_type == "NetworkException"
    assert limits.refused() == {"historical": 0, "orders": 1, "other": 0, "quote": 0}


# ---------------------------------------------------------------- market protection (order engine)


@pytest.fixture()
def postbacks() -> list[dict[str, Any]]:
    return []


@pytest.fixture()
def engine(postbacks: list[dict[str, Any]]) -> OrderEngine:
    snaps: dict[int, Snapshot] = {}
    buy = tuple(DepthLevel(100, 100_000 - 5 * i, 1) for i in range(5))
    sell = tuple(DepthLevel(100, 100_005 + 5 * i, 1) for i in range(5))
    snaps[RELIANCE] = Snapshot(instrument_token=RELIANCE, last_price=100_000, seq=1, ts=T0, close=100_000,
                               open=100_000, high=100_000, low=100_000, buy=buy, sell=sell)
    e = OrderEngine(UNIVERSE, snaps.get, lambda: T0, seed=1, cash=10_000_000.0)
    e.listeners.append(postbacks.append)
    e.snaps = snaps  # type: ignore[attr-defined] - the test moves the market through it
    return e


def order(**kw: Any) -> dict[str, str]:
    form = {"exchange": "NSE", "tradingsymbol": "RELIANCE", "transaction_type": "BUY", "quantity": "1",
            "product": "MIS", "order_type": "MARKET", "market_protection": "-1"}
    for k, v in kw.items():
        if v is None:
            form.pop(k, None)
        else:
            form[k] = str(v)
    return form


@pytest.mark.parametrize("protection", [None, "0", "0.0"])
def test_market_and_sl_m_without_protection_are_rejected(engine: OrderEngine, protection: str | None) -> None:
    for kw in ({}, {"order_type": "SL-M", "trigger_price": "1001"}):
        with pytest.raises(InputError) as err:
            engine.place("regular", order(market_protection=protection, **kw))
        assert err.value.message == MARKET_PROTECTION_REQUIRED
    assert MARKET_PROTECTION_REQUIRED == ("Market orders without market protection are not allowed via API. "
                                          "Please set market protection or use a Limit order.")
    assert engine.orders == {}


@pytest.mark.parametrize(("protection", "stored"), [("-1", -1), ("0.5", 0.5), ("3", 3), ("100", 100)])
def test_automatic_or_a_percentage_up_to_100_is_accepted(engine: OrderEngine, protection: str,
                                                         stored: float) -> None:
    oid = engine.place("regular", order(market_protection=protection))

    assert engine.history(oid)[-1]["status"] == "COMPLETE"
    assert engine.history(oid)[-1]["market_protection"] == stored


@pytest.mark.parametrize("protection", ["100.5", "-2", "-0.5", "abc", "nan"])
def test_other_protection_values_are_invalid(engine: OrderEngine, protection: str) -> None:
    with pytest.raises(InputError, match="market_protection"):
        engine.place("regular", order(market_protection=protection))


# ---------------------------------------------------------------- order held in PUT ORDER REQ RECEIVED


def test_stuck_order_waits_in_put_order_req_received_then_runs_its_normal_lifecycle(
        engine: OrderEngine, postbacks: list[dict[str, Any]]) -> None:
    oid = engine.place("regular", order(quantity=2), stuck_s=5.0, wall_now=100.0)

    assert [h["status"] for h in engine.history(oid)] == [RECEIVED]
    assert engine.list_orders()[0]["status"] == RECEIVED and engine.list_orders()[0]["pending_quantity"] == 2
    assert [p["status"] for p in postbacks] == [RECEIVED]
    with pytest.raises(InputError, match="PUT ORDER REQ RECEIVED"):
        engine.cancel("regular", oid)
    with pytest.raises(InputError, match="PUT ORDER REQ RECEIVED"):
        engine.modify("regular", oid, {"quantity": "3"})
    engine.process_due(104.9)
    assert engine.history(oid)[-1]["status"] == RECEIVED and engine.orders[oid].filled_quantity == 0

    engine.process_due(105.0)

    assert [h["status"] for h in engine.history(oid)] == [RECEIVED, "VALIDATION PENDING", "OPEN PENDING",
                                                          "OPEN", "COMPLETE"]
    assert [p["status"] for p in postbacks] == [RECEIVED, "OPEN", "COMPLETE"]


def test_stuck_limit_order_is_matched_on_ticks_after_it_is_accepted(engine: OrderEngine) -> None:
    snaps: dict[int, Snapshot] = engine.snaps  # type: ignore[attr-defined]
    oid = engine.place("regular", order(order_type="LIMIT", price="999", market_protection=None),
                       stuck_s=1.0, wall_now=0.0)
    tick = snaps[RELIANCE]
    engine.on_market(tick)  # a tick while the order is held must not drop it from the book
    engine.process_due(1.0)
    assert engine.history(oid)[-1]["status"] == "OPEN"

    through = Snapshot(instrument_token=RELIANCE, last_price=99_850, seq=2, ts=T0 + 2, close=100_000,
                       last_qty=5, open=100_000, high=100_000, low=99_850, buy=tick.buy, sell=tick.sell)
    snaps[RELIANCE] = through
    engine.on_market(through)

    assert engine.history(oid)[-1]["status"] == "COMPLETE"


def test_stuck_amo_becomes_amo_req_received(engine: OrderEngine) -> None:
    oid = engine.place("amo", order(order_type="LIMIT", price="999", market_protection=None),
                       stuck_s=1.0, wall_now=0.0)
    engine.process_due(2.0)

    assert [h["status"] for h in engine.history(oid)] == [RECEIVED, "AMO REQ RECEIVED"]


# ---------------------------------------------------------------- fault switches


def test_new_fault_defaults() -> None:
    c = FaultConfig()

    assert (c.order_reply, c.order_reply_next, c.order_reply_rate) == ("ok", 0, 1.0)
    assert c.order_reply_delay_ms == 8000 > KiteConnect._default_timeout * 1000  # the client gives up first
    assert c.order_stuck_s == 0.0 and c.ip_not_registered is False


def test_order_reply_next_n_placements_then_back_to_ok() -> None:
    faults = Faults(seed=1)
    faults.update({"order_reply": "http_400_timeout", "order_reply_next": 2, "order_reply_rate": 0.0})

    assert [faults.order_reply_fault() for _ in range(4)] == ["http_400_timeout", "http_400_timeout",
                                                               None, None]
    assert faults.config.order_reply == "ok" and faults.config.order_reply_next == 0


def test_order_reply_rate_is_seeded() -> None:
    def draws(seed: int) -> list[str | None]:
        faults = Faults(seed=seed)
        faults.update({"order_reply": "timeout", "order_reply_rate": 0.5})
        return [faults.order_reply_fault() for _ in range(40)]

    assert draws(3) == draws(3) and draws(3) != draws(4)
    assert 5 < draws(3).count("timeout") < 35
    always = Faults(seed=1)
    always.update({"order_reply": "timeout"})
    assert all(always.order_reply_fault() == "timeout" for _ in range(5))  # rate 1.0 by default


@pytest.mark.parametrize("body", [
    {"order_reply": "lost"}, {"order_reply_delay_ms": 60_001}, {"order_reply_rate": 1.5},
    {"order_reply_next": -1}, {"order_stuck_s": 600.5}, {"order_stuck_s": -1},
    {"ip_not_registered": "maybe"}, {"order_reply_next": 2}, {"order_stuck": 1},
])
def test_bad_fault_settings_are_refused_and_change_nothing(body: dict[str, Any]) -> None:
    faults = Faults(seed=1)

    with pytest.raises(InputError, match="^faults: "):
        faults.update(body)

    assert faults.config == FaultConfig()


def test_faults_reset_clears_the_new_switches() -> None:
    faults = Faults(seed=1)
    faults.update({"order_reply": "timeout", "order_reply_next": 3, "order_stuck_s": 2.5,
                   "ip_not_registered": True})
    faults.update({"order_reply": "ok"})
    assert faults.config.order_reply_next == 0

    faults.reset()

    assert faults.config == FaultConfig()


# ---------------------------------------------------------------- session control


def test_expire_all_then_new_and_added_tokens_work() -> None:
    store = SessionStore("sim", "sim-token", "secret")

    assert store.expire_all() == 1
    with pytest.raises(TokenError, match="Incorrect `api_key` or `access_token`."):
        store.check_header("token sim:sim-token")
    store.add("operator-token-1")
    assert store.check_header("token sim:operator-token-1") == "sim"
    assert store.live() == 1


@pytest.mark.parametrize("token", ["", "has space", "a:b", "x" * 201, 5, None])
def test_unusable_tokens_are_refused(token: Any) -> None:
    with pytest.raises(InputError):
        check_token_text(token)
