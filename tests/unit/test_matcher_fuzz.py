"""Differential fuzz: the C++ book and the plain-Python reference give identical event streams.

Over 1M random operations in all (every order type, owners for self-trade prevention, modifies,
cancels of live, finished and unknown ids, market last prices, invalid requests, prices far enough
apart to hit the span limit), run through ``OrderBook.batch`` and through ``RefBook`` call by call.
A smaller stream also goes through the per-call API, which must agree with the batch.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

import matcher_cpp
from tests.reference.matcher_ref import MAX_SPAN, RefBook

TYPES = matcher_cpp.ORDER_TYPES
SIDES = matcher_cpp.SIDES


def random_ops(n: int, seed: int) -> dict[str, np.ndarray]:
    """A random op stream as batch() columns (codes as in matcher_cpp.OPS / SIDES / ORDER_TYPES)."""
    rng = random.Random(seed)
    cols: dict[str, list[int]] = {k: [] for k in ("op", "order_id", "side", "order_type", "qty", "price",
                                                  "trigger", "owner")}
    mid, next_id, recent = 3_000_000, 1, []  # far enough up that MAX_SPAN away is a valid price on both sides

    def put(op: int, oid: int, side: int = 0, typ: int = 0, qty: int = 0, price: int = 0, trig: int = 0,
            owner: int = 0) -> None:
        for k, v in zip(cols, (op, oid, side, typ, qty, price, trig, owner), strict=True):
            cols[k].append(v)

    for _ in range(n):
        mid = mid + rng.choice((-1, 0, 0, 1))
        r = rng.random()
        if r < 0.55 or not recent:
            side = rng.randrange(2)
            typ = rng.choices(range(6), weights=(60, 8, 8, 6, 9, 9))[0]
            sign = -1 if side == 0 else 1
            price = mid + sign * rng.randint(-3, 15)  # some cross
            if rng.random() < 0.002:
                price += sign * MAX_SPAN  # far away: the span limit
            trig = mid + rng.randint(-8, 8)
            qty = rng.randint(1, 50)
            if rng.random() < 0.003:  # invalid requests
                qty, price, trig = rng.choice([(0, price, trig), (qty, -5, trig), (qty, price, 0), (-1, 0, 0)])
            oid = next_id if rng.random() > 0.003 else rng.choice(recent or [1])  # a duplicate id now and then
            next_id += 1
            owner = rng.choice((0, 0, 0, 1, 2, 3))
            put(0, oid, side, typ, qty, max(price, -5), trig, owner)
            recent.append(oid)
            if len(recent) > 300:
                recent.pop(0)
        elif r < 0.75:
            oid = rng.choice(recent) if rng.random() > 0.02 else 10**12 + rng.randrange(1000)
            put(1, oid)
        elif r < 0.93:
            oid = rng.choice(recent)
            price = mid + rng.randint(-12, 12)
            qty = rng.randint(0 if rng.random() < 0.01 else 1, 60)
            trig = rng.choice((0, 0, mid + rng.randint(-8, 8)))
            put(2, oid, 0, 0, qty, price, trig)
        else:
            put(3, 0, price=mid + rng.randint(-10, 10))
    return {k: np.asarray(v, dtype=np.int64) for k, v in cols.items()}


def ref_events(ops: dict[str, np.ndarray]) -> list[tuple]:
    book, out = RefBook(), []
    cols = [ops[k].tolist() for k in ("op", "order_id", "side", "order_type", "qty", "price", "trigger", "owner")]
    for op, oid, side, typ, qty, price, trig, owner in zip(*cols, strict=True):
        if op == 0:
            ev = book.submit(oid, SIDES[side], TYPES[typ], qty, price, trig, owner)
        elif op == 1:
            ev = book.cancel(oid)
        elif op == 2:
            ev = book.modify(oid, price, qty, trig)
        else:
            ev = book.set_last_price(price)
        out.extend(ev)
    return out


def batch_events(ops: dict[str, np.ndarray]) -> list[tuple]:
    r = matcher_cpp.OrderBook().batch(**ops)
    kinds, reasons = matcher_cpp.KINDS, matcher_cpp.REASONS
    return list(zip([kinds[k] for k in r["kind"].tolist()], r["order_id"].tolist(), r["maker_id"].tolist(),
                    r["taker_id"].tolist(), r["price"].tolist(), r["qty"].tolist(),
                    [reasons[k] for k in r["reason"].tolist()], strict=True))


def first_difference(a: list[tuple], b: list[tuple]) -> str:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"event {i}: C++ {x} != reference {y}"
    return f"lengths differ: C++ {len(a)} events, reference {len(b)}"


@pytest.mark.parametrize("seed", range(4))
def test_cpp_book_matches_reference_over_250k_random_ops(seed: int) -> None:
    ops = random_ops(250_000, seed)  # 4 seeds: 1M operations in all
    cpp, ref = batch_events(ops), ref_events(ops)
    kinds = {e[0] for e in ref}
    assert {"accepted", "rejected", "trade", "cancelled", "triggered", "done"} <= kinds
    reasons = {e[6] for e in ref}
    assert {"unfilled", "fok", "self_trade", "user", "unknown_order", "duplicate_id",
            "price_out_of_range"} <= reasons, reasons
    assert cpp == ref, first_difference(cpp, ref)


def test_per_call_api_matches_batch() -> None:
    ops = random_ops(30_000, 99)
    book = matcher_cpp.OrderBook()
    got = []
    for op, oid, side, typ, qty, price, trig, owner in zip(*(ops[k].tolist() for k in ops), strict=True):
        if op == 0:
            evs = book.submit(oid, SIDES[side], TYPES[typ], qty, price, trig, owner)
        elif op == 1:
            evs = book.cancel(oid)
        elif op == 2:
            evs = book.modify(oid, price, qty, trig)
        else:
            evs = book.set_last_price(price)
        got.extend(e.as_tuple() for e in evs)
    assert got == batch_events(ops)


def test_same_input_gives_the_same_events() -> None:
    ops = random_ops(50_000, 7)
    a, b = matcher_cpp.OrderBook().batch(**ops), matcher_cpp.OrderBook().batch(**ops)
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k
