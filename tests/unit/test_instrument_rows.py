"""Instrument master rows: Kite dump -> table row -> tokens.csv row, and export filters."""

from __future__ import annotations

from datetime import date

from ingestion.instrument_rows import ExportFilter, db_row, dedupe, universe_row


def _rec(**kw):
    base = dict(instrument_token=738561, exchange_token="2885", tradingsymbol="RELIANCE", name="RELIANCE IND",
                last_price=1545.6, expiry="", strike=0.0, tick_size=0.05, lot_size=1, instrument_type="EQ",
                segment="NSE", exchange="NSE")
    base.update(kw)
    return base


def _row(**kw):
    from ingestion.instrument_rows import DB_COLUMNS
    return dict(zip(DB_COLUMNS, db_row(_rec(**kw)), strict=True))


def test_db_row_types_and_expiry():
    r = _row(expiry=date(2026, 11, 26), instrument_type="FUT", segment="NFO-FUT", exchange="NFO")
    assert r["exchange_token"] == 2885 and r["expiry"] == date(2026, 11, 26) and r["name"] == "RELIANCE IND"
    assert _row()["expiry"] is None


def test_dedupe_keeps_last_row_per_token():
    rows = [db_row(_rec(last_price=1.0)), db_row(_rec(instrument_token=1, exchange_token="0")),
            db_row(_rec(last_price=2.0))]
    out = dedupe(rows)
    assert [r[0] for r in out] == [738561, 1] and out[0][4] == 2.0


def test_universe_row_equity_valid_and_price_snapped_to_tick():
    row, why = universe_row(_row(last_price=1545.62))
    assert why == "" and row["last_price"] == "1545.6" and row["tick_size"] == "0.05"


def test_universe_row_index_gets_tick_and_zero_lot():
    row, why = universe_row(_row(instrument_token=256265, exchange_token="1001", tradingsymbol="NIFTY 50",
                                 segment="INDICES", tick_size=0.0, lot_size=0, last_price=26052.65))
    assert why == "" and row["tick_size"] == "0.05" and row["lot_size"] == "0"


def test_universe_row_unusable_rows_skipped_with_reason():
    assert universe_row(_row(last_price=0.0)) == (None, "no last_price")
    row, why = universe_row(_row(instrument_type="SPREAD"))
    assert row is None and why.startswith("instrument_type")
    row, why = universe_row(_row(exchange="NCDEX"))
    assert row is None and why.startswith("exchange")


def test_export_filter_matching_and_order():
    flt = ExportFilter.build(["nse,bse"], None, ["EQ"], ["NSE:TCS", "infy"])
    assert flt.matches({"exchange": "NSE", "segment": "NSE", "instrument_type": "EQ", "tradingsymbol": "TCS"})
    assert not flt.matches({"exchange": "BSE", "segment": "BSE", "instrument_type": "EQ", "tradingsymbol": "TCS"})
    assert flt.matches({"exchange": "BSE", "segment": "BSE", "instrument_type": "EQ", "tradingsymbol": "INFY"})
    assert not flt.matches({"exchange": "NFO", "instrument_type": "EQ", "tradingsymbol": "INFY"})
    rows = [{"exchange": "NSE", "tradingsymbol": "INFY"}, {"exchange": "NSE", "tradingsymbol": "TCS"}]
    assert [r["tradingsymbol"] for r in sorted(rows, key=flt.order_key)] == ["TCS", "INFY"]
    assert ExportFilter.build().matches({"exchange": "MCX"})
