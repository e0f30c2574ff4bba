"""backtesting.py's README example, ``SmaCross`` (SMA 10/30, reversing on every cross): the reference the
backtester's trades are checked against and the baseline of the strategy and backtest benches."""

from __future__ import annotations

from typing import Any


def sma_cross() -> Any:
    """The ``SmaCross`` strategy class (imported late: backtesting.py is a dev/bench dependency)."""
    from backtesting import Strategy
    from backtesting.lib import crossover
    from backtesting.test import SMA

    class SmaCross(Strategy):  # type: ignore[misc]
        n1, n2 = 10, 30

        def init(self) -> None:
            self.sma1 = self.I(SMA, self.data.Close, self.n1)
            self.sma2 = self.I(SMA, self.data.Close, self.n2)

        def next(self) -> None:
            if crossover(self.sma1, self.sma2):
                self.position.close()
                self.buy()
            elif crossover(self.sma2, self.sma1):
                self.position.close()
                self.sell()

    return SmaCross
