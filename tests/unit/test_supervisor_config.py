"""Supervisor config, interpolation, restart policy, log rotation and ctl formatting (no processes)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.errors import ConfigError
from core.settings import PROJECT_ROOT
from orchestrator.config import (
    RestartSpec,
    dependency_levels,
    find_cycle,
    load_supervisor_config,
)
from orchestrator.ctl import format_duration, format_status_table, readiness_verdict
from orchestrator.interpolate import InterpolationError, expand_env, expand_placeholders, expand_tree
from orchestrator.lifecycle import RestartTracker, backoff_delay, describe_exit
from orchestrator.logfile import RotatingLogFile

REAL_CONFIG = PROJECT_ROOT / "configs" / "process_supervisor.yaml"


def write(tmp_path: Path, data: dict[str, Any], name: str = "sup.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def load(tmp_path: Path, data: dict[str, Any], env: dict[str, str] | None = None, mode: str | None = None):
    return load_supervisor_config(write(tmp_path, data), mode=mode, var_dir=tmp_path / "var",
                                  environ=env if env is not None else {})


def config_error(tmp_path: Path, data: dict[str, Any], env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, data, env)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"{tmp_path / 'sup.yaml'}: ")
    return msg


# ----- interpolation -------------------------------------------------------------------------------


def test_expand_env_uses_value_then_default_then_nested_default() -> None:
    env = {"A": "1", "EMPTY": ""}
    assert expand_env("x${A}y", env) == "x1y"
    assert expand_env("${MISSING:-dflt}", env) == "dflt"
    assert expand_env("${EMPTY:-dflt}", env) == "dflt"
    assert expand_env("pg://h:${PORT:-${A}0}/db", env) == "pg://h:10/db"
    assert expand_env("cost $$5", env) == "cost $5"


@pytest.mark.parametrize(("text", "problem"), [
    ("${NOPE}", "environment variable NOPE is not set"),
    ("${A", "unterminated"),
    ("${A?x}", "bad reference"),
    ("${1A}", "bad reference"),
])
def test_expand_env_rejects_unset_and_malformed_references(text: str, problem: str) -> None:
    with pytest.raises(InterpolationError, match=problem):
        expand_env(text, {"A": "1"})


def test_placeholders_replace_only_known_names_and_leave_python_braces_alone() -> None:
    out = expand_placeholders("{python} -c 'd = {}; e = {x}' {root}", {"python": "/py", "root": "/r"})
    assert out == "/py -c 'd = {}; e = {x}' /r"


def test_expand_tree_reports_the_key_path_of_the_bad_value() -> None:
    with pytest.raises(InterpolationError, match=r"^services\.a\.cmd\.1: environment variable X"):
        expand_tree({"services": {"a": {"cmd": ["ok", "${X}"]}}}, {}, {})


# ----- loading and resolution ----------------------------------------------------------------------


def test_real_config_is_valid_in_every_mode(tmp_path: Path) -> None:
    for mode in ("paper", "dry", "live"):
        plan = load_supervisor_config(REAL_CONFIG, mode=mode, var_dir=tmp_path, environ={})
        assert {"postgres", "kafka", "migrate", "kitesim", "zerodha_ws", "smoke_producer", "bar_builder_1s",
                "bar_aggregator_1m", "bar_aggregator_1m_to_multi"} <= set(plan.services)
        # paper/dry feed: kitesim -> zerodha_ws; live: zerodha_ws against real Kite; smoke is opt-in
        assert plan.services["kitesim"].enabled is (mode != "live")
        assert plan.services["zerodha_ws"].enabled
        assert not plan.services["smoke_producer"].enabled
    smoke_on = load_supervisor_config(REAL_CONFIG, mode="dry", var_dir=tmp_path,
                                      environ={"SMOKE_PRODUCER_ENABLED": "true", "KITESIM_ENABLED": "false",
                                               "ZERODHA_WS_ENABLED": "false"})
    assert smoke_on.services["smoke_producer"].enabled and not smoke_on.services["kitesim"].enabled
    plan = load_supervisor_config(REAL_CONFIG, mode="paper", var_dir=tmp_path, environ={"PG_PORT": "25432"})
    pg = plan.services["postgres"]
    assert pg.argv[:3] == [sys.executable, "-m", "orchestrator.pg_launcher"]
    assert pg.argv[-3:] == [f"{tmp_path}/pg", "--port", "25432"]
    assert pg.env["POSTGRES_DSN"] == "postgresql://tradestack@127.0.0.1:25432/tradestack"
    smoke = plan.services["smoke_producer"]
    assert smoke.env["METRICS_PORT"] == "9101"
    assert smoke.spec.readiness is not None and smoke.spec.readiness.http == "http://127.0.0.1:9101/health"
    assert list(plan.services).index("migrate") > list(plan.services).index("postgres")


def test_real_config_services_can_be_disabled_from_the_environment(tmp_path: Path) -> None:
    env = {"TRADESTACK_EMBEDDED_PG": "false", "SMOKE_PRODUCER_ENABLED": "false",
           "POSTGRES_DSN": "postgresql://u@db:5432/x"}
    plan = load_supervisor_config(REAL_CONFIG, var_dir=tmp_path, environ=env)
    assert not plan.services["postgres"].enabled and not plan.services["smoke_producer"].enabled
    assert plan.services["migrate"].env["POSTGRES_DSN"] == "postgresql://u@db:5432/x"


def test_defaults_merge_into_services_and_service_keys_win(tmp_path: Path) -> None:
    plan = load(tmp_path, {
        "defaults": {"restart": {"max_restarts": 9, "backoff_initial": 0.5}, "stop_timeout": 3},
        "services": {"a": {"cmd": "sleep 1", "restart": {"backoff_initial": 2}}, "b": {"cmd": "sleep 1"}},
    })
    a, b = plan.services["a"].spec, plan.services["b"].spec
    assert (a.restart.max_restarts, a.restart.backoff_initial, a.stop_timeout) == (9, 2.0, 3.0)
    assert (b.restart.max_restarts, b.restart.backoff_initial) == (9, 0.5)


def test_child_env_layers_mode_metrics_port_top_env_and_service_env(tmp_path: Path) -> None:
    plan = load(tmp_path, {
        "env": {"PORT": "${PORT:-1}", "URL": "http://h:${PORT}"},
        "services": {"a": {"cmd": "{python} x.py --port ${PORT}", "metrics_port": 9200,
                           "env": {"N": 3, "FLAG": True}, "cwd": "sub",
                           "readiness": {"http": "http://127.0.0.1:{metrics_port}/health"}},
                     "b": {"cmd": "x"}},
    }, env={"PORT": "7", "HOME": "/root", "METRICS_PORT": "1"}, mode="dry")
    a = plan.services["a"]
    assert a.argv == [sys.executable, "x.py", "--port", "7"]
    assert a.env["URL"] == "http://h:7" and a.env["HOME"] == "/root"
    assert a.env["TRADING_MODE"] == "dry" and a.env["METRICS_PORT"] == "9200"
    assert a.env["N"] == "3" and a.env["FLAG"] == "true"
    assert a.env["TRADESTACK_VAR_DIR"] == str((tmp_path / "var").resolve())
    assert a.cwd == PROJECT_ROOT / "sub"
    assert a.url == "http://127.0.0.1:9200/metrics"
    assert "METRICS_PORT" not in plan.services["b"].env  # not inherited from the supervisor


def test_modes_and_enabled_decide_which_services_run(tmp_path: Path) -> None:
    data = {"services": {"p": {"cmd": "x", "modes": ["paper"]}, "l": {"cmd": "x", "modes": ["live"]},
                         "off": {"cmd": "x", "enabled": False}}}
    assert [s.name for s in load(tmp_path, data, mode="paper").enabled()] == ["p"]
    assert [s.name for s in load(tmp_path, data, env={"TRADING_MODE": "live"}).enabled()] == ["l"]
    with pytest.raises(ConfigError, match="TRADING_MODE: must be one of"):
        load(tmp_path, data, env={"TRADING_MODE": "yolo"})


def test_targets_resolve_by_name_then_group(tmp_path: Path) -> None:
    plan = load(tmp_path, {"services": {"a": {"cmd": "x", "group": "g"}, "b": {"cmd": "x", "group": "g"},
                                        "c": {"cmd": "x"}}})
    assert plan.resolve_target("a") == ["a"]
    assert plan.resolve_target("g") == ["a", "b"]
    assert plan.resolve_target("nope") == []


@pytest.mark.parametrize(("data", "expected"), [
    ({"services": {"a": {"cmd": "x", "restrat": {}}}}, "services.a.restrat: unknown key"),
    ({"servics": {}}, "servics: unknown key"),
    ({"services": {"a": {"cmd": "x", "restart": {"policy": "sometimes"}}}}, "services.a.restart.policy: "),
    ({"services": {"a": {"cmd": "x", "restart": {"backoff_initial": 5, "backoff_max": 1}}}},
     "backoff_max must be >= backoff_initial"),
    ({"services": {"a": {"cmd": "x", "readiness": {"tcp": "nohost"}}}}, "services.a.readiness.tcp: "),
    ({"services": {"a": {"cmd": "x", "readiness": {"interval": 1}}}}, "exactly one of tcp, http, command"),
    ({"services": {"a": {"cmd": "x", "readiness": {"tcp": "h:1", "http": "http://h"}}}}, "exactly one"),
    ({"services": {"a": {"cmd": "x", "stop_signal": "SIGNOPE"}}}, "services.a.stop_signal: "),
    ({"services": {"a": {"cmd": "x", "modes": ["paper", "moon"]}}}, "services.a.modes.1: "),
    ({"services": {"a": {"cmd": ""}}}, "services.a.cmd: "),
    ({"services": {"a": {"cmd": "x", "metrics_port": 70000}}}, "services.a.metrics_port: "),
    ({"services": {"a": {"cmd": "x", "depends_on": ["ghost"]}}}, "a.depends_on: unknown service 'ghost'"),
    ({"services": {"a": {"cmd": "x", "depends_on": ["a"]}}}, "a.depends_on: dependency cycle a -> a"),
    ({"services": {"a": {"cmdd": "x"}}}, "services.a.cmdd: unknown key"),
    ({"services": {"a": {"cmd": "x", "depends_on": ["c"]}, "b": {"cmd": "x", "depends_on": ["a"]},
                   "c": {"cmd": "x", "depends_on": ["b"]}}}, "dependency cycle a -> c -> b -> a"),
    ({"services": {"a": {"cmd": "x", "oneshot": True, "restart": {"policy": "always"}}}},
     "services.a.restart.policy: 'always' is not allowed"),
    ({"services": {"a": {"cmd": "x", "oneshot": True, "readiness": {"tcp": "h:1"}}}}, "a.readiness: "),
    ({"services": {"a": {"cmd": "x", "url": "http://h:{metrics_port}"}}}, "a.url: uses {metrics_port}"),
    ({"services": {"a": {"cmd": "${UNSET_VAR}"}}}, "a.cmd: environment variable UNSET_VAR is not set"),
    ({"services": {"bad name": {"cmd": "x"}}}, "services.bad name: name may only use"),
    ({"defaults": {"restart": {"bogus": 1}}, "services": {"a": {"cmd": "x"}}}, "defaults.restart.bogus: "),
    ({"services": {}}, "services: "),
])
def test_bad_config_is_one_line_naming_file_key_and_problem(tmp_path: Path, data: dict[str, Any],
                                                            expected: str) -> None:
    assert expected in config_error(tmp_path, data)


def test_yaml_syntax_error_and_missing_file_are_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "sup.yaml"
    bad.write_text("services: [unclosed\n")
    with pytest.raises(ConfigError, match="syntax error"):
        load_supervisor_config(bad, var_dir=tmp_path, environ={})
    with pytest.raises(ConfigError, match="file not found"):
        load_supervisor_config(tmp_path / "nope.yaml", var_dir=tmp_path, environ={})


def test_dependency_levels_and_cycle_detection() -> None:
    deps = {"db": [], "bus": [], "migrate": ["db"], "app": ["migrate", "bus"], "ui": ["app"]}
    assert dependency_levels(deps) == {"db": 0, "bus": 0, "migrate": 1, "app": 2, "ui": 3}
    assert find_cycle(deps) is None
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["b"]}) == ["b", "c", "b"]


# ----- restart policy ------------------------------------------------------------------------------


def spec(**kw: Any) -> RestartSpec:
    base = {"backoff_initial": 1.0, "backoff_multiplier": 2.0, "backoff_max": 5.0, "max_restarts": 3,
            "window": 60.0, "stable_after": 10.0}
    return RestartSpec(**{**base, **kw})


def test_backoff_grows_exponentially_up_to_the_cap() -> None:
    assert [backoff_delay(spec(), n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_crash_loop_is_failed_after_max_restarts_within_the_window() -> None:
    tracker = RestartTracker(spec())
    decisions = [tracker.on_exit(1, ran_for=0.1, now=t) for t in (0.0, 1.0, 3.0, 7.0)]
    assert [(d.action, d.delay) for d in decisions[:3]] == [("restart", 1.0), ("restart", 2.0),
                                                            ("restart", 4.0)]
    assert decisions[3].action == "failed" and "3 restarts within 60s" in decisions[3].reason


def test_restarts_outside_the_window_do_not_count() -> None:
    tracker = RestartTracker(spec(max_restarts=2, window=10.0))
    assert tracker.on_exit(1, 0.1, now=0.0).action == "restart"
    assert tracker.on_exit(1, 0.1, now=5.0).action == "restart"
    assert tracker.on_exit(1, 0.1, now=20.0).action == "restart"  # the first two left the window


def test_a_stable_run_resets_the_backoff() -> None:
    tracker = RestartTracker(spec(max_restarts=10))
    tracker.on_exit(1, 0.1, now=0.0)
    assert tracker.on_exit(1, 0.1, now=1.0).delay == 2.0
    assert tracker.on_exit(1, ran_for=30.0, now=40.0).delay == 1.0


def test_fatal_exit_codes_fail_at_once_and_reset_allows_a_manual_retry() -> None:
    tracker = RestartTracker(spec())
    d = tracker.on_exit(3, 0.1, now=0.0)
    assert d.action == "failed" and "exit 3: fatal" in d.reason
    assert tracker.on_exit(2, 0.1, now=0.0).action == "failed"
    tracker.reset()
    assert tracker.on_exit(1, 0.1, now=1.0).action == "restart"


@pytest.mark.parametrize(("policy", "oneshot", "code", "action"), [
    ("on-failure", False, 0, "exited"),
    ("on-failure", False, 1, "restart"),
    ("on-failure", False, -9, "restart"),
    ("always", False, 0, "restart"),
    ("never", False, 0, "exited"),
    ("never", False, 1, "failed"),
    ("on-failure", True, 0, "exited"),
    ("on-failure", True, 1, "restart"),
])
def test_restart_policy_decisions(policy: str, oneshot: bool, code: int, action: str) -> None:
    assert RestartTracker(spec(policy=policy), oneshot=oneshot).on_exit(code, 1.0, now=0.0).action == action


def test_readiness_timeout_is_a_failure_even_with_exit_0() -> None:
    d = RestartTracker(spec()).on_exit(0, 1.0, now=0.0, not_ready=True)
    assert d.action == "restart" and d.reason == "readiness timeout"
    assert RestartTracker(spec(policy="never")).on_exit(0, 1.0, 0.0, not_ready=True).action == "failed"


def test_describe_exit() -> None:
    assert describe_exit(0) == "exit 0"
    assert describe_exit(-9) == "signal SIGKILL"


# ----- log rotation --------------------------------------------------------------------------------


def test_log_file_rotates_by_size_and_keeps_n_backups(tmp_path: Path) -> None:
    path = tmp_path / "log" / "svc.log"
    log = RotatingLogFile(path, max_bytes=1024, backups=2)
    for i in range(60):
        log.write(f"line {i:04d} ".encode() + b"x" * 90 + b"\n")
    log.close()
    names = sorted(p.name for p in path.parent.iterdir())
    assert names == ["svc.log", "svc.log.1", "svc.log.2"]
    assert all(p.stat().st_size <= 1024 for p in path.parent.iterdir())
    assert "line 0059" in path.read_text()
    assert "line 0000" not in "".join(p.read_text() for p in path.parent.iterdir())  # oldest dropped


def test_log_file_appends_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "svc.log"
    RotatingLogFile(path, 1 << 20, 1).write(b"first\n")
    log = RotatingLogFile(path, 1 << 20, 1)
    log.note("started")
    log.close()
    text = path.read_text()
    assert text.startswith("first\n") and "--- supervisor: started" in text


# ----- ctl formatting ------------------------------------------------------------------------------


def row(name: str, state: str, ready: bool, enabled: bool = True, **kw: Any) -> dict[str, Any]:
    return {"name": name, "group": "infra", "state": state, "pid": 42 if state == "ready" else None,
            "restarts": 0, "uptime": 75.0 if state == "ready" else None, "url": "tcp://127.0.0.1:1",
            "ready": ready, "enabled": enabled, "detail": "", **kw}


def test_format_duration() -> None:
    assert [format_duration(s) for s in (None, 5, 75, 3725, 90000)] == ["-", "5s", "1m15s", "1h02m", "1d01h"]


def test_status_table_has_the_columns_and_a_summary() -> None:
    reply = {"mode": "paper", "pid": 7, "services": [row("postgres", "ready", True),
                                                     row("kafka", "backoff", False, detail="exit 1")]}
    lines = format_status_table(reply).splitlines()
    assert lines[0].split() == ["NAME", "GROUP", "STATE", "PID", "RESTARTS", "UPTIME", "URL", "DETAIL"]
    assert lines[1].split() == ["postgres", "infra", "ready", "42", "0", "1m15s", "tcp://127.0.0.1:1"]
    assert lines[2].split()[-2:] == ["exit", "1"]
    assert lines[-1] == "mode=paper supervisor_pid=7 ready=1/2"


def test_readiness_verdict() -> None:
    disabled = row("x", "disabled", False, enabled=False)
    assert readiness_verdict({"services": [row("a", "ready", True), disabled]}) == ("ready", [])
    assert readiness_verdict({"services": [row("a", "starting", False)]}) == ("waiting", ["a"])
    assert readiness_verdict({"services": [row("a", "failed", False), row("b", "starting", False)]}) == (
        "failed", ["a"])
    assert readiness_verdict({"services": [row("m", "exited", True, oneshot=True)]}) == ("ready", [])
