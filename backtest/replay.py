"""The replay: history through the live decision engine, the live risk code and a simulated venue.

Per bar, in time order (bars of several timeframes by close time, the finer first,
as the live aggregators publish them):

1. orders waiting for the next bar of their instrument fill at its open
   (``fill="next_open"``), or recorded fills whose time is before this bar's close
   are applied (``recorded`` fills from a live session);
2. the :class:`~strategy.engine.DecisionEngine` decides the bar (the runner's code);
3. its orders go through :func:`risk.sizing.size` and :func:`risk.budget.decide` (the
   risk manager's and budget guard's pure cores) unless sizing is ``fixed``; an order
   they refuse ends REJECTED_RISK / REJECTED_BUDGET and the engine hears so, as live;
4. allowed orders fill at this bar's close (``fill="close"``) or wait for step 1.

Fills go to the engine (``on_fill``) and to :class:`~backtest.portfolio.Portfolio`.
Slippage moves a fill ``slippage_ticks`` ticks against the order.
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from backtest.data import BarSet
from backtest.portfolio import Portfolio
from compute.bars import Bar
from core.sessions import DAY_MS, IST_OFFSET_MS, ExchangeCalendar, ist_date
from execution.stage import decision_order
from risk import budget, sizing
from risk.config import RiskBudget
from strategy.api import TF_MS
from strategy.engine import DecisionEngine


@dataclass(frozen=True)
class Recorded:
    """What a live session did with one order: its fills (ts, side, qty, price) and how it ended."""

    fills: tuple[tuple[int, str, int, float], ...]
    status: str


@dataclass
class Options:
    fill: str = "next_open"              # next_open | close | recorded
    slippage_ticks: int = 0
    sizing: str = "risk"                 # risk | fixed
    qty: int = 1                         # fixed sizing: lots per entry
    equity: float = 1_000_000.0          # sizing's equity (pinned)
    cash: float = 1_000_000.0
    charges: Any = None                  # backtest.charges model (None: free)
    segment: Callable[[str, str, str | None], str] | None = None
    risk: RiskBudget | None = None
    calendar: ExchangeCalendar | None = None
    recorded: Mapping[str, Recorded] = field(default_factory=dict)
    progress: bool = False


@dataclass
class OrderRow:
    order: dict[str, Any]
    entry: bool = False
    status: str = "ALLOWED"
    sized_status: str | None = None        # REJECTED_RISK when the sizing refused it (also in recorded mode)
    risk: dict[str, Any] = field(default_factory=dict)
    qty: int | None = None
    detail: str = ""
    fill_ts: int | None = None
    fill_price: float | None = None
    filled: int = 0
    charges: float = 0.0


@dataclass
class Result:
    orders: list[OrderRow]
    portfolio: Portfolio
    bars: int
    seconds: float
    last_close: dict[int, float]


class Replay:
    def __init__(self, engine: DecisionEngine, sets: Sequence[BarSet], opts: Options) -> None:
        self.engine = engine
        self.sets = sorted(sets, key=lambda s: TF_MS[s.tf])
        self.opts = opts
        self.instruments = {t: i for s in self.sets for t, i in s.instruments.items()}
        self.portfolio = Portfolio(opts.cash, {t: i.tradingsymbol for t, i in self.instruments.items()})
        self.rows: dict[str, OrderRow] = {}
        self.pending: dict[int, list[OrderRow]] = {}
        self.recorded_due: dict[int, list[tuple[int, str, str, int, float]]] = {}  # token -> (ts, oid, side, qty, px)
        self.ended_due: dict[int, list[tuple[str, str]]] = {}                      # token -> (oid, status)
        self.last_close: dict[int, float] = {}
        self.book = budget.Book()
        self._segments: dict[tuple[Any, int], str] = {}
        self.bar_index = 0
        self.merged = merge(self.sets)

    # ------------------------------------------------------------------ the loop
    def run(self) -> Result:
        token, ts, o, h, lo, c, v, tfi = self.merged
        names = [s.tf for s in self.sets]
        n = len(token)
        toks, tss, os_, hs, ls, cs, vs = (a.tolist() for a in (token, ts, o, h, lo, c, v))
        tfl = tfi.tolist() if len(names) > 1 else None
        on_bar = self.engine.on_bar
        pending = self.pending
        due = self.recorded_due
        ended = self.ended_due
        last_close = self.last_close
        route = self._route
        fill_pending = self._fill_pending
        apply_recorded = self._apply_recorded
        tf0 = names[0]
        tf_ms0 = TF_MS[tf0]
        show = self.opts.progress and n >= 200_000
        t0 = time.perf_counter()
        next_report = t0 + 2.0
        # the loop allocates millions of short-lived objects and makes no reference cycles: the cyclic
        # collector's passes over the growing books cost ~20% of a run (measured), so it waits for the end
        gc_was = gc.isenabled()
        gc.disable()
        try:
            for i in range(n):
                tok = toks[i]
                tf = tf0 if tfl is None else names[tfl[i]]
                if (due or ended) and (tok in due or tok in ended):
                    apply_recorded(tok, tss[i] + (tf_ms0 if tfl is None else TF_MS[tf]), i)
                if pending and (tfl is None or tfl[i] == 0) and tok in pending:
                    fill_pending(tok, i, tss[i], os_[i])
                bar = Bar(tok, tf, tss[i], os_[i], hs[i], ls[i], cs[i], vs[i], 0)
                last_close[tok] = cs[i]
                orders = on_bar(bar, tf)
                if orders:
                    route(orders, bar, i)
                if show and not i & 0xFFFF and time.perf_counter() > next_report:
                    next_report = time.perf_counter() + 2.0
                    rate = i / (time.perf_counter() - t0)
                    print(f"backtest: {i / n:5.1%}  {i:,}/{n:,} bars  {rate:,.0f} bars/s", file=sys.stderr, flush=True)
        finally:
            if gc_was:
                gc.enable()
        seconds = time.perf_counter() - t0
        if show:
            print(f"backtest: 100.0%  {n:,} bars in {seconds:.1f} s", file=sys.stderr, flush=True)
        for rows in pending.values():
            for r in rows:
                r.status, r.detail = "OPEN", "no bar after it to fill at"
        return Result(list(self.rows.values()), self.portfolio, n, seconds, dict(last_close))

    # ------------------------------------------------------------------ orders
    def _route(self, orders: list[dict[str, Any]], bar: Bar, i: int) -> None:
        """A bar's orders as the live stages take them: the risk manager sizes the batch (each entry counting
        the ones sized before it), then the guard decides each, then the venue fills what it allows."""
        opts = self.opts
        rows = []
        batch: dict[Any, tuple[int, float]] = {}
        for order in sorted(orders, key=decision_order):  # as the live stages order a batch
            row = self.rows[order["order_id"]] = OrderRow(order, sizing.is_entry(order))
            self._size(row, bar, batch)
            rows.append(row)
        for row in rows:
            if opts.fill == "recorded":  # the session's own fate (our sizing is kept for the comparison)
                self._schedule_recorded(row)
                continue
            if row.sized_status == "REJECTED_RISK" or not self._budget_ok(row, bar):
                self.engine.on_order_update(row.order["order_id"], row.status)
                continue
            if opts.fill == "close":
                self._fill(row, i, bar.ts + TF_MS[bar.tf], bar.close)
            else:
                self.pending.setdefault(bar.instrument_token, []).append(row)

    def _budget_ok(self, row: OrderRow, bar: Bar) -> bool:
        """The budget guard's decision on one sized order (``risk.budget.decide``); False when refused."""
        opts = self.opts
        if opts.sizing == "fixed" or opts.risk is None:
            return True
        o = row.order
        verdict = budget.decide({**o, "qty": row.qty, "risk": row.risk}, self._budget_book(bar.ts, row.entry),
                                opts.risk)
        if not verdict.allowed:
            row.status, row.detail = "REJECTED_BUDGET", f"{verdict.reason}: {verdict.budget.get('detail', '')}"
            return False
        return True

    def _size(self, row: OrderRow, bar: Bar, batch: dict[Any, tuple[int, float]]) -> bool:
        """The risk manager's sizing (``risk.sizing.size``) with what it would read live: equity pinned,
        the decision bar's close, the instrument's exposure (held + entries on their way + the entries
        sized before it in ``batch``), the exit room (less the exits sized before it in ``batch``)."""
        o = row.order
        opts = self.opts
        entry = row.entry
        if opts.sizing == "fixed" or opts.risk is None or opts.calendar is None:
            lot = self.instruments[bar.instrument_token].lot_size or 1
            row.qty = opts.qty * lot if entry else o["qty"]
            return True
        token = bar.instrument_token
        held_q, held_n = self.portfolio.position_qty(token)
        bq, bn = batch.get(token, (0, 0.0))
        held_q, held_n = held_q + bq, held_n + bn
        ekey = (o["strategy"], token, o["side"])
        waiting = self._waiting(token)
        for r, q in waiting:
            if r.entry and q:
                held_q += q
                held_n += q * float(r.order["extra"]["ref_price"])
        avail = None
        if not entry:
            h = self.portfolio.holding(str(o["strategy"]), token)
            closing = max(h.qty, 0) if o["side"] == "SELL" else max(-h.qty, 0)
            working = sum(q for r, q in waiting if r.order["strategy"] == o["strategy"]
                          and r.order["side"] == o["side"] and not r.entry)
            avail = closing - working - batch.get(ekey, (0, 0.0))[0]
        inst = self.instruments[token]
        mkt = sizing.Market(opts.equity, "capital", bar.close, "bar_close", inst.lot_size or 1, inst.name or None,
                            held_q, held_n, avail)
        s = sizing.size(o, mkt, opts.risk, opts.calendar)
        row.risk = s.risk
        if s.rejected:
            row.sized_status = "REJECTED_RISK"
            row.detail = f"{s.reason}: {s.risk.get('detail', '')}".rstrip(": ")
            if opts.fill != "recorded":
                row.status = "REJECTED_RISK"
            return False
        row.qty = s.qty
        if entry:
            batch[token] = (bq + (s.qty or 0), bn + (s.qty or 0) * bar.close)
        else:
            q0, _ = batch.get(ekey, (0, 0.0))
            batch[ekey] = (q0 + (s.qty or 0), 0.0)
        return True

    def _waiting(self, token: int) -> list[tuple[OrderRow, int]]:
        """Orders of ``token`` on their way to the venue or resting there: (row, quantity still to fill)."""
        if self.opts.fill != "recorded":
            return [(r, r.qty or 0) for r in self.pending.get(token, ())]
        left: dict[str, int] = {}
        for _, oid, _, qty, _ in self.recorded_due.get(token, ()):
            left[oid] = left.get(oid, 0) + qty
        return [(self.rows[oid], q) for oid, q in left.items()]

    def _budget_book(self, ts: int, entry: bool = True) -> budget.Book:
        """The budget guard's view (as :mod:`risk.exposure` reads it live): open positions at average cost
        and entries on their way, the day's PnL from the day's fills marked to the latest close. An exit
        only counts towards the order caps: the rest is not read for it."""
        book = self.book
        today = budget.windows(ts)[2][1]
        if today not in book.day_pnl:
            book.counts.clear()  # the order-cap windows (second, minute, day) of earlier days are done with
            book.day_pnl = {today: 0.0}
        if not entry:
            return book
        used: dict[str, float] = {}
        keys: set[tuple[str, int]] = set()
        for (label, tok), hd in self.portfolio.holdings.items():
            if hd.qty:
                used[label] = used.get(label, 0.0) + abs(hd.qty) * hd.avg
                keys.add((label, tok))
        pend: dict[str, float] = {}
        tokens = self.pending if self.opts.fill != "recorded" else self.recorded_due
        for tok in list(tokens):
            for r, q in self._waiting(tok):
                if r.entry and q:
                    label = str(r.order["strategy"])
                    nv = q * float(r.order["extra"]["ref_price"])
                    used[label] = used.get(label, 0.0) + nv
                    pend[label] = pend.get(label, 0.0) + nv
                    keys.add((label, tok))
        book.used_by_strategy, book.pending_by_strategy, book.open_keys = used, pend, keys
        book.day_pnl = {today: self.portfolio.day_pnl((ts + IST_OFFSET_MS) // DAY_MS, self.last_close)}
        book._by_bucket = None
        return book

    def _fill_pending(self, tok: int, i: int, ts: int, price: float) -> None:
        for row in self.pending.pop(tok):
            self._fill(row, i, ts, price)

    def _fill(self, row: OrderRow, i: int, ts: int, base: float) -> None:
        o = row.order
        qty = row.qty
        assert qty is not None
        inst = self.instruments[int(o["instrument_token"])]
        tick = inst.tick_size or 0.05
        side = o["side"]
        price = base
        if self.opts.slippage_ticks:  # on the tick grid; without slippage the bar's own price stands
            price = base + (self.opts.slippage_ticks * tick if side == "BUY" else -self.opts.slippage_ticks * tick)
            price = round(round(price / tick) * tick, 10)
        charges = self._charges(o, side, qty, price, ts)
        self.portfolio.fill(str(o["strategy"]), inst.instrument_token, side, qty, price, ts, charges, i,
                            (ts + IST_OFFSET_MS) // DAY_MS)
        row.status, row.fill_ts, row.fill_price, row.filled = "FILLED", ts, price, qty
        row.charges += charges
        self.engine.on_fill(str(o["strategy"]), inst.instrument_token, side, qty, price, o["order_id"])

    def _charges(self, o: dict[str, Any], side: str, qty: int, price: float, ts: int) -> float:
        model = self.opts.charges
        if model is None:
            return 0.0
        inst = self.instruments[int(o["instrument_token"])]
        key = (o["product"], inst.instrument_token)
        seg = self._segments.get(key)
        if seg is None:
            seg = self._segments[key] = self.opts.segment(str(o["product"]), inst.exchange, inst.instrument_type) \
                if self.opts.segment else "intraday"
        return float(model.charges(seg, side, qty, price, ist_date(ts), exchange=inst.exchange).total)

    # ------------------------------------------------------------------ recorded fills (parity)
    def _schedule_recorded(self, row: OrderRow) -> None:
        rec = self.opts.recorded.get(row.order["order_id"])
        tok = int(row.order["instrument_token"])
        if rec is None:
            row.status, row.detail = "MISSING", "not in the recorded session"
            return
        row.status = rec.status
        for f_ts, side, qty, price in rec.fills:
            self.recorded_due.setdefault(tok, []).append((f_ts, row.order["order_id"], side, qty, price))
        if not rec.fills and rec.status in ("REJECTED_RISK", "REJECTED_BUDGET", "REJECTED", "CANCELLED", "EXPIRED"):
            self.ended_due.setdefault(tok, []).append((row.order["order_id"], rec.status))
        elif rec.fills and rec.status in ("CANCELLED", "EXPIRED", "REJECTED"):
            self.ended_due.setdefault(tok, []).append((row.order["order_id"], rec.status))

    def _apply_recorded(self, tok: int, decision_ts: int, i: int) -> None:
        fills = self.recorded_due.get(tok)
        if fills:
            fills.sort()
            keep = []
            for f in fills:
                f_ts, oid, side, qty, price = f
                if f_ts >= decision_ts:
                    keep.append(f)
                    continue
                row = self.rows[oid]
                o = row.order
                charges = self._charges(o, side, qty, price, f_ts)
                self.portfolio.fill(str(o["strategy"]), tok, side, qty, price, f_ts, charges, i,
                                    (f_ts + IST_OFFSET_MS) // DAY_MS)
                row.filled += qty
                row.fill_ts, row.fill_price = f_ts, price
                row.charges += charges
                self.engine.on_fill(str(o["strategy"]), tok, side, qty, price, oid)
            if keep:
                self.recorded_due[tok] = keep
            else:
                del self.recorded_due[tok]
        ends = self.ended_due.get(tok)
        if ends:
            waiting = {oid for _, oid, *_ in self.recorded_due.get(tok, ())}
            left = [(oid, st) for oid, st in ends if oid in waiting]
            for oid, st in ends:
                if oid not in waiting:
                    self.engine.on_order_update(oid, st)
            if left:
                self.ended_due[tok] = left
            else:
                del self.ended_due[tok]


def merge(sets: Sequence[BarSet]) -> tuple[np.ndarray, ...]:
    """All bar sets as one stream: by close time, then the finer timeframe, then instrument order."""
    if len(sets) == 1:
        s = sets[0]
        return s.token, s.ts, s.open, s.high, s.low, s.close, s.volume, np.zeros(len(s), dtype=np.int64)
    cols = [np.concatenate([getattr(s, k) for s in sets]) for k in ("token", "ts", "open", "high", "low", "close",
                                                                     "volume")]
    tfi = np.concatenate([np.full(len(s), k, dtype=np.int64) for k, s in enumerate(sets)])
    close_ts = cols[1] + np.concatenate([np.full(len(s), TF_MS[s.tf], dtype=np.int64) for s in sets])
    order = np.lexsort((tfi, close_ts))
    return (*(c[order] for c in cols), tfi[order])


def with_options(opts: Options, **changes: Any) -> Options:
    return replace(opts, **changes)
