"""Event contracts: committed JSON Schemas match the models; models enforce DESIGN section 4."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from schemas import Bar, Fill, Order, Tick
from schemas.export import render
from schemas.models import CONTRACTS

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_710_215_100_000  # 2024-03-12 09:15 IST


@pytest.mark.parametrize("name", sorted(CONTRACTS))
def test_committed_schema_matches_model(name):
    committed = (ROOT / "schemas" / f"{name}.schema.json").read_text()
    assert committed == render(name), f"run `python -m schemas.export`: {name} drifted"


def test_export_check_cli_passes_on_committed_files():
    r = subprocess.run([sys.executable, "-m", "schemas.export", "--check"], cwd=ROOT, capture_output=True)
    assert r.returncode == 0, r.stderr


def test_order_schema_file_exists_and_names_required_fields():
    import json

    schema = json.loads((ROOT / "schemas" / "order.schema.json").read_text())
    for f in ("order_id", "strategy", "instrument_token", "side", "order_type", "product", "qty",
              "signal_ts", "created_ts"):
        assert f in schema["properties"]
        assert f in schema["required"]


def _tick(**kw):
    base = dict(instrument_token=738561, exchange_ts=T0, recv_ts=T0 + 2, ltp=2500.5, volume=10, last_qty=1,
                oi=None, bid=2500.0, ask=2501.0, bid_qty=5, ask_qty=7)
    base.update(kw)
    return base


def test_tick_keeps_unknown_fields_and_rejects_missing_required():
    t = Tick.model_validate(_tick(source="kite"))
    assert t.model_dump()["source"] == "kite"
    bad = _tick()
    del bad["ltp"]
    with pytest.raises(ValidationError):
        Tick.model_validate(bad)


def test_bar_rejects_unknown_timeframe_and_negative_volume():
    ok = dict(instrument_token=1, tf="5m", ts=T0, open=1, high=2, low=0.5, close=1.5, volume=3, ticks=2)
    Bar.model_validate(ok)
    with pytest.raises(ValidationError):
        Bar.model_validate({**ok, "tf": "2m"})
    with pytest.raises(ValidationError):
        Bar.model_validate({**ok, "volume": -1})


def test_order_side_and_fill_venue_are_enums():
    order = dict(order_id="s1-738561-BUY-1", strategy="s1", instrument_token=738561, symbol="RELIANCE",
                 exchange="NSE", side="BUY", order_type="LIMIT", product="MIS", price=1.0, trigger_price=None,
                 stop_loss=None, qty=None, tf="5m", signal_ts=T0, created_ts=T0 + 2)
    Order.model_validate(order)
    with pytest.raises(ValidationError):
        Order.model_validate({**order, "side": "HOLD"})
    fill = dict(fill_id="f1", order_id="o1", broker_order_id="b1", instrument_token=1, side="SELL", qty=1,
                price=1.0, ts=T0, venue="paper", strategy="s1")
    Fill.model_validate(fill)
    with pytest.raises(ValidationError):
        Fill.model_validate({**fill, "venue": "backtest"})
