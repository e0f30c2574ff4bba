"""The paper venue: our orders executed against the market seen in ticks, on the C++ matcher. Pure: no I/O.

Per instrument the venue keeps the latest tick (:class:`~execution.paper_market.Quote`) and three
``matcher_cpp.OrderBook`` objects: our resting BUY orders, our resting SELL orders (one book per side,
so two of our own orders never trade with each other) and the market's visible depth, rebuilt from the
latest tick when an order of ours needs it (what our orders take from it stays taken until the next
tick). Prices inside are integer ticks of the instrument's tick size.

The model (README "Paper trading" has the operator's version):

- **Latency.** An order reaches the venue ``latency_ms`` after max(its signal time, the latest tick
  of its instrument when the gateway received it): the pipeline's own delay counts. It is matched
  against the market as it was at that moment (the last tick before it), then every later tick
  applies to what rests.
- **Marketable orders** walk the depth of that tick: MARKET through the five levels (the remainder
  beyond them is cancelled; with no depth at all it fills at the last price), LIMIT up to its price
  (the remainder rests). What our orders take from a visible level stays taken while later ticks
  still show the level (the market does not see us), and is released as the level shrinks or goes.
- **Resting orders keep a queue position**: the market quantity shown at their price when they
  arrived (0 when they improve on the best; beyond the five levels, the deepest level's quantity).
  Volume traded at that price (cumulative-volume deltas, else the last trade quantity) consumes the
  queue ahead first, and only what is left fills our orders, which the matcher allocates in price-time
  priority (our orders at one price queue as one block behind the market quantity ahead of the
  earliest of them). The queue ahead shrinks to what the tick shows at that price (cancellations).
  A trade through the price (a last price beyond it) or a visible opposite level at or through it
  (what we have not taken of it already) fills our order at its own price. The instrument's first
  tick only places orders: with nothing before it, no trade is known. Volume at a price counts for
  our resting orders on both sides there (which side was passive is not in the tick).
- **SL/SL-M** wait for the last price to reach the trigger (BUY: ltp >= trigger, SELL: ltp <=
  trigger), then run as LIMIT/MARKET against the tick that triggered them.
- **DAY validity**: at the close of the order's session (event time: the first tick at or after it,
  of any instrument) what is left expires. MIS positions are squared off by the strategies' exits.

The venue records what happened as :class:`VenueFill` and :class:`VenueStatus` effects, in order,
and which orders changed (``dirty``); the gateway writes both through the OMS in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import matcher_cpp
from core.sessions import ExchangeCalendar, ist_date
from execution.oms_core import Status
from execution.paper_market import Quote, displayed, queue_ahead, to_price, to_ticks, traded_volume

#: Owner of our orders in the depth books (the market's levels are anonymous).
OURS = 1
HUGE = 1 << 39

PENDING, STOP, RESTING, DONE = "pending", "stop", "resting", "done"


@dataclass(slots=True)
class PaperOrder:
    """One order at the paper venue (a row of ``paper_orders``)."""

    order_id: str
    seq: int  # matcher id and time priority
    token: int
    strategy: str
    exchange: str
    side: str
    order_type: str
    qty: int
    tick_size: float
    price: int | None = None  # limit, ticks
    trigger: int | None = None  # ticks
    filled: int = 0
    fills: int = 0  # fills emitted so far (the next fill_id's number)
    state: str = PENDING
    arrival_ts: int = 0
    expiry_ts: int = 0
    ahead: int = 0
    priority: int = 0  # when it started resting (or waiting for its trigger): the order to restore it in

    @property
    def open_qty(self) -> int:
        return self.qty - self.filled


@dataclass(frozen=True, slots=True)
class VenueFill:
    order_id: str
    fill_no: int
    qty: int
    price: float
    ts: int

    @property
    def fill_id(self) -> str:
        return f"{self.order_id}-{self.fill_no}"


@dataclass(frozen=True, slots=True)
class VenueStatus:
    order_id: str
    status: Status
    detail: str
    ts: int


Effect = VenueFill | VenueStatus


@dataclass(slots=True)
class _Instrument:
    quote: Quote | None = None
    books: dict[str, Any] = field(default_factory=lambda: {"BUY": matcher_cpp.OrderBook(),
                                                           "SELL": matcher_cpp.OrderBook()})
    #: market quantity ahead of our block of orders at (side, price)
    ahead: dict[tuple[str, int], int] = field(default_factory=dict)
    #: the market's visible levels as books our orders take from: "SELL" = the asks our buys walk ...
    depth: dict[str, Any] = field(default_factory=dict)
    depth_of: Quote | None = None  # ... built from this tick
    resting: dict[int, PaperOrder] = field(default_factory=dict)  # seq -> our resting orders
    #: the market's visible liquidity our orders took, by (its side, price): still taken while the level
    #: shows at least as much (the market does not see us), released as the level shrinks
    taken: dict[tuple[str, int], int] = field(default_factory=dict)
    pending: list[PaperOrder] = field(default_factory=list)
    stops: list[PaperOrder] = field(default_factory=list)


class RejectedOrder(ValueError):
    """An order the venue cannot accept (the OMS marks it REJECTED with this message)."""


class PaperVenue:
    """See the module docstring."""

    def __init__(self, calendar: ExchangeCalendar, latency_ms: int = 50, next_seq: int = 1) -> None:
        self.calendar = calendar
        self.latency_ms = latency_ms
        self.next_seq = next_seq
        self.markets: dict[int, _Instrument] = {}
        self.orders: dict[str, PaperOrder] = {}  # live: pending, stop, resting
        self.by_seq: dict[int, PaperOrder] = {}
        self.effects: list[Effect] = []
        self.dirty: dict[str, PaperOrder] = {}  # changed since the last drain (done ones included)
        self.clock = 0  # the latest exchange_ts seen, any instrument
        self._taker = -1
        self._next_expiry: int | None = None  # no live order expires before this (a lower bound)

    # -- orders in -------------------------------------------------------------------------
    def receive(self, o: dict[str, Any], tick_size: float | None) -> PaperOrder:
        """An allowed order reaching the gateway (the OMS has it SUBMITTED). Raises RejectedOrder."""
        if tick_size is None or tick_size <= 0:
            raise RejectedOrder(f"no tick size known for instrument {o['instrument_token']}")
        otype = o["order_type"]
        price = trigger = None
        if otype in ("LIMIT", "SL"):
            price = self._grid(o.get("price"), tick_size, "price")
        if otype in ("SL", "SL-M"):
            trigger = self._grid(o.get("trigger_price"), tick_size, "trigger_price")
        m = self.markets.setdefault(o["instrument_token"], _Instrument())
        seen = m.quote.ts if m.quote is not None else 0
        arrival = max(o["signal_ts"], seen) + self.latency_ms
        try:
            open_at_arrival = self.calendar.is_open(o["exchange"], arrival)
        except Exception:  # noqa: BLE001 - an exchange the calendar does not list: no session check
            open_at_arrival = True
        if not open_at_arrival:
            raise RejectedOrder(f"market closed: {o['exchange']} has no session open when the order arrives")
        po = PaperOrder(o["order_id"], self.next_seq, o["instrument_token"], o["strategy"], o["exchange"], o["side"],
                        otype, o["qty"], tick_size, price, trigger, arrival_ts=arrival,
                        expiry_ts=self._expiry(o["exchange"], arrival))
        self.next_seq += 1
        self._track(po)
        if self.latency_ms == 0 and m.quote is not None:
            self._arrive(m, po, m.quote)
        else:
            m.pending.append(po)
        return po

    def cancel(self, order_id: str, ts: int, detail: str = "cancelled") -> bool:
        """Cancel what is left of a live order; False if it is not live here."""
        po = self.orders.get(order_id)
        if po is None:
            return False
        self._remove(po)
        self._status(po, Status.CANCELLED, detail, ts)
        return True

    # -- market in -------------------------------------------------------------------------
    def on_tick(self, token: int, q: Quote) -> bool:
        """Apply one tick; False if it was applied before (at or below the instrument's mark)."""
        m = self.markets.setdefault(token, _Instrument())
        prev = m.quote
        if prev is not None and q.mark <= prev.mark:
            return False
        self.advance_clock(q.ts)
        if m.pending:  # orders that arrived before this tick meet the market as it was
            due = [po for po in m.pending if po.arrival_ts <= q.ts]
            if due:
                m.pending = [po for po in m.pending if po.arrival_ts > q.ts]
                for po in sorted(due, key=lambda p: (p.arrival_ts, p.seq)):
                    self._arrive(m, po, prev or q)
        m.quote = q
        if m.taken:
            self._release_taken(m, q)
        if m.resting and prev is not None:  # (a first tick: what rests just met it, nothing traded since)
            self._market_executes_resting(m, prev, q)
        if m.stops and q.ltp > 0:  # after: the trades that trigger a stop happened before it was working
            self._trigger_stops(m, q)
        return True

    def advance_clock(self, ts: int) -> None:
        """Event time moved to ``ts``: expire what outlived its session's close."""
        if ts <= self.clock:
            return
        self.clock = ts
        if self._next_expiry is None or ts < self._next_expiry:
            return
        late = [po for po in self.orders.values() if po.expiry_ts and po.expiry_ts <= ts]
        for po in sorted(late, key=lambda p: p.seq):
            self._remove(po)
            self._status(po, Status.EXPIRED, "DAY order expired at the session close", po.expiry_ts)
        self._next_expiry = min((po.expiry_ts for po in self.orders.values() if po.expiry_ts), default=None)

    def next_expiry(self) -> int | None:
        """No live order expires before this event time (None: none expires)."""
        return self._next_expiry

    # -- restart ---------------------------------------------------------------------------
    def restore(self, orders: Iterable[PaperOrder], quotes: dict[int, Quote], clock: int = 0) -> None:
        """Rebuild from what was stored: resting orders re-enter their books in time priority."""
        for token, q in quotes.items():
            self.markets.setdefault(token, _Instrument()).quote = q
        for po in sorted(orders, key=lambda p: (p.priority or p.seq, p.seq)):
            m = self.markets.setdefault(po.token, _Instrument())
            self._track(po)
            self.next_seq = max(self.next_seq, po.seq + 1, po.priority + 1)
            if po.state == PENDING:
                m.pending.append(po)
            elif po.state == STOP:
                m.stops.append(po)
            elif po.state == RESTING:
                assert po.price is not None
                m.books[po.side].submit(po.seq, po.side, "LIMIT", po.open_qty, po.price)
                m.resting[po.seq] = po
                key = (po.side, po.price)
                m.ahead[key] = min(m.ahead.get(key, po.ahead), po.ahead)
        self.clock = max(self.clock, clock)
        self.dirty = {}

    def drain(self) -> tuple[list[Effect], list[PaperOrder]]:
        """The effects and changed orders since the last drain."""
        eff, changed = self.effects, list(self.dirty.values())
        self.effects, self.dirty = [], {}
        return eff, changed

    # -- internals: arrival and execution ----------------------------------------------------
    def _arrive(self, m: _Instrument, po: PaperOrder, q: Quote) -> None:
        ts = max(po.arrival_ts, q.ts)
        if po.state != PENDING:
            return
        if po.trigger is not None:
            if q.ltp > 0 and self._triggered(po, q.ltp):
                self._take(m, po, q, ts)
            else:
                po.state = STOP
                po.priority = self._priority()
                m.stops.append(po)
                self._touch(po)
                self._status(po, Status.OPEN, f"stop waiting for ltp {'>=' if po.side == 'BUY' else '<='} "
                                              f"{to_price(po.trigger, po.tick_size):g}", ts)
            return
        self._take(m, po, q, ts)

    def _take(self, m: _Instrument, po: PaperOrder, q: Quote, ts: int) -> None:
        """An order becoming active: walk the depth (up to its limit), rest or cancel the remainder."""
        limit = po.price if po.order_type in ("LIMIT", "SL") else None
        opposite = "SELL" if po.side == "BUY" else "BUY"
        levels = q.asks if po.side == "BUY" else q.bids
        if limit is None and not levels and q.ltp > 0:
            self._fill(po, po.open_qty, q.ltp, ts)  # no depth in the feed: the last price is all we know
        else:
            book = self._depth_book(m, q, opposite)
            self._taker -= 1
            evs = (book.submit(po.seq, po.side, "MARKET", po.open_qty, owner=OURS) if limit is None
                   else book.submit(po.seq, po.side, "IOC", po.open_qty, limit, owner=OURS))
            for e in evs:
                if e.kind == "trade":
                    self._fill(po, e.qty, e.price, ts)
                    key = (opposite, e.price)
                    m.taken[key] = m.taken.get(key, 0) + e.qty
        if po.open_qty == 0:
            return self._done(po)
        if limit is None:
            self._remove(po)
            return self._status(po, Status.CANCELLED,
                                f"market order: {po.open_qty} beyond the visible depth cancelled", ts)
        self._rest(m, po, limit, q, ts)

    def _rest(self, m: _Instrument, po: PaperOrder, price: int, q: Quote, ts: int) -> None:
        key = (po.side, price)
        ahead = m.ahead.get(key)
        if ahead is None:
            ahead = queue_ahead(q, po.side, price)
            crossed = (q.asks and q.asks[0][0] <= price) if po.side == "BUY" else (q.bids and q.bids[0][0] >= price)
            if crossed:  # it took the visible liquidity up to its price: nobody ahead at it
                ahead = 0
            m.ahead[key] = ahead
        evs = m.books[po.side].submit(po.seq, po.side, "LIMIT", po.open_qty, price)
        if evs[-1].kind != "accepted":  # the book would not hold it (prices too far apart on one side)
            if not self._at_level(m, po.side, price):
                m.ahead.pop(key, None)
            self._forget(po)
            return self._status(po, Status.CANCELLED, f"paper venue: cannot rest at {to_price(price, po.tick_size):g}"
                                                      f" ({evs[-1].reason})", ts)
        po.ahead = ahead
        po.state = RESTING
        po.price = price
        po.priority = self._priority()
        m.resting[po.seq] = po
        self._touch(po)
        if po.filled == 0:
            self._status(po, Status.OPEN, f"resting at {to_price(price, po.tick_size):g}, {ahead} ahead", ts)

    def _depth_book(self, m: _Instrument, q: Quote, side: str) -> Any:
        """The market's visible ``side`` as a book (built once per tick: our takes stay taken)."""
        if m.depth_of is not q:
            m.depth.clear()
            m.depth_of = q
        book = m.depth.get(side)
        if book is None:
            book = m.depth[side] = matcher_cpp.OrderBook()
            for i, (px, qty) in enumerate(q.asks if side == "SELL" else q.bids):
                left = qty - m.taken.get((side, px), 0)
                if left > 0:
                    book.submit(-(i + 1), side, "LIMIT", left, px)
        return book

    @staticmethod
    def _release_taken(m: _Instrument, q: Quote) -> None:
        """A level that shows less than we took from it has been traded or pulled by others: what we
        took is gone with it (a level gone from the tick releases everything)."""
        shown = {("SELL", px): qty for px, qty in q.asks} | {("BUY", px): qty for px, qty in q.bids}
        for key in list(m.taken):
            left = min(m.taken[key], shown.get(key, 0))
            if left > 0:
                m.taken[key] = left
            else:
                del m.taken[key]

    def _trigger_stops(self, m: _Instrument, q: Quote) -> None:
        fired = [po for po in m.stops if self._triggered(po, q.ltp)]
        if not fired:
            return
        m.stops = [po for po in m.stops if po not in fired]
        for po in fired:  # in seq order (stops are appended in arrival order)
            po.state = PENDING  # in flight: _take rests or finishes it
            self._take(m, po, q, q.ts)

    @staticmethod
    def _triggered(po: PaperOrder, ltp: int) -> bool:
        assert po.trigger is not None
        return ltp >= po.trigger if po.side == "BUY" else ltp <= po.trigger

    def _market_executes_resting(self, m: _Instrument, prev: Quote | None, q: Quote) -> None:
        """What the tick's trades and depth do to our resting orders (see the module docstring)."""
        v = traded_volume(prev, q)
        for side, sign in (("BUY", 1), ("SELL", -1)):
            book = m.books[side]
            if not len(book):
                continue
            taker_side = "SELL" if side == "BUY" else "BUY"
            best = book.best_bid() if side == "BUY" else book.best_ask()
            if best is None:
                continue  # only stops (they are not in this book)
            if v > 0 and q.ltp > 0:
                if sign * (best - q.ltp) > 0:  # traded through our best price: everything beyond fills
                    self._market_takes(m, side, taker_side, q.ltp + sign, HUGE, q.ts)
                key = (side, q.ltp)
                if key in m.ahead:  # traded at our price: the queue ahead first
                    ahead = m.ahead[key]
                    m.ahead[key] = max(0, ahead - v)
                    if v > ahead:
                        self._market_takes(m, side, taker_side, q.ltp, v - ahead, q.ts)
            opposite = q.asks if side == "BUY" else q.bids
            for px, qty in opposite:  # visible liquidity through our prices (or at them, with nobody ahead) ...
                best = book.best_bid() if side == "BUY" else book.best_ask()
                if best is None or sign * (best - px) < 0 or (best == px and displayed(q, side, px)):
                    break
                key = (taker_side, px)
                left = qty - m.taken.get(key, 0)  # ... that we have not taken already
                if left > 0:
                    m.taken[key] = m.taken.get(key, 0) + self._market_takes(m, side, taker_side, px, left, q.ts)
            self._shrink_queues(m, side, q)

    def _market_takes(self, m: _Instrument, side: str, taker_side: str, price: int, qty: int, ts: int) -> int:
        """The market trades ``qty`` at ``price`` or better against our resting ``side``; returns what traded."""
        self._taker -= 1
        traded = 0
        for e in m.books[side].submit(self._taker, taker_side, "IOC", qty, price):
            if e.kind == "trade":
                po = self.by_seq[e.maker_id]
                self._fill(po, e.qty, e.price, ts)
                traded += e.qty
                if po.open_qty == 0:
                    self._done(po)
        return traded

    def _shrink_queues(self, m: _Instrument, side: str, q: Quote) -> None:
        """The queue ahead is at most what the tick shows at that price; orders carry it (for a restart)."""
        for key in [k for k in m.ahead if k[0] == side]:
            shown = displayed(q, side, key[1])
            if shown is not None and shown < m.ahead[key]:
                m.ahead[key] = shown
        for po in m.resting.values():
            ahead = m.ahead.get((po.side, po.price or 0), po.ahead)
            if po.side == side and po.ahead != ahead:
                po.ahead = ahead
                self._touch(po)

    @staticmethod
    def _at_level(m: _Instrument, side: str, price: int) -> bool:
        return any(po.side == side and po.price == price for po in m.resting.values())

    # -- internals: bookkeeping ----------------------------------------------------------------
    def _fill(self, po: PaperOrder, qty: int, price_ticks: int, ts: int) -> None:
        po.filled += qty
        po.fills += 1
        self._touch(po)
        self.effects.append(VenueFill(po.order_id, po.fills, qty, to_price(price_ticks, po.tick_size), ts))

    def _done(self, po: PaperOrder) -> None:
        self._forget(po)

    def _remove(self, po: PaperOrder) -> None:
        """Take a live order out of wherever it waits (book, stops, pending)."""
        m = self.markets[po.token]
        if po.state == RESTING:
            m.books[po.side].cancel(po.seq)
        elif po.state == STOP:
            m.stops = [s for s in m.stops if s is not po]
        elif po.state == PENDING:
            m.pending = [s for s in m.pending if s is not po]
        self._forget(po)

    def _forget(self, po: PaperOrder) -> None:
        if po.state == RESTING and po.price is not None:  # (the matcher has let go of it already)
            m = self.markets[po.token]
            m.resting.pop(po.seq, None)
            if not self._at_level(m, po.side, po.price):
                m.ahead.pop((po.side, po.price), None)
        po.state = DONE
        self.orders.pop(po.order_id, None)
        self.by_seq.pop(po.seq, None)
        self._touch(po)

    def _track(self, po: PaperOrder) -> None:
        self.orders[po.order_id] = po
        self.by_seq[po.seq] = po
        if po.expiry_ts and (self._next_expiry is None or po.expiry_ts < self._next_expiry):
            self._next_expiry = po.expiry_ts
        self._touch(po)

    def _priority(self) -> int:
        n = self.next_seq
        self.next_seq += 1
        return n

    def _touch(self, po: PaperOrder) -> None:
        self.dirty[po.order_id] = po

    def _status(self, po: PaperOrder, status: Status, detail: str, ts: int) -> None:
        self.effects.append(VenueStatus(po.order_id, status, detail, ts))

    def _expiry(self, exchange: str, ts: int) -> int:
        """The close of the session the order arrives in (or the next one); 0 if the calendar has none."""
        try:
            s = self.calendar.session(exchange, ist_date(ts))
            if s is None or ts >= s.close_ms:
                nxt = self.calendar.next_open(exchange, ts)
                s = self.calendar.session(exchange, ist_date(nxt))
        except Exception:  # noqa: BLE001 - an exchange the calendar does not know: no expiry
            return 0
        return s.close_ms if s is not None else 0

    @staticmethod
    def _grid(v: float | None, tick_size: float, name: str) -> int:
        if v is None or v <= 0:
            raise RejectedOrder(f"{name} is required and must be positive for this order type")
        t = to_ticks(v, tick_size)
        if t is None:
            raise RejectedOrder(f"{name} {v:g} is not a multiple of the tick size {tick_size:g}")
        return t


def tick_sizes(lookup: Callable[[int], float | None]) -> Callable[[int], float | None]:
    """A memoised tick-size lookup."""
    cache: dict[int, float | None] = {}

    def get(token: int) -> float | None:
        if token not in cache:
            cache[token] = lookup(token)
        return cache[token]

    return get
