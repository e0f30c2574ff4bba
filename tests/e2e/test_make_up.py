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


def test_make_up_status_down_leaves_no_process(tmp_path):
    var_dir = tmp_path / "var"
    env = dict(os.environ)
    for key in ("POSTGRES_DSN", "KAFKA_BOOTSTRAP_SERVERS", "METRICS_PORT"):
        env.pop(key, None)
    env.update({
        "TRADESTACK_VAR_DIR": str(var_dir), "PG_PORT": str(free_port()), "KAFKA_PORT": str(free_port()),
        "SMOKE_METRICS_PORT": str(free_port()), "BAR_BUILDER_METRICS_PORT": str(free_port()),
        "BAR_AGG_1M_METRICS_PORT": str(free_port()), "BAR_AGG_MULTI_METRICS_PORT": str(free_port()),
        "UP_TIMEOUT": "60",
    })
    t0 = time.monotonic()
    up = _make("up", env)
    took = time.monotonic() - t0
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert took < 90, f"make up took {took:.0f}s"
        for name in ("postgres", "kafka", "smoke_producer", "bar_builder_1s"):
            assert name in up.stdout
        status = _make("status", env)
        assert status.returncode == 0
        raw = subprocess.run([str(ROOT / ".venv/bin/python"), "-m", "orchestrator.ctl", "status", "--json"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
        services = json.loads(raw.stdout)["services"]
        states = {s["name"]: s["state"] for s in services}
        for name in ("postgres", "kafka", "smoke_producer"):
            assert states[name] == "ready", states
        pids = [s["pid"] for s in services if s.get("pid")]
        sup = psutil.Process(_supervisor_pid(var_dir))
        family = [sup.pid] + [c.pid for c in sup.children(recursive=True)]
        assert set(pids) <= set(family)
    finally:
        down = _make("down", env)
    assert down.returncode == 0, down.stdout + down.stderr
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(psutil.pid_exists(p) for p in family):
        time.sleep(0.2)
    alive = [p for p in family if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"processes left behind: {alive}"
