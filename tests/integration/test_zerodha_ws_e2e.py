"""kitesim (50 instruments) -> python -m ingestion.zerodha_ws -> Kafka: completeness, order, reconnect.

Phase 1: ingestion runs over two WebSocket connections (25 instruments each);
then kitesim's feed is silenced (the cut point), what it sent is read from
``/_sim/stats`` and ``/_sim/ticks``, and kitesim is killed (SIGKILL). At least 99.9 %
of the packets kitesim sent must be on the topic, none twice, each
instrument's messages in kitesim's send order (exchange_ts and volume
non-decreasing). Phase 2: kitesim restarts on the same ports; ingestion must
reconnect, resubscribe and produce again within 10 s, and its reconnect
metric must count it.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict

import pytest

from tests.conftest import free_port, run_module
from tests.integration.kite_harness import (
    KiteSim,
    is_subsequence,
    metric_sum,
    read_topic,
    scrape,
    stop_process,
    wait_for,
    write_universe,
)

pytestmark = pytest.mark.integration
M = "tradestack_zerodha_ws_"


def test_ticks_arrive_complete_in_order_and_feed_resumes_after_kitesim_restart(kafka_bootstrap, service_env,
                                                                             tmp_path):
    # Arrange
    universe = tmp_path / "tokens.csv"
    tokens = write_universe(universe, 50)
    sim = KiteSim(universe, tmp_path / "kitesim.log", 11)
    sim.start()
    topic = f"ticks.e2e.{uuid.uuid4().hex[:8]}"
    mport = free_port()
    env = {**service_env, "KITE_WS_ROOT": sim.ws_root, "KITE_ROOT": sim.rest_root, "METRICS_PORT": str(mport)}
    svc = run_module("ingestion.zerodha_ws", env, "--tokens", str(universe), "--topic", topic,
                     "--max-per-connection", "25", "--market-hours", "always", "--silence-after", "30",
                     log_path=tmp_path / "ingestion.log")
    try:
        wait_for(lambda: metric_sum(scrape(mport), M + "ws_connected") == 2, 20, what="both shards connected")

        # Act 1: run, then cut the feed and take kitesim's own account of what it sent.
        time.sleep(6)
        sim.post("/_sim/faults", {"ws_silence_s": 20})
        time.sleep(1.0)
        stats = sim.get("/_sim/stats")
        sent_log = {t: sim.get(f"/_sim/ticks?token={t}")["ticks"] for t in tokens}
        sim.kill()
        got = read_topic(kafka_bootstrap, topic, idle=2.0)

        # Assert 1: completeness (>= 99.9 %), no duplicates, per-instrument order.
        sent = defaultdict(int)
        for key in ("ticks_sent", "snapshots_sent"):
            for t, n in stats[key].items():
                sent[int(t)] += n
        by_token: dict[int, list[dict]] = defaultdict(list)
        for m in got:
            by_token[m["instrument_token"]].append(m)
        total_sent = sum(sent.values())
        assert total_sent > 300, f"kitesim sent too little to judge: {total_sent}"
        assert len(got) >= 0.999 * total_sent, f"{len(got)} of {total_sent} ticks arrived"
        assert len(got) <= total_sent, "more ticks on the topic than kitesim sent (duplicates)"
        assert set(by_token) <= set(tokens)
        for t in tokens:
            msgs = by_token[t]
            assert len(msgs) >= sent[t] - 1, f"{t}: {len(msgs)} of {sent[t]}"
            volumes = [m["volume"] for m in msgs if m["volume"] is not None]
            assert volumes == sorted(volumes), f"{t}: volume went backwards"
            full_ts = [m["exchange_ts"] for m in msgs if m.get("mode") == "full"]
            assert full_ts == sorted(full_ts), f"{t}: exchange_ts went backwards"
            ours = [(m["volume"] or 0, m["ltp"]) for m in msgs]
            theirs = [(s["volume"], s["last_price"]) for s in sent_log[t]]
            assert is_subsequence(ours, theirs), f"{t}: not in kitesim's send order"
        full = [m for m in got if m.get("mode") == "full" and m["volume"] is not None]
        assert full and all(len(m["depth"]["buy"]) == 5 and m["bid"] is not None for m in full)
        assert all(m["exchange_ts"] % 1000 == 0 for m in full)  # Kite's exchange time has 1 s resolution

        # Act 2: kitesim comes back on the same ports.
        before = scrape(mport)
        ticks_before = before[M + "ticks_in_total"]
        ready_at = sim.start()
        wait_for(lambda: scrape(mport)[M + "ticks_in_total"] > ticks_before + 50
                           and metric_sum(scrape(mport), M + "ws_connected") == 2, 20, what="ticks resume")
        resumed_after = time.monotonic() - ready_at

        # Assert 2: resumed within 10 s, reconnects counted, new ticks on the topic.
        assert resumed_after <= 10.0, f"ingestion resumed {resumed_after:.1f}s after kitesim was back"
        after = scrape(mport)
        assert metric_sum(after, M + "ws_reconnects_total") >= 2  # one per connection
        assert metric_sum(after, M + "ws_reconnect_attempts_total") >= 1
        assert after[M + "queue_dropped_total{policy=\"drop-oldest\"}"] == 0
        assert after[M + "exchange_to_kafka_lag_seconds_count"] > 0
        print(f"sent={total_sent} arrived={len(got)} resumed_after={resumed_after:.1f}s "
              f"reconnects={metric_sum(after, M + 'ws_reconnects_total'):.0f}")
        # The feed is live again, so read for a bounded time rather than until idle.
        assert len(read_topic(kafka_bootstrap, topic, idle=0.5, timeout=3.0)) > len(got)
    finally:
        code = stop_process(svc)
        sim.stop()
    assert code == 0, (tmp_path / "ingestion.log").read_text()[-3000:]
    log = (tmp_path / "ingestion.log").read_text()
    assert "reconnected shard=0" in log and "reconnected shard=1" in log
    assert "Traceback" not in log
