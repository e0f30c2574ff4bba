"""Bars: the shared data structure, timeframes, bucket math and commit watermark.

This module docstring is the written definition of bar semantics. The bar
builder (:mod:`compute.bar_builder_core`), the rollup (:mod:`compute.bar_rollup`)
and the independent pandas reference (``tests/reference/bars_pandas.py``) all
implement it.

Buckets
    Event time is the tick's ``exchange_ts`` (epoch ms UTC). 1s and 1m buckets
    align to the clock: ``start = ts - ts % tf``. 3m/5m/15m/30m/60m buckets are
    anchored to the instrument's session open (09:15 IST for NSE) and truncated
    at the session close; see :mod:`compute.sessions` for the pre-open and
    post-close rule. A bar exists only for a bucket with at least one accepted
    tick (no empty bars); its ``ts`` is the bucket start.

Duplicates
    Two ticks of one instrument are duplicates when all of :data:`DEDUP_FIELDS`
    are equal (missing optional fields count as ``None``); ``recv_ts``, depth
    and unknown extra fields are ignored. A duplicate is counted
    (``duplicate_ticks``) and ignored. Duplicates always share a bucket, so only
    the open bar of that bucket is searched.

Event order
    Inside an instrument ticks are ordered by ``(exchange_ts, volume, ltp)``
    with a missing volume sorting first (as -1). This total order does not
    depend on arrival order; with Kite's coarse exchange timestamps, ordering
    equal timestamps by cumulative volume is also the true trade order.

OHLC and ticks
    ``open``/``close`` are the ``ltp`` of the first/last tick in event order,
    ``high``/``low`` the max/min ``ltp``; ``ticks`` counts accepted
    (non-duplicate, non-late) ticks. A rolled-up bar takes open from its first
    child (by ``ts``), close from its last, max/min of high/low, and sums
    ``volume`` and ``ticks``.

Volume
    Per instrument, take the ticks whose ``volume`` (cumulative day volume) is
    not ``None`` in event order, ``v_0, v_1, ...``. Tick ``i`` contributes
    ``max(0, v_i - v_{i-1})``; the instrument's first volume contributes 0 (the
    cumulative before it is unknown, so it only sets the baseline). A drop
    (``v_i < v_{i-1}``: feed reconnect/reset) contributes 0 and the new value
    becomes the baseline. A bar's ``volume`` is the sum of its ticks'
    contributions. A tick without volume contributes 0 and leaves the baseline
    alone. Because the order is the event order, the result does not depend on
    arrival order. (A reset inside one exchange millisecond is ambiguous and is
    resolved by the volume order, i.e. treated as no reset.)
    ``cum_volume`` (optional Bar field) is the baseline after the bar: the last
    cumulative volume in event order up to the bar's end (``None`` if none yet).
    It lets a restarted builder resume the delta chain exactly.

Input
    A tick needs ``instrument_token`` and ``exchange_ts`` (ints) and ``ltp``
    (a number; emitted as float); ``volume`` is null or an int below 2**40.
    Anything else raises :class:`BadBarInput` and leaves the core untouched.

Emission (bar builder; the rollup follows the same scheme with child bars)
    Per instrument, the event horizon ``H`` is the largest ``exchange_ts``
    received. A bar for bucket ``[B, E)`` is emitted once, when either
    ``H >= E + grace_ms`` (event time), or, at an ``advance(now_ms)`` call,
    ``now_ms >= max(E, seen) + wall_grace_ms`` where ``seen`` is the ``now_ms``
    of the first ``advance`` after the instrument's latest tick (wall time with
    no ticks: quiet instruments close by the clock, but a replay of old ticks
    does not close bars behind its own back). Bars of one instrument are emitted
    in ascending ``ts``. A tick is late when its bucket is already closed
    (``B + 1s + grace_ms <= H`` before the tick, or at/below a bucket closed by
    wall time or by :meth:`restore`): it is counted (``late_ticks``) and dropped.

Commit watermark (DESIGN section 6)
    For each partition, the offset to commit is the lowest offset of any
    message still contributing to a bar not yet handed out by ``advance``, or
    the last offset seen + 1 when none is. Restart = seek to those offsets and
    :meth:`restore` each instrument's last durable bar (``ts``, ``cum_volume``):
    replayed messages for already-emitted buckets are skipped (``skipped_ticks``),
    bars emitted but not yet durable are rebuilt identically.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from compute.sessions import Session

#: Timeframe name -> bucket length in ms.
TF_MS: dict[str, int] = {
    "1s": 1_000, "1m": 60_000, "3m": 180_000, "5m": 300_000,
    "15m": 900_000, "30m": 1_800_000, "60m": 3_600_000,
}
#: Timeframes whose buckets align to the clock; the rest are session anchored.
CLOCK_ALIGNED_TFS = frozenset({"1s", "1m"})
MULTI_MINUTE_TFS = ("3m", "5m", "15m", "30m", "60m")
ALL_TFS = ("1s", "1m", *MULTI_MINUTE_TFS)

#: Fields that identify a tick for duplicate detection (instrument implied).
DEDUP_FIELDS = ("exchange_ts", "ltp", "volume", "last_qty", "oi", "bid", "ask", "bid_qty", "ask_qty")

BAR_FIELDS = ("instrument_token", "tf", "ts", "open", "high", "low", "close", "volume", "ticks", "cum_volume")


class BadBarInput(ValueError):
    """A tick or child bar that cannot be processed (missing/mistyped field): route it to the DLQ."""


def bucket_bounds(ts_ms: int, tf: str, session: Session) -> tuple[int, int]:
    """``(start, end)`` epoch ms of the ``tf`` bucket containing ``ts_ms``.

    1s/1m are clock aligned; multi-minute timeframes are anchored to ``session``.
    """
    size = TF_MS[tf]
    if tf in CLOCK_ALIGNED_TFS:
        start = ts_ms - ts_ms % size
        return start, start + size
    return session.anchored_bucket(ts_ms, size)


class Bar:
    """One OHLCV bar (DESIGN section 4). Plain ``__slots__`` class: cheap to build, compare and encode."""

    __slots__ = BAR_FIELDS

    def __init__(self, instrument_token: int, tf: str, ts: int, open: float, high: float, low: float,
                 close: float, volume: int, ticks: int, cum_volume: int | None = None) -> None:
        self.instrument_token = instrument_token
        self.tf = tf
        self.ts = ts
        self.open = open
        self.high = high
        self.low = low
        self.close = close
        self.volume = volume
        self.ticks = ticks
        self.cum_volume = cum_volume

    @property
    def key(self) -> tuple[int, str, int]:
        """Natural key ``(instrument_token, tf, ts)`` every consumer upserts on."""
        return (self.instrument_token, self.tf, self.ts)

    def to_dict(self) -> dict[str, Any]:
        """The Kafka message body (field order fixed, so encoding is byte-stable)."""
        return {
            "instrument_token": self.instrument_token, "tf": self.tf, "ts": self.ts,
            "open": self.open, "high": self.high, "low": self.low, "close": self.close,
            "volume": self.volume, "ticks": self.ticks, "cum_volume": self.cum_volume,
        }

    def to_row(self) -> tuple[Any, ...]:
        """Values in :data:`BAR_FIELDS` order (for COPY/executemany into ``bars_{tf}``)."""
        return (self.instrument_token, self.tf, self.ts, self.open, self.high, self.low, self.close,
                self.volume, self.ticks, self.cum_volume)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Bar:
        """Build from a decoded message; extra keys are ignored, ``cum_volume`` is optional."""
        return cls(data["instrument_token"], data["tf"], data["ts"], data["open"], data["high"], data["low"],
                   data["close"], data["volume"], data["ticks"], data.get("cum_volume"))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Bar) and self.to_row() == other.to_row()

    def __hash__(self) -> int:
        return hash(self.to_row())

    def __repr__(self) -> str:
        return ("Bar(" + ", ".join(f"{name}={getattr(self, name)!r}" for name in BAR_FIELDS) + ")")


class Holder(Protocol):
    """An open bar as seen by :class:`CommitWatermark`: the offset it pins and whether it is emitted."""

    @property
    def off(self) -> int:
        """The offset pinned."""

    @property
    def done(self) -> bool:
        """True once the bar is handed out."""


class ExtraHold:
    """Pins an offset of a further partition for a holder (rare: an instrument changed partition)."""

    __slots__ = ("off", "holder")

    def __init__(self, off: int, holder: Holder) -> None:
        self.off = off
        self.holder = holder

    @property
    def done(self) -> bool:
        """Released together with the holder."""
        return self.holder.done


class CommitWatermark:
    """Per-partition commit offsets: lowest offset still held by an open bar, else last seen + 1.

    Cores write ``last[partition] = offset`` for every message (a plain dict
    store on the hot path) and append a holder (``.off``, ``.done``) to
    ``queues[partition]`` (see :meth:`hold`) when an open bar receives its
    first message from a partition. Bars are opened in offset order within a
    partition, so each queue is sorted by offset; emitted holders are dropped
    lazily from the front (amortised O(1)), and a queue is compacted when
    emitted holders pile up behind a long-open one.
    """

    __slots__ = ("last", "queues", "_compact_at")

    def __init__(self) -> None:
        self.last: dict[int, int] = {}
        self.queues: dict[int, deque[Holder]] = {}
        self._compact_at: dict[int, int] = {}

    def hold(self, partition: int, holder: Holder) -> None:
        """Pin ``holder.off`` of ``partition`` until ``holder.done`` becomes true."""
        queue = self.queues.get(partition)
        if queue is None:
            queue = self.queues[partition] = deque()
        queue.append(holder)

    def committable(self) -> dict[int, int]:
        """``{partition: offset_to_commit}`` for every partition seen (already +1 where applicable)."""
        out: dict[int, int] = {}
        for partition, last in self.last.items():
            queue = self.queues.get(partition)
            if queue:
                while queue and queue[0].done:
                    queue.popleft()
                limit = self._compact_at.get(partition, 4096)
                if len(queue) > limit:
                    queue = self.queues[partition] = deque(h for h in queue if not h.done)
                    self._compact_at[partition] = max(4096, 2 * len(queue))
            out[partition] = queue[0].off if queue else last + 1
        return out

    def drop(self, partitions: Iterable[int]) -> None:
        """Forget partitions (revoked): their holds and last offsets."""
        for partition in partitions:
            self.last.pop(partition, None)
            self.queues.pop(partition, None)
            self._compact_at.pop(partition, None)


class IdleTrack(Protocol):
    """What :class:`IdleSchedule` needs from a per-instrument track."""

    seen: int
    touched: bool
    in_heap: bool

    def first_end(self) -> int | None:
        """End (epoch ms) of the earliest open bucket, ``None`` when nothing is open."""


class IdleSchedule:
    """Wall-clock closing for quiet instruments: a lazy min-heap of deadlines.

    A track is due at ``max(first_end, seen) + wall_grace_ms`` where ``seen`` is
    the ``now_ms`` of the first :meth:`due` call after the track last received
    input. Cores append a track to :attr:`touched` (and set ``track.touched``)
    when it receives input; :meth:`due` stamps those, queues them at the lower
    bound ``seen + wall_grace_ms`` and returns the tracks whose real deadline
    has passed. Entries are never updated in place: a popped entry whose
    deadline moved later is pushed again, so the per-input cost is one flag
    check and the per-call cost is one heap push per newly touched track.
    """

    __slots__ = ("wall_grace_ms", "touched", "_heap", "_seq")

    def __init__(self, wall_grace_ms: int) -> None:
        self.wall_grace_ms = wall_grace_ms
        self.touched: list[Any] = []
        self._heap: list[tuple[int, int, Any]] = []
        self._seq = 0

    def schedule(self, track: Any) -> None:
        """(Re)queue ``track`` at its real deadline if it has open buckets and is not queued."""
        if track.in_heap:
            return
        first_end = track.first_end()
        if first_end is not None:
            self._seq += 1
            heapq.heappush(self._heap, (max(first_end, track.seen) + self.wall_grace_ms, self._seq, track))
            track.in_heap = True

    def due(self, now_ms: int) -> list[Any]:
        """Stamp touched tracks with ``now_ms``; pop and return the tracks due by ``now_ms``.

        The caller closes what it can and calls :meth:`schedule` again for a
        track that still has open buckets.
        """
        heap = self._heap
        grace = self.wall_grace_ms
        seq = self._seq
        for track in self.touched:
            track.seen = now_ms
            track.touched = False
            if not track.in_heap:
                seq += 1
                heapq.heappush(heap, (now_ms + grace, seq, track))
                track.in_heap = True
        self._seq = seq
        self.touched.clear()
        out: list[Any] = []
        while heap and heap[0][0] <= now_ms:
            _, _, track = heapq.heappop(heap)
            track.in_heap = False
            first_end = track.first_end()
            if first_end is None:
                continue
            if max(first_end, track.seen) + grace <= now_ms:
                out.append(track)
            else:
                self.schedule(track)
        return out
