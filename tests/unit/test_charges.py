"""backtest.charges: Zerodha's charges per executed order, worked by hand like a contract note.

Every expected amount below is worked by hand in the comments (rates from configs/charges.yaml,
i.e. zerodha.com/charges), never computed with the module under test. Rounding: each component to
the paisa half up, STT to the nearest rupee half up, GST 18% of the rounded
brokerage + exchange + SEBI. "value" is qty x price (the premium for options).
"""

from __future__ import annotations

import copy
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml

from backtest.charges import (
    CONFIG_CHECKS,
    BpsCharges,
    ChargeModel,
    Charges,
    NoCharges,
    default_path,
    load_charges,
    parse_charges_option,
    segment_for,
)
from core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "configs" / "charges.yaml"


@pytest.fixture(scope="module")
def zerodha() -> ChargeModel:
    return load_charges(SHIPPED)


def _same(got: Charges, brokerage: float, stt: float, exchange: float, sebi: float, stamp: float, gst: float,
          total: float) -> None:
    want = Charges(brokerage, stt, exchange, sebi, stamp, gst)
    for name in ("brokerage", "stt", "exchange", "sebi", "stamp", "gst"):
        assert getattr(got, name) == pytest.approx(getattr(want, name), abs=1e-9), name
    assert got.total == pytest.approx(total, abs=1e-9)


# -- equity intraday --------------------------------------------------------------------------------
def test_intraday_round_trip_matches_the_brokerage_calculator(zerodha: ChargeModel) -> None:
    day = date(2025, 6, 2)
    # BUY 100 @ 1000: value 100,000
    #   brokerage min(0.03% * 100,000 = 30, 20) = 20
    #   STT 0 (sell side only)
    #   exchange 0.00297% * 100,000 = 2.97
    #   SEBI 0.0001% * 100,000 = 0.10
    #   stamp 0.003% * 100,000 = 3.00
    #   GST 18% * (20 + 2.97 + 0.10 = 23.07) = 4.1526 -> 4.15
    #   total 20 + 2.97 + 0.10 + 3.00 + 4.15 = 30.22
    buy = zerodha.charges("intraday", "BUY", 100, 1000.0, day)
    _same(buy, 20, 0, 2.97, 0.10, 3.00, 4.15, total=30.22)
    # SELL 100 @ 1010: value 101,000
    #   brokerage min(30.30, 20) = 20
    #   STT 0.025% * 101,000 = 25.25 -> 25 (nearest rupee)
    #   exchange 0.00297% * 101,000 = 2.9997 -> 3.00
    #   SEBI 0.101 -> 0.10
    #   stamp 0 (buy side only)
    #   GST 18% * (20 + 3.00 + 0.10 = 23.10) = 4.158 -> 4.16
    #   total 20 + 25 + 3.00 + 0.10 + 4.16 = 52.26
    sell = zerodha.charges("intraday", "SELL", 100, 1010.0, day)
    _same(sell, 20, 25, 3.00, 0.10, 0, 4.16, total=52.26)
    # Round trip as the calculator shows it: turnover 201,000; brokerage 40; STT 25; exchange 5.97;
    # SEBI 0.20; stamp 3; GST 8.31; total 82.48.
    _same(buy + sell, 40, 25, 5.97, 0.20, 3.00, 8.31, total=82.48)


def test_small_intraday_order_pays_percent_brokerage_under_the_cap(zerodha: ChargeModel) -> None:
    # BUY 10 @ 512.35: value 5,123.50
    #   brokerage 0.03% * 5,123.50 = 1.53705 -> 1.54 (< 20)
    #   exchange 0.00297% * 5,123.50 = 0.15216795 -> 0.15
    #   SEBI 0.0051235 -> 0.01
    #   stamp 0.003% * 5,123.50 = 0.153705 -> 0.15
    #   GST 18% * (1.54 + 0.15 + 0.01 = 1.70) = 0.306 -> 0.31
    #   total 1.54 + 0.15 + 0.01 + 0.15 + 0.31 = 2.16
    got = zerodha.charges("intraday", "BUY", 10, 512.35, date(2025, 6, 2))
    _same(got, 1.54, 0, 0.15, 0.01, 0.15, 0.31, total=2.16)
    # 100 @ 660: 0.03% * 66,000 = 19.80, just under the cap; 100 @ 670: 20.10 -> capped at 20
    assert zerodha.charges("intraday", "BUY", 100, 660.0, date(2025, 6, 2)).brokerage == pytest.approx(19.80)
    assert zerodha.charges("intraday", "BUY", 100, 670.0, date(2025, 6, 2)).brokerage == 20


def test_intraday_before_october_2024_uses_the_older_exchange_rate(zerodha: ChargeModel) -> None:
    # 2024-09-30, BUY 100 @ 1000: exchange 0.00322% * 100,000 = 3.22
    #   GST 18% * (20 + 3.22 + 0.10 = 23.32) = 4.1976 -> 4.20
    #   total 20 + 3.22 + 0.10 + 3.00 + 4.20 = 30.52
    got = zerodha.charges("intraday", "BUY", 100, 1000.0, date(2024, 9, 30))
    _same(got, 20, 0, 3.22, 0.10, 3.00, 4.20, total=30.52)


# -- equity delivery --------------------------------------------------------------------------------
def test_delivery_pays_stt_both_sides_and_no_brokerage(zerodha: ChargeModel) -> None:
    day = date(2025, 6, 2)
    # BUY 50 @ 2400: value 120,000
    #   brokerage 0; STT 0.1% = 120; exchange 0.00297% = 3.564 -> 3.56; SEBI 0.12
    #   stamp 0.015% = 18.00; GST 18% * (0 + 3.56 + 0.12 = 3.68) = 0.6624 -> 0.66
    #   total 120 + 3.56 + 0.12 + 18 + 0.66 = 142.34
    _same(zerodha.charges("delivery", "BUY", 50, 2400.0, day), 0, 120, 3.56, 0.12, 18.00, 0.66, total=142.34)
    # SELL 50 @ 2450: value 122,500
    #   STT 0.1% = 122.5 -> 123 (half up; Python's round() would give 122)
    #   exchange 0.00297% = 3.63825 -> 3.64; SEBI 0.1225 -> 0.12; stamp 0
    #   GST 18% * (3.64 + 0.12 = 3.76) = 0.6768 -> 0.68
    #   total 123 + 3.64 + 0.12 + 0.68 = 127.44
    _same(zerodha.charges("delivery", "SELL", 50, 2450.0, day), 0, 123, 3.64, 0.12, 0, 0.68, total=127.44)


def test_delivery_on_bse_uses_bse_exchange_rate(zerodha: ChargeModel) -> None:
    # BUY 50 @ 2400 on BSE: exchange 0.00375% * 120,000 = 4.50
    #   GST 18% * (4.50 + 0.12 = 4.62) = 0.8316 -> 0.83
    #   total 120 + 4.50 + 0.12 + 18 + 0.83 = 143.45
    got = zerodha.charges("delivery", "BUY", 50, 2400.0, date(2025, 6, 2), exchange="BSE")
    _same(got, 0, 120, 4.50, 0.12, 18.00, 0.83, total=143.45)


# -- futures ----------------------------------------------------------------------------------------
def test_futures_sell_stt_rises_from_april_2026(zerodha: ChargeModel) -> None:
    # SELL 75 NIFTY FUT @ 24,000: value 1,800,000
    #   brokerage min(540, 20) = 20; exchange 0.00173% = 31.14; SEBI 1.80; stamp 0
    #   GST 18% * (20 + 31.14 + 1.80 = 52.94) = 9.5292 -> 9.53
    # 2026-03-31: STT 0.02% = 360 -> total 20 + 360 + 31.14 + 1.80 + 9.53 = 422.47
    # 2026-04-01: STT 0.05% = 900 -> total 20 + 900 + 31.14 + 1.80 + 9.53 = 962.47
    before = zerodha.charges("futures", "SELL", 75, 24_000.0, date(2026, 3, 31), exchange="NFO")
    after = zerodha.charges("futures", "SELL", 75, 24_000.0, date(2026, 4, 1), exchange="NFO")
    _same(before, 20, 360, 31.14, 1.80, 0, 9.53, total=422.47)
    _same(after, 20, 900, 31.14, 1.80, 0, 9.53, total=962.47)


def test_futures_buy_pays_stamp_and_no_stt(zerodha: ChargeModel) -> None:
    # BUY 75 @ 24,000 on 2026-04-01: STT 0; stamp 0.002% * 1,800,000 = 36.00
    #   total 20 + 31.14 + 1.80 + 36.00 + 9.53 = 98.47
    got = zerodha.charges("futures", "BUY", 75, 24_000.0, date(2026, 4, 1), exchange="NFO")
    _same(got, 20, 0, 31.14, 1.80, 36.00, 9.53, total=98.47)


def test_futures_before_october_2024_use_the_older_stt_and_exchange_rates(zerodha: ChargeModel) -> None:
    # 2024-09-30, SELL 75 @ 24,000: STT 0.0125% * 1,800,000 = 225; exchange 0.0019% = 34.20
    #   GST 18% * (20 + 34.20 + 1.80 = 56.00) = 10.08
    #   total 20 + 225 + 34.20 + 1.80 + 10.08 = 291.08
    got = zerodha.charges("futures", "SELL", 75, 24_000.0, date(2024, 9, 30), exchange="NFO")
    _same(got, 20, 225, 34.20, 1.80, 0, 10.08, total=291.08)


# -- options ----------------------------------------------------------------------------------------
def test_options_sell_stt_on_premium_rises_from_april_2026(zerodha: ChargeModel) -> None:
    # SELL 75 @ 120.50 premium: value 9,037.50
    #   brokerage flat 20; exchange 0.03503% = 3.16583625 -> 3.17; SEBI 0.0090375 -> 0.01
    #   GST 18% * (20 + 3.17 + 0.01 = 23.18) = 4.1724 -> 4.17
    # 2026-03-31: STT 0.1% = 9.0375 -> 9;      total 20 + 9 + 3.17 + 0.01 + 4.17 = 36.35
    # 2026-04-01: STT 0.15% = 13.55625 -> 14;  total 20 + 14 + 3.17 + 0.01 + 4.17 = 41.35
    before = zerodha.charges("options", "SELL", 75, 120.5, date(2026, 3, 31), exchange="NFO")
    after = zerodha.charges("options", "SELL", 75, 120.5, date(2026, 4, 1), exchange="NFO")
    _same(before, 20, 9, 3.17, 0.01, 0, 4.17, total=36.35)
    _same(after, 20, 14, 3.17, 0.01, 0, 4.17, total=41.35)


def test_options_buy_pays_flat_brokerage_and_stamp_on_premium(zerodha: ChargeModel) -> None:
    # BUY 75 @ 120.50 on 2026-04-01: stamp 0.003% * 9,037.50 = 0.271125 -> 0.27
    #   total 20 + 3.17 + 0.01 + 0.27 + 4.17 = 27.62
    got = zerodha.charges("options", "BUY", 75, 120.5, date(2026, 4, 1), exchange="NFO")
    _same(got, 20, 0, 3.17, 0.01, 0.27, 4.17, total=27.62)
    # a far OTM lot at 0.05 (value 3.75) still pays the flat 20
    assert zerodha.charges("options", "BUY", 75, 0.05, date(2026, 4, 1)).brokerage == 20


def test_options_before_october_2024_use_the_older_rates(zerodha: ChargeModel) -> None:
    # 2024-09-30, SELL 75 @ 120.50: STT 0.0625% * 9,037.50 = 5.6484375 -> 6
    #   exchange 0.0495% = 4.4735625 -> 4.47; SEBI 0.01
    #   GST 18% * (20 + 4.47 + 0.01 = 24.48) = 4.4064 -> 4.41
    #   total 20 + 6 + 4.47 + 0.01 + 4.41 = 34.89
    got = zerodha.charges("options", "SELL", 75, 120.5, date(2024, 9, 30), exchange="NFO")
    _same(got, 20, 6, 4.47, 0.01, 0, 4.41, total=34.89)


# -- periods, rounding, bad input -------------------------------------------------------------------
@pytest.mark.parametrize(("segment", "day", "stt_sell"), [
    ("futures", date(2023, 4, 1), "0.0125"),
    ("futures", date(2024, 9, 30), "0.0125"),
    ("futures", date(2024, 10, 1), "0.02"),
    ("futures", date(2026, 3, 31), "0.02"),
    ("futures", date(2026, 4, 1), "0.05"),
    ("futures", date(2031, 1, 1), "0.05"),
    ("options", date(2024, 9, 30), "0.0625"),
    ("options", date(2024, 10, 1), "0.1"),
    ("options", date(2026, 4, 1), "0.15"),
])
def test_the_period_in_force_is_the_last_starting_on_or_before_the_day(
        zerodha: ChargeModel, segment: str, day: date, stt_sell: str) -> None:
    assert str(zerodha.period(segment, day).stt_pct.sell) == stt_sell


def test_a_day_before_the_first_period_is_an_error(zerodha: ChargeModel) -> None:
    with pytest.raises(ValueError, match=r"no futures charges before 2023-04-01 \(trade day 2023-03-31\)"):
        zerodha.charges("futures", "SELL", 75, 24_000.0, date(2023, 3, 31))


def test_unrounded_amounts_keep_every_fraction() -> None:
    model = load_charges(SHIPPED, round_to_paise=False)
    # SELL 100 @ 1010 intraday: STT 25.25; exchange 2.9997; SEBI 0.101
    #   GST 18% * (20 + 2.9997 + 0.101 = 23.1007) = 4.158126
    got = model.charges("intraday", "SELL", 100, 1010.0, date(2025, 6, 2))
    _same(got, 20, 25.25, 2.9997, 0.101, 0, 4.158126, total=52.508826)


@pytest.mark.parametrize(("segment", "side", "qty", "price", "match"), [
    ("commodity", "BUY", 1, 100.0, "unknown charges segment 'commodity'"),
    ("intraday", "buy", 1, 100.0, "side must be BUY or SELL"),
    ("intraday", "BUY", 0, 100.0, "qty must be >= 1"),
    ("intraday", "BUY", 1, float("nan"), "price must be a finite number"),
])
def test_bad_order_is_a_one_line_value_error(zerodha: ChargeModel, segment: str, side: str, qty: int, price: float,
                                             match: str) -> None:
    with pytest.raises(ValueError, match=match):
        zerodha.charges(segment, side, qty, price, date(2025, 6, 2))


def test_unknown_exchange_is_a_value_error(zerodha: ChargeModel) -> None:
    with pytest.raises(ValueError, match="no exchange charges for exchange 'MCX'"):
        zerodha.charges("futures", "BUY", 1, 100.0, date(2025, 6, 2), exchange="MCX")


# -- segment mapping --------------------------------------------------------------------------------
@pytest.mark.parametrize(("product", "exchange", "itype", "segment"), [
    ("CNC", "NSE", None, "delivery"),
    ("CNC", "BSE", "EQ", "delivery"),
    ("NRML", "NSE", "EQ", "delivery"),
    ("MIS", "NSE", None, "intraday"),
    ("MIS", "BSE", "EQ", "intraday"),
    ("NRML", "NFO", "FUT", "futures"),
    ("MIS", "NFO", "FUT", "futures"),
    ("NRML", "BFO", "CE", "options"),
    ("MIS", "NFO", "PE", "options"),
])
def test_segment_for_maps_kite_product_exchange_and_type(product: str, exchange: str, itype: str | None,
                                                         segment: str) -> None:
    assert segment_for(product, exchange, itype) == segment


@pytest.mark.parametrize(("product", "exchange", "itype", "match"), [
    ("CNC", "NFO", "FUT", "CNC on NFO"),
    ("NRML", "NFO", None, "must be FUT, CE or PE"),
    ("MIS", "NSE", "FUT", "expected EQ"),
    ("MIS", "MCX", "FUT", "no charges for exchange 'MCX'"),
    ("BO", "NSE", None, "product must be CNC, MIS or NRML"),
])
def test_segment_for_rejects_what_kite_would_not_trade(product: str, exchange: str, itype: str | None,
                                                       match: str) -> None:
    with pytest.raises(ValueError, match=match):
        segment_for(product, exchange, itype)


# -- the simple alternatives and the CLI option -----------------------------------------------------
def test_no_charges_are_all_zero() -> None:
    got = NoCharges().charges("options", "SELL", 75, 120.5, date(2026, 4, 1))
    assert got == Charges() and got.total == 0


def test_bps_charges_are_a_share_of_the_order_value_as_brokerage() -> None:
    # 5 bps of 100 @ 1000 = 0.0005 * 100,000 = 50
    got = BpsCharges(5).charges("intraday", "BUY", 100, 1000.0, date(2025, 6, 2))
    assert got.brokerage == pytest.approx(50.0) and got.total == pytest.approx(50.0)
    assert (got.stt, got.exchange, got.sebi, got.stamp, got.gst) == (0, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="bps must be a finite number >= 0"):
        BpsCharges(-1)


def test_parse_charges_option_builds_each_model() -> None:
    assert isinstance(parse_charges_option("zerodha", SHIPPED), ChargeModel)
    assert isinstance(parse_charges_option(" None "), NoCharges)
    assert parse_charges_option("bps=2.5") == BpsCharges(2.5)
    assert parse_charges_option("BPS=0") == BpsCharges(0)


@pytest.mark.parametrize(("text", "match"), [
    ("", "expected zerodha, none or bps=N"),
    ("flat", "expected zerodha, none or bps=N"),
    ("bps=", "N must be a number of basis points"),
    ("bps=five", "N must be a number of basis points"),
    ("bps=-1", "N must be a finite number >= 0"),
    ("bps=inf", "N must be a finite number >= 0"),
])
def test_parse_charges_option_rejects_bad_text_in_one_line(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match) as err:
        parse_charges_option(text)
    assert "\n" not in str(err.value)


def test_parse_charges_option_zerodha_with_a_bad_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        parse_charges_option("zerodha", tmp_path / "missing.yaml")


# -- the file ---------------------------------------------------------------------------------------
def test_shipped_file_is_the_registered_check_and_loads() -> None:
    assert [name for name, _ in CONFIG_CHECKS] == ["charges.yaml"]
    _, check = CONFIG_CHECKS[0]
    assert isinstance(check(SHIPPED), ChargeModel)


def test_default_path_follows_the_config_dir_and_the_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHARGES_CONFIG", raising=False)
    monkeypatch.setenv("TRADESTACK_CONFIG_DIR", str(tmp_path))
    assert default_path() == tmp_path / "charges.yaml"
    monkeypatch.setenv("CHARGES_CONFIG", str(SHIPPED))
    assert isinstance(load_charges(), ChargeModel)


def _shipped() -> dict[str, Any]:
    data = yaml.safe_load(SHIPPED.read_text())
    assert isinstance(data, dict)
    return data


def _unknown_segment(d: dict[str, Any]) -> None:
    d["segments"]["commodity"] = copy.deepcopy(d["segments"]["futures"])


def _unknown_key(d: dict[str, Any]) -> None:
    d["segments"]["futures"][1]["stt_pct"]["sel"] = 0.02


def _descending(d: dict[str, Any]) -> None:
    d["segments"]["futures"].reverse()


def _repeated_date(d: dict[str, Any]) -> None:
    d["segments"]["options"][2]["from"] = d["segments"]["options"][1]["from"]


def _negative_rate(d: dict[str, Any]) -> None:
    d["segments"]["options"][0]["stt_pct"]["sell"] = -0.1


def _two_brokerages(d: dict[str, Any]) -> None:
    d["segments"]["options"][0]["brokerage"]["pct"] = 0.03


def _missing_segment(d: dict[str, Any]) -> None:
    del d["segments"]["delivery"]


@pytest.mark.parametrize(("mutate", "message"), [
    (_unknown_segment, "segments.commodity: unknown key"),
    (_unknown_key, "segments.futures.1.stt_pct.sel: unknown key"),
    (_descending, "segments.futures: Value error, periods must ascend by 'from': 1.from 2024-10-01 is not after "
                  "0.from 2026-04-01"),
    (_repeated_date, "segments.options: Value error, periods must ascend by 'from': 2.from 2024-10-01 is not after "
                     "1.from 2024-10-01"),
    (_negative_rate, "segments.options.0.stt_pct.sell: Input should be greater than or equal to 0 (got -0.1)"),
    (_two_brokerages, "segments.options.0.brokerage: Value error, give either pct"),
    (_missing_segment, "segments.delivery: Field required"),
])
def test_bad_file_stops_with_one_line_naming_file_and_key(tmp_path: Path, mutate: Any, message: str) -> None:
    data = _shipped()
    mutate(data)
    f = tmp_path / "charges.yaml"
    f.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        load_charges(f)
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith(f"{f}: {message}"), text
