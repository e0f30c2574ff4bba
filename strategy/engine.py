"""The decision engine: bars and fills in, Orders out. Pure: no Kafka, no database, no wall clock.

The runner (:mod:`strategy.runner_modular`) drives it from the bus now; the
backtester drives it from history later, with the same code, so both decide
alike. Per (strategy, instrument, timeframe) a slot holds the strategy
instance and its indicators; per (strategy, instrument) a :class:`Position`
holds what fills say (``qty``, ``avg_price``) and what decided orders aim at
(``direction``).

Event time only. A bar is decided at its close, ``decision_ts = ts + tf``,
which is the Order's ``signal_ts`` (and ``created_ts``, so two runs over the
same bars give byte-identical orders). Session rules read the exchange
calendar (:mod:`core.sessions`) at the bar's ``ts``:

- no entries unless the bar lies inside the session and, for MIS, decides
  before the square-off time (default 15:15 IST; in a special session that
  closes earlier, 15 minutes before its close);
- at the first bar deciding at or after the square-off time, open MIS
  positions get exits (``intent: square_off``).

Orders: MARKET, ``qty`` null for entries (the risk manager sizes them from
``stop_loss``), the position's quantity for exits. An entry against an
opposite position emits the exit first. An exit decided while the entry has
not filled yet emits nothing; when a fill later leaves a position the
strategy no longer wants, the next bar emits the exit (``intent: flatten``).
``order_id`` is a digest of strategy, instrument, timeframe, side, intent and
signal time: a replay produces the same ids.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from core.sessions import DAY_MS, IST_OFFSET_MS, MINUTE_MS, ExchangeCalendar, hhmm_minutes, ist_date
from strategy.api import TF_MS, BarLike, Context, InstrumentInfo, Params, Position, SessionFacts, Signal, Strategy
from strategy.indicators import create

ENTRY, EXIT, SQUARE_OFF, FLATTEN = "entry", "exit", "square_off", "flatten"
TERMINAL_UNFILLED = frozenset({"REJECTED_RISK", "REJECTED_BUDGET", "REJECTED", "CANCELLED", "EXPIRED"})
"""OMS states after which an order fills no further (FILLED is reached through fills)."""
NO_SESSION = SessionFacts(None, None, None)


def order_id_for(strategy: str, token: int, tf: str, side: str, intent: str, signal_ts: int) -> str:
    """Deterministic order id (20 hex chars, also a valid Kite tag)."""
    key = f"{strategy}|{token}|{tf}|{side}|{intent}|{signal_ts}".encode()
    return hashlib.blake2b(key, digest_size=10).hexdigest()


@dataclass(frozen=True)
class StrategySpec:
    """One configured strategy on one timeframe (``label`` is the Order's ``strategy``)."""

    label: str
    cls: type[Strategy]
    params: Params
    tf: str
    tokens: frozenset[int]
    product: str = "MIS"
    ensemble: str | None = None
    """Set when the strategy votes in an ensemble: its signals go to the ensemble, not to orders."""


class EnsembleLike(Protocol):
    """What the engine needs from :class:`strategy.ensemble_engine.Ensemble`."""

    def combine(self, votes: Mapping[str, Signal | None]) -> tuple[Signal | None, dict[str, Any]]: ...


@dataclass(frozen=True)
class EnsembleSpec:
    label: str
    ensemble: EnsembleLike
    members: tuple[str, ...]
    tf: str
    tokens: frozenset[int]
    product: str = "MIS"


@dataclass
class _Book:
    """The orders a position waits on (ids the engine emitted and has not seen end)."""

    entry: str | None = None
    exits: dict[str, int] = field(default_factory=dict)  # order_id -> remaining signed qty


@dataclass(slots=True)
class _Emitted:
    label: str
    token: int
    intent: str
    direction: int  # +1 BUY / -1 SELL
    prev_stop: float | None = None  # an entry's: the stop of what it replaced (restored if it is rejected)


class _Slot:
    """One strategy on one instrument and timeframe."""

    __slots__ = ("strategy", "refs", "ctx", "label", "vote_only", "decide", "book", "intraday")

    def __init__(self, strategy: Strategy, ctx: Context, label: str, vote_only: bool,
                 share: Callable[[str, dict[str, Any]], int], book: _Book, intraday: bool) -> None:
        self.strategy = strategy
        # (value name, index of the shared indicator): strategies on the same instrument and timeframe
        # that need the same indicator (ATR 14, say) read one instance, updated once per bar
        self.refs = tuple((name, share(ind, params)) for name, (ind, params) in strategy.indicators().items())
        ctx.values.update({name: None for name, _ in self.refs})
        self.decide = strategy.on_bar
        self.ctx = ctx
        self.label = label
        self.vote_only = vote_only
        self.book = book  # the position's pending orders (the same object for the engine's life)
        self.intraday = intraday


class DecisionEngine:
    """Bars and fills in, Orders (dicts of the ``Order`` contract) out."""

    def __init__(self, specs: Sequence[StrategySpec], instruments: Mapping[int, InstrumentInfo],
                 calendar: ExchangeCalendar, square_off: str = "15:15",
                 ensembles: Sequence[EnsembleSpec] = ()) -> None:
        self.calendar = calendar
        self.instruments = instruments
        self.square_off_min = hhmm_minutes(square_off)
        self.positions: dict[tuple[str, int], Position] = {}
        self._books: dict[tuple[str, int], _Book] = {}
        self._emitted: dict[str, _Emitted] = {}
        self._sessions: dict[tuple[str, int], SessionFacts] = {}
        self._products: dict[str, str] = {}
        # (tf, token) -> slots deciding on that bar, and the ensembles combining them
        self._slots: dict[tuple[str, int], list[_Slot]] = {}
        self._ens: dict[tuple[str, int], list[EnsembleSpec]] = {}
        self.counts: dict[str, int] = {"signals": 0, "orders": 0}  # signals: those that reached a decision
        self.signals: dict[str, int] = {}  # by strategy (or ensemble) label, every signal given
        self.n_bars = 0
        self.dirty: set[tuple[str, int]] = set()  # positions whose direction/stop/entry time changed
        ens_by_label = {e.label: e for e in ensembles}
        shared: dict[tuple[str, int], tuple[list[Callable[[BarLike], Any]], dict[Any, int]]] = {}
        for spec in specs:
            owner = spec.ensemble if spec.ensemble in ens_by_label else None
            self._products[spec.label] = spec.product
            for token in sorted(spec.tokens):
                if token not in instruments:
                    continue
                pos = self.position(owner or spec.label, token)
                ctx = Context(instruments[token], pos, NO_SESSION, spec.tf, 0, {})
                updates, index = shared.setdefault((spec.tf, token), ([], {}))

                def share(ind: str, params: dict[str, Any], updates: list[Any] = updates,
                          index: dict[Any, int] = index) -> int:
                    key = (ind, tuple(sorted(params.items())))
                    if key not in index:
                        index[key] = len(updates)
                        updates.append(create(ind, **params).update)
                    return index[key]

                slot = _Slot(spec.cls(spec.params), ctx, spec.label, owner is not None, share,
                             self._books[(owner or spec.label, token)], spec.product == "MIS")
                self._slots.setdefault((spec.tf, token), []).append(slot)
        self._by_tf: dict[str, dict[int, list[Any]]] = {}
        for (tf, token), slots in self._slots.items():
            # [indicator updates, slots, IST day of the cached session facts, those facts]
            self._by_tf.setdefault(tf, {})[token] = [shared[(tf, token)][0], slots, -1, NO_SESSION]
        for ens in ensembles:
            self._products[ens.label] = ens.product
            for token in sorted(ens.tokens):
                if token in instruments:
                    self.position(ens.label, token)
                    self._ens.setdefault((ens.tf, token), []).append(ens)

    # ------------------------------------------------------------------ state
    def position(self, label: str, token: int) -> Position:
        key = (label, token)
        pos = self.positions.get(key)
        if pos is None:
            pos = self.positions[key] = Position()
            self._books[key] = _Book()
        return pos

    def ready_counts(self) -> tuple[int, int]:
        """(slots whose indicators all have values, all slots)."""
        total = ready = 0
        for slots in self._slots.values():
            for slot in slots:
                total += 1
                ready += all(v is not None for v in slot.ctx.values.values())
        return ready, total

    def timeframes(self) -> set[str]:
        """The timeframes some strategy decides on."""
        return {tf for tf, _ in self._slots}

    def tokens(self, tf: str) -> set[int]:
        return {tok for t, tok in self._slots if t == tf}

    def session_facts(self, exchange: str, ts_ms: int) -> SessionFacts:
        day = (ts_ms + IST_OFFSET_MS) // DAY_MS
        key = (exchange, day)
        facts = self._sessions.get(key)
        if facts is None:
            s = self.calendar.session(exchange, ist_date(ts_ms))
            if s is None:
                facts = NO_SESSION
            else:
                sq = day * DAY_MS - IST_OFFSET_MS + self.square_off_min * MINUTE_MS
                if not s.open_ms < sq <= s.close_ms:
                    sq = max(s.open_ms, s.close_ms - 15 * MINUTE_MS)
                facts = SessionFacts(s.open_ms, s.close_ms, sq)
            self._sessions[key] = facts
        return facts

    # ------------------------------------------------------------------ inputs
    def on_bar(self, bar: BarLike, tf: str, emit: bool = True) -> list[dict[str, Any]]:  # noqa: C901 (hot path, inlined)
        """Decide on one closed bar; ``emit=False`` only warms indicators and strategy state."""
        token = bar.instrument_token
        by_token = self._by_tf.get(tf)
        group = by_token.get(token) if by_token is not None else None
        if group is None:
            return []
        updates, slots, cached_day, session = group
        self.n_bars += 1
        ts = bar.ts
        decision_ts = ts + TF_MS[tf]
        day = (ts + IST_OFFSET_MS) // DAY_MS
        if day != cached_day:
            session = group[3] = self.session_facts(self.instruments[token].exchange, ts)
            group[2] = day
        orders: list[dict[str, Any]] = []
        votes: dict[str, Signal | None] | None = None
        res = [update(bar) for update in updates]
        for slot in slots:
            ctx = slot.ctx
            values = ctx.values
            for name, i in slot.refs:
                values[name] = res[i]
            ctx.decision_ts = decision_ts
            ctx.session = session
            sig = slot.decide(bar, ctx)
            if sig is not None:
                self.signals[slot.label] = self.signals.get(slot.label, 0) + 1
            if slot.vote_only:
                if votes is None:
                    votes = {}
                votes[slot.label] = sig
            elif emit:
                if sig is None:
                    pos = ctx.position
                    d, q = pos.direction, pos.qty
                    if not d and not q:
                        continue  # nothing to decide: no signal, nothing held or aimed at
                    # held as aimed, no exit on its way, before any square-off: _decide would do nothing
                    if d and (q > 0 if d > 0 else q < 0) and not slot.book.exits and not (slot.intraday and (
                            (session.square_off_ms is not None and decision_ts >= session.square_off_ms)
                            or session.open_ms is None or (pos.entry_ts is not None
                                                           and pos.entry_ts < session.open_ms))):
                        continue
                self._decide(slot.label, tf, bar, decision_ts, session, sig, None, orders)
        for ens in self._ens.get((tf, token), ()):
            sig, meta = ens.ensemble.combine(votes or {})
            if emit:
                if sig is None and self._settled(ens.label, token, ens.product == "MIS", decision_ts, session):
                    continue
                self._decide(ens.label, tf, bar, decision_ts, session, sig, meta, orders)
        return orders

    def _settled(self, label: str, token: int, intraday: bool, ts: int, session: SessionFacts) -> bool:
        """Nothing for :meth:`_decide` to do without a signal: flat, or held as aimed with no exit on its way,
        before any square-off (the per-bar fast path; the strategies' loop inlines the same test)."""
        pos = self.positions[(label, token)]
        d, q = pos.direction, pos.qty
        if not d:
            return not q
        return (q > 0 if d > 0 else q < 0) and not self._books[(label, token)].exits and not (intraday and (
            (session.square_off_ms is not None and ts >= session.square_off_ms) or session.open_ms is None
            or (pos.entry_ts is not None and pos.entry_ts < session.open_ms)))

    def on_fill(self, strategy: str, token: int, side: str, qty: int, price: float,
                order_id: str | None = None) -> None:
        """Apply one fill (deduplicated by the caller: fills are keyed by ``fill_id``)."""
        pos = self.position(strategy, token)
        signed = qty if side == "BUY" else -qty
        old = pos.qty
        new = old + signed
        if old == 0 or (old > 0) == (signed > 0):
            pos.avg_price = (pos.avg_price * abs(old) + price * qty) / abs(new) if new else 0.0
        elif new == 0:
            pos.avg_price = 0.0
        elif (new > 0) != (old > 0):
            pos.avg_price = price  # crossed through zero: the remainder opened at this price
        pos.qty = new
        book = self._books[(strategy, token)]
        if order_id is not None and order_id in book.exits:
            left = book.exits[order_id] - signed  # still to trade, signed like the exit
            if left == 0 or (left > 0) != (book.exits[order_id] > 0):
                del book.exits[order_id]
            else:
                book.exits[order_id] = left
        if order_id is not None and order_id == book.entry:
            book.entry = None

    def on_order_update(self, order_id: str, status: str) -> None:
        """An order of ours ended without (further) fills: forget it, and undo an entry that never filled."""
        if status not in TERMINAL_UNFILLED:
            return
        em = self._emitted.get(order_id)
        if em is None:
            return
        key = (em.label, em.token)
        book = self._books[key]
        book.exits.pop(order_id, None)
        if book.entry == order_id:
            book.entry = None
            pos = self.positions[key]
            if pos.direction == em.direction:
                held = pos.qty + sum(book.exits.values())  # what stays once the pending exits fill
                pos.direction = (held > 0) - (held < 0)
                pos.stop = em.prev_stop if pos.direction else None
                self.dirty.add(key)

    def restore(self, label: str, token: int, qty: int, avg_price: float, direction: int | None = None,
                stop: float | None = None, pending: Iterable[tuple[str, str, str, int | None]] = (),
                entry_ts: int | None = None) -> None:
        """Start-up state from the database: filled qty, the decided direction/stop/entry time
        (``strategy_state``), and the orders still on their way (``(order_id, intent, side, qty)``)."""
        pos = self.position(label, token)
        pos.qty, pos.avg_price = qty, avg_price
        pos.direction = direction if direction is not None else (qty > 0) - (qty < 0)
        pos.stop = stop
        pos.entry_ts = entry_ts
        book = self._books[(label, token)]
        for oid, intent, side, oqty in pending:
            d = 1 if side == "BUY" else -1
            self._emitted[oid] = _Emitted(label, token, intent, d)
            if intent == ENTRY:
                book.entry = oid
            elif oqty:
                book.exits[oid] = d * oqty

    # ------------------------------------------------------------------ decisions
    def _decide(self, label: str, tf: str, bar: BarLike, ts: int, session: SessionFacts, sig: Signal | None,
                meta: dict[str, Any] | None, out: list[dict[str, Any]]) -> None:
        token = bar.instrument_token
        key = (label, token)
        pos = self.positions[key]
        intraday = self._products[label] == "MIS"
        sq = session.square_off_ms
        squared = intraday and sq is not None and ts >= sq
        # an MIS position from an earlier session (no bar came after its square-off time) goes now
        stale = intraday and pos.direction != 0 and pos.entry_ts is not None and (
            session.open_ms is None or pos.entry_ts < session.open_ms)
        if sig is not None:
            self.counts["signals"] += 1
            if meta is not None:  # an ensemble's consolidated signal (its members' are counted in on_bar)
                self.signals[label] = self.signals.get(label, 0) + 1
        if (squared or stale) and pos.direction != 0:
            pos.direction, pos.stop = 0, None
            self.dirty.add(key)
            self._flatten(label, tf, bar, ts, 0, SQUARE_OFF, "square-off", meta, out)
            return
        if sig is not None:
            d = sig.direction
            if sig.kind == "exit":
                if pos.direction == -d:
                    pos.direction, pos.stop = 0, None
                    self.dirty.add(key)
                    self._flatten(label, tf, bar, ts, 0, EXIT, sig.reason, meta, out)
                    return
            elif pos.direction != d and not squared and session.in_session(bar.ts) and (
                    intraday or session.close_ms is None or ts < session.close_ms):
                why = f"reverse: {sig.reason}" if pos.direction == -d else f"before entry: {sig.reason}"
                self._flatten(label, tf, bar, ts, d, EXIT, why, meta, out)
                prev_stop = pos.stop
                pos.direction, pos.stop, pos.entry_ts = d, sig.stop_loss, ts
                self.dirty.add(key)
                oid = self._order(label, tf, bar, ts, sig.side, ENTRY, None, sig.stop_loss, sig.reason, meta, out)
                self._emitted[oid].prev_stop = prev_stop
                self._books[key].entry = oid
                return
        if pos.qty:
            self._flatten(label, tf, bar, ts, pos.direction, FLATTEN, "position the strategy no longer holds",
                          meta, out)

    def _flatten(self, label: str, tf: str, bar: BarLike, ts: int, target: int, intent: str, reason: str,
                 meta: dict[str, Any] | None, out: list[dict[str, Any]]) -> None:
        """Exit the filled quantity no pending exit covers, unless it lies on the ``target`` side (+1, -1; 0: flat)."""
        token = bar.instrument_token
        qty = self.positions[(label, token)].qty
        if qty == 0:
            return
        book = self._books[(label, token)]
        residual = qty + sum(book.exits.values())
        if residual == 0 or (residual > 0) != (qty > 0):
            return  # covered (or over-covered) by exits on their way
        if target != 0 and (residual > 0) == (target > 0):
            return  # held on the side the strategy wants
        side = "SELL" if residual > 0 else "BUY"
        oid = self._order(label, tf, bar, ts, side, intent, abs(residual), None, reason, meta, out)
        book.exits[oid] = -residual

    def _order(self, label: str, tf: str, bar: BarLike, ts: int, side: str, intent: str, qty: int | None,
               stop: float | None, reason: str, meta: dict[str, Any] | None, out: list[dict[str, Any]]) -> str:
        token = bar.instrument_token
        inst = self.instruments[token]
        oid = order_id_for(label, token, tf, side, intent, ts)
        self._emitted[oid] = _Emitted(label, token, intent, 1 if side == "BUY" else -1)
        extra: dict[str, Any] = {"intent": intent, "reason": reason, "ref_price": bar.close}
        if meta is not None:
            extra["ensemble"] = meta
        out.append({
            "order_id": oid, "strategy": label, "instrument_token": token, "symbol": inst.symbol,
            "exchange": inst.exchange, "side": side, "order_type": "MARKET", "product": self._products[label],
            "price": None, "trigger_price": None, "stop_loss": stop, "qty": qty, "tf": tf,
            "signal_ts": ts, "created_ts": ts, "extra": extra,
        })
        self.counts["orders"] += 1
        return oid


def run_bars(engine: DecisionEngine, bars: Iterable[BarLike], tf: str,
             on_orders: Callable[[list[dict[str, Any]]], None] | None = None) -> int:
    """Feed bars in order; returns how many orders came out (a helper for tests and the bench)."""
    n = 0
    for bar in bars:
        orders = engine.on_bar(bar, tf)
        if orders:
            n += len(orders)
            if on_orders is not None:
                on_orders(orders)
    return n
