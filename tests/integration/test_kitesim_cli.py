"""``python -m kitesim``: help, one-line usage errors (exit 2), readiness, SIGTERM exit 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from kiteconnect import KiteConnect

from kitesim.testing import PROJECT_ROOT, control, spawn_simulator


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kitesim", *args], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=30)


def test_help_exits_zero() -> None:
    done = run_cli("--help")

    assert done.returncode == 0
    assert "--ws-port" in done.stdout and "--token-expires-after" in done.stdout


@pytest.mark.parametrize("args", [
    [],
    ["--ws-port", "1", "--http-port", "2"],
    ["--ws-port", "x", "--http-port", "2", "--seed", "1"],
    ["--ws-port", "70000", "--http-port", "2", "--seed", "1"],
    ["--ws-port", "5", "--http-port", "5", "--seed", "1"],
    ["--ws-port", "0", "--http-port", "0", "--seed", "1", "--speed", "0"],
    ["--ws-port", "0", "--http-port", "0", "--seed", "1", "--tokens", "/nonexistent.csv"],
    ["--ws-port", "0", "--http-port", "0", "--seed", "1", "--start", "yesterday"],
])
def test_bad_arguments_exit_2_with_one_line(args: list[str]) -> None:
    done = run_cli(*args)

    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "error" in done.stderr


def test_bad_universe_file_exits_2_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "tokens.csv"
    bad.write_text("instrument_token,exchange_token\n1,2\n")

    done = run_cli("--ws-port", "0", "--http-port", "0", "--seed", "1", "--tokens", str(bad))

    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{bad}:2" in lines[0]


def test_subprocess_serves_and_stops_cleanly_on_sigterm() -> None:
    proc = spawn_simulator("--seed", "9", "--speed", "5")
    try:
        health = control(proc.http_url, "/_sim/health")
        kite = KiteConnect(api_key="sim", access_token="sim-token", root=proc.http_url)
        ltp = kite.ltp("NSE:RELIANCE")
    finally:
        code = proc.stop()

    assert health["status"] == "ok" and health["ws_port"] == proc.ws_port and health["speed"] == 5.0
    assert ltp["NSE:RELIANCE"]["instrument_token"] == 738561
    assert code == 0
    assert not any("Traceback" in line for line in proc.stderr_lines)
