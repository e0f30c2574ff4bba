"""Helpers to run the bar pipeline (builder + aggregators) as real processes in tests."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from compute import holds
from compute.bar_store import fetch_bars
from compute.bars import ALL_TFS
from core import bus, codec
from core.db import connect
from core.topics import TICKS, all_topics
from tests.conftest import run_module

BAR_SERVICES = ("compute.bar_builder_1s", "compute.bar_aggregator_1m", "compute.bar_aggregator_1m_to_multi")

#: A sentinel second tick this long after the first closes the first one's 1 m bar by event time.
_SECOND_SENTINEL_MS = 61_000


def service_env_without_wall_knobs(service_env: Mapping[str, str], **extra: str) -> dict[str, str]:
    """The services' environment with every wall-clock knob removed: they run on the shipped defaults."""
    env = {k: v for k, v in service_env.items() if k not in holds.ENV.values() and k != "BAR_HOLD_RULE"}
    env.update(extra)
    return env


def with_sentinels(ticks: Sequence[Mapping[str, Any]], cut_ms: int) -> list[dict[str, Any]]:
    """Two closing ticks per instrument, at ``cut_ms`` and 61 s later, appended after ``ticks``.

    ``cut_ms`` must be at or after the end of every bucket (of every timeframe) holding a tick, and
    a bucket start of every timeframe. Then the first sentinel closes every earlier bucket of its
    instrument by event time at each stage (1 s and 1 m by its bar, 3 m..60 m by its 1 m bar, which
    the second sentinel's 1 s bar closes), so the test needs no short wall-clock knobs to finish;
    bars at or after ``cut_ms`` are the sentinels' own. The sentinels arrive after the last tick.
    """
    last: dict[int, Mapping[str, Any]] = {}
    for t in ticks:
        if t["exchange_ts"] >= cut_ms:
            raise ValueError(f"tick at {t['exchange_ts']} is not before the cut {cut_ms}")
        last[t["instrument_token"]] = t
    arrival = max(t.get("_arrival_ms", t["exchange_ts"]) for t in ticks) + 500
    out = [dict(t) for t in ticks]
    for offset in (0, _SECOND_SENTINEL_MS):
        for _token, t in sorted(last.items()):
            out.append({**t, "exchange_ts": cut_ms + offset, "recv_ts": cut_ms + offset + 5,
                        "_arrival_ms": arrival, "_sentinel": True})
    return out


def sentinel_rows(ticks: Sequence[Mapping[str, Any]], cut_ms: int) -> dict[str, int]:
    """Rows the sentinels themselves produce soon after they arrive: two 1 s bars and one 1 m bar each."""
    n = len({t["instrument_token"] for t in ticks if t["exchange_ts"] < cut_ms})
    return {tf: {"1s": 2 * n, "1m": n}.get(tf, 0) for tf in ALL_TFS}


def split_at(rows: Mapping[str, list[tuple[Any, ...]]], cut_ms: int) -> tuple[dict[str, list[tuple[Any, ...]]],
                                                                              dict[str, list[tuple[Any, ...]]]]:
    """``(before, at_or_after)`` the cut, by bar ``ts`` (row field 2)."""
    before = {tf: [r for r in rs if r[2] < cut_ms] for tf, rs in rows.items()}
    after = {tf: [r for r in rs if r[2] >= cut_ms] for tf, rs in rows.items()}
    return before, after


def live_feed(bootstrap: str, ticks: Sequence[Mapping[str, Any]], done: threading.Event,
              speed: float = 1.0) -> threading.Thread:
    """Produce ``ticks`` paced by their ``_arrival_ms`` (1 s of stream per second at ``speed`` 1) in a thread."""
    def run() -> None:
        producer = bus.Producer(bootstrap)
        t0 = ticks[0]["_arrival_ms"]
        start = time.monotonic()
        for t in ticks:
            wait = (t["_arrival_ms"] - t0) / 1000 / speed - (time.monotonic() - start)
            if wait > 0:
                producer.flush(10)
                time.sleep(wait)
            clean = {k: v for k, v in t.items() if not k.startswith("_")}
            producer.produce(TICKS, codec.dumps(clean), str(clean["instrument_token"]).encode())
        producer.flush(60)
        done.set()

    bus.ensure_topics(bootstrap, all_topics(3))
    thread = threading.Thread(target=run, name="live-feed", daemon=True)
    thread.start()
    return thread


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
