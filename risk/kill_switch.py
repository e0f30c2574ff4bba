"""The kill switch: block every new entry (exits always pass), state in Postgres.

    python -m risk.kill_switch on [--reason TEXT]
    python -m risk.kill_switch off [--reason TEXT]
    python -m risk.kill_switch status

The budget guard reads the switch at every batch, so an entry decided after ``on`` returns is
refused (REJECTED_BUDGET ``kill_switch``); the guard's ``kill_switch`` gauge and log show it.
Every change is kept in ``risk_kill_switch_log``. Uses ``POSTGRES_DSN`` (``.env`` as for the services).
Exit codes: 0 done (``status``: 0 whatever the state), 2 usage, 1 database unreachable.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from datetime import datetime
from typing import Any

import psycopg

from core import db
from core.errors import TransientError
from core.settings import load_settings


def set_switch(conn: psycopg.Connection[Any], active: bool, reason: str | None, by: str) -> None:
    """Turn the switch on/off (in the caller's transaction) and log the change."""
    conn.execute(
        "INSERT INTO risk_kill_switch (id, active, reason, changed_by, changed_at) VALUES (true, %s, %s, %s, now()) "
        "ON CONFLICT (id) DO UPDATE SET active = EXCLUDED.active, reason = EXCLUDED.reason, "
        "changed_by = EXCLUDED.changed_by, changed_at = EXCLUDED.changed_at", (active, reason, by))
    conn.execute("INSERT INTO risk_kill_switch_log (active, reason, changed_by) VALUES (%s, %s, %s)",
                 (active, reason, by))


def get_switch(conn: psycopg.Connection[Any]) -> tuple[bool, str | None, str | None, datetime | None]:
    """(active, reason, changed_by, changed_at); never set: off."""
    row = conn.execute("SELECT active, reason, changed_by, changed_at FROM risk_kill_switch WHERE id").fetchone()
    return (bool(row[0]), row[1], row[2], row[3]) if row else (False, None, None, None)


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    ap = argparse.ArgumentParser(prog="python -m risk.kill_switch", description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=("on", "off", "status"), help="on: block new entries; off: allow; status")
    ap.add_argument("--reason", help="why (shown by status, logged by the guard)")
    ap.add_argument("--dsn", help="Postgres DSN (default POSTGRES_DSN)")
    args = ap.parse_args(argv)
    dsn = args.dsn or load_settings().dsn
    try:
        conn = db.connect(dsn, timeout=10)
    except TransientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        with conn, conn.transaction():
            try:
                if args.action != "status":
                    set_switch(conn, args.action == "on", args.reason, _who())
                active, reason, by, at = get_switch(conn)
            except psycopg.errors.UndefinedTable:
                print("error: table risk_kill_switch missing: run `python -m core.migrate` (make up does)",
                      file=sys.stderr)
                return 1
    finally:
        conn.close()
    state = "ON (new entries blocked, exits pass)" if active else "off (entries allowed)"
    when = f" since {at.isoformat(timespec='seconds')}" if at else ""
    print(f"kill switch: {state}{when}" + (f" by {by}" if by else "") + (f" reason: {reason}" if reason else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
