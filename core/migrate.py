"""Apply ``infra/postgres/init/*.sql`` to ``POSTGRES_DSN``, each once, in order.

Applied files are tracked in ``schema_migrations`` with a SHA-256 checksum; an
applied file that was edited afterwards is an error (write a new migration).
Creates the target database first if it does not exist. Usage::

    python -m core.migrate [--dsn DSN] [--dir infra/postgres/init] [--check]

``--check`` applies nothing and creates nothing: it lists pending migrations and
checksum drift (applied files edited or removed since) and exits 0 when there are
none, 1 when there are (or the server cannot be reached), 2 on a usage error.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from psycopg import sql

from core.cli import run_cli
from core.db import connect
from core.errors import EXIT_OK, EXIT_UNEXPECTED, ConfigError
from core.logs import setup_logging
from core.settings import PROJECT_ROOT, load_settings

log = logging.getLogger("migrate")
MIGRATIONS_DIR = PROJECT_ROOT / "infra" / "postgres" / "init"
_LOCK_ID = 7_202_611  # pg_advisory_lock key: one migrator at a time

_TRACK = """CREATE TABLE IF NOT EXISTS schema_migrations (
    filename text PRIMARY KEY,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now())"""


def checksum(path: Path) -> str:
    """SHA-256 of the file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def migration_files(directory: Path) -> list[Path]:
    """The ``*.sql`` files in lexical order."""
    if not directory.is_dir():
        raise ConfigError(f"{directory}: migrations directory not found")
    return sorted(directory.glob("*.sql"))


def _admin_target(dsn: str) -> tuple[str, str] | None:
    """(maintenance-db DSN, database name) for a DSN naming its own database, else None."""
    parts = urlsplit(dsn)
    dbname = parts.path.lstrip("/")
    if not dbname or dbname == "postgres" or not parts.scheme.startswith("postgres"):
        return None
    return urlunsplit(parts._replace(path="/postgres")), dbname


def ensure_database(dsn: str, timeout: float = 30.0) -> None:
    """Create the DSN's database if missing, connecting to the ``postgres`` maintenance db."""
    target = _admin_target(dsn)
    if target is None:
        return
    admin_dsn, dbname = target
    with connect(admin_dsn, timeout=timeout, autocommit=True) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if not found:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
            log.info("database created name=%s", dbname)


def apply_migrations(dsn: str, directory: Path = MIGRATIONS_DIR, timeout: float = 30.0) -> list[str]:
    """Apply pending migrations; returns the names applied. Raises ConfigError on checksum drift."""
    files = migration_files(directory)
    ensure_database(dsn, timeout)
    applied_now: list[str] = []
    with connect(dsn, timeout=timeout, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
        try:
            conn.execute(_TRACK)
            done = dict(conn.execute("SELECT filename, checksum FROM schema_migrations").fetchall())
            for f in files:
                digest = checksum(f)
                if f.name in done:
                    if done[f.name] != digest:
                        raise ConfigError(f"{f}: already applied with a different checksum; "
                                          "applied migrations must not be edited, add a new file")
                    continue
                with conn.transaction():
                    conn.execute(f.read_text(encoding="utf-8"))
                    conn.execute("INSERT INTO schema_migrations (filename, checksum) VALUES (%s, %s)",
                                 (f.name, digest))
                log.info("migration applied file=%s", f.name)
                applied_now.append(f.name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
    return applied_now


@dataclass
class MigrationStatus:
    """What ``apply_migrations`` would do: files ``pending``, and ``drift`` (``name: why``) it would refuse."""

    applied: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    drift: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """Nothing pending and no drift."""
        return not self.pending and not self.drift


def _database_exists(dsn: str, timeout: float) -> bool:
    target = _admin_target(dsn)
    if target is None:
        return True
    with connect(target[0], timeout=timeout, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (target[1],)).fetchone() is not None


def migration_status(dsn: str, directory: Path = MIGRATIONS_DIR, timeout: float = 30.0) -> MigrationStatus:
    """Compare ``directory`` with ``schema_migrations`` read-only (no database, table or row is created)."""
    files = migration_files(directory)
    done: dict[str, str] = {}
    if _database_exists(dsn, timeout):
        with connect(dsn, timeout=timeout, autocommit=True) as conn:
            if conn.execute("SELECT to_regclass('schema_migrations')").fetchone() != (None,):
                done = dict(conn.execute("SELECT filename, checksum FROM schema_migrations").fetchall())
    status = MigrationStatus()
    for f in files:
        if f.name not in done:
            status.pending.append(f.name)
        elif done[f.name] != (digest := checksum(f)):
            status.drift.append(f"{f.name}: edited after it was applied (applied sha256 {done[f.name][:12]}, "
                                f"file {digest[:12]})")
        else:
            status.applied.append(f.name)
    on_disk = {f.name for f in files}
    status.drift += [f"{name}: applied but missing from {directory}" for name in sorted(done) if name not in on_disk]
    return status


def _report(status: MigrationStatus) -> int:
    for name in status.pending:
        print(f"pending {name}")
    for line in status.drift:
        print(f"drift {line}")
    print(f"migrations: {len(status.applied)} applied, {len(status.pending)} pending, {len(status.drift)} drift")
    return EXIT_OK if status.clean else EXIT_UNEXPECTED


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    ap = argparse.ArgumentParser(prog="python -m core.migrate", description=__doc__.splitlines()[0])
    ap.add_argument("--dsn", help="Postgres DSN (default: POSTGRES_DSN)")
    ap.add_argument("--dir", type=Path, default=MIGRATIONS_DIR, help="migrations directory")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the server")
    ap.add_argument("--check", action="store_true",
                    help="apply nothing: list pending migrations and checksum drift; exit 1 if any")
    args = ap.parse_args(argv)
    setup_logging("migrate")

    def body() -> int:
        dsn = args.dsn or load_settings().dsn
        if args.check:
            return _report(migration_status(dsn, args.dir, args.timeout))
        applied = apply_migrations(dsn, args.dir, args.timeout)
        log.info("migrations done applied=%d total=%d", len(applied), len(migration_files(args.dir)))
        return EXIT_OK

    return run_cli(body)

if __name__ == "__main__":
    sys.exit(main())
