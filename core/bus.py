"""The one Kafka wrapper (confluent-kafka), implementing DESIGN section 6.

- Producers are idempotent (``enable.idempotence=true``). Delivery errors seen in
  the callback are latched and re-raised on the next ``produce``/``flush`` so an
  async failure can never be committed past.
- Consumers never auto-commit; :meth:`Consumer.commit` commits ``offset+1``
  synchronously and checks each partition's result.
- Dead letters go to ``dlq`` with the original key/value and headers
  ``source_topic``, ``source_partition``, ``source_offset``, ``error``.
- Session timeouts are Tansu-friendly: group joins take about half of
  ``session.timeout.ms`` on the embedded broker (23 s with the 45 s default),
  so we use 6 s with a 1 s heartbeat.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from confluent_kafka import (
    OFFSET_INVALID,
    Consumer as _Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer as _Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from core.errors import ConfigError, TransientError
from core.settings import COMPRESSIONS, load_settings

log = logging.getLogger(__name__)

DLQ_TOPIC = "dlq"
TopicPartitionKey = tuple[str, int]
RevokeCallback = Callable[[list[TopicPartitionKey]], None]


#: ``KAFKA_COMPRESSION`` (:attr:`core.settings.Settings.kafka_compression`): compression of every
#: producer's batches. The embedded broker keeps batches as produced, so lz4 cuts its memory ~6x
#: (docs/BENCHMARKS.md); consumers decompress.
COMPRESSION_ENV = "KAFKA_COMPRESSION"
DEFAULT_COMPRESSION = "lz4"

#: Errors that no retry can cure: the message, the configuration or the credentials are wrong.
PERMANENT_CODES = frozenset({
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.INVALID_MSG_SIZE,
    KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError.GROUP_AUTHORIZATION_FAILED, KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    KafkaError.SASL_AUTHENTICATION_FAILED, KafkaError._AUTHENTICATION,
    KafkaError.INVALID_CONFIG, KafkaError._INVALID_ARG, KafkaError.INVALID_REQUIRED_ACKS,
    KafkaError.TOPIC_EXCEPTION, KafkaError.UNSUPPORTED_VERSION,
    KafkaError.UNSUPPORTED_COMPRESSION_TYPE, KafkaError._UNSUPPORTED_FEATURE,
})
_PURGED = frozenset({KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT})
DEFAULT_MESSAGE_MAX_BYTES = 1_000_000


def is_permanent(err: KafkaError | None) -> bool:
    """True for an error a retry cannot cure (message too large, not authorised, bad config)."""
    return err is not None and err.code() in PERMANENT_CODES


def kafka_error_of(exc: BaseException) -> KafkaError | None:
    """The :class:`KafkaError` behind a KafkaException or a :class:`DeliveryError`, if any."""
    if isinstance(exc, DeliveryError):
        return exc.kafka_error
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


def compression_type(environ: Mapping[str, str] | None = None) -> str:
    """``KAFKA_COMPRESSION`` (default lz4), validated: a bad value is a :class:`ConfigError`.

    Without ``environ`` it is read through the settings (process environment, then the env
    files), as every other setting is; with ``environ``, from that mapping alone.
    """
    if environ is None:
        return load_settings().kafka_compression
    value = environ.get(COMPRESSION_ENV, "").strip().lower() or DEFAULT_COMPRESSION
    if value not in COMPRESSIONS:
        raise ConfigError(f"{COMPRESSION_ENV}={value!r}: expected one of {', '.join(COMPRESSIONS)}")
    return value


class DeliveryError(TransientError):
    """A produced message was not acknowledged by the broker (``kafka_error`` says why, if known)."""

    def __init__(self, message: str, kafka_error: KafkaError | None = None) -> None:
        super().__init__(message)
        self.kafka_error = kafka_error

    @property
    def permanent(self) -> bool:
        """No retry can deliver it (see :func:`is_permanent`)."""
        return is_permanent(self.kafka_error)


class CommitError(TransientError):
    """An offset commit failed for at least one partition."""


def producer_config(bootstrap: str, **overrides: Any) -> dict[str, Any]:
    """Producer settings: idempotent, acks=all, small linger for batching, ``KAFKA_COMPRESSION`` (lz4)."""
    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "batch.num.messages": 10000,
        "queue.buffering.max.messages": 500000,
        "compression.type": compression_type(),
        "message.timeout.ms": 120000,
        "reconnect.backoff.max.ms": 5000,
    }
    conf.update(overrides)
    return conf


def consumer_config(bootstrap: str, group_id: str, **overrides: Any) -> dict[str, Any]:
    """Consumer settings: manual commits, earliest reset, Tansu-friendly timeouts."""
    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 1000,
        "max.poll.interval.ms": 300000,
        "fetch.wait.max.ms": 100,
        # librdkafka 2.x pauses a partition's fetching for fetch.queue.backoff.ms (default 1 s) once its
        # local queue is full; measured on the embedded broker this made consumption latency-bound at
        # ~130k msgs/s with both processes mostly idle. 0 resumes at once: ~210-230k msgs/s.
        "fetch.queue.backoff.ms": 0,
        "fetch.error.backoff.ms": 10,
        "reconnect.backoff.max.ms": 5000,
        "enable.partition.eof": False,
    }
    conf.update(overrides)
    return conf


class Producer:
    """Idempotent producer with latched delivery errors.

    A failed :meth:`flush` (undelivered messages or a latched error) replaces
    the underlying client before raising: measured on the embedded broker, a
    broker that restarts empty answers the old idempotent producer id with
    ``UnknownProducerId`` and the queued messages never get through, while a
    fresh producer delivers at once. The caller re-produces its batch (outputs
    are idempotent by natural key, and nothing was committed).
    """

    def __init__(self, bootstrap: str, **overrides: Any) -> None:
        self._conf = producer_config(bootstrap, **overrides)
        self._p = _Producer(self._conf)
        self._error: KafkaError | None = None
        self._error_topic: str | None = None
        self.produced = 0
        self.recreated = 0
        #: Deliveries the broker acknowledged, per topic.
        self.acked: dict[str, int] = {}
        #: Messages that will never be delivered, per ``(topic, reason)``: a delivery error's
        #: name, ``purged`` (dropped with a replaced client) or ``produce_failed``.
        self.failed: dict[tuple[str, str], int] = {}
        self._queued: dict[str, int] = {}

    def _count_failed(self, topic: str, reason: str, n: int = 1) -> None:
        key = (topic, reason)
        self.failed[key] = self.failed.get(key, 0) + n

    def _recreate(self) -> None:
        old = self._p
        try:
            old.purge(in_queue=True, in_flight=True, blocking=False)
            # Serve the purged messages' delivery reports so each is counted as lost.
            deadline = time.monotonic() + 2.0
            while len(old) and time.monotonic() < deadline:
                old.poll(0.05)
        except (KafkaException, RuntimeError):
            pass
        for topic, n in self._queued.items():  # reports that never came: lost all the same
            if n > 0:
                self._count_failed(topic, "purged", n)
        self._queued = {}
        self._p = _Producer(self._conf)
        self._error = None
        self.recreated += 1
        log.warning("producer recreated after a delivery failure (n=%d)", self.recreated)

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        topic = msg.topic() or ""
        queued = self._queued
        queued[topic] = queued.get(topic, 0) - 1
        if err is None:
            acked = self.acked
            acked[topic] = acked.get(topic, 0) + 1
            return
        # Every failure is counted; the first one is latched and raised.
        self._count_failed(topic, "purged" if err.code() in _PURGED else err.name())
        if self._error is None:
            self._error = err
            self._error_topic = topic

    def _raise_latched(self) -> None:
        if self._error is not None:
            err, topic = self._error, self._error_topic
            self._error = None
            if _is_fatal(err):
                self._recreate()
            raise DeliveryError(f"delivery to {topic} failed: {err.str()}", err)

    def produce(self, topic: str, value: bytes | None, key: bytes | None = None,
                headers: Sequence[tuple[str, bytes]] | None = None, partition: int | None = None) -> None:
        """Queue one message; raises a latched :class:`DeliveryError` first if any."""
        self._raise_latched()
        kwargs: dict[str, Any] = {"on_delivery": self._on_delivery}
        if headers:
            kwargs["headers"] = list(headers)
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                self._p.produce(topic, value, key, **kwargs)
                break
            except BufferError:
                # Local queue full: serve delivery callbacks to make room.
                self._p.poll(0.05)
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                self._count_failed(topic, "produce_failed")
                if isinstance(err, KafkaError) and _is_fatal(err):
                    # A fatal idempotence error poisons this client for good.
                    self._recreate()
                    raise DeliveryError(f"producer fatal error: {err.str()}", err) from None
                if isinstance(err, KafkaError):
                    raise DeliveryError(f"produce to {topic} failed: {err.str()}", err) from None
                raise
        self._queued[topic] = self._queued.get(topic, 0) + 1
        self.produced += 1

    def poll(self, timeout: float = 0.0) -> None:
        """Serve delivery callbacks."""
        self._p.poll(timeout)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait for every queued message; raise if any is left or failed (the client is then replaced)."""
        remaining = self._p.flush(timeout)
        if self._error is not None or remaining:
            err = self._error
            topic = self._error_topic
            self._recreate()
            if err is not None:
                raise DeliveryError(f"delivery to {topic} failed: {err.str()}", err)
            raise DeliveryError(f"{remaining} message(s) not delivered within {timeout:.0f}s")

    def pending(self) -> int:
        """Messages queued but not yet acknowledged."""
        return len(self._p)

    @property
    def max_message_bytes(self) -> int:
        """The largest message this producer may send (``message.max.bytes``, librdkafka's default 1,000,000)."""
        return int(self._conf.get("message.max.bytes", DEFAULT_MESSAGE_MAX_BYTES))

    @property
    def raw(self) -> _Producer:
        """The underlying confluent-kafka producer (for benchmarks and admin use)."""
        return self._p


class GroupMembership:
    """The rebalance bookkeeping every consumer here shares: ``assigned``, logging, user callbacks.

    Revoke callbacks run before the partitions leave ``assigned`` (so a commit there may
    still name them); lost partitions are never committed: another member may own them.
    """

    def __init__(self, on_revoke: RevokeCallback | None, on_assign: RevokeCallback | None,
                 on_lost: RevokeCallback | None) -> None:
        self._user_revoke = on_revoke
        self._user_assign = on_assign
        self._user_lost = on_lost
        self.assigned: set[TopicPartitionKey] = set()

    def assigned_keys(self, keys: list[TopicPartitionKey]) -> None:
        self.assigned.update(keys)
        log.info("partitions assigned n=%d %s", len(keys), format_parts(keys))
        if self._user_assign:
            self._user_assign(keys)

    def revoked_keys(self, keys: list[TopicPartitionKey]) -> None:
        log.info("partitions revoked n=%d %s", len(keys), format_parts(keys))
        if self._user_revoke:
            self._user_revoke(keys)
        self.assigned.difference_update(keys)

    def lost_keys(self, keys: list[TopicPartitionKey]) -> None:
        log.warning("partitions lost n=%d %s", len(keys), format_parts(keys))
        if self._user_lost:
            self._user_lost(keys)
        self.assigned.difference_update(keys)


class Consumer(GroupMembership):
    """Manual-commit consumer with batch polling and commit-on-revoke."""

    def __init__(self, bootstrap: str, group_id: str, topics: Sequence[str],
                 on_revoke: RevokeCallback | None = None,
                 on_assign: RevokeCallback | None = None,
                 on_lost: RevokeCallback | None = None,
                 **overrides: Any) -> None:
        super().__init__(on_revoke, on_assign, on_lost)
        self._c = _Consumer(consumer_config(bootstrap, group_id, **overrides))
        self.topics = list(topics)
        self._c.subscribe(self.topics, on_assign=self._assigned, on_revoke=self._revoked,
                          on_lost=self._lost)

    def _assigned(self, _c: _Consumer, parts: list[TopicPartition]) -> None:
        self.assigned_keys([(p.topic, p.partition) for p in parts])

    def _revoked(self, _c: _Consumer, parts: list[TopicPartition]) -> None:
        self.revoked_keys([(p.topic, p.partition) for p in parts])

    def _lost(self, _c: _Consumer, parts: list[TopicPartition]) -> None:
        self.lost_keys([(p.topic, p.partition) for p in parts])

    def poll_batch(self, max_messages: int = 1000, timeout: float = 0.5) -> list[Message]:
        """Up to ``max_messages`` data messages; transport errors are logged, not raised."""
        try:
            msgs = self._c.consume(max_messages, timeout)
        except TransientError as exc:
            # Raised by a rebalance callback after consume moved the position on: retrying the step
            # would skip the dropped messages, so this must restart the service instead.
            raise RuntimeError(f"rebalance callback failed during poll: {exc}") from exc
        out: list[Message] = []
        for m in msgs:
            err = m.error()
            if err is None:
                out.append(m)
            elif err.code() == KafkaError._PARTITION_EOF:
                continue
            elif err.fatal():
                raise KafkaException(err)
            else:
                log.warning("consumer error code=%s reason=%s", err.name(), err.str())
        return out

    def commit(self, offsets: Mapping[TopicPartitionKey, int]) -> None:
        """Commit the given next-offsets synchronously; raise on any partition error."""
        if not offsets:
            return
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items() if o is not None and o >= 0]
        if not tps:
            return
        try:
            result = self._c.commit(offsets=tps, asynchronous=False)
        except KafkaException as exc:
            raise CommitError(f"commit failed: {exc}") from None
        bad = [tp for tp in (result or []) if tp.error is not None]
        if bad:
            raise CommitError("commit failed: " + ", ".join(f"{tp.topic}[{tp.partition}]: {tp.error}"
                                                           for tp in bad))

    def committed(self, parts: Iterable[TopicPartitionKey],
                  timeout: float = 10.0) -> dict[TopicPartitionKey, int]:
        """The group's committed next-offsets for ``parts`` (-1 when none)."""
        tps = self._c.committed([TopicPartition(t, p) for t, p in parts], timeout=timeout)
        return {(tp.topic, tp.partition): (tp.offset if tp.offset != OFFSET_INVALID else -1) for tp in tps}

    def close(self) -> None:
        """Leave the group (triggers revoke, where the service commits what is safe)."""
        try:
            self._c.close()
        except (KafkaException, RuntimeError) as exc:
            log.warning("consumer close failed: %s", exc)

    def watermarks(self, topic: str, partition: int, timeout: float = 1.0) -> tuple[int, int]:
        """(low, high) offsets of a partition, asked of the broker."""
        low, high = self._c.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout, cached=False)
        return low, high

    @property
    def raw(self) -> _Consumer:
        """The underlying confluent-kafka consumer."""
        return self._c


class DrainingConsumer(Consumer):
    """A short poll, then whatever librdkafka has already fetched, without waiting again.

    With a 2 ms poll alone, a backlog came in small batches and each paid the batch's flush,
    database transaction and commit; draining the local queue keeps batches large under load
    and adds no wait when the input is live.
    """

    def poll_batch(self, max_messages: int = 1000, timeout: float = 0.5) -> list[Any]:
        out = super().poll_batch(max_messages, timeout)
        while out and len(out) < max_messages:
            more = super().poll_batch(max_messages - len(out), 0)
            if not more:
                break
            out.extend(more)
        return out


class DeadLetter:
    """Routes poison input to the ``dlq`` topic with provenance headers."""

    def __init__(self, producer: Producer, topic: str = DLQ_TOPIC) -> None:
        self.producer = producer
        self.topic = topic
        self.count = 0

    #: Caps on a dead letter's value and key. The value is cut further if needed so that key,
    #: value and headers together stay under the producer's ``message.max.bytes``.
    MAX_VALUE_BYTES = 900_000
    MAX_KEY_BYTES = 1_000
    #: Room left for the record's own framing (lengths, timestamps, attributes).
    RECORD_OVERHEAD_BYTES = 512

    def send(self, msg: Message, error: str) -> None:
        """Send the original bytes of ``msg`` with headers describing where and why.

        An oversized key is cut to :attr:`MAX_KEY_BYTES` (header ``key_truncated``) and an
        oversized value to :attr:`MAX_VALUE_BYTES`, or less so that the whole record fits the
        producer's ``message.max.bytes`` (header ``truncated``): a huge poison message can never
        block the pipeline with MSG_SIZE_TOO_LARGE.
        """
        self.send_raw(msg.key(), msg.value(), error, msg.topic() or "", msg.partition(), msg.offset())

    def send_raw(self, key: bytes | None, value: bytes | None, error: str, source_topic: str,
                 partition: int | None = None, offset: int | None = None) -> None:
        """Dead-letter bytes that are not a consumed message (e.g. a row the database refused)."""
        headers = [
            ("source_topic", source_topic.encode()),
            ("source_partition", str(partition if partition is not None else -1).encode()),
            ("source_offset", str(offset if offset is not None else -1).encode()),
            ("error", error[:1000].encode("utf-8", "replace")),
        ]
        if key is not None and len(key) > self.MAX_KEY_BYTES:
            headers.append(("key_truncated", str(len(key)).encode()))
            key = key[: self.MAX_KEY_BYTES]
        if value is not None:
            fixed = (len(key or b"") + sum(len(k) + len(v) for k, v in headers) + len("truncated") + 20
                     + self.RECORD_OVERHEAD_BYTES)
            room = max(0, min(self.MAX_VALUE_BYTES, self.producer.max_message_bytes - fixed))
            if len(value) > room:
                headers.append(("truncated", str(len(value)).encode()))
                value = value[:room]
        self.producer.produce(self.topic, value, key, headers=headers)
        self.count += 1


def ensure_topics(bootstrap: str, topics: Mapping[str, int], timeout: float = 30.0,
                  replication: int = 1) -> None:
    """Create missing topics with the given partition counts (existing ones are left alone)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout
    while True:
        try:
            existing = set(admin.list_topics(timeout=max(1.0, deadline - time.monotonic())).topics)
            break
        except KafkaException as exc:
            if time.monotonic() > deadline:
                raise TransientError(f"broker {bootstrap} unreachable: {exc}") from None
            time.sleep(0.5)
    missing = [NewTopic(t, num_partitions=n, replication_factor=replication)
               for t, n in topics.items() if t not in existing]
    if not missing:
        return
    futures = admin.create_topics(missing, operation_timeout=timeout)
    for topic, fut in futures.items():
        try:
            fut.result()
            log.info("topic created name=%s partitions=%d", topic, topics[topic])
        except KafkaException as exc:
            err = exc.args[0]
            if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise TransientError(f"create topic {topic} failed: {exc}") from None


def wait_for_broker(bootstrap: str, timeout: float = 30.0) -> None:
    """Block until the broker answers a metadata request."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=2.0)
            return
        except KafkaException as exc:
            last = exc
            time.sleep(0.3)
    raise TransientError(f"broker {bootstrap} not reachable after {timeout:.0f}s: {last}")


def _is_fatal(err: KafkaError) -> bool:
    """A fatal (idempotence) error: the client instance cannot be used again."""
    return bool(err.fatal()) or err.code() == KafkaError._FATAL


def format_parts(keys: Iterable[TopicPartitionKey]) -> str:
    return "parts=" + ",".join(f"{t}[{p}]" for t, p in sorted(keys))
