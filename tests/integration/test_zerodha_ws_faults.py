"""Ingestion under feed faults: a silent feed (no close), an expired token, a wrong token."""

from __future__ import annotations

import subprocess
import time
import uuid

import pytest

from tests.conftest import free_port, run_module
from tests.integration.kite_harness import KiteSim, metric_sum, scrape, stop_process, wait_for, write_universe

pytestmark = pytest.mark.integration
M = "tradestack_zerodha_ws_"


def _start(env_base, sim: KiteSim, universe, tmp_path, *args: str, env: dict[str, str] | None = None):
    mport = free_port()
    e = {**env_base, "KITE_WS_ROOT": sim.ws_root, "KITE_ROOT": sim.rest_root, "METRICS_PORT": str(mport),
         **(env or {})}
    proc = run_module("ingestion.zerodha_ws", e, "--tokens", str(universe), "--topic",
                      f"ticks.faults.{uuid.uuid4().hex[:8]}", "--market-hours", "always", *args,
                      log_path=tmp_path / "ingestion.log")
    return proc, mport


def _error_lines(tmp_path) -> list[str]:
    return [ln for ln in (tmp_path / "ingestion.log").read_text().splitlines() if " ERROR " in ln]


def test_feed_silent_without_close_when_beyond_silence_then_watchdog_reconnects_and_reports_stale(
        service_env, tmp_path):
    # Arrange
    universe = tmp_path / "tokens.csv"
    write_universe(universe, 10)
    sim = KiteSim(universe, tmp_path / "kitesim.log", 5)
    sim.start()
    svc, mport = _start(service_env, sim, universe, tmp_path, "--silence-after", "3", "--stale-after", "2")
    try:
        wait_for(lambda: scrape(mport)[M + "ticks_in_total"] > 20, 20, what="ticks flowing")
        assert scrape(mport)[M + "stale_instruments"] == 0

        # Act: kitesim keeps the sockets open but sends nothing, not even heartbeats.
        sim.post("/_sim/faults", {"ws_silence_s": 7})

        # Assert: stale instruments reported, the silent connection is force-reconnected...
        wait_for(lambda: scrape(mport)[M + "stale_instruments"] == 10, 6, what="all instruments stale")
        wait_for(lambda: metric_sum(scrape(mport), M + "watchdog_forced_reconnects_total") >= 1, 6,
                 what="forced reconnect")
        wait_for(lambda: metric_sum(scrape(mport), M + "ws_reconnects_total") >= 1, 8, what="reconnected")
        # ...and once the feed talks again, ticks flow and nothing is stale.
        ticks = scrape(mport)[M + "ticks_in_total"]
        wait_for(lambda: scrape(mport)[M + "ticks_in_total"] > ticks + 20, 15, what="ticks resume")
        wait_for(lambda: scrape(mport)[M + "stale_instruments"] == 0, 5, what="stale cleared")
    finally:
        code = stop_process(svc)
        sim.stop()
    assert code == 0
    log = (tmp_path / "ingestion.log").read_text()
    assert "watchdog: connection silent for 3s, forcing reconnect" in log
    assert "watchdog: stale instruments=10 of 10" in log
    assert "watchdog: no stale instruments" in log


def test_token_expires_while_streaming_then_exit_3_with_one_clear_line(service_env, tmp_path):
    universe = tmp_path / "tokens.csv"
    write_universe(universe, 5)
    sim = KiteSim(universe, tmp_path / "kitesim.log", 3, "--token-expires-after", "6")
    sim.start()
    svc, mport = _start(service_env, sim, universe, tmp_path)
    try:
        wait_for(lambda: scrape(mport)[M + "ticks_in_total"] > 3, 10, what="ticks flowing before expiry")
        code = svc.wait(15)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        stop_process(svc)
        sim.stop()
    assert code == 3
    errors = _error_lines(tmp_path)
    assert len(errors) == 1, errors
    assert "Kite rejected the access token" in errors[0] and "KITE_ACCESS_TOKEN" in errors[0]
    assert "Traceback" not in (tmp_path / "ingestion.log").read_text()


def test_wrong_token_when_connecting_then_exit_3_without_retry_loop(service_env, tmp_path):
    universe = tmp_path / "tokens.csv"
    write_universe(universe, 5)
    sim = KiteSim(universe, tmp_path / "kitesim.log", 3)
    sim.start()
    t0 = time.monotonic()
    svc, _ = _start(service_env, sim, universe, tmp_path, env={"KITE_ACCESS_TOKEN": "not-the-token"})
    try:
        code = svc.wait(15)
    finally:
        stop_process(svc)
        stats = sim.get("/_sim/stats")
        sim.stop()
    assert code == 3
    assert time.monotonic() - t0 < 10
    assert 1 <= stats["ws_rejected"] <= 2, "gave up after the first 403, no hot loop"
    errors = _error_lines(tmp_path)
    assert len(errors) == 1 and "HTTP 403" in errors[0], errors
