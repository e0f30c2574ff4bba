"""Helpers for tests that run kitesim and the ingestion service as subprocesses."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from tests.conftest import ROOT, free_port

TOKENS_CSV = ROOT / "configs" / "tokens.csv"


def write_universe(path: Path, n: int, skip_indices: bool = False) -> list[int]:
    """The first ``n`` rows of configs/tokens.csv into ``path``; returns their tokens."""
    lines = TOKENS_CSV.read_text().splitlines()
    rows = [ln for ln in lines[1:] if not (skip_indices and ",INDICES," in ln)][:n]
    path.write_text("\n".join([lines[0], *rows]) + "\n")
    return [int(r.split(",", 1)[0]) for r in rows]


def http_json(url: str, body: dict[str, Any] | None = None, timeout: float = 5.0) -> Any:
    """GET (or POST ``body``) a JSON endpoint."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - loopback test servers
        return json.loads(r.read())


class KiteSim:
    """A kitesim subprocess on fixed ports (so it can be killed and restarted in place)."""

    def __init__(self, tokens: Path, log_path: Path, seed: int = 7, *extra: str) -> None:
        self.ws_port, self.http_port = free_port(), free_port()
        self.tokens, self.log_path, self.seed, self.extra = tokens, log_path, seed, extra
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def ws_root(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}"

    @property
    def rest_root(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 20.0) -> float:
        """Start and wait for ``/_sim/health``; returns the time it became ready."""
        out = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kitesim", "--ws-port", str(self.ws_port), "--http-port", str(self.http_port),
             "--seed", str(self.seed), "--tokens", str(self.tokens), *self.extra],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kitesim exited {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
            try:
                if http_json(self.rest_root + "/_sim/health", timeout=1.0).get("status") == "ok":
                    return time.monotonic()
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError("kitesim not ready")

    def get(self, path: str) -> Any:
        return http_json(self.rest_root + path)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return http_json(self.rest_root + path, body)

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: no close frames, the kernel resets the sockets."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> int | None:
    """SIGTERM, wait, SIGKILL if needed; returns the exit code."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


def start_service(module: str, env: dict[str, str], log_path: Path, service: str,
                  timeout: float = 60.0) -> tuple[subprocess.Popen[bytes], int]:
    """``python -m module`` on a free metrics port, once its ``tradestack_<service>_up`` gauge is 1."""
    from tests.conftest import run_module

    port = free_port()
    proc = run_module(module, {**env, "METRICS_PORT": str(port)}, log_path=log_path)
    wait_for(lambda: scrape(port).get(f"tradestack_{service}_up") == 1.0, timeout, 0.2, f"{service} up")
    return proc, port


def scrape(port: int) -> dict[str, float]:
    """Prometheus text from 127.0.0.1:port/metrics as {name{labels}: value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as r:  # noqa: S310
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def metric_sum(metrics: dict[str, float], prefix: str) -> float:
    """Sum of every series whose name (before labels) is ``prefix``."""
    return sum(v for k, v in metrics.items() if k == prefix or k.startswith(prefix + "{"))


def wait_for(cond: Any, timeout: float, interval: float = 0.1, what: str = "condition") -> float:
    """Poll ``cond()`` until truthy; returns the elapsed seconds (TimeoutError otherwise)."""
    t0 = time.monotonic()
    last_exc: Exception | None = None
    while time.monotonic() - t0 < timeout:
        try:
            if cond():
                return time.monotonic() - t0
        except OSError as exc:  # endpoint not up yet
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(f"{what} not met within {timeout}s (last error: {last_exc})")


def read_topic(bootstrap: str, topic: str, idle: float = 2.0, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Every message of ``topic`` (all partitions, from the beginning) until ``idle`` s without news.

    Uses ``assign`` (no group join, which is slow on the embedded broker).
    """
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False, "fetch.wait.max.ms": 50})
    try:
        md = c.list_topics(topic, timeout=10)
        parts = sorted(md.topics[topic].partitions)
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        out: list[dict[str, Any]] = []
        t0 = last = time.monotonic()
        while time.monotonic() - last < idle and time.monotonic() - t0 < timeout:
            msgs = c.consume(10_000, 0.2)
            for m in msgs:
                if m.error() is None:
                    out.append(json.loads(m.value()))
            if msgs:
                last = time.monotonic()
        return out
    finally:
        c.close()


def is_subsequence(sub: list[Any], seq: list[Any]) -> bool:
    """True when ``sub`` appears in ``seq`` in order (gaps allowed)."""
    it = iter(seq)
    return all(any(x == y for y in it) for x in sub)
