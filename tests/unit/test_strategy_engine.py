"""The decision engine, as scenarios: bars (and fills) in, the exact Orders out.

Calendar: the shipped configs/sessions.yaml (NSE 09:15-15:30 IST; 2026-11-24 is a holiday).
Prices are chosen so crosses, RSI levels and stops land on known bars.
"""

from __future__ import annotations

from datetime import date, datetime, time

import pytest

from compute.bars import Bar
from core.clock import IST
from core.sessions import load_calendar
from strategy.api import InstrumentInfo
from strategy.engine import DecisionEngine, EnsembleSpec, StrategySpec, order_id_for
from strategy.ensemble_engine import Ensemble, EnsembleConfig
from strategy.strategies import STRATEGIES

TOKEN = 408065
INFY = InstrumentInfo(TOKEN, "INFY", "NSE", 0.05, 1)
DAY = date(2026, 11, 20)  # a Friday, a regular session
HOLIDAY = date(2026, 11, 24)
MIN = 60_000


def ist_ms(day: date, hh: int, mm: int) -> int:
    return int(datetime.combine(day, time(hh, mm), IST).timestamp() * 1000)


def bars(closes: list[float], start: int, spread: float = 0.5, tf: str = "1m") -> list[Bar]:
    step = {"1m": MIN, "5m": 5 * MIN}[tf]
    return [Bar(TOKEN, tf, start + i * step, c, c + spread, c - spread, c, 100, 5) for i, c in enumerate(closes)]


def engine(strategy: str, tf: str = "1m", product: str = "MIS", **params: object) -> DecisionEngine:
    cls = STRATEGIES[strategy]
    spec = StrategySpec(strategy, cls, cls.Params(**params), tf, frozenset({TOKEN}), product)
    return DecisionEngine([spec], {TOKEN: INFY}, load_calendar())


def run(eng: DecisionEngine, bs: list[Bar], tf: str = "1m") -> list[tuple[int, dict]]:
    """(bar index, order) for every order, in order."""
    return [(i, o) for i, b in enumerate(bs) for o in eng.on_bar(b, tf)]


# closes for sma 2/3: bar 4 is an up-cross (fast 10.5 > slow 10.33 after 9.5 < 9.67)
UP = [10.0, 10.0, 10.0, 9.0, 12.0]
MA = {"fast": 2, "slow": 3, "kind": "sma", "atr_period": 2, "atr_mult": 2.0}


def test_up_cross_enters_long_with_an_atr_stop_and_a_deterministic_id():
    eng = engine("ma_crossover", **MA)
    bs = bars(UP, ist_ms(DAY, 10, 0))
    out = run(eng, bs)
    assert [i for i, _ in out] == [4]
    o = out[0][1]
    ts = bs[4].ts + MIN
    assert o["side"] == "BUY" and o["qty"] is None and o["order_type"] == "MARKET" and o["product"] == "MIS"
    assert o["signal_ts"] == ts == o["created_ts"] and o["tf"] == "1m" and o["symbol"] == "INFY"
    assert o["order_id"] == order_id_for("ma_crossover", TOKEN, "1m", "BUY", "entry", ts)
    # TA-Lib ATR(2): true ranges from bar 1: 1, 1, 1.5 (low 8.5 vs close 10), 3.5 (high 12.5 vs close 9);
    # seed mean(1, 1) = 1 on bar 2, then Wilder: (1 + 1.5)/2 = 1.25, (1.25 + 3.5)/2 = 2.375
    assert o["stop_loss"] == pytest.approx(12.0 - 2.0 * 2.375)
    assert o["extra"]["intent"] == "entry" and o["extra"]["reason"] == "up-cross"


def test_touching_is_not_crossing():
    eng = engine("ma_crossover", **MA)
    # fast == slow on the last bar (no strict cross): 10,10,10,9.5 then closes that leave fast == slow
    out = run(eng, bars([10.0, 10.0, 10.0, 10.0, 10.0, 10.0], ist_ms(DAY, 10, 0)))
    assert out == []


def test_down_cross_only_exits_without_allow_short_and_exits_the_filled_qty():
    eng = engine("ma_crossover", **MA)
    bs = bars(UP + [12.0, 9.0, 8.0], ist_ms(DAY, 10, 0))
    out = run(eng, bs[:5])
    entry = out[0][1]
    eng.on_fill("ma_crossover", TOKEN, "BUY", 7, 12.0, entry["order_id"])
    later = run(eng, bs[5:])
    assert [(o["side"], o["qty"], o["extra"]["intent"]) for _, o in later] == [("SELL", 7, "exit")]
    assert later[0][1]["extra"]["reason"] == "down-cross"
    assert eng.positions[("ma_crossover", TOKEN)].direction == 0


def test_with_allow_short_a_cross_reverses_exit_first_then_entry():
    eng = engine("ma_crossover", allow_short=True, **MA)
    bs = bars(UP + [12.0, 9.0], ist_ms(DAY, 10, 0))
    entry = run(eng, bs[:5])[0][1]
    eng.on_fill("ma_crossover", TOKEN, "BUY", 3, 12.0, entry["order_id"])
    out = run(eng, bs[5:])
    assert [(o["side"], o["qty"], o["extra"]["intent"]) for _, o in out] == [("SELL", 3, "exit"),
                                                                               ("SELL", None, "entry")]
    assert out[0][1]["order_id"] != out[1][1]["order_id"]
    assert out[1][1]["stop_loss"] > 9.0  # a short's stop is above the price
    assert eng.positions[("ma_crossover", TOKEN)].direction == -1


def test_exit_before_the_entry_filled_emits_nothing_then_flattens_the_late_fill():
    eng = engine("ma_crossover", **MA)
    bs = bars(UP + [12.0, 9.0, 9.0, 9.0], ist_ms(DAY, 10, 0))
    entry = run(eng, bs[:5])[0][1]
    assert run(eng, bs[5:7]) == []  # the down-cross: nothing filled, nothing to sell
    eng.on_fill("ma_crossover", TOKEN, "BUY", 4, 12.0, entry["order_id"])
    out = run(eng, bs[7:])
    assert [(o["side"], o["qty"], o["extra"]["intent"]) for _, o in out] == [("SELL", 4, "flatten")]


def test_a_pending_exit_is_not_repeated_on_the_next_bars():
    eng = engine("ma_crossover", **MA)
    bs = bars(UP + [12.0, 9.0, 9.0, 9.0, 9.0], ist_ms(DAY, 10, 0))
    entry = run(eng, bs[:5])[0][1]
    eng.on_fill("ma_crossover", TOKEN, "BUY", 5, 12.0, entry["order_id"])
    out = run(eng, bs[5:])
    assert [o["extra"]["intent"] for _, o in out] == ["exit"]
    eng.on_fill("ma_crossover", TOKEN, "SELL", 5, 9.0, out[0][1]["order_id"])
    assert eng.positions[("ma_crossover", TOKEN)].qty == 0


def test_use_stop_exits_when_a_bar_touches_the_stop_and_not_otherwise():
    closes = UP + [12.0, 12.0]
    for use_stop, want in ((True, [("SELL", 2, "exit", "stop")]), (False, [])):
        eng = engine("ma_crossover", use_stop=use_stop, **MA)
        bs = bars(closes, ist_ms(DAY, 10, 0))
        entry = run(eng, bs[:5])[0][1]
        eng.on_fill("ma_crossover", TOKEN, "BUY", 2, 12.0, entry["order_id"])
        stop = entry["stop_loss"]
        # bar 6 keeps the MAs apart (no cross) but trades down to the stop
        bs[6] = Bar(TOKEN, "1m", bs[6].ts, 12.0, 12.5, stop, 12.0, 100, 5)
        out = run(eng, bs[5:])
        assert [(o["side"], o["qty"], o["extra"]["intent"], o["extra"]["reason"]) for _, o in out] == want


def test_mis_square_off_at_15_15_exits_and_blocks_entries_after_it():
    eng = engine("ma_crossover", **MA)
    start = ist_ms(DAY, 15, 9)  # bars 15:09..15:13 decide 15:10..15:14; bar 15:14 decides at 15:15
    bs = bars(UP + [12.0, 12.0], start)
    entry = run(eng, bs[:5])[0][1]
    assert entry["signal_ts"] == ist_ms(DAY, 15, 14)
    eng.on_fill("ma_crossover", TOKEN, "BUY", 6, 12.0, entry["order_id"])
    out = run(eng, bs[5:])
    assert [(i, o["side"], o["qty"], o["extra"]["intent"]) for i, o in out] == [(0, "SELL", 6, "square_off")]
    assert out[0][1]["signal_ts"] == ist_ms(DAY, 15, 15)
    # an up-cross after the square-off enters nothing
    eng2 = engine("ma_crossover", **MA)
    assert run(eng2, bars(UP, ist_ms(DAY, 15, 11))) == []


def test_cnc_is_not_squared_off_but_still_enters_only_in_session():
    eng = engine("ma_crossover", product="CNC", **MA)
    bs = bars(UP + [12.0, 12.0], ist_ms(DAY, 15, 9))
    out = run(eng, bs)
    assert [(o["side"], o["product"], o["extra"]["intent"]) for _, o in out] == [("BUY", "CNC", "entry")]


@pytest.mark.parametrize("start", [ist_ms(DAY, 8, 0), ist_ms(DAY, 15, 40), ist_ms(HOLIDAY, 10, 0),
                                   ist_ms(date(2026, 11, 21), 10, 0)], ids=["pre-open", "after-close", "holiday",
                                                                           "saturday"])
def test_no_entry_outside_the_session(start):
    eng = engine("ma_crossover", product="CNC", **MA)
    assert run(eng, bars(UP, start)) == []
    assert eng.counts["signals"] == 1  # the strategy saw the cross; the session rule stopped it


def test_an_entry_the_risk_manager_rejects_gives_the_strategy_its_flat_position_back():
    eng = engine("rsi_reversion", period=2, atr_period=2, oversold=30, exit_level=50, overbought=70)
    # TA-Lib RSI(2): 66.7 on bar 2, 22.2 on bar 3 (oversold), 11.8 on bar 4
    bs = bars([10.0, 11.0, 10.5, 9.0, 8.0], ist_ms(DAY, 10, 0))
    out = run(eng, bs[:4])
    assert [(i, o["side"]) for i, o in out] == [(3, "BUY")]
    eng.on_order_update(out[0][1]["order_id"], "REJECTED_RISK")
    again = run(eng, bs[4:])  # still oversold, flat again: a new entry
    assert [(o["side"], o["extra"]["intent"]) for _, o in again] == [("BUY", "entry")]
    assert again[0][1]["order_id"] != out[0][1]["order_id"]


def test_rsi_reversion_enters_when_oversold_and_exits_at_the_middle():
    eng = engine("rsi_reversion", period=2, atr_period=2, use_stop=False)
    # TA-Lib RSI(2): 22.2 on bar 3 (entry), 11.8 and 6.1 (held), 68.0 on bar 6 (exit at >= 50)
    bs = bars([10.0, 11.0, 10.5, 9.0, 8.0, 7.0, 9.0, 11.0], ist_ms(DAY, 10, 0))
    out = run(eng, bs[:6])
    assert [(i, o["side"], o["extra"]["intent"]) for i, o in out] == [(3, "BUY", "entry")]
    eng.on_fill("rsi_reversion", TOKEN, "BUY", 1, 8.0, out[0][1]["order_id"])
    out = run(eng, bs[6:])
    assert [(i, o["side"], o["extra"]["intent"]) for i, o in out] == [(0, "SELL", "exit")]


def test_supertrend_trend_trades_the_flips_only():
    eng = engine("supertrend_trend", period=2, multiplier=1.0, atr_period=2, allow_short=True, use_stop=False)
    down = [20.0 - i for i in range(8)]
    up = [13.0 + 2 * i for i in range(6)]
    out = run(eng, bars(down + up + [10.0, 6.0, 4.0], ist_ms(DAY, 10, 0)))
    sides = [(o["side"], o["extra"]["intent"]) for _, o in out]
    assert sides[0] == ("BUY", "entry")  # the first flip is up (the start, already down, is not traded)
    assert ("SELL", "entry") in sides  # the flip back down goes short (allow_short)
    assert all(o["extra"]["reason"].startswith("supertrend") for _, o in out)


def test_opening_range_breakout_once_a_session_and_the_range_resets_next_day():
    eng = engine("opening_range_breakout", range_minutes=15, atr_period=2, tf="5m")
    day1 = bars([100.0, 101.0, 100.5, 100.8, 103.0, 104.0], ist_ms(DAY, 9, 15), spread=1.0, tf="5m")
    out = run(eng, day1, "5m")
    # range = bars 09:15, 09:20, 09:25 (high 102.0); 09:30 closes 100.8 inside; 09:35 closes 103 above
    assert [(i, o["side"], o["extra"]["intent"]) for i, o in out] == [(4, "BUY", "entry")]
    assert "102" in out[0][1]["extra"]["reason"]
    eng.on_order_update(out[0][1]["order_id"], "REJECTED_BUDGET")
    assert run(eng, [Bar(TOKEN, "5m", day1[-1].ts + 5 * MIN, 105.0, 106.0, 104.0, 105.0, 1, 1)], "5m") == []
    day2 = bars([50.0, 51.0, 50.5, 53.0], ist_ms(date(2026, 11, 23), 9, 15), spread=1.0, tf="5m")
    out2 = run(eng, day2, "5m")
    assert [(i, o["side"]) for i, o in out2] == [(3, "BUY")]  # the new day's range (high 52), not yesterday's


def test_two_engines_over_the_same_bars_decide_identically():
    closes = [100 + ((i * 37) % 23) - 11 + i * 0.1 for i in range(400)]
    bs = bars(closes, ist_ms(DAY, 9, 15))
    a = run(engine("ma_crossover", allow_short=True, **MA), bs)
    b = run(engine("ma_crossover", allow_short=True, **MA), bs)
    assert a == b and len(a) > 10


def test_ensemble_members_vote_and_only_the_ensemble_places_orders():
    cls = STRATEGIES["ma_crossover"]
    members = ("fast_a", "fast_b")
    specs = [StrategySpec(m, cls, cls.Params(**MA), "1m", frozenset({TOKEN}), "MIS", "combo") for m in members]
    cfg = EnsembleConfig(id="combo", members=list(members), mode="all")
    eng = DecisionEngine(specs, {TOKEN: INFY}, load_calendar(),
                         ensembles=[EnsembleSpec("combo", Ensemble(cfg), members, "1m", frozenset({TOKEN}))])
    out = run(eng, bars(UP, ist_ms(DAY, 10, 0)))
    assert [(o["strategy"], o["side"]) for _, o in out] == [("combo", "BUY")]
    assert out[0][1]["extra"]["ensemble"]["votes"] == {"fast_a": "BUY:entry", "fast_b": "BUY:entry"}


def _walk(n: int, seed: int) -> list[float]:
    import random

    rng = random.Random(seed)
    px, out = 100.0, []
    for _ in range(n):
        px = round(px + rng.choice((-1, 1)) * rng.random() * 2, 2)
        out.append(px)
    return out


@pytest.mark.parametrize("allow_short", [False, True])
def test_every_order_filled_at_once_keeps_the_position_one_lot_and_exits_exact(allow_short):
    eng = engine("ma_crossover", allow_short=allow_short, product="CNC", **MA)
    key = ("ma_crossover", TOKEN)
    held: list[int] = []
    for b in bars(_walk(375, 5), ist_ms(DAY, 9, 15)):
        for o in eng.on_bar(b, "1m"):
            qty = o["qty"] if o["qty"] is not None else 10  # the risk manager would size entries
            pos = eng.positions[key]
            if o["extra"]["intent"] != "entry":
                assert qty == abs(pos.qty), o  # an exit closes exactly what is held
            eng.on_fill("ma_crossover", TOKEN, o["side"], qty, b.close, o["order_id"])
            held.append(eng.positions[key].qty)
        assert eng._books[key].exits == {}  # noqa: SLF001 - every exit filled: nothing left pending
    assert set(held) <= {-10, 0, 10} and len(held) > 10
    assert (-10 in held) is allow_short


def test_partially_filled_exit_is_neither_repeated_nor_left_pending():
    eng = engine("ma_crossover", **MA)
    bs = bars(UP + [12.0, 9.0, 9.0, 9.0, 9.0], ist_ms(DAY, 10, 0))
    entry = run(eng, bs[:5])[0][1]
    eng.on_fill("ma_crossover", TOKEN, "BUY", 10, 12.0, entry["order_id"])
    (_, ex), = run(eng, bs[5:7])
    assert (ex["side"], ex["qty"]) == ("SELL", 10)
    eng.on_fill("ma_crossover", TOKEN, "SELL", 4, 9.0, ex["order_id"])
    assert run(eng, bs[7:8]) == []  # 6 still on their way: no second exit
    eng.on_fill("ma_crossover", TOKEN, "SELL", 6, 9.0, ex["order_id"])
    assert run(eng, bs[8:]) == []
    assert eng.positions[("ma_crossover", TOKEN)].qty == 0
    assert eng._books[("ma_crossover", TOKEN)].exits == {}  # noqa: SLF001


def test_reversal_whose_entry_is_rejected_while_its_exit_is_pending_ends_flat():
    eng = engine("ma_crossover", allow_short=True, **MA)
    bs = bars(UP + [12.0, 9.0] + [9.0, 8.0, 12.0], ist_ms(DAY, 10, 0))
    entry = run(eng, bs[:5])[0][1]
    eng.on_fill("ma_crossover", TOKEN, "BUY", 3, 12.0, entry["order_id"])
    (_, ex), (_, short) = run(eng, bs[5:7])
    eng.on_order_update(short["order_id"], "REJECTED_RISK")
    pos = eng.positions[("ma_crossover", TOKEN)]
    assert (pos.direction, pos.stop) == (0, None)  # flat once the exit fills, not long with the short's stop
    eng.on_fill("ma_crossover", TOKEN, "SELL", 3, 9.0, ex["order_id"])
    out = run(eng, bs[7:])
    assert [(o["side"], o["extra"]["intent"]) for _, o in out] == [("BUY", "entry")]  # the next up-cross trades


def test_an_old_entry_filling_after_a_reversal_is_flattened():
    eng = engine("ma_crossover", allow_short=True, **MA)
    bs = bars(UP + [12.0, 9.0, 9.0], ist_ms(DAY, 10, 0))
    long_entry = run(eng, bs[:5])[0][1]
    (_, short), = run(eng, bs[5:7])  # nothing filled yet: only the short entry
    assert (short["side"], short["extra"]["intent"]) == ("SELL", "entry")
    eng.on_fill("ma_crossover", TOKEN, "BUY", 5, 12.0, long_entry["order_id"])  # the old entry fills late
    out = run(eng, bs[7:])
    assert [(o["side"], o["qty"], o["extra"]["intent"]) for _, o in out] == [("SELL", 5, "flatten")]


def test_an_mis_position_left_from_an_earlier_session_is_squared_off_at_the_next_bar():
    eng = engine("ma_crossover", **MA)
    entry = run(eng, bars(UP, ist_ms(DAY, 13, 0)))[0][1]
    eng.on_fill("ma_crossover", TOKEN, "BUY", 2, 12.0, entry["order_id"])
    # the feed stops at 13:05; the next bar comes the next trading day (Monday)
    out = run(eng, bars([12.0], ist_ms(date(2026, 11, 23), 9, 15)))
    assert [(o["side"], o["qty"], o["extra"]["intent"]) for _, o in out] == [("SELL", 2, "square_off")]


def test_rsi_reversion_use_stop_exits_on_the_stop_before_rsi_recovers():
    eng = engine("rsi_reversion", period=2, atr_period=2, use_stop=True)
    bs = bars([10.0, 11.0, 10.5, 9.0], ist_ms(DAY, 10, 0))
    (_, entry), = run(eng, bs)
    eng.on_fill("rsi_reversion", TOKEN, "BUY", 1, 9.0, entry["order_id"])
    stop = entry["stop_loss"]
    assert stop < 9.0
    crash = Bar(TOKEN, "1m", bs[-1].ts + MIN, 8.8, 8.9, stop - 0.05, 8.7, 100, 5)  # RSI still low, stop touched
    out = run(eng, [crash])
    assert [(o["side"], o["qty"], o["extra"]["reason"]) for _, o in out] == [("SELL", 1, "stop")]


def test_opening_range_breakout_use_stop_exits_on_the_stop():
    eng = engine("opening_range_breakout", range_minutes=15, atr_period=2, tf="5m", use_stop=True)
    day1 = bars([100.0, 101.0, 100.5, 100.8, 103.0], ist_ms(DAY, 9, 15), spread=1.0, tf="5m")
    (_, entry), = run(eng, day1, "5m")
    eng.on_fill("opening_range_breakout", TOKEN, "BUY", 3, 103.0, entry["order_id"])
    stop = entry["stop_loss"]
    drop = Bar(TOKEN, "5m", day1[-1].ts + 5 * MIN, 102.5, 103.5, stop, 102.8, 100, 5)  # no close below the range
    out = run(eng, [drop], "5m")
    assert [(o["side"], o["qty"], o["extra"]["reason"]) for _, o in out] == [("SELL", 3, "stop")]


def test_strategies_sharing_indicators_decide_as_each_would_alone():
    bs = bars(_walk(375, 9), ist_ms(DAY, 9, 15))
    specs = [StrategySpec(name, STRATEGIES[name], STRATEGIES[name].Params(**params), "1m", frozenset({TOKEN}), "CNC")
             for name, params in (("ma_crossover", {"fast": 5, "slow": 13, "allow_short": True}),
                                  ("rsi_reversion", {"period": 5, "allow_short": True}),
                                  ("supertrend_trend", {"period": 7, "allow_short": True}))]
    together = DecisionEngine(specs, {TOKEN: INFY}, load_calendar())
    assert len(together._by_tf["1m"][TOKEN][0]) == 5  # noqa: SLF001 - ema 5, ema 13, atr 14 (once), rsi, supertrend
    both = [o for b in bs for o in together.on_bar(b, "1m")]
    alone = []
    for spec in specs:
        eng = DecisionEngine([spec], {TOKEN: INFY}, load_calendar())
        alone += [o for b in bs for o in eng.on_bar(b, "1m")]
    assert len(both) > 20
    assert sorted(both, key=lambda o: o["order_id"]) == sorted(alone, key=lambda o: o["order_id"])
