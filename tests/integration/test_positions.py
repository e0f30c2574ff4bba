"""Positions at average cost, kept from ``fills`` by a trigger (14_paper.sql), and the ``position_pnl`` view."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 20, 4, 0, tzinfo=UTC)


def fill(conn: psycopg.Connection, n: int, side: str, qty: int, price: float, strategy: str = "pos_1m") -> None:
    conn.execute("INSERT INTO fills (fill_id, order_id, instrument_token, side, qty, price, ts, venue, strategy) "
                 "VALUES (%s, %s, 408065, %s, %s, %s, %s, 'paper', %s)",
                 (f"pf{strategy}{n}", f"po{n}", side, qty, price, T0 + timedelta(seconds=n), strategy))


def position(conn: psycopg.Connection, strategy: str = "pos_1m") -> tuple:
    return conn.execute("SELECT net_qty, avg_price, realized_pnl FROM positions WHERE strategy = %s",
                        (strategy,)).fetchone()


def test_fills_keep_average_cost_realised_pnl_and_flips(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as conn:
        fill(conn, 1, "BUY", 10, 100.0)
        fill(conn, 2, "BUY", 10, 110.0)
        assert position(conn) == (20, pytest.approx(105.0), 0.0)
        fill(conn, 3, "SELL", 5, 120.0)  # closes 5 at +15 each; the rest keeps its cost
        assert position(conn) == (15, pytest.approx(105.0), pytest.approx(75.0))
        fill(conn, 4, "SELL", 25, 100.0)  # closes 15 at -5 each, opens 10 short at 100
        assert position(conn) == (-10, pytest.approx(100.0), pytest.approx(0.0))
        fill(conn, 5, "BUY", 10, 90.0)  # covers the short at +10 each: flat
        assert position(conn) == (0, 0.0, pytest.approx(100.0))
        # a duplicate fill id changes nothing (ON CONFLICT DO NOTHING fires no trigger)
        conn.execute("INSERT INTO fills (fill_id, order_id, instrument_token, side, qty, price, ts, venue, strategy) "
                     "VALUES ('pfpos_1m5', 'po5', 408065, 'BUY', 10, 90, now(), 'paper', 'pos_1m') "
                     "ON CONFLICT DO NOTHING")
        assert position(conn) == (0, 0.0, pytest.approx(100.0))


def test_position_pnl_marks_the_open_quantity_to_the_latest_1s_bar(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as conn:
        fill(conn, 1, "BUY", 4, 100.0, "pnl_1m")
        fill(conn, 2, "SELL", 1, 103.0, "pnl_1m")
        for sec, close in ((10, 101.0), (20, 106.0)):
            conn.execute("INSERT INTO bars_1s (instrument_token, ts, open, high, low, close, volume, ticks) "
                         "VALUES (408065, %s, %s, %s, %s, %s, 1, 1)",
                         (T0 + timedelta(seconds=sec), close, close, close, close))
        row = conn.execute("SELECT net_qty, avg_price, realized_pnl, mark_price, unrealized_pnl, total_pnl "
                           "FROM position_pnl WHERE strategy = 'pnl_1m'").fetchone()
    assert row == (3, pytest.approx(100.0), pytest.approx(3.0), 106.0, pytest.approx(18.0), pytest.approx(21.0))


def test_migration_replays_fills_recorded_before_it_at_average_cost(pg_server: str, tmp_path) -> None:
    """A database upgraded to 14_paper.sql with fills already recorded gets the same positions as live."""
    import shutil
    import uuid

    from core.migrate import MIGRATIONS_DIR, apply_migrations

    before = tmp_path / "before"
    before.mkdir()
    for f in sorted(MIGRATIONS_DIR.glob("*.sql")):
        if f.name < "14_":
            shutil.copy(f, before / f.name)
    dsn = f"{pg_server}/t_{uuid.uuid4().hex[:10]}"
    apply_migrations(dsn, before)
    with psycopg.connect(dsn) as conn:  # the old trigger: sums only
        for n, (side, qty, px) in enumerate([("BUY", 10, 100.0), ("BUY", 10, 110.0), ("SELL", 25, 100.0)]):
            fill(conn, n, side, qty, px, "old_1m")
    assert "14_paper.sql" in apply_migrations(dsn)
    with psycopg.connect(dsn) as conn:
        assert position(conn, "old_1m") == (-5, pytest.approx(100.0), pytest.approx(-100.0))
        fill(conn, 9, "BUY", 5, 90.0, "old_1m")  # and the new trigger carries on from there
        assert position(conn, "old_1m") == (0, 0.0, pytest.approx(-50.0))
