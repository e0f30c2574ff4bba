"""Stream wiring shared by the bar builder and the aggregators.

The pure cores (:class:`compute.bar_builder_core.BarBuilder`,
:class:`compute.bar_rollup.BarRollup`) do the bar math and track the commit
watermark; this module adapts them to :class:`core.stream.StreamService`:
JSON decode (orjson), poison input to the DLQ, bars to ``bars.<tf>`` and to
``bars_<tf>`` (+ ``bar_state``), and restore of resume points from Postgres
whenever partitions are assigned.
"""

from __future__ import annotations

import argparse
import time
from abc import abstractmethod
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import orjson
from confluent_kafka import Message

from compute.bar_store import load_state, upsert_bars
from compute.bars import BadBarInput, Bar
from core import db
from core.cli import env_int, env_or_none
from core.errors import Interrupted
from core.metrics import Metrics
from core.service import Backoff
from core.settings import Settings
from core.stream import TP, Emission, OutMessage, Sink, StreamService
from core.topics import TICKS, bars_topic
from schemas.limits import DEFAULT_MAX_AHEAD_MS, MAX_AHEAD_LIMIT_MS, MAX_TOKEN, MAX_TS_MS, MIN_TS_MS

_dumps = orjson.dumps



_loads = orjson.loads


class BarCore(Protocol):
    """What BarBuilder and BarRollup have in common."""

    def add(self, item: Any, partition: int, offset: int) -> None: ...
    def advance(self, now_ms: int | None = None) -> list[Bar]: ...
    def committable_offsets(self) -> dict[int, int]: ...
    def drop_partitions(self, partitions: Iterable[int]) -> None: ...


class WallClockGate:
    """The wall clock a downstream bar core sees: it stands still while any input partition stalls.

    An aggregator cannot tell a quiet instrument from a stalled upstream (the
    builder restarting, or a new builder member that owns only some partitions
    while a dead member's session times out, holds back those partitions'
    child bars). Closing quiet instruments by the raw wall clock could close a
    bar before its last child arrives. This clock advances with real time only
    while every assigned partition is either flowing (a message within
    ``live_window_ms``) or has been silent for at least ``silent_close_ms``
    (nothing there, or the session is over: the last bars must close). A stall
    shorter than ``silent_close_ms`` therefore never closes a bar early; the
    price is that a quiet instrument's bar can wait up to about
    ``wall grace + silent_close_ms`` (which the next stage's wall grace must
    exceed). ``silent_close_ms=None`` means the real clock (the bar builder,
    whose input is the market itself).
    """

    def __init__(self, live_window_ms: int, silent_close_ms: int | None) -> None:
        self.live_window_ms = live_window_ms
        self.silent_close_ms = silent_close_ms
        self.last_input: dict[int, int] = {}  # partition -> wall ms of its last message (or assignment)
        self._last_real: int | None = None
        self._virtual = 0
        self._seen_input = False

    def assigned(self, partitions: Iterable[int], now_ms: int) -> None:
        """Partitions newly owned: silent since ``now_ms`` until their first message."""
        for p in partitions:
            self.last_input.setdefault(p, now_ms)

    def revoked(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self.last_input.pop(p, None)

    def flowing(self, now_ms: int) -> bool:
        """True when no assigned partition is in the suspicious middle ground of silence."""
        live, silent = self.live_window_ms, self.silent_close_ms
        assert silent is not None
        for last in self.last_input.values():
            quiet = now_ms - last
            if live < quiet < silent:
                return False
        return True

    def wall_now(self, now_ms: int, partitions_with_input: Iterable[int]) -> int | None:
        """The clock value to pass to the core's ``advance`` (None before any input)."""
        if self.silent_close_ms is None:
            return now_ms
        if self._last_real is None:
            self._last_real = self._virtual = now_ms
        dt = max(0, now_ms - self._last_real)
        self._last_real = now_ms
        if not self._seen_input:
            self._virtual = now_ms  # nothing open yet, nothing to hold back: the real clock (else it lags for good)
        elif self.flowing(now_ms):
            self._virtual += dt
        for p in partitions_with_input:
            self.last_input[p] = now_ms
            self._seen_input = True
        return self._virtual if self._seen_input else None


#: Sanity bounds on input (see :mod:`schemas.limits`): tokens fit the bigint columns; event times
#: in [2000, 2100). MAX_FUTURE_MS is the absolute ceiling of the plausibility window.
MAX_FUTURE_MS = MAX_AHEAD_LIMIT_MS

#: Called with ``{instrument_token: partition}`` for instruments the core does not track yet.
Restorer = Callable[[dict[int, int]], None]


class BarProcessor:
    """Adapts a bar core to :class:`core.stream.Processor` (one input topic).

    The first time an instrument appears in the current assignment, ``restorer``
    loads its resume point (last durable bar) from Postgres into the core before
    its messages are fed, so replayed input of already-emitted buckets is skipped.
    Revoked partitions' instruments are dropped and reloaded when seen again.

    Plausibility window: an input whose event time is more than ``max_ahead_ms``
    beyond max(its partition's event-time watermark, the wall clock) is
    rejected (reason ``implausible: ...``, counted in ``implausible``) and
    changes nothing: no core state, no watermark, no commit hold. The
    partition watermark is the largest event time the core accepted from that
    partition before the current poll batch, so accelerated paper (simulated
    clock ahead of the wall) and replays (event times in the past) pass, and
    an overnight gap passes by the wall clock.
    """

    def __init__(self, core: BarCore, input_topic: str, gate: WallClockGate | None = None,
                 restorer: Restorer | None = None, max_ahead_ms: int = DEFAULT_MAX_AHEAD_MS) -> None:
        self.core = core
        self.max_ahead_ms = max_ahead_ms
        self.event_wm: dict[int, int] = {}  # partition -> largest accepted event time
        self.implausible = 0
        self.ts_field = "exchange_ts" if input_topic == TICKS else "ts"
        self.input_topic = input_topic
        self.gate = gate or WallClockGate(0, None)
        self.restorer = restorer
        self.topics: dict[str, str] = {}

    def process(self, msgs: Sequence[Message], now_ms: int) -> Emission:
        # One pass per message (this is the hot path): decode, spot instruments to restore, note partitions.
        rejects: list[tuple[Message, str]] = []
        items: list[tuple[Any, int, int]] = []
        kept: list[Message] = []
        parts: set[int] = set()
        tracked = self.core._inst  # noqa: SLF001 - token -> state of the pure core
        new: dict[int, int] = {}
        ts_field = self.ts_field
        wm = self.event_wm
        ahead = self.max_ahead_ms
        wall_limit = now_ms + ahead
        for m in msgs:
            part = m.partition()
            parts.add(part)
            try:
                obj = _loads(m.value())
            except orjson.JSONDecodeError as exc:
                rejects.append((m, f"invalid JSON: {exc}"))
                continue
            if type(obj) is not dict:
                rejects.append((m, "message is not a JSON object"))
                continue
            tok = obj.get("instrument_token")
            ts = obj.get(ts_field)
            if type(tok) is int and type(ts) is int:
                if not (0 < tok < MAX_TOKEN and MIN_TS_MS <= ts < MAX_TS_MS):
                    # Out of range for the tables (bigint, timestamptz): it would fail the upsert on every replay.
                    rejects.append((m, f"schema: instrument_token or {ts_field} out of range"))
                    continue
                pw = wm.get(part)
                limit = wall_limit if pw is None or pw + ahead < wall_limit else pw + ahead
                if ts > limit:
                    # Far ahead of its stream (e.g. an IST time read as UTC): it would wedge the instrument.
                    self.implausible += 1
                    rejects.append((m, f"implausible: {ts_field}={ts} is more than {ahead} ms ahead of "
                                       f"max(partition {part} watermark, wall clock)"))
                    continue
                if tok not in tracked and tok not in new:
                    new[tok] = part
            items.append((obj, part, m.offset()))
            kept.append(m)
        if new and self.restorer is not None:
            self.restorer(new)
        if items:
            bad = self._add_many(items)
            for index, err in bad:
                rejects.append((kept[index], f"schema: {err}"))
            skip = {index for index, _ in bad}
            for index, (obj, part, _off) in enumerate(items):
                ts = obj.get(ts_field)
                if index not in skip and type(ts) is int and ts > wm.get(part, -1):
                    wm[part] = ts
        bars = self.core.advance(self.gate.wall_now(now_ms, parts))
        return Emission(messages=self.encode(bars), rows=bars, rejects=rejects)

    def _add_many(self, items: list[tuple[Any, int, int]]) -> list[tuple[int, BadBarInput]]:
        add_many = getattr(self.core, "add_many", None)
        if add_many is not None:
            return add_many(items)  # type: ignore[no-any-return]
        bad = []
        add = self.core.add
        for i, (obj, part, off) in enumerate(items):
            try:
                add(obj, part, off)
            except BadBarInput as exc:
                bad.append((i, exc))
        return bad

    def encode(self, bars: Sequence[Bar]) -> list[OutMessage]:
        """Bars as ``bars.<tf>`` messages keyed by instrument_token."""
        topics = self.topics
        out = []
        for b in bars:
            topic = topics.get(b.tf)
            if topic is None:
                topic = topics[b.tf] = bars_topic(b.tf)
            out.append(OutMessage(topic, str(b.instrument_token).encode(), _dumps(b.to_dict())))
        return out

    def committable(self, consumed: dict[TP, int]) -> dict[TP, int]:
        held = self.core.committable_offsets()
        out = {}
        for (topic, part), nxt in consumed.items():
            off = held.get(part, nxt)
            out[(topic, part)] = off if off < nxt else nxt
        return out

    def on_assign(self, parts: Iterable[TP]) -> None:
        self.gate.assigned([p for _t, p in parts], int(time.time() * 1000))

    def on_revoke(self, parts: Iterable[TP]) -> None:
        numbers = [p for _t, p in parts]
        self.core.drop_partitions(numbers)
        self.gate.revoked(numbers)
        for p in numbers:
            self.event_wm.pop(p, None)


class BarService(StreamService):
    """A bar producer: input topic -> bar core -> ``bars.<tf>`` + ``bars_<tf>``."""

    input_topic = ""
    state_tfs: Sequence[str] = ()

    def __init__(self, settings: Settings, metrics: Metrics, args: argparse.Namespace) -> None:
        self.args = args
        self.input_topics = (self.input_topic,)
        super().__init__(settings, metrics)
        self.m_late = metrics.counter("late_ticks_total", "Inputs later than the flush grace (dropped)")
        self.m_dups = metrics.counter("duplicates_total", "Duplicate inputs ignored")
        self.m_bars = metrics.counter("bars_emitted_total", "Bars emitted", ["tf"])
        self.m_open = metrics.gauge("open_bars", "Bars still open (not yet emitted)")
        self.m_emit_lag = metrics.histogram(
            "bar_emit_delay_seconds", "Wall time from bucket end to emission",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 2.5, 3, 4, 5, 7.5, 10, 30, 60))
        self._counted = (0, 0)
        self.m_implausible = metrics.counter(
            "implausible_total", "Inputs dropped to the DLQ: event time beyond the plausibility window")
        self._implausible = 0

    @abstractmethod
    def build_core(self) -> BarCore:
        """The pure bar core (BarBuilder or BarRollup)."""

    def build_gate(self) -> WallClockGate:
        """Wall-clock closing policy (the builder always may; aggregators see WallClockGate)."""
        return WallClockGate(0, None)

    def build_processor(self) -> BarProcessor:
        self.core = self.build_core()
        return BarProcessor(self.core, self.input_topic, self.build_gate(), self._restore_from_db,
                            self.max_ahead_ms)

    @property
    def max_ahead_ms(self) -> int:
        """The plausibility window (``--max-ahead-ms`` / env ``BAR_MAX_AHEAD_MS``)."""
        return int(getattr(self.args, "max_ahead_ms", DEFAULT_MAX_AHEAD_MS))

    def build_sink(self) -> Sink:
        return upsert_bars

    def _restore_from_db(self, new: dict[int, int]) -> None:
        """Load resume points of ``new`` instruments; retried until the database answers.

        Retrying here (not by failing the step) matters: the batch is already
        consumed, and a failed step would move on past it.
        """
        backoff = Backoff()
        while True:
            try:
                assert self.pool is not None
                with self.pool.connection() as conn:
                    state = load_state(conn, self.state_tfs, list(new))
                break
            except Exception as exc:  # noqa: BLE001 - only connection failures are retried
                if not db.is_transient(exc):
                    raise
                delay = backoff.next_delay()
                self.log.warning("loading resume state failed, retrying in %.1fs: %s", delay, type(exc).__name__)
                if self.sleep(delay):
                    raise Interrupted("stop requested while the database was down") from None
        self.restore(state, new)
        if state:
            self.log.info("resume state loaded instruments=%d rows=%d", len(new), len(state))

    @abstractmethod
    def restore(self, state: Sequence[tuple[str, int, int, int | None]], partitions: dict[int, int]) -> None:
        """Feed loaded resume points (``(tf, token, last_ts, cum_volume)``) to the core."""

    def step(self) -> None:
        super().step()
        self._export_counters()

    def _export_counters(self) -> None:
        late, dups = self.late_and_dups()
        pl, pd = self._counted
        if late > pl:
            self.m_late.inc(late - pl)
        if dups > pd:
            self.m_dups.inc(dups - pd)
        self._counted = (late, dups)
        implausible = getattr(self.processor, "implausible", 0)
        if implausible > self._implausible:
            self.m_implausible.inc(implausible - self._implausible)
            self._implausible = implausible
        self.m_open.set(getattr(self.core, "open_bars", 0))

    @abstractmethod
    def late_and_dups(self) -> tuple[int, int]:
        """The core's (late, duplicate) input counters."""


def make_parser(prog: str, doc: str, grace_env: str, grace_default: int,
                wall_default: int, wall_env: str = "") -> argparse.ArgumentParser:
    """The common CLI of bar services."""
    ap = argparse.ArgumentParser(prog=prog, description=doc)
    ap.add_argument("--grace-ms", type=int, default=env_int(grace_env, grace_default),
                    help=f"event-time flush grace in ms (env {grace_env}, default {grace_default})")
    ap.add_argument("--wall-grace-ms", type=int, default=env_or_none(wall_env),
                    help=f"close a quiet instrument's bars after this much wall time "
                         f"({'env ' + wall_env + ', ' if wall_env else ''}default {wall_default})")
    ap.add_argument("--group", default=None, help="consumer group id (default: the service name)")
    ap.add_argument("--max-ahead-ms", type=int, default=env_int("BAR_MAX_AHEAD_MS", DEFAULT_MAX_AHEAD_MS),
                    help="plausibility window: inputs further ahead of max(partition watermark, wall clock) go "
                         f"to the DLQ (env BAR_MAX_AHEAD_MS, default {DEFAULT_MAX_AHEAD_MS})")
    return ap


def check_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage errors exit 2 with one line (argparse's convention)."""
    if args.grace_ms < 0 or (args.wall_grace_ms is not None and args.wall_grace_ms < 0):
        ap.error("--grace-ms and --wall-grace-ms must be >= 0")
    if not 0 < args.max_ahead_ms <= MAX_AHEAD_LIMIT_MS:
        ap.error(f"--max-ahead-ms (env BAR_MAX_AHEAD_MS) must be in (0, {MAX_AHEAD_LIMIT_MS}], "
                 f"got {args.max_ahead_ms}")


ServiceFactory = Callable[[Settings, Metrics], StreamService]
