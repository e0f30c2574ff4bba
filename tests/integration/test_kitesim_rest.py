"""The official KiteConnect client against a running kitesim: every route, errors, limits, order lifecycle."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator

import pytest
from kiteconnect import KiteConnect, exceptions as kex

from kitesim.auth import checksum
from kitesim.server import RunningSimulator
from kitesim.testing import control, fresh_client, place_market, running_simulator

SEED = 11
START = "2025-12-04 10:00:00"  # a Thursday, mid-session (IST)


@pytest.fixture(scope="module")
def sim() -> Iterator[RunningSimulator]:
    from kitesim.clock import parse_ist

    with running_simulator(seed=SEED, start=parse_ist(START), rate_limits=False) as s:
        time.sleep(1.2)  # let every instrument tick at least once
        yield s


@pytest.fixture()
def kite(sim: RunningSimulator) -> KiteConnect:
    return fresh_client(sim.http_url)  # type: ignore[no-any-return]


_place = place_market


def _tick_round(price: float, tick: float = 0.05) -> float:
    return round(round(price / tick) * tick, 2)


def _status(kite: KiteConnect, order_id: str) -> str:
    return kite.order_history(order_id)[-1]["status"]


# ---------------------------------------------------------------- orders


def test_market_order_fills_completely_with_trades(kite: KiteConnect) -> None:
    order_id = _place(kite, quantity=3)

    history = kite.order_history(order_id)
    trades = kite.order_trades(order_id)

    assert [h["status"] for h in history][:4] == ["PUT ORDER REQ RECEIVED", "VALIDATION PENDING",
                                                  "OPEN PENDING",
                                                  "OPEN"]
    assert history[-1]["status"] == "COMPLETE"
    assert history[-1]["filled_quantity"] == 3 and history[-1]["pending_quantity"] == 0
    assert isinstance(history[-1]["order_timestamp"], dt.datetime)
    assert sum(t["quantity"] for t in trades) == 3
    assert all(t["order_id"] == order_id for t in trades)
    assert {t["trade_id"] for t in trades} <= {t["trade_id"] for t in kite.trades()}
    assert order_id in {o["order_id"] for o in kite.orders()}


def test_limit_order_rests_open_then_fills_when_crossed(kite: KiteConnect) -> None:
    ltp = kite.ltp("NSE:INFY")["NSE:INFY"]["last_price"]
    order_id = _place(kite, tradingsymbol="INFY", order_type="LIMIT", price=_tick_round(ltp * 0.95),
                      market_protection=None, tag="rest1")

    rested = kite.order_history(order_id)[-1]
    kite.modify_order("regular", order_id, price=_tick_round(ltp * 1.05))
    history = kite.order_history(order_id)

    assert rested["status"] == "OPEN" and rested["pending_quantity"] == 1 and rested["tag"] == "rest1"
    assert "MODIFIED" in [h["status"] for h in history]
    assert history[-1]["status"] == "COMPLETE"
    assert kite.order_trades(order_id)[0]["average_price"] <= _tick_round(ltp * 1.05)


def test_limit_order_can_be_cancelled(kite: KiteConnect) -> None:
    ltp = kite.ltp("NSE:TCS")["NSE:TCS"]["last_price"]
    order_id = _place(kite, tradingsymbol="TCS", transaction_type="SELL", order_type="LIMIT",
                      price=_tick_round(ltp * 1.1), quantity=2, market_protection=None)

    assert _status(kite, order_id) == "OPEN"
    assert kite.cancel_order("regular", order_id) == order_id
    last = kite.order_history(order_id)[-1]

    assert last["status"] == "CANCELLED" and last["cancelled_quantity"] == 2
    with pytest.raises(kex.InputException):
        kite.cancel_order("regular", order_id)


def test_positions_margins_and_holdings(kite: KiteConnect) -> None:
    _place(kite, tradingsymbol="SBIN", quantity=5)

    positions = kite.positions()
    margins = kite.margins()
    equity = kite.margins("equity")
    holdings = kite.holdings()

    sbin = [p for p in positions["net"] if p["tradingsymbol"] == "SBIN" and p["product"] == "MIS"]
    assert sbin and sbin[0]["quantity"] >= 5 and sbin[0]["buy_quantity"] >= 5
    assert set(positions) == {"net", "day"}
    assert margins["equity"]["available"]["cash"] == 10_000_000.0
    assert equity["net"] < 10_000_000.0 and "utilised" in equity
    assert holdings and {"tradingsymbol", "isin", "quantity", "average_price",
                         "last_price"} <= set(holdings[0])


def test_bad_quantity_raises_input_exception(kite: KiteConnect) -> None:
    with pytest.raises(kex.InputException) as err:
        _place(kite, quantity=0)

    assert err.value.code == 400


def test_price_off_tick_grid_and_unknown_symbol_raise_input_exception(kite: KiteConnect) -> None:
    with pytest.raises(kex.InputException, match="multiples of tick size"):
        _place(kite, order_type="LIMIT", price=1500.03, market_protection=None)
    with pytest.raises(kex.InputException, match="does not exist"):
        _place(kite, tradingsymbol="NOSUCH")
    with pytest.raises(kex.InputException, match="market protection"):
        _place(kite, market_protection=None)


def test_wrong_token_raises_token_exception(sim: RunningSimulator) -> None:
    bad = KiteConnect(api_key="sim", access_token="wrong", root=sim.http_url)

    with pytest.raises(kex.TokenException) as err:
        bad.orders()

    assert err.value.code == 403
    assert str(err.value) == "Incorrect `api_key` or `access_token`."


def test_burst_over_ten_orders_per_second_gets_429(kite: KiteConnect, sim: RunningSimulator) -> None:
    control(sim.http_url, "/_sim/faults", {"rate_limits": True})
    ltp = kite.ltp("NSE:ITC")["NSE:ITC"]["last_price"]
    refused_before = control(sim.http_url, "/_sim/stats")["rate_limited"]["orders"]
    time.sleep(1.02 - time.time() % 1)  # Kite counts calendar seconds: start just after one begins
    accepted, refused = 0, []
    for _ in range(15):
        try:
            _place(kite, tradingsymbol="ITC", order_type="LIMIT", price=_tick_round(ltp * 0.9),
                   market_protection=None)
            accepted += 1
        except kex.NetworkException as exc:
            refused.append(exc)

    assert accepted == 10
    assert len(refused) == 5 and all(e.code == 429 for e in refused)
    assert "Too many requests" in str(refused[0])
    assert control(sim.http_url, "/_sim/stats")["rate_limited"]["orders"] - refused_before == 5


def test_quotes_are_limited_to_one_per_second(kite: KiteConnect, sim: RunningSimulator) -> None:
    control(sim.http_url, "/_sim/faults", {"rate_limits": True})
    time.sleep(1.05)

    kite.ltp("NSE:INFY")
    with pytest.raises(kex.NetworkException) as err:
        kite.quote("NSE:INFY")

    assert err.value.code == 429


def test_injected_5xx_maps_to_client_exceptions(kite: KiteConnect, sim: RunningSimulator) -> None:
    control(sim.http_url, "/_sim/faults", {"http_5xx_next": 3, "http_5xx_code": 502})

    for _ in range(3):
        with pytest.raises(kex.DataException) as err:
            kite.orders()
        assert err.value.code == 502
    assert isinstance(kite.orders(), list)


def test_failure_after_processing_still_places_the_order(kite: KiteConnect, sim: RunningSimulator) -> None:
    control(sim.http_url, "/_sim/faults", {"http_5xx_next": 1, "http_5xx_code": 503,
                                           "http_5xx_after_processing": True, "http_5xx_paths": ["/orders"]})

    with pytest.raises(kex.NetworkException):
        _place(kite, tradingsymbol="WIPRO", tag="lostreply1")

    assert [o["status"] for o in kite.orders() if o["tag"] == "lostreply1"] == ["COMPLETE"]


# ---------------------------------------------------------------- market data


def test_instruments_csv(kite: KiteConnect) -> None:
    everything = kite.instruments()
    nse = kite.instruments("NSE")

    assert len(everything) >= 60
    assert {"instrument_token", "exchange_token", "tradingsymbol", "tick_size", "lot_size", "segment",
            "exchange", "expiry", "strike", "last_price", "name", "instrument_type"} == set(everything[0])
    reliance = [i for i in nse if i["tradingsymbol"] == "RELIANCE"]
    assert reliance[0]["instrument_token"] == 738561 and reliance[0]["tick_size"] == 0.05
    assert {i["exchange"] for i in nse} == {"NSE"}
    assert any(i["segment"] == "INDICES" for i in nse)


def test_quote_ohlc_ltp(kite: KiteConnect) -> None:
    quote = kite.quote("NSE:RELIANCE", "NSE:NIFTY 50", "CDS:USDINR25DECFUT")
    ohlc = kite.ohlc("NSE:RELIANCE")
    ltp = kite.ltp("NSE:RELIANCE", "256265")

    q = quote["NSE:RELIANCE"]
    assert q["instrument_token"] == 738561 and q["last_price"] > 0
    assert isinstance(q["timestamp"], dt.datetime) and isinstance(q["last_trade_time"], dt.datetime)
    assert len(q["depth"]["buy"]) == 5 and len(q["depth"]["sell"]) == 5
    assert q["depth"]["buy"][0]["price"] <= q["depth"]["sell"][0]["price"]
    assert q["ohlc"]["low"] <= q["last_price"] <= q["ohlc"]["high"]
    assert quote["NSE:NIFTY 50"]["instrument_token"] == 256265
    usd = quote["CDS:USDINR25DECFUT"]["last_price"]
    assert 50 < usd < 150 and round(usd / 0.0025, 6) == round(usd / 0.0025)
    assert set(ohlc["NSE:RELIANCE"]) == {"instrument_token", "last_price", "ohlc"}
    assert set(ltp) == {"NSE:RELIANCE", "256265"}


def test_historical_candles_are_deterministic_and_consistent(kite: KiteConnect) -> None:
    minutes = kite.historical_data(738561, "2025-12-02 09:15:00", "2025-12-03 15:30:00", "minute")
    fives = kite.historical_data(738561, "2025-12-02 09:15:00", "2025-12-03 15:30:00", "5minute")
    days = kite.historical_data(738561, "2025-11-01", "2025-12-03", "day")

    assert len(minutes) == 2 * 375
    assert minutes[0]["date"] == dt.datetime(2025, 12, 2, 9, 15, tzinfo=dt.timezone(dt.timedelta(hours=5.5)))
    assert len(fives) == 2 * 75
    assert fives[0]["open"] == minutes[0]["open"] and fives[0]["close"] == minutes[4]["close"]
    assert fives[0]["high"] == max(m["high"] for m in minutes[:5])
    assert fives[0]["volume"] == sum(m["volume"] for m in minutes[:5])
    assert all(c["low"] <= min(c["open"], c["close"]) for c in minutes)
    assert all(c["high"] >= max(c["open"], c["close"]) for c in minutes)
    # the last session before the simulator's start closes at the reference price (tokens.csv)
    assert days[-1]["date"].date() == dt.date(2025, 12, 3) and days[-1]["close"] == 1545.6
    assert days[-1]["close"] == minutes[-1]["close"]
    again = kite.historical_data(738561, "2025-12-02 09:15:00", "2025-12-03 15:30:00", "minute")
    assert again == minutes


def test_historical_rejects_bad_interval_and_long_range(kite: KiteConnect) -> None:
    with pytest.raises(kex.InputException):
        kite.historical_data(738561, "2025-12-01", "2025-12-02", "7minute")
    with pytest.raises(kex.InputException, match="60 days"):
        kite.historical_data(738561, "2025-01-01", "2025-12-02", "minute")


def test_historical_today_comes_from_live_ticks(kite: KiteConnect) -> None:
    candles = kite.historical_data(738561, "2025-12-04 09:15:00", "2025-12-04 23:59:00", "minute")
    volume_now = kite.quote("NSE:RELIANCE")["NSE:RELIANCE"]["volume"]

    assert candles and candles[0]["date"].hour == 10  # the simulator started at 10:00 IST
    assert 0 < sum(c["volume"] for c in candles) <= volume_now


# ---------------------------------------------------------------- session


def test_generate_session_issues_a_working_token(sim: RunningSimulator) -> None:
    kite = KiteConnect(api_key="sim", root=sim.http_url)

    session = kite.generate_session("request-abc", api_secret="sim-secret")
    profile = kite.profile()

    assert isinstance(session["login_time"], dt.datetime)
    assert session["access_token"] and kite.access_token == session["access_token"]
    assert profile["user_id"] == "SIM001"
    with pytest.raises(kex.TokenException):
        KiteConnect(api_key="sim", root=sim.http_url).generate_session("request-abc", api_secret="wrong")
    assert checksum("sim", "r", "s") != checksum("sim", "r", "t")


def test_expired_token_raises_token_exception() -> None:
    with running_simulator(seed=1, token_expires_after=1.0, rate_limits=False) as s:
        kite = KiteConnect(api_key="sim", access_token="sim-token", root=s.http_url)
        assert isinstance(kite.orders(), list)
        time.sleep(1.1)

        with pytest.raises(kex.TokenException) as err:
            kite.orders()
        fresh = KiteConnect(api_key="sim", root=s.http_url)
        fresh.generate_session("req-2", api_secret="sim-secret")

        assert err.value.code == 403
        assert str(err.value) == "Incorrect `api_key` or `access_token`."
        assert isinstance(fresh.orders(), list)
