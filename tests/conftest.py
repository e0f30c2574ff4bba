"""Shared fixtures: a real embedded Kafka-compatible broker and a real Postgres.

Both start once per test session on free loopback ports (data in a temp dir)
and are stopped at the end. ``pg_dsn`` gives each test module its own freshly
migrated database, so tests never see each other's rows.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[1]

# A registry overlay written by a real `make score` on this machine must not change what the tests load:
# tests that want one pass it explicitly (and services started by tests inherit this).
os.environ.setdefault("TRADESTACK_REGISTRY_OVERLAY", str(ROOT / "var" / "tests-no-registry-overlay.yaml"))


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_tcp(port: int, timeout: float = 30.0) -> None:
    """Block until something listens on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


@contextmanager
def tansu_broker() -> Iterator[str]:
    """A throwaway embedded broker (Tansu, in-memory) on a free port; yields bootstrap servers."""
    from orchestrator.kafka_launcher import start_tansu

    port = free_port()
    proc = start_tansu(port)
    try:
        wait_tcp(port)
        yield f"127.0.0.1:{port}"
    finally:
        # In memory, nothing to keep: SIGTERM, and SIGKILL after 1 s. Tansu's SIGTERM waits ~5 s for
        # clients still connected (a test's producer, a consumer not yet closed): measured 5.0 s a test.
        proc.terminate()
        try:
            proc.wait(1)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of the session's embedded broker (tests use their own topic names)."""
    with tansu_broker() as bootstrap:
        yield bootstrap


@pytest.fixture()
def broker() -> Iterator[str]:
    """A fresh embedded broker per test: the stack's services use the fixed topic names."""
    with tansu_broker() as bootstrap:
        yield bootstrap


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """DSN (without database) of a throwaway embedded PostgreSQL server."""
    from orchestrator.pg_launcher import (
        remove_throwaway_cluster,
        start_embedded_postgres,
        stop as stop_embedded_postgres,
    )

    port = free_port()
    data_dir = tmp_path_factory.mktemp("pg") / "data"
    proc = start_embedded_postgres(data_dir, port)  # as root: a throwaway cluster in the system dir
    try:
        wait_tcp(port, 60)
        yield f"postgresql://tradestack@127.0.0.1:{port}"
    finally:
        stop_embedded_postgres(proc)
        remove_throwaway_cluster(data_dir)


def _fresh_db(pg_server: str) -> str:
    from core.migrate import apply_migrations

    name = "t_" + uuid.uuid4().hex[:12]
    dsn = f"{pg_server}/{name}"
    apply_migrations(dsn)
    return dsn


@pytest.fixture(scope="module")
def pg_dsn(pg_server: str) -> str:
    """A freshly migrated database for one test module."""
    return _fresh_db(pg_server)


@pytest.fixture()
def fresh_pg_dsn(pg_server: str) -> str:
    """A freshly migrated database for one test."""
    return _fresh_db(pg_server)


@pytest.fixture()
def service_env(kafka_bootstrap: str) -> dict[str, str]:
    """Environment for a service subprocess pointed at the test broker."""
    env = dict(os.environ)
    env.update({"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "PYTHONPATH": str(ROOT),
                "KAFKA_PARTITIONS": "3", "METRICS_PORT": "0", "PYTHONUNBUFFERED": "1"})
    return env


def run_module(module: str, env: dict[str, str], *args: str, log_path: Path | None = None) -> subprocess.Popen[bytes]:
    """Start ``python -m module`` as a child (output to ``log_path`` or inherited)."""
    out = open(log_path, "ab") if log_path else None  # noqa: SIM115 - closed with the process
    return subprocess.Popen([sys.executable, "-m", module, *args], env=env, cwd=ROOT,
                            stdout=out, stderr=subprocess.STDOUT if out else None)


def query(dsn: str, sql: str, *params: object) -> list[tuple[object, ...]]:
    """Run one query and return all rows."""
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]
