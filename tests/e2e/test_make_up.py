"""The operator path: `make up` / `make status` / `make down` on the real config.

Runs in a temp var dir on free ports, so it never touches a developer's stack.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import psutil
import pytest

from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.e2e


def _make(target: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "--no-print-directory", target], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _supervisor_pid(var_dir) -> int:  # type: ignore[no-untyped-def]
    return int((var_dir / "run" / "supervisor.pid").read_text().split()[0])


def _stack_env(var_dir) -> dict[str, str]:  # type: ignore[no-untyped-def]
    env = dict(os.environ)
    for key in ("POSTGRES_DSN", "KAFKA_BOOTSTRAP_SERVERS", "METRICS_PORT", "KITE_ROOT", "KITE_WS_ROOT"):
        env.pop(key, None)
    ports = ("PG_PORT", "KAFKA_PORT", "KITESIM_HTTP_PORT", "KITESIM_WS_PORT", "SMOKE_METRICS_PORT",
             "ZERODHA_WS_METRICS_PORT", "BAR_BUILDER_METRICS_PORT", "BAR_AGG_1M_METRICS_PORT",
             "BAR_AGG_MULTI_METRICS_PORT", "STRATEGY_RUNNER_METRICS_PORT", "RISK_MANAGER_METRICS_PORT",
             "BUDGET_GUARD_METRICS_PORT", "PAPER_GATEWAY_METRICS_PORT")
    env.update({p: str(free_port()) for p in ports})
    env.update({"TRADESTACK_VAR_DIR": str(var_dir), "UP_TIMEOUT": "60"})
    return env


def _count(env: dict[str, str], table: str) -> int:
    import psycopg

    dsn = f"postgresql://tradestack@127.0.0.1:{env['PG_PORT']}/tradestack"
    with psycopg.connect(dsn) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]


def _decided(env: dict[str, str]) -> list[tuple]:  # type: ignore[type-arg]
    """Orders past NEW: (status, qty, risk, budget, status_detail)."""
    import psycopg

    dsn = f"postgresql://tradestack@127.0.0.1:{env['PG_PORT']}/tradestack"
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT status, qty, risk, budget, status_detail FROM orders "
                            "WHERE status <> 'NEW'").fetchall()


def _paper_positions(env: dict[str, str]) -> list[tuple]:  # type: ignore[type-arg]
    """(strategy, token, net_qty, avg_price, signed paper fill qty) of the positions paper fills made."""
    import psycopg

    dsn = f"postgresql://tradestack@127.0.0.1:{env['PG_PORT']}/tradestack"
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT p.strategy, p.instrument_token, p.net_qty, p.avg_price, "
            "sum(CASE WHEN f.side = 'BUY' THEN f.qty ELSE -f.qty END) FROM position_pnl p "
            "JOIN fills f ON f.strategy = p.strategy AND f.instrument_token = p.instrument_token "
            "AND f.venue = 'paper' GROUP BY 1, 2, 3, 4").fetchall()


def _open_book(env: dict[str, str]) -> tuple[int, int]:
    """(orders working at a venue or on their way to one, positions not flat)."""
    import psycopg

    dsn = f"postgresql://tradestack@127.0.0.1:{env['PG_PORT']}/tradestack"
    with psycopg.connect(dsn) as conn:
        working = conn.execute("SELECT count(*) FROM orders WHERE status IN ('ALLOWED', 'SUBMITTED', 'OPEN', "
                               "'PARTIALLY_FILLED', 'CANCEL_REQUESTED')").fetchone()[0]  # type: ignore[index]
        open_pos = conn.execute("SELECT count(*) FROM positions WHERE net_qty <> 0").fetchone()[0]  # type: ignore[index]
        return int(working), int(open_pos)


def session_now_config(tmp_path) -> str:  # type: ignore[no-untyped-def]
    """A copy of configs/ whose NSE/BSE calendars hold a special session around now (IST).

    With it and kitesim at 60x from now, the strategies' 1 m indicators warm within seconds and
    their entries fall inside a session whatever the wall time of the test. (kitesim cannot start
    in a past session: the bar services close quiet bars by the wall clock, which would see every
    past bucket as long over; nor far ahead: the plausibility window is at most a day.)
    """
    import shutil
    from datetime import datetime, timedelta

    import yaml

    from core.clock import IST

    cfg = tmp_path / "configs"
    shutil.copytree(ROOT / "configs", cfg)
    doc = yaml.safe_load((cfg / "sessions.yaml").read_text())
    now = datetime.now(IST).replace(second=0, microsecond=0)
    opens = now - timedelta(minutes=10)
    if opens.date() != now.date():
        opens = now.replace(hour=0, minute=0)
    end = now + timedelta(hours=5)
    days = [(opens.date(), opens.strftime("%H:%M"), "24:00" if end.date() != now.date() else end.strftime("%H:%M"))]
    if end.date() != now.date():
        days.append((end.date(), "00:00", end.strftime("%H:%M")))
    for ex in ("NSE", "BSE"):
        specials = doc["exchanges"][ex].setdefault("special_sessions", [])
        specials[:] = [s for s in specials if s["date"] not in {d for d, _, _ in days}]
        specials += [{"date": d, "name": "e2e session", "open": o, "close": c} for d, o, c in days]
    (cfg / "sessions.yaml").write_text(yaml.safe_dump(doc))
    return str(cfg)


@pytest.mark.parametrize("target,feed", [("up", "zerodha_ws"), ("up-smoke", "smoke_producer")])
def test_make_up_status_down_leaves_no_process(tmp_path, target, feed):
    var_dir = tmp_path / "var"
    env = _stack_env(var_dir)
    if feed == "zerodha_ws":
        env.update({"TRADESTACK_CONFIG_DIR": session_now_config(tmp_path), "KITESIM_ARGS": "--speed 60"})
    t0 = time.monotonic()
    up = _make(target, env)
    took = time.monotonic() - t0
    family: list[int] = []
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert took < 60, f"make {target} took {took:.0f}s"
        for name in ("postgres", "kafka", feed, "bar_builder_1s"):
            assert name in up.stdout
        status = _make("status", env)
        assert status.returncode == 0
        raw = subprocess.run([str(ROOT / ".venv/bin/python"), "-m", "orchestrator.ctl", "status", "--json"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
        services = json.loads(raw.stdout)["services"]
        states = {s["name"]: s["state"] for s in services}
        for name in ("postgres", "kafka", feed, "bar_builder_1s", "bar_aggregator_1m", "strategy_runner",
                     "risk_manager", "order_budget_guard", "paper_gateway"):
            assert states[name] == "ready", states
        pids = [s["pid"] for s in services if s.get("pid")]
        sup = psutil.Process(_supervisor_pid(var_dir))
        family = [sup.pid] + [c.pid for c in sup.children(recursive=True)]
        assert set(pids) <= set(family)
        # market data flows through the whole chain into Postgres
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and _count(env, "bars_1s") == 0:
            time.sleep(1)
        assert _count(env, "bars_1s") > 0, "no 1s bars reached Postgres"
        if feed == "zerodha_ws":
            # ... and on into the strategies and the risk services: orders from kitesim's market, sized on
            # kitesim's margins and allowed, or rejected with a reason
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not {r[0] for r in _decided(env)} & {"ALLOWED", "REJECTED_BUDGET"}:
                time.sleep(2)
            decided = _decided(env)
            assert decided, f"no order got a risk decision (orders: {_count(env, 'orders')})"
            # both services decided: at least one order went through the manager into the guard's hands
            assert {s for s, *_ in decided} & {"ALLOWED", "REJECTED_BUDGET"}, [r[0] for r in decided]
            for status, qty, risk, budget, detail in decided:
                if status == "REJECTED_RISK":
                    assert risk["reason"] and detail, (status, risk, detail)
                elif status == "REJECTED_BUDGET":
                    assert budget["reason"] and detail, (status, budget, detail)
                elif risk.get("sizing") == "exit":  # an exit keeps its quantity (the paper fills made positions)
                    assert qty > 0 and risk["sizing_source"] in ("broker", "fallback", "n/a"), (status, qty, risk)
                else:
                    assert qty > 0 and risk["sizing_source"] in ("broker", "fallback"), (status, qty, risk)
                    if status != "SIZED":
                        assert budget["decision"] == "allowed", (status, budget)
            # ... and the paper gateway fills the allowed orders against kitesim's market: fills come back
            # as positions (with their average price) that risk and recon read
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and not _paper_positions(env):
                time.sleep(2)
            positions = _paper_positions(env)
            assert positions, f"no paper fill became a position (orders: {[r[0] for r in _decided(env)]})"
            for strategy, token, net, avg, signed_fills in positions:  # the position is its fills, signed
                assert net == signed_fills and (net == 0 or avg > 0), (strategy, token, net, avg, signed_fills)
            # the panic button: kill switch on, every open order cancelled, every position exited (paper venue)
            wiring = {"POSTGRES_DSN": f"postgresql://tradestack@127.0.0.1:{env['PG_PORT']}/tradestack",
                      "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{env['KAFKA_PORT']}"}
            flat = _make("flatten", {**env, **wiring}, timeout=120)
            assert flat.returncode == 0 and "kill switch ON" in flat.stdout, flat.stdout + flat.stderr
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and _open_book(env) != (0, 0):
                time.sleep(1)
            assert _open_book(env) == (0, 0), (_open_book(env), flat.stdout)
    finally:
        down = _make("down", env)
    assert down.returncode == 0, down.stdout + down.stderr
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(psutil.pid_exists(p) for p in family):
        time.sleep(0.2)
    alive = [p for p in family if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"processes left behind: {alive}"


def test_make_up_fails_fast_with_the_failing_service_log(tmp_path):
    var_dir = tmp_path / "var"
    cfg = tmp_path / "sup.yaml"
    cfg.write_text(
        "services:\n"
        "  broken:\n"
        "    cmd: \"{python} -c \\\"import sys; print('boom marker: cannot connect'); sys.exit(1)\\\"\"\n"
        "    restart: {max_restarts: 1, backoff_initial: 0.1}\n"
    )
    env = _stack_env(var_dir)
    env["CONFIG"] = str(cfg)
    up = _make("up", env, timeout=120)
    try:
        assert up.returncode != 0
        assert "broken" in up.stderr and "failed" in up.stderr
        assert "boom marker: cannot connect" in up.stderr, up.stderr
    finally:
        _make("down", env)
