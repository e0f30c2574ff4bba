"""core.stream and core.bus under failures (issue 8 items 3, 4, 5, 7), against a real broker and Postgres.

- a row the database refuses (int4 overflow) goes to ``dlq``, the rest of the batch is written and committed;
- a failure on the wall-clock path (empty poll) never lets the revoke on close commit past unproduced output;
- a poison message with a huge key reaches ``dlq`` with its key truncated, and the service goes on;
- an error no retry can cure (MSG_SIZE_TOO_LARGE) stops the service with FatalError after a bounded retry;
- the producer counts every message: acknowledged + lost (per reason) = produced, across a dead broker.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
import psycopg
import pytest
from confluent_kafka import Message

from core import bus
from core.errors import FatalError, PoisonMessage
from core.metrics import Metrics
from core.settings import load_settings
from core.stream import Emission, OutMessage, Record, RecordProcessor, Sink, StreamService
from tests.conftest import query, tansu_broker


def _topic(prefix: str) -> str:
    return f"{prefix}.{uuid.uuid4().hex[:8]}"


class RowsProcessor(RecordProcessor):
    """``{"id": str, "n": int}`` -> one output message and one row each."""

    def __init__(self, out_topic: str, pad: int = 0) -> None:
        self.out_topic = out_topic
        self.pad = pad

    def decode(self, topic: str, value: bytes | None) -> Any:
        try:
            obj = orjson.loads(value or b"")
        except orjson.JSONDecodeError as exc:
            raise PoisonMessage(f"invalid JSON: {exc}") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("id"), str) or type(obj.get("n")) is not int:
            raise PoisonMessage("schema: need id:str and n:int")
        return obj

    def process_records(self, records: Sequence[Record], now_ms: int) -> Emission:
        out = Emission(rows=[])
        for r in records:
            body = {"id": r.value["id"], "n": r.value["n"], "pad": "x" * self.pad}
            out.messages.append(OutMessage(self.out_topic, r.key, orjson.dumps(body)))
            out.rows.append((r.value["id"], r.value["n"]))
        return out


def _sink(table: str) -> Sink:
    def sink(conn: psycopg.Connection[Any], rows: list[tuple[str, int]]) -> None:
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO {table} (id, n) VALUES (%s, %s) "  # noqa: S608 - test table name
                            "ON CONFLICT (id) DO UPDATE SET n = EXCLUDED.n", rows)
    return sink


def _service(bootstrap: str, dsn: str | None, in_topic: str, processor: Any, sink: Sink | None,
             name: str = "failtest") -> StreamService:
    class Svc(StreamService):
        input_topics = (in_topic,)
        group_id = f"g-{uuid.uuid4().hex[:8]}"
        batch_size = 100
        poll_timeout = 0.2

        def build_processor(self) -> Any:
            return processor

        def build_sink(self) -> Sink | None:
            return sink

    Svc.name = name
    settings = load_settings(kafka_bootstrap_servers=bootstrap, postgres_dsn=dsn or "postgresql://x@127.0.0.1:1/x",
                             kafka_partitions=1)
    return Svc(settings, Metrics(f"{name}_{uuid.uuid4().hex[:6]}"))


def _produce(bootstrap: str, topic: str, items: Iterable[tuple[bytes | None, bytes]], **conf: Any) -> None:
    p = bus.Producer(bootstrap, **conf)
    for key, value in items:
        p.produce(topic, value, key)
    p.flush(30)


def _read_all(bootstrap: str, topic: str, expect: int, timeout: float = 30.0) -> list[Message]:
    c = bus.Consumer(bootstrap, f"r-{uuid.uuid4().hex[:8]}", [topic])
    got: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(got) < expect and time.monotonic() < deadline:
        got += c.poll_batch(1000, 0.5)
    c.close()
    return got


def _dead_letters(bootstrap: str, source_topic: bytes, expect: int, timeout: float = 30.0) -> list[Message]:
    """The ``dlq`` messages whose ``source_topic`` header is ``source_topic`` (waits for ``expect``)."""
    c = bus.Consumer(bootstrap, f"d-{uuid.uuid4().hex[:8]}", [bus.DLQ_TOPIC])
    got: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(got) < expect and time.monotonic() < deadline:
        got += [m for m in c.poll_batch(1000, 0.5) if dict(m.headers() or []).get("source_topic") == source_topic]
    time.sleep(0.5)
    got += [m for m in c.poll_batch(1000, 0.5) if dict(m.headers() or []).get("source_topic") == source_topic]
    c.close()
    return got


def _committed(bootstrap: str, group: str, topic: str) -> int:
    """The group's committed next-offset of partition 0 (negative: nothing committed)."""
    from confluent_kafka import Consumer as _Consumer, TopicPartition

    raw = _Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        return int(raw.committed([TopicPartition(topic, 0)], timeout=10)[0].offset)
    finally:
        raw.close()


def _rows_table(dsn: str) -> str:
    """A fresh ``(id text, n integer)`` table for a test's sink (integer: an int4 overflow is a data error)."""
    table = f"rows_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id text PRIMARY KEY, n integer NOT NULL)")
    return table


def _run_until(svc: StreamService, done: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "service did not get there in time"
        svc.step()


def test_row_the_database_refuses_goes_to_dlq_and_the_rest_is_written(kafka_bootstrap: str,
                                                                       fresh_pg_dsn: str) -> None:
    table = _rows_table(fresh_pg_dsn)
    src, out = _topic("rows.in"), _topic("rows.out")
    bus.ensure_topics(kafka_bootstrap, {src: 1, out: 1, bus.DLQ_TOPIC: 1})
    values = [(f"k{i}".encode(), orjson.dumps({"id": f"r{i}", "n": (2**40 if i in (3, 17) else i)}))
              for i in range(40)]
    _produce(kafka_bootstrap, src, values)
    calls: list[int] = []
    write = _sink(table)

    def counting_sink(conn: psycopg.Connection[Any], rows: list[tuple[str, int]]) -> None:
        calls.append(len(rows))
        write(conn, rows)

    svc = _service(kafka_bootstrap, fresh_pg_dsn, src, RowsProcessor(out), counting_sink, name="rowsvc")
    svc.start()
    try:
        _run_until(svc, lambda: svc._committed.get((src, 0)) == 40)  # noqa: SLF001
        # Bisection: 2 bad rows among 40 cost about 2 * 2 * log2(40) transactions, not one per row.
        assert sum(1 for n in calls if n == 1) <= 8 and len(calls) < 40, calls
        # The service goes on: the next input is processed as usual.
        _produce(kafka_bootstrap, src, [(b"k", orjson.dumps({"id": f"r{i}", "n": i})) for i in range(40, 45)])
        _run_until(svc, lambda: svc._committed.get((src, 0)) == 45)  # noqa: SLF001
    finally:
        svc.request_stop()
        svc.stop()
    rows = dict(query(fresh_pg_dsn, f"SELECT id, n FROM {table}"))  # noqa: S608
    assert rows == {f"r{i}": i for i in range(45) if i not in (3, 17)}
    assert svc.m_rows._value.get() == 43  # noqa: SLF001 - refused rows are not counted as written
    assert _committed(kafka_bootstrap, svc.group_id, src) == 45
    refused = _dead_letters(kafka_bootstrap, b"postgres:rowsvc", 2)
    assert sorted(orjson.loads(m.value())[0] for m in refused) == ["r17", "r3"]
    assert all(b"NumericValueOutOfRange" in dict(m.headers() or [])["error"] for m in refused)
    assert svc.m_row_dlq._value.get() == 2  # noqa: SLF001


class HoldingProcessor:
    """Holds its input's offsets until an empty poll (a wall-clock flush), then fails right after."""

    def __init__(self) -> None:
        self.held = False
        self.released = False

    def process(self, msgs: Sequence[Message], now_ms: int) -> Emission:
        if msgs:
            self.held = True
            return Emission()
        if self.held:
            self.held = False
            self.released = True  # the "bars" are handed out and their holds marked done ...
            raise RuntimeError("injected failure on the wall-clock path")  # ... then this step fails
        return Emission()

    def committable(self, consumed: dict[tuple[str, int], int]) -> dict[tuple[str, int], int]:
        return {} if self.held else consumed

    def on_revoke(self, parts: Iterable[tuple[str, int]]) -> None:
        return None


def test_failure_on_the_wall_clock_path_never_commits_on_close(kafka_bootstrap: str) -> None:
    src = _topic("hold.in")
    bus.ensure_topics(kafka_bootstrap, {src: 1, bus.DLQ_TOPIC: 1})
    _produce(kafka_bootstrap, src, [(b"k", b"{}")] * 5)
    proc = HoldingProcessor()
    svc = _service(kafka_bootstrap, None, src, proc, None)
    svc.start()
    group = svc.group_id
    with pytest.raises(RuntimeError, match="wall-clock path"):
        for _ in range(300):
            svc.step()
    assert proc.released
    svc.request_stop()
    svc.stop()  # the consumer closes: its revoke must not commit what was never produced
    assert _committed(kafka_bootstrap, group, src) < 0


def test_poison_with_a_huge_key_reaches_dlq_truncated_and_the_service_goes_on(kafka_bootstrap: str,
                                                                               fresh_pg_dsn: str) -> None:
    table = _rows_table(fresh_pg_dsn)
    src, out = _topic("key.in"), _topic("key.out")
    bus.ensure_topics(kafka_bootstrap, {src: 1, out: 1, bus.DLQ_TOPIC: 1})
    huge_key = b"K" * 600_000
    poison = b"not json " * 70_000  # 630 kB: with the key, past the DLQ producer's 1 MB message limit
    big = {"message.max.bytes": 2_000_000}
    _produce(kafka_bootstrap, src, [(huge_key, poison), (b"ok", orjson.dumps({"id": "good", "n": 1}))], **big)
    svc = _service(kafka_bootstrap, fresh_pg_dsn, src, RowsProcessor(out), _sink(table))
    svc.start()
    try:
        _run_until(svc, lambda: svc._committed.get((src, 0)) == 2)  # noqa: SLF001
    finally:
        svc.request_stop()
        svc.stop()
    assert query(fresh_pg_dsn, f"SELECT id, n FROM {table}") == [("good", 1)]  # noqa: S608
    (m,) = _dead_letters(kafka_bootstrap, src.encode(), 1)
    headers = dict(m.headers() or [])
    assert headers["key_truncated"] == b"600000" and m.key() == huge_key[: bus.DeadLetter.MAX_KEY_BYTES]
    assert m.value() == poison and "truncated" not in headers  # below the value cap: kept whole


def test_error_no_retry_can_cure_stops_the_service_after_bounded_retries(kafka_bootstrap: str) -> None:
    src, out = _topic("big.in"), _topic("big.out")
    bus.ensure_topics(kafka_bootstrap, {src: 1, out: 1, bus.DLQ_TOPIC: 1})
    _produce(kafka_bootstrap, src, [(b"k", orjson.dumps({"id": "a", "n": 1}))])
    svc = _service(kafka_bootstrap, None, src, RowsProcessor(out, pad=20_000), None)
    # An output larger than the producer may send: librdkafka refuses it with MSG_SIZE_TOO_LARGE.
    svc.producer = bus.Producer(kafka_bootstrap, **{"message.max.bytes": 10_000})
    svc.dlq = bus.DeadLetter(svc.producer)
    svc._backoff.next_delay = lambda: 0.01  # type: ignore[method-assign]  # noqa: SLF001 - keep it quick
    svc.start()
    group = svc.group_id
    with pytest.raises(FatalError, match="MSG_SIZE_TOO_LARGE"):
        for _ in range(300):
            svc.step()
    assert svc.m_permanent.labels("MSG_SIZE_TOO_LARGE")._value.get() == 1  # noqa: SLF001
    svc.request_stop()
    svc.stop()
    assert _committed(kafka_bootstrap, group, src) < 0


def test_producer_counts_every_message_acknowledged_or_lost_across_a_dead_broker() -> None:
    with tansu_broker() as bootstrap:
        topic = _topic("count")
        bus.ensure_topics(bootstrap, {topic: 1})
        p = bus.Producer(bootstrap, **{"message.timeout.ms": 3000})
        for i in range(500):
            p.produce(topic, b"v%d" % i, b"k")
        p.flush(30)
        assert p.acked == {topic: 500}
    # The broker is gone: these can only fail (time out) or be purged with the replaced client.
    for i in range(300):
        p.produce(topic, b"w%d" % i, b"k")
    with pytest.raises(bus.DeliveryError):
        p.flush(1.0)
    lost = sum(n for (t, _reason), n in p.failed.items() if t == topic)
    assert p.acked[topic] + lost == 800 and lost == 300, p.failed
    assert set(reason for _t, reason in p.failed) <= {"purged", "_MSG_TIMED_OUT", "_TRANSPORT"}


def test_compression_default_is_lz4_and_bad_values_are_config_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    from core.errors import ConfigError

    monkeypatch.delenv(bus.COMPRESSION_ENV, raising=False)
    assert bus.producer_config("x")["compression.type"] == "lz4"
    monkeypatch.setenv(bus.COMPRESSION_ENV, "zstd")
    assert bus.producer_config("x")["compression.type"] == "zstd"
    monkeypatch.setenv(bus.COMPRESSION_ENV, "brotli")
    with pytest.raises(ConfigError, match="KAFKA_COMPRESSION: .*'brotli': expected one of"):
        bus.producer_config("x")
    # An explicit mapping (what the broker-memory benchmark checks) is validated the same way.
    assert bus.compression_type({bus.COMPRESSION_ENV: "none"}) == "none"
    with pytest.raises(ConfigError, match="KAFKA_COMPRESSION='brotli'"):
        bus.compression_type({bus.COMPRESSION_ENV: "brotli"})


@pytest.mark.parametrize("compression", ["lz4", "zstd"])
def test_compressed_batches_round_trip_through_both_consumers(kafka_bootstrap: str, compression: str) -> None:
    from compute.native_tick_stream import NativeConsumer

    topic = _topic(f"z.{compression}")
    bus.ensure_topics(kafka_bootstrap, {topic: 1})
    values = [orjson.dumps({"i": i, "pad": "abc" * 50}) for i in range(2000)]
    _produce(kafka_bootstrap, topic, [(b"k", v) for v in values], **{"compression.type": compression})
    assert [m.value() for m in _read_all(kafka_bootstrap, topic, 2000)] == values
    nc = NativeConsumer(kafka_bootstrap, f"n-{uuid.uuid4().hex[:8]}", [topic])
    got = 0
    deadline = time.monotonic() + 30
    while got < 2000 and time.monotonic() < deadline:
        got += len(nc.poll_batch(1000, 0.5))
    nc.close()
    assert got == 2000


def test_error_no_retry_can_cure_exits_3_with_one_error_line_naming_topic_and_error(
        kafka_bootstrap: str, fresh_pg_dsn: str, service_env: dict[str, str], tmp_path: Any) -> None:
    import subprocess

    from tests.conftest import run_module

    with psycopg.connect(fresh_pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS echo_rows (id text PRIMARY KEY, n2 integer NOT NULL, "
                     "src_partition integer, src_offset bigint, writes integer NOT NULL DEFAULT 1)")
    src, out, group = _topic("echo.in"), _topic("echo.out"), f"echo-{uuid.uuid4().hex[:8]}"
    bus.ensure_topics(kafka_bootstrap, {src: 1, out: 1, bus.DLQ_TOPIC: 1})
    # A valid input whose output (the echoed 1.2 MB id) exceeds the producer's message.max.bytes (1 MB).
    _produce(kafka_bootstrap, src, [(b"k", orjson.dumps({"id": "x" * 1_200_000, "n": 1}))],
             **{"message.max.bytes": 2_000_000})
    env = {**service_env, "POSTGRES_DSN": fresh_pg_dsn, "ECHO_IN": src, "ECHO_OUT": out, "ECHO_GROUP": group}
    log = tmp_path / "echo.log"
    proc = run_module("tests.integration.echo_service", env, log_path=log)
    try:
        code = proc.wait(90)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        raise AssertionError(f"the service kept retrying an incurable error: {log.read_text()[-2000:]}") from None
    errors = [ln for ln in log.read_text().splitlines() if " ERROR " in ln]
    assert code == 3, log.read_text()[-2000:]
    assert len(errors) == 1 and "MSG_SIZE_TOO_LARGE" in errors[0] and out in errors[0], errors
    assert _committed(kafka_bootstrap, group, src) < 0


def test_dead_letter_fits_the_producers_message_limit_with_key_and_headers(kafka_bootstrap: str) -> None:
    src = _topic("small.src")
    bus.ensure_topics(kafka_bootstrap, {bus.DLQ_TOPIC: 1})
    limit = 50_000
    p = bus.Producer(kafka_bootstrap, **{"message.max.bytes": limit})
    dlq = bus.DeadLetter(p)
    dlq.send_raw(b"K" * 5_000, b"V" * 200_000, "e" * 5_000, src, 0, 7)
    p.flush(30)  # MSG_SIZE_TOO_LARGE would raise here
    (m,) = _dead_letters(kafka_bootstrap, src.encode(), 1)
    headers = dict(m.headers() or [])
    assert (headers["truncated"], headers["key_truncated"], headers["source_offset"]) == (b"200000", b"5000", b"7")
    assert m.key() == b"K" * bus.DeadLetter.MAX_KEY_BYTES and set(m.value()) == {ord("V")}
    size = len(m.key()) + len(m.value()) + sum(len(k) + len(v) for k, v in m.headers() or [])
    assert limit - 2_000 < size < limit  # as much of the value as fits, and no more
