"""risk.config: configs/risk_budget.yaml loads; a bad file is one ConfigError line naming file and key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from core.check_config import run_checks
from core.errors import ConfigError
from risk.config import CONFIG_CHECKS, FILE_NAME, RiskBudget, load_budget

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "configs" / FILE_NAME


def shipped() -> dict[str, Any]:
    data = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    p = tmp_path / FILE_NAME
    p.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return p


def error_of(path: Path) -> str:
    with pytest.raises(ConfigError) as exc:
        load_budget(path)
    msg = str(exc.value)
    assert "\n" not in msg, msg
    assert msg.startswith(f"{path}: "), msg
    return msg


def test_shipped_file_when_loaded_then_valid_with_the_documented_policy():
    b = load_budget(SHIPPED)
    assert isinstance(b, RiskBudget)
    assert (b.capital, b.risk_per_trade_pct, b.max_open_positions) == (1_000_000, 0.5, 10)
    assert (b.order_caps.per_second, b.order_caps.per_minute, b.order_caps.per_day) == (10, 400, 5000)  # Kite's
    assert sum(x.pct for x in b.buckets.values()) <= 100
    assert b.bucket_of("ma_crossover_fast") == "trend" and b.bucket_of("trend_vote") == "trend"
    assert b.bucket_of("rsi_reversion_14") == "reversion" and b.bucket_of("orb_5m") == "default"
    assert b.bucket_budget("trend") == 500_000
    assert b.risk_pct("rsi_reversion_14") == 0.25 and b.risk_pct("orb_5m") == 0.5
    caps = b.strategy_caps("orb_5m")  # own per_day, the file-wide per-strategy default for the rest
    assert (caps.per_second, caps.per_minute, caps.per_day) == (10, 200, 50)
    assert b.freeze_of("NIFTY") == 1800 and b.freeze_of("NIFTY26NOVFUT", "NIFTY") == 1800
    assert b.freeze_of("INFY") is None


def test_default_order_caps_when_file_gives_none_then_kites_limits():
    b = RiskBudget.model_validate({"capital": 1, "risk_per_trade_pct": 1, "max_notional_per_order": 1,
                                   "max_open_positions": 1, "daily_loss_limit": 1,
                                   "buckets": {"default": {"pct": 100}}})
    assert (b.order_caps.per_second, b.order_caps.per_minute, b.order_caps.per_day) == (10, 400, 5000)
    assert b.allowed_products == ["MIS"] and b.equity_source == "broker"


def test_file_with_unknown_key_when_loaded_then_one_line_naming_the_key(tmp_path):
    data = shipped()
    data["max_notionl_per_order"] = 5
    msg = error_of(write(tmp_path, data))
    assert msg.endswith("max_notionl_per_order: unknown key")


def test_file_with_unknown_nested_key_when_loaded_then_one_line_with_its_path(tmp_path):
    data = shipped()
    data["buckets"]["trend"]["pct_"] = 5
    assert "buckets.trend.pct_: unknown key" in error_of(write(tmp_path, data))


def test_file_without_default_bucket_when_loaded_then_one_line(tmp_path):
    data = shipped()
    del data["buckets"]["default"]
    msg = error_of(write(tmp_path, data))
    assert "buckets: a 'default' bucket is required" in msg


def test_file_with_buckets_over_100_pct_when_loaded_then_one_line_with_the_sum(tmp_path):
    data = shipped()
    data["buckets"]["trend"]["pct"] = 80  # 80 + 25 + 25
    assert "buckets: percentages add up to 130 > 100" in error_of(write(tmp_path, data))


def test_file_with_strategy_in_two_buckets_when_loaded_then_one_line_naming_both(tmp_path):
    data = shipped()
    data["buckets"]["reversion"]["strategies"].append("trend_vote")
    msg = error_of(write(tmp_path, data))
    assert "buckets.reversion.strategies: 'trend_vote' is also in bucket 'trend'" in msg


def test_file_with_entry_start_not_before_end_when_loaded_then_one_line(tmp_path):
    data = shipped()
    data["entry_hours"].update(start="15:00", end="10:00")
    msg = error_of(write(tmp_path, data))
    assert "entry_hours" in msg and "start 15:00 must be before end 10:00" in msg
    data["entry_hours"].update(start="10:00", end="10:00")
    assert "start 10:00 must be before end 10:00" in error_of(write(tmp_path, data))


def test_file_with_bad_entry_time_when_loaded_then_one_line_naming_the_key(tmp_path):
    data = shipped()
    data["entry_hours"]["start"] = "25:00"
    msg = error_of(write(tmp_path, data))
    assert "entry_hours.start" in msg and "time out of range" in msg


@pytest.mark.parametrize("qty", [-5, 0])
def test_file_with_freeze_qty_below_one_when_loaded_then_one_line_naming_the_symbol(tmp_path, qty):
    data = shipped()
    data["freeze_qty"]["NIFTY"] = qty
    msg = error_of(write(tmp_path, data))
    assert f"freeze_qty.NIFTY: must be >= 1, got {qty}" in msg


def test_file_with_product_kite_does_not_have_when_loaded_then_one_line(tmp_path):
    data = shipped()
    data["allowed_products"] = ["MIS", "BO"]
    assert "allowed_products.1" in error_of(write(tmp_path, data))


def test_file_with_yaml_syntax_error_or_missing_when_loaded_then_one_line(tmp_path):
    p = tmp_path / FILE_NAME
    p.write_text("capital: [1,\n  buckets: {", encoding="utf-8")
    assert "syntax error" in error_of(p)
    assert error_of(tmp_path / "nope.yaml").endswith("file not found")


def test_config_checks_when_run_like_make_check_config_then_good_file_ok_bad_file_one_error_line(tmp_path, capsys):
    assert [name for name, _ in CONFIG_CHECKS] == [FILE_NAME]
    good = tmp_path / "good"
    good.mkdir()
    write(good, shipped())
    assert run_checks(good, CONFIG_CHECKS) == 0
    assert capsys.readouterr().out.strip() == f"ok    {good / FILE_NAME}"
    bad = tmp_path / "bad"
    bad.mkdir()
    data = shipped()
    data["buckets"]["trend"]["pct"] = 80
    write(bad, data)
    assert run_checks(bad, CONFIG_CHECKS) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error {bad / FILE_NAME}: ") and "130 > 100" in err[0]


@pytest.mark.parametrize("module", ["risk.manager_v2", "risk.order_budget_guard"])
def test_service_with_a_bad_budget_file_then_exit_2_and_one_line_naming_file_and_key(tmp_path, module):
    import subprocess
    import sys

    from core.settings import PROJECT_ROOT

    bad = tmp_path / "risk_budget.yaml"
    bad.write_text("capital: -5\nrisk_per_trade_pct: 1\nmax_notional_per_order: 1\nmax_open_positions: 1\n"
                   "daily_loss_limit: 1\nbuckets: {default: {pct: 10}}\n")
    r = subprocess.run([sys.executable, "-m", module, "--budget", str(bad)], cwd=PROJECT_ROOT, capture_output=True,
                       text=True, timeout=60, env={**__import__("os").environ, "METRICS_PORT": "0"})
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and str(bad) in lines[0] and "capital" in lines[0], r.stderr


def test_a_copy_does_not_answer_from_the_originals_lookup_memos() -> None:
    from risk.config import load_budget

    cfg = load_budget()
    base = cfg.model_validate({**cfg.model_dump(), "strategies": {"x*": {"risk_per_trade_pct": 2.0}}})
    assert base.risk_pct("xyz") == 2.0  # memoised on base
    copy = base.model_copy(update={"strategies": {}})
    assert copy.risk_pct("xyz") == cfg.risk_per_trade_pct
    assert base.risk_pct("xyz") == 2.0
