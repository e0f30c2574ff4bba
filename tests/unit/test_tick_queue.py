"""Bounded reactor->producer queue: never blocks, explicit overflow policy, counted drops."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given, strategies as st

from ingestion.tick_queue import TickQueue


def _ticks(start: int, n: int) -> list[dict]:
    return [{"instrument_token": 1, "seq": start + i} for i in range(n)]


def _seqs(items) -> list[int]:
    return [t["seq"] for _, t in items]


def test_drop_oldest_when_full_then_keeps_newest_and_counts_drops():
    q = TickQueue(5, "drop-oldest")
    assert q.put_batch(1, _ticks(0, 3)) == 0
    assert q.put_batch(2, _ticks(3, 4)) == 2
    assert _seqs(q.drain(100)) == [2, 3, 4, 5, 6]
    assert (q.received, q.dropped) == (7, 2)


def test_drop_newest_when_full_then_keeps_oldest_and_counts_drops():
    q = TickQueue(5, "drop-newest")
    q.put_batch(1, _ticks(0, 3))
    assert q.put_batch(2, _ticks(3, 4)) == 2
    items = q.drain(100)
    assert _seqs(items) == [0, 1, 2, 3, 4]
    assert [r for r, _ in items] == [1, 1, 1, 2, 2]
    assert q.dropped == 2


def test_batch_larger_than_capacity_when_drop_oldest_then_tail_kept():
    q = TickQueue(3)
    assert q.put_batch(1, _ticks(0, 10)) == 7
    assert _seqs(q.drain(10)) == [7, 8, 9]


def test_put_when_full_then_never_blocks():
    q = TickQueue(10, "drop-newest")
    q.put_batch(1, _ticks(0, 10))
    t0 = time.perf_counter()
    for i in range(1000):
        q.put_batch(2, _ticks(i, 5))
    assert time.perf_counter() - t0 < 1.0
    assert q.dropped == 5000 and len(q) == 10


def test_drain_when_empty_then_waits_for_first_item():
    q = TickQueue(10)
    threading.Timer(0.05, lambda: q.put_batch(1, _ticks(0, 2))).start()
    t0 = time.perf_counter()
    items = q.drain(10, timeout=2.0)
    assert _seqs(items) == [0, 1]
    assert time.perf_counter() - t0 < 1.0


def test_bad_policy_or_capacity_rejected():
    with pytest.raises(ValueError):
        TickQueue(0)
    with pytest.raises(ValueError):
        TickQueue(5, "drop-random")  # type: ignore[arg-type]


@given(cap=st.integers(1, 20), batches=st.lists(st.integers(0, 15), max_size=30),
       policy=st.sampled_from(["drop-oldest", "drop-newest"]), drain_every=st.integers(1, 5))
def test_accounting_and_order_hold_for_any_sequence(cap, batches, policy, drain_every):
    q = TickQueue(cap, policy)
    seq, out = 0, []
    for i, n in enumerate(batches):
        q.put_batch(i, _ticks(seq, n))
        seq += n
        if i % drain_every == 0:
            out += q.drain(7)
    out += q.drain(10_000)
    got = _seqs(out)
    assert got == sorted(got), "order preserved"
    assert q.received == seq == len(got) + q.dropped
    assert len(q) == 0 and q.high_water <= cap
