"""Ticks -> 1s bars: the pure core of ``compute.bar_builder_1s`` (no I/O).

Semantics (buckets, duplicates, event order, volume, emission, lateness,
commit watermark, restart) are defined once in :mod:`compute.bars`; this module
implements them for ticks. The per-tick path is lean on purpose: one flat loop
over a poll batch (:meth:`BarBuilder.add_many`), plain ``__slots__`` objects,
dict lookups and integer math, no pydantic. Each open bar keeps its
cumulative volumes packed with their timestamps in one int per tick and turns
them into the bar volume at close (a sort that is linear for in-order input);
the duplicate index of a bar is only built when a tick that is not its newest
arrives, since only such a tick can be a duplicate.

Input contract (else :class:`compute.bars.BadBarInput`, for the DLQ):
``instrument_token`` and ``exchange_ts`` ints, ``ltp`` a number (ints become
floats), ``volume`` null or an int in ``[0, 2**40)``.

Typical service loop::

    builder = BarBuilder(grace_ms=2000)
    for token, last_ts, cum, partition in durable_last_bars:   # bars_1s, on (re)assignment
        builder.restore(token, last_ts, cum, partition)
    while running:
        msgs = consumer.consume(500, timeout=0.5)
        bad = builder.add_many([(orjson.loads(m.value()), m.partition(), m.offset()) for m in msgs])
        bars = builder.advance(now_ms())                 # produce + upsert these, flush
        consumer.commit(builder.committable_offsets())   # offsets already +1
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from gc import is_tracked
from typing import Any

from compute.bars import BadBarInput, Bar, CommitWatermark, ExtraHold, IdleSchedule

SECOND_MS = 1_000
_NEVER = 1 << 62  # "no deadline" / "nothing seen" sentinels, far outside epoch-ms range
_VBITS = 40  # volumes are packed below exchange_ts in one int: (ts << 40) + volume
_VMAX = 1 << _VBITS
_VMASK = _VMAX - 1


def _dedup_key(tick: Mapping[str, Any]) -> tuple[Any, ...]:
    """A tick's duplicate identity: its DEDUP_FIELDS values (missing -> ``None``)."""
    get = tick.get
    return (get("exchange_ts"), get("ltp"), get("volume"), get("last_qty"), get("oi"),
            get("bid"), get("ask"), get("bid_qty"), get("ask_qty"))


def _short_hash(item: Any) -> int:
    """Hash of ``(exchange_ts, ltp, volume)`` of a stored tick or dedup key (int/float ltp hash alike)."""
    if type(item) is tuple:
        return hash(item[:3])
    return hash((item["exchange_ts"], item["ltp"], item.get("volume")))


def _seen_before(bar: _OpenBar, ts: int, ltp: float, vol: int | None, tick: Mapping[str, Any]) -> bool:
    """Slow path for a tick not newer than the bar's newest: is it a duplicate? (Records it if not.)

    The index maps ``hash(exchange_ts, ltp, volume)`` to the stored ticks with
    that hash; only on a hit are all DEDUP_FIELDS compared.
    """
    index = bar.index
    if index is None:
        index = bar.index = {}
    if bar.seen:
        for old in bar.seen:
            index.setdefault(_short_hash(old), []).append(old)
        bar.seen.clear()
    same = index.get(hash((ts, ltp, vol)))
    if same is None:
        index[hash((ts, ltp, vol))] = [tick if not is_tracked(tick) else _dedup_key(tick)]
        return False
    key = _dedup_key(tick)
    for old in same:
        if (old if type(old) is tuple else _dedup_key(old)) == key:
            return True
    same.append(tick if not is_tracked(tick) else key)
    return False


class _OpenBar:
    """Mutable state of one open 1s bar.

    ``ots``/``ov`` and ``cts``/``cv`` are the event-order keys (exchange_ts,
    volume) of the open and close ticks. Dedup state: ``seen`` lists ticks not
    yet indexed; ``index`` (see :func:`_seen_before`) is built only when a tick
    that is not the newest arrives, since only such a tick can be a duplicate.
    """

    __slots__ = ("b", "open", "high", "low", "close", "ots", "ov", "cts", "cv", "ticks", "seen", "index",
                 "vols", "part", "off", "done")

    def __init__(self, b: int, ts: int, vk: int, ltp: float, partition: int, offset: int) -> None:
        self.b = b
        self.open = self.high = self.low = self.close = ltp
        self.ots = ts
        self.ov = vk
        self.cts = -_NEVER  # the first tick sets close
        self.cv = -1
        self.ticks = 0
        self.seen: list[Any] = []
        self.index: dict[int, list[Any]] | None = None
        self.vols: list[int] = []  # (exchange_ts << 40) + cumulative volume; sorted at close
        self.part = partition
        self.off = offset  # first offset in ``part``: pinned until the bar is handed out
        self.done = False


class _Instrument:
    """Per-instrument state: horizon, frontier, volume baseline, open bars, wall-clock bookkeeping."""

    __slots__ = ("token", "part", "horizon", "closed_upto", "frontier", "restored", "baseline", "bars", "cur",
                 "next_close", "seen", "touched", "in_heap")

    def __init__(self, token: int, partition: int) -> None:
        self.token = token
        self.part = partition
        self.horizon = -_NEVER  # largest exchange_ts received
        self.closed_upto = -_NEVER  # horizon - 1s - grace: buckets starting at or below are closed
        self.frontier = -_NEVER  # buckets below this are closed (wall close or restore)
        self.restored = -_NEVER  # buckets below this were emitted before a restart
        self.baseline: int | None = None
        self.bars: dict[int, _OpenBar] = {}
        self.cur: _OpenBar | None = None
        self.next_close = _NEVER
        self.seen = -_NEVER
        self.touched = False
        self.in_heap = False

    def first_end(self) -> int | None:
        """End of the earliest open bucket (for :class:`IdleSchedule`)."""
        return min(self.bars) + SECOND_MS if self.bars else None


class BarBuilder:
    """Builds 1s bars from ticks with exact, order-independent semantics (see :mod:`compute.bars`).

    ``grace_ms`` is the event-time flush grace; ``wall_grace_ms`` (default: the
    same) is how long an instrument must be quiet, by the wall clock passed to
    :meth:`advance`, before its ended buckets close. Counters: ``late_ticks``,
    ``duplicate_ticks``, ``skipped_ticks`` (replayed ticks of buckets emitted
    before a restart), ``accepted_ticks`` (ticks in closed bars),
    ``bars_emitted``.

    The builder may keep a reference to a tick dict until its bar closes (for
    duplicate checks): callers must not mutate ticks after feeding them.
    """

    tf = "1s"

    def __init__(self, grace_ms: int = 2000, wall_grace_ms: int | None = None) -> None:
        if grace_ms < 0 or (wall_grace_ms is not None and wall_grace_ms < 0):
            raise ValueError("grace must be >= 0 ms")
        self.grace_ms = grace_ms
        self.wall_grace_ms = grace_ms if wall_grace_ms is None else wall_grace_ms
        self._lag = SECOND_MS + grace_ms  # bucket start + lag <= horizon  =>  bucket closed
        self._inst: dict[int, _Instrument] = {}
        self._wm = CommitWatermark()
        self._last = self._wm.last  # partition -> last offset seen, written per tick
        self._idle = IdleSchedule(self.wall_grace_ms)
        self._ready: list[tuple[_OpenBar, Bar]] = []
        self._extra_parts: dict[_OpenBar, set[int]] = {}  # bars fed by more than one partition (rare)
        self.late_ticks = 0
        self.duplicate_ticks = 0
        self.skipped_ticks = 0
        self.accepted_ticks = 0
        self.bars_emitted = 0

    # ----------------------------------------------------------------- input
    def add(self, tick: Mapping[str, Any], partition: int, offset: int) -> None:
        """Feed one decoded tick read from ``partition`` at ``offset`` (offsets ascend per partition).

        Raises :class:`BadBarInput` (state untouched) when a required field is
        missing or mistyped; the caller routes the message to the DLQ.
        """
        bad = self.add_many(((tick, partition, offset),))
        if bad:
            raise bad[0][1]

    # The per-tick path is deliberately one flat loop (no helper calls, locals for hot
    # attributes): splitting it would cost ~10% throughput, hence the complexity waiver.
    def add_many(  # noqa: C901
            self, items: Iterable[tuple[Mapping[str, Any], int, int]]) -> list[tuple[int, BadBarInput]]:
        """Feed ``(tick, partition, offset)`` items in consumption order; the fast path for a poll batch.

        Returns ``[(index, error)]`` for items rejected as :class:`BadBarInput`
        (state untouched by them; route them to the DLQ). Everything else is as
        :meth:`add`, one item at a time.
        """
        rejected: list[tuple[int, BadBarInput]] = []
        insts = self._inst
        last = self._last
        lag = self._lag
        touched = self._idle.touched
        queues = self._wm.queues
        late = skipped = dups = 0
        for index, (tick, partition, offset) in enumerate(items):
            try:
                token = tick["instrument_token"]
                ts = tick["exchange_ts"]
                ltp = tick["ltp"]
                vol = tick.get("volume")
                if type(ts) is not int or type(token) is not int:
                    raise BadBarInput("instrument_token and exchange_ts must be integers")
                if type(ltp) is not float:
                    if type(ltp) is not int:
                        raise BadBarInput("ltp must be a number")
                    ltp = float(ltp)
                if vol is None:
                    vk = -1
                elif type(vol) is int and 0 <= vol < _VMAX:
                    vk = vol
                else:
                    raise BadBarInput("volume must be an integer in [0, 2**40) or null")
            except (KeyError, TypeError, AttributeError, BadBarInput) as exc:
                err = exc if isinstance(exc, BadBarInput) else BadBarInput(f"bad tick: {exc!r}")
                rejected.append((index, err))
                continue

            last[partition] = offset
            st = insts.get(token)
            if st is None:
                st = insts[token] = _Instrument(token, partition)
            if not st.touched:
                st.touched = True
                touched.append(st)
            b = ts - ts % SECOND_MS
            if b <= st.closed_upto or b < st.frontier:
                if b < st.restored:
                    skipped += 1
                else:
                    late += 1
                if ts > st.horizon:  # only possible below a wall-clock frontier: nothing to close
                    st.horizon = ts
                    st.closed_upto = ts - lag
                continue

            bar = st.cur
            if bar is None or bar.b != b:
                bar = st.bars.get(b)
                if bar is None:
                    bar = st.bars[b] = _OpenBar(b, ts, vk, ltp, partition, offset)
                    queue = queues.get(partition)
                    if queue is None:
                        self._wm.hold(partition, bar)
                    else:
                        queue.append(bar)
                    st.part = partition
                    if b + lag < st.next_close:
                        st.next_close = b + lag
                st.cur = bar
            if partition != bar.part:
                self._extra_partition(st, bar, partition, offset)

            cts = bar.cts
            if ts > cts:
                # Newer than every tick in the bar, so not a duplicate: just remember it for a
                # later dedup check (a GC-tracked tick, i.e. one with depth, as its key).
                bar.seen.append(_dedup_key(tick) if is_tracked(tick) else tick)
                bar.close = ltp
                bar.cts = ts
                bar.cv = vk
            else:
                if _seen_before(bar, ts, ltp, vol, tick):
                    dups += 1
                    continue
                if ts == cts and (vk > bar.cv or (vk == bar.cv and ltp >= bar.close)):
                    bar.close = ltp
                    bar.cv = vk
                elif ts < bar.ots or (ts == bar.ots and (vk < bar.ov or (vk == bar.ov and ltp < bar.open))):
                    bar.open = ltp
                    bar.ots = ts
                    bar.ov = vk
            bar.ticks += 1
            if ltp > bar.high:
                bar.high = ltp
            elif ltp < bar.low:
                bar.low = ltp
            if vk >= 0:
                bar.vols.append((ts << _VBITS) + vk)  # packed (ts, volume): an int, sorts the same

            if ts > st.horizon:
                st.horizon = ts
                st.closed_upto = ts - lag
                if ts >= st.next_close:
                    self._close_through(st, ts - lag)
        self.late_ticks += late
        self.skipped_ticks += skipped
        self.duplicate_ticks += dups
        return rejected

    def _extra_partition(self, st: _Instrument, bar: _OpenBar, partition: int, offset: int) -> None:
        """Rare path: an instrument's ticks arrive on a second partition (repartitioning)."""
        st.part = partition
        parts = self._extra_parts.setdefault(bar, set())
        if partition not in parts:
            parts.add(partition)
            self._wm.hold(partition, ExtraHold(offset, bar))

    # -------------------------------------------------------------- emission
    def _close_through(self, st: _Instrument, last_b: int) -> int | None:
        """Close ``st``'s open bars with bucket start <= ``last_b``, ascending; return the last start.

        Closing freezes the bar (volume from the sorted cumulative volumes, see
        :mod:`compute.bars`) and advances the instrument's volume baseline.
        """
        bars = st.bars
        ready = self._ready
        closed = None
        while bars:
            b = min(bars)  # an instrument has only a few open bars
            if b > last_b:
                st.next_close = b + self._lag
                return closed
            ob = bars.pop(b)
            volume = 0
            vols = ob.vols
            if vols:
                if len(vols) > 1:
                    vols.sort()  # event order; linear when ticks arrived in order
                prev = st.baseline
                if prev is None:
                    prev = vols[0] & _VMASK  # the instrument's first volume only sets the baseline
                for packed in vols:
                    v = packed & _VMASK
                    if v > prev:
                        volume += v - prev
                    prev = v  # a drop (reset) contributes 0 and becomes the new baseline
                st.baseline = prev
            self.accepted_ticks += ob.ticks
            ready.append((ob, Bar(st.token, "1s", b, ob.open, ob.high, ob.low, ob.close, volume, ob.ticks,
                                  st.baseline)))
            if st.cur is ob:
                st.cur = None
            closed = b
        st.next_close = _NEVER
        return closed

    def advance(self, now_ms: int | None = None) -> list[Bar]:
        """Return the bars closed since the last call; with ``now_ms``, close quiet buckets by wall time.

        Bars come out in ascending ``ts`` per instrument. Once returned, their
        ticks no longer hold back :meth:`committable_offsets`.
        """
        if now_ms is not None:
            for st in self._idle.due(now_ms):
                closed = self._close_through(st, now_ms - self.wall_grace_ms - SECOND_MS)
                if closed is not None and closed + SECOND_MS > st.frontier:
                    st.frontier = closed + SECOND_MS  # later ticks for these buckets are late
                if st.bars:
                    self._idle.schedule(st)
        return self._hand_out()

    def close_all(self) -> list[Bar]:
        """Close every open bar now (end of stream: backtests, tests, end of day)."""
        for st in self._inst.values():
            if st.bars:
                last = max(st.bars)
                self._close_through(st, last)
                st.frontier = max(st.frontier, last + SECOND_MS)
        return self._hand_out()

    def _hand_out(self) -> list[Bar]:
        out = []
        for ob, bar in self._ready:
            ob.done = True
            out.append(bar)
        if self._extra_parts:
            for ob, _ in self._ready:
                self._extra_parts.pop(ob, None)
        self._ready.clear()
        self.bars_emitted += len(out)
        return out

    # ------------------------------------------------------ offsets/restart
    def committable_offsets(self) -> dict[int, int]:
        """``{partition: offset}`` safe to commit: nothing below it feeds an unemitted bar."""
        return self._wm.committable()

    def restore(self, instrument_token: int, last_ts: int, cum_volume: int | None, partition: int = -1) -> None:
        """Resume after a restart from the instrument's last durable 1s bar (``ts``, ``cum_volume``).

        Call before feeding replayed ticks: ticks for buckets up to ``last_ts``
        are skipped and the volume delta chain continues from ``cum_volume``.
        """
        st = self._inst.get(instrument_token)
        if st is None:
            st = self._inst[instrument_token] = _Instrument(instrument_token, partition)
        st.restored = max(st.restored, last_ts + SECOND_MS)
        st.frontier = max(st.frontier, st.restored)
        st.baseline = cum_volume

    def drop_partitions(self, partitions: Iterable[int]) -> None:
        """Forget everything fed from ``partitions`` (revoked: their new owner rebuilds it).

        Call after committing on revoke. Open and not-yet-returned bars of the
        affected instruments are discarded.
        """
        gone = set(partitions)
        if not gone:
            return
        for token, st in list(self._inst.items()):
            extra = self._extra_parts
            hit = st.part in gone or any(
                ob.part in gone or (ob in extra and extra[ob] & gone) for ob in st.bars.values())
            if hit:
                for ob in st.bars.values():
                    ob.done = True
                    extra.pop(ob, None)
                st.bars.clear()
                st.cur = None
                del self._inst[token]
        kept = []
        for ob, bar in self._ready:
            if bar.instrument_token in self._inst:
                kept.append((ob, bar))
            else:
                ob.done = True
                self._extra_parts.pop(ob, None)
        self._ready = kept
        self._wm.drop(gone)

    @property
    def open_bars(self) -> int:
        """Number of open (unemitted) bars, for a gauge."""
        return sum(len(st.bars) for st in self._inst.values())
