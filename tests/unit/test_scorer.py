"""The next-day scorer's pure parts: daily results, round trips from fills, scoring, decisions, the overlay."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from backtest.results import DailyResult, daily_rows
from backtest.roundtrips import FillRow, round_trips
from backtest.scorer import (
    ensemble_members,
    labels_to_ids,
    next_session_day,
    overlay_doc,
    protect_members,
    window,
    write_atomic,
)
from backtest.scoring import (
    SOURCE_WEIGHTS,
    Policy,
    combine_days,
    compute_metrics,
    decide,
    group_by_entry,
    max_drawdown,
    render_table,
    score_all,
    sharpe_score,
)
from backtest.trades import Trade
from core.errors import ConfigError
from core.sessions import load_calendar
from strategy.overlay import OVERLAY_ENV, OverlayFile, apply_file, load_overlay, overlay_path, resolve
from strategy.registry import load_registry

CAPITAL = 1_000_000.0
D1, D2, D3 = date(2026, 11, 18), date(2026, 11, 19), date(2026, 11, 20)


def ms(y: int, mo: int, d: int, h: int, mi: int = 0) -> int:
    return int(datetime(y, mo, d, h, mi, tzinfo=UTC).timestamp() * 1000)


def trade(strategy: str, exit_ts: int | None, pnl: float, charges: float = 0.0) -> Trade:
    return Trade(strategy, "INFY", 408065, "LONG", 10, (exit_ts or ms(2026, 11, 20, 4)) - 60_000, 100.0,
                 exit_ts, None if exit_ts is None else 101.0, pnl, charges)


# -- daily results -------------------------------------------------------------

def test_daily_rows_groups_closed_trades_by_strategy_and_ist_exit_day() -> None:
    trades = [trade("a", ms(2026, 11, 19, 4), 100, 10),       # 09:30 IST on the 19th
              trade("a", ms(2026, 11, 19, 19), -50, 5),       # 00:30 IST on the 20th
              trade("a", ms(2026, 11, 19, 9), 8, 10),         # net -2: not a win
              trade("b", ms(2026, 11, 19, 5), 30),
              trade("a", None, 999)]                          # still open: left out
    rows = daily_rows(trades)
    assert rows == [DailyResult("a", D2, 2, 1, 108.0, 20.0, 88.0), DailyResult("a", D3, 1, 0, -50.0, 5.0, -55.0),
                    DailyResult("b", D2, 1, 1, 30.0, 0.0, 30.0)]


# -- round trips from fills ----------------------------------------------------

def fill(n: int, side: str, qty: int, price: float, strategy: str = "s", venue: str = "paper",
         token: int = 408065) -> FillRow:
    return FillRow(f"f{venue}{strategy}{n:03d}", venue, strategy, token, side, qty, price,
                   ms(2026, 11, 20, 4) + n * 1000, "INFY", "MIS", "NSE", "EQ")


def test_round_trips_at_average_cost_with_adds_partial_exits_and_a_flip() -> None:
    # as the positions table: +75 on the partial exit, -75 closing the rest, +100 on the short's cover
    fills = [fill(1, "BUY", 10, 100.0), fill(2, "BUY", 10, 110.0), fill(3, "SELL", 5, 120.0),
             fill(4, "SELL", 25, 100.0), fill(5, "BUY", 10, 90.0)]
    long_, short = round_trips(fills)
    assert (long_.side, long_.qty, long_.entry_price, long_.exit_ts) == ("LONG", 20, 105.0, fills[3].ts_ms)
    assert long_.pnl == pytest.approx(0.0)
    assert long_.exit_price == pytest.approx((5 * 120 + 15 * 100) / 20)
    assert (short.side, short.qty, short.entry_ts, short.entry_price) == ("SHORT", 10, fills[3].ts_ms, 100.0)
    assert (short.exit_ts, short.exit_price, short.pnl) == (fills[4].ts_ms, 90.0, pytest.approx(100.0))


def test_round_trips_split_a_flipping_fills_charges_by_quantity_and_keep_books_apart() -> None:
    fills = [fill(1, "BUY", 10, 100.0), fill(2, "SELL", 30, 101.0),       # closes 10, opens 20 short
             fill(3, "BUY", 5, 50.0, venue="live"),                       # another venue: another book
             fill(4, "SELL", 5, 51.0, strategy="t")]                      # another strategy: opens a short
    trades = round_trips(fills, charges=lambda f: float(f.qty))
    closed = [t for t in trades if not t.is_open]
    assert len(closed) == 1 and closed[0].charges == pytest.approx(10 + 10)  # its own 10 + a third of 30
    opened = sorted((t.strategy, t.side, t.qty, round(t.charges, 9)) for t in trades if t.is_open)
    assert opened == [("s", "LONG", 5, 5.0), ("s", "SHORT", 20, 20.0), ("t", "SHORT", 5, 5.0)]
    assert all(t.exit_ts is None for t in trades if t.is_open)


def test_round_trips_feed_daily_rows_net_of_charges() -> None:
    fills = [fill(1, "BUY", 10, 100.0), fill(2, "SELL", 10, 103.0), fill(3, "SELL", 4, 103.0),
             fill(4, "BUY", 4, 104.0)]
    (row,) = daily_rows(round_trips(fills, charges=lambda f: 1.0))
    assert (row.strategy, row.day, row.trades, row.wins, row.charges) == ("s", D3, 2, 1, 4.0)
    assert (row.gross_pnl, row.net_pnl) == (pytest.approx(26.0), pytest.approx(22.0))


# -- scoring ----------------------------------------------------------------------

def day(d: date, net: float, trades: int = 2, wins: int = 1, strategy: str = "a") -> DailyResult:
    return DailyResult(strategy, d, trades, wins, net + 10, 10.0, net)


def test_combine_days_weighs_live_and_paper_over_backtest() -> None:
    got = combine_days([("backtest", day(D1, 100, 4, 2)), ("live", day(D1, -200, 1, 0)), ("paper", day(D2, 50))])
    w_bt, w_live = SOURCE_WEIGHTS["backtest"], SOURCE_WEIGHTS["live"]
    assert w_live > SOURCE_WEIGHTS["paper"] > w_bt
    assert [d.day for d in got] == [D1, D2]
    assert got[0].net_pnl == pytest.approx((100 * w_bt - 200 * w_live) / (w_bt + w_live))
    assert got[0].trades == pytest.approx((4 * w_bt + 1 * w_live) / (w_bt + w_live))
    assert got[0].sources == ("backtest", "live") and got[1].net_pnl == 50


def test_max_drawdown_runs_from_the_running_peak_starting_at_zero() -> None:
    assert max_drawdown([]) == 0
    assert max_drawdown([-10, 5]) == 10
    assert max_drawdown([100, -30, 20, -120, 500]) == 130


def test_sharpe_score_is_mean_over_std_times_sqrt_n_with_a_floored_std() -> None:
    assert sharpe_score([100.0], CAPITAL) == 0.0
    assert sharpe_score([100.0, 300.0], CAPITAL) == pytest.approx(200 / (2 ** 0.5 * 100) * 2 ** 0.5)
    # identical days: std floored at 1e-5 x capital (10 rupees), not infinite
    assert sharpe_score([100.0, 100.0, 100.0, 100.0], CAPITAL) == pytest.approx(100 / 10 * 2)


def test_metrics_win_rate_profit_factor_and_drawdown_pct() -> None:
    m = compute_metrics(combine_days([("backtest", day(D1, 300, 3, 2)), ("backtest", day(D2, -100, 2, 0)),
                                      ("backtest", day(D3, 50, 1, 1))]), CAPITAL)
    assert (m.trades, m.net_pnl, m.days) == (6, 250, 3)
    assert m.win_rate == pytest.approx(0.5)
    assert m.profit_factor == pytest.approx(3.5)
    assert m.max_drawdown_pct == pytest.approx(100 / CAPITAL * 100)
    assert m.source_days == {"backtest": 3}
    assert compute_metrics([], CAPITAL).profit_factor is None


POLICY = Policy(min_trades=10, max_drawdown_pct=15.0, min_score=0.5)


def metrics_of(nets: list[float], trades_per_day: int = 4):  # type: ignore[no-untyped-def]
    days = [date(2026, 11, d) for d in range(11, 11 + len(nets))]
    return compute_metrics(combine_days([("backtest", day(d, n, trades_per_day)) for d, n in zip(days, nets,
                                                                                                    strict=True)]),
                           CAPITAL)


def test_decide_demotes_on_drawdown_whatever_the_trade_count() -> None:
    d = decide("a", metrics_of([-100_000, -60_000], 1), True, POLICY)
    assert (d.decision, d.enabled) == ("demote", False)
    assert d.reason == "max drawdown 16.0% > 15% cap: demote"


def test_decide_keeps_the_current_state_with_too_few_trades() -> None:
    for current in (True, False):
        d = decide("a", metrics_of([100, -50], 3), current, POLICY)
        assert (d.decision, d.enabled) == ("keep", current)
        assert d.reason.startswith("6 trades < 10 minimum: keep as is")


def test_decide_demotes_a_low_score_and_promotes_a_good_one() -> None:
    bad = decide("a", metrics_of([100, -300, 50, -200]), True, POLICY)
    assert (bad.decision, bad.enabled) == ("demote", False)
    assert bad.reason.startswith("score -") and "< 0.50 minimum over 16 trades: demote" in bad.reason
    good = decide("a", metrics_of([100, 300, 50, 200]), False, POLICY)
    assert (good.decision, good.enabled) == ("promote", True)
    assert "over 16 trades, drawdown 0.0% within 15%: promote" in good.reason
    assert "\n" not in good.reason + bad.reason


def test_score_all_ranks_by_score_and_scores_strategies_without_results() -> None:
    results = {"good": [("backtest", day(date(2026, 11, d), 100.0 + d, 5)) for d in range(11, 14)],
               "bad": [("backtest", day(date(2026, 11, d), -100.0 - d, 5)) for d in range(11, 14)]}
    out = score_all(results, {"bad": True, "idle": False, "good": True}, CAPITAL, POLICY)
    assert [d.strategy for d in out] == ["good", "idle", "bad"]
    assert [d.decision for d in out] == ["promote", "keep", "demote"]
    assert out[1].reason == "0 trades < 10 minimum: keep as is (disabled)"
    table = render_table(out)
    assert table.splitlines()[0].split()[:4] == ["#", "strategy", "trades", "net"]
    assert "inf" in table.splitlines()[1]  # no losing day: profit factor infinite


def test_group_by_entry_maps_timeframe_labels_to_the_entry_and_reports_unknown_labels() -> None:
    rows = [("backtest", day(D1, 10, strategy="m_1m")), ("backtest", day(D1, 5, strategy="m_5m")),
            ("paper", day(D1, 7, strategy="m_1m")), ("backtest", day(D1, 1, strategy="gone"))]
    grouped, unknown = group_by_entry(rows, {"m_1m": "m", "m_5m": "m", "m": "m"})
    assert unknown == {"gone"}
    assert [(s, r.strategy, r.net_pnl, r.trades) for s, r in grouped["m"]] == [("backtest", "m", 15, 4),
                                                                              ("paper", "m_1m", 7, 2)]


# -- calendar --------------------------------------------------------------------

def test_window_is_the_trading_days_before_the_day_scored() -> None:
    cal = load_calendar()
    days = window(cal, date(2026, 11, 23), 8)
    assert days[-1] == D3 and len(days) == 8
    assert date(2026, 11, 10) not in days and date(2026, 11, 15) not in days  # Diwali holiday, a Sunday


def test_next_session_day_is_today_before_the_open_else_the_next_trading_day() -> None:
    cal = load_calendar()
    assert next_session_day(cal, ms(2026, 11, 20, 2)) == D3                   # 07:30 IST
    assert next_session_day(cal, ms(2026, 11, 20, 5)) == date(2026, 11, 23)   # open: next Monday
    assert next_session_day(cal, ms(2026, 11, 23, 12)) == date(2026, 11, 25)  # the 24th is a holiday


# -- the overlay -----------------------------------------------------------------

OVERLAY = "scored_for: 2026-11-23\ngenerated_at: 2026-11-20T18:00:00+05:30\nstrategies:\n%s"


def test_overlay_loads_and_resolves_against_the_registry(tmp_path: Path) -> None:
    p = tmp_path / "o.yaml"
    p.write_text(OVERLAY % "  a: {enabled: false, reason: dd}\n  b: {enabled: true}\n  gone: {enabled: false}\n"
                           "  voter: {enabled: false}\n")
    ov = load_overlay(p)
    assert ov.scored_for == date(2026, 11, 23)
    res = resolve(p, ov, {"a": True, "b": False, "c": True, "voter": True}, {"voter": "ens"})
    assert res.enabled == {"a": False, "b": True, "c": True, "voter": True}
    assert res.changed == {"a": False, "b": True}
    assert (res.ignored, res.kept_for_ensembles) == (("gone",), ("voter",))


@pytest.mark.parametrize(("text", "needle"), [
    (OVERLAY % "  a: {enabled: false, colour: red}\n", "strategies.a.colour: unknown key"),
    (OVERLAY % "  a: {enabled: maybe}\n", "strategies.a.enabled"),
    ("strategies: {}\n", "scored_for: Field required"),
    ("scored_for: 2026-11-23\nstrategies: [a\n", "syntax error"),
    ("scored_for: 2026-11-23\nextra: 1\n", "extra: unknown key"),
])
def test_malformed_overlay_is_one_config_error_line_naming_file_and_key(tmp_path: Path, text: str,
                                                                        needle: str) -> None:
    p = tmp_path / "bad_overlay.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_overlay(p)
    msg = str(err.value)
    assert str(p) in msg and needle in msg and "\n" not in msg


def test_apply_file_warns_about_ids_not_in_the_registry_and_skips_a_missing_file(tmp_path: Path,
                                                                                 caplog: pytest.LogCaptureFixture
                                                                                 ) -> None:
    assert apply_file(tmp_path / "none.yaml", {"a": True}) is None
    p = tmp_path / "o.yaml"
    p.write_text(OVERLAY % "  gone: {enabled: false}\n  a: {enabled: false}\n")
    with caplog.at_level(logging.INFO, logger="strategy.overlay"):
        res = apply_file(p, {"a": True})
    assert res is not None and res.enabled == {"a": False}
    assert any("'gone' is not in the registry" in r.getMessage() and r.levelno == logging.WARNING
               for r in caplog.records)
    assert any("registry overlay applied" in r.getMessage() and "disabled=a" in r.getMessage()
               for r in caplog.records)


def test_overlay_path_from_env_or_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(OVERLAY_ENV, raising=False)
    assert overlay_path().parts[-3:] == ("var", "strategy", "registry_overlay.yaml")
    monkeypatch.setenv(OVERLAY_ENV, str(tmp_path / "x.yaml"))
    assert overlay_path() == tmp_path / "x.yaml"


REGISTRY = """strategies:
  - {id: alpha, strategy: ma_crossover, timeframes: [1m], instruments: [INFY]}
  - {id: beta, strategy: ma_crossover, timeframes: [1m, 5m], instruments: [INFY]}
  - {id: gamma, strategy: ma_crossover, enabled: false, timeframes: [5m], instruments: [INFY]}
"""


def test_load_registry_applies_the_overlay_unless_told_not_to(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    reg_path, ens = tmp_path / "registry.yaml", tmp_path / "none.yaml"
    reg_path.write_text(REGISTRY)
    over = tmp_path / "overlay.yaml"
    over.write_text(OVERLAY % "  alpha: {enabled: false, reason: demoted}\n  gamma: {enabled: true}\n"
                              "  removed_since: {enabled: true}\n")
    reg = load_registry(reg_path, ensembles=ens, overlay=over)
    assert {s.label for s in reg.specs} == {"beta_1m", "beta_5m", "gamma"}
    assert reg.overlay == over
    assert {e.id: e.enabled for e in reg.file.strategies} == {"alpha": False, "beta": True, "gamma": True}
    plain = load_registry(reg_path, ensembles=ens, overlay=False)
    assert {s.label for s in plain.specs} == {"alpha", "beta_1m", "beta_5m"} and plain.overlay is None
    assert load_registry(reg_path, ensembles=ens, overlay=None).overlay is None
    monkeypatch.setenv(OVERLAY_ENV, str(over))  # the default: the env's file
    assert {s.label for s in load_registry(reg_path, ensembles=ens).specs} == {"beta_1m", "beta_5m", "gamma"}
    monkeypatch.setenv(OVERLAY_ENV, str(tmp_path / "missing.yaml"))
    assert load_registry(reg_path, ensembles=ens).overlay is None
    over.write_text("scored_for: [\n")
    with pytest.raises(ConfigError, match="overlay.yaml: syntax error"):
        load_registry(reg_path, ensembles=ens, overlay=over)


def test_overlay_never_disables_a_member_of_an_enabled_ensemble(tmp_path: Path) -> None:
    reg_path, ens = tmp_path / "registry.yaml", tmp_path / "ensemble.yaml"
    reg_path.write_text(REGISTRY.replace("[1m, 5m]", "[1m]"))
    ens.write_text("ensembles:\n  - {id: duo, members: [alpha, beta], mode: all}\n")
    over = tmp_path / "overlay.yaml"
    over.write_text(OVERLAY % "  alpha: {enabled: false}\n")
    reg = load_registry(reg_path, ensembles=ens, overlay=over)
    assert [e.label for e in reg.ensembles] == ["duo"]
    assert {e.id: e.enabled for e in reg.file.strategies}["alpha"] is True
    # the scorer records the same: a demoted member stays enabled, and says why
    members = ensemble_members(reg, labels_to_ids(reg))
    assert members == {"alpha": "duo", "beta": "duo"}
    results = {"alpha": [("backtest", day(date(2026, 11, d), -100.0 - d, 5)) for d in range(11, 14)]}
    out = {d.strategy: d for d in protect_members(score_all(results, {"alpha": True, "gamma": False}, CAPITAL,
                                                                      POLICY), members)}
    assert (out["alpha"].decision, out["alpha"].enabled) == ("demote", True)
    assert out["alpha"].reason.endswith("demote (votes in ensemble duo: stays enabled)")
    assert out["gamma"].enabled is False


def test_written_overlay_round_trips_through_its_model(tmp_path: Path) -> None:
    import yaml

    decisions = score_all({}, {"alpha": True, "beta": False}, CAPITAL, POLICY)
    doc = overlay_doc(date(2026, 11, 23), decisions, datetime(2026, 11, 20, 12, 30, tzinfo=UTC))
    p = tmp_path / "sub" / "overlay.yaml"
    write_atomic(p, yaml.safe_dump(doc, sort_keys=False))
    ov = OverlayFile.model_validate(yaml.safe_load(p.read_text()))
    assert {k: v.enabled for k, v in ov.strategies.items()} == {"alpha": True, "beta": False}
    assert [q.name for q in p.parent.iterdir()] == ["overlay.yaml"]  # no temporary file left


def test_labels_to_ids_covers_every_timeframe_label(tmp_path: Path) -> None:
    reg_path = tmp_path / "registry.yaml"
    reg_path.write_text(REGISTRY)
    reg = load_registry(reg_path, ensembles=tmp_path / "none.yaml", overlay=False)
    assert labels_to_ids(reg) == {"alpha": "alpha", "beta": "beta", "beta_1m": "beta", "beta_5m": "beta",
                                  "gamma": "gamma"}
