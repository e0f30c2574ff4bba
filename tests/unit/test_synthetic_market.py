"""The smoke producer's synthetic market: deterministic, on the tick grid, realistic pace."""

from __future__ import annotations

from core.settings import PROJECT_ROOT
from core.universe import is_tradable, load_universe
from ingestion.synthetic import SyntheticMarket
from schemas import Tick

START = 1_710_215_100_000


def _market(seed: int = 7) -> SyntheticMarket:
    uni = load_universe(PROJECT_ROOT / "configs" / "tokens.csv")
    inst = [(i.instrument_token, i.tick_size, i.last_price or 100.0, is_tradable(i.instrument_token), i.lot_size)
            for i in uni]
    return SyntheticMarket(inst, seed, START)


def test_same_seed_same_ticks_and_different_seed_differs():
    a = [_market(7).next_tick() for _ in range(2000)]
    b = [_market(7).next_tick() for _ in range(2000)]
    c = [_market(8).next_tick() for _ in range(2000)]
    assert a == b
    assert a != c


def test_ticks_follow_contract_grid_volume_and_pace():
    m = _market()
    ticks = list(m.ticks_until(START + 60_000))
    n_inst = len(m.state)
    rate = len(ticks) / 60 / n_inst
    assert 1.0 <= rate <= 2.0, rate  # 1-2 ticks/s per instrument
    last_vol: dict[int, int] = {}
    last_ts = 0
    for t in ticks:
        Tick.model_validate(t)
        assert t["exchange_ts"] >= last_ts  # event-time order
        last_ts = t["exchange_ts"]
        st = m.state[t["instrument_token"]]
        assert abs(t["ltp"] / st.tick - round(t["ltp"] / st.tick)) < 1e-6  # on the tick grid
        if st.tradable:
            assert t["volume"] > last_vol.get(t["instrument_token"], 0)  # cumulative, increasing
            last_vol[t["instrument_token"]] = t["volume"]
            assert t["bid"] < t["ltp"] < t["ask"]
        else:
            assert t["volume"] is None and t["bid"] is None
