"""Child bars -> parent bars (1s -> 1m, 1m -> 3m/5m/15m/30m/60m): the pure rollup core (no I/O).

One :class:`BarRollup` serves both aggregator services::

    BarRollup("1s", ["1m"])                              # compute.bar_aggregator_1m
    BarRollup("1m", ["3m", "5m", "15m", "30m", "60m"])   # compute.bar_aggregator_1m_to_multi

Semantics follow :mod:`compute.bars`, with child bars in place of ticks:

* Parent bucket of a child: :func:`compute.bars.bucket_bounds` of the child's
  ``ts`` (1m clock aligned; 3m..60m anchored to the instrument's session open
  and truncated at its close, so the 60m 15:15 bar is 15:15-15:30 IST).
* Parent = open of the first child (by ``ts``), max high, min low, close of the
  last child, sum of ``volume`` and ``ticks``; ``cum_volume`` of the last child.
* Duplicates: a child whose ``ts`` is already in the open parent replaces the
  earlier copy (last wins, like the upsert downstream) and is counted in
  ``duplicate_bars``; an exact replay therefore changes nothing.
* Emission: per instrument and target, the horizon ``H`` is the largest child
  *end* (``ts`` + source length) received. A parent ``[S, E)`` closes when
  ``H >= E + grace_ms`` (with the default ``grace_ms=0`` the parent closes as
  soon as its last child arrives: the upstream emits children in ascending
  ``ts`` per instrument), or at ``advance(now_ms)`` when
  ``now_ms >= max(E, seen) + wall_grace_ms`` (quiet instrument). The upstream
  may emit the last child of ``[S, E)`` as late as about ``E`` + its worst
  emission delay, so ``wall_grace_ms`` must exceed that plus transport time,
  else a quiet instrument's parent can close before its last child arrives
  (the child is then late). The builder's steady worst delay is
  ``2 * grace_ms + wall_grace_ms`` (6 s with its defaults); with its restarts
  and the services' wall-clock gate the minimum wall graces are derived in
  :mod:`compute.holds` (services' defaults: 1s->1m 20 s, 1m->multi 90 s). The
  core's own ``wall_grace_ms`` default (8 s) is for direct use of the class.
* Late: a child whose parent is already closed (``S`` below the frontier, or
  ``E + grace_ms <= H`` before the child) is counted in ``late_bars`` (or
  ``skipped_bars`` when the parent was emitted before a restart) and dropped.

Counters count (child, target timeframe) pairs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from math import isfinite
from typing import Any

from compute.bars import (
    CLOCK_ALIGNED_TFS,
    TF_MS,
    BadBarInput,
    Bar,
    CommitWatermark,
    ExtraHold,
    IdleSchedule,
)
from compute.sessions import Session, SessionCalendar
from schemas.limits import MAX_CUM_VOLUME, MAX_TOKEN, MAX_TS_MS, MIN_TS_MS, max_bar_ticks, max_bar_volume

_NEVER = 1 << 62
_Child = tuple[int, float, float, float, float, int, int, "int | None"]


class _OpenParent:
    """An open parent bar: its bounds and children keyed by child ``ts``."""

    __slots__ = ("start", "end", "children", "part", "off", "parts", "done")

    def __init__(self, start: int, end: int, partition: int, offset: int) -> None:
        self.start = start
        self.end = end
        self.children: dict[int, _Child] = {}
        self.part = partition
        self.off = offset  # first offset in ``part``: pinned until the parent is handed out
        self.parts: set[int] | None = None  # further partitions (instrument moved partition)
        self.done = False


class _Track:
    """State of one instrument for one target timeframe."""

    __slots__ = ("token", "tf", "size", "clock", "session", "part", "horizon", "frontier", "restored",
                 "parents", "cur", "next_close", "seen", "touched", "in_heap")

    def __init__(self, token: int, tf: str, session: Session, partition: int) -> None:
        self.token = token
        self.tf = tf
        self.size = TF_MS[tf]
        self.clock = tf in CLOCK_ALIGNED_TFS
        self.session = session
        self.part = partition
        self.horizon = -_NEVER
        self.frontier = -_NEVER
        self.restored = -_NEVER
        self.parents: dict[int, _OpenParent] = {}
        self.cur: _OpenParent | None = None
        self.next_close = _NEVER
        self.seen = -_NEVER
        self.touched = False
        self.in_heap = False

    def bounds(self, ts: int) -> tuple[int, int]:
        """``(start, end)`` of this timeframe's bucket holding ``ts``."""
        if self.clock:
            start = ts - ts % self.size
            return start, start + self.size
        return self.session.anchored_bucket(ts, self.size)

    def first_end(self) -> int | None:
        """End of the earliest open parent (for :class:`IdleSchedule`)."""
        return self.parents[min(self.parents)].end if self.parents else None


def _price(value: Any) -> float:
    """A price field as float; ``TypeError`` unless it is a JSON number."""
    if type(value) is float:
        return value
    if type(value) is int:
        return float(value)
    raise TypeError(f"price must be a number, got {type(value).__name__}")


def _finish(tr: _Track, parent: _OpenParent) -> Bar:
    """Aggregate a parent's children (sorted by ``ts``) into a :class:`Bar`."""
    kids = [parent.children[ts] for ts in sorted(parent.children)]
    first, last = kids[0], kids[-1]
    high = max(k[2] for k in kids)
    low = min(k[3] for k in kids)
    volume = sum(k[5] for k in kids)
    ticks = sum(k[6] for k in kids)
    return Bar(tr.token, tr.tf, parent.start, first[1], high, low, last[4], volume, ticks, last[7])


def check_bar(source_tf: str, token: int, tf: Any, values: _Child) -> None:
    """Range rules of a child bar (limits in :mod:`schemas.limits`); BadBarInput names the first broken one."""
    if tf != source_tf:
        raise BadBarInput(f"expected {source_tf} bars, got tf={tf!r}")
    ts, o, h, lo, c, volume, ticks, cum = values
    if not 0 < token < MAX_TOKEN:
        raise BadBarInput(f"instrument_token out of range (0, 2**63): {token}")
    if not MIN_TS_MS <= ts < MAX_TS_MS or ts % TF_MS[source_tf]:
        raise BadBarInput(f"ts out of range or not aligned to {tf}: {ts}")
    if not (isfinite(o) and isfinite(h) and isfinite(lo) and isfinite(c)):
        raise BadBarInput("prices must be finite")
    if not (lo <= o <= h and lo <= c <= h):
        raise BadBarInput(f"prices inconsistent: need low <= open, close <= high (o={o} h={h} l={lo} c={c})")
    if not 0 <= volume <= max_bar_volume(tf):
        raise BadBarInput(f"volume out of range [0, {max_bar_volume(tf)}] for {tf}: {volume}")
    if not 0 <= ticks <= max_bar_ticks(tf):
        raise BadBarInput(f"ticks out of range [0, {max_bar_ticks(tf)}] for {tf}: {ticks}")
    if cum is not None and not 0 <= cum < MAX_CUM_VOLUME:
        raise BadBarInput(f"cum_volume out of range [0, 2**40): {cum}")


def decode_bar(child: Mapping[str, Any], source_tf: str) -> Bar:
    """A decoded bar message of ``source_tf`` as a :class:`Bar`, held to the same rules as a rollup's input
    (types as orjson gives them, then :func:`check_bar`); :class:`BadBarInput` otherwise."""
    token, tf, values = BarRollup._parse(child)
    check_bar(source_tf, token, tf, values)
    ts, o, h, lo, c, volume, ticks, cum = values
    return Bar(token, tf, ts, o, h, lo, c, volume, ticks, cum)


class BarRollup:
    """Aggregates ``source_tf`` bars into each of ``target_tfs`` (see module docstring).

    ``calendar`` decides each instrument's session for anchored timeframes
    (default: every instrument on NSE, 09:15-15:30 IST).
    """

    def __init__(self, source_tf: str, target_tfs: Sequence[str], grace_ms: int = 0,
                 wall_grace_ms: int = 8000, calendar: SessionCalendar | None = None) -> None:
        if source_tf not in TF_MS:
            raise ValueError(f"unknown source timeframe {source_tf!r}")
        if not target_tfs:
            raise ValueError("need at least one target timeframe")
        for tf in target_tfs:
            if tf not in TF_MS or TF_MS[tf] <= TF_MS[source_tf] or TF_MS[tf] % TF_MS[source_tf]:
                raise ValueError(f"target {tf!r} is not a larger multiple of source {source_tf!r}")
        if grace_ms < 0 or wall_grace_ms < 0:
            raise ValueError("grace must be >= 0 ms")
        self.source_tf = source_tf
        self.target_tfs = tuple(target_tfs)
        self.grace_ms = grace_ms
        self.wall_grace_ms = wall_grace_ms
        self.calendar = calendar or SessionCalendar()
        self._src = TF_MS[source_tf]
        self._inst: dict[int, list[_Track]] = {}
        self._wm = CommitWatermark()
        self._idle = IdleSchedule(wall_grace_ms)
        self._ready: list[tuple[_OpenParent, Bar]] = []
        self.late_bars = 0
        self.duplicate_bars = 0
        self.skipped_bars = 0
        self.accepted_bars = 0
        self.bars_emitted = 0

    def _tracks(self, token: int, partition: int) -> list[_Track]:
        tracks = self._inst.get(token)
        if tracks is None:
            session = self.calendar.session_for(token)
            tracks = self._inst[token] = [_Track(token, tf, session, partition) for tf in self.target_tfs]
        return tracks

    @staticmethod
    def _parse(child: Mapping[str, Any] | Bar) -> tuple[int, str, _Child]:
        if isinstance(child, Bar):
            child = child.to_dict()
        try:
            token, tf, ts = child["instrument_token"], child["tf"], child["ts"]
            values = (ts, _price(child["open"]), _price(child["high"]), _price(child["low"]),
                      _price(child["close"]), child["volume"], child["ticks"], child.get("cum_volume"))
        except (KeyError, TypeError, AttributeError) as exc:
            raise BadBarInput(f"bad child bar: {exc!r}") from None
        if type(token) is not int or type(ts) is not int or type(values[5]) is not int \
                or type(values[6]) is not int or not (values[7] is None or type(values[7]) is int):
            raise BadBarInput("instrument_token, ts, volume, ticks (and cum_volume) must be integers")
        return token, tf, values

    def _check(self, token: int, tf: Any, values: _Child) -> None:
        check_bar(self.source_tf, token, tf, values)

    # ----------------------------------------------------------------- input
    def add(self, child: Mapping[str, Any] | Bar, partition: int, offset: int) -> None:
        """Feed one child bar read from ``partition`` at ``offset``.

        Raises :class:`BadBarInput` (state untouched) for a malformed child, one
        of the wrong timeframe, or one out of range (non-finite prices, high <
        low, open/close outside [low, high], volume/ticks/cum_volume outside
        the bounds of :mod:`schemas.limits`, ts unaligned); the caller routes
        it to the DLQ.
        """
        token, tf, values = self._parse(child)
        self._check(token, tf, values)
        ts = values[0]
        c_end = ts + self._src
        self._wm.last[partition] = offset
        for tr in self._tracks(token, partition):
            tr.part = partition
            if not tr.touched:
                tr.touched = True
                self._idle.touched.append(tr)
            parent = tr.cur
            if parent is None or not (parent.start <= ts < parent.end):
                start, end = tr.bounds(ts)
                if start < tr.frontier or end + self.grace_ms <= tr.horizon:
                    if start < tr.restored:
                        self.skipped_bars += 1
                    else:
                        self.late_bars += 1
                    self._move_horizon(tr, c_end)
                    continue
                parent = tr.parents.get(start)
                if parent is None:
                    parent = tr.parents[start] = _OpenParent(start, end, partition, offset)
                    self._wm.hold(partition, parent)
                    if end + self.grace_ms < tr.next_close:
                        tr.next_close = end + self.grace_ms
                tr.cur = parent
            if partition != parent.part:
                if parent.parts is None:
                    parent.parts = set()
                if partition not in parent.parts:
                    parent.parts.add(partition)
                    self._wm.hold(partition, ExtraHold(offset, parent))
            if ts in parent.children:
                self.duplicate_bars += 1
            else:
                self.accepted_bars += 1
            parent.children[ts] = values
            self._move_horizon(tr, c_end)

    def _move_horizon(self, tr: _Track, c_end: int) -> None:
        if c_end > tr.horizon:
            tr.horizon = c_end
            if c_end >= tr.next_close:
                self._close_through(tr, c_end - self.grace_ms)

    # -------------------------------------------------------------- emission
    def _close_through(self, tr: _Track, limit_end: int) -> int | None:
        """Close ``tr``'s parents ending at or before ``limit_end``, ascending; return the last end."""
        parents = tr.parents
        closed = None
        for start in sorted(parents):
            parent = parents[start]
            if parent.end > limit_end:
                break
            del parents[start]
            self._ready.append((parent, _finish(tr, parent)))
            if tr.cur is parent:
                tr.cur = None
            closed = parent.end
        tr.next_close = parents[min(parents)].end + self.grace_ms if parents else _NEVER
        return closed

    def advance(self, now_ms: int | None = None) -> list[Bar]:
        """Return the parents closed since the last call; with ``now_ms``, close quiet ones by wall time."""
        if now_ms is not None:
            for tr in self._idle.due(now_ms):
                closed = self._close_through(tr, now_ms - self.wall_grace_ms)
                if closed is not None and closed > tr.frontier:
                    tr.frontier = closed
                if tr.parents:
                    self._idle.schedule(tr)
        return self._hand_out()

    def close_all(self) -> list[Bar]:
        """Close every open parent now (end of stream)."""
        for tracks in self._inst.values():
            for tr in tracks:
                closed = self._close_through(tr, _NEVER)
                if closed is not None and closed > tr.frontier:
                    tr.frontier = closed
        return self._hand_out()

    def _hand_out(self) -> list[Bar]:
        out = []
        for parent, bar in self._ready:
            parent.done = True
            out.append(bar)
        self._ready.clear()
        self.bars_emitted += len(out)
        return out

    # ------------------------------------------------------ offsets/restart
    def committable_offsets(self) -> dict[int, int]:
        """``{partition: offset}`` safe to commit: nothing below it feeds an unemitted parent."""
        return self._wm.committable()

    def restore(self, instrument_token: int, tf: str, last_ts: int, partition: int = -1) -> None:
        """Resume after a restart: ``last_ts`` is the instrument's last durable ``tf`` bar.

        Call before feeding replayed children; children of parents up to
        ``last_ts`` are skipped.
        """
        if tf not in self.target_tfs:
            raise ValueError(f"{tf!r} is not a target of this rollup")
        for tr in self._tracks(instrument_token, partition):
            if tr.tf == tf:
                end = tr.bounds(last_ts)[1]
                tr.restored = max(tr.restored, end)
                tr.frontier = max(tr.frontier, tr.restored)

    def drop_partitions(self, partitions: Iterable[int]) -> None:
        """Forget instruments fed from ``partitions`` (revoked); call after committing."""
        gone = set(partitions)
        if not gone:
            return
        for token, tracks in list(self._inst.items()):
            hit = any(tr.part in gone or any(p.part in gone or (p.parts and p.parts & gone)
                                             for p in tr.parents.values())
                      for tr in tracks)
            if hit:
                for tr in tracks:
                    for parent in tr.parents.values():
                        parent.done = True
                    tr.parents.clear()
                    tr.cur = None
                del self._inst[token]
        kept = []
        for parent, bar in self._ready:
            if bar.instrument_token in self._inst:
                kept.append((parent, bar))
            else:
                parent.done = True
        self._ready = kept
        self._wm.drop(gone)

    @property
    def open_bars(self) -> int:
        """Number of open (unemitted) parent bars, for a gauge."""
        return sum(len(tr.parents) for tracks in self._inst.values() for tr in tracks)
