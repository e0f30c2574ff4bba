"""risk.exposure and the books 13_risk.sql keeps by trigger, on a real Postgres, driven through the OMS.

What the budget guard reads must follow every write whichever stage made it: an allowed entry
holds budget (risk_pending), its fills move it into the position (positions), an exit fill
releases it, a cancel or rejection releases the unfilled part; order counts follow the allowed
decisions per second/minute/IST day of signal_ts; the day's PnL is realised from fills plus the open
rest marked to the latest 1 s bar at the signal.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time as dtime
from typing import Any

import psycopg
import pytest

from core.clock import IST
from execution.oms import OmsTx, Status
from risk import exposure
from risk.budget import ACCOUNT, decide
from risk.config import RiskBudget

pytestmark = pytest.mark.integration

S = Status
DAY = date(2026, 11, 20)
TOK = 738561


def ts(hh: int, mm: int, ss: int = 0, day: date = DAY) -> int:
    return int(datetime.combine(day, dtime(hh, mm, ss), IST).timestamp() * 1000)


def entry(oid: str, qty: int = 10, price: float = 1000.0, strategy: str = "mac", signal_ts: int | None = None,
          side: str = "BUY", intent: str = "entry") -> dict[str, Any]:
    t = signal_ts or ts(10, 0)
    return {"order_id": oid, "strategy": strategy, "instrument_token": TOK, "symbol": "RELIANCE", "exchange": "NSE",
            "side": side, "order_type": "MARKET", "product": "MIS", "price": None, "trigger_price": None,
            "stop_loss": None, "qty": qty, "tf": "1m", "signal_ts": t, "created_ts": t,
            "risk": {"entry_price": price}, "extra": {"intent": intent, "ref_price": price}}


def fill(fid: str, oid: str, qty: int, price: float, side: str = "BUY", strategy: str = "mac",
         at: int | None = None) -> dict[str, Any]:
    return {"fill_id": fid, "order_id": oid, "broker_order_id": "1", "instrument_token": TOK, "side": side,
            "qty": qty, "price": price, "ts": at or ts(10, 1), "venue": "paper", "strategy": strategy}


def run(dsn: str, fn) -> Any:  # type: ignore[no-untyped-def]
    with psycopg.connect(dsn) as conn, conn.transaction():
        tx = OmsTx(conn, "test", ts(10, 0))
        out = fn(tx)
        tx.finish()
    return out


def book(dsn: str, orders: list[dict[str, Any]] | None = None):  # type: ignore[no-untyped-def]
    with psycopg.connect(dsn) as conn:
        return exposure.load_book(conn, orders or [entry("probe", signal_ts=ts(10, 5))])


def allow(tx: OmsTx, o: dict[str, Any]) -> None:
    tx.ensure([o], S.SIZED)
    tx.transition(o["order_id"], S.ALLOWED, fields={"budget": {"decision": "allowed"}})


def test_allowed_entry_holds_budget_until_filled_then_the_position_holds_it(fresh_pg_dsn: str) -> None:
    dsn = fresh_pg_dsn
    run(dsn, lambda tx: tx.ensure([entry("e1")], S.SIZED))
    with psycopg.connect(dsn) as conn:  # SIZED counts for the manager's instrument limits, not the guard's
        assert exposure.instrument_exposure(conn, [TOK]) == {TOK: (10, 10_000.0)}
    assert book(dsn).used_by_strategy == {}
    run(dsn, lambda tx: (tx.load(["e1"]), tx.transition("e1", S.ALLOWED, fields={"budget": {"decision": "allowed"}})))
    b = book(dsn)
    assert b.used_by_strategy == {"mac": 10_000.0} and b.pending_by_strategy == {"mac": 10_000.0}
    assert b.open_keys == {("mac", TOK)}
    run(dsn, lambda tx: (tx.load(["e1"]), tx.fill(fill("f1", "e1", 4, 1001.0))))
    b = book(dsn)  # 6 pending at 1000 + 4 held at 1001
    assert b.pending_by_strategy["mac"] == pytest.approx(6_000.0)
    assert b.used_by_strategy["mac"] == pytest.approx(6_000.0 + 4 * 1001.0)
    run(dsn, lambda tx: (tx.load(["e1"]), tx.fill(fill("f2", "e1", 6, 1002.0))))
    b = book(dsn)
    assert b.pending_by_strategy.get("mac", 0.0) == pytest.approx(0.0)
    assert b.used_by_strategy["mac"] == pytest.approx(4 * 1001.0 + 6 * 1002.0)
    with psycopg.connect(dsn) as conn:
        assert exposure.open_positions(conn) == {("mac", TOK): (10, pytest.approx(1001.6))}


def test_exit_fill_releases_the_position_and_cancel_releases_the_unfilled_part(fresh_pg_dsn: str) -> None:
    dsn = fresh_pg_dsn
    run(dsn, lambda tx: allow(tx, entry("e1")))
    run(dsn, lambda tx: (tx.load(["e1"]), tx.fill(fill("f1", "e1", 10, 1000.0))))
    x = entry("x1", side="SELL", intent="exit")
    run(dsn, lambda tx: (allow(tx, x), tx.fill(fill("f2", "x1", 10, 1010.0, side="SELL"))))
    b = book(dsn)
    assert b.used_by_strategy.get("mac", 0.0) == 0.0 and not b.open_keys
    run(dsn, lambda tx: allow(tx, entry("e2", qty=8)))
    run(dsn, lambda tx: (tx.load(["e2"]), tx.fill(fill("f3", "e2", 3, 1000.0))))
    run(dsn, lambda tx: (tx.load(["e2"]), tx.transition("e2", S.CANCEL_REQUESTED), tx.transition("e2", S.CANCELLED)))
    b = book(dsn)  # the cancelled 5 are released; the 3 filled are a position
    assert b.pending_by_strategy.get("mac", 0.0) == pytest.approx(0.0)
    assert b.used_by_strategy["mac"] == pytest.approx(3_000.0)
    run(dsn, lambda tx: allow(tx, entry("e3", qty=5)))
    run(dsn, lambda tx: (tx.load(["e3"]), tx.transition("e3", S.REJECTED, "broker: RMS")))
    assert book(dsn).pending_by_strategy.get("mac", 0.0) == pytest.approx(0.0)


def test_order_counts_follow_allowed_decisions_per_window_of_signal_time(fresh_pg_dsn: str) -> None:
    dsn = fresh_pg_dsn
    a = entry("a", signal_ts=ts(10, 0, 1) + 500)
    b_ = entry("b", signal_ts=ts(10, 0, 1) + 900, strategy="rsi")
    c = entry("c", signal_ts=ts(10, 0, 2))
    nxt = entry("d", signal_ts=ts(10, 0, 1, day=date(2026, 11, 23)))  # the next trading day
    run(dsn, lambda tx: [allow(tx, o) for o in (a, b_, c, nxt)])
    run(dsn, lambda tx: (tx.ensure([entry("r")], S.SIZED), tx.transition("r", S.REJECTED_BUDGET)))
    with psycopg.connect(dsn) as conn:
        counts = exposure.order_counts(conn, [ts(10, 0, 1)])
    sec = ts(10, 0, 1) // 1000
    assert counts[(ACCOUNT, "second", sec)] == 2 and counts[("mac", "second", sec)] == 1
    assert counts[(ACCOUNT, "minute", sec // 60)] == 3
    assert counts[(ACCOUNT, "day", DAY.toordinal())] == 3  # the IST day key is Python's date ordinal
    assert ("rsi", "day", DAY.toordinal()) in counts and counts[("rsi", "day", DAY.toordinal())] == 1


def test_the_ist_day_key_holds_before_0530_ist_when_the_utc_date_is_the_day_before(fresh_pg_dsn: str) -> None:
    early = ts(3, 0)  # 03:00 IST on DAY = 21:30 UTC the day before
    run(fresh_pg_dsn, lambda tx: allow(tx, entry("early", signal_ts=early)))
    with psycopg.connect(fresh_pg_dsn) as conn:
        counts = exposure.order_counts(conn, [early])
    assert counts[(ACCOUNT, "day", DAY.toordinal())] == 1
    assert (ACCOUNT, "day", DAY.toordinal() - 1) not in counts


def test_day_pnl_realised_plus_open_marked_to_the_latest_1s_bar_and_the_guard_halts_entries(
        fresh_pg_dsn: str) -> None:
    dsn = fresh_pg_dsn
    run(dsn, lambda tx: allow(tx, entry("e1", qty=100)))
    run(dsn, lambda tx: (tx.load(["e1"]), tx.fill(fill("f1", "e1", 100, 1000.0, at=ts(10, 1)))))
    x = entry("x1", qty=40, side="SELL", intent="exit")
    run(dsn, lambda tx: (allow(tx, x), tx.fill(fill("f2", "x1", 40, 990.0, side="SELL", at=ts(10, 2)))))
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO bars_1s (instrument_token, ts, open, high, low, close, volume, ticks) VALUES "
                     "(%s, %s, 950, 950, 950, 950, 1, 1), (%s, %s, 900, 900, 900, 900, 1, 1)",
                     (TOK, datetime.fromtimestamp(ts(10, 3) / 1000, UTC), TOK,
                      datetime.fromtimestamp(ts(11, 0) / 1000, UTC)))
        conn.commit()
        # realised 40 x (990 - 1000) = -400; open 60 marked at 950 (the bar at or before 10:04) = -3000
        assert exposure.day_pnl(conn, DAY.toordinal(), ts(10, 4)) == pytest.approx(-3400.0)
        assert exposure.day_pnl(conn, DAY.toordinal() + 3, ts(10, 4)) == 0.0  # another day: nothing
    cfg = RiskBudget.model_validate({"capital": 1e7, "risk_per_trade_pct": 1, "max_notional_per_order": 1e6,
                                     "max_open_positions": 10, "daily_loss_limit": 3000,
                                     "buckets": {"default": {"pct": 100}}})
    probe = entry("p1", strategy="other", signal_ts=ts(10, 4))
    b = book(dsn, [probe])
    assert decide(probe, b, cfg).reason == "daily_loss_limit"
    assert decide({**probe, "order_id": "p2", "extra": {"intent": "exit"}}, b, cfg).allowed


def test_exit_room_is_the_filled_position_less_exits_already_on_their_way(fresh_pg_dsn: str) -> None:
    dsn = fresh_pg_dsn
    run(dsn, lambda tx: allow(tx, entry("e1", qty=10)))
    run(dsn, lambda tx: (tx.load(["e1"]), tx.fill(fill("f1", "e1", 10, 1000.0))))
    run(dsn, lambda tx: allow(tx, entry("x1", qty=6, side="SELL", intent="exit")))  # working, unfilled
    run(dsn, lambda tx: allow(tx, entry("e2", qty=5)))  # an unfilled entry is nothing an exit may close
    with psycopg.connect(dsn) as conn:
        _c, _h, room = exposure.sizing_reads(conn, [], None, [], [("mac", TOK, "SELL"), ("mac", TOK, "BUY"),
                                                                 ("rsi", TOK, "SELL")])
    assert room == {("mac", TOK, "SELL"): (10, 6), ("mac", TOK, "BUY"): (10, 0), ("rsi", TOK, "SELL"): (0, 0)}
    run(dsn, lambda tx: (tx.load(["x1"]), tx.fill(fill("f2", "x1", 6, 1001.0, side="SELL"))))
    with psycopg.connect(dsn) as conn:
        _c, _h, room = exposure.sizing_reads(conn, [], None, [], [("mac", TOK, "SELL")])
    assert room == {("mac", TOK, "SELL"): (4, 0)}  # the exit filled: the position is 4, nothing on the way
