"""kitesim's smaller parts: history candles, replay, sessions, rate limits, faults, clock."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.errors import ConfigError
from core.universe import by_token, load_universe
from kitesim.auth import RequestLimits, SessionStore, checksum
from kitesim.clock import SessionClock, ist_str, next_session_open, parse_ist
from kitesim.errors import InputError, NetworkError, TokenError
from kitesim.faults import Faults
from kitesim.history import CandleBook, HistoryGenerator, aggregate
from kitesim.market import Market
from kitesim.replay import Replay, events_from_rows
from kitesim.server import DEFAULT_TOKENS

UNIVERSE = load_universe(DEFAULT_TOKENS)
TOKENS = by_token(UNIVERSE)


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


# ---------------------------------------------------------------- history


def history(seed: int = 3) -> HistoryGenerator:
    return HistoryGenerator(UNIVERSE, seed, date(2025, 12, 4), CandleBook())


def test_history_is_deterministic_and_anchored_at_reference_price() -> None:
    a = history().candles(408065, "minute", parse_ist("2025-12-01"), parse_ist("2025-12-03 23:59"))
    b = history().candles(408065, "minute", parse_ist("2025-12-01"), parse_ist("2025-12-03 23:59"))
    other = history(seed=4).candles(408065, "minute", parse_ist("2025-12-01"), parse_ist("2025-12-03 23:59"))

    assert a == b and a != other
    assert len(a) == 3 * 375
    assert a[-1][0] == "2025-12-03T15:29:00+0530" and a[-1][4] == 1562.3  # INFY reference price


def test_history_skips_weekends_and_aggregates_consistently() -> None:
    h = history()
    start, end = parse_ist("2025-11-28"), parse_ist("2025-12-02 23:59")

    minutes = h.candles(738561, "minute", start, end)
    hours = h.candles(738561, "60minute", start, end)
    days = h.candles(738561, "day", start, end)

    assert {c[0][:10] for c in minutes} == {"2025-11-28", "2025-12-01", "2025-12-02"}
    assert len(hours) == 3 * 7 and hours[-1][0].endswith("15:15:00+0530")
    assert [d[0][:10] for d in days] == ["2025-11-28", "2025-12-01", "2025-12-02"]
    for d in days:
        same_day = [m for m in minutes if m[0][:10] == d[0][:10]]
        assert d[1] == same_day[0][1] and d[4] == same_day[-1][4]
        assert d[2] == max(m[2] for m in same_day) and d[3] == min(m[3] for m in same_day)
        assert d[5] == sum(m[5] for m in same_day)


def test_history_limits() -> None:
    h = history()
    with pytest.raises(InputError, match="60 days"):
        h.candles(738561, "minute", parse_ist("2025-01-01"), parse_ist("2025-06-01"))
    with pytest.raises(InputError, match="interval"):
        h.candles(738561, "2minute", parse_ist("2025-12-01"), parse_ist("2025-12-02"))
    with pytest.raises(InputError, match="token"):
        h.candles(1, "minute", parse_ist("2025-12-01"), parse_ist("2025-12-02"))


def test_aggregate_anchors_multi_minute_bars_at_session_open() -> None:
    t = parse_ist("2025-12-02 09:15:00")
    minutes = [(t + 60 * i, 100 + i, 110 + i, 90 + i, 101 + i, 1) for i in range(7)]

    fives = aggregate(minutes, 5)

    assert [ist_str(c[0]) for c in fives] == ["2025-12-02 09:15:00", "2025-12-02 09:20:00"]
    assert fives[0][1:] == (100, 114, 90, 105, 5)


# ---------------------------------------------------------------- replay


def _rows() -> list[dict[str, object]]:
    base = int(parse_ist("2025-12-04 10:00:00") * 1000)
    return [
        {"instrument_token": 738561, "exchange_ts": base + 2000, "ltp": 1546.0, "volume": 150},
        {"instrument_token": 738561, "exchange_ts": base, "ltp": 1545.5, "volume": 100, "bid": 1545.45,
         "ask": 1545.5},
        {"instrument_token": 408065, "exchange_ts": base + 1000, "ltp": 1562.35, "last_qty": 7},
        {"instrument_token": 999, "exchange_ts": base, "ltp": 1.0},
    ]


def test_replay_orders_by_time_and_derives_quantities() -> None:
    events, skipped = events_from_rows(_rows(), TOKENS)

    assert skipped == 1
    assert [e.token for e in events] == [738561, 408065, 738561]
    assert [e.qty for e in events] == [0, 7, 50]  # quantity from cumulative volume deltas
    assert events[0].bid == 154545 and events[0].ask == 154550


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_replay_file_drives_the_market(tmp_path: Path, suffix: str) -> None:
    rows = _rows()
    path = tmp_path / f"ticks{suffix}"
    if suffix == ".csv":
        cols = ["instrument_token", "exchange_ts", "ltp", "volume", "last_qty", "bid", "ask"]
        path.write_text(",".join(cols) + "\n" + "".join(
            ",".join(str(r.get(c, "")) for c in cols) + "\n" for r in rows))
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)

    replay, skipped = Replay.from_file(path, TOKENS)
    market = Market(UNIVERSE, 1, replay)
    first = market.advance(replay.first_ts + 1.5)
    rest = market.advance(replay.first_ts + 10)

    assert skipped == 1 and replay.done
    assert [(s.instrument_token, s.last_price) for s in first] == [(738561, 154550), (408065, 156235)]
    assert rest[0].last_price == 154600 and rest[0].volume == 150
    assert rest[0].exchange_timestamp == int(replay.first_ts) + 2


def test_replay_bad_file_is_config_error(tmp_path: Path) -> None:
    no_time = tmp_path / "t.csv"
    no_time.write_text("instrument_token,ltp\n738561,10\n")
    wrong_kind = tmp_path / "t.json"
    wrong_kind.write_text("{}")

    with pytest.raises(ConfigError, match="t.csv:2"):
        Replay.from_file(no_time, TOKENS)
    with pytest.raises(ConfigError, match="must be .csv or .parquet"):
        Replay.from_file(wrong_kind, TOKENS)


# ---------------------------------------------------------------- sessions, limits, faults, clock


def test_session_tokens_expire_and_new_ones_are_issued() -> None:
    clock = FakeClock()
    store = SessionStore("sim", "sim-token", "secret", expires_after=10, monotonic=clock)

    assert store.check_header("token sim:sim-token") == "sim"
    clock.t += 11
    with pytest.raises(TokenError, match="Incorrect `api_key` or `access_token`."):
        store.check_header("token sim:sim-token")
    fresh = store.generate("sim", "req", checksum("sim", "req", "secret"))
    assert store.valid("sim", fresh) and not store.valid("other", fresh)
    with pytest.raises(TokenError, match="checksum"):
        store.generate("sim", "req", "nope")


def test_rate_limiter_sliding_window_for_categories_other_than_orders() -> None:
    clock = FakeClock()
    limiter = RequestLimits(monotonic=clock, wall=clock)

    for _ in range(3):
        limiter.check("sim", "historical")
    with pytest.raises(NetworkError) as err:
        limiter.check("sim", "historical")
    clock.t += 0.5
    with pytest.raises(NetworkError):
        limiter.check("sim", "historical")  # a sliding window: the first 3 are still inside it
    clock.t += 0.5
    limiter.check("sim", "historical")
    limiter.check("other-app", "historical")

    assert err.value.http_status == 429
    assert limiter.refused()["historical"] == 2


def test_faults_next_n_failures_then_rate_zero() -> None:
    faults = Faults(seed=1)
    faults.update({"http_5xx_next": 2, "http_5xx_code": 503, "http_5xx_paths": ["/orders"]})

    assert faults.http_failure("/quote") is None
    assert [faults.http_failure("/orders/regular") for _ in range(3)] == [503, 503, None]
    with pytest.raises(InputError, match="unknown"):
        faults.update({"nonsense": 1})
    assert faults.update({"drop_ws": True}) and faults.take_drop_ws() and not faults.take_drop_ws()


def test_session_clock_speed_and_next_open() -> None:
    mono = FakeClock()
    clock = SessionClock(start=parse_ist("2025-12-05 15:00:00"), speed=60, monotonic=mono)
    mono.t += 60

    assert ist_str(clock.now()) == "2025-12-05 16:00:00"
    assert ist_str(next_session_open(clock.now())) == "2025-12-08 09:15:00"
