"""python -m core.migrate against a real Postgres: once each, idempotent, checksum-verified."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid

import pytest

from core.errors import ConfigError
from core.migrate import MIGRATIONS_DIR, apply_migrations
from tests.conftest import ROOT, query

pytestmark = pytest.mark.integration


def test_migrations_apply_once_then_twice_without_change(pg_server):
    dsn = f"{pg_server}/m_{uuid.uuid4().hex[:8]}"
    first = apply_migrations(dsn)
    assert first == sorted(p.name for p in MIGRATIONS_DIR.glob("*.sql"))
    tables = {r[0] for r in query(dsn, "SELECT tablename FROM pg_tables WHERE schemaname='public'")}
    assert {"instruments", "bars_1s", "bars_1m", "bars_3m", "bars_5m", "bars_15m", "bars_30m", "bars_60m",
            "orders", "order_audit", "live_orders", "fills", "schema_migrations"} <= tables
    assert apply_migrations(dsn) == []
    # the CLI agrees
    r = subprocess.run([sys.executable, "-m", "core.migrate", "--dsn", dsn], cwd=ROOT, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    assert "applied=0" in r.stderr


def test_sql_files_are_idempotent_on_their_own(pg_dsn):
    # Re-running the raw SQL (as docker's initdb then core.migrate would) changes nothing.
    import psycopg

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        for f in sorted(MIGRATIONS_DIR.glob("*.sql")):
            conn.execute(f.read_text())


def test_edited_applied_migration_is_an_error(pg_server, tmp_path):
    d = tmp_path / "mig"
    shutil.copytree(MIGRATIONS_DIR, d)
    dsn = f"{pg_server}/m_{uuid.uuid4().hex[:8]}"
    apply_migrations(dsn, d)
    first = sorted(d.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited\n")
    with pytest.raises(ConfigError, match="different checksum"):
        apply_migrations(dsn, d)
    r = subprocess.run([sys.executable, "-m", "core.migrate", "--dsn", dsn, "--dir", str(d)], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert first.name in r.stderr and len(r.stderr.strip().splitlines()) == 1
