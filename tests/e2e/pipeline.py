"""Helpers to run the bar pipeline (builder + aggregators) as real processes in tests."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from compute.bar_store import fetch_bars
from compute.bars import ALL_TFS
from core import bus, codec
from core.db import connect
from core.topics import TICKS, all_topics
from tests.conftest import run_module

BAR_SERVICES = ("compute.bar_builder_1s", "compute.bar_aggregator_1m", "compute.bar_aggregator_1m_to_multi")


def start_service(module: str, env: dict[str, str], log_dir: Path) -> subprocess.Popen[bytes]:
    """Start one bar service with its log in ``log_dir``."""
    return run_module(module, env, log_path=log_dir / f"{module.rsplit('.', 1)[1]}.log")


def produce_ticks(bootstrap: str, ticks: Iterable[Mapping[str, Any]], partitions: int = 3) -> int:
    """Produce ticks keyed by instrument_token (internal ``_`` fields stripped)."""
    bus.ensure_topics(bootstrap, all_topics(partitions))
    p = bus.Producer(bootstrap)
    n = 0
    for t in ticks:
        clean = {k: v for k, v in t.items() if not k.startswith("_")}
        p.produce(TICKS, codec.dumps(clean), str(clean["instrument_token"]).encode())
        n += 1
    p.flush(60)
    return n


def db_rows(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every bar in Postgres as ``{tf: [row tuples]}`` (the reference's format)."""
    with connect(dsn) as conn:
        return {tf: [b.to_row() for b in fetch_bars(conn, tf)] for tf in ALL_TFS}


def wait_for_rows(dsn: str, expected: Mapping[str, int], timeout: float,
                  procs: Mapping[str, subprocess.Popen[bytes]] | None = None) -> dict[str, int]:
    """Poll until every ``bars_<tf>`` has at least the expected row count; returns the last counts."""
    deadline = time.monotonic() + timeout
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        with connect(dsn) as conn:
            counts = {tf: int(conn.execute(f"SELECT count(*) FROM bars_{tf}").fetchone()[0])  # type: ignore[index]
                      for tf in expected}
        if all(counts[tf] >= n for tf, n in expected.items()):
            return counts
        for name, p in (procs or {}).items():
            if p.poll() is not None:
                raise AssertionError(f"{name} exited with {p.returncode}")
        time.sleep(0.5)
    return counts


def stop_all(procs: Mapping[str, subprocess.Popen[bytes]], timeout: float = 20.0) -> dict[str, int | None]:
    """SIGTERM every process and wait; returns exit codes."""
    for p in procs.values():
        if p.poll() is None:
            p.terminate()
    codes: dict[str, int | None] = {}
    for name, p in procs.items():
        try:
            codes[name] = p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            codes[name] = None
    return codes
