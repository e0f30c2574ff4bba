"""Helpers to run the bar pipeline (builder + aggregators) as real processes in tests."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from compute import holds
from compute.bar_store import fetch_bars
from compute.bars import ALL_TFS, bucket_bounds
from compute.sessions import NSE
from core import bus, codec
from core.db import connect
from core.topics import TICKS, all_topics
from tests.conftest import ROOT, run_module

BAR_SERVICES = ("compute.bar_builder_1s", "compute.bar_aggregator_1m", "compute.bar_aggregator_1m_to_multi")

#: Sentinel ticks, per instrument, this long after the cut: the first lies in the 1 m bucket that
#: starts at the cut and its 1 s bar ends that bucket; the second closes that 1 s bar by event time.
SENTINEL_OFFSETS_MS = (59_000, 62_000)


def base_service_env() -> dict[str, str]:
    """The ``service_env`` fixture's environment without its broker (for module-scoped fixtures)."""
    env = dict(os.environ)
    env.update({"PYTHONPATH": str(ROOT), "KAFKA_PARTITIONS": "3", "METRICS_PORT": "0", "PYTHONUNBUFFERED": "1"})
    return env


def selected_engines(request: Any, test_name: str) -> list[str]:
    """The ``engine`` params of ``test_name``'s items this session runs (a module fixture that runs
    every engine's scenario side by side starts only the ones selected, e.g. with ``-k python``)."""
    return sorted({item.callspec.params["engine"] for item in request.session.items
                   if getattr(item, "originalname", None) == test_name and hasattr(item, "callspec")
                   and item.module is request.module})


def service_env_without_wall_knobs(service_env: Mapping[str, str], **extra: str) -> dict[str, str]:
    """The services' environment with every wall-clock knob removed: they run on the shipped defaults."""
    env = {k: v for k, v in service_env.items() if k not in holds.ENV.values() and k != "BAR_HOLD_RULE"}
    env.update(extra)
    return env


def with_sentinels(ticks: Sequence[Mapping[str, Any]], cut_ms: int) -> tuple[list[dict[str, Any]], int]:
    """``ticks`` plus two closing ticks per instrument (:data:`SENTINEL_OFFSETS_MS` after ``cut_ms``).

    ``cut_ms`` must be a whole minute after every tick. Every stage then closes, by event time, each
    bucket of the instrument that ends by ``settle = cut_ms + 60 s``: the builder on the second
    sentinel, the 1 m aggregator on the first sentinel's 1 s bar (its 1 m bucket is the one starting
    at the cut), the multi aggregator on that 1 m bar. So a test waits seconds, not the wall-clock
    defaults, for those buckets. The sentinels arrive 300 ms after the last tick, and take part in
    the reference like any tick. Returns ``(ticks, settle)``.
    """
    if cut_ms % 60_000:
        raise ValueError("the cut must be a whole minute")
    last: dict[int, Mapping[str, Any]] = {}
    for t in ticks:
        if t["exchange_ts"] >= cut_ms:
            raise ValueError(f"tick at {t['exchange_ts']} is not before the cut {cut_ms}")
        last[t["instrument_token"]] = t
    arrival = max(t.get("_arrival_ms", t["exchange_ts"]) for t in ticks) + 300
    out = [dict(t) for t in ticks]
    for offset in SENTINEL_OFFSETS_MS:
        for _token, t in sorted(last.items()):
            out.append({**t, "exchange_ts": cut_ms + offset, "recv_ts": cut_ms + offset + 5,
                        "_arrival_ms": arrival, "_sentinel": True})
    return out, cut_ms + 60_000


def bucket_end(row: tuple[Any, ...]) -> int:
    """End (epoch ms) of a bar row's bucket (``(token, tf, ts, ...)``), NSE-anchored for 3 m..60 m."""
    return bucket_bounds(row[2], row[1], NSE)[1]


def closed_by(rows: Mapping[str, list[tuple[Any, ...]]], settle_ms: int) -> dict[str, list[tuple[Any, ...]]]:
    """The rows whose bucket ends by ``settle_ms``."""
    return {tf: [r for r in rs if bucket_end(r) <= settle_ms] for tf, rs in rows.items()}


def shift_to_live(ticks: Sequence[Mapping[str, Any]], cut_ms: int, lead_s: float = 8.0,
                  now_ms: int | None = None) -> tuple[list[dict[str, Any]], int]:
    """The stream moved by whole minutes so its cut is the first minute boundary after it can be fed.

    The first tick then arrives ``lead_s`` to ``lead_s`` + 60 s from now (so the services are up), and
    every tick's event time is its real send time less its arrival jitter: live, with bucket ends in
    the present, as the wall-clock rules see them in production. Returns ``(ticks, new cut)``.
    """
    now = int(time.time() * 1000) if now_ms is None else now_ms
    span = cut_ms - min(t["_arrival_ms"] for t in ticks)
    live_cut = -(-(now + int(lead_s * 1000) + span) // 60_000) * 60_000
    delta = live_cut - cut_ms
    shifted = [{**t, "exchange_ts": t["exchange_ts"] + delta, "recv_ts": t["recv_ts"] + delta,
                "_arrival_ms": t["_arrival_ms"] + delta} for t in ticks]
    return shifted, live_cut


def live_feed(bootstrap: str, ticks: Sequence[Mapping[str, Any]], done: threading.Event) -> threading.Thread:
    """Produce ``ticks`` in a thread, each at its ``_arrival_ms`` by the wall clock (live pace)."""
    def run() -> None:
        producer = bus.Producer(bootstrap)
        for t in ticks:
            wait = t["_arrival_ms"] / 1000 - time.time()
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
