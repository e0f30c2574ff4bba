"""schemas.encode / schemas.decode: how services off the hot path build and read their messages."""

from __future__ import annotations

import orjson
import pytest

from core.errors import PoisonMessage
from schemas import Bar, Order, Tick, decode, encode

T0 = 1_710_215_100_000  # 2024-03-12 09:15 IST
ORDER = dict(order_id="s1-738561-BUY-1", strategy="s1", instrument_token=738561, symbol="RELIANCE", exchange="NSE",
             side="BUY", order_type="LIMIT", product="MIS", price=2500.5, trigger_price=None, stop_loss=None, qty=None,
             tf="5m", signal_ts=T0, created_ts=T0 + 5)


def test_round_trip_keeps_values_and_extra_fields():
    order = Order.model_validate({**ORDER, "note": {"why": ["breakout", 1]}})
    data = encode(order)
    assert orjson.loads(data)["note"] == {"why": ["breakout", 1]}
    back = decode(Order, data)
    assert back == order and back.model_dump() == order.model_dump()


def test_decode_undecodable_bytes_is_poison():
    with pytest.raises(PoisonMessage, match="^invalid JSON"):
        decode(Order, b"{not json")
    with pytest.raises(PoisonMessage, match="empty message value"):
        decode(Order, None)


@pytest.mark.parametrize(("change", "where"), [
    ({"side": "HOLD"}, "side"),
    ({"instrument_token": True}, "instrument_token"),  # a bool is not an int on the bus
    ({"signal_ts": float(T0)}, "signal_ts"),  # nor is a float
    ({"instrument_token": 2**63}, "instrument_token"),
    ({"created_ts": 1}, "created_ts"),  # before 2000: not epoch ms
    ({"price": "2500.5"}, "price"),
])
def test_decode_schema_invalid_is_one_line_poison_naming_the_field(change, where):
    with pytest.raises(PoisonMessage) as err:
        decode(Order, orjson.dumps({**ORDER, **change}))
    msg = str(err.value)
    assert msg.startswith(f"schema: {where}: ") and "\n" not in msg


def test_non_finite_floats_and_non_objects_are_poison():
    with pytest.raises(PoisonMessage, match="^invalid JSON"):  # orjson, like the hot path, has no NaN
        decode(Order, orjson.dumps(ORDER).replace(b"2500.5", b"NaN"))
    with pytest.raises(PoisonMessage, match="^invalid JSON"):
        decode(Order, orjson.dumps(ORDER).replace(b"2500.5", b"1e400"))
    with pytest.raises(ValueError, match="^Order: schema: price: "):  # built in Python: refused on encode
        encode(Order.model_construct(**{**ORDER, "price": float("inf")}))
    with pytest.raises(PoisonMessage, match="^schema: message: "):
        decode(Tick, b"[1, 2]")


def test_encode_refuses_an_instance_mutated_out_of_contract():
    bar = Bar(instrument_token=1, tf="1m", ts=T0, open=1.0, high=2.0, low=0.5, close=1.5, volume=3, ticks=2)
    assert decode(Bar, encode(bar)) == bar
    bar.high = 0.1  # below low: no longer a Bar (models do not validate assignment)
    with pytest.raises(ValueError, match="^Bar: schema: "):
        encode(bar)
