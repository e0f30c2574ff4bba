"""The official KiteConnect client (and KiteTicker for postbacks) against kitesim for Kite's
1 April 2026 rules: calendar-second order limits, market protection, ambiguous order replies,
orders held in PUT ORDER REQ RECEIVED, unregistered IPs, token expiry and renewal."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from kiteconnect import KiteConnect, exceptions as kex

from kitesim.errors import IP_NOT_REGISTERED, ORDER_REQUEST_TIMED_OUT
from kitesim.orders import MARKET_PROTECTION_REQUIRED
from kitesim.server import RunningSimulator
from kitesim.testing import control, fresh_client, place_market, running_simulator

PROBE = Path(__file__).with_name("kiteticker_probe.py")
RELIANCE = 738561


@pytest.fixture(scope="module")
def sim() -> Iterator[RunningSimulator]:
    with running_simulator(seed=13, rate_limits=False) as s:
        time.sleep(1.2)  # every instrument ticks at least once
        yield s


@pytest.fixture()
def kite(sim: RunningSimulator) -> KiteConnect:
    return fresh_client(sim.http_url)  # type: ignore[no-any-return]


_place = place_market


def _far_limit(kite: KiteConnect, symbol: str = "ITC") -> dict[str, object]:
    """A BUY LIMIT 10 % under the market: it rests OPEN and can be modified and cancelled."""
    ltp = kite.ltp(f"NSE:{symbol}")[f"NSE:{symbol}"]["last_price"]
    return dict(tradingsymbol=symbol, order_type="LIMIT", price=round(round(ltp * 0.9 / 0.05) * 0.05, 2),
                market_protection=None)


def _by_tag(kite: KiteConnect, tag: str) -> list[dict[str, Any]]:
    return [o for o in kite.orders() if o["tag"] == tag]


def _start_of_second(offset: float = 0.02) -> None:
    """Sleep until ``offset`` seconds into the next calendar second of the wall clock."""
    time.sleep(1 + offset - time.time() % 1)


# ---------------------------------------------------------------- calendar-second order limit


def test_order_limit_counts_calendar_seconds(kite: KiteConnect, sim: RunningSimulator) -> None:
    control(sim.http_url, "/_sim/faults", {"rate_limits": True})
    limit = _far_limit(kite)
    before = control(sim.http_url, "/_sim/stats")["rate_limited"]["orders"]
    _start_of_second(0.55)
    first = [_place(kite, **limit) for _ in range(10)]  # late in second S
    _start_of_second(0.02)
    second = [_place(kite, **limit) for _ in range(10)]  # early in S+1: allowed, unlike a sliding window
    with pytest.raises(kex.NetworkException) as err:
        _place(kite, **limit)

    assert len(set(first + second)) == 20
    assert err.value.code == 429 and str(err.value) == "Too many requests"
    assert control(sim.http_url, "/_sim/stats")["rate_limited"]["orders"] - before == 1


def test_modify_and_cancel_count_as_order_requests(kite: KiteConnect, sim: RunningSimulator) -> None:
    limit = _far_limit(kite, "SBIN")
    ids = [_place(kite, **limit) for _ in range(4)]
    control(sim.http_url, "/_sim/faults", {"rate_limits": True})
    before = control(sim.http_url, "/_sim/stats")["rate_limited"]
    _start_of_second()
    for oid in ids:
        kite.modify_order("regular", oid, quantity=2)
    for oid in ids:
        kite.cancel_order("regular", oid)
    _place(kite, **limit)
    _place(kite, **limit)  # 4 + 4 + 2 = 10 order requests in this calendar second
    kite.orders()  # GET routes have their own limits
    with pytest.raises(kex.NetworkException):
        _place(kite, **limit)
    after = control(sim.http_url, "/_sim/stats")["rate_limited"]

    assert after["orders"] - before["orders"] == 1 and after["other"] == before["other"]
    assert set(after) >= {"orders", "quote", "historical", "other"}


def test_a_client_pacing_itself_sees_no_429(kite: KiteConnect, sim: RunningSimulator) -> None:
    control(sim.http_url, "/_sim/faults", {"rate_limits": True})
    limit = _far_limit(kite, "WIPRO")
    before = control(sim.http_url, "/_sim/stats")["rate_limited"]["orders"]
    for _ in range(3):
        _start_of_second()
        for _ in range(10):
            _place(kite, **limit)

    assert control(sim.http_url, "/_sim/stats")["rate_limited"]["orders"] == before


# ---------------------------------------------------------------- market protection


@pytest.mark.parametrize("protection", [None, 0])
@pytest.mark.parametrize("order_type", ["MARKET", "SL-M"])
def test_market_orders_without_protection_are_refused(kite: KiteConnect, protection: int | None,
                                                      order_type: str) -> None:
    extra: dict[str, object] = {}
    if order_type == "SL-M":
        ltp = kite.ltp("NSE:RELIANCE")["NSE:RELIANCE"]["last_price"]
        extra["trigger_price"] = round(round(ltp * 1.05 / 0.05) * 0.05, 2)

    with pytest.raises(kex.InputException) as err:
        _place(kite, order_type=order_type, market_protection=protection, tag="noprot", **extra)

    assert err.value.code == 400
    assert str(err.value) == ("Market orders without market protection are not allowed via API. "
                              "Please set market protection or use a Limit order.") == MARKET_PROTECTION_REQUIRED
    assert _by_tag(kite, "noprot") == []


@pytest.mark.parametrize("protection", [-1, 0.5, 3, 100])
def test_automatic_or_percentage_protection_is_accepted(kite: KiteConnect, protection: float) -> None:
    order_id = _place(kite, market_protection=protection)

    last = kite.order_history(order_id)[-1]
    assert last["status"] == "COMPLETE" and last["market_protection"] == protection


@pytest.mark.parametrize("protection", [101, -2])
def test_protection_out_of_range_is_invalid(kite: KiteConnect, protection: int) -> None:
    with pytest.raises(kex.InputException, match="market_protection"):
        _place(kite, market_protection=protection)


# ---------------------------------------------------------------- ambiguous order replies


def test_order_reply_timeout_the_order_is_placed_although_the_client_timed_out(
        kite: KiteConnect, sim: RunningSimulator) -> None:
    control(sim.http_url, "/_sim/faults", {"order_reply": "timeout", "order_reply_next": 1,
                                           "order_reply_delay_ms": 2500})
    impatient = KiteConnect(api_key="sim", access_token="sim-token", root=sim.http_url, timeout=1)
    started = time.monotonic()

    with pytest.raises(requests.exceptions.Timeout):
        _place(impatient, tag="lost1")

    assert time.monotonic() - started < 2.0
    assert [o["status"] for o in _by_tag(kite, "lost1")] == ["COMPLETE"]
    assert control(sim.http_url, "/_sim/faults")["order_reply"] == "ok"  # only the next placement
    assert _place(impatient, tag="fine1")
    assert control(sim.http_url, "/_sim/stats")["faults_injected"]["order_reply_timeout"] >= 1


def test_order_reply_http_400_timeout_for_a_placed_order(kite: KiteConnect, sim: RunningSimulator) -> None:
    control(sim.http_url, "/_sim/faults", {"order_reply": "http_400_timeout", "order_reply_next": 2})

    for tag in ("amb1", "amb2"):
        with pytest.raises(kex.InputException) as err:
            _place(kite, tag=tag, **_far_limit(kite))
        assert err.value.code == 400
        assert str(err.value) == ("Order request timed out. Please check the order book before placing "
                                  "the order again.") == ORDER_REQUEST_TIMED_OUT
    third = _place(kite, tag="amb3", **_far_limit(kite))

    assert [o["status"] for o in _by_tag(kite, "amb1")] == ["OPEN"]
    assert [o["status"] for o in _by_tag(kite, "amb2")] == ["OPEN"]
    assert [o["order_id"] for o in _by_tag(kite, "amb3")] == [third]


def test_validation_errors_do_not_use_up_order_reply_next(kite: KiteConnect, sim: RunningSimulator) -> None:
    control(sim.http_url, "/_sim/faults", {"order_reply": "http_400_timeout", "order_reply_next": 1})

    with pytest.raises(kex.InputException, match="market protection"):
        _place(kite, market_protection=None)
    with pytest.raises(kex.InputException, match="timed out"):
        _place(kite, tag="amb4")

    assert [o["status"] for o in _by_tag(kite, "amb4")] == ["COMPLETE"]


# ---------------------------------------------------------------- orders held in PUT ORDER REQ RECEIVED


def test_stuck_order_sits_in_put_order_req_received_then_completes(kite: KiteConnect,
                                                                   sim: RunningSimulator) -> None:
    control(sim.http_url, "/_sim/faults", {"order_stuck_s": 1.0})
    order_id = _place(kite, tag="stuck1")

    held = _by_tag(kite, "stuck1")
    with pytest.raises(kex.InputException, match="PUT ORDER REQ RECEIVED"):
        kite.cancel_order("regular", order_id)
    time.sleep(0.7)
    still = kite.order_history(order_id)
    deadline = time.monotonic() + 3
    while kite.order_history(order_id)[-1]["status"] != "COMPLETE" and time.monotonic() < deadline:
        time.sleep(0.05)
    history = [h["status"] for h in kite.order_history(order_id)]

    assert [o["status"] for o in held] == ["PUT ORDER REQ RECEIVED"]
    assert [h["status"] for h in still] == ["PUT ORDER REQ RECEIVED"]
    assert history == ["PUT ORDER REQ RECEIVED", "VALIDATION PENDING", "OPEN PENDING", "OPEN", "COMPLETE"]


def test_postbacks_announce_put_order_req_received_then_the_lifecycle(sim: RunningSimulator) -> None:
    control(sim.http_url, "/_sim/faults", method="DELETE")
    control(sim.http_url, "/_sim/faults", {"rate_limits": False, "order_stuck_s": 0.5})
    before = {c["id"] for c in control(sim.http_url, "/_sim/stats")["ws_connections"]}
    proc = subprocess.Popen([sys.executable, str(PROBE), "--root", sim.ws_url, "--seconds", "3",
                             "--ltp", str(RELIANCE)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        conns = control(sim.http_url, "/_sim/stats")["ws_connections"]
        if any(c["open"] and c["subscribed"] == 1 and c["id"] not in before for c in conns):
            break
        time.sleep(0.05)
    order_id = _place(KiteConnect(api_key="sim", access_token="sim-token", root=sim.http_url), quantity=2)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    updates = [u for u in json.loads(out.strip().splitlines()[-1])["order_updates"]
               if u["order_id"] == order_id]

    assert [u["status"] for u in updates] == ["PUT ORDER REQ RECEIVED", "OPEN", "COMPLETE"]
    assert updates[-1]["filled_quantity"] == 2


# ---------------------------------------------------------------- unregistered IP


def test_unregistered_ip_refuses_order_requests_only(kite: KiteConnect, sim: RunningSimulator) -> None:
    resting = _place(kite, **_far_limit(kite))
    control(sim.http_url, "/_sim/faults", {"ip_not_registered": True, "rate_limits": True})
    refused_before = control(sim.http_url, "/_sim/stats")["rate_limited"]["orders"]

    calls = [lambda: _place(kite, tag="noip1"), lambda: kite.modify_order("regular", resting, quantity=2),
             lambda: kite.cancel_order("regular", resting)] * 5  # 15 in a burst: refused, never 429
    for call in calls:
        with pytest.raises(kex.PermissionException) as err:
            call()
        assert err.value.code == 403 and str(err.value) == IP_NOT_REGISTERED
    assert str(err.value) == (
        "Order request from an IP that is not registered for this app. Register your static IP in the Kite "
        "Connect developer console (Profile > IP Whitelist) to place orders via the API.")
    assert isinstance(kite.orders(), list) and kite.positions()["net"] is not None
    assert kite.ltp("NSE:INFY")["NSE:INFY"]["last_price"] > 0
    assert _by_tag(kite, "noip1") == [] and kite.order_history(resting)[-1]["status"] == "OPEN"
    assert control(sim.http_url, "/_sim/stats")["rate_limited"]["orders"] == refused_before

    control(sim.http_url, "/_sim/faults", {"ip_not_registered": False})
    assert kite.cancel_order("regular", resting) == resting


# ---------------------------------------------------------------- token expiry and renewal


def test_expire_all_then_generate_session_and_add_token() -> None:
    with running_simulator(seed=2, rate_limits=False) as s:
        kite = KiteConnect(api_key="sim", access_token="sim-token", root=s.http_url)
        assert isinstance(kite.orders(), list)

        assert control(s.http_url, "/_sim/session", {"expire_all": True}) == {
            "expired": 1, "added": False, "live_tokens": 0}
        with pytest.raises(kex.TokenException) as err:
            kite.orders()
        session = kite.generate_session("request-after-expiry", api_secret="sim-secret")
        renewed = kite.orders()
        control(s.http_url, "/_sim/session", {"add_token": "operator-set-token"})
        operator = KiteConnect(api_key="sim", access_token="operator-set-token", root=s.http_url)

        assert err.value.code == 403 and str(err.value) == "Incorrect `api_key` or `access_token`."
        assert session["access_token"] != "sim-token" and kite.access_token == session["access_token"]
        assert isinstance(renewed, list) and isinstance(operator.positions(), dict)
        with pytest.raises(kex.TokenException):
            KiteConnect(api_key="sim", access_token="sim-token", root=s.http_url).profile()


@pytest.mark.parametrize("body", [{}, {"expire": True}, {"expire_all": "yes"}, {"add_token": "a b"},
                                  {"expire_all": True, "add_token": ""}])
def test_bad_session_bodies_are_400_and_change_nothing(kite: KiteConnect, sim: RunningSimulator,
                                                       body: dict[str, Any]) -> None:
    with pytest.raises(urllib.error.HTTPError) as err:
        control(sim.http_url, "/_sim/session", body)

    assert err.value.code == 400
    assert isinstance(kite.orders(), list)
