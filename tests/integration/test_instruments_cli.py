"""python -m ingestion.instruments: sync from (simulated) Kite into Postgres, export tokens.csv back."""

from __future__ import annotations

import subprocess
import sys

import pytest

from core.universe import load_universe
from tests.conftest import ROOT, query
from tests.integration.kite_harness import TOKENS_CSV, KiteSim

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    s = KiteSim(TOKENS_CSV, tmp_path_factory.mktemp("instr") / "kitesim.log", 2)
    s.start()
    yield s
    s.stop()


def _cli(sim: KiteSim, dsn: str, *args: str, token: str = "sim-token") -> subprocess.CompletedProcess[str]:
    env = {"POSTGRES_DSN": dsn, "KITE_ROOT": sim.rest_root, "KITE_API_KEY": "sim", "KITE_ACCESS_TOKEN": token,
           "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "ingestion.instruments", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_sync_when_rerun_then_idempotent_and_changes_detected(sim, fresh_pg_dsn):
    n = len(load_universe(TOKENS_CSV))
    first = _cli(sim, fresh_pg_dsn, "sync")
    assert first.returncode == 0, first.stderr
    assert f"fetched={n} unique={n} inserted={n} updated=0 unchanged=0" in first.stdout
    assert query(fresh_pg_dsn, "SELECT count(*) FROM instruments") == [(n,)]
    stamp = query(fresh_pg_dsn, "SELECT max(updated_at) FROM instruments")

    again = _cli(sim, fresh_pg_dsn, "sync")
    assert f"inserted=0 updated=0 unchanged={n}" in again.stdout
    assert query(fresh_pg_dsn, "SELECT max(updated_at) FROM instruments") == stamp

    query(fresh_pg_dsn, "UPDATE instruments SET lot_size = 99 WHERE instrument_token = 738561 RETURNING 1")
    query(fresh_pg_dsn, "INSERT INTO instruments (instrument_token, tradingsymbol, exchange) "
                        "VALUES (1, 'DELISTED', 'NSE') RETURNING 1")
    fixed = _cli(sim, fresh_pg_dsn, "sync", "--exchange", "NSE")
    assert "updated=1" in fixed.stdout and "absent_from_dump=1" in fixed.stdout
    assert query(fresh_pg_dsn, "SELECT lot_size FROM instruments WHERE instrument_token = 738561") == [(1,)]


def test_export_when_everything_selected_then_tokens_csv_round_trips(sim, fresh_pg_dsn, tmp_path):
    assert _cli(sim, fresh_pg_dsn, "sync").returncode == 0
    out = tmp_path / "tokens.csv"
    res = _cli(sim, fresh_pg_dsn, "export", "--out", str(out))
    assert res.returncode == 0, res.stderr
    exported = {i.instrument_token: i for i in load_universe(out)}
    original = {i.instrument_token: i for i in load_universe(TOKENS_CSV)}
    assert exported == original


def test_export_filters_and_symbol_order(sim, fresh_pg_dsn, tmp_path):
    assert _cli(sim, fresh_pg_dsn, "sync").returncode == 0
    out = tmp_path / "eq.csv"
    res = _cli(sim, fresh_pg_dsn, "export", "--exchange", "NSE", "--segment", "NSE", "--instrument-type", "EQ",
               "--limit", "5", "--out", str(out))
    assert res.returncode == 0, res.stderr
    rows = load_universe(out)
    assert len(rows) == 5 and all((r.exchange, r.segment, r.instrument_type) == ("NSE", "NSE", "EQ") for r in rows)

    res = _cli(sim, fresh_pg_dsn, "export", "--symbols", "NSE:TCS,INFY", "--symbols", "NSE:NIFTY 50,NSE:NOPE")
    assert res.returncode == 0, res.stderr
    keys = [f"{ln.split(',')[4]}:{ln.split(',')[2]}" for ln in res.stdout.splitlines()[1:]]
    assert keys == ["NSE:TCS", "BSE:INFY", "NSE:INFY", "NSE:NIFTY 50"]
    assert "symbols not found: NSE:NOPE" in res.stderr

    none = _cli(sim, fresh_pg_dsn, "export", "--exchange", "MCX")
    assert none.returncode == 2 and "no instrument matches" in none.stderr


def test_sync_with_rejected_token_then_exit_3_one_line(sim, fresh_pg_dsn):
    res = _cli(sim, fresh_pg_dsn, "sync", token="expired")
    assert res.returncode == 3
    assert res.stderr.strip().count("\n") == 0 and "KITE_ACCESS_TOKEN" in res.stderr
