"""The backtest's books: cash, positions per (strategy, instrument), round-trip trades, and the
equity curve rebuilt from the fills afterwards (vectorised, so the bar loop stays lean).

Accounting is at average cost, like the live ``positions`` table (14_paper.sql): a fill that
adds to a position moves its average price; one that reduces it realises
``qty x (price - average)`` (sign by side); a fill through zero closes the trade and opens
the next at the same price. Charges are paid in cash at each fill and booked on the trade
(split by quantity when one fill closes one trade and opens the next).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from backtest.trades import Trade
from risk.exposure import day_pnl_of


@dataclass(slots=True)
class _Open:
    """A trade still open: what its fills added up to so far."""

    side: int            # +1 long, -1 short
    entry_ts: int
    in_qty: int = 0      # shares bought (long) / sold (short) to open or add
    in_value: float = 0.0
    out_qty: int = 0     # shares that reduced it
    out_value: float = 0.0
    realized: float = 0.0
    charges: float = 0.0
    max_qty: int = 0


@dataclass(slots=True)
class Holding:
    qty: int = 0
    avg: float = 0.0
    trade: _Open | None = None


@dataclass
class Portfolio:
    cash: float
    symbols: dict[int, str]
    holdings: dict[tuple[str, int], Holding] = field(default_factory=dict)
    trades: list[Trade] = field(default_factory=list)
    charges_paid: float = 0.0
    # (bar index, token, signed qty, cash change) per fill, for the equity curve
    _events: list[tuple[int, int, int, float]] = field(default_factory=list)
    # the IST day of the latest fill, and that day's fills per (strategy, token): [bought, bought value,
    # sold, sold value] (the budget guard's day PnL, risk.exposure.day_pnl)
    _day: int = -1
    _day_fills: dict[tuple[str, int], list[float]] = field(default_factory=dict)

    def holding(self, label: str, token: int) -> Holding:
        h = self.holdings.get((label, token))
        if h is None:
            h = self.holdings[(label, token)] = Holding()
        return h

    def fill(self, label: str, token: int, side: str, qty: int, price: float, ts: int, charges: float,
             bar_index: int, day: int) -> float:
        """Book one fill; returns the PnL it realised (gross)."""
        signed = qty if side == "BUY" else -qty
        if day != self._day:
            self._day, self._day_fills = day, {}
        agg = self._day_fills.setdefault((label, token), [0.0, 0.0, 0.0, 0.0])
        k = 0 if side == "BUY" else 2
        agg[k] += qty
        agg[k + 1] += qty * price
        h = self.holding(label, token)
        cash = -signed * price - charges
        self.cash += cash
        self.charges_paid += charges
        self._events.append((bar_index, token, signed, cash))
        realized = 0.0
        left, left_charges = signed, charges
        while left:
            if h.qty == 0 or (h.qty > 0) == (left > 0):  # open or add
                if h.trade is None:
                    h.trade = _Open(1 if left > 0 else -1, ts)
                t = h.trade
                n = abs(left)
                h.avg = (h.avg * abs(h.qty) + price * n) / (abs(h.qty) + n)
                h.qty += left
                t.in_qty += n
                t.in_value += price * n
                t.charges += left_charges
                t.max_qty = max(t.max_qty, abs(h.qty))
                break
            closing = h.trade
            assert closing is not None
            t = closing
            n = min(abs(left), abs(h.qty))
            part = left_charges * n / abs(left)
            gain = n * (price - h.avg) * (1 if h.qty > 0 else -1)
            realized += gain
            t.realized += gain
            t.out_qty += n
            t.out_value += price * n
            t.charges += part
            step = n if left > 0 else -n
            h.qty += step
            left -= step
            left_charges -= part
            if h.qty == 0:
                self._close(label, token, h, ts, None)
        return realized

    def _close(self, label: str, token: int, h: Holding, ts: int | None, mark: float | None) -> None:
        t = h.trade
        assert t is not None
        entry = t.in_value / t.in_qty
        if ts is None:  # still open: marked to the last close
            assert mark is not None
            pnl = t.realized + h.qty * (mark - h.avg)
            exit_price = None
        else:
            pnl = t.realized
            exit_price = t.out_value / t.out_qty
        self.trades.append(Trade(label, self.symbols.get(token, str(token)), token, "LONG" if t.side > 0 else "SHORT",
                                 t.max_qty, t.entry_ts, entry, ts, exit_price, pnl, t.charges))
        if ts is not None:
            h.trade = None
            h.avg = 0.0

    def finish(self, last_close: dict[int, float]) -> list[Trade]:
        """Every trade in entry order, the open ones marked to ``last_close``."""
        for (label, token), h in self.holdings.items():
            if h.qty and h.trade is not None:
                self._close(label, token, h, None, last_close.get(token, h.avg))
        self.trades.sort(key=lambda t: (t.entry_ts, t.strategy, t.instrument_token))
        return self.trades

    def day_pnl(self, day: int, marks: dict[int, float]) -> float:
        """PnL of IST day ``day`` as the live budget guard computes it: the day's fills per (strategy, token),
        matched buys against sells, the rest marked to ``marks`` (:func:`risk.exposure.day_pnl_of`)."""
        if day != self._day:
            return 0.0
        return day_pnl_of([(bq, bv, sq, sv, marks.get(tok)) for (_, tok), (bq, bv, sq, sv) in self._day_fills.items()])

    def position_qty(self, token: int) -> tuple[int, float]:
        """(|qty|, notional at average cost) held on ``token`` across strategies."""
        q, n = 0, 0.0
        for (_, tok), h in self.holdings.items():
            if tok == token and h.qty:
                q += abs(h.qty)
                n += abs(h.qty) * h.avg
        return q, n

    def equity_curve(self, initial_cash: float, token: np.ndarray, ts: np.ndarray, close: np.ndarray,
                     keep: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(ts, equity, cash, gross exposure): one point per distinct bar time (of the rows ``keep`` selects),
        after that time's bars."""
        n = len(ts)
        cash_delta = np.zeros(n)
        value = np.zeros(n)
        exposure = np.zeros(n)
        if self._events:
            ev = np.array(self._events, dtype=np.float64)
            idx = ev[:, 0].astype(np.int64)
            np.add.at(cash_delta, idx, ev[:, 3])
            ar = np.arange(n)
            for tok in np.unique(ev[:, 1].astype(np.int64)):
                sel = ev[:, 1].astype(np.int64) == tok
                dq = np.zeros(n)
                np.add.at(dq, idx[sel], ev[sel, 2])
                qty = np.cumsum(dq)
                seen = np.where(token == tok, ar, -1)
                np.maximum.accumulate(seen, out=seen)
                mark = np.where(seen >= 0, close[np.maximum(seen, 0)], 0.0)
                value += qty * mark
                exposure += np.abs(qty) * mark
        cash = initial_cash + np.cumsum(cash_delta)
        equity = cash + value
        if keep is not None:
            ts, equity, cash, exposure = ts[keep], equity[keep], cash[keep], exposure[keep]
        last = np.flatnonzero(np.r_[ts[1:] != ts[:-1], True])  # the last row of each bar time
        return ts[last], equity[last], cash[last], exposure[last]
