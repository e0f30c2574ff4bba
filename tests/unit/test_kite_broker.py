"""What each Kite failure means for a placement (placed at most once), tags, and order parameters."""

from __future__ import annotations

import pytest
import requests
from kiteconnect import exceptions as kex

from execution.kite_broker import classify, latest_by_tag, place_params, tag_for


@pytest.mark.parametrize(("exc", "outcome"), [
    (kex.InputException("Invalid `quantity`.", code=400), "rejected"),
    (kex.OrderException("RMS: margin exceeds", code=400), "rejected"),
    (kex.InputException("Order request timed out. Please check the order book before placing the order again.",
                        code=400), "ambiguous"),
    (kex.NetworkException("Too many requests", code=429), "ambiguous"),
    (kex.NetworkException("Gateway timed out", code=504), "ambiguous"),
    (kex.DataException("OMS down", code=502), "ambiguous"),
    (kex.GeneralException("Something unexpected", code=500), "ambiguous"),
    (kex.TokenException("Incorrect `api_key` or `access_token`.", code=403), "token"),
    (kex.PermissionException("Order request from an IP that is not registered for this app.", code=403),
     "ip_blocked"),
    (kex.PermissionException("Insufficient permission for that call.", code=403), "rejected"),
    (requests.exceptions.ReadTimeout("read timed out"), "ambiguous"),
    (requests.exceptions.ConnectTimeout("connect timed out"), "not_sent"),
    (requests.exceptions.ConnectionError("NewConnectionError: Connection refused"), "not_sent"),
    (requests.exceptions.ConnectionError("RemoteDisconnected('Remote end closed connection')"), "ambiguous"),
    (RuntimeError("anything else"), "ambiguous"),
])
def test_every_failure_is_classified_and_only_a_clear_refusal_is_final(exc: Exception, outcome: str) -> None:
    assert classify(exc).outcome == outcome


def test_tag_is_the_order_id_when_kite_allows_it_else_a_stable_digest() -> None:
    assert tag_for("0123456789abcdef0123") == "0123456789abcdef0123"
    long = tag_for("flatten|s1|408065|2026-11-20T10:00")
    assert len(long) == 20 and long.isalnum() and long == tag_for("flatten|s1|408065|2026-11-20T10:00")


def test_place_params_set_market_protection_only_where_kite_requires_it() -> None:
    base = {"exchange": "NSE", "symbol": "INFY", "side": "BUY", "qty": 5, "product": "MIS", "price": None,
            "trigger_price": None}
    m = place_params({**base, "order_type": "MARKET"}, "t1", -1)
    assert m["market_protection"] == -1 and "price" not in m and m["tag"] == "t1" and m["variety"] == "regular"
    slm = place_params({**base, "order_type": "SL-M", "trigger_price": 99.5}, "t2", 2.5)
    assert slm["market_protection"] == 2.5 and slm["trigger_price"] == 99.5
    lim = place_params({**base, "order_type": "LIMIT", "price": 100.0}, "t3", -1)
    assert "market_protection" not in lim and lim["price"] == 100.0


def test_book_grouped_by_tag_oldest_first() -> None:
    book = [{"order_id": "2", "tag": "a", "order_timestamp": "2026-11-20 10:00:02"},
            {"order_id": "1", "tag": "a", "order_timestamp": "2026-11-20 10:00:01"},
            {"order_id": "3", "tag": None}]
    grouped = latest_by_tag(book)
    assert [o["order_id"] for o in grouped["a"]] == ["1", "2"] and [o["order_id"] for o in grouped[""]] == ["3"]
