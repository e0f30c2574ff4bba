"""Helpers to run kitesim from tests: in-process (a thread) or as a subprocess, on free ports.

In-process (fast; the REST API and the ticker are real sockets)::

    with running_simulator(seed=7) as sim:
        kite = KiteConnect("sim", access_token="sim-token", root=sim.http_url)
        ...

Subprocess (what the supervisor runs)::

    proc = spawn_simulator("--seed", "7")
    try: ... proc.http_url, proc.ws_url ...
    finally: proc.stop()          # SIGTERM, returns the exit code

Control endpoints (``/_sim/health``, ``/_sim/stats``, ``/_sim/ticks``,
``/_sim/faults``, ``/_sim/session``) via :func:`control`, e.g. to assert that a
client paced itself: ``control(url, "/_sim/stats")["rate_limited"]["orders"] == 0``.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from kitesim.server import RunningSimulator, SimConfig, start_in_thread

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def running_simulator(**overrides: Any) -> Iterator[RunningSimulator]:
    """A simulator on free ports in a background thread (``SimConfig`` fields as keywords)."""
    sim = start_in_thread(SimConfig(**overrides))
    try:
        yield sim
    finally:
        sim.stop()


def control(base_url: str, path: str, body: dict[str, Any] | None = None, method: str | None = None,
            timeout: float = 5.0) -> Any:
    """Call a ``/_sim/*`` endpoint; returns the decoded JSON."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base_url.rstrip("/") + path, data=data,  # noqa: S310 - http(s) test URLs
                                 method=method or ("POST" if data else "GET"),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback test helper
        return json.loads(resp.read())


def fresh_client(base_url: str) -> Any:
    """A ``KiteConnect`` on the simulator with its faults cleared and rate limits off (one test's start)."""
    from kiteconnect import KiteConnect  # noqa: PLC0415

    control(base_url, "/_sim/faults", method="DELETE")
    control(base_url, "/_sim/faults", {"rate_limits": False})
    return KiteConnect(api_key="sim", access_token="sim-token", root=base_url)  # noqa: S106 (the simulator's token)


def place_market(kite: Any, **kw: object) -> str:
    """``place_order`` of 1 RELIANCE MIS MARKET BUY with automatic market protection; ``kw`` overrides."""
    params: dict[str, object] = dict(variety="regular", exchange="NSE", tradingsymbol="RELIANCE",
                                     transaction_type="BUY", quantity=1, product="MIS", order_type="MARKET",
                                     market_protection=-1)
    params.update(kw)
    return str(kite.place_order(**params))


class SimProcess:
    """A ``python -m kitesim`` child process."""

    def __init__(self, popen: subprocess.Popen[str], http_port: int, ws_port: int,
                 stderr_lines: list[str]) -> None:
        self.popen = popen
        self.http_port = http_port
        self.ws_port = ws_port
        self.stderr_lines = stderr_lines

    @property
    def http_url(self) -> str:
        """REST root."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def ws_url(self) -> str:
        """Ticker root."""
        return f"ws://127.0.0.1:{self.ws_port}"

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait; returns the exit code (kills after ``timeout``)."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode


def _pump(stream: IO[str], sink: queue.Queue[str] | list[str]) -> None:
    for line in stream:
        if isinstance(sink, list):
            sink.append(line.rstrip("\n"))
        else:
            sink.put(line)


def spawn_simulator(*args: str, timeout: float = 20.0, env: dict[str, str] | None = None) -> SimProcess:
    """Start ``python -m kitesim --ws-port 0 --http-port 0 [args]`` and wait for its ready line.

    Pass ``--seed`` in ``args`` (default seed 1 is added when absent).
    """
    argv = [sys.executable, "-m", "kitesim", "--ws-port", "0", "--http-port", "0", *args]
    if "--seed" not in args:
        argv += ["--seed", "1"]
    popen = subprocess.Popen(argv, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True,
                             env={**os.environ, **(env or {})})
    assert popen.stdout is not None and popen.stderr is not None
    lines: queue.Queue[str] = queue.Queue()
    errors: list[str] = []
    threading.Thread(target=_pump, args=(popen.stdout, lines), daemon=True).start()
    threading.Thread(target=_pump, args=(popen.stderr, errors), daemon=True).start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.1)
        except queue.Empty:
            if popen.poll() is not None:
                break
            continue
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("event") == "ready":
            return SimProcess(popen, int(msg["http_port"]), int(msg["ws_port"]), errors)
    popen.kill()
    popen.wait()
    raise RuntimeError(f"kitesim did not start (rc={popen.returncode}): {' | '.join(errors[-5:])}")
