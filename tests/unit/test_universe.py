"""configs/tokens.csv and the Kite token arithmetic in core.universe."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import ConfigError
from core.universe import (
    SEGMENT_CODES,
    by_key,
    is_tradable,
    load_universe,
    make_token,
    price_divisor,
    segment_of,
)

ROOT = Path(__file__).resolve().parents[2]
HEADER = "instrument_token,exchange_token,tradingsymbol,name,exchange,segment,instrument_type,tick_size,lot_size," \
         "last_price\n"


def test_shipped_universe_is_valid_and_varied() -> None:
    universe = load_universe(ROOT / "configs" / "tokens.csv")
    tokens = {i.instrument_token: i for i in universe}

    assert len(universe) >= 60
    assert tokens[738561].key == "NSE:RELIANCE" and tokens[408065].tradingsymbol == "INFY"
    assert tokens[256265].tradingsymbol == "NIFTY 50" and not tokens[256265].tradable
    assert tokens[260105].tradingsymbol == "NIFTY BANK"
    assert {segment_of(t) for t in tokens} >= {1, 2, 3, 4, 6, 9}
    assert all(i.instrument_token == make_token(i.exchange_token, i.segment_code) for i in universe)


@pytest.mark.parametrize(("token", "segment", "divisor", "tradable"), [
    (738561, 1, 100, True), (256265, 9, 100, False), (471555, 3, 10_000_000, True),
    (179259142, 6, 10_000, True), (13358850, 2, 100, True), (128083204, 4, 100, True),
])
def test_token_helpers(token: int, segment: int, divisor: int, tradable: bool) -> None:
    assert segment_of(token) == segment
    assert price_divisor(token) == divisor
    assert is_tradable(token) is tradable


def test_segment_codes_match_the_official_client() -> None:
    from kiteconnect import KiteTicker

    for name, code in KiteTicker.EXCHANGE_MAP.items():
        if name.upper() in SEGMENT_CODES:
            assert SEGMENT_CODES[name.upper()] == code


def _write(tmp_path: Path, *rows: str) -> Path:
    p = tmp_path / "tokens.csv"
    p.write_text(HEADER + "".join(r + "\n" for r in rows))
    return p


def test_duplicate_token_is_a_one_line_config_error(tmp_path: Path) -> None:
    row = "738561,2885,RELIANCE,RELIANCE INDUSTRIES,NSE,NSE,EQ,0.05,1,1545.6"
    p = _write(tmp_path, row, row.replace("RELIANCE,RELIANCE", "RELIANCE2,RELIANCE"))

    with pytest.raises(ConfigError) as err:
        load_universe(p)

    assert str(err.value) == f"{p}:3: instrument_token: duplicate 738561 (first at line 2)"


@pytest.mark.parametrize(("row", "key"), [
    ("738562,2885,RELIANCE,R,NSE,NSE,EQ,0.05,1,1545.6", "instrument_token"),
    ("738561,2885,RELIANCE,R,NSE,NSE,EQ,0.05,1,1545.62", "last_price"),
    ("738561,2885,RELIANCE,R,NSE,NSE,EQ,0.05,0,1545.6", "lot_size"),
    ("471555,1842,USDINR,U,CDS,CDS-FUT,FUT,0.00000001,1,88.0", "tick_size"),
    ("738561,2885,RELIANCE,R,XYZ,NSE,EQ,0.05,1,1545.6", "exchange"),
])
def test_bad_rows_name_file_line_and_key(tmp_path: Path, row: str, key: str) -> None:
    p = _write(tmp_path, row)

    with pytest.raises(ConfigError) as err:
        load_universe(p)

    assert str(err.value).startswith(f"{p}:2: {key}: ")
    assert "\n" not in str(err.value)


def test_by_key_indexes_exchange_and_symbol() -> None:
    universe = load_universe(ROOT / "configs" / "tokens.csv")

    keys = by_key(universe)

    assert keys["BSE:RELIANCE"].instrument_token == 128083204
    assert keys["CDS:USDINR25DECFUT"].price_divisor == 10_000_000
