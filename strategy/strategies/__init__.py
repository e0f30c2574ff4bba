"""The shipped strategies, by name (the names ``strategy/registry.yaml`` uses)."""

from __future__ import annotations

from strategy.api import Strategy
from strategy.strategies.ma_crossover import MaCrossover
from strategy.strategies.opening_range_breakout import OpeningRangeBreakout
from strategy.strategies.rsi_reversion import RsiReversion
from strategy.strategies.supertrend_trend import SupertrendTrend

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (MaCrossover, RsiReversion, SupertrendTrend, OpeningRangeBreakout)
}
