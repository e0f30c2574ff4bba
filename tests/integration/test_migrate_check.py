"""python -m core.migrate --check against a real Postgres: lists pending and drifted files, applies nothing."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid

import pytest

from core.migrate import MIGRATIONS_DIR, apply_migrations, migration_status
from tests.conftest import ROOT, query

pytestmark = pytest.mark.integration


def _check(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "core.migrate", "--dsn", dsn, "--check", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def _databases(pg_server: str) -> set[object]:
    return {r[0] for r in query(f"{pg_server}/postgres", "SELECT datname FROM pg_database")}


def test_check_lists_pending_before_and_none_after_apply(pg_server, tmp_path):
    d = tmp_path / "mig"
    shutil.copytree(MIGRATIONS_DIR, d)
    names = sorted(p.name for p in d.glob("*.sql"))
    name = f"c_{uuid.uuid4().hex[:8]}"
    dsn = f"{pg_server}/{name}"

    r = _check(dsn, "--dir", str(d))  # the database does not exist yet
    assert r.returncode == 1, r.stderr
    assert [ln.split()[1] for ln in r.stdout.splitlines() if ln.startswith("pending ")] == names
    assert f"0 applied, {len(names)} pending, 0 drift" in r.stdout
    assert name not in _databases(pg_server)  # --check created nothing

    apply_migrations(dsn, d)
    r = _check(dsn, "--dir", str(d))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"migrations: {len(names)} applied, 0 pending, 0 drift"

    # One new file: pending, and --check does not apply it.
    (d / "9999_later.sql").write_text("CREATE TABLE later_t (x int);\n")
    r = _check(dsn, "--dir", str(d))
    assert r.returncode == 1
    assert "pending 9999_later.sql" in r.stdout.splitlines()
    assert query(dsn, "SELECT to_regclass('later_t')") == [(None,)]
    assert query(dsn, "SELECT count(*) FROM schema_migrations") == [(len(names),)]


def test_check_reports_checksum_drift_and_removed_files(pg_server, tmp_path):
    d = tmp_path / "mig"
    shutil.copytree(MIGRATIONS_DIR, d)
    dsn = f"{pg_server}/c_{uuid.uuid4().hex[:8]}"
    apply_migrations(dsn, d)
    files = sorted(d.glob("*.sql"))
    files[0].write_text(files[0].read_text() + "\n-- edited\n")
    files[-1].unlink()

    status = migration_status(dsn, d)
    assert not status.clean and status.pending == []
    assert [x.split(":")[0] for x in status.drift] == [files[0].name, files[-1].name]

    r = _check(dsn, "--dir", str(d))
    assert r.returncode == 1
    drift = [ln for ln in r.stdout.splitlines() if ln.startswith("drift ")]
    assert len(drift) == 2
    assert drift[0].startswith(f"drift {files[0].name}: edited after it was applied")
    assert drift[1] == f"drift {files[-1].name}: applied but missing from {d}"


def test_check_of_a_migrated_database_with_the_shipped_files_is_clean(pg_dsn):
    r = _check(pg_dsn)
    assert r.returncode == 0, r.stdout + r.stderr
    assert " 0 pending, 0 drift" in r.stdout


def test_check_usage_errors_exit_2(pg_dsn, tmp_path):
    assert _check(pg_dsn, "--dir", str(tmp_path / "nope")).returncode == 2  # no such directory
    r = subprocess.run([sys.executable, "-m", "core.migrate", "--check", "--bogus"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
