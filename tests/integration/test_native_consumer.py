"""The native librdkafka batch consumer (compute.native_tick_stream.NativeConsumer) against the embedded broker.

Same contract as core.bus.Consumer: every message once in partition order, manual sync commits
that a new group member resumes from, assign/revoke callbacks (incl. commit inside revoke on
close), errors raised inside a callback surface from the poll, batches usable after more polls.
"""

from __future__ import annotations

import time
import uuid

import pytest

from compute.native_tick_stream import BatchMessage, NativeConsumer, load_native
from core import bus

pytestmark = pytest.mark.integration


def _topic(bootstrap: str, partitions: int = 2) -> str:
    topic = f"native.{uuid.uuid4().hex[:8]}"
    bus.ensure_topics(bootstrap, {topic: partitions})
    return topic


def _produce(bootstrap: str, topic: str, n: int, partitions: int = 2) -> None:
    p = bus.Producer(bootstrap)
    for i in range(n):
        p.raw.produce(topic, value=f'{{"i":{i}}}'.encode(), key=str(i).encode(), partition=i % partitions)
    p.flush(30)


def _drain(c: NativeConsumer, n: int, timeout: float = 30.0) -> list[tuple[str, int, int, bytes | None, bytes | None]]:
    got: list[tuple[str, int, int, bytes | None, bytes | None]] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        b = c.poll_batch(1000, 0.5)
        got += [(b.topic(i), b.partition(i), b.offset(i), b.value(i), b.key(i)) for i in range(len(b))]
    return got


def test_reads_every_message_once_in_partition_order(kafka_bootstrap: str) -> None:
    topic = _topic(kafka_bootstrap)
    _produce(kafka_bootstrap, topic, 3000)
    c = NativeConsumer(kafka_bootstrap, f"g-{uuid.uuid4().hex[:6]}", [topic])
    try:
        got = _drain(c, 3000)
        assert len(got) == 3000
        for part in (0, 1):
            offs = [o for _t, p, o, _v, _k in got if p == part]
            assert offs == list(range(1500))
        values = sorted(int(v.decode()[5:-1]) for _t, _p, _o, v, _k in got if v is not None)
        assert values == list(range(3000))
        assert all(k == v[5:-1] for _t, _p, _o, v, k in got if v is not None and k is not None)
        assert c.assigned == {(topic, 0), (topic, 1)}
        # Same broker answer as the confluent-kafka consumer (Tansu under-reports the high mark).
        ref = bus.Consumer(kafka_bootstrap, f"w-{uuid.uuid4().hex[:6]}", [topic])
        try:
            assert c.watermarks(topic, 0) == ref.watermarks(topic, 0)
        finally:
            ref.close()
    finally:
        c.close()


def test_batch_summary_and_message_view(kafka_bootstrap: str) -> None:
    topic = _topic(kafka_bootstrap)
    _produce(kafka_bootstrap, topic, 100)
    c = NativeConsumer(kafka_bootstrap, f"g-{uuid.uuid4().hex[:6]}", [topic])
    try:
        batches = []
        total = 0
        while total < 100:
            b = c.poll_batch(30, 1.0)
            batches.append(b)
            total += len(b)
        # Earlier batches stay readable while later ones are polled (they own their messages).
        nexts: dict[tuple[str, int], int] = {}
        for b in batches:
            n, counts = b.consumed()
            for tp, off in n.items():
                nexts[tp] = max(nexts.get(tp, 0), off)
            assert sum(counts.values()) == len(b)
            if len(b):
                m = BatchMessage(b, len(b) - 1)
                assert (m.topic(), m.partition(), m.offset()) == (b.topic(len(b) - 1), b.partition(len(b) - 1),
                                                                 b.offset(len(b) - 1))
                assert m.value() is not None and m.value().startswith(b'{"i":')
        assert nexts == {(topic, 0): 50, (topic, 1): 50}
        with pytest.raises(IndexError):
            batches[0].value(10_000)
    finally:
        c.close()


def test_commit_then_new_member_resumes_after_it(kafka_bootstrap: str) -> None:
    topic = _topic(kafka_bootstrap)
    _produce(kafka_bootstrap, topic, 200)
    group = f"g-{uuid.uuid4().hex[:6]}"
    c = NativeConsumer(kafka_bootstrap, group, [topic])
    got = _drain(c, 200)
    assert len(got) == 200
    c.commit({(topic, 0): 60, (topic, 1): 100})
    assert c.committed([(topic, 0), (topic, 1)]) == {(topic, 0): 60, (topic, 1): 100}
    c.close()
    c2 = NativeConsumer(kafka_bootstrap, group, [topic])
    try:
        rest = _drain(c2, 40)
        assert sorted((p, o) for _t, p, o, _v, _k in rest) == [(0, o) for o in range(60, 100)]
        time.sleep(0.5)
        assert len(c2.poll_batch(100, 0.5)) == 0
    finally:
        c2.close()


def test_callbacks_commit_on_revoke_and_errors_surface(kafka_bootstrap: str) -> None:
    topic = _topic(kafka_bootstrap, 1)
    _produce(kafka_bootstrap, topic, 10, partitions=1)
    group = f"g-{uuid.uuid4().hex[:6]}"
    events: list[tuple[str, list[tuple[str, int]]]] = []
    holder: dict[str, NativeConsumer] = {}

    def on_revoke(parts: list[tuple[str, int]]) -> None:
        events.append(("revoke", parts))
        holder["c"].commit({(topic, 0): 7})  # committing inside the callback, as StreamService does

    c = NativeConsumer(kafka_bootstrap, group, [topic], on_assign=lambda p: events.append(("assign", p)),
                       on_revoke=on_revoke)
    holder["c"] = c
    assert len(_drain(c, 10)) == 10
    c.close()
    assert events == [("assign", [(topic, 0)]), ("revoke", [(topic, 0)])]
    check = bus.Consumer(kafka_bootstrap, group, [topic])
    try:
        assert check.committed([(topic, 0)]) == {(topic, 0): 7}
    finally:
        check.close()

    def boom(_parts: list[tuple[str, int]]) -> None:
        raise ValueError("callback failed")

    c3 = NativeConsumer(kafka_bootstrap, f"g-{uuid.uuid4().hex[:6]}", [topic], on_assign=boom)
    try:
        with pytest.raises(ValueError, match="callback failed"):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                c3.poll_batch(10, 0.5)
    finally:
        c3.close()


def test_close_while_a_batch_is_still_held(kafka_bootstrap: str) -> None:
    """A batch kept alive (e.g. by a traceback) must not make close() wait for its messages."""
    topic = _topic(kafka_bootstrap, 1)
    _produce(kafka_bootstrap, topic, 50, partitions=1)
    c = NativeConsumer(kafka_bootstrap, f"g-{uuid.uuid4().hex[:6]}", [topic])
    held = []
    while sum(len(b) for b in held) < 50:
        held.append(c.poll_batch(100, 1.0))
    t0 = time.monotonic()
    c.close()
    assert time.monotonic() - t0 < 10
    assert all(len(b) == 0 for b in held)  # released: they read as empty now
    with pytest.raises(IndexError):
        held[-1].value(0)


def test_bad_config_is_a_value_error(kafka_bootstrap: str) -> None:
    load_native()
    with pytest.raises(ValueError, match="no.such.property"):
        NativeConsumer(kafka_bootstrap, "g", ["x"], **{"no.such.property": 1})
