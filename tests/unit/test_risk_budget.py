"""risk.budget.decide: exits always pass, every reject reason, booking within a batch, event-time windows.

Configs are small explicit dicts (a 100,000 rupee default bucket: 10% of 1,000,000 capital) and orders
are sized orders at 100 rupees a share, so every notional in an assertion is qty x 100.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest

from core.clock import IST
from risk.budget import (
    ACCOUNT,
    REASONS,
    REJECT_BUCKET,
    REJECT_DAILY_LOSS,
    REJECT_DISABLED,
    REJECT_KILL,
    REJECT_NO_NOTIONAL,
    REJECT_OPEN_POSITIONS,
    REJECT_PER_TRADE,
    REJECT_STRATEGY_CAP,
    REJECT_STRATEGY_POSITIONS,
    Book,
    decide,
    windows,
)
from risk.config import RiskBudget


def ist_ms(y: int, mo: int, d: int, h: int, mi: int = 0, s: int = 0, ms: int = 0) -> int:
    return int(datetime(y, mo, d, h, mi, s, tzinfo=IST).timestamp() * 1000) + ms


def utc_ms(y: int, mo: int, d: int, h: int, mi: int = 0, s: int = 0, ms: int = 0) -> int:
    return int(datetime(y, mo, d, h, mi, s, tzinfo=UTC).timestamp() * 1000) + ms


T10 = ist_ms(2026, 11, 20, 10)  # Friday, an NSE trading day
DAY = date(2026, 11, 20).toordinal()

BASE: dict[str, Any] = {
    "capital": 1_000_000, "risk_per_trade_pct": 1.0, "max_notional_per_order": 10_000_000,
    "max_open_positions": 10, "daily_loss_limit": 20_000, "order_caps": {},
    "buckets": {"default": {"pct": 10}},
}


def cfg(**over: Any) -> RiskBudget:
    return RiskBudget.model_validate({**BASE, **over})


def sized(qty: int = 100, strategy: str = "s1", token: int = 1, intent: str = "entry", ts: int = T10,
          entry_price: float | None = 100.0, **over: Any) -> dict[str, Any]:
    """A sized order as the manager publishes it: qty set, ``risk.entry_price`` priced at 100."""
    o: dict[str, Any] = {
        "order_id": f"{strategy}-{token}-{intent}-{ts}", "strategy": strategy, "instrument_token": token,
        "symbol": "INFY", "exchange": "NSE", "side": "BUY" if intent == "entry" else "SELL",
        "order_type": "MARKET", "product": "MIS", "price": None, "trigger_price": None, "stop_loss": None,
        "qty": qty, "tf": "1m", "signal_ts": ts, "created_ts": ts,
        "extra": {"intent": intent, "reason": "test"},
        "risk": {} if entry_price is None else {"entry_price": entry_price},
    }
    o.update(over)
    return o


def hostile_book() -> Book:
    """Kill switch on, the day's loss past the limit, the bucket full, every window's count high."""
    book = Book(kill=True, kill_reason="ops", used_by_strategy={"s1": 1_000_000.0},
                open_keys={("s1", 1)}, day_pnl={DAY: -1_000_000.0})
    for w, k in windows(T10):
        book.counts[(ACCOUNT, w, k)] = 10**6
        book.counts[("s1", w, k)] = 10**6
    return book


# -- exits -----------------------------------------------------------------------------------

@pytest.mark.parametrize("intent", ["exit", "square_off", "flatten"])
def test_exit_when_kill_switch_loss_limit_bucket_and_caps_all_hit_then_allowed(intent):
    c = cfg(order_caps={"per_second": 1, "per_minute": 1, "per_day": 1},
            strategies={"s1": {"enabled": False, "max_notional": 1, "max_open_positions": 0}},
            max_open_positions=0, buckets={"default": {"pct": 10, "per_trade_pct": 1}})
    book = hostile_book()
    v = decide(sized(qty=5000, intent=intent), book, c)
    assert (v.allowed, v.reason) == (True, None)
    assert (v.budget["decision"], v.budget["exit"], v.budget["notional"]) == ("allowed", True, 500_000.0)
    assert book.used_by_strategy == {"s1": 1_000_000.0}  # an exit books no budget


def test_exit_when_allowed_then_counts_toward_the_order_caps():
    c = cfg(order_caps={"per_second": 1})
    book = Book()
    assert decide(sized(intent="exit"), book, c).allowed
    v = decide(sized(token=2), book, c)  # the same second: the exit used the one order Kite allows
    assert (v.allowed, v.reason) == (False, "order_cap_account_second")


# -- reject reasons --------------------------------------------------------------------------

def test_entry_when_kill_switch_on_then_rejected_kill_switch():
    v = decide(sized(), Book(kill=True, kill_reason="ops halt"), cfg())
    assert (v.allowed, v.reason) == (False, REJECT_KILL)
    assert v.budget["detail"] == "kill switch on: ops halt" and v.budget["decision"] == "rejected"
    assert decide(sized(), Book(kill=True), cfg()).budget["detail"] == "kill switch on: no reason given"


def test_entry_of_disabled_strategy_then_rejected_strategy_disabled():
    c = cfg(strategies={"s1": {"enabled": False}})
    assert decide(sized(), Book(), c).reason == REJECT_DISABLED
    assert decide(sized(strategy="s2"), Book(), c).allowed


def test_entry_when_day_loss_reaches_limit_then_rejected_daily_loss_limit():
    c = cfg(daily_loss_limit=20_000)
    v = decide(sized(), Book(day_pnl={DAY: -20_000.0}), c)
    assert (v.reason, v.budget["detail"]) == (REJECT_DAILY_LOSS, "day PnL -20000.00 <= -20000")
    assert decide(sized(), Book(day_pnl={DAY: -19_999.99}), c).allowed


def test_entry_when_yesterday_lost_past_the_limit_then_today_is_not_halted():
    book = Book(day_pnl={DAY - 1: -50_000.0})
    v = decide(sized(), book, cfg())
    assert v.allowed and v.budget["day_pnl"] == 0.0


@pytest.mark.parametrize("scope", ["account", "strategy"])
@pytest.mark.parametrize(("window", "stamps", "next_window"), [
    # two orders in the window, then a third in it (rejected), then one in the next window (allowed)
    ("second", [T10, T10 + 400, T10 + 999], T10 + 1000),
    ("minute", [T10, T10 + 20_000, T10 + 59_999], T10 + 60_000),
    ("day", [T10, ist_ms(2026, 11, 20, 12), ist_ms(2026, 11, 20, 23, 59, 59, 999)], ist_ms(2026, 11, 21, 0)),
])
def test_entry_when_order_cap_of_window_reached_then_rejected_order_cap(scope, window, stamps, next_window):
    caps = {f"per_{window}": 2}
    c = cfg(order_caps=caps) if scope == "account" else cfg(strategies={"s1": {"order_caps": caps}})
    book = Book()
    got = [decide(sized(token=i, ts=ts), book, c) for i, ts in enumerate(stamps)]
    assert [v.allowed for v in got] == [True, True, False]
    assert got[2].reason == f"order_cap_{scope}_{window}"
    assert decide(sized(token=9, ts=next_window), book, c).allowed
    other = decide(sized(strategy="s2", token=10, ts=stamps[0]), book, c)
    assert other.allowed is (scope == "strategy")  # a strategy's cap binds only that strategy


def test_entry_when_strategy_order_caps_default_applies_then_each_strategy_has_its_own_count():
    c = cfg(strategy_order_caps={"per_second": 1})
    book = Book()
    assert decide(sized(strategy="a", token=1), book, c).allowed
    assert decide(sized(strategy="a", token=2), book, c).reason == "order_cap_strategy_second"
    assert decide(sized(strategy="b", token=3), book, c).allowed


def test_entry_when_max_open_positions_reached_then_rejected_max_open_positions():
    c = cfg(max_open_positions=2)
    book = Book(open_keys={("s1", 1), ("s2", 2)})
    v = decide(sized(token=3), book, c)
    assert (v.reason, v.budget["detail"]) == (REJECT_OPEN_POSITIONS, "2 open >= 2")


def test_entry_on_an_already_open_key_when_positions_full_then_not_a_new_position():
    c = cfg(max_open_positions=2, strategies={"s1": {"max_open_positions": 1}})
    book = Book(open_keys={("s1", 1), ("s2", 2)})
    v = decide(sized(token=1), book, c)  # adds to s1's position on token 1
    assert v.allowed
    assert book.open_keys == {("s1", 1), ("s2", 2)} and book.open_count() == 2


def test_entry_when_strategy_open_positions_reached_then_rejected_strategy_max_open_positions():
    c = cfg(strategies={"s1": {"max_open_positions": 1}})
    book = Book(open_keys={("s1", 1)})
    v = decide(sized(token=2), book, c)
    assert (v.reason, v.budget["detail"]) == (REJECT_STRATEGY_POSITIONS, "s1: 1 open >= 1")
    assert decide(sized(strategy="s2", token=2), book, c).allowed


def test_entry_above_bucket_per_trade_pct_then_rejected_per_trade_cap():
    c = cfg(buckets={"default": {"pct": 10, "per_trade_pct": 20}})  # 20% of 100,000 = 20,000 per order
    v = decide(sized(qty=201), Book(), c)
    assert (v.reason, v.budget["notional"]) == (REJECT_PER_TRADE, 20_100.0)
    assert decide(sized(qty=200), Book(), c).allowed  # exactly 20,000


def test_entry_when_bucket_exhausted_then_rejected_budget():
    c = cfg()  # default bucket: 100,000
    book = Book(used_by_strategy={"s1": 60_000.0, "s2": 30_000.0})  # both draw on default
    v = decide(sized(qty=101), book, c)
    assert (v.allowed, v.reason) == (False, REJECT_BUCKET)
    assert (v.budget["bucket"], v.budget["bucket_budget"], v.budget["bucket_used"]) == ("default", 100_000.0, 90_000.0)
    assert v.budget["detail"] == "bucket default: used 90000.00 + 10100.00 > 100000.00"
    assert decide(sized(qty=100), book, c).allowed  # exactly fills it


def test_entry_when_another_bucket_is_full_then_own_bucket_still_has_room():
    c = cfg(buckets={"default": {"pct": 10}, "trend": {"pct": 20, "strategies": ["trend_*"]}})
    book = Book(used_by_strategy={"trend_fast": 200_000.0})
    assert decide(sized(strategy="trend_slow"), book, c).reason == REJECT_BUCKET
    v = decide(sized(strategy="s1"), book, c)
    assert v.allowed and v.budget["bucket_used"] == 0.0


def test_entry_above_strategy_max_notional_then_rejected_strategy_cap():
    c = cfg(strategies={"s1": {"max_notional": 15_000}})
    book = Book(used_by_strategy={"s1": 10_000.0})
    v = decide(sized(qty=51), book, c)
    assert (v.reason, v.budget["detail"]) == (REJECT_STRATEGY_CAP, "s1: used 10000.00 + 5100.00 > 15000")
    assert decide(sized(qty=50), book, c).allowed


def test_entry_without_any_price_then_rejected_no_entry_price():
    v = decide(sized(entry_price=None), Book(), cfg())
    assert (v.reason, v.budget["notional"]) == (REJECT_NO_NOTIONAL, None)


def test_entry_without_sized_price_when_order_or_ref_price_known_then_priced_by_them():
    by_price = decide(sized(entry_price=None, order_type="LIMIT", price=90.0), Book(), cfg())
    assert (by_price.allowed, by_price.budget["notional"]) == (True, 9_000.0)
    by_ref = sized(entry_price=None)
    by_ref["extra"]["ref_price"] = 80.0
    assert decide(by_ref, Book(), cfg()).budget["notional"] == 8_000.0


def test_every_reject_reason_has_a_scenario():
    full = Book()
    for w, k in windows(T10):
        full.counts[(ACCOUNT, w, k)] = 1
        full.counts[("s1", w, k)] = 1
    scenarios = [
        (sized(), Book(kill=True), cfg()),
        (sized(), Book(), cfg(strategies={"s1": {"enabled": False}})),
        (sized(), Book(day_pnl={DAY: -20_000.0}), cfg()),
        *((sized(), full, cfg(order_caps={f"per_{w}": 1})) for w in ("second", "minute", "day")),
        *((sized(), full, cfg(strategies={"s1": {"order_caps": {f"per_{w}": 1}}}))
          for w in ("second", "minute", "day")),
        (sized(), Book(open_keys={("x", 9)}), cfg(max_open_positions=1)),
        (sized(), Book(open_keys={("s1", 9)}), cfg(strategies={"s1": {"max_open_positions": 1}})),
        (sized(qty=1000), Book(), cfg(buckets={"default": {"pct": 10, "per_trade_pct": 50}})),
        (sized(qty=1001), Book(), cfg()),
        (sized(), Book(), cfg(strategies={"s1": {"max_notional": 1}})),
        (sized(entry_price=None), Book(), cfg()),
    ]
    seen = [decide(o, b, c).reason for o, b, c in scenarios]
    assert sorted(seen) == sorted(REASONS)


# -- booking within a batch ------------------------------------------------------------------

def test_allowed_entry_when_booked_then_next_entry_of_batch_sees_it():
    book = Book()
    c = cfg()
    first = decide(sized(qty=600, token=1), book, c)
    assert first.allowed and first.budget["bucket_used_after"] == 60_000.0
    assert book.used_by_strategy == {"s1": 60_000.0} and book.pending_by_strategy == {"s1": 60_000.0}
    assert book.open_keys == {("s1", 1)}
    assert book.counts[(ACCOUNT, "second", T10 // 1000)] == 1 and book.counts[("s1", "day", DAY)] == 1
    second = decide(sized(qty=500, token=2), book, c)
    assert (second.reason, second.budget["bucket_used"]) == (REJECT_BUCKET, 60_000.0)
    third = decide(sized(qty=400, token=3), book, c)
    assert third.allowed and third.budget["bucket_used_after"] == 100_000.0


def test_rejected_entry_when_decided_then_books_nothing():
    book = Book(used_by_strategy={"s1": 95_000.0})
    assert decide(sized(qty=100, token=2), book, cfg()).reason == REJECT_BUCKET
    assert book.used_by_strategy == {"s1": 95_000.0} and book.pending_by_strategy == {}
    assert book.open_keys == set() and sum(book.counts.values()) == 0


# -- event-time windows ----------------------------------------------------------------------

def test_windows_when_asked_then_epoch_second_epoch_minute_and_ist_day():
    ts = ist_ms(2026, 11, 20, 10, 0, 7, 250)
    assert windows(ts) == (("second", ts // 1000), ("minute", ts // 60_000), ("day", DAY))


def test_ist_day_when_utc_crosses_1830_then_day_changes():
    assert windows(utc_ms(2026, 11, 20, 18, 29, 59, 999))[2][1] == DAY  # 23:59:59.999 IST
    assert windows(utc_ms(2026, 11, 20, 18, 30))[2][1] == DAY + 1       # 00:00 IST on the 21st


def test_two_entries_one_ist_day_apart_when_day_cap_is_one_then_both_allowed():
    c = cfg(order_caps={"per_day": 1})
    book = Book()
    assert decide(sized(token=1, ts=T10), book, c).allowed
    assert decide(sized(token=2, ts=ist_ms(2026, 11, 23, 10)), book, c).allowed  # Monday
    assert decide(sized(token=3, ts=ist_ms(2026, 11, 23, 11)), book, c).reason == "order_cap_account_day"


def test_entries_either_side_of_1830_utc_when_day_cap_is_one_then_different_days():
    c = cfg(order_caps={"per_day": 1})
    book = Book()
    assert decide(sized(token=1, ts=utc_ms(2026, 11, 20, 18, 29, 59)), book, c).allowed
    assert decide(sized(token=2, ts=utc_ms(2026, 11, 20, 18, 30)), book, c).allowed


def test_entries_either_side_of_utc_midnight_when_day_cap_is_one_then_same_ist_day():
    c = cfg(order_caps={"per_day": 1})
    book = Book()
    # 04:30 and 06:30 IST on the 21st: one IST day though two UTC dates
    assert decide(sized(token=1, ts=utc_ms(2026, 11, 20, 23)), book, c).allowed
    assert decide(sized(token=2, ts=utc_ms(2026, 11, 21, 1)), book, c).reason == "order_cap_account_day"


def test_day_pnl_when_read_then_keyed_by_the_signal_ist_day_not_utc():
    book = Book(day_pnl={DAY + 1: -30_000.0})
    # 18:30 UTC on the 20th is already the 21st in IST: halted; 18:29 UTC is still the 20th
    assert decide(sized(ts=utc_ms(2026, 11, 20, 18, 30)), book, cfg()).reason == REJECT_DAILY_LOSS
    assert decide(sized(token=2, ts=utc_ms(2026, 11, 20, 18, 29)), book, cfg()).allowed


# -- buckets ---------------------------------------------------------------------------------

def test_bucket_of_when_exact_and_pattern_both_match_then_exact_wins_else_first_pattern_else_default():
    c = cfg(buckets={"wide": {"pct": 10, "strategies": ["t*"]}, "trend": {"pct": 10, "strategies": ["trend_*"]},
                     "special": {"pct": 10, "strategies": ["trend_special"]}, "default": {"pct": 10}})
    assert c.bucket_of("trend_special") == "special"  # exact, though two patterns listed before match
    assert c.bucket_of("trend_fast") == "wide"        # first matching pattern in file order
    assert c.bucket_of("orb_5m") == "default"
    assert c.bucket_of("Trend_fast") == "default"     # case-sensitive
    assert c.bucket_budget("special") == 100_000.0


def test_entry_of_strategy_in_named_bucket_when_decided_then_drawn_from_it():
    c = cfg(buckets={"default": {"pct": 10}, "trend": {"pct": 30, "strategies": ["trend_*"]}})
    v = decide(sized(strategy="trend_fast", qty=2000), Book(), c)
    assert v.allowed and (v.budget["bucket"], v.budget["bucket_budget"]) == ("trend", 300_000.0)
