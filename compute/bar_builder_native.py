"""The C++ 1s bar core behind the :class:`compute.bar_builder_core.BarBuilder` interface.

:class:`compute._native.TickBarCore` is a port of :class:`~compute.bar_builder_core.BarBuilder`
(the specification; semantics in :mod:`compute.bars`) that also does the per-message
decode and validation of :meth:`compute.bar_service.BarProcessor.process`, so raw Kafka
payloads go straight into bars without a Python object per tick. Per poll batch::

    builder.set_window(now_ms, max_ahead_ms)                      # plausibility window (BarProcessor's rule)
    new, rejects = builder.stage(batch, MAX_TS_MS)                # RawBatch: (bytes|None, partition, offset)
    restorer(new)                                                 # restore() instruments not tracked yet
    builder.feed()
    bars = builder.advance(now_ms)

``rejects`` are ``[(index_in_batch, reason)]`` with BarProcessor's reasons (``"invalid JSON: ..."``,
``"message is not a JSON object"``, ``"implausible: ..."``, ``"schema: ..."``) in its order (decode rejects, then
add_many's). :class:`NativeBarBuilder` converts the core's bar tuples to :class:`Bar` objects and
offers ``add``/``add_many`` for decoded ticks (re-encoded with orjson: slow, for tests and tools).

Known difference of ``add``/``add_many`` from BarBuilder's: ticks go through the service's sanity
checks too, so a token outside ``(0, 2**63)`` or an ``exchange_ts`` before 2000-01-01 (or at/after
``max_ts``) is a :class:`BadBarInput` here while BarBuilder would take it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import ModuleType
from typing import Any

import orjson

from compute.bars import BadBarInput, Bar

#: ``max_ts`` when the caller has no wall clock (any realistic exchange_ts is below it).
NO_MAX_TS = 1 << 62


def native_module() -> ModuleType:
    """``compute._native`` with librdkafka loaded (see :func:`compute.native_tick_stream.load_native`)."""
    from compute.native_tick_stream import load_native

    return load_native()


def bars_from_tuples(rows: list[tuple[Any, ...]]) -> list[Bar]:
    """The core's ``(token, ts, open, high, low, close, volume, ticks, cum_volume)`` tuples as 1s Bars."""
    return [Bar(r[0], "1s", r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8]) for r in rows]


class _Tracked:
    """``token in builder._inst`` for code written against BarBuilder (BarProcessor reads it)."""

    __slots__ = ("_core",)

    def __init__(self, core: Any) -> None:
        self._core = core

    def __contains__(self, token: object) -> bool:
        return bool(self._core.is_tracked(token))


class NativeBarBuilder:
    """:class:`compute.bar_builder_core.BarBuilder` semantics on raw tick JSON, in C++."""

    tf = "1s"

    def __init__(self, grace_ms: int = 2000, wall_grace_ms: int | None = None) -> None:
        self.core = native_module().TickBarCore(grace_ms, wall_grace_ms)
        self._inst = _Tracked(self.core)

    # ----------------------------------------------------------------- input
    def stage(self, batch: Any, max_ts: int) -> tuple[dict[int, int], list[tuple[int, str]]]:
        """Decode and validate a :class:`compute._native.RawBatch`; returns ``(new_tokens, rejects)``."""
        return self.core.stage(batch, max_ts)  # type: ignore[no-any-return]

    def set_window(self, now_ms: int, ahead_ms: int) -> None:
        """Plausibility window of the next :meth:`stage` calls (BarProcessor's rule; ``ahead_ms < 0``: off)."""
        self.core.set_window(now_ms, ahead_ms)

    def feed(self) -> None:
        """Feed the staged ticks (after restoring the new instruments)."""
        self.core.feed()

    def add_raw(self, batch: Any, max_ts: int = NO_MAX_TS) -> list[tuple[int, str]]:
        """``stage`` + ``feed`` without a restore step; returns the rejects."""
        rejects: list[tuple[int, str]] = self.core.stage(batch, max_ts)[1]
        self.core.feed()
        return rejects

    def add_items(self, items: list[tuple[bytes | None, int, int]], max_ts: int = NO_MAX_TS) -> list[tuple[int, str]]:
        """Raw ``(payload, partition, offset)`` items (copied); returns the rejects."""
        return self.core.add_items(items, max_ts)  # type: ignore[no-any-return]

    def add(self, tick: Mapping[str, Any], partition: int, offset: int) -> None:
        """Feed one decoded tick; :class:`BadBarInput` when it is rejected (state untouched)."""
        bad = self.add_many(((tick, partition, offset),))
        if bad:
            raise bad[0][1]

    def add_many(self, items: Iterable[tuple[Mapping[str, Any], int, int]]) -> list[tuple[int, BadBarInput]]:
        """Decoded ticks, re-encoded to JSON for the core; returns ``[(index, BadBarInput)]``."""
        raw: list[tuple[bytes | None, int, int]] = []
        unencodable: dict[int, BadBarInput] = {}
        for index, (tick, partition, offset) in enumerate(items):
            try:
                raw.append((orjson.dumps(tick), partition, offset))
            except TypeError as exc:
                unencodable[index] = BadBarInput(f"bad tick: {exc!r}")
                raw.append((b"null", partition, offset))  # rejected as not an object, reported above
        out = []
        for index, reason in self.core.add_items(raw, NO_MAX_TS):
            err = unencodable.get(index)
            if err is None:
                err = BadBarInput(reason[len("schema: "):] if reason.startswith("schema: ") else reason)
            out.append((index, err))
        out.sort(key=lambda r: r[0])
        return out

    # -------------------------------------------------------------- emission
    def advance(self, now_ms: int | None = None) -> list[Bar]:
        """Bars closed since the last call (with ``now_ms``: quiet buckets closed by wall time)."""
        return bars_from_tuples(self.core.advance(now_ms))

    def close_all(self) -> list[Bar]:
        """Close every open bar now."""
        return bars_from_tuples(self.core.close_all())

    # ------------------------------------------------------ offsets/restart
    def committable_offsets(self) -> dict[int, int]:
        return self.core.committable_offsets()  # type: ignore[no-any-return]

    def restore(self, instrument_token: int, last_ts: int, cum_volume: int | None, partition: int = -1) -> None:
        self.core.restore(instrument_token, last_ts, cum_volume, partition)

    def drop_partitions(self, partitions: Iterable[int]) -> None:
        self.core.drop_partitions(list(partitions))

    def is_tracked(self, token: object) -> bool:
        return bool(self.core.is_tracked(token))

    # --------------------------------------------------------------- counters
    @property
    def grace_ms(self) -> int:
        return self.core.grace_ms  # type: ignore[no-any-return]

    @property
    def wall_grace_ms(self) -> int:
        return self.core.wall_grace_ms  # type: ignore[no-any-return]

    @property
    def late_ticks(self) -> int:
        return self.core.late_ticks  # type: ignore[no-any-return]

    @property
    def duplicate_ticks(self) -> int:
        return self.core.duplicate_ticks  # type: ignore[no-any-return]

    @property
    def skipped_ticks(self) -> int:
        return self.core.skipped_ticks  # type: ignore[no-any-return]

    @property
    def accepted_ticks(self) -> int:
        return self.core.accepted_ticks  # type: ignore[no-any-return]

    @property
    def bars_emitted(self) -> int:
        return self.core.bars_emitted  # type: ignore[no-any-return]

    @property
    def open_bars(self) -> int:
        return self.core.open_bars  # type: ignore[no-any-return]
