"""The supervisor and the embedded broker's memory: the RSS gauge, the warning, ``ctl reset-broker``.

Real Tansu, real Postgres and the real bar services from
``configs/process_supervisor.yaml``, on free ports in a tmp var dir (the
:class:`~tests.integration.test_supervisor.Stack` helper).
"""

from __future__ import annotations

import re
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from compute import holds
from core.settings import PROJECT_ROOT
from orchestrator.ctl import format_broker_lines
from orchestrator.kafka_launcher import BrokerMemory, parse_warn_fraction
from tests.integration.test_supervisor import Stack, alive, free_port, stack_factory, wait_for

__all__ = ["stack_factory"]  # the fixture, re-used from test_supervisor

REAL = yaml.safe_load((PROJECT_ROOT / "configs" / "process_supervisor.yaml").read_text())
# The multi-minute aggregator is left out of the reset test: its open 60 m bar holds bars.1m uncommitted
# until the bucket ends, so a drain takes up to an hour of wall time (the refusal's job, not a test's).
BAR_SERVICES = ("bar_builder_1s", "bar_aggregator_1m")
# The reset test is about the drain and the reset, not the shipped wall-clock defaults: short but
# still valid knobs (check_chain accepts them) make the drain wait for the open minute + ~12 s
# instead of + ~45 s (a 25 s clock stall after the sources stop, then the 20 s wall grace).
FAST_KNOBS = holds.Knobs(bar_grace_ms=1000, bar_wall_grace_ms=1000,
                         agg_1m_wall_grace_ms=holds.min_wall_grace(holds.builder_hold(1000, 1000)),
                         agg_silent_close_ms=holds.LIVE_WINDOW_MS + 3000)
assert not holds.check_chain(FAST_KNOBS, "1m"), holds.check_chain(FAST_KNOBS, "1m")
FAST_KNOB_ENV = {holds.ENV[f]: str(getattr(FAST_KNOBS, f))
                 for f in ("bar_grace_ms", "bar_wall_grace_ms", "agg_1m_wall_grace_ms", "agg_silent_close_ms")}


def real_config(*names: str) -> dict[str, Any]:
    return {**REAL, "services": {k: v for k, v in REAL["services"].items() if k in names}}


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r"^(tradestack_supervisor_broker_\w+) (\S+)$", text, re.M)}


# ----- pure pieces ---------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["0", "-0.1", "1.5", "abc", "nan", "inf"])
def test_warn_fraction_outside_zero_one_is_rejected_naming_the_variable(raw: str) -> None:
    with pytest.raises(ValueError, match="BROKER_RSS_WARN_FRACTION"):
        parse_warn_fraction(raw)


def test_warn_fraction_defaults_to_a_quarter_and_accepts_one() -> None:
    assert parse_warn_fraction(None) == parse_warn_fraction(" ") == 0.25
    assert parse_warn_fraction("1") == 1.0


def test_broker_memory_warns_only_past_the_threshold_and_status_prints_it() -> None:
    gib = 2**30
    under = BrokerMemory(pid=7, rss_bytes=2 * gib, total_bytes=24 * gib, warn_fraction=0.25)
    over = BrokerMemory(pid=7, rss_bytes=7 * gib, total_bytes=24 * gib, warn_fraction=0.25)
    assert under.warning() is None and not under.over
    assert over.over and "make broker-reset" in (over.warning() or "")
    assert format_broker_lines(under.as_dict()) == ["broker: kafka pid 7 rss=2.00GiB (8.3% of 24.0GiB, warn at 25%)"]
    lines = format_broker_lines(over.as_dict())
    assert len(lines) == 2 and lines[1].startswith("WARNING: the embedded broker holds 7.00 GiB (29% of memory")
    assert format_broker_lines(None) == []


# ----- the gauge and the warning on a real Tansu child ---------------------------------------------


def _broker_stack(stack_factory: Callable[..., Stack], **env: str) -> tuple[Stack, int]:
    metrics_port = free_port()
    stack = stack_factory(real_config("kafka"), env={"KAFKA_PORT": str(free_port()),
                                                     "TRADESTACK_EMBEDDED_KAFKA": "true",
                                                     "SUPERVISOR_METRICS_PORT": str(metrics_port), **env})
    ready = stack.ctl("wait-ready", "--timeout", "60", timeout=90)
    assert ready.returncode == 0, ready.stderr + stack.out.read_text()
    return stack, metrics_port


@pytest.mark.integration
def test_broker_rss_gauge_is_the_tansu_process_rss_and_its_share_of_memory(
        stack_factory: Callable[..., Stack]) -> None:
    stack, port = _broker_stack(stack_factory)
    pid = stack.status()["kafka"]["pid"]
    tansu = psutil.Process(pid)
    assert tansu.name() == "tansu" and tansu.children(recursive=True) == []  # exec'd: no wrapper

    values = wait_for(lambda: (v := scrape(port)).get("tradestack_supervisor_broker_rss_bytes", 0) > 0 and v,
                      30, "broker gauge")
    rss_now = tansu.memory_info().rss
    rss = values["tradestack_supervisor_broker_rss_bytes"]
    assert 1 * 2**20 < rss < 2 * 2**30
    assert abs(rss - rss_now) / rss_now < 0.5  # sampled up to BROKER_SAMPLE_S earlier
    assert values["tradestack_supervisor_broker_memory_fraction"] == pytest.approx(
        rss / psutil.virtual_memory().total, rel=1e-6)
    assert values["tradestack_supervisor_broker_rss_warn_fraction"] == 0.25

    status = stack.ctl("status")
    assert status.returncode == 0
    line = next(ln for ln in status.stdout.splitlines() if ln.startswith("broker: "))
    assert line.startswith(f"broker: kafka pid {pid} rss=") and "warn at 25%" in line
    assert "WARNING" not in status.stdout
    assert "WARNING" not in stack.out.read_text()


@pytest.mark.integration
def test_status_and_supervisor_log_warn_once_the_broker_passes_a_tiny_threshold(
        stack_factory: Callable[..., Stack]) -> None:
    stack, _ = _broker_stack(stack_factory, BROKER_RSS_WARN_FRACTION="0.00001")
    status = stack.ctl("status")
    warnings = [ln for ln in status.stdout.splitlines() if ln.startswith("WARNING: ")]
    assert len(warnings) == 1 and "make broker-reset" in warnings[0], status.stdout
    logged = wait_for(lambda: [ln for ln in stack.out.read_text().splitlines() if "WARNING: the embedded" in ln],
                      30, "warning in the supervisor log")
    assert len(logged) == 1  # once on crossing, not every sample
    assert f"pid={stack.status()['kafka']['pid']}" in logged[0]


@pytest.mark.integration
@pytest.mark.parametrize("raw", ["0", "2", "quarter"])
def test_bad_warn_fraction_stops_the_supervisor_with_one_line_and_exit_2(raw: str, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    path = tmp_path / "sup.yaml"
    path.write_text(yaml.safe_dump(real_config("kafka"), sort_keys=False))
    res = subprocess.run([sys.executable, "-m", "orchestrator.process_supervisor", "--config", str(path)],
                         cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=30,
                         env={**os.environ, "TRADESTACK_VAR_DIR": str(tmp_path / "var"),
                              "BROKER_RSS_WARN_FRACTION": raw})
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "BROKER_RSS_WARN_FRACTION" in lines[0] and repr(raw) in lines[0], res.stderr


# ----- reset-broker on the real stack --------------------------------------------------------------


def _topics(bootstrap: str) -> set[str]:
    return set(AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics)


def _first_timestamp_ms(bootstrap: str, topic: str) -> int | None:
    """Create time of the first record of partition 0, or None if it holds none."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{uuid.uuid4().hex[:6]}",
                  "enable.auto.commit": False})
    try:
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is not None and not msg.error():
                return int(msg.timestamp()[1])
        return None
    finally:
        c.close()


def _bars_1s(dsn: str) -> tuple[int, Any]:
    import psycopg

    with psycopg.connect(dsn, connect_timeout=5) as conn:
        row = conn.execute("select count(*), max(ts) from bars_1s").fetchone()
    assert row is not None
    return int(row[0]), row[1]


@pytest.mark.integration
def test_reset_broker_refuses_while_consumers_are_behind_then_starts_the_broker_empty_and_the_stack_runs_on(
        stack_factory: Callable[..., Stack]) -> None:
    pg_port, kafka_port = free_port(), free_port()
    bootstrap = f"127.0.0.1:{kafka_port}"
    dsn = f"postgresql://tradestack@127.0.0.1:{pg_port}/tradestack"
    names = ("postgres", "kafka", "migrate", "smoke_producer", *BAR_SERVICES)
    env = {"PG_PORT": str(pg_port), "KAFKA_PORT": str(kafka_port), "POSTGRES_DSN": dsn,
           "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "TRADESTACK_EMBEDDED_PG": "true",
           "TRADESTACK_EMBEDDED_KAFKA": "true", "SMOKE_PRODUCER_ENABLED": "true",
           "SMOKE_METRICS_PORT": str(free_port()), "BAR_BUILDER_METRICS_PORT": str(free_port()),
           "BAR_AGG_1M_METRICS_PORT": str(free_port()), "BAR_AGG_MULTI_METRICS_PORT": str(free_port()),
           **FAST_KNOB_ENV}
    stack = stack_factory(real_config(*names), env=env)
    ready = stack.ctl("wait-ready", "--timeout", "120", timeout=150)
    assert ready.returncode == 0, ready.stderr + stack.out.read_text()[-3000:]
    wait_for(lambda: _bars_1s(dsn)[0] > 0, 60, "first 1 s bars in Postgres")
    marker = f"reset.marker.{uuid.uuid4().hex[:6]}"
    p = Producer({"bootstrap.servers": bootstrap})
    p.produce(marker, b"from before the reset", partition=0)
    assert p.flush(10) == 0
    before = stack.status()

    # Consumers hold open bars (uncommitted input) and get 1 s to catch up: refused, nothing changed.
    refused = stack.ctl("reset-broker", "--drain-timeout", "1", timeout=120)
    assert refused.returncode == 1
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert refused.stderr.startswith("ctl reset-broker: refused: ") and "not reset" in refused.stderr
    after_refusal = stack.wait_state("smoke_producer", "ready", 60)
    assert stack.status()["kafka"]["pid"] == before["kafka"]["pid"]
    assert after_refusal["pid"] != before["smoke_producer"]["pid"]  # the sources were stopped and restarted
    assert _first_timestamp_ms(bootstrap, marker) is not None

    # With time to drain (the 1 m aggregator's open minute ends, then its wall grace): reset.
    t_reset_ms = int(time.time() * 1000)
    done = stack.ctl("reset-broker", "--drain-timeout", "180", "--timeout", "180", timeout=500)
    assert done.returncode == 0, done.stderr + stack.out.read_text()[-3000:]
    assert done.stdout.startswith("broker reset (it held ") and "all services ready" in done.stdout
    rows = stack.status()
    assert rows["kafka"]["pid"] != before["kafka"]["pid"] and not alive(before["kafka"]["pid"])
    assert rows["postgres"]["pid"] == before["postgres"]["pid"]  # the system of record is untouched
    assert marker not in _topics(bootstrap)  # the earlier messages are gone
    first_tick = wait_for(lambda: _first_timestamp_ms(bootstrap, "ticks"), 60, "ticks after the reset")
    assert first_tick >= t_reset_ms

    # The stack runs on: new bars reach Postgres, nobody restarts by itself.
    n0, ts0 = _bars_1s(dsn)
    wait_for(lambda: (b := _bars_1s(dsn))[0] > n0 and b[1] > ts0, 60, "new 1 s bars after the reset")
    time.sleep(10)
    final = stack.status()
    for name in ("smoke_producer", *BAR_SERVICES):
        assert final[name]["state"] == "ready", final[name]
        assert final[name]["pid"] == rows[name]["pid"], f"{name} restarted after the reset"
        assert final[name]["restarts"] == rows[name]["restarts"]
    log = stack.out.read_text()
    assert "broker reset: broker restarted empty" in log
