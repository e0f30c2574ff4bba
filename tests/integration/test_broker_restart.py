"""A stream service survives a restart of the embedded broker (which comes back empty)."""

from __future__ import annotations

import signal
import time
import uuid

import pytest

from core import bus
from tests.conftest import free_port, run_module, wait_tcp
from tests.integration.test_stream_delivery import ECHO_TABLE, _count, _env, _produce, _wait_rows, query_exec

pytestmark = pytest.mark.integration


def test_service_survives_broker_restart_and_resumes(fresh_pg_dsn, service_env, tmp_path):
    from orchestrator.kafka_launcher import start_tansu

    port = free_port()
    broker = start_tansu(port)
    wait_tcp(port)
    bootstrap = f"127.0.0.1:{port}"
    query_exec(fresh_pg_dsn, ECHO_TABLE)
    suffix = uuid.uuid4().hex[:8]
    topic_in, topic_out, group = f"echo.in.{suffix}", f"echo.out.{suffix}", f"echo-{suffix}"
    bus.ensure_topics(bootstrap, {topic_in: 1, topic_out: 1, "dlq": 1})
    env = _env(service_env, fresh_pg_dsn, topic_in, topic_out, group)
    env["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
    log = tmp_path / "echo.log"
    proc = run_module("tests.integration.echo_service", env, log_path=log)
    try:
        _produce(bootstrap, topic_in, [f"a{i}" for i in range(50)])
        assert _wait_rows(fresh_pg_dsn, 50, 60, proc) == 50
        broker.terminate()
        broker.wait(15)
        time.sleep(2)
        assert proc.poll() is None, "service must not die while the broker is down"
        broker = start_tansu(port)  # in-memory: comes back with no topics and no offsets
        wait_tcp(port)
        bus.ensure_topics(bootstrap, {topic_in: 1, topic_out: 1, "dlq": 1})
        _produce(bootstrap, topic_in, [f"b{i}" for i in range(50)])
        assert _wait_rows(fresh_pg_dsn, 100, 90, proc) == 100, log.read_text()[-3000:]
        assert proc.poll() is None
        assert _count(fresh_pg_dsn) == 100
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        broker.terminate()
        broker.wait(15)
    assert code == 0
