"""strategy.indicators against TA-Lib (the installed ``talib``), plus the contract around it.

Every TA-Lib-backed indicator must equal TA-Lib to 1e-9 relative (1e-9 absolute near zero) and
produce its first value on the bar of TA-Lib's first non-NaN output, on the GOOG daily sample and
on 60k generated 1m bars with session gaps and flat stretches (tests/unit/indicator_data.py).
VWAP and Supertrend have no TA-Lib function: they are checked against the straightforward
reference implementations below.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import talib

from core.errors import ConfigError
from strategy.indicators import NAMES, create
from strategy.indicators.config import CONFIG_CHECKS, load_indicator_config
from tests.unit.indicator_data import Bar, Series, goog_daily, intraday_1m

ROOT = Path(__file__).resolve().parents[2]
REL = 1e-9


@pytest.fixture(scope="module", params=["goog", "intraday"])
def data(request: pytest.FixtureRequest) -> tuple[Series, list[Bar]]:
    series = goog_daily() if request.param == "goog" else intraday_1m(60_000)
    return series, series.bars()


def outputs(name: str, params: dict[str, Any], bars: list[Bar]) -> tuple[list[Any], Any]:
    ind = create(name, **params)
    return [ind.update(b) for b in bars], ind


def column(out: list[Any], key: str | None) -> np.ndarray:
    return np.array([np.nan if v is None else (v if key is None else v[key]) for v in out], dtype=float)


def assert_same(ours: np.ndarray, ref: np.ndarray, label: str) -> None:
    """Same warm-up (NaN pattern) and values within 1e-9 relative / 1e-9 absolute near zero."""
    ref_nan = np.isnan(ref)
    assert ref_nan.sum() < len(ref), f"{label}: TA-Lib produced no value"
    first_ref = int(np.argmax(~ref_nan))
    first_ours = int(np.argmax(~np.isnan(ours)))
    assert first_ours == first_ref, f"{label}: first value on bar {first_ours}, TA-Lib on bar {first_ref}"
    assert (np.isnan(ours) == ref_nan).all(), f"{label}: None after the first value"
    m = ~ref_nan
    err = np.abs(ours[m] - ref[m])
    tol = REL * np.maximum(np.abs(ref[m]), 1.0)
    worst = int(np.argmax(err - tol))
    assert (err <= tol).all(), (f"{label}: bar {np.flatnonzero(m)[worst]}: ours {ours[m][worst]!r} "
                                f"TA-Lib {ref[m][worst]!r}")


Ref = Callable[[Series], dict[str | None, np.ndarray]]


def _talib_cases() -> list[tuple[str, dict[str, Any], Ref]]:
    cases: list[tuple[str, dict[str, Any], Ref]] = []
    for p in (1, 2, 3, 20, 50):
        cases += [
            ("sma", {"period": p}, lambda s, p=p: {None: talib.SMA(s.close, p)}),
            ("ema", {"period": p}, lambda s, p=p: {None: talib.EMA(s.close, p)}),
            ("wma", {"period": p}, lambda s, p=p: {None: talib.WMA(s.close, p)}),
            ("atr", {"period": p}, lambda s, p=p: {None: talib.ATR(s.high, s.low, s.close, p)}),
        ]
    for p in (2, 3, 14, 30):
        cases += [
            ("rsi", {"period": p}, lambda s, p=p: {None: talib.RSI(s.close, p)}),
            ("adx", {"period": p}, lambda s, p=p: _adx(s, p)),
            ("donchian", {"period": p}, lambda s, p=p: {"upper": talib.MAX(s.high, p), "lower": talib.MIN(s.low, p),
                                                       "middle": (talib.MAX(s.high, p) + talib.MIN(s.low, p)) / 2}),
        ]
    for p, k in ((2, 2.0), (3, 1.0), (20, 2.0), (50, 2.5)):
        cases.append(("bollinger", {"period": p, "stddev": k}, lambda s, p=p, k=k: dict(
            zip(("upper", "middle", "lower"), talib.BBANDS(s.close, p, k, k, 0), strict=True))))
    for f, sl, sg in ((12, 26, 9), (2, 3, 1), (5, 8, 3), (3, 30, 2)):
        cases.append(("macd", {"fast": f, "slow": sl, "signal": sg}, lambda s, f=f, sl=sl, sg=sg: dict(
            zip(("macd", "signal", "hist"), talib.MACD(s.close, f, sl, sg), strict=True))))
    for k, ks, d in ((14, 3, 3), (1, 1, 1), (5, 3, 2), (2, 1, 4)):
        cases.append(("stoch", {"k_period": k, "k_smooth": ks, "d_period": d}, lambda s, k=k, ks=ks, d=d: dict(
            zip(("k", "d"), talib.STOCH(s.high, s.low, s.close, k, ks, 0, d, 0), strict=True))))
    return cases


def _adx(s: Series, p: int) -> dict[str | None, np.ndarray]:
    """ADX plus PLUS_DI / MINUS_DI, the DIs from the ADX's first bar on (the dict appears with the ADX)."""
    adx = talib.ADX(s.high, s.low, s.close, p)
    out: dict[str | None, np.ndarray] = {"adx": adx}
    for key, fn in (("plus_di", talib.PLUS_DI), ("minus_di", talib.MINUS_DI)):
        di = fn(s.high, s.low, s.close, p)
        di[np.isnan(adx)] = np.nan
        out[key] = di
    return out


TALIB_CASES = _talib_cases()


@pytest.mark.parametrize(("name", "params", "ref"), TALIB_CASES,
                         ids=[f"{n}-{'-'.join(map(str, p.values()))}" for n, p, _ in TALIB_CASES])
def test_indicator_equals_talib_from_the_same_first_bar(data: tuple[Series, list[Bar]], name: str,
                                                        params: dict[str, Any], ref: Ref) -> None:
    series, bars = data
    out, ind = outputs(name, params, bars)
    expected = ref(series)
    for key, values in expected.items():
        assert_same(column(out, key), values, f"{name}{params}[{key}]")
    first = int(np.argmax(~np.isnan(next(iter(expected.values())))))
    assert ind.warmup == first + 1, "warmup is TA-Lib's lookback + 1"


def test_intraday_data_has_gaps_and_flat_stretches() -> None:
    """The generated series really contains what the comparisons above are meant to exercise."""
    s = intraday_1m(60_000)
    assert len(s) >= 50_000
    steps = np.diff(s.ts)
    assert (steps > 60_000 * 60 * 12).sum() >= 100, "overnight and weekend gaps"
    opens = np.flatnonzero(steps > 60_000) + 1
    assert np.mean(s.open[opens] != s.close[opens - 1]) > 0.9, "price gaps at the session open"
    flat = (s.open == s.high) & (s.high == s.low) & (s.low == s.close)
    runs = np.diff(np.flatnonzero(np.diff(np.r_[0, flat.astype(int), 0])))[::2]
    assert runs.max() >= 600 and (runs >= 20).sum() >= 20, "short and long runs of identical OHLC"
    assert (s.volume == 0).sum() > 1000


@pytest.mark.parametrize(("name", "params", "key", "expected"), [
    ("rsi", {"period": 14}, None, 0.0),  # no gain, no loss: TA-Lib 0.8.1 answers 0
    ("stoch", {"k_period": 5, "k_smooth": 3, "d_period": 3}, "k", 0.0),  # zero range: fast %K is 0
    ("adx", {"period": 5}, "plus_di", 0.0),  # zero true range: DI is 0
])
def test_series_that_never_moves_gives_talibs_zero_division_result(name: str, params: dict[str, Any],
                                                                   key: str | None, expected: float) -> None:
    bars = [Bar(100.0, 100.0, 100.0, 100.0, 0.0, i * 60_000) for i in range(40)]
    out, _ = outputs(name, params, bars)
    values = column(out, key)
    assert values[-1] == expected
    s = Series(*(np.full(40, 100.0) for _ in range(4)), volume=np.zeros(40), ts=np.arange(40) * 60_000)
    ref = {"rsi": lambda: talib.RSI(s.close, 14),
           "stoch": lambda: talib.STOCH(s.high, s.low, s.close, 5, 3, 0, 3, 0)[0],
           "adx": lambda: talib.PLUS_DI(s.high, s.low, s.close, 5)}[name]()
    assert ref[-1] == expected


def test_bollinger_on_a_flat_window_collapses_onto_the_middle() -> None:
    bars = [Bar(c, c, c, c, 1.0, i) for i, c in enumerate([101.3, 99.7, 100.1] + [100.05] * 30)]
    out, _ = outputs("bollinger", {"period": 20, "stddev": 2.0}, bars)
    assert out[-1]["upper"] == out[-1]["middle"] == out[-1]["lower"]
    assert out[-1]["upper"] == talib.BBANDS(np.array([b.close for b in bars]), 20, 2.0, 2.0, 0)[0][-1]


# --- VWAP and Supertrend against plain reference implementations ------------------------------------------


def reference_vwap(s: Series) -> np.ndarray:
    """Cumulative sum(tp * volume) / sum(volume) per IST date; NaN while the session has no volume."""
    day = pd.to_datetime(s.ts, unit="ms", utc=True).tz_convert("Asia/Kolkata").date
    df = pd.DataFrame({"pv": (s.high + s.low + s.close) / 3.0 * s.volume, "v": s.volume, "day": day})
    g = df.groupby("day", sort=False)
    cum_v = g["v"].cumsum().to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cum_v > 0, g["pv"].cumsum().to_numpy() / cum_v, np.nan)


def reference_supertrend(s: Series, period: int, mult: float) -> tuple[np.ndarray, np.ndarray]:
    """TradingView's ta.supertrend (direction +1 up) on TA-Lib's ATR, as a plain loop."""
    atr = talib.ATR(s.high, s.low, s.close, period)
    hl2 = (s.high + s.low) / 2
    value = np.full(len(s), np.nan)
    direction = np.full(len(s), np.nan)
    up = dn = 0.0
    d = -1
    for i in range(len(s)):
        if np.isnan(atr[i]):
            continue
        bu, bl = hl2[i] + mult * atr[i], hl2[i] - mult * atr[i]
        if np.isnan(atr[i - 1]) if i else True:
            up, dn, d = bu, bl, -1
        else:
            up = bu if (bu < up or s.close[i - 1] > up) else up
            dn = bl if (bl > dn or s.close[i - 1] < dn) else dn
            d = (1 if s.close[i] > up else -1) if d == -1 else (-1 if s.close[i] < dn else 1)
        value[i] = dn if d == 1 else up
        direction[i] = d
    return value, direction


def test_vwap_equals_reference(data: tuple[Series, list[Bar]]) -> None:
    series, bars = data
    out, _ = outputs("vwap", {}, bars)
    assert_same(column(out, None), reference_vwap(series), "vwap")


@pytest.mark.parametrize(("period", "mult"), [(10, 3.0), (1, 1.0), (7, 2.0), (22, 0.5)])
def test_supertrend_equals_reference(data: tuple[Series, list[Bar]], period: int, mult: float) -> None:
    series, bars = data
    out, ind = outputs("supertrend", {"period": period, "multiplier": mult}, bars)
    value, direction = reference_supertrend(series, period, mult)
    assert_same(column(out, "value"), value, "supertrend value")
    assert_same(column(out, "direction"), direction, "supertrend direction")
    flips = np.count_nonzero(np.diff(direction[~np.isnan(direction)]))
    assert flips > 10, "the series exercises both trend directions"
    assert ind.warmup == int(np.argmax(~np.isnan(talib.ATR(series.high, series.low, series.close, period)))) + 1


def _ist_bar(day: int, minute: int, price: float, volume: float) -> Bar:
    ts = int(pd.Timestamp(f"2024-03-{day:02d} 09:15", tz="Asia/Kolkata").timestamp() * 1000) + minute * 60_000
    return Bar(price, price + 1.0, price - 1.0, price, volume, ts)


def test_vwap_resets_at_the_ist_session_boundary() -> None:
    vwap = create("vwap")
    assert vwap.update(_ist_bar(4, 0, 100.0, 10)) == pytest.approx(100.0)
    assert vwap.update(_ist_bar(4, 374, 200.0, 30)) == pytest.approx(175.0)  # 15:29 IST, same session
    assert vwap.update(_ist_bar(5, 0, 300.0, 0)) is None  # next day's open traded nothing yet
    assert not vwap.ready
    assert vwap.update(_ist_bar(5, 1, 310.0, 5)) == pytest.approx(310.0)  # yesterday's volume is gone


def test_vwap_session_is_the_ist_date_not_the_utc_date() -> None:
    vwap = create("vwap")
    # 23:00 and 00:30 UTC are 04:30 and 06:00 IST of the same IST date
    base = int(pd.Timestamp("2024-03-04 23:00", tz="UTC").timestamp() * 1000)
    vwap.update(Bar(100.0, 100.0, 100.0, 100.0, 1.0, base))
    assert vwap.update(Bar(200.0, 200.0, 200.0, 200.0, 1.0, base + 90 * 60_000)) == pytest.approx(150.0)
    # 18:30 UTC is midnight IST: a new session
    midnight = int(pd.Timestamp("2024-03-05 18:30", tz="UTC").timestamp() * 1000)
    assert vwap.update(Bar(50.0, 50.0, 50.0, 50.0, 1.0, midnight)) == pytest.approx(50.0)


# --- contract: create, params, warm-up, reset --------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_create_every_name_with_defaults_warms_up_with_none_then_gives_values(name: str) -> None:
    bars = intraday_1m(400, seed=3).bars()
    ind = create(name)
    assert ind.value is None and not ind.ready
    out = [ind.update(b) for b in bars]
    first = next(i for i, v in enumerate(out) if v is not None)
    if name == "vwap":  # the first bar of the session with volume
        assert first == next(i for i, b in enumerate(bars) if b.volume) and ind.warmup == 1
    else:
        assert first == ind.warmup - 1
    assert all(v is not None for v in out[first:first + 50] if name != "vwap")
    assert ind.value == out[-1] and ind.ready == (out[-1] is not None)
    kinds = {"macd": {"macd", "signal", "hist"}, "bollinger": {"upper", "middle", "lower"}, "stoch": {"k", "d"},
             "supertrend": {"value", "direction"}, "adx": {"adx", "plus_di", "minus_di"},
             "donchian": {"upper", "middle", "lower"}}
    last = next(v for v in reversed(out) if v is not None)
    if name in kinds:
        assert set(last) == kinds[name]
    else:
        assert isinstance(last, float)


def test_defaults_are_the_documented_ones() -> None:
    expected = {"sma": "SMA(period=20)", "ema": "EMA(period=20)", "wma": "WMA(period=20)", "rsi": "RSI(period=14)",
                "atr": "ATR(period=14)", "adx": "ADX(period=14)", "macd": "MACD(fast=12, slow=26, signal=9)",
                "bollinger": "Bollinger(period=20, stddev=2.0)", "stoch": "Stoch(k_period=14, k_smooth=3, d_period=3)",
                "supertrend": "Supertrend(period=10, multiplier=3.0)", "donchian": "Donchian(period=20)",
                "vwap": "VWAP()"}
    assert {n: repr(create(n)) for n in NAMES} == expected


@pytest.mark.parametrize("name", NAMES)
def test_reset_forgets_everything(name: str) -> None:
    bars = intraday_1m(300, seed=5).bars()
    ind = create(name)
    for b in bars[150:]:
        ind.update(b)
    ind.reset()
    assert ind.value is None and not ind.ready
    fresh = create(name)
    again = [ind.update(b) for b in bars]
    assert again == [fresh.update(b) for b in bars]
    assert any(v is not None for v in again)


@pytest.mark.parametrize(("name", "params", "words"), [
    ("smma", {}, ["smma", "unknown indicator"]),
    ("sma", {"perod": 5}, ["sma", "perod", "unknown parameter"]),
    ("vwap", {"period": 5}, ["vwap", "period", "unknown parameter"]),
    ("sma", {"period": 0}, ["sma", "period", ">= 1"]),
    ("ema", {"period": -3}, ["ema", "period"]),
    ("rsi", {"period": 1}, ["rsi", "period", ">= 2"]),
    ("adx", {"period": 1}, ["adx", "period", ">= 2"]),
    ("bollinger", {"period": 1}, ["bollinger", "period", ">= 2"]),
    ("donchian", {"period": 1}, ["donchian", "period", ">= 2"]),
    ("macd", {"fast": 1}, ["macd", "fast", ">= 2"]),
    ("macd", {"signal": 0}, ["macd", "signal"]),
    ("macd", {"fast": 26, "slow": 26}, ["macd", "fast", "slow"]),
    ("macd", {"fast": 30}, ["macd", "fast", "slow"]),
    ("stoch", {"k_smooth": 0}, ["stoch", "k_smooth"]),
    ("sma", {"period": "20"}, ["sma", "period", "integer"]),
    ("sma", {"period": 20.0}, ["sma", "period", "integer"]),
    ("atr", {"period": True}, ["atr", "period", "integer"]),
    ("bollinger", {"stddev": "2"}, ["bollinger", "stddev", "number"]),
    ("bollinger", {"stddev": 0}, ["bollinger", "stddev", "> 0"]),
    ("supertrend", {"multiplier": float("nan")}, ["supertrend", "multiplier"]),
    ("supertrend", {"multiplier": -1.0}, ["supertrend", "multiplier"]),
])
def test_bad_name_or_param_is_one_line_value_error(name: str, params: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(ValueError) as exc:
        create(name, **params)
    msg = str(exc.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg


def test_talib_rejects_what_create_rejects_at_the_lower_bounds() -> None:
    """The minimum periods are TA-Lib's own: one below them TA-Lib fails, at them it works."""
    x = np.linspace(100.0, 110.0, 50)
    for fn, low in ((lambda p: talib.SMA(x, p), 1), (lambda p: talib.RSI(x, p), 2),
                    (lambda p: talib.ADX(x, x, x, p), 2), (lambda p: talib.MAX(x, p), 2),
                    (lambda p: talib.BBANDS(x, p)[0], 2), (lambda p: talib.ATR(x, x, x, p), 1)):
        fn(low)
        with pytest.raises(Exception, match="BAD_PARAM"):
            fn(low - 1)


def test_update_reads_only_the_fields_it_needs() -> None:
    """sma reads close only; a bar without the other fields still works (speed: no wasted attribute reads)."""

    class CloseOnly:
        __slots__ = ("close",)

        def __init__(self, close: float) -> None:
            self.close = close

    sma = create("sma", period=2)
    sma.update(CloseOnly(1.0))
    assert sma.update(CloseOnly(2.0)) == 1.5


# --- configs/indicators.yaml --------------------------------------------------------------------------------


def test_repo_indicator_config_loads_and_builds_every_timeframe() -> None:
    cfg = load_indicator_config(ROOT / "configs" / "indicators.yaml")
    for tf in ("1m", "3m", "5m", "15m", "30m", "60m"):
        built = cfg.build(tf)
        assert built and all(hasattr(ind, "update") for ind in built.values())
    assert CONFIG_CHECKS[0][0] == "indicators.yaml"


@pytest.mark.parametrize(("text", "words"), [
    ("default: {fast: {name: ema, perod: 9}}", ["default.fast", "ema", "perod"]),
    ("5m: {rsi: {name: rsi, period: 1}}\ndefault: {}", ["5m.rsi", "rsi", "period"]),
    ("default: {x: {name: macd, fast: 26, slow: 12}}", ["default.x", "macd", "fast"]),
    ("default: {x: {name: kama}}", ["default.x", "kama"]),
    ("2m: {}\ndefault: {x: {name: sma}}", ["2m", "unknown key"]),
    ("1m: {x: {name: sma}}", ["3m", "missing"]),
    ("default: {x: {period: 3}}", ["default.x", "name"]),
])
def test_bad_indicator_config_is_one_line_config_error(tmp_path: Path, text: str, words: list[str]) -> None:
    path = tmp_path / "indicators.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_indicator_config(path)
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(str(path))
    for w in words:
        assert w in msg


def test_timeframe_entries_override_default() -> None:
    cfg = load_indicator_config(ROOT / "configs" / "indicators.yaml")
    assert cfg.for_timeframe("1m")["rsi"].params == {"period": 9}
    assert cfg.for_timeframe("5m")["rsi"].params == {"period": 14}
    with pytest.raises(ValueError, match="2m"):
        cfg.for_timeframe("2m")



def test_talib_runs_with_the_defaults_the_indicators_assume() -> None:
    """Unstable period 0 and default (non-Metastock) compatibility: the settings the seeding above matches."""
    for func in ("RSI", "ATR", "ADX", "PLUS_DI", "MINUS_DI", "EMA"):
        assert talib.get_unstable_period(func) == 0
    assert talib.get_compatibility() == 0
