"""Round-trip trades: what ``trades.csv`` holds and what metrics, the report and the scorer read.

A trade opens when a position leaves flat and closes when it returns to flat (a
reversal closes one trade and opens the next at the same fill). Times are epoch
milliseconds (UTC); ``trades.csv`` writes them ISO 8601 with the IST offset.
An open trade at the end of a run has ``exit_ts``/``exit_price`` None and its
``pnl`` marked to the last close.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Trade:
    strategy: str
    symbol: str
    instrument_token: int
    side: str                 # LONG | SHORT
    qty: int                  # the largest quantity held during the trade
    entry_ts: int             # ms UTC of the opening fill
    entry_price: float        # average price of the fills that opened/added to it
    exit_ts: int | None       # ms UTC of the closing fill (None: still open)
    exit_price: float | None  # average price of the fills that reduced/closed it
    pnl: float                # gross (before charges); open trades: marked to the last close
    charges: float            # every charge paid on the trade's fills

    @property
    def net_pnl(self) -> float:
        return self.pnl - self.charges

    @property
    def is_open(self) -> bool:
        return self.exit_ts is None
