"""``python -m backtest.scorer`` against a real Postgres: results in, scores and the registry overlay out."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from backtest.results import DailyResult, record
from core.sessions import load_calendar
from strategy.registry import load_registry
from tests.conftest import ROOT, query

pytestmark = pytest.mark.integration

FOR = date(2026, 11, 23)
WINDOW = 5
REGISTRY = """strategies:
  - {id: steady, strategy: ma_crossover, timeframes: [1m, 5m], instruments: [INFY]}
  - {id: crash, strategy: ma_crossover, timeframes: [1m], instruments: [INFY]}
  - {id: quiet, strategy: ma_crossover, enabled: false, timeframes: [1m], instruments: [INFY]}
  - {id: papered, strategy: ma_crossover, enabled: false, timeframes: [1m], instruments: [INFY]}
"""


def window_days() -> list[date]:
    cal, days, d = load_calendar(), list[date](), FOR
    while len(days) < WINDOW:
        d = cal.previous_trading_day("NSE", d)
        days.append(d)
    return days[::-1]


@pytest.fixture()
def setup(tmp_path: Path, fresh_pg_dsn: str) -> tuple[dict[str, str], Path, Path]:
    reg = tmp_path / "registry.yaml"
    reg.write_text(REGISTRY)
    overlay = tmp_path / "var" / "registry_overlay.yaml"
    env = {**os.environ, "POSTGRES_DSN": fresh_pg_dsn, "PYTHONPATH": str(ROOT),
           "TRADESTACK_REGISTRY_OVERLAY": str(overlay), "STRATEGY_ENSEMBLES": str(tmp_path / "none.yaml")}
    days = window_days()
    with psycopg.connect(fresh_pg_dsn) as conn:
        # steady: +2000 a day over both its timeframes' labels, 4 trades a day
        rows = [DailyResult(lb, d, 2, 1, 1100.0, 100.0, 1000.0 + i) for i, d in enumerate(days)
                for lb in ("steady_1m", "steady_5m")]
        # crash: a 20% drawdown in two days (capital 10 lakh in configs/risk_budget.yaml)
        rows += [DailyResult("crash", days[0], 1, 0, -99_000.0, 1000.0, -100_000.0),
                 DailyResult("crash", days[1], 1, 0, -99_000.0, 1000.0, -100_000.0),
                 DailyResult("quiet", days[2], 2, 2, 500.0, 10.0, 490.0),
                 DailyResult("not_in_registry", days[2], 9, 9, 1.0, 0.0, 1.0),
                 DailyResult("steady_1m", FOR - timedelta(days=60), 50, 0, -1e6, 0.0, -1e6)]  # outside the window
        record(conn, "bt-1", "backtest", rows)
        # papered: three paper round trips of +100 on three days (no backtest)
        for n, d in enumerate(days[-3:]):
            at = datetime(d.year, d.month, d.day, 4, 0, tzinfo=UTC)
            for k, (side, px) in enumerate((("BUY", 100.0), ("SELL", 110.0))):
                conn.execute("INSERT INTO fills (fill_id, order_id, instrument_token, side, qty, price, ts, venue, "
                             "strategy) VALUES (%s, %s, 408065, %s, 10, %s, %s, 'paper', 'papered')",
                             (f"pp{n}{k}", f"po{n}{k}", side, px, at + timedelta(minutes=k)))
    return env, reg, overlay


def scorer(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "backtest.scorer", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_scorer_writes_scores_fills_results_and_the_overlay_the_registry_applies(setup, fresh_pg_dsn) -> None:
    env, reg, overlay = setup
    args = ("--for", FOR.isoformat(), "--window-days", str(WINDOW), "--min-trades", "3", "--registry", str(reg),
            "--sources", "backtest,paper")
    r = scorer(env, *args)
    assert r.returncode == 0, r.stderr
    assert "not_in_registry" in r.stdout
    table = [ln.split()[1] for ln in r.stdout.splitlines()[2:6]]
    assert table == ["steady", "papered", "quiet", "crash"]  # ranked by score
    rows = {s: (dec, en, reason) for s, dec, en, reason in query(
        fresh_pg_dsn, "SELECT strategy, decision, enabled, reason FROM strategy_scores WHERE scored_for = %s", FOR)}
    assert rows["steady"][:2] == ("promote", True)
    assert rows["papered"][:2] == ("promote", True)
    assert rows["crash"] == ("demote", False, "max drawdown 20.0% > 15% cap: demote")
    assert rows["quiet"] == ("keep", False, "2 trades < 3 minimum: keep as is (disabled)")
    score_row: Any = query(fresh_pg_dsn, "SELECT metrics, window_from, window_to FROM strategy_scores "
                                         "WHERE strategy = 'steady'")
    metrics, w_from, w_to = score_row[0]
    days = window_days()
    assert (w_from, w_to) == (days[0], days[-1])
    assert metrics["trades"] == 20 and metrics["net_pnl"] == pytest.approx(2 * sum(1000 + i for i in range(5)))
    # the paper fills' daily results are recorded under run id 'fills'
    paper: list[Any] = query(fresh_pg_dsn, "SELECT day, trades, wins, gross_pnl, charges, net_pnl FROM "
                                           "strategy_results WHERE source = 'paper' AND run_id = 'fills' ORDER BY day")
    assert [r[:4] for r in paper] == [(d, 1, 1, 100.0) for d in days[-3:]]
    assert all(0 < c < 100 and n == pytest.approx(100 - c) for *_, c, n in paper)  # configs/charges.yaml
    doc = yaml.safe_load(overlay.read_text())
    assert doc["scored_for"] == FOR
    assert {k: v["enabled"] for k, v in doc["strategies"].items()} == {
        "crash": False, "papered": True, "quiet": False, "steady": True}
    assert doc["strategies"]["crash"]["reason"] == rows["crash"][2]
    # the runner's load applies it: crash disabled, papered enabled
    labels = {s.label for s in load_registry(reg, ensembles=reg.parent / "none.yaml", overlay=overlay).specs}
    assert labels == {"steady_1m", "steady_5m", "papered"}
    # idempotent: a second run leaves the same rows
    assert scorer(env, *args).returncode == 0
    assert query(fresh_pg_dsn, "SELECT count(*) FROM strategy_scores") == [(4,)]
    assert query(fresh_pg_dsn, "SELECT count(*) FROM strategy_results WHERE run_id = 'fills'") == [(3,)]


def test_record_replaces_a_runs_rows_and_leaves_other_runs_alone(fresh_pg_dsn) -> None:
    day = date(2026, 11, 20)
    with psycopg.connect(fresh_pg_dsn) as conn:
        record(conn, "r1", "backtest", [DailyResult("a", day, 1, 1, 5.0, 1.0, 4.0),
                                        DailyResult("b", day, 1, 0, -5.0, 1.0, -6.0)])
        record(conn, "r2", "backtest", [DailyResult("a", day, 9, 9, 9.0, 0.0, 9.0)])
        record(conn, "r1", "backtest", [DailyResult("a", day, 2, 1, 7.0, 1.0, 6.0)])            # b: gone
        record(conn, "r2", "backtest", [DailyResult("c", day, 1, 1, 1.0, 0.0, 1.0)], replace=False)  # merged
        with pytest.raises(ValueError, match="source 'sim'"):
            record(conn, "r3", "sim", [])
    assert query(fresh_pg_dsn, "SELECT run_id, strategy, trades, net_pnl FROM strategy_results ORDER BY 1, 2") == [
        ("r1", "a", 2, 6.0), ("r2", "a", 9, 9.0), ("r2", "c", 1, 1.0)]


def test_dry_run_prints_the_decisions_and_writes_nothing(setup, fresh_pg_dsn) -> None:
    env, reg, overlay = setup
    r = scorer(env, "--for", FOR.isoformat(), "--window-days", str(WINDOW), "--registry", str(reg), "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "crash" in r.stdout and "demote" in r.stdout and "dry run: nothing written" in r.stdout
    assert query(fresh_pg_dsn, "SELECT count(*) FROM strategy_scores") == [(0,)]
    assert query(fresh_pg_dsn, "SELECT count(*) FROM strategy_results WHERE run_id = 'fills'") == [(0,)]
    assert not overlay.exists()


@pytest.mark.parametrize("bad", [("--sources", "backtest,nope"), ("--window-days", "0"), ("--for", "23/11/2026"),
                                 ("--min-trades", "-1"), ("--bogus",), ("--charges", "bps=x")])
def test_bad_option_is_a_usage_error(setup, bad: tuple[str, ...]) -> None:
    env, reg, _ = setup
    r = scorer(env, "--registry", str(reg), *bad)
    assert r.returncode == 2
    assert "error:" in r.stderr


def test_malformed_overlay_and_registry_are_one_line_exit_2(setup, tmp_path: Path) -> None:
    env, reg, overlay = setup
    overlay.parent.mkdir(parents=True, exist_ok=True)
    overlay.write_text("scored_for: 2026-11-20\nstrategies: {crash: {enabled: false, why: x}}\n")
    r = scorer(env, "--for", FOR.isoformat(), "--registry", str(reg), "--dry-run")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].endswith("registry_overlay.yaml: strategies.crash.why: unknown key")
    r = scorer(env, "--registry", str(tmp_path / "missing.yaml"), "--overlay", str(tmp_path / "none.yaml"))
    assert r.returncode == 2 and "missing.yaml: file not found" in r.stderr


def test_help_names_the_options() -> None:
    r = subprocess.run([sys.executable, "-m", "backtest.scorer", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0
    for opt in ("--for", "--window-days", "--min-trades", "--max-drawdown-pct", "--min-score", "--sources",
                "--dry-run", "--overlay", "--registry"):
        assert opt in r.stdout
