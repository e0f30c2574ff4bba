"""matcher_cpp's Python API (DESIGN section 11): scenarios through submit/cancel/modify, events as objects,
the batch API's arrays, and clear errors for bad calls. The book's rules themselves are also checked
in C++ (test_matcher_native.py) and against the reference book over 1M random orders (test_matcher_fuzz.py).
"""

from __future__ import annotations

import numpy as np
import pytest

import matcher_cpp
from matcher_cpp import OrderBook


def kinds(events: list) -> list[str]:
    return [e.kind for e in events]


def test_submit_when_it_crosses_then_trades_at_maker_prices_in_price_time_order() -> None:
    book = OrderBook()
    book.submit(1, "SELL", "LIMIT", 5, 101)
    book.submit(2, "SELL", "LIMIT", 5, 100)
    book.submit(3, "SELL", "LIMIT", 5, 100)
    ev = book.submit(4, "BUY", "LIMIT", qty=12, price=101)
    trades = [(e.maker_id, e.taker_id, e.price, e.qty) for e in ev if e.kind == "trade"]
    assert trades == [(2, 4, 100, 5), (3, 4, 100, 5), (1, 4, 101, 2)]
    assert kinds(ev) == ["accepted", "trade", "done", "trade", "done", "trade", "done"]
    assert ev[-1].order_id == 4 and ev[0].order_id == 4 and ev[0].price == 101 and ev[0].qty == 12
    assert book.best_ask() == 101 and book.best_bid() is None and book.last_price() == 101
    assert book.depth(5) == ([], [(101, 3)])
    assert book.order(1) == {"order_id": 1, "side": "SELL", "order_type": "LIMIT", "price": 101, "qty": 3,
                             "trigger": 0, "owner": 0, "state": "resting"}
    assert book.order(2) is None and len(book) == 1


def test_ioc_and_market_remainders_are_cancelled_with_a_reason() -> None:
    book = OrderBook()
    book.submit(1, "BUY", "LIMIT", 4, 100)
    ev = book.submit(2, "SELL", "IOC", 10, 99)
    assert (ev[-1].kind, ev[-1].qty, ev[-1].reason) == ("cancelled", 6, "unfilled")
    ev = book.submit(3, "SELL", "MARKET", 1)
    assert (ev[-1].kind, ev[-1].reason) == ("cancelled", "unfilled")
    assert len(book) == 0


def test_fok_all_or_none_and_self_trade_prevention() -> None:
    book = OrderBook()
    book.submit(1, "SELL", "LIMIT", 5, 100, owner=7)
    ev = book.submit(2, "BUY", "FOK", 6, 100)
    assert [(e.kind, e.reason) for e in ev] == [("accepted", ""), ("cancelled", "fok")]
    ev = book.submit(3, "BUY", "LIMIT", 5, 100, owner=7)
    assert [(e.kind, e.reason) for e in ev] == [("accepted", ""), ("cancelled", "self_trade")]
    assert book.order(1)["qty"] == 5  # untouched


def test_stop_waits_for_the_last_price_then_runs_as_market() -> None:
    book = OrderBook()
    book.submit(1, "SELL", "LIMIT", 5, 105)
    assert kinds(book.submit(2, "BUY", "SL-M", 3, trigger=104)) == ["accepted"]
    assert book.order(2)["state"] == "stop"
    assert book.set_last_price(103) == []
    ev = book.set_last_price(104)
    assert [(e.kind, e.order_id, e.price, e.qty) for e in ev] == [
        ("triggered", 2, 104, 3), ("trade", 2, 105, 3), ("done", 2, 0, 0)]
    with pytest.raises(ValueError, match="last price"):
        book.set_last_price(0)


def test_modify_keeps_priority_only_for_a_smaller_quantity_at_the_same_price() -> None:
    book = OrderBook()
    book.submit(1, "BUY", "LIMIT", 5, 100)
    book.submit(2, "BUY", "LIMIT", 5, 100)
    assert [(e.kind, e.qty) for e in book.modify(1, 100, 4)] == [("accepted", 4)]
    assert book.submit(9, "SELL", "LIMIT", 1, 100)[1].maker_id == 1
    book.modify(1, 100, 10)  # larger: behind 2
    assert book.submit(10, "SELL", "LIMIT", 1, 100)[1].maker_id == 2
    book.modify(2, 99, 4)
    book.modify(2, 100, 4)  # price change and back: behind 1
    assert book.submit(11, "SELL", "LIMIT", 1, 100)[1].maker_id == 1
    assert [o["order_id"] for o in book.orders()] == [1, 2]


def test_cancel_of_unknown_or_filled_order_is_rejected() -> None:
    book = OrderBook()
    assert [(e.kind, e.reason) for e in book.cancel(5)] == [("rejected", "unknown_order")]
    book.submit(1, "SELL", "LIMIT", 2, 100)
    book.submit(2, "BUY", "LIMIT", 2, 100)
    assert book.cancel(1)[0].reason == "unknown_order"
    book.submit(3, "SELL", "LIMIT", 2, 100)
    assert [(e.kind, e.reason, e.qty) for e in book.cancel(3)] == [("cancelled", "user", 2)]


def test_events_are_read_only_comparable_and_printable() -> None:
    a = OrderBook().submit(1, "BUY", "LIMIT", 3, 50)[0]
    b = OrderBook().submit(1, "BUY", "LIMIT", 3, 50)[0]
    assert a == b and a != OrderBook().submit(1, "BUY", "LIMIT", 4, 50)[0]
    assert a.as_tuple() == ("accepted", 1, 0, 0, 50, 3, "")
    assert repr(a) == "Event(accepted, order_id=1, price=50, qty=3)"
    assert isinstance(a, matcher_cpp.Event)
    with pytest.raises(AttributeError):
        a.qty = 5  # type: ignore[misc]


@pytest.mark.parametrize(("call", "exc", "match"), [
    (lambda b: b.submit(1, "HOLD", "LIMIT", 1, 1), ValueError, "side must be one of BUY, SELL, got 'HOLD'"),
    (lambda b: b.submit(1, "BUY", "GTC", 1, 1), ValueError, "order_type must be one of LIMIT, MARKET, IOC, FOK, SL"),
    (lambda b: b.submit(1, "BUY", "LIMIT"), TypeError, "missing required argument 'qty'"),
    (lambda b: b.submit(1, "BUY", "LIMIT", 1, 1, colour=3), TypeError, "unexpected keyword argument 'colour'"),
    (lambda b: b.submit(1, "BUY", "LIMIT", 1, 1, qty=2), TypeError, "multiple values for argument 'qty'"),
    (lambda b: b.submit("x", "BUY", "LIMIT", 1, 1), TypeError, "integer"),
    (lambda b: b.cancel(2**70), OverflowError, "too big"),
    (lambda b: b.modify(1, 1), TypeError, "missing required argument 'qty'"),
])
def test_bad_calls_raise_one_clear_error(call, exc, match) -> None:  # noqa: ANN001
    with pytest.raises(exc, match=match):
        call(OrderBook())


def test_uninitialised_book_raises_instead_of_crashing() -> None:
    book = OrderBook.__new__(OrderBook)
    with pytest.raises(TypeError, match="__init__"):
        book.submit(1, "BUY", "LIMIT", 1, 1)


def test_batch_returns_events_as_arrays_with_the_row_that_caused_them() -> None:
    book = OrderBook()
    out = book.batch(order_id=np.array([1, 2, 3, 1], dtype=np.int32), side=[1, 1, 0, 0], order_type=[0, 0, 1, 0],
                     qty=[5, 5, 7, 0], price=[100, 101, 0, 0], op=[0, 0, 0, 1])
    assert out["index"].tolist() == [0, 1, 2, 2, 2, 2, 2, 3]
    names = [matcher_cpp.KINDS[k] for k in out["kind"]]
    assert names == ["accepted", "accepted", "accepted", "trade", "done", "trade", "done", "rejected"]
    assert out["maker_id"][3] == 1 and out["price"][5] == 101 and out["qty"][5] == 2
    assert matcher_cpp.REASONS[out["reason"][-1]] == "unknown_order"  # 1 was filled by 3
    assert out["kind"].dtype == np.uint8 and out["order_id"].dtype == np.int64
    assert book.depth() == ([], [(101, 3)])


@pytest.mark.parametrize(("kwargs", "exc", "match"), [
    ({"order_id": [1, 2], "side": [0]}, ValueError, "side must be one-dimensional with 2 items"),
    ({"order_id": [1], "side": [2]}, ValueError, r"side\[0\] = 2 is not a valid code"),
    ({"order_id": [1], "op": [9]}, ValueError, r"op\[0\] = 9"),
    ({"order_id": [[1]]}, TypeError, "one-dimensional"),
    ({"order_id": [1], "price": np.array([100.5])}, TypeError, "price must be an integer array, got dtype float64"),
    ({"order_id": np.array([2**63], dtype=np.uint64)}, ValueError, r"order_id\[0\] does not fit int64"),
])
def test_batch_rejects_malformed_arrays_before_touching_the_book(kwargs, exc, match) -> None:  # noqa: ANN001
    book = OrderBook()
    book.submit(7, "BUY", "LIMIT", 1, 10)
    with pytest.raises(exc, match=match):
        book.batch(**kwargs)
    assert len(book) == 1


def test_workloads_are_deterministic_and_shaped_like_their_mix() -> None:
    a, b = matcher_cpp.workload("exchange_core", 20_000, 3), matcher_cpp.workload("exchange_core", 20_000, 3)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    share = np.bincount(a["op"], minlength=3) / 20_000
    assert 0.78 < share[2] < 0.86 and 0.03 < share[1] < 0.09  # modify ~82%, cancel ~6%
    out = OrderBook().batch(**a)
    assert 500 < np.count_nonzero(out["kind"] == matcher_cpp.KINDS.index("trade"))
    with pytest.raises(ValueError, match="unknown workload 'x'"):
        matcher_cpp.workload("x", 1)
