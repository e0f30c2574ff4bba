"""A plain-Python order book with the semantics of ``matcher_cpp`` (listed in matcher_cpp/src/matcher.hpp).

Written from that list, not from the C++ (no ladder, no bitsets, no hash map: a dict of price lists
and sorted price keys), so a differential fuzz test of the two catches a bug in either. Events are
tuples ``(kind, order_id, maker_id, taker_id, price, qty, reason)``, as ``Event.as_tuple()`` gives.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

MAX_PRICE = 1 << 40
MAX_QTY = 1 << 40
MAX_SPAN = 1 << 21
PRICED = ("LIMIT", "IOC", "FOK", "SL")
STOPS = ("SL", "SL-M")

EventTuple = tuple[str, int, int, int, int, int, str]


@dataclass(slots=True)
class _Order:
    id: int
    side: str
    type: str
    price: int
    qty: int
    owner: int
    trigger: int
    seq: int
    stop: bool


class RefBook:
    """One instrument's book; each call returns its events."""

    def __init__(self) -> None:
        self.levels: dict[str, dict[int, list[_Order]]] = {"BUY": {}, "SELL": {}}
        self.prices: dict[str, list[int]] = {"BUY": [], "SELL": []}  # ascending, non-empty levels
        self.live: dict[int, _Order] = {}
        self.stops: list[_Order] = []
        self.seq = 0
        self.last: int | None = None
        self.ev: list[EventTuple] = []

    # -- API -------------------------------------------------------------------------------
    def submit(self, oid: int, side: str, otype: str, qty: int, price: int = 0, trigger: int = 0,
               owner: int = 0) -> list[EventTuple]:
        self.ev = []
        priced, stop = otype in PRICED, otype in STOPS
        price = price if priced else 0
        trigger = trigger if stop else 0
        if not 0 < qty <= MAX_QTY:
            return self._out("rejected", oid, price, qty, "invalid_qty")
        if priced and not 0 < price <= MAX_PRICE:
            return self._out("rejected", oid, price, qty, "invalid_price")
        if stop and not 0 < trigger <= MAX_PRICE:
            return self._out("rejected", oid, price, qty, "invalid_trigger")
        if oid in self.live:
            return self._out("rejected", oid, price, qty, "duplicate_id")
        self.seq += 1
        self._emit("accepted", oid, price, qty)
        o = _Order(oid, side, otype, price, qty, owner, trigger, self.seq, stop)
        if stop and not (self.last is not None and self._triggers(o)):
            self.live[oid] = o
            self.stops.append(o)
            return self.ev
        if stop:
            self._emit("triggered", oid, trigger, qty)
        self._execute(o, "LIMIT" if otype == "SL" else "MARKET" if otype == "SL-M" else otype)
        self._run_stops()
        return self.ev

    def cancel(self, oid: int) -> list[EventTuple]:
        self.ev = []
        o = self.live.pop(oid, None)
        if o is None:
            return self._out("rejected", oid, 0, 0, "unknown_order")
        if o.stop:
            self.stops.remove(o)
        else:
            self._unrest(o)
        return self._out("cancelled", oid, o.price, o.qty, "user")

    def modify(self, oid: int, price: int, qty: int, trigger: int = 0) -> list[EventTuple]:
        self.ev = []
        o = self.live.get(oid)
        if o is None:
            return self._out("rejected", oid, price, qty, "unknown_order")
        priced = (not o.stop) or o.type == "SL"
        price = price if priced else 0
        if not 0 < qty <= MAX_QTY:
            return self._out("rejected", oid, price, qty, "invalid_qty")
        if priced and not 0 < price <= MAX_PRICE:
            return self._out("rejected", oid, price, qty, "invalid_price")
        if o.stop:
            trigger = trigger or o.trigger
            if not 0 <= trigger <= MAX_PRICE:
                return self._out("rejected", oid, price, qty, "invalid_trigger")
            keeps = price == o.price and trigger == o.trigger and qty <= o.qty
            o.price, o.trigger, o.qty = price, trigger, qty
            if not keeps:
                self.seq += 1
                o.seq = self.seq
            self._emit("accepted", oid, price, qty)
            self._run_stops()
            return self.ev
        if price == o.price:
            if qty > o.qty:  # to the back of its level
                q = self.levels[o.side][price]
                q.remove(o)
                q.append(o)
            o.qty = qty
            return self._out("accepted", oid, price, qty)
        self._unrest(o)
        del self.live[oid]
        self._emit("accepted", oid, price, qty)
        self.seq += 1
        self._execute(_Order(oid, o.side, "LIMIT", price, qty, o.owner, 0, self.seq, False), "LIMIT")
        self._run_stops()
        return self.ev

    def set_last_price(self, price: int) -> list[EventTuple]:
        self.ev = []
        self.last = price
        self._run_stops()
        return self.ev

    def best_bid(self) -> int | None:
        return self.prices["BUY"][-1] if self.prices["BUY"] else None

    def best_ask(self) -> int | None:
        return self.prices["SELL"][0] if self.prices["SELL"] else None

    def depth(self, n: int = 5) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        bids = [(p, sum(o.qty for o in self.levels["BUY"][p])) for p in reversed(self.prices["BUY"][-n:])] if n else []
        asks = [(p, sum(o.qty for o in self.levels["SELL"][p])) for p in self.prices["SELL"][:n]]
        return bids, asks

    def __len__(self) -> int:
        return len(self.live)

    # -- matching --------------------------------------------------------------------------
    def _execute(self, o: _Order, how: str) -> None:
        if how == "FOK" and not self._fillable(o):
            self._emit("cancelled", o.id, o.price, o.qty, "fok")
            return
        opp = "SELL" if o.side == "BUY" else "BUY"
        rem, stp = o.qty, False
        while rem > 0 and self.prices[opp]:
            px = self.prices[opp][0] if opp == "SELL" else self.prices[opp][-1]
            if how != "MARKET" and (px > o.price if o.side == "BUY" else px < o.price):
                break
            queue = self.levels[opp][px]
            while queue and rem > 0:
                m = queue[0]
                if o.owner and m.owner == o.owner:
                    stp = True
                    break
                q = min(m.qty, rem)
                m.qty -= q
                rem -= q
                self.last = px
                self.ev.append(("trade", o.id, m.id, o.id, px, q, ""))
                if m.qty == 0:
                    queue.pop(0)
                    del self.live[m.id]
                    self._emit("done", m.id, 0, 0)
            if not queue:
                del self.levels[opp][px]
                self.prices[opp].remove(px)
            if stp:
                break
        if rem == 0:
            self._emit("done", o.id, 0, 0)
        elif stp:
            self._emit("cancelled", o.id, o.price, rem, "self_trade")
        elif how != "LIMIT":
            self._emit("cancelled", o.id, o.price, rem, "unfilled")
        else:
            side = self.prices[o.side]
            if side and max(side[-1], o.price) - min(side[0], o.price) >= MAX_SPAN:
                self._emit("cancelled", o.id, o.price, rem, "price_out_of_range")
                return
            o.qty, o.stop, o.type = rem, False, "LIMIT"
            self.live[o.id] = o
            if o.price not in self.levels[o.side]:
                self.levels[o.side][o.price] = []
                bisect.insort(side, o.price)
            self.levels[o.side][o.price].append(o)

    def _fillable(self, o: _Order) -> bool:
        opp = "SELL" if o.side == "BUY" else "BUY"
        need = o.qty
        for px in (self.prices[opp] if opp == "SELL" else reversed(self.prices[opp])):
            if px > o.price if o.side == "BUY" else px < o.price:
                return False
            for m in self.levels[opp][px]:
                if o.owner and m.owner == o.owner:
                    return False
                need -= m.qty
                if need <= 0:
                    return True
        return False

    def _unrest(self, o: _Order) -> None:
        q = self.levels[o.side][o.price]
        q.remove(o)
        if not q:
            del self.levels[o.side][o.price]
            self.prices[o.side].remove(o.price)

    def _triggers(self, o: _Order) -> bool:
        assert self.last is not None
        return self.last >= o.trigger if o.side == "BUY" else self.last <= o.trigger

    def _run_stops(self) -> None:
        while self.last is not None:
            ready = [s for s in self.stops if self._triggers(s)]
            if not ready:
                return
            s = min(ready, key=lambda x: x.seq)
            self.stops.remove(s)
            del self.live[s.id]
            self._emit("triggered", s.id, s.trigger, s.qty)
            s.stop = False
            self._execute(s, "LIMIT" if s.type == "SL" else "MARKET")

    # -- events ----------------------------------------------------------------------------
    def _emit(self, kind: str, oid: int, price: int, qty: int, reason: str = "") -> None:
        self.ev.append((kind, oid, 0, 0, price, qty, reason))

    def _out(self, kind: str, oid: int, price: int, qty: int, reason: str = "") -> list[EventTuple]:
        self._emit(kind, oid, price, qty, reason)
        return self.ev
