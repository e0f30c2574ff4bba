"""Vendor verification of multi-minute bars against kitesim's historical candles (real components).

kitesim serves a past trading day's 1m candles and its 3m..60m candles (aggregated
from the same minutes, anchored at 09:15 IST). Fed the 1m candles on ``bars.1m``, the
real multi aggregator must produce exactly the vendor's 3m..60m candles, except where
an input minute was altered: those bars are counted as mismatches, left alone without
``--verify-correct`` and replaced (and recorded in ``bar_corrections``) with it.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from kiteconnect import KiteConnect

from compute.bar_store import upsert_bars
from compute.bars import MULTI_MINUTE_TFS, Bar
from compute.sessions import SessionCalendar
from compute.vendor_verify import KITE_INTERVALS
from compute.vendor_verify_runner import VendorCheck, VendorCheckConfig, VendorMetrics
from core import bus, codec
from core.metrics import Metrics
from core.topics import all_topics, bars_topic
from ingestion.bar_merge import Tolerance
from ingestion.kite_history import KiteSource, history_limiter
from kitesim.clock import IST, previous_trading_day
from tests.conftest import ROOT, free_port, query, run_module
from tests.integration.kite_harness import KiteSim, stop_process, write_universe

pytestmark = pytest.mark.integration
DAY = previous_trading_day(datetime.now(IST).date())  # synthesised by kitesim, deterministic for the seed
PER_DAY = {"3m": 125, "5m": 75, "15m": 25, "30m": 13, "60m": 7}
SERVICE = "compute.bar_aggregator_1m_to_multi"
PREFIX = "tradestack_bar_aggregator_1m_to_multi_"


def _ms(d: datetime) -> int:
    return int(d.timestamp() * 1000)


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> Iterator[KiteSim]:
    """kitesim with two instruments, and their candles of DAY for every interval (fetched once)."""
    d = tmp_path_factory.mktemp("vendor")
    universe = d / "tokens.csv"
    tokens = write_universe(universe, 2, skip_indices=True)
    s = KiteSim(universe, d / "kitesim.log", 33)
    s.start()
    kite = KiteConnect("sim", "sim-token", root=s.rest_root)
    s.token_list = tokens  # type: ignore[attr-defined]
    s.candles = {}  # type: ignore[attr-defined]
    for t in tokens:
        for tf, interval in (("1m", "minute"), *KITE_INTERVALS.items()):
            s.candles[(t, tf)] = kite.historical_data(t, f"{DAY} 09:15:00", f"{DAY} 15:29:59", interval)
            time.sleep(0.35)  # kitesim enforces Kite's 3 historical requests per second
    yield s
    s.stop()


def _rows(candles: list[dict]) -> list[tuple]:
    return [(r["date"], r["open"], r["high"], r["low"], r["close"], r["volume"]) for r in candles]


def _ours(dsn: str, tf: str, token: int) -> list[tuple]:
    return query(dsn, f"SELECT ts, open, high, low, close, volume FROM bars_{tf} WHERE instrument_token = %s "
                      "ORDER BY ts", token)


def _metrics(port: int) -> dict[tuple[str, frozenset], float]:
    """``/metrics`` as {(name without prefix, frozenset of label pairs): value}."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as r:  # noqa: S310
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        if m and m.group(1).startswith(PREFIX):
            labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
            out[(m.group(1).removeprefix(PREFIX), labels)] = float(m.group(3))
    return out


def _sum(metrics: dict, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, lab), v in metrics.items() if n == name and want <= lab)


def _wait(cond, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got = cond()
            if got:
                return got
        except OSError:
            pass
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"service exited {proc.returncode}: {log.read_text()[-3000:] if log else ''}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}: {log.read_text()[-3000:] if log else ''}")


def _produce_1m(bootstrap: str, sim: KiteSim, altered: tuple[int, int]) -> dict:
    """Every instrument's 1m candles of the day on ``bars.1m``; minute ``altered``: high spike, +1000 volume."""
    bus.ensure_topics(bootstrap, all_topics(3))
    p = bus.Producer(bootstrap)
    changed = {}
    for t in sim.token_list:  # type: ignore[attr-defined]
        minutes = sim.candles[(t, "1m")]  # type: ignore[attr-defined]
        top = max(r["high"] for r in minutes)
        for i, r in enumerate(minutes):
            bar = {"instrument_token": t, "tf": "1m", "ts": _ms(r["date"]), "open": r["open"], "high": r["high"],
                   "low": r["low"], "close": r["close"], "volume": r["volume"], "ticks": 3}
            if (t, i) == altered:
                bar["high"], bar["volume"] = round(top + 5.0, 2), r["volume"] + 1000
                changed = bar
            p.produce(bars_topic("1m"), codec.dumps(bar), str(t).encode())
    p.flush(30)
    return changed


def _start(env: dict[str, str], tmp_path: Path, name: str, *args: str) -> tuple[subprocess.Popen, Path]:
    log = tmp_path / f"{name}.log"
    return run_module(SERVICE, env, "--verify-vendor", "kite", "--verify-every-s", "1", "--verify-lag-s", "60",
                      "--verify-lookback-days", "12", *args, log_path=log), log


def test_service_when_bar_differs_from_vendor_then_counted_and_only_corrected_with_flag(
        sim, broker, fresh_pg_dsn, tmp_path):
    # Arrange: the real 1m candles, one minute of instrument a altered (09:22: high spike, +1000 volume).
    a, b = sim.token_list
    changed = _produce_1m(broker, sim, (a, 7))
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", KAFKA_PARTITIONS="3",
               KAFKA_BOOTSTRAP_SERVERS=broker, POSTGRES_DSN=fresh_pg_dsn, METRICS_PORT=str(port),
               KITE_ROOT=sim.rest_root, KITE_API_KEY="sim", KITE_ACCESS_TOKEN="sim-token",
               AGG_MULTI_WALL_GRACE_MS="1500", AGG_MULTI_SILENT_CLOSE_MS="1000", BAR_HOLD_RULE="warn")
    every_bar = 2 * sum(PER_DAY.values())

    # Act 1: count only.
    proc, log = _start(env, tmp_path, "count_only")
    try:
        _wait(lambda: _sum(_metrics(port), "vendor_bars_checked_total") >= every_bar, 60, "every bar checked",
              proc, log)
        m1 = _metrics(port)
    finally:
        code = stop_process(proc)
    assert code == 0, log.read_text()[-2000:]

    # Assert 1: one mismatching bar per timeframe, on high and volume; nothing changed or recorded.
    assert _sum(m1, "vendor_bars_checked_total") == every_bar
    for tf in MULTI_MINUTE_TFS:
        assert _sum(m1, "vendor_mismatches_total", tf=tf, field="high") == 1, tf
        assert _sum(m1, "vendor_mismatches_total", tf=tf, field="volume") == 1, tf
        assert _sum(m1, "vendor_mismatches_total", tf=tf) == 2, tf
    assert _sum(m1, "vendor_missing_total") == 0 and _sum(m1, "vendor_corrections_total") == 0
    assert _sum(m1, "vendor_errors_total") == 0 and _sum(m1, "vendor_invalid_candles_total") == 0
    text = log.read_text()
    assert f"vendor mismatch tf=60m instrument_token={a} bar={DAY} 09:15 IST" in text
    assert "(not corrected)" in text and "Traceback" not in text
    spike = round(changed["high"], 2)
    for tf in MULTI_MINUTE_TFS:
        assert _ours(fresh_pg_dsn, tf, b) == _rows(sim.candles[(b, tf)])
        ours_a = _ours(fresh_pg_dsn, tf, a)
        assert len(ours_a) == PER_DAY[tf] and sum(1 for r in ours_a if r[2] == spike) == 1, tf
        assert ours_a != _rows(sim.candles[(a, tf)])
    assert query(fresh_pg_dsn, "SELECT count(*) FROM bar_corrections") == [(0,)]
    assert query(fresh_pg_dsn, "SELECT DISTINCT dry_run, source FROM merge_runs") == [(True, "vendor:kite")]
    day_end = datetime(DAY.year, DAY.month, DAY.day, 15, 30, tzinfo=IST)
    assert query(fresh_pg_dsn, "SELECT count(*), min(verified_to), max(verified_to) FROM vendor_verify_state") \
        == [(10, day_end, day_end)]

    # Act 2: restart with --verify-correct: the verified point survives the restart, so nothing is redone ...
    proc, log = _start(env, tmp_path, "correct", "--verify-correct")
    try:
        _wait(lambda: _sum(_metrics(port), "vendor_passes_total") >= 2, 30, "two passes", proc, log)
        assert _sum(_metrics(port), "vendor_bars_checked_total") == 0
        assert query(fresh_pg_dsn, "SELECT count(*) FROM bar_corrections") == [(0,)]
        # ... until the operator resets it: then the five bars are corrected and recorded.
        query(fresh_pg_dsn, "DELETE FROM vendor_verify_state RETURNING 1")
        _wait(lambda: _sum(_metrics(port), "vendor_bars_checked_total") >= every_bar, 30, "re-verification",
              proc, log)
        m2 = _metrics(port)
        corrections = query(fresh_pg_dsn, "SELECT tf, instrument_token, action, reason, old_values, new_values, "
                                          "source FROM bar_corrections ORDER BY tf")
        # Assert 3: a rerun finds nothing left to correct and records nothing new.
        query(fresh_pg_dsn, "DELETE FROM vendor_verify_state RETURNING 1")
        _wait(lambda: _sum(_metrics(port), "vendor_bars_checked_total") >= 2 * every_bar, 30, "rerun", proc, log)
        m3 = _metrics(port)
    finally:
        code = stop_process(proc)
    assert code == 0, log.read_text()[-2000:]

    # Assert 2: corrected to the vendor's values, each correction with field-level old/new values.
    assert _sum(m2, "vendor_corrections_total") == 5 and _sum(m2, "vendor_mismatches_total", field="high") == 5
    assert sorted(c[0] for c in corrections) == sorted(MULTI_MINUTE_TFS)
    for tf, token, action, reason, old, new, source in corrections:
        ref = next(r for r in sim.candles[(a, tf)] if r["date"] <= datetime.fromtimestamp(changed["ts"] / 1000, IST)
                   < r["date"] + timedelta(minutes=int(tf[:-1])))
        assert (token, action, reason, source) == (a, "update", "mismatch", "vendor:kite")
        assert old == {"high": spike, "volume": ref["volume"] + 1000}
        assert new == {"high": ref["high"], "volume": ref["volume"]}
    for tf in MULTI_MINUTE_TFS:
        assert _ours(fresh_pg_dsn, tf, a) == _rows(sim.candles[(a, tf)]), tf
    assert query(fresh_pg_dsn, "SELECT count(*) FROM merge_runs WHERE NOT dry_run AND updated = 1") == [(5,)]
    assert "(corrected)" in log.read_text()

    assert _sum(m3, "vendor_mismatches_total") == _sum(m2, "vendor_mismatches_total") == 5 * 2
    assert _sum(m3, "vendor_corrections_total") == 5
    assert query(fresh_pg_dsn, "SELECT count(*) FROM bar_corrections") == [(5,)]


# -- the runner alone, against real Postgres and kitesim: failures are counted, never fatal ----------

def _seed(dsn: str, sim: KiteSim, token: int, skip: tuple[str, int] | None = None) -> None:
    """Our bars equal to the vendor's (through the real bar upsert, which also sets bar_state)."""
    bars = [Bar(token, tf, _ms(r["date"]), r["open"], r["high"], r["low"], r["close"], r["volume"], 1, None)
            for tf in MULTI_MINUTE_TFS for i, r in enumerate(sim.candles[(token, tf)])  # type: ignore[attr-defined]
            if (tf, i) != skip]
    with psycopg.connect(dsn) as conn:
        upsert_bars(conn, bars)


def _runner(dsn: str, sim: KiteSim, token: str = "sim-token", correct: bool = True) -> tuple[VendorCheck, Metrics]:
    metrics = Metrics("vendor_test")
    kite = KiteConnect("sim", token, root=sim.rest_root)
    source = KiteSource(kite, history_limiter(3), sleep=lambda _s: None)
    config = VendorCheckConfig("kite", MULTI_MINUTE_TFS, lag_s=60, tolerance=Tolerance(), correct=correct,
                               lookback_days=12)
    return VendorCheck(dsn, source, config, VendorMetrics(metrics), SessionCalendar()), metrics


def _value(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(f"tradestack_vendor_test_{name}", labels) or 0.0


def test_runner_when_vendor_rejects_or_fails_then_counted_and_window_retried(sim, fresh_pg_dsn):
    a = sim.token_list[0]
    _seed(fresh_pg_dsn, sim, a, skip=("15m", 4))  # our 10:15 15m bar is missing

    # A rejected access token: one error, the pass stops, nothing is marked verified.
    bad, bad_metrics = _runner(fresh_pg_dsn, sim, token="expired")
    report = bad.run_pass()
    assert report.errors == {"token": 1} and report.aborted and report.requests == 1
    assert _value(bad_metrics, "vendor_errors_total", type="token") == 1
    assert query(fresh_pg_dsn, "SELECT count(*) FROM vendor_verify_state") == [(0,)]
    bad.close()

    # The vendor failing every retry: counted as unavailable, the pass stops, the window waits for the next pass.
    check, metrics = _runner(fresh_pg_dsn, sim)
    sim.post("/_sim/faults", {"http_5xx_next": 5, "http_5xx_paths": ["/instruments/historical"]})
    try:
        report = check.run_pass()
    finally:
        sim.post("/_sim/faults", {"http_5xx_next": 0})
    assert report.errors == {"unavailable": 1} and report.requests == 5
    assert _value(metrics, "vendor_errors_total", type="unavailable") == 1
    assert query(fresh_pg_dsn, "SELECT count(*) FROM vendor_verify_state") == [(0,)]

    # Next pass: everything verified; the bar we lack is counted, not inserted, even when correcting.
    report = check.run_pass()
    assert not report.errors and not report.aborted and len(report.results) == 5
    assert _value(metrics, "vendor_bars_checked_total", tf="15m") == PER_DAY["15m"] - 1
    assert _value(metrics, "vendor_missing_total", tf="15m", side="ours") == 1
    assert _value(metrics, "vendor_mismatched_bars_total", tf="15m") == 0
    assert len(_ours(fresh_pg_dsn, "15m", a)) == PER_DAY["15m"] - 1
    assert query(fresh_pg_dsn, "SELECT count(*) FROM bar_corrections") == [(0,)]
    assert query(fresh_pg_dsn, "SELECT count(*) FROM vendor_verify_state") == [(5,)]
    runs = query(fresh_pg_dsn, "SELECT tf, status, reference, unchanged, per_instrument FROM merge_runs "
                               "WHERE status <> 'running' ORDER BY tf")
    run15 = next(r for r in runs if r[0] == "15m")
    assert run15[1:4] == ("ok", PER_DAY["15m"], PER_DAY["15m"] - 1)
    assert run15[4][str(a)]["missing_ours"] == 1

    # And a pass with nothing new to check makes no request.
    assert check.run_pass().requests == 0
    check.close()
