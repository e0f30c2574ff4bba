"""The process supervisor end to end: real processes, throwaway configs, tmp var dirs.

Dummy children are one small Python script (written to tmp) that can listen on
TCP/HTTP, record its name to a file on SIGTERM, ignore SIGTERM, fork a
grandchild, or exit with a given code. The last test runs the real
``postgres`` and ``kafka`` services from ``configs/process_supervisor.yaml``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from core.settings import PROJECT_ROOT
from orchestrator.control import RunPaths, request

PY = sys.executable

CHILD = r'''
import argparse, http.server, os, signal, socket, subprocess, sys, threading, time
p = argparse.ArgumentParser()
p.add_argument("--name", default="child")
p.add_argument("--tcp", type=int)
p.add_argument("--http", type=int)
p.add_argument("--record")
p.add_argument("--exit-after", type=float)
p.add_argument("--exit-code", type=int, default=0)
p.add_argument("--ignore-term", action="store_true")
p.add_argument("--grandchild-pidfile")
p.add_argument("--touch")
a = p.parse_args()

def on_term(signum, frame):
    if a.record:
        with open(a.record, "a") as f:
            f.write(a.name + "\n")
    if not a.ignore_term:
        os._exit(0)

signal.signal(signal.SIGTERM, on_term)
print(f"{a.name} up pid={os.getpid()}", flush=True)
if a.tcp:
    srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", a.tcp)); srv.listen(16)
    threading.Thread(target=lambda: [srv.accept()[0].close() for _ in iter(int, 1)], daemon=True).start()
if a.http:
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()
            self.wfile.write(b"ok")
        def log_message(self, *args):
            pass
    hs = http.server.HTTPServer(("127.0.0.1", a.http), H)
    threading.Thread(target=hs.serve_forever, daemon=True).start()
if a.grandchild_pidfile:
    g = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    open(a.grandchild_pidfile, "w").write(str(g.pid))
if a.touch:
    open(a.touch, "w").close()
if a.exit_after is not None:
    time.sleep(a.exit_after)
    print(f"{a.name} exiting with {a.exit_code}", flush=True)
    sys.exit(a.exit_code)
while True:
    time.sleep(1)
'''


# ----- helpers -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def alive(pid: int) -> bool:
    """True if ``pid`` runs (zombies count as dead: nobody may reap them in a container)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def wait_for(pred: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Stack:
    """A supervisor subprocess on a throwaway config."""

    def __init__(self, tmp: Path, config: dict[str, Any], env: dict[str, str] | None = None) -> None:
        self.tmp = tmp
        self.var = tmp / "var"
        self.paths = RunPaths(self.var)
        self.config_path = tmp / "supervisor.yaml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.env = {**os.environ, "TRADESTACK_VAR_DIR": str(self.var), "TRADING_MODE": "paper", **(env or {})}
        self.out = tmp / f"supervisor-{time.monotonic_ns()}.out"
        with self.out.open("wb") as fh:
            self.proc = subprocess.Popen(
                [PY, "-m", "orchestrator.process_supervisor", "--config", str(self.config_path)],
                cwd=PROJECT_ROOT, env=self.env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        self.seen_pids: set[int] = set()
        wait_for(lambda: self.paths.socket.exists() or self.proc.poll() is not None, 15, "control socket")
        assert self.proc.poll() is None, self.out.read_text()

    def status(self) -> dict[str, dict[str, Any]]:
        reply = request(self.paths.socket, {"cmd": "status"}, timeout=5)
        rows = {s["name"]: s for s in reply["services"]}
        self.seen_pids.update(s["pid"] for s in rows.values() if s["pid"])
        return rows

    def wait_state(self, name: str, state: str, timeout: float = 15.0) -> dict[str, Any]:
        return wait_for(lambda: (row := self.status()[name])["state"] == state and row,
                        timeout, f"{name} -> {state}")

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PY, "-m", "orchestrator.ctl", "--var-dir", str(self.var), *args],
                              cwd=PROJECT_ROOT, env=self.env, capture_output=True, text=True, timeout=timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        for pid in self.seen_pids:  # never leave anything behind, even when a test failed
            if alive(pid):
                os.killpg(pid, signal.SIGKILL)


@pytest.fixture
def child_script(tmp_path: Path) -> Path:
    path = tmp_path / "child.py"
    path.write_text(CHILD)
    return path


@pytest.fixture
def stack_factory(tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    stacks: list[Stack] = []

    def make(config: dict[str, Any], env: dict[str, str] | None = None) -> Stack:
        stacks.append(Stack(tmp_path, config, env))
        return stacks[-1]

    yield make
    for s in stacks:
        s.close()


def svc(child: Path, *args: str, **spec: Any) -> dict[str, Any]:
    """A service entry running the dummy child (ready 0.2 s after start unless it has a probe)."""
    return {"cmd": [PY, str(child), *args], "ready_after": 0.2, **spec}


FAST_RESTART = {"backoff_initial": 0.3, "backoff_multiplier": 2.0, "backoff_max": 5.0, "max_restarts": 5,
                "window": 60, "stable_after": 30}


# ----- readiness, status, logs ---------------------------------------------------------------------


def test_services_become_ready_by_tcp_http_and_command_probes_in_dependency_order(
        stack_factory: Callable[..., Stack], child_script: Path, tmp_path: Path) -> None:
    tcp_port, http_port, flag = free_port(), free_port(), tmp_path / "flag"
    cfg = {"services": {
        "setup": svc(child_script, "--name", "setup", "--exit-after", "0", oneshot=True, group="prep"),
        "tcp_svc": svc(child_script, "--name", "tcp_svc", "--tcp", str(tcp_port), depends_on=["setup"],
                       readiness={"tcp": f"127.0.0.1:{tcp_port}", "interval": 0.05}),
        "http_svc": svc(child_script, "--name", "http_svc", "--http", str(http_port), depends_on=["tcp_svc"],
                        metrics_port=http_port,
                        readiness={"http": "http://127.0.0.1:{metrics_port}/health", "interval": 0.05}),
        "cmd_svc": svc(child_script, "--name", "cmd_svc", "--touch", str(flag),
                       readiness={"command": [PY, "-c", f"import os; assert os.path.exists({str(flag)!r})"],
                                  "interval": 0.05}),
        "off_svc": svc(child_script, modes=["live"]),
    }}
    stack = stack_factory(cfg)

    done = stack.ctl("wait-ready", "--timeout", "30")
    assert done.returncode == 0, done.stderr
    rows = stack.status()
    assert {n: rows[n]["state"] for n in rows} == {
        "setup": "exited", "tcp_svc": "ready", "http_svc": "ready", "cmd_svc": "ready", "off_svc": "disabled"}
    assert rows["tcp_svc"]["started_at"] <= rows["http_svc"]["started_at"]
    assert rows["http_svc"]["url"] == f"http://127.0.0.1:{http_port}/metrics"

    table = stack.ctl("status")
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert lines[0].split()[:7] == ["NAME", "GROUP", "STATE", "PID", "RESTARTS", "UPTIME", "URL"]
    tcp_line = next(line for line in lines if line.startswith("tcp_svc"))
    assert f"tcp://127.0.0.1:{tcp_port}" in tcp_line and " ready " in tcp_line
    assert str(rows["tcp_svc"]["pid"]) in tcp_line
    assert "ready=4/4" in lines[-1]
    as_json = json.loads(stack.ctl("status", "--json").stdout)
    assert {s["name"] for s in as_json["services"]} == set(cfg["services"])

    log = (stack.var / "log" / "http_svc.log").read_text()
    assert "http_svc up pid=" in log and "supervisor: starting:" in log
    assert "setup exiting with 0" in (stack.var / "log" / "setup.log").read_text()


# ----- restarts ------------------------------------------------------------------------------------


def test_child_killed_with_sigkill_is_restarted_with_exponential_backoff(
        stack_factory: Callable[..., Stack], child_script: Path) -> None:
    worker = svc(child_script, "--name", "worker", restart=FAST_RESTART)
    stack = stack_factory({"services": {"worker": worker}})
    first = stack.wait_state("worker", "ready")["pid"]

    killed_at = time.monotonic()
    os.kill(first, signal.SIGKILL)
    second = wait_for(lambda: (r := stack.status()["worker"])["pid"] not in (None, first) and r,
                      10, "restarted worker")
    assert time.monotonic() - killed_at >= 0.3  # the backoff delay
    assert second["restarts"] == 1
    stack.wait_state("worker", "ready")

    os.kill(second["pid"], signal.SIGKILL)
    third = wait_for(lambda: (r := stack.status()["worker"])["state"] == "ready" and r["restarts"] == 2 and r,
                     10, "second restart")
    assert third["pid"] not in (first, second["pid"])
    assert not alive(first) and not alive(second["pid"])
    log = (stack.var / "log" / "worker.log").read_text()
    assert "signal SIGKILL after" in log
    assert log.index("-> restart in 0.3s") < log.index("-> restart in 0.6s")  # exponential backoff


def test_crash_loop_fatal_exit_and_readiness_timeout_fail_only_those_services(
        stack_factory: Callable[..., Stack], child_script: Path) -> None:
    quick = {**FAST_RESTART, "backoff_initial": 0.05, "max_restarts": 2}
    cfg = {"services": {
        "steady": svc(child_script, "--name", "steady"),
        "crasher": svc(child_script, "--exit-after", "0", "--exit-code", "1", restart=quick, ready_after=2.0),
        "fatal": svc(child_script, "--exit-after", "0", "--exit-code", "3", restart=quick),
        "never_ready": svc(child_script, restart={**quick, "max_restarts": 1},
                           readiness={"tcp": f"127.0.0.1:{free_port()}", "timeout": 0.5, "interval": 0.05}),
        "after_crasher": svc(child_script, depends_on=["crasher"]),
    }}
    stack = stack_factory(cfg)
    steady_pid = stack.wait_state("steady", "ready")["pid"]

    crasher = stack.wait_state("crasher", "failed", 15)
    assert crasher["restarts"] == 2 and "2 restarts within 60s" in crasher["detail"]
    fatal = stack.wait_state("fatal", "failed", 10)
    assert fatal["restarts"] == 0 and "exit 3" in fatal["detail"]
    never = stack.wait_state("never_ready", "failed", 15)
    assert never["restarts"] == 1
    assert "not ready after 0.5s" in (stack.var / "log" / "never_ready.log").read_text()

    rows = stack.status()
    assert rows["steady"]["state"] == "ready" and rows["steady"]["pid"] == steady_pid
    assert rows["after_crasher"]["state"] == "waiting"
    waited = stack.ctl("wait-ready", "--timeout", "10")
    assert waited.returncode == 1 and "failed" in waited.stderr


# ----- stopping ------------------------------------------------------------------------------------


def test_sigterm_stops_children_in_reverse_dependency_order_and_leaves_no_process(
        stack_factory: Callable[..., Stack], child_script: Path, tmp_path: Path) -> None:
    record, gpid_file = tmp_path / "stop_order.txt", tmp_path / "grandchild.pid"
    rec = ("--record", str(record))
    cfg = {"services": {
        "base": svc(child_script, "--name", "base", *rec, "--grandchild-pidfile", str(gpid_file)),
        "middle": svc(child_script, "--name", "middle", *rec, depends_on=["base"]),
        "top": svc(child_script, "--name", "top", *rec, depends_on=["middle"]),
        "stubborn": svc(child_script, "--name", "stubborn", "--ignore-term", *rec, depends_on=["middle"],
                        stop_timeout=0.5),
    }}
    stack = stack_factory(cfg)
    assert stack.ctl("wait-ready", "--timeout", "30").returncode == 0
    pids = [r["pid"] for r in stack.status().values()]
    grandchild = int(wait_for(lambda: gpid_file.exists() and gpid_file.read_text(), 5, "grandchild pid"))
    assert alive(grandchild)

    stack.proc.send_signal(signal.SIGTERM)
    assert stack.proc.wait(30) == 0

    order = record.read_text().split()
    assert sorted(order) == ["base", "middle", "stubborn", "top"]
    assert order.index("top") < order.index("middle") < order.index("base")
    assert order.index("stubborn") < order.index("middle")
    assert [p for p in [*pids, grandchild] if alive(p)] == []
    assert not stack.paths.socket.exists() and not stack.paths.pid_file.exists()
    assert "SIGKILL" in (stack.var / "log" / "stubborn.log").read_text()


def test_restart_group_changes_only_that_groups_pids_and_ctl_stop_cleans_up(
        stack_factory: Callable[..., Stack], child_script: Path) -> None:
    cfg = {"services": {
        "a1": svc(child_script, group="alpha"),
        "a2": svc(child_script, group="alpha", depends_on=["a1"]),
        "b1": svc(child_script, group="beta"),
    }}
    stack = stack_factory(cfg)
    assert stack.ctl("ping").returncode == 0
    assert stack.ctl("wait-ready", "--timeout", "30").returncode == 0
    before = {n: r["pid"] for n, r in stack.status().items()}

    out = stack.ctl("restart", "alpha")
    assert out.returncode == 0 and out.stdout.strip() == "restarted: a1, a2"
    assert stack.ctl("wait-ready", "--timeout", "30").returncode == 0
    after = stack.status()
    assert after["a1"]["pid"] != before["a1"] and after["a2"]["pid"] != before["a2"]
    assert after["b1"]["pid"] == before["b1"]
    assert after["a1"]["restarts"] == 1 and after["b1"]["restarts"] == 0
    assert not alive(before["a1"]) and not alive(before["a2"])

    unknown = stack.ctl("restart", "nope")
    assert unknown.returncode == 1 and "unknown service or group 'nope'" in unknown.stderr

    stopped = stack.ctl("stop", "--timeout", "30")
    assert stopped.returncode == 0, stopped.stderr
    assert stack.proc.wait(5) == 0
    assert [p for p in stack.seen_pids if alive(p)] == []
    assert stack.ctl("stop").returncode == 0  # idempotent when nothing runs
    assert stack.ctl("status").returncode == 1
    assert stack.ctl("ping").returncode == 1


def test_children_of_a_sigkilled_supervisor_are_killed_by_the_next_one(
        stack_factory: Callable[..., Stack], child_script: Path) -> None:
    cfg = {"services": {"a": svc(child_script), "b": svc(child_script, depends_on=["a"])}}
    first = stack_factory(cfg)
    assert first.ctl("wait-ready", "--timeout", "30").returncode == 0
    old = [r["pid"] for r in first.status().values()]
    first.proc.kill()
    first.proc.wait(5)
    assert all(alive(p) for p in old)  # own sessions: they outlive a SIGKILLed supervisor

    second = stack_factory(cfg)
    assert second.ctl("wait-ready", "--timeout", "30").returncode == 0
    assert [p for p in old if alive(p)] == []
    assert "killed leftovers of a previous supervisor services=a,b" in second.out.read_text()
    assert set(old).isdisjoint(r["pid"] for r in second.status().values())


# ----- config errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(("services", "expected"), [
    ({"a": {"cmd": "true", "restrat": {}}}, "services.a.restrat: unknown key"),
    ({"a": {"cmd": "true", "restart": {"policy": "sometimes"}}}, "services.a.restart.policy:"),
    ({"a": {"cmd": "true", "depends_on": ["ghost"]}}, "services.a.depends_on: unknown service 'ghost'"),
    ({"a": {"cmd": "true", "depends_on": ["b"]}, "b": {"cmd": "true", "depends_on": ["a"]}},
     "dependency cycle a -> b -> a"),
])
def test_bad_config_exits_2_with_one_line_naming_file_and_key(tmp_path: Path, services: dict[str, Any],
                                                               expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"services": services}))
    res = subprocess.run([PY, "-m", "orchestrator.process_supervisor", "--config", str(path)],
                         cwd=PROJECT_ROOT, env={**os.environ, "TRADESTACK_VAR_DIR": str(tmp_path / "var")},
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"{path}: ") and expected in lines[0]
    assert not (tmp_path / "var" / "run" / "supervisor.sock").exists()


def test_help_works_for_supervisor_and_ctl() -> None:
    for module in ("orchestrator.process_supervisor", "orchestrator.ctl"):
        res = subprocess.run([PY, "-m", module, "--help"], cwd=PROJECT_ROOT, capture_output=True, text=True)
        assert res.returncode == 0 and "usage:" in res.stdout


# ----- the real infra services ---------------------------------------------------------------------


@pytest.mark.integration
def test_real_postgres_and_kafka_become_ready_and_stop_leaves_nothing(
        stack_factory: Callable[..., Stack], tmp_path: Path) -> None:
    real = yaml.safe_load((PROJECT_ROOT / "configs" / "process_supervisor.yaml").read_text())
    real["services"] = {k: v for k, v in real["services"].items() if k in ("postgres", "kafka")}
    pg_port, kafka_port = free_port(), free_port()
    stack = stack_factory(real, env={"PG_PORT": str(pg_port), "KAFKA_PORT": str(kafka_port),
                                     "TRADESTACK_EMBEDDED_PG": "true", "TRADESTACK_EMBEDDED_KAFKA": "true"})

    ready = stack.ctl("wait-ready", "--timeout", "60", timeout=90)
    assert ready.returncode == 0, ready.stderr + stack.out.read_text()
    rows = stack.status()
    pg_pid = rows["postgres"]["pid"]
    assert psutil.Process(pg_pid).name() == "postgres"  # exec'd: the supervised pid is the postmaster
    assert psutil.Process(rows["kafka"]["pid"]).name() == "tansu"
    tree = [pg_pid, rows["kafka"]["pid"], *(c.pid for c in psutil.Process(pg_pid).children(recursive=True))]

    import psycopg

    dsn = f"postgresql://tradestack@127.0.0.1:{pg_port}/tradestack"
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        assert conn.execute("select current_database()").fetchone() == ("tradestack",)
    with socket.create_connection(("127.0.0.1", kafka_port), timeout=5):
        pass

    stopped = stack.ctl("stop", "--timeout", "60", timeout=90)
    assert stopped.returncode == 0, stopped.stderr
    assert [p for p in tree if alive(p)] == []
    assert "database system is shut down" in (stack.var / "log" / "postgres.log").read_text()
