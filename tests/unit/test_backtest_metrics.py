"""backtest.metrics against an independent pandas computation of the same definitions."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from backtest.metrics import compute_metrics, drawdown_series, per_strategy
from backtest.trades import Trade

IST = "Asia/Kolkata"
CASH = 1_000_000.0


# --- curves -------------------------------------------------------------------------------------

def _ms(index: pd.DatetimeIndex) -> np.ndarray:
    return np.asarray(index.tz_convert("UTC").as_unit("ms").asi8, dtype=np.int64)


def minute_walk(seed: int = 7, days: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """1-minute bars 09:15-15:29 IST over several weekdays, a multiplicative random walk."""
    rng = np.random.default_rng(seed)
    sessions = pd.bdate_range("2024-03-04", periods=days, tz=IST)
    parts = [pd.date_range(d + pd.Timedelta(hours=9, minutes=15), periods=375, freq="min") for d in sessions]
    idx = parts[0].append(parts[1:])
    eq = CASH * np.cumprod(1 + rng.normal(0, 4e-4, idx.size))
    return _ms(idx), eq


def daily_walk(seed: int = 11, days: int = 300) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    idx = pd.bdate_range("2022-01-03", periods=days, tz=IST) + pd.Timedelta(hours=15, minutes=30)
    return _ms(idx), CASH * np.cumprod(1 + rng.normal(5e-4, 0.01, days))


def round_the_clock(seed: int = 3, hours: int = 24 * 10) -> tuple[np.ndarray, np.ndarray]:
    """Hourly bars at :10 UTC, so IST midnight (18:30 UTC) falls between bars, not on UTC midnight."""
    rng = np.random.default_rng(seed)
    idx = pd.date_range("2024-05-01 00:10", periods=hours, freq="h", tz="UTC")
    return _ms(idx), CASH * np.cumprod(1 + rng.normal(0, 2e-3, hours))


def monotonic() -> tuple[np.ndarray, np.ndarray]:
    ts, _ = daily_walk(days=40)
    rng = np.random.default_rng(5)
    return ts, CASH * np.cumprod(1 + rng.uniform(1e-4, 3e-3, ts.size))


def ending_in_drawdown() -> tuple[np.ndarray, np.ndarray]:
    ts, eq = daily_walk(seed=2, days=60)
    eq = eq.copy()
    eq[40:] = eq[:40].max() * np.linspace(0.99, 0.85, 20)  # never recovers
    return ts, eq


CURVES = {"minute_walk": minute_walk, "daily_walk": daily_walk, "round_the_clock": round_the_clock,
          "monotonic": monotonic, "ending_in_drawdown": ending_in_drawdown}


def random_trades(ts: np.ndarray, n: int = 40, seed: int = 1) -> list[Trade]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        a, b = sorted(rng.choice(ts.size, 2, replace=False))
        is_open = i == n - 1
        out.append(Trade(strategy=["ema_cross", "breakout", "mean_rev"][i % 3], symbol="INFY", instrument_token=408065,
                         side="LONG" if i % 2 else "SHORT", qty=int(rng.integers(1, 100)), entry_ts=int(ts[a]),
                         entry_price=1500.0, exit_ts=None if is_open else int(ts[b]),
                         exit_price=None if is_open else 1500.0 + float(rng.normal(0, 10)),
                         pnl=float(rng.normal(50, 400)), charges=float(rng.uniform(5, 40))))
    out.append(Trade("ema_cross", "TCS", 2953217, "LONG", 5, int(ts[0]), 3500.0, int(ts[1]), 3500.0, 20.0, 20.0))
    return out  # the last one nets exactly 0: neither a winner nor a loser


# --- the independent reference ------------------------------------------------------------------

def reference(ts: np.ndarray, eq: np.ndarray, trades: list[Trade], exposure: np.ndarray | None) -> dict:
    s = pd.Series(eq, index=pd.to_datetime(ts, unit="ms", utc=True).tz_convert(IST))
    daily = s.resample("D").last().dropna()
    r = pd.concat([pd.Series([CASH]), daily.reset_index(drop=True)]).pct_change().dropna()
    sharpe = sortino = None
    if len(r) >= 2:
        if r.std() > 0:
            sharpe = r.mean() / r.std() * math.sqrt(252)
        down = math.sqrt((r.clip(upper=0) ** 2).mean())
        if down > 0:
            sortino = r.mean() / down * math.sqrt(252)
    days = (s.index[-1] - s.index[0]) / pd.Timedelta(days=1)
    dd = s / s.cummax() - 1

    longest, peak, peak_t, under = 0.0, -math.inf, s.index[0], False
    for t, v in s.items():
        if v >= peak:
            if under:
                longest = max(longest, (t - peak_t) / pd.Timedelta(days=1))
            peak, peak_t, under = v, t, False
        else:
            under = True
    if under:
        longest = max(longest, (s.index[-1] - peak_t) / pd.Timedelta(days=1))

    df = pd.DataFrame({"net": [t.net_pnl for t in trades], "open": [t.is_open for t in trades],
                       "pnl": [t.pnl for t in trades], "charges": [t.charges for t in trades]})
    closed = df.loc[~df["open"], "net"]
    wins, losses = closed[closed > 0], closed[closed < 0]
    return {
        "start": s.index[0].isoformat(), "end": s.index[-1].isoformat(),
        "initial_equity": CASH, "final_equity": eq[-1],
        "total_return_pct": (eq[-1] / CASH - 1) * 100,
        "cagr_pct": ((eq[-1] / CASH) ** (365.25 / days) - 1) * 100 if days >= 1 else None,
        "sharpe": sharpe, "sortino": sortino,
        "max_drawdown_pct": -dd.min() * 100, "max_drawdown_duration_days": longest,
        "trades": len(closed), "open_trades": int(df["open"].sum()),
        "win_rate_pct": len(wins) / len(closed) * 100 if len(closed) else None,
        "profit_factor": wins.sum() / -losses.sum() if len(losses) else None,
        "expectancy": closed.mean() if len(closed) else None,
        "avg_win": wins.mean() if len(wins) else None, "avg_loss": losses.mean() if len(losses) else None,
        "best_trade": closed.max() if len(closed) else None, "worst_trade": closed.min() if len(closed) else None,
        "exposure_pct": (exposure > 0).mean() * 100 if exposure is not None else None,
        "charges": df["charges"].sum(), "gross_pnl": df["pnl"].sum(), "net_pnl": eq[-1] - CASH,
    }


def assert_matches(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for key, value in want.items():
        if value is None or isinstance(value, str):
            assert got[key] == value, key
        else:
            assert got[key] == pytest.approx(float(value), rel=1e-9, abs=1e-9), key


# --- tests --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(CURVES))
def test_compute_metrics_when_curve_given_then_matches_pandas_reference(name):
    ts, eq = CURVES[name]()
    trades = random_trades(ts)
    exposure = np.where(np.random.default_rng(9).random(ts.size) < 0.3, 0.0, 250_000.0)

    got = compute_metrics(ts, eq, trades, initial_cash=CASH, exposure=exposure)

    assert_matches(got, reference(ts, eq, trades, exposure))
    assert all(type(v) in (int, float, str) or v is None for v in got.values())  # plain values, JSON-ready


def test_monotonic_curve_has_no_drawdown_and_no_downside():
    ts, eq = monotonic()
    got = compute_metrics(ts, eq, [], initial_cash=CASH)
    assert got["max_drawdown_pct"] == 0.0 and got["max_drawdown_duration_days"] == 0.0
    assert got["sortino"] is None and got["sharpe"] is not None and got["sharpe"] > 0


def test_curve_ending_in_drawdown_counts_duration_to_the_end():
    ts, eq = ending_in_drawdown()
    peak = int(np.argmax(eq))
    got = compute_metrics(ts, eq, [], initial_cash=CASH)
    assert got["max_drawdown_duration_days"] == pytest.approx((ts[-1] - ts[peak]) / 86_400_000)
    assert got["max_drawdown_pct"] == pytest.approx((1 - eq[-1] / eq.max()) * 100)


def test_ist_day_boundary_not_utc_decides_the_daily_close():
    # 18:00 UTC and 19:00 UTC on the same UTC date are different IST days (IST midnight = 18:30 UTC)
    ts = np.array([pd.Timestamp("2024-01-01 18:00", tz="UTC").value // 10**6,
                   pd.Timestamp("2024-01-01 19:00", tz="UTC").value // 10**6], dtype=np.int64)
    eq = np.array([CASH * 1.01, CASH * 1.01 * 0.98])
    got = compute_metrics(ts, eq, [], initial_cash=CASH)
    r = np.array([0.01, -0.02])
    assert got["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(252))


def test_no_trades_gives_counts_zero_and_trade_stats_none():
    ts, eq = daily_walk(days=10)
    got = compute_metrics(ts, eq, [], initial_cash=CASH)
    assert got["trades"] == 0 and got["open_trades"] == 0
    assert got["charges"] == 0.0 and got["gross_pnl"] == 0.0
    for key in ("win_rate_pct", "profit_factor", "expectancy", "avg_win", "avg_loss", "best_trade", "worst_trade",
                "exposure_pct"):
        assert got[key] is None, key
    assert per_strategy([]) == []


def test_single_point_gives_no_cagr_no_ratios_no_drawdown():
    got = compute_metrics(np.array([1_709_523_900_000]), np.array([CASH * 1.02]), [], initial_cash=CASH)
    assert got["start"] == got["end"] == "2024-03-04T09:15:00+05:30"
    assert got["total_return_pct"] == pytest.approx(2.0)
    assert got["cagr_pct"] is None and got["sharpe"] is None and got["sortino"] is None
    assert got["max_drawdown_pct"] == 0.0 and got["max_drawdown_duration_days"] == 0.0


def test_flat_curve_has_zero_deviation_so_no_ratios():
    ts, _ = daily_walk(days=10)
    got = compute_metrics(ts, np.full(ts.size, CASH), [], initial_cash=CASH)
    assert got["sharpe"] is None and got["sortino"] is None and got["total_return_pct"] == 0.0


def test_all_winners_have_no_profit_factor():
    ts, eq = daily_walk(days=10)
    trades = [Trade("s", "INFY", 1, "LONG", 1, int(ts[i]), 100.0, int(ts[i + 1]), 110.0, 10.0 * (i + 1), 1.0)
              for i in range(4)]
    got = compute_metrics(ts, eq, trades, initial_cash=CASH)
    assert got["profit_factor"] is None and got["avg_loss"] is None
    assert got["win_rate_pct"] == 100.0 and got["best_trade"] == 39.0 and got["worst_trade"] == 9.0
    assert per_strategy(trades)[0]["profit_factor"] is None


def test_per_strategy_matches_pandas_groupby():
    ts, _ = minute_walk(days=2)
    trades = random_trades(ts, n=60, seed=4)
    df = pd.DataFrame({"strategy": [t.strategy for t in trades], "net": [t.net_pnl for t in trades],
                       "charges": [t.charges for t in trades], "open": [t.is_open for t in trades]})

    rows = per_strategy(trades)

    assert [r["strategy"] for r in rows] == sorted(df["strategy"].unique())
    for row in rows:
        g = df[df["strategy"] == row["strategy"]]
        closed = g.loc[~g["open"], "net"]
        losses = closed[closed < 0]
        assert row["trades"] == len(closed) and row["open_trades"] == int(g["open"].sum())
        assert row["win_rate_pct"] == pytest.approx((closed > 0).mean() * 100)
        assert row["net_pnl"] == pytest.approx(g["net"].sum()) and row["charges"] == pytest.approx(g["charges"].sum())
        assert row["profit_factor"] == pytest.approx(closed[closed > 0].sum() / -losses.sum())


def test_drawdown_series_matches_pandas():
    _, eq = daily_walk()
    s = pd.Series(eq)
    np.testing.assert_allclose(drawdown_series(eq), (s / s.cummax() - 1).to_numpy(), rtol=0, atol=1e-15)


@pytest.mark.parametrize("ts, eq, cash", [([], [], CASH), ([1, 2], [CASH], CASH), ([1], [CASH], 0.0)])
def test_bad_input_raises_value_error(ts, eq, cash):
    with pytest.raises(ValueError):
        compute_metrics(np.array(ts, dtype=np.int64), np.array(eq, dtype=float), [], initial_cash=cash)
