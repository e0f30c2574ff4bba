"""Round trips from fills: paper, dry and live results in the backtester's :class:`~backtest.trades.Trade` shape.

Per (venue, strategy, instrument), fills in time order move a position at average cost, as the
``positions`` table does (14_paper.sql): a trade opens when the position leaves flat and closes when
it returns to flat; each reducing fill realises ``qty x (price - average cost)`` (sign of the
position); a fill that flips the position closes the trade and opens the next one at its own price,
its charges split between the two by quantity. Charges are a pluggable per-fill function
(:data:`ChargeFn`): :class:`FillCharges` over a :mod:`backtest.charges` calculator, or zero.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import psycopg

from backtest.charges import ChargeCalculator, segment_for
from backtest.portfolio import Portfolio
from backtest.trades import Trade
from core.sessions import ist_date


@dataclass(frozen=True, slots=True)
class FillRow:
    """One fill with what charges need (product, exchange, instrument type of its order)."""

    fill_id: str
    venue: str
    strategy: str
    instrument_token: int
    side: str             # BUY | SELL
    qty: int
    price: float
    ts_ms: int
    symbol: str = ""
    product: str | None = None
    exchange: str | None = None
    instrument_type: str | None = None

    @property
    def day(self) -> date:
        return ist_date(self.ts_ms)


ChargeFn = Callable[[FillRow], float]
"""Charges (rupees) of one fill."""


def zero_charges(_: FillRow) -> float:
    """No charges (when no charge model is available)."""
    return 0.0


def round_trips(fills: Iterable[FillRow], charges: ChargeFn = zero_charges) -> list[Trade]:
    """The trades of ``fills`` per (venue, strategy, instrument), closed ones first in exit order, then
    the still-open ones (``exit_ts`` None, ``pnl`` what their reducing fills realised so far).

    ``fills`` are processed in (ts, fill_id) order, through the backtester's own books
    (:class:`backtest.portfolio.Portfolio`, one per venue), so live and backtest trades are counted alike."""
    books: dict[str, Portfolio] = {}
    for f in sorted(fills, key=lambda x: (x.ts_ms, x.fill_id)):
        book = books.get(f.venue)
        if book is None:
            book = books[f.venue] = Portfolio(0.0, {})
        book.symbols[f.instrument_token] = f.symbol
        book.fill(f.strategy, f.instrument_token, f.side, f.qty, f.price, f.ts_ms, charges(f), 0,
                  ist_date(f.ts_ms).toordinal())
    trades = [t for b in books.values() for t in b.finish({})]  # open ones: no mark, realised PnL only
    closed = sorted((t for t in trades if t.exit_ts is not None), key=lambda t: (t.exit_ts or 0, t.strategy))
    return closed + [t for t in trades if t.exit_ts is None]


def load_fills(conn: psycopg.Connection[Any], venues: Iterable[str], before: datetime) -> list[FillRow]:
    """Every fill of ``venues`` before ``before`` (a position may have opened long before a window starts),
    with its order's product and exchange and the instrument's type."""
    rows = conn.execute(
        "SELECT f.fill_id, f.venue, COALESCE(f.strategy, o.strategy, ''), f.instrument_token, f.side, f.qty, "
        "f.price, (extract(epoch FROM f.ts) * 1000)::bigint, COALESCE(o.symbol, i.tradingsymbol, ''), o.product, "
        "COALESCE(o.exchange, i.exchange), i.instrument_type "
        "FROM fills f LEFT JOIN orders o ON o.order_id = f.order_id "
        "LEFT JOIN instruments i ON i.instrument_token = f.instrument_token "
        "WHERE f.venue = ANY(%s) AND f.ts < %s ORDER BY f.ts, f.fill_id", (list(venues), before)).fetchall()
    return [FillRow(str(fid), v, s, int(tok), side, int(q), float(px), int(ts), sym, prod, ex, it)
            for fid, v, s, tok, side, q, px, ts, sym, prod, ex, it in rows]


class FillCharges:
    """Per-fill charges from a :mod:`backtest.charges` calculator, each fill priced as one executed order.

    The segment comes from the fill's order (product, exchange) and instrument type (MIS on NSE when
    unknown). A fill the schedule cannot price (an exchange it has no rates for) costs zero and is
    listed in :attr:`unpriced` for the caller to report."""

    def __init__(self, calc: ChargeCalculator) -> None:
        self.calc = calc
        self.unpriced: list[str] = []

    def __call__(self, f: FillRow) -> float:
        exchange = f.exchange or "NSE"
        try:
            segment = segment_for(f.product or "MIS", exchange, f.instrument_type)
            return self.calc.charges(segment, f.side, f.qty, f.price, f.day, exchange=exchange).total
        except ValueError as exc:
            self.unpriced.append(f"{f.fill_id}: {exc}")
            return 0.0
