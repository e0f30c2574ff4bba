"""The native tick path of the 1 s bar builder: a librdkafka batch consumer feeding the C++ bar core.

Why it exists: in this process confluent-kafka's ``Consumer.consume`` costs ~3 us per
message (a Python ``Message`` object each), which caps a Python consumer at ~330k msgs/s
and the whole Python builder loop at ~120k ticks/s; librdkafka alone reads the same
stream at ~1.8M msgs/s (docs/BENCHMARKS.md). Here a poll returns one
:class:`compute._native.MessageBatch` holding the librdkafka messages, and the C++ core
(:class:`compute._native.TickBarCore`, the same semantics as
:class:`compute.bar_builder_core.BarBuilder`, proven equal by differential tests) decodes the
payloads in place. Python sees only the batch, the few bars that close, and the rare poison
message (wrapped in :class:`BatchMessage` for the dead-letter topic).

The extension links no librdkafka at build time: :func:`load_native` first loads the
library bundled in the confluent-kafka wheel (by absolute path from its
``confluent_kafka.libs`` directory, never a system copy) with ``RTLD_GLOBAL`` so the
extension's librdkafka symbols resolve to it, after checking that the library's
``rd_kafka_version()`` is the one confluent-kafka reports (``confluent_kafka.libversion()``)
and is compatible with the vendored header the extension was compiled against
(:data:`VENDORED_RDKAFKA_H_VERSION`). Anything else is :class:`NativeUnavailable`, and
``--engine auto`` then runs the python engine.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from compute.bar_service import BarProcessor
from core import bus
from core.bus import CommitError, TopicPartitionKey
from core.errors import TransientError
from core.stream import Emission
from schemas.limits import MAX_TS_MS

log = logging.getLogger(__name__)


class NativeUnavailable(ImportError):
    """The C++ extension is not built or librdkafka could not be loaded."""


# RD_KAFKA_VERSION of compute/native/include/librdkafka/rdkafka.h (0xMMmmrrpp; pp=0xff: a release).
# librdkafka keeps its ABI backward compatible within a major version, so the extension runs on any
# librdkafka of the same major that is at least this version (tests/unit/test_native_loader.py).
VENDORED_RDKAFKA_H_VERSION = 0x020002FF

# Test seam only: an absolute path to load instead of the wheel's library (it must still pass the checks).
LIBRDKAFKA_ENV = "TRADESTACK_LIBRDKAFKA"


def version_str(version: int) -> str:
    """``0x020c01ff`` -> ``2.12.1``."""
    return f"{version >> 24 & 0xFF}.{version >> 16 & 0xFF}.{version >> 8 & 0xFF}"


def header_compatible(runtime: int, header: int = VENDORED_RDKAFKA_H_VERSION) -> bool:
    """True when a librdkafka of version ``runtime`` can serve code compiled against ``header``."""
    return runtime >> 24 == header >> 24 and runtime >= header


def wheel_librdkafka() -> Path:
    """The absolute path of the librdkafka bundled in the confluent-kafka wheel (``confluent_kafka.libs``)."""
    import confluent_kafka

    libs = Path(confluent_kafka.__file__).resolve().parent.parent / "confluent_kafka.libs"
    found = sorted(libs.glob("librdkafka*.so*"))
    if len(found) != 1:
        raise NativeUnavailable(f"expected one librdkafka in {libs}, found {len(found)} "
                                "(confluent-kafka not installed from its wheel?)")
    return found[0]


def check_librdkafka(path: Path) -> int:
    """Load ``path`` privately and return its ``rd_kafka_version()`` if it is confluent-kafka's and fits the header.

    The library is opened with ``RTLD_LOCAL`` first, so a wrong one never provides symbols to anything.
    """
    import confluent_kafka

    if not path.is_absolute():
        raise NativeUnavailable(f"librdkafka path must be absolute: {path}")
    try:
        lib = ctypes.CDLL(str(path), mode=ctypes.RTLD_LOCAL)
        fn = lib.rd_kafka_version
    except (OSError, AttributeError) as exc:
        raise NativeUnavailable(f"cannot load librdkafka {path}: {exc}") from None
    fn.restype, fn.argtypes = ctypes.c_int, []
    loaded = int(fn()) & 0xFFFFFFFF
    expected = int(confluent_kafka.libversion()[1])
    if loaded != expected:
        raise NativeUnavailable(f"librdkafka {path} is {version_str(loaded)} (0x{loaded:08x}), confluent-kafka "
                                f"uses {version_str(expected)} (0x{expected:08x})")
    if not header_compatible(loaded):
        raise NativeUnavailable(f"librdkafka {version_str(loaded)} is not compatible with the vendored "
                                f"rdkafka.h {version_str(VENDORED_RDKAFKA_H_VERSION)}")
    return loaded


@cache
def load_native() -> ModuleType:
    """Import ``compute._native`` with the wheel's librdkafka loaded; :class:`NativeUnavailable` if impossible."""
    override = os.environ.get(LIBRDKAFKA_ENV, "").strip()
    path = Path(override) if override else wheel_librdkafka()
    check_librdkafka(path)
    try:
        ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)  # same handle, now global for the extension
    except OSError as exc:
        raise NativeUnavailable(f"cannot load librdkafka {path}: {exc}") from None
    try:
        from compute import _native
    except ImportError as exc:
        raise NativeUnavailable(f"compute._native is not built (run `make native`): {exc}") from exc
    return _native


def native_available() -> bool:
    try:
        load_native()
    except NativeUnavailable:
        return False
    return True


class BatchMessage:
    """One message of a :class:`compute._native.MessageBatch`, with the ``confluent_kafka.Message`` accessors
    :class:`core.bus.DeadLetter` and logging use (built only for poison input)."""

    __slots__ = ("_batch", "_i")

    def __init__(self, batch: Any, index: int) -> None:
        self._batch = batch
        self._i = index

    def topic(self) -> str:
        return self._batch.topic(self._i)  # type: ignore[no-any-return]

    def partition(self) -> int:
        return self._batch.partition(self._i)  # type: ignore[no-any-return]

    def offset(self) -> int:
        return self._batch.offset(self._i)  # type: ignore[no-any-return]

    def value(self) -> bytes | None:
        return self._batch.value(self._i)  # type: ignore[no-any-return]

    def key(self) -> bytes | None:
        return self._batch.key(self._i)  # type: ignore[no-any-return]

    def headers(self) -> None:
        return None

    def error(self) -> None:
        return None


def _conf_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class NativeConsumer(bus.GroupMembership):
    """:class:`core.bus.Consumer`'s contract over the native batch consumer.

    ``poll_batch`` returns a :class:`compute._native.MessageBatch` (``len()``, ``consumed()``,
    per-index accessors) instead of a list of messages; everything else (config, manual sync
    commits with per-partition checks, assign/revoke/lost callbacks, ``assigned``) is the same.
    """

    def __init__(self, bootstrap: str, group_id: str, topics: Sequence[str],
                 on_revoke: Callable[[list[TopicPartitionKey]], None] | None = None,
                 on_assign: Callable[[list[TopicPartitionKey]], None] | None = None,
                 on_lost: Callable[[list[TopicPartitionKey]], None] | None = None,
                 **overrides: Any) -> None:
        super().__init__(on_revoke, on_assign, on_lost)
        native = load_native()
        conf = {k: _conf_str(v) for k, v in bus.consumer_config(bootstrap, group_id, **overrides).items()}
        self.topics = list(topics)
        self._c = native.BatchConsumer(conf, self.topics, on_assign=self.assigned_keys,
                                       on_revoke=self.revoked_keys, on_lost=self.lost_keys)

    def poll_batch(self, max_messages: int = 1000, timeout: float = 0.5) -> Any:
        """A MessageBatch of up to ``max_messages`` data messages; transport errors are logged."""
        try:
            batch = self._c.poll(max_messages, timeout)
        except TransientError as exc:
            # Raised by a rebalance callback after this poll moved the position on: retrying the step
            # would skip the dropped batch, so this must restart the service instead.
            raise RuntimeError(f"rebalance callback failed during poll: {exc}") from exc
        for err in batch.errors:
            log.warning("consumer error %s", err)
        return batch

    def commit(self, offsets: Mapping[TopicPartitionKey, int]) -> None:
        """Commit the given next-offsets synchronously; raise :class:`CommitError` on any partition error."""
        todo = {tp: o for tp, o in offsets.items() if o is not None and o >= 0}
        if not todo:
            return
        failures = self._c.commit(todo)
        if failures:
            raise CommitError("commit failed: " + ", ".join(failures))

    def committed(self, parts: Iterable[TopicPartitionKey], timeout: float = 10.0) -> dict[TopicPartitionKey, int]:
        """The group's committed next-offsets for ``parts`` (-1 when none)."""
        return dict(self._c.committed(list(parts), timeout))

    def watermarks(self, topic: str, partition: int, timeout: float = 1.0) -> tuple[int, int]:
        """(low, high) offsets of a partition, asked of the broker."""
        return tuple(self._c.watermarks(topic, partition, timeout))  # type: ignore[return-value]

    def close(self) -> None:
        """Leave the group (triggers revoke, where the service commits what is safe)."""
        try:
            self._c.close()
        except RuntimeError as exc:
            log.warning("consumer close failed: %s", exc)


# ------------------------------------------------------------------------------------------ service wiring
class NativeTickProcessor(BarProcessor):
    """:class:`compute.bar_service.BarProcessor` for a :class:`compute._native.MessageBatch` and the C++ core.

    The same steps as the Python processor, per batch instead of per message: the core
    decodes and validates the batch (poison -> rejects), reports instruments it does not
    track yet (their resume points are restored before any of their ticks is fed), then
    feeds the ticks and hands out the bars that closed.
    """

    def process(self, msgs: Any, now_ms: int) -> Emission:
        core = self.core  # compute.bar_builder_native.NativeBarBuilder
        rejects: list[tuple[Any, str]] = []
        parts: Iterable[int] = ()
        if len(msgs):
            core.set_window(now_ms, self.max_ahead_ms)  # BarProcessor's plausibility window, in the C++ stage()
            new, bad = core.stage(msgs, MAX_TS_MS)
            self.implausible += sum(1 for _i, reason in bad if reason.startswith("implausible"))
            if new and self.restorer is not None:
                self.restorer(new)
            core.feed()
            rejects = [(BatchMessage(msgs, i), reason) for i, reason in bad]
            if self.gate.silent_close_ms is not None:
                parts = {p for _t, p in msgs.consumed()[0]}
        bars = core.advance(self.gate.wall_now(now_ms, parts))
        return Emission(messages=self.encode(bars), rows=bars, rejects=rejects)
