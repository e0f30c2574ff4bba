"""risk.sizing: the sizing math, every cap and every reject reason, as scenarios.

Numbers are chosen so each expected quantity can be worked out by hand from the config and market
built in the test (equity x risk% / stop distance, rounded down to the lot, then the caps). Signal
times are real: Friday 2026-11-20 is an NSE trading day (09:15-15:30 IST in configs/sessions.yaml).
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from core.clock import IST
from core.sessions import load_calendar
from risk.config import RiskBudget
from risk.sizing import (
    REASONS,
    REJECT_BAD_ORDER,
    REJECT_EXIT_NOTHING,
    REJECT_EXIT_QTY,
    REJECT_HOURS,
    REJECT_NO_PRICE,
    REJECT_NOTIONAL,
    REJECT_POSITION,
    REJECT_PRODUCT,
    REJECT_STOP_SIDE,
    REJECT_STOP_WIDE,
    Market,
    entry_window_reason,
    order_price,
    size,
)

ROOT = Path(__file__).resolve().parents[2]


def ist_ms(y: int, mo: int, d: int, h: int, mi: int = 0, s: int = 0) -> int:
    return int(datetime(y, mo, d, h, mi, s, tzinfo=IST).timestamp() * 1000)


T10 = ist_ms(2026, 11, 20, 10)  # Friday, NSE open 09:15-15:30

#: Small explicit policy: 1% risk, 2% default stop, no binding caps (every test adds the one it is about).
BASE: dict[str, Any] = {
    "capital": 1_000_000, "equity_source": "capital", "risk_per_trade_pct": 1.0, "default_stop_pct": 2.0,
    "max_notional_per_order": 10_000_000, "max_open_positions": 10, "daily_loss_limit": 20_000,
    "allowed_products": ["MIS"], "order_caps": {}, "buckets": {"default": {"pct": 100}},
    "entry_hours": {"within_session": True, "start_after_open_min": 0, "stop_before_close_min": 0},
}


def cfg(**over: Any) -> RiskBudget:
    return RiskBudget.model_validate({**BASE, **over})


def order(**over: Any) -> dict[str, Any]:
    """A runner-shaped entry: BUY 1 INFY LIMIT at 100 with stop 98 (risk 2 per share)."""
    o: dict[str, Any] = {
        "order_id": "o1", "strategy": "s1", "instrument_token": 408065, "symbol": "INFY", "exchange": "NSE",
        "side": "BUY", "order_type": "LIMIT", "product": "MIS", "price": 100.0, "trigger_price": None,
        "stop_loss": 98.0, "qty": None, "tf": "1m", "signal_ts": T10, "created_ts": T10,
        "extra": {"intent": "entry", "reason": "test", "ref_price": 100.0},
    }
    o.update(over)
    return o


def exit_order(intent: str = "exit", qty: Any = 37, **over: Any) -> dict[str, Any]:
    return order(side="SELL", order_type="MARKET", price=None, stop_loss=None, qty=qty,
                 extra={"intent": intent, "reason": "test", "ref_price": 100.0}, **over)


def mkt(**over: Any) -> Market:
    """Equity 100,000 (1% = 1,000 rupees at risk), price 100 from the order, lot 1, nothing held."""
    kw: dict[str, Any] = {"equity": 100_000.0, "equity_source": "broker", "price": 100.0, "price_source": "order"}
    kw.update(over)
    return Market(**kw)


@pytest.fixture(scope="module")
def cal():
    return load_calendar(ROOT / "configs" / "sessions.yaml")


# -- the sizing math -------------------------------------------------------------------------

def test_entry_with_stop_when_sized_then_qty_is_risk_amount_over_stop_distance(cal):
    s = size(order(), mkt(), cfg(), cal)
    assert (s.qty, s.reason, s.rejected) == (500, None, False)  # 100,000 x 1% / (100 - 98)
    r = s.risk
    assert (r["risk_amount"], r["risk_pct"], r["stop_distance"], r["stop_source"]) == (1000.0, 1.0, 2.0, "order")
    assert (r["qty_risk"], r["qty"], r["notional"], r["caps"], r["lot_size"]) == (500, 500, 50_000.0, [], 1)
    assert (r["entry_price"], r["price_source"], r["stop_loss"]) == (100.0, "order", 98.0)
    assert (r["intent"], r["signal_ts"], r["equity"], r["sizing_source"]) == ("entry", T10, 100_000.0, "broker")


def test_entry_when_risk_over_distance_is_fractional_then_qty_is_floored(cal):
    s = size(order(stop_loss=97.0), mkt(), cfg(), cal)
    assert s.qty == 333  # 1000 / 3 = 333.3


def test_entry_when_stop_distance_is_a_float_tenth_then_no_share_is_lost_to_rounding(cal):
    # 1.1 - 1.0 is 0.10000000000000009 in floats: 1000 / it is 9999.99999..., still 10,000 shares.
    s = size(order(price=1.1, stop_loss=1.0), mkt(price=1.1), cfg(), cal)
    assert s.qty == 10_000


def test_entry_with_lot_size_when_sized_then_qty_rounds_down_to_whole_lots(cal):
    s = size(order(stop_loss=97.0), mkt(lot_size=75), cfg(), cal)
    assert (s.qty, s.risk["qty_risk"], s.risk["lot_size"]) == (300, 333, 75)  # 333 -> 4 lots of 75


def test_sell_entry_with_stop_above_when_sized_then_distance_is_stop_minus_price(cal):
    s = size(order(side="SELL", stop_loss=104.0), mkt(), cfg(), cal)
    assert (s.qty, s.risk["stop_distance"]) == (250, 4.0)  # 1000 / (104 - 100)


def test_entry_without_stop_when_sized_then_default_stop_pct_of_price_is_the_distance(cal):
    s = size(order(stop_loss=None), mkt(price=250.0), cfg(), cal)
    # 2% of 250 = 5 rupees a share; 1000 / 5 = 200
    assert (s.qty, s.risk["stop_distance"], s.risk["stop_source"], s.risk["stop_loss"]) == (200, 5.0, "default_pct",
                                                                                           None)


def test_entry_of_strategy_with_own_risk_pct_when_sized_then_override_is_used(cal):
    c = cfg(strategies={"s1": {"risk_per_trade_pct": 0.5}, "rev_*": {"risk_per_trade_pct": 0.25}})
    assert size(order(), mkt(), c, cal).qty == 250  # 0.5% of 100,000 / 2
    s = size(order(strategy="rev_fast"), mkt(), c, cal)
    assert (s.qty, s.risk["risk_pct"], s.risk["risk_amount"]) == (125, 0.25, 250.0)  # by pattern
    assert size(order(strategy="other"), mkt(), c, cal).qty == 500  # the file-wide 1%


def test_market_entry_priced_by_bar_when_sized_then_price_source_and_fallback_flag_pass_through(cal):
    o = order(order_type="MARKET", price=None, stop_loss=None)
    s = size(o, mkt(price=200.0, price_source="bar_1s", equity=50_000.0, equity_source="fallback"), cfg(), cal)
    # 1% of 50,000 = 500 at risk; 2% of 200 = 4 a share -> 125
    assert s.qty == 125
    assert (s.risk["sizing_source"], s.risk["equity"], s.risk["entry_price"], s.risk["price_source"]) == \
        ("fallback", 50_000.0, 200.0, "bar_1s")
    assert s.risk["notional"] == 25_000.0


# -- caps ------------------------------------------------------------------------------------

def test_entry_above_max_notional_per_order_when_sized_then_capped_and_cap_recorded(cal):
    s = size(order(), mkt(), cfg(max_notional_per_order=20_000), cal)
    assert (s.qty, s.risk["caps"], s.risk["qty_risk"], s.risk["notional"]) == (200, ["max_notional_per_order"], 500,
                                                                               20_000.0)


def test_entry_capped_by_notional_when_lot_size_then_capped_to_whole_lots(cal):
    s = size(order(), mkt(lot_size=75), cfg(max_notional_per_order=20_000), cal)
    assert s.qty == 150  # 200 affordable -> 2 lots of 75


def test_entry_when_instrument_holds_notional_then_capped_by_max_position_notional(cal):
    s = size(order(), mkt(position_notional=15_000.0, position_qty=150), cfg(max_position_notional=30_000), cal)
    assert (s.qty, s.risk["caps"]) == (150, ["max_position_notional"])  # (30,000 - 15,000) / 100


def test_entry_when_instrument_holds_qty_then_capped_by_max_position_qty(cal):
    s = size(order(), mkt(position_qty=100, position_notional=10_000.0), cfg(max_position_qty=400), cal)
    assert (s.qty, s.risk["caps"]) == (300, ["max_position_qty"])


def test_entry_above_freeze_qty_of_its_symbol_when_sized_then_capped(cal):
    s = size(order(), mkt(), cfg(freeze_qty={"INFY": 120}), cal)
    assert (s.qty, s.risk["caps"]) == (120, ["freeze_qty"])


def test_future_entry_above_freeze_qty_of_its_underlying_name_when_sized_then_capped_to_lots(cal):
    o = order(symbol="NIFTY26NOVFUT", exchange="NFO")
    m = mkt(equity=10_000_000.0, lot_size=75, name="NIFTY")
    c = cfg(freeze_qty={"NIFTY": 1000})
    s = size(o, m, c, cal)
    # 1% of 10,000,000 / 2 = 50,000 -> 49,950 in lots; freeze 1000 -> 975 (13 lots of 75)
    assert (s.qty, s.risk["qty_risk"], s.risk["caps"]) == (975, 50_000, ["freeze_qty"])
    by_symbol = size(o, m, cfg(freeze_qty={"NIFTY": 1000, "NIFTY26NOVFUT": 150}), cal)
    assert by_symbol.qty == 150  # the symbol's own limit wins over its name's


def test_entry_under_several_caps_when_sized_then_every_binding_cap_recorded_in_order(cal):
    c = cfg(max_notional_per_order=40_000, max_position_qty=300, freeze_qty={"INFY": 1000})
    s = size(order(), mkt(), c, cal)
    # risk 500 -> notional 400 -> position qty 300; freeze 1000 does not bind
    assert (s.qty, s.risk["caps"]) == (300, ["max_notional_per_order", "max_position_qty"])


def test_entry_under_caps_that_do_not_bind_when_sized_then_no_cap_recorded(cal):
    c = cfg(max_notional_per_order=50_000, max_position_notional=60_000, max_position_qty=500, freeze_qty={"INFY": 500})
    s = size(order(), mkt(), c, cal)
    assert (s.qty, s.risk["caps"]) == (500, [])  # each limit equals or exceeds 500


# -- exits -----------------------------------------------------------------------------------

@pytest.mark.parametrize("intent", ["exit", "square_off", "flatten"])
def test_exit_when_sized_then_keeps_its_qty_whatever_the_entry_rules(cal, intent):
    # product not allowed, after the entry end, no price, tiny caps: none of it applies to an exit
    c = cfg(allowed_products=["CNC"], entry_hours={"end": "09:30"}, max_notional_per_order=1, max_position_qty=1)
    o = exit_order(intent, qty=37, product="MIS", signal_ts=ist_ms(2026, 11, 20, 15, 25))
    s = size(o, mkt(price=None, price_source=None), c, cal)
    assert (s.qty, s.reason) == (37, None)
    assert (s.risk["sizing"], s.risk["qty"], s.risk["intent"]) == ("exit", 37, intent)


def test_exit_after_the_session_when_sized_then_still_passes(cal):
    s = size(exit_order(signal_ts=ist_ms(2026, 11, 21, 10)), mkt(), cfg(), cal)  # a Saturday
    assert s.qty == 37


@pytest.mark.parametrize("qty", [None, 0, -5, 2.5])
def test_exit_without_a_positive_whole_qty_when_sized_then_rejected_exit_without_qty(cal, qty):
    s = size(exit_order(qty=qty), mkt(), cfg(), cal)
    assert (s.qty, s.reason, s.rejected) == (None, REJECT_EXIT_QTY, True)
    assert repr(qty) in s.risk["detail"]


def test_exit_larger_than_what_the_strategy_holds_when_sized_then_trimmed_to_it(cal):
    # 20 held on the side the exit closes (+ entries on their way): an exit never opens a position
    s = size(exit_order(qty=37), mkt(exit_available=20), cfg(), cal)
    assert (s.qty, s.reason) == (20, None)
    assert (s.risk["caps"], s.risk["exit_requested"]) == (["position_held"], 37)


def test_exit_within_what_the_strategy_holds_when_sized_then_kept(cal):
    assert size(exit_order(qty=37), mkt(exit_available=37), cfg(), cal).qty == 37


@pytest.mark.parametrize("avail", [0, -5])
def test_exit_when_nothing_is_held_when_sized_then_rejected_exit_without_position(cal, avail):
    s = size(exit_order(qty=37), mkt(exit_available=avail), cfg(), cal)
    assert (s.qty, s.reason) == (None, REJECT_EXIT_NOTHING)


# -- reject reasons --------------------------------------------------------------------------

def test_entry_with_product_not_allowed_when_sized_then_rejected_product(cal):
    s = size(order(product="NRML"), mkt(), cfg(allowed_products=["MIS", "CNC"]), cal)
    assert (s.qty, s.reason) == (None, REJECT_PRODUCT)
    assert s.risk["detail"] == "product NRML not in MIS/CNC"
    assert size(order(product="CNC"), mkt(), cfg(allowed_products=["MIS", "CNC"]), cal).qty == 500


def test_entry_before_entry_start_when_sized_then_rejected_hours(cal):
    c = cfg(entry_hours={"start": "10:30"})
    s = size(order(signal_ts=ist_ms(2026, 11, 20, 10, 29, 59)), mkt(), c, cal)
    assert (s.qty, s.reason) == (None, REJECT_HOURS)
    assert "before entry start 10:30" in s.risk["detail"]
    assert size(order(signal_ts=ist_ms(2026, 11, 20, 10, 30)), mkt(), c, cal).qty == 500


def test_entry_at_or_after_entry_end_when_sized_then_rejected_hours(cal):
    c = cfg(entry_hours={"end": "14:00"})
    s = size(order(signal_ts=ist_ms(2026, 11, 20, 14)), mkt(), c, cal)
    assert (s.reason, "at/after entry end 14:00" in s.risk["detail"]) == (REJECT_HOURS, True)
    assert size(order(signal_ts=ist_ms(2026, 11, 20, 13, 59, 59)), mkt(), c, cal).qty == 500


@pytest.mark.parametrize("ts", [ist_ms(2026, 11, 20, 9, 14, 59), ist_ms(2026, 11, 20, 15, 30),
                                ist_ms(2026, 11, 20, 8), ist_ms(2026, 11, 20, 20)],
                         ids=["before_open", "at_close", "pre_open_hour", "evening"])
def test_entry_outside_the_session_when_sized_then_rejected_hours(cal, ts):
    s = size(order(signal_ts=ts), mkt(), cfg(), cal)
    assert (s.reason, s.risk["detail"]) == (REJECT_HOURS, "signal outside the NSE session")


def test_entry_at_the_open_when_sized_then_allowed(cal):
    assert size(order(signal_ts=ist_ms(2026, 11, 20, 9, 15)), mkt(), cfg(), cal).qty == 500


def test_entry_within_stop_before_close_min_when_sized_then_rejected_hours(cal):
    c = cfg(entry_hours={"stop_before_close_min": 15})
    s = size(order(signal_ts=ist_ms(2026, 11, 20, 15, 15)), mkt(), c, cal)
    assert (s.reason, s.risk["detail"]) == (REJECT_HOURS, "within 15 min of the close")
    assert size(order(signal_ts=ist_ms(2026, 11, 20, 15, 14, 59)), mkt(), c, cal).qty == 500


def test_entry_within_start_after_open_min_when_sized_then_rejected_hours(cal):
    c = cfg(entry_hours={"start_after_open_min": 5})
    s = size(order(signal_ts=ist_ms(2026, 11, 20, 9, 19, 59)), mkt(), c, cal)
    assert (s.reason, s.risk["detail"]) == (REJECT_HOURS, "within 5 min of the open")
    assert size(order(signal_ts=ist_ms(2026, 11, 20, 9, 20)), mkt(), c, cal).qty == 500


@pytest.mark.parametrize("ts", [ist_ms(2026, 11, 21, 10), ist_ms(2026, 11, 22, 10), ist_ms(2026, 11, 10, 10)],
                         ids=["saturday", "sunday", "diwali_balipratipada"])
def test_entry_on_weekend_or_holiday_when_sized_then_rejected_hours(cal, ts):
    s = size(order(signal_ts=ts), mkt(), cfg(), cal)
    assert (s.reason, s.risk["detail"]) == (REJECT_HOURS, "signal outside the NSE session")


def test_entry_on_weekend_when_session_rule_is_off_then_only_clock_bounds_apply(cal):
    c = cfg(entry_hours={"within_session": False, "start": "09:30", "end": "15:00"})
    assert size(order(signal_ts=ist_ms(2026, 11, 21, 10)), mkt(), c, cal).qty == 500
    assert size(order(signal_ts=ist_ms(2026, 11, 21, 9, 29)), mkt(), c, cal).reason == REJECT_HOURS


def test_entry_in_a_special_session_when_sized_then_its_own_hours_apply(cal):
    # 2025-10-21: Muhurat trading 13:45-14:45 IST (configs/sessions.yaml), otherwise closed
    assert size(order(signal_ts=ist_ms(2025, 10, 21, 14)), mkt(), cfg(), cal).qty == 500
    assert size(order(signal_ts=ist_ms(2025, 10, 21, 10)), mkt(), cfg(), cal).reason == REJECT_HOURS


def test_entry_on_an_exchange_without_calendar_when_sized_then_rejected_hours_not_raised(cal):
    s = size(order(exchange="NCDEX"), mkt(), cfg(), cal)
    assert (s.reason, s.risk["detail"]) == (REJECT_HOURS, "exchange NCDEX has no calendar")


@pytest.mark.parametrize("price", [None, 0.0, -1.0, math.nan, math.inf])
def test_entry_without_a_usable_price_when_sized_then_rejected_no_price(cal, price):
    s = size(order(order_type="MARKET", price=None), mkt(price=price, price_source=None), cfg(), cal)
    assert (s.qty, s.reason) == (None, REJECT_NO_PRICE)
    assert "entry_price" not in s.risk


@pytest.mark.parametrize(("side", "stop"), [("BUY", 100.0), ("BUY", 101.0), ("SELL", 100.0), ("SELL", 99.0)])
def test_entry_with_stop_on_the_wrong_side_when_sized_then_rejected_stop_side(cal, side, stop):
    s = size(order(side=side, stop_loss=stop), mkt(), cfg(), cal)
    assert (s.qty, s.reason, s.risk["stop_loss"]) == (None, REJECT_STOP_SIDE, stop)
    assert s.risk["detail"] == f"{side} at 100 with stop {stop:g}"


def test_entry_with_stop_so_wide_that_risk_buys_no_share_when_sized_then_rejected_stop_too_wide(cal):
    # 1000 at risk, 1500 a share
    s = size(order(price=5000.0, stop_loss=3500.0), mkt(price=5000.0), cfg(), cal)
    assert (s.qty, s.reason, s.risk["qty_risk"]) == (None, REJECT_STOP_WIDE, 0)


def test_entry_whose_risk_qty_is_below_one_lot_when_sized_then_rejected_stop_too_wide(cal):
    s = size(order(), mkt(lot_size=600), cfg(), cal)  # 500 shares affordable, lot 600
    assert (s.qty, s.reason, s.risk["qty_risk"], s.risk["lot_size"]) == (None, REJECT_STOP_WIDE, 500, 600)


def test_entry_when_notional_cap_is_below_one_lot_then_rejected_notional(cal):
    s = size(order(), mkt(lot_size=75), cfg(max_notional_per_order=5_000), cal)  # 50 shares < 75
    assert (s.qty, s.reason, s.risk["caps"]) == (None, REJECT_NOTIONAL, ["max_notional_per_order"])


def test_entry_when_instrument_is_at_max_position_qty_then_rejected_position_limit(cal):
    s = size(order(), mkt(position_qty=400, position_notional=40_000.0), cfg(max_position_qty=400), cal)
    assert (s.qty, s.reason, s.risk["caps"], s.risk["position_qty"]) == (None, REJECT_POSITION,
                                                                         ["max_position_qty"], 400)


def test_entry_when_instrument_is_over_max_position_notional_then_rejected_position_limit(cal):
    s = size(order(), mkt(position_qty=350, position_notional=35_000.0), cfg(max_position_notional=30_000), cal)
    assert (s.qty, s.reason, s.risk["caps"], s.risk["position_notional"]) == (None, REJECT_POSITION,
                                                                              ["max_position_notional"], 35_000.0)


def test_entry_when_freeze_qty_is_below_one_lot_then_rejected_position_limit(cal):
    s = size(order(), mkt(lot_size=75), cfg(freeze_qty={"INFY": 50}), cal)
    assert (s.qty, s.reason, s.risk["caps"]) == (None, REJECT_POSITION, ["freeze_qty"])


def test_order_with_unknown_intent_when_sized_then_rejected_invalid_not_passed_as_exit(cal):
    s = size(exit_order("scale_in", qty=5000), mkt(), cfg(), cal)
    assert (s.qty, s.reason) == (None, REJECT_BAD_ORDER)
    assert s.risk["detail"] == "unknown intent 'scale_in'"


def test_every_reject_reason_is_reachable_by_a_scenario(cal):
    # None of REASONS is unreachable: invalid_order was defined but never returned until size() began
    # rejecting an unknown intent with it (before, such an order was sized as an exit, skipping every limit).
    scenarios = [
        (order(product="CNC"), mkt()),
        (order(signal_ts=ist_ms(2026, 11, 21, 10)), mkt()),
        (order(), mkt(price=None)),
        (order(stop_loss=101.0), mkt()),
        (order(stop_loss=0.01), mkt(equity=1.0)),
        (order(), mkt(lot_size=75, equity=1e9)),
        (order(), mkt(position_qty=10**9)),
        (exit_order(qty=None), mkt()),
        (exit_order("bogus"), mkt()),
        (exit_order(), mkt(exit_available=0)),
    ]
    c = cfg(max_notional_per_order=5_000, max_position_qty=10**9)
    seen = {size(o, m, c, cal).reason for o, m in scenarios}
    assert seen == set(REASONS)


# -- the pieces ------------------------------------------------------------------------------

def test_order_price_when_asked_then_limit_and_sl_price_slm_trigger_market_none():
    assert order_price(order(order_type="LIMIT", price=101.5)) == 101.5
    assert order_price(order(order_type="SL", price=99.0, trigger_price=99.5)) == 99.0
    assert order_price(order(order_type="SL-M", price=None, trigger_price=98.5)) == 98.5
    assert order_price(order(order_type="MARKET", price=None)) is None


def test_entry_window_when_inside_then_none(cal):
    c = cfg(entry_hours={"start": "09:30", "end": "15:00", "stop_before_close_min": 15, "start_after_open_min": 5})
    assert entry_window_reason(order(), c, cal) is None
