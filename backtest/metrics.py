"""Backtest performance metrics from an equity curve and the round-trip trades (numpy only, no I/O).

Inputs: ``ts_ms`` (int64 epoch ms UTC, ascending, one point per bar), ``equity`` (cash plus
marked-to-market positions, net of charges), optional ``exposure`` (gross open notional; 0 when
flat) and the :class:`~backtest.trades.Trade` list. ``initial_cash`` is the equity before the
first point. Definitions:

- ``start``/``end``: first/last point, ISO 8601 in IST (``+05:30``).
- ``initial_equity`` = ``initial_cash``; ``final_equity`` = last point;
  ``total_return_pct`` = (final / initial - 1) * 100; ``net_pnl`` = final - initial.
- ``cagr_pct`` = ((final / initial) ** (1 / years) - 1) * 100, ``years`` = calendar time from the
  first to the last point / 365.25 days; None if that is under one day; -100 if final <= 0.
- Daily returns: the last equity of each IST calendar day (UTC+05:30, no DST); simple returns,
  the first day's relative to ``initial_cash``. With N = ``trading_days`` and risk-free 0:
  ``sharpe`` = mean / std (ddof=1) * sqrt(N);
  ``sortino`` = mean / sqrt(mean(min(r, 0) ** 2)) * sqrt(N), the downside over all days.
  None with fewer than 2 daily returns or a zero deviation.
- ``max_drawdown_pct``: -min(equity / running max - 1) * 100 (0 when never under water).
  ``max_drawdown_duration_days``: the longest calendar time (float days) from a peak until the
  equity is back at or above it, or until the last point if it never is.
- Closed trades (``exit_ts`` set): ``trades`` (count), ``win_rate_pct`` (net_pnl > 0, in %),
  ``profit_factor`` (sum of winners' net / |sum of losers' net|; None without losers),
  ``expectancy`` (mean net), ``avg_win``/``avg_loss`` (mean net of winners / losers, a loss is
  negative), ``best_trade``/``worst_trade`` (max/min net). None where there is nothing to average.
  ``open_trades`` counts the rest.
- All trades, open ones marked to the last close: ``charges`` and ``gross_pnl`` (sums).
- ``exposure_pct``: % of curve points with exposure > 0 (time in market); None without exposure.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import datetime

import numpy as np
import numpy.typing as npt

from backtest.trades import Trade
from core.clock import IST
from core.sessions import DAY_MS, IST_OFFSET_MS

MetricValue = float | int | str | None
Metrics = dict[str, MetricValue]
YEAR_MS = 365.25 * DAY_MS


def ist_iso(ts_ms: int) -> str:
    """Epoch ms UTC as ISO 8601 in IST, e.g. ``2024-01-02T09:15:00+05:30`` (ms shown only when set)."""
    dt = datetime.fromtimestamp(ts_ms / 1000, tz=IST)
    return dt.isoformat(timespec="milliseconds" if ts_ms % 1000 else "seconds")


def drawdown_series(equity: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """``equity / running max - 1`` at every point (0 at a peak, negative under water)."""
    eq = np.asarray(equity, dtype=np.float64)
    if eq.size == 0:
        return eq.copy()
    return eq / np.maximum.accumulate(eq) - 1.0


def daily_returns(ts_ms: npt.ArrayLike, equity: npt.ArrayLike, initial_cash: float) -> npt.NDArray[np.float64]:
    """Simple returns of the last equity of each IST calendar day; the first is against ``initial_cash``."""
    ts = np.asarray(ts_ms, dtype=np.int64)
    eq = np.asarray(equity, dtype=np.float64)
    if eq.size == 0:
        return eq.copy()
    day = (ts + IST_OFFSET_MS) // DAY_MS
    last_of_day = np.append(np.flatnonzero(np.diff(day)), day.size - 1)
    closes: npt.NDArray[np.float64] = eq[last_of_day]
    prev = np.concatenate(([float(initial_cash)], closes[:-1]))
    return closes / prev - 1.0


def _ratio_or_none(num: float, den: float) -> float | None:
    return float(num / den) if den > 0 and math.isfinite(den) else None


def sharpe_sortino(returns: npt.NDArray[np.float64], trading_days: int) -> tuple[float | None, float | None]:
    """Annualised Sharpe and Sortino of daily returns (risk-free 0); None below 2 days or at zero deviation."""
    if returns.size < 2:
        return None, None
    scale = math.sqrt(trading_days)
    mean = float(returns.mean())
    std = float(returns.std(ddof=1))
    downside = math.sqrt(float(np.mean(np.minimum(returns, 0.0) ** 2)))
    sharpe = _ratio_or_none(mean, std)
    sortino = _ratio_or_none(mean, downside)
    return (None if sharpe is None else sharpe * scale), (None if sortino is None else sortino * scale)


def max_drawdown_duration_days(ts_ms: npt.ArrayLike, equity: npt.ArrayLike) -> float:
    """Longest calendar time (days) from a peak to the first point back at or above it (or to the end)."""
    ts = np.asarray(ts_ms, dtype=np.int64)
    eq = np.asarray(equity, dtype=np.float64)
    if eq.size < 2:
        return 0.0
    at_peak = eq >= np.maximum.accumulate(eq)
    idx = np.arange(eq.size)
    last_peak = np.maximum.accumulate(np.where(at_peak, idx, 0))
    # an underwater point counts from its peak; a recovery point closes the stretch of the point before it
    recovering = at_peak[1:] & ~at_peak[:-1]
    under = ~at_peak
    spans = [ts[under] - ts[last_peak[under]], ts[1:][recovering] - ts[last_peak[:-1][recovering]]]
    longest = max((int(s.max()) for s in spans if s.size), default=0)
    return longest / DAY_MS


def _trade_stats(closed: Sequence[Trade]) -> Metrics:
    """Win rate, profit factor and per-trade averages over closed trades."""
    net = np.array([t.net_pnl for t in closed], dtype=np.float64)
    wins, losses = net[net > 0], net[net < 0]
    loss_sum = float(-losses.sum())

    def mean_or_none(a: npt.NDArray[np.float64]) -> float | None:
        return float(a.mean()) if a.size else None

    return {
        "trades": len(closed),
        "win_rate_pct": float(wins.size / net.size * 100) if net.size else None,
        "profit_factor": float(wins.sum() / loss_sum) if losses.size else None,
        "expectancy": mean_or_none(net),
        "avg_win": mean_or_none(wins),
        "avg_loss": mean_or_none(losses),
        "best_trade": float(net.max()) if net.size else None,
        "worst_trade": float(net.min()) if net.size else None,
    }


def compute_metrics(ts_ms: npt.ArrayLike, equity: npt.ArrayLike, trades: Iterable[Trade], *, initial_cash: float,
                    exposure: npt.ArrayLike | None = None, trading_days: int = 252) -> Metrics:
    """Every metric in the module docstring, as a flat dict of plain Python values.

    Raises ``ValueError`` on an empty curve, mismatched lengths or a non-positive ``initial_cash``.
    """
    ts = np.asarray(ts_ms, dtype=np.int64)
    eq = np.asarray(equity, dtype=np.float64)
    if eq.size == 0 or ts.shape != eq.shape:
        raise ValueError(f"equity curve needs matching non-empty ts_ms/equity, got {ts.shape} and {eq.shape}")
    if initial_cash <= 0:
        raise ValueError(f"initial_cash must be positive, got {initial_cash}")
    trade_list = list(trades)
    closed = [t for t in trade_list if not t.is_open]
    initial, final = float(initial_cash), float(eq[-1])
    elapsed_ms = int(ts[-1] - ts[0])
    growth = final / initial
    cagr: float | None = None
    if elapsed_ms >= DAY_MS:
        cagr = (growth ** (YEAR_MS / elapsed_ms) - 1.0) * 100 if growth > 0 else -100.0
    sharpe, sortino = sharpe_sortino(daily_returns(ts, eq, initial), trading_days)
    exposure_pct: float | None = None
    if exposure is not None:
        exp = np.asarray(exposure, dtype=np.float64)
        if exp.shape != eq.shape:
            raise ValueError(f"exposure has shape {exp.shape}, equity {eq.shape}")
        exposure_pct = float(np.count_nonzero(exp > 0) / exp.size * 100)
    return {
        "start": ist_iso(int(ts[0])),
        "end": ist_iso(int(ts[-1])),
        "initial_equity": initial,
        "final_equity": final,
        "total_return_pct": (growth - 1.0) * 100,
        "cagr_pct": cagr,
        "sharpe": sharpe,
        "sortino": sortino,
        "max_drawdown_pct": max(0.0, -float(drawdown_series(eq).min()) * 100),
        "max_drawdown_duration_days": max_drawdown_duration_days(ts, eq),
        **_trade_stats(closed),
        "open_trades": len(trade_list) - len(closed),
        "exposure_pct": exposure_pct,
        "charges": float(sum(t.charges for t in trade_list)),
        "gross_pnl": float(sum(t.pnl for t in trade_list)),
        "net_pnl": final - initial,
    }


def per_strategy(trades: Iterable[Trade]) -> list[Metrics]:
    """One row per strategy (sorted by name).

    ``trades``, ``win_rate_pct`` and ``profit_factor`` are over closed trades as in
    :func:`compute_metrics`; ``net_pnl`` and ``charges`` sum all its trades (open ones marked),
    so the rows add up to the run's totals; ``open_trades`` counts the open ones.
    """
    by_name: dict[str, list[Trade]] = {}
    for t in trades:
        by_name.setdefault(t.strategy, []).append(t)
    rows: list[Metrics] = []
    for name in sorted(by_name):
        group = by_name[name]
        stats = _trade_stats([t for t in group if not t.is_open])
        rows.append({
            "strategy": name,
            "trades": stats["trades"],
            "open_trades": sum(t.is_open for t in group),
            "win_rate_pct": stats["win_rate_pct"],
            "net_pnl": float(sum(t.net_pnl for t in group)),
            "charges": float(sum(t.charges for t in group)),
            "profit_factor": stats["profit_factor"],
        })
    return rows
