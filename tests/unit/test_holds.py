"""The hold rule of the bar pipeline (compute.holds) and its enforcement by the aggregators' CLIs."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from compute import holds
from compute.bar_aggregator_1m import BarAggregator1m
from compute.bar_aggregator_1m_to_multi import BarAggregatorMulti
from compute.bar_service import WallClockGate
from compute.holds import Knobs, builder_hold, check_chain, knobs_from_env, min_wall_grace, rollup_hold
from compute.rollup_service import check_hold_rule
from tests.conftest import ROOT


def test_builder_hold_when_defaults_then_six_seconds_as_the_rule_states():
    assert builder_hold(2000, 2000) == holds.StageHold(hold_ms=6000, restart_hold_ms=4000)


def test_min_wall_grace_of_1m_when_builder_defaults_then_hold_live_window_restart_and_transport():
    # 6 s steady hold + 5 s the 1m clock still runs after the builder dies + 4 s re-emission + 1 s transport.
    assert min_wall_grace(builder_hold(2000, 2000)) == 16000


def test_rollup_hold_when_1m_defaults_then_input_hold_plus_wall_plus_one_stall():
    up = builder_hold(2000, 2000)
    assert rollup_hold(up, 0, 20000, 30000) == holds.StageHold(hold_ms=15000 + 20000 + 25000, restart_hold_ms=20000)


def test_shipped_defaults_when_derived_then_margin_over_each_minimum():
    assert (holds.AGG_1M_WALL_GRACE_MS, holds.AGG_MULTI_WALL_GRACE_MS) == (20000, 150000)
    builder = builder_hold(holds.BAR_GRACE_MS, holds.BAR_WALL_GRACE_MS)
    one_m = rollup_hold(builder, holds.AGG_GRACE_MS, holds.AGG_1M_WALL_GRACE_MS, holds.AGG_SILENT_CLOSE_MS)
    assert holds.AGG_1M_WALL_GRACE_MS - min_wall_grace(builder) >= holds.SAFETY_MARGIN_MS
    # the multi stage's live window covers the 1 m bars' one-a-minute cadence
    assert min_wall_grace(one_m, holds.LIVE_WINDOW_MULTI_MS) == 60000 + 65000 + 20000 + 1000
    assert holds.AGG_MULTI_WALL_GRACE_MS - min_wall_grace(one_m, holds.LIVE_WINDOW_MULTI_MS) >= holds.SAFETY_MARGIN_MS
    assert (holds.AGG_SILENT_CLOSE_MS, holds.AGG_MULTI_SILENT_CLOSE_MS) == (30000, 90000)
    assert check_chain(Knobs()) == []


def test_services_when_no_flags_then_use_the_derived_defaults():
    assert (BarAggregator1m.wall_default, BarAggregator1m.live_window_ms) == (20000, 5000)
    assert (BarAggregatorMulti.wall_default, BarAggregatorMulti.live_window_ms) == (150000, 65000)


def test_gate_when_live_window_below_the_input_cadence_then_clock_falls_behind_for_good():
    # Why the multi stage's live window is 65 s: 1 m bars arrive once a minute (here all at :01).
    def lag_after_an_hour(live_window_ms: int) -> int:
        gate = WallClockGate(live_window_ms, live_window_ms + 25000)
        gate.assigned([0, 1, 2], 0)
        virtual = 0
        for t in range(0, 3_600_000, 1000):
            virtual = gate.wall_now(t, [0, 1, 2] if t % 60_000 == 1000 else [])
        return 3_599_000 - virtual

    assert lag_after_an_hour(holds.LIVE_WINDOW_MS) > 1_000_000  # 5 s: ~24 of every 60 s lost
    assert lag_after_an_hour(holds.LIVE_WINDOW_MULTI_MS) <= 1000


def test_check_chain_when_old_1m_default_then_rejected_naming_the_key():
    problems = check_chain(Knobs(agg_1m_wall_grace_ms=6000, agg_multi_wall_grace_ms=45000))
    assert problems[0].startswith("AGG_1M_WALL_GRACE_MS=6000 is below 16000")
    assert problems[1].startswith("AGG_MULTI_WALL_GRACE_MS=45000 is below")


def test_check_chain_when_stage_given_then_only_that_stage_checked():
    k = Knobs(agg_1m_wall_grace_ms=6000)
    assert [p.split("=")[0] for p in check_chain(k, "1m")] == ["AGG_1M_WALL_GRACE_MS"]
    # the multi stage's minimum follows the 1m stage's configured (smaller) hold: 150 s still covers it
    assert check_chain(k, "multi") == []


def test_check_chain_when_silent_close_within_live_window_then_rejected():
    problems = check_chain(Knobs(agg_silent_close_ms=5000), "1m")
    assert problems == ["AGG_SILENT_CLOSE_MS=5000 must exceed the live window 5000 ms (and an upstream restart)"]
    problems = check_chain(Knobs(agg_multi_silent_close_ms=30000), "multi")
    assert problems == ["AGG_MULTI_SILENT_CLOSE_MS=30000 must exceed the live window 65000 ms "
                        "(and an upstream restart)"]


def test_check_chain_when_bigger_builder_grace_then_1m_minimum_follows():
    k = knobs_from_env({"BAR_GRACE_MS": "3000"})
    assert (k.bar_grace_ms, k.bar_wall_grace_ms) == (3000, 3000)  # the builder's wall grace defaults to grace
    assert min_wall_grace(builder_hold(3000, 3000)) == 9000 + 5000 + 6000 + 1000
    assert check_chain(k, "1m") == ["AGG_1M_WALL_GRACE_MS=20000 is below 21000: the builder (BAR_GRACE_MS=3000, "
                                    "BAR_WALL_GRACE_MS=3000) can hold a 1s bar back 20000 ms, restarts included"]


def test_knobs_from_env_when_not_an_integer_then_error_names_the_variable():
    with pytest.raises(ValueError, match=r"AGG_SILENT_CLOSE_MS: not an integer \(got 'soon'\)"):
        knobs_from_env({"AGG_SILENT_CLOSE_MS": "soon"})


def test_knobs_from_env_when_flag_given_then_flag_wins_over_env():
    k = knobs_from_env({"AGG_1M_WALL_GRACE_MS": "30000"}, agg_1m_wall_grace_ms=25000, agg_grace_ms=None)
    assert (k.agg_1m_wall_grace_ms, k.agg_grace_ms) == (25000, 0)


def _run(module: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **env}
    return subprocess.run([sys.executable, "-m", module, *args], env=clean, capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


@pytest.mark.parametrize(("module", "env", "args", "key"), [
    ("compute.bar_aggregator_1m", {"AGG_1M_WALL_GRACE_MS": "6000"}, (), "AGG_1M_WALL_GRACE_MS=6000"),
    ("compute.bar_aggregator_1m", {}, ("--wall-grace-ms", "15000"), "AGG_1M_WALL_GRACE_MS=15000"),
    ("compute.bar_aggregator_1m_to_multi", {"AGG_MULTI_WALL_GRACE_MS": "45000"}, (), "AGG_MULTI_WALL_GRACE_MS=45000"),
    ("compute.bar_aggregator_1m_to_multi", {"BAR_WALL_GRACE_MS": "9000"}, (), "AGG_MULTI_WALL_GRACE_MS=150000"),
    ("compute.bar_aggregator_1m_to_multi", {}, ("--wall-grace-ms", "90000"), "AGG_MULTI_WALL_GRACE_MS=90000"),
])
def test_aggregator_cli_when_knobs_break_the_rule_then_one_line_and_exit_2(module, env, args, key):
    proc = _run(module, env, *args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: unsafe wall-clock knobs: {key} is below"), proc.stderr


def test_check_hold_rule_when_rule_set_to_warn_then_one_warning_line_and_no_exit(monkeypatch, capsys):
    monkeypatch.setenv("BAR_HOLD_RULE", "warn")
    args = argparse.Namespace(wall_grace_ms=6000, grace_ms=0, silent_close_ms=30000)
    check_hold_rule(args, "1m")
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(
        "warning: unsafe wall-clock knobs (BAR_HOLD_RULE=warn): AGG_1M_WALL_GRACE_MS=6000 is below 16000")


def test_check_hold_rule_when_defaults_then_silent(monkeypatch, capsys):
    for var in holds.ENV.values():
        monkeypatch.delenv(var, raising=False)
    check_hold_rule(argparse.Namespace(wall_grace_ms=None, grace_ms=0, silent_close_ms=90000), "multi")
    assert capsys.readouterr().err == ""


def test_gate_when_started_long_before_the_first_input_then_no_lag_once_input_flows():
    # An aggregator started at 08:30 whose first 1 s bar comes at 09:15 must not run 45 min behind all day.
    gate = WallClockGate(holds.LIVE_WINDOW_MS, holds.AGG_SILENT_CLOSE_MS)
    gate.assigned([0, 1, 2], 0)
    assert gate.wall_now(0, []) is None
    assert gate.wall_now(1_800_000, []) is None
    start = 2_700_000
    assert gate.wall_now(start, [0, 1, 2]) == start
    for s in range(1, 60):
        clock = gate.wall_now(start + s * 1000, [0, 1, 2])
    assert clock == start + 59_000
