"""The backtester end to end on files: the SMA crossover against backtesting.py, the books, the loaders,
the fill and sizing models, the command line and the sweep."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
import warnings
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from backtest import data
from backtest.charges import load_charges
from backtest.portfolio import Portfolio
from backtest.run import Job, execute, write_outputs
from backtest.sweep import combinations, parse_grid, segment_bounds
from core.errors import ConfigError
from core.sessions import ist_midnight_ms, load_calendar
from tests.conftest import ROOT

IST = timezone(timedelta(hours=5, minutes=30))
GOOG = Path(__import__("backtesting.test", fromlist=["x"]).__file__).parent / "GOOG.csv"


def minute_csv(path: Path, days: int = 15, seed: int = 3, header: str = "Datetime,Open,High,Low,Close,Volume",
               start: date = date(2025, 6, 2)) -> Path:
    """A seeded random walk of 1 m bars over ``days`` NSE sessions, naive IST times."""
    cal = load_calendar()
    ds, d = [], start
    while len(ds) < days:
        if cal.session("NSE", d):
            ds.append(d)
        d += timedelta(days=1)
    ts = np.concatenate([ist_midnight_ms(x) + (9 * 60 + 15) * 60_000 + np.arange(375) * 60_000 for x in ds])
    rng = np.random.default_rng(seed)
    c = np.round(1500 * np.exp(np.cumsum(rng.normal(0, 0.0012, len(ts)))) / 0.05) * 0.05
    o = np.r_[c[0], c[:-1]]
    with path.open("w") as f:
        f.write(header + "\n")
        for t, a, cc in zip(ts, o, c, strict=True):
            stamp = datetime.fromtimestamp(t / 1000, IST).strftime("%Y-%m-%d %H:%M:%S")
            f.write(f"{stamp},{a:.2f},{max(a, cc) + 0.05:.2f},{min(a, cc) - 0.05:.2f},{cc:.2f},1000\n")
    return path


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


# -- acceptance: the same closed trades as backtesting.py's SmaCross -------------------------------------------
def test_sma_crossover_matches_backtesting_py_trade_for_trade(tmp_path: Path) -> None:
    from backtesting import Backtest
    from backtesting.test import GOOG as GOOG_DF

    from tests.reference.sma_cross import sma_cross

    SmaCross = sma_cross()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = Backtest(GOOG_DF, SmaCross, cash=10_000, commission=0, finalize_trades=False).run()._trades
    expected = [("LONG" if r.Size > 0 else "SHORT", r.EntryTime.date().isoformat(), r.ExitTime.date().isoformat(),
                 round(r.EntryPrice, 4), round(r.ExitPrice, 4)) for r in ref.itertuples()]
    out = tmp_path / "goog"
    cmd = [sys.executable, "-m", "backtest", "run", "--csv", str(GOOG), "--symbol", "GOOG",
           "--strategy", "ma_crossover", "--params", "fast=10,slow=30,kind=sma,allow_short=true,use_stop=false",
           "--session", "none",
           "--fill", "next_open", "--charges", "none", "--sizing", "fixed", "--out", str(out)]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    got = [(r["side"], r["entry_time"][:10], r["exit_time"][:10], round(float(r["entry_price"]), 4),
            round(float(r["exit_price"]), 4)) for r in read_rows(out / "trades.csv") if r["exit_time"]]
    assert len(expected) > 50
    assert got == expected
    for name in ("orders.csv", "equity.csv", "metrics.json", "report.html"):
        assert (out / name).stat().st_size > 0
    # times are ISO 8601 with the offset; the open trade at the end has an empty exit
    last = read_rows(out / "trades.csv")[-1]
    assert last["entry_time"].endswith("+05:30") and last["exit_time"] == ""


# -- the books ------------------------------------------------------------------------------------------------
def test_portfolio_round_trips_at_average_cost() -> None:
    p = Portfolio(100_000.0, {7: "X"})
    p.fill("s", 7, "BUY", 10, 100.0, 1_000, 1.0, 0, 0)
    p.fill("s", 7, "BUY", 10, 110.0, 2_000, 1.0, 1, 0)        # avg 105
    assert p.fill("s", 7, "SELL", 5, 120.0, 3_000, 1.0, 2, 0) == pytest.approx(75.0)  # 5 x (120 - 105)
    # sells 15 to close and 5 more to open a short: one fill closes one trade and opens the next
    assert p.fill("s", 7, "SELL", 20, 90.0, 4_000, 4.0, 3, 0) == pytest.approx(-225.0)  # 15 x (90 - 105)
    p.fill("s", 7, "BUY", 5, 80.0, 5_000, 1.0, 4, 0)
    trades = p.finish({7: 80.0})
    assert [(t.side, t.qty, t.entry_ts, t.exit_ts) for t in trades] == [("LONG", 20, 1_000, 4_000),
                                                                        ("SHORT", 5, 4_000, 5_000)]
    long_, short = trades
    assert long_.entry_price == pytest.approx(105.0)
    assert long_.exit_price == pytest.approx((5 * 120 + 15 * 90) / 20)
    assert long_.pnl == pytest.approx(75 - 225)
    assert long_.charges == pytest.approx(1 + 1 + 1 + 3)      # the closing fill's charges split 15:5
    assert short.pnl == pytest.approx(5 * (90 - 80)) and short.charges == pytest.approx(1 + 1)
    assert p.cash == pytest.approx(100_000 - 1000 - 1100 + 600 + 1800 - 400 - 8.0)


def test_equity_curve_marks_positions_to_each_close() -> None:
    p = Portfolio(1_000.0, {1: "A", 2: "B"})
    token = np.array([1, 2, 1, 2, 1, 2])
    ts = np.array([0, 0, 60, 60, 120, 120])
    close = np.array([10.0, 20.0, 11.0, 19.0, 12.0, 21.0])
    p.fill("s", 1, "BUY", 10, 10.0, 0, 0.0, 0, 0)    # long 10 A at 10
    p.fill("s", 2, "SELL", 5, 19.0, 60, 0.0, 3, 0)   # short 5 B at 19
    t, eq, cash, expo = p.equity_curve(1_000.0, token, ts, close)
    assert t.tolist() == [0, 60, 120]
    assert eq.tolist() == pytest.approx([1_000.0, 1_010.0, 1_020 - 10])
    assert expo.tolist() == pytest.approx([100.0, 110 + 95, 120 + 105])
    assert cash.tolist() == pytest.approx([900.0, 995.0, 995.0])


# -- loaders --------------------------------------------------------------------------------------------------
def test_csv_columns_in_any_case_naive_times_in_tz_and_offsets_kept(tmp_path: Path) -> None:
    f = tmp_path / "x.csv"
    f.write_text("Date,OPEN,High,low,Close\n2025-06-02 09:15:00,10,11,9,10.5\n2025-06-02 09:16:00,10.5,11,10,10.8\n"
                 "2025-06-02 09:17:00,10.8,11.2,10.7,11\n")
    b = data.read_csv(f, "ABC", [], "Asia/Kolkata")
    assert b.tf == "1m" and len(b) == 3 and b.volume.tolist() == [0, 0, 0]
    assert b.ts[0] == int(datetime(2025, 6, 2, 9, 15, tzinfo=IST).timestamp() * 1000)
    ny = data.read_csv(f, "ABC", [], "America/New_York")
    assert ny.ts[0] - b.ts[0] == (9 * 60 + 30) * 60_000  # EDT is 9 h 30 min behind IST
    g = tmp_path / "y.csv"
    g.write_text("time,open,high,low,close,volume\n2025-06-02T09:15:00+00:00,1,1,1,1,5\n"
                 "2025-06-02T09:16:00+00:00,1,1,1,1,5\n")
    assert data.read_csv(g, "ABC", [], "Asia/Kolkata").ts[0] == int(datetime(2025, 6, 2, 9, 15,
                                                                            tzinfo=UTC).timestamp() * 1000)


@pytest.mark.parametrize(("body", "message"), [
    ("Date,Open,High,Low\n2025-06-02,1,1,1\n", "missing column(s) close"),
    ("Date,Open,High,Low,Close\n2025-06-02,1,1,1,1\n2025-06-03,1,1,1,-2\n", "row 3: Close = -2.0"),
    ("Date,Open,High,Low,Close\n2025-06-02,1,1,1,1\nnot-a-date,1,1,1,1\n", "not a date/time"),
    ("Date,Open,High,Low,Close\n2025-06-02,1,1,1,1\n2025-06-03,5,4,3,5\n", "row 3: high/low do not contain"),
    ("Date,Open,High,Low,Close\n2025-06-02,1,1,1,1\n2025-06-02,1,1,1,1\n", "two rows for 2025-06-02"),
])
def test_bad_csv_is_one_line_naming_the_problem(tmp_path: Path, body: str, message: str) -> None:
    f = tmp_path / "bad.csv"
    f.write_text(body)
    with pytest.raises(ConfigError, match="bad.csv") as e:
        data.read_csv(f, "ABC", [], "Asia/Kolkata")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_parquet_archive_reads_the_same_bars_as_the_csv(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from core.universe import load_universe

    universe = load_universe(ROOT / "configs" / "tokens.csv")
    b = data.read_csv(minute_csv(tmp_path / "m.csv", days=3), "INFY", universe)
    for day in sorted({(int(t) + 19_800_000) // 86_400_000 for t in b.ts}):
        sel = (b.ts + 19_800_000) // 86_400_000 == day
        d = date(1970, 1, 1) + timedelta(days=int(day))
        path = tmp_path / "arch" / "bars" / "tf=1m" / f"date={d.isoformat()}" / "part-0.parquet"
        path.parent.mkdir(parents=True)
        pq.write_table(pa.table({"instrument_token": b.token[sel], "ts": pa.array(b.ts[sel], pa.timestamp("ms", "UTC")),
                                 "open": b.open[sel], "high": b.high[sel], "low": b.low[sel], "close": b.close[sel],
                                 "volume": b.volume[sel]}), path)
    start = date(1970, 1, 1) + timedelta(days=int((b.ts[0] + 19_800_000) // 86_400_000))
    p = data.read_parquet(tmp_path / "arch", "1m", data.select_instruments(["INFY"], universe), start,
                          start + timedelta(days=10))
    assert p.ts.tolist() == b.ts.tolist() and p.close.tolist() == b.close.tolist()


# -- fills, sizing, charges -----------------------------------------------------------------------------------
def _job(csv_path: Path, **kw: object) -> Job:
    base: dict[str, object] = {"source": "csv", "csv": csv_path, "symbol": "INFY", "strategy": "ma_crossover",
                               "params": "fast=5,slow=20,kind=sma,allow_short=true", "progress": False}
    return Job(**{**base, **kw})  # type: ignore[arg-type]


def test_next_open_close_and_slippage_fill_prices(tmp_path: Path) -> None:
    f = minute_csv(tmp_path / "m.csv", days=3)
    bars = data.read_csv(f, "INFY", [])
    opens = dict(zip(bars.ts.tolist(), bars.open.tolist(), strict=True))
    closes = dict(zip((bars.ts + 60_000).tolist(), bars.close.tolist(), strict=True))
    nxt = execute(_job(f, charges="none", sizing="fixed"))
    filled = [r for r in nxt.result.orders if r.status == "FILLED"]
    assert filled and all(r.fill_price == pytest.approx(opens[r.fill_ts]) and r.fill_ts == r.order["signal_ts"]
                          for r in filled)
    at_close = execute(_job(f, charges="none", sizing="fixed", fill="close"))
    assert all(r.fill_price == pytest.approx(closes[r.fill_ts]) for r in at_close.result.orders if r.filled)
    slip = execute(_job(f, charges="none", sizing="fixed", slippage_ticks=2))
    for a, b in zip(nxt.result.orders, slip.result.orders, strict=True):
        if a.filled:
            assert b.fill_price == pytest.approx(a.fill_price + (0.1 if a.order["side"] == "BUY" else -0.1))


def test_risk_sizing_and_zerodha_charges_as_the_live_code_computes_them(tmp_path: Path) -> None:
    from risk import sizing
    from risk.config import load_budget

    f = minute_csv(tmp_path / "m.csv", days=3)
    o = execute(_job(f))
    cfg = load_budget()
    entries = [r for r in o.result.orders if r.entry and r.filled]
    assert entries
    for r in entries[:20]:
        price = r.order["extra"]["ref_price"]
        risk_qty = math.floor(cfg.capital * cfg.risk_per_trade_pct / 100 / abs(price - r.order["stop_loss"]) + 1e-9)
        cap = math.floor(cfg.max_notional_per_order / price + 1e-9)
        assert r.qty == min(risk_qty, cap), r
        assert sizing.is_entry(r.order)
    model = load_charges()
    day = lambda ts: datetime.fromtimestamp(ts / 1000, IST).date()  # noqa: E731
    want = sum(model.charges("intraday", r.order["side"], r.filled, r.fill_price, day(r.fill_ts)).total
               for r in o.result.orders if r.filled)
    assert o.metrics["charges"] == pytest.approx(want)
    assert o.metrics["final_equity"] == pytest.approx(o.equity[-1])
    assert o.metrics["net_pnl"] == pytest.approx(sum(t.pnl - t.charges for t in o.trades), abs=1e-6)


def test_budget_guard_refusals_reach_the_engine(tmp_path: Path) -> None:
    import yaml

    f = minute_csv(tmp_path / "m.csv", days=2)
    cfg = yaml.safe_load((ROOT / "configs" / "risk_budget.yaml").read_text())
    cfg["max_open_positions"] = 0
    rb = tmp_path / "rb.yaml"
    rb.write_text(yaml.safe_dump(cfg))
    o = execute(_job(f, risk_config=str(rb)))
    statuses = {r.status for r in o.result.orders}
    assert statuses == {"REJECTED_BUDGET"} and o.trades == []
    assert all("max_open_positions" in r.detail for r in o.result.orders)


def test_outputs_are_written(tmp_path: Path) -> None:
    f = minute_csv(tmp_path / "m.csv", days=2)
    job = _job(f)
    o = execute(job)
    write_outputs(tmp_path / "out", job, o)
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    eq = read_rows(tmp_path / "out" / "equity.csv")
    assert m["total_return_pct"] == pytest.approx((float(eq[-1]["equity"]) / m["initial_equity"] - 1) * 100, abs=1e-6)
    assert eq[0]["time"] == "2025-06-02T09:16:00+05:30"  # the equity after the first bar, at its close
    orders = read_rows(tmp_path / "out" / "orders.csv")
    assert len(orders) == m["orders"] and {"order_id", "qty", "sized_qty", "signal_time", "status"} <= set(orders[0])
    assert all(r["qty"] == "" for r in orders if r["intent"] == "entry")  # entries are sized by risk
    html = (tmp_path / "out" / "report.html").read_text()
    assert "data:image/png;base64," in html and "ma_crossover" in html


# -- command line ---------------------------------------------------------------------------------------------
def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "backtest", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_help_lists_every_option() -> None:
    res = _cli("run", "--help")
    assert res.returncode == 0
    for opt in ("--from-db", "--symbols", "--tf", "--from", "--to", "--csv", "--symbol", "--tz", "--parquet",
                "--strategy", "--params", "--registry", "--session", "--product", "--fill", "--charges",
                "--slippage", "--sizing", "--qty", "--cash", "--out", "--fills-from-db"):
        assert opt in res.stdout, opt
    assert _cli("sweep", "--help").returncode == 0


@pytest.mark.parametrize(("args", "message"), [
    (["--symbol", "X", "--strategy", "ma_crossover"], "one of the arguments --csv --parquet --from-db is required"),
    (["--csv", "{csv}", "--strategy", "ma_crossover"], "--csv needs --symbol"),
    (["--csv", "{csv}", "--symbol", "X", "--strategy", "nope"], "unknown strategy 'nope'"),
    (["--csv", "{csv}", "--symbol", "X", "--strategy", "ma_crossover", "--params", "fast=50,slow=10"],
     "fast (50) must be below slow (10)"),
    (["--csv", "{csv}", "--symbol", "X", "--strategy", "ma_crossover", "--charges", "bps=-1"], "bps"),
    (["--csv", "{csv}", "--symbol", "X", "--strategy", "ma_crossover", "--slippage", "2"], "expected ticks=N"),
    (["--csv", str(GOOG), "--symbol", "GOOG", "--strategy", "ma_crossover", "--session", "none"],
     "no delivery charges before 2023-04-01"),
    (["--csv", str(GOOG), "--symbol", "GOOG", "--strategy", "ma_crossover", "--product", "MIS"],
     "intraday positions need intraday bars"),
    (["--csv", "{csv}", "--symbol", "X", "--strategy", "ma_crossover", "--tf", "2m"], "--tf: '2m' is not one of"),
    (["--csv", "{csv}", "--symbol", "X", "--strategy", "ma_crossover", "--tf", "5m"], "--tf 5m, but the bars are 1m"),
    (["--csv", "{csv}", "--symbol", "X", "--registry", "/nonexistent/registry.yaml"], "file not found"),
    (["--csv", "{csv}", "--symbol", "X", "--strategy", "ma_crossover", "--fills-from-db"], "give --from-db"),
])
def test_usage_and_config_errors_exit_2_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    f = minute_csv(tmp_path / "m.csv", days=1)
    res = _cli("run", *[a.replace("{csv}", str(f)) for a in args], "--out", str(tmp_path / "o"))
    assert res.returncode == 2, res.stdout + res.stderr
    assert message in res.stderr and "Traceback" not in res.stderr, res.stderr


# -- sweep ----------------------------------------------------------------------------------------------------
def test_grid_parsing_and_segments() -> None:
    assert parse_grid(["fast=5,10", "slow=20:40:10", "kind=sma,ema"]) == {
        "fast": [5, 10], "slow": [20, 30, 40], "kind": ["sma", "ema"]}
    assert parse_grid(["mult=1.0:2.0:0.5"]) == {"mult": [1.0, 1.5, 2.0]}
    assert len(combinations(parse_grid(["a=1,2,3", "b=1,2"]))) == 6
    assert len(combinations(parse_grid(["a=1:100:1"]), sample=7, seed=1)) == 7
    for bad in (["fast"], ["a=1:0:1"], ["a=1,2", "a=3"], ["a=1:5:0"]):
        with pytest.raises(ValueError, match="--grid"):
            parse_grid(bad)
    assert segment_bounds(0, 99, 4) == [(0, 25), (25, 50), (50, 75), (75, 100)]


def test_sweep_ranks_every_combination_with_walk_forward(tmp_path: Path) -> None:
    f = minute_csv(tmp_path / "m.csv", days=8)
    out = tmp_path / "sw"
    res = _cli("sweep", "--csv", str(f), "--symbol", "INFY", "--strategy", "ma_crossover", "--params", "kind=sma",
               "--grid", "fast=3,5", "--grid", "slow=10:30:10", "--folds", "2", "--jobs", "2", "--out", str(out))
    assert res.returncode == 0, res.stderr
    rows = read_rows(out / "sweep.csv")
    assert len(rows) == 6 and {(r["fast"], r["slow"]) for r in rows} == {(a, b) for a in ("3", "5")
                                                                          for b in ("10", "20", "30")}
    wf = read_rows(out / "walk_forward.csv")
    assert [r["fold"] for r in wf] == ["1", "2"]
    assert "walk-forward" in res.stdout and "6/6 runs" in res.stderr
    # the ranking is by the mean in-sample metric, best first
    is_means = [float(r["is_sharpe"]) for r in rows if r["is_sharpe"]]
    assert is_means == sorted(is_means, reverse=True)
    # one combination's full-period return equals a plain run's
    one = execute(_job(f, params="kind=sma,fast=3,slow=10"))
    row = next(r for r in rows if (r["fast"], r["slow"]) == ("3", "10"))
    assert float(row["total_return_pct"]) == pytest.approx(one.metrics["total_return_pct"])


def test_long_runs_show_progress_and_cash_is_the_pinned_equity(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                               ) -> None:
    from backtest.data import BarSet

    cal = load_calendar()
    days, d = [], date(2025, 1, 1)
    while len(days) * 375 < 200_000:
        if cal.session("NSE", d):
            days.append(d)
        d += timedelta(days=1)
    ts = np.concatenate([ist_midnight_ms(x) + (9 * 60 + 15) * 60_000 + np.arange(375) * 60_000 for x in days])
    c = np.round(1500 * np.exp(np.cumsum(np.random.default_rng(5).normal(0, 0.001, len(ts)))) / 0.05) * 0.05
    o = np.r_[c[0], c[:-1]]
    inst = data.csv_instrument("SYN", [], 1500.0)
    bars = BarSet("1m", {inst.instrument_token: inst}, np.full(len(ts), inst.instrument_token), ts, o,
                  np.maximum(o, c) + 0.05, np.minimum(o, c) - 0.05, c, np.full(len(ts), 10, dtype=np.int64))
    out = execute(_job(tmp_path / "unused.csv", cash=500_000.0, progress=True), sets=[bars])
    err = capsys.readouterr().err
    assert f"backtest: 100.0%  {len(ts):,} bars in" in err
    assert out.metrics["initial_equity"] == 500_000.0 and out.equity[0] == pytest.approx(500_000.0)
    sized = [r for r in out.result.orders if r.entry and r.qty]
    assert sized and all(r.risk["equity"] == 500_000.0 for r in sized)
