"""The simulated market: deterministic per seed, on the tick grid, coherent day statistics."""

from __future__ import annotations

from collections import defaultdict

import pytest

from core.universe import Instrument, load_universe
from kitesim.clock import in_session, ist_date, parse_ist
from kitesim.market import Market, RandomWalk
from kitesim.packets import Snapshot
from kitesim.server import DEFAULT_TOKENS

UNIVERSE = load_universe(DEFAULT_TOKENS)
START = parse_ist("2025-12-04 10:00:00")


def run(instruments: list[Instrument], seed: int, seconds: float, start: float = START,
        market_hours: bool = False) -> list[Snapshot]:
    market = Market(instruments, seed, RandomWalk(instruments, seed, start, market_hours=market_hours))
    return market.advance(start + seconds)


def per_token(snaps: list[Snapshot]) -> dict[int, list[Snapshot]]:
    out: dict[int, list[Snapshot]] = defaultdict(list)
    for s in snaps:
        out[s.instrument_token].append(s)
    return out


def test_same_seed_gives_same_ticks_and_other_seed_differs() -> None:
    a, b, c = run(UNIVERSE, 3, 60), run(UNIVERSE, 3, 60), run(UNIVERSE, 4, 60)

    assert a == b
    assert a != c


def test_an_instruments_ticks_do_not_depend_on_the_rest_of_the_universe() -> None:
    reliance = [i for i in UNIVERSE if i.instrument_token == 738561]

    alone = run(reliance, 3, 60)
    together = per_token(run(UNIVERSE, 3, 60))[738561]

    assert alone == together


def test_ticks_arrive_one_to_two_per_second_in_time_order() -> None:
    snaps = run(UNIVERSE, 1, 120)

    assert [s.ts for s in snaps] == sorted(s.ts for s in snaps)
    for token, ticks in per_token(snaps).items():
        assert 115 <= len(ticks) <= 241, token
        assert [t.seq for t in ticks] == list(range(1, len(ticks) + 1))


def test_prices_on_tick_grid_and_day_statistics_coherent() -> None:
    by_token = {i.instrument_token: i for i in UNIVERSE}

    for token, ticks in per_token(run(UNIVERSE, 2, 300)).items():
        inst = by_token[token]
        tick = inst.tick_units
        volumes = [t.volume for t in ticks]
        assert volumes == sorted(volumes), token
        for t in ticks:
            assert t.last_price % tick == 0, token
            assert t.low <= t.last_price <= t.high
            assert t.close == round(inst.last_price * inst.price_divisor)
            assert t.exchange_timestamp == t.last_trade_time == int(t.ts)
            if inst.tradable:
                assert t.last_qty > 0 and t.last_qty % max(1, inst.lot_size) == 0
                assert t.low <= t.avg_price <= t.high
                assert t.buy[0].price <= t.last_price <= t.sell[0].price
                assert all(a.price > b.price for a, b in zip(t.buy, t.buy[1:], strict=False))
                assert all(a.price < b.price for a, b in zip(t.sell, t.sell[1:], strict=False))
            else:
                assert t.volume == 0 and t.last_qty == 0
        assert ticks[0].open == ticks[-1].open == ticks[0].last_price


def test_new_ist_day_rolls_statistics_over() -> None:
    start = parse_ist("2025-12-04 23:59:00")

    ticks = per_token(run(UNIVERSE, 5, 120, start=start))[408065]
    before = [t for t in ticks if ist_date(t.ts).day == 4]
    after = [t for t in ticks if ist_date(t.ts).day == 5]

    assert before and after
    assert after[0].close == before[-1].last_price
    assert after[0].volume == after[0].last_qty
    assert after[0].open == after[0].high == after[0].low == after[0].last_price


@pytest.mark.parametrize("start", ["2025-12-06 12:00:00", "2025-12-05 15:29:00", "2025-12-08 08:00:00"])
def test_market_hours_mode_ticks_only_in_session(start: str) -> None:
    t0 = parse_ist(start)
    until = parse_ist("2025-12-08 09:16:00")  # the next Monday's open, plus a minute

    snaps = run(UNIVERSE[:5], 1, until - t0, start=t0, market_hours=True)

    assert snaps
    assert all(in_session(s.ts) for s in snaps)
    assert sum(s.ts >= parse_ist("2025-12-08 09:15:00") for s in snaps) >= 5 * 60


def test_market_hours_mode_on_an_nse_holiday_then_no_ticks_until_the_next_open() -> None:
    t0 = parse_ist("2026-11-10 09:00:00")  # Tuesday, Diwali Balipratipada (configs/sessions.yaml)
    until = parse_ist("2026-11-11 09:16:00")

    snaps = run(UNIVERSE[:5], 1, until - t0, start=t0, market_hours=True)

    assert snaps and min(s.ts for s in snaps) >= parse_ist("2026-11-11 09:15:00")


def test_default_mode_on_an_nse_holiday_then_ticks_around_the_clock_for_paper() -> None:
    t0 = parse_ist("2026-11-10 11:00:00")

    snaps = run(UNIVERSE[:5], 1, 60, start=t0)

    assert len(per_token(snaps)) == 5 and min(s.ts for s in snaps) < t0 + 2
