"""merge_hist_daily repairs a day of bars_1m from kitesim's historical candles (and vendor CSV); reruns are no-ops."""

from __future__ import annotations

import csv
import subprocess
import sys
import time
from datetime import datetime, timedelta

import psycopg
import pytest
from kiteconnect import KiteConnect

from kitesim.clock import IST, previous_trading_day
from tests.conftest import ROOT, query
from tests.integration.kite_harness import KiteSim, write_universe

pytestmark = pytest.mark.integration
DAY = previous_trading_day(datetime.now(IST).date())  # synthesised by kitesim, deterministic for the seed


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    d = tmp_path_factory.mktemp("merge")
    universe = d / "tokens.csv"
    tokens = write_universe(universe, 4, skip_indices=True)
    s = KiteSim(universe, d / "kitesim.log", 21)
    s.start()
    s.universe, s.token_list = universe, tokens  # type: ignore[attr-defined]
    # The reference day, fetched once (kitesim enforces Kite's 3 historical requests/s).
    kite = KiteConnect("sim", "sim-token", root=s.rest_root)
    s.reference = {}  # type: ignore[attr-defined]
    for t in tokens:
        s.reference[t] = kite.historical_data(t, f"{DAY} 09:15:00", f"{DAY} 15:30:00", "minute")
        time.sleep(0.4)
    yield s
    s.stop()


def _candles(sim: KiteSim, token: int) -> list[dict]:
    return sim.reference[token]  # type: ignore[attr-defined]


def _seed(dsn: str, token: int, candles: list[dict]) -> None:
    with psycopg.connect(dsn) as conn:
        conn.cursor().executemany(
            "INSERT INTO bars_1m (instrument_token, ts, open, high, low, close, volume, ticks) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, 5)",
            [(token, r["date"], r["open"], r["high"], r["low"], r["close"], r["volume"]) for r in candles])


def _bars(dsn: str, token: int) -> list[tuple]:
    return query(dsn, "SELECT ts, open, high, low, close, volume FROM bars_1m WHERE instrument_token = %s "
                      "AND ts >= %s AND ts < %s ORDER BY ts", token,
                 datetime(DAY.year, DAY.month, DAY.day, tzinfo=IST), datetime(DAY.year, DAY.month, DAY.day,
                                                                              tzinfo=IST) + timedelta(days=1))


def _as_rows(candles: list[dict]) -> list[tuple]:
    return [(r["date"], r["open"], r["high"], r["low"], r["close"], r["volume"]) for r in candles]


def _merge(sim: KiteSim, dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"POSTGRES_DSN": dsn, "KITE_ROOT": sim.rest_root, "KITE_API_KEY": "sim", "KITE_ACCESS_TOKEN": "sim-token",
           "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "ingestion.merge_hist_daily", "--date", str(DAY),
                           "--universe", str(sim.universe), *args],  # type: ignore[attr-defined]
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_gaps_and_wrong_bar_when_merged_then_bars_equal_candles_and_rerun_changes_nothing(sim, fresh_pg_dsn):
    # Arrange: a complete day for three instruments, then damage two of them.
    a, b, c = sim.token_list[:3]
    ref = {t: _candles(sim, t) for t in (a, b, c)}
    assert all(len(v) == 375 for v in ref.values())
    for t in (a, b, c):
        _seed(fresh_pg_dsn, t, ref[t])
    gaps_a = [r["date"] for r in ref[a][10:15]]  # five missing minutes
    gaps_b = [ref[b][0]["date"], ref[b][200]["date"], ref[b][374]["date"]]
    wrong = ref[b][100]
    with psycopg.connect(fresh_pg_dsn) as conn:
        conn.execute("DELETE FROM bars_1m WHERE instrument_token = %s AND ts = ANY(%s)", (a, gaps_a))
        conn.execute("DELETE FROM bars_1m WHERE instrument_token = %s AND ts = ANY(%s)", (b, gaps_b))
        conn.execute("UPDATE bars_1m SET close = close + 0.5, high = greatest(high, close + 0.5), volume = volume * 2 "
                     "WHERE instrument_token = %s AND ts = %s", (b, wrong["date"]))

    # Act
    r1 = _merge(sim, fresh_pg_dsn, "--tokens", f"{a},{b},{c}")

    # Assert: repaired to equal the candles, every change recorded with field-level values.
    assert r1.returncode == 0, r1.stderr
    assert "gaps_filled=8 corrected=1" in r1.stdout.splitlines()[-1]
    assert len([ln for ln in r1.stdout.splitlines() if ln.startswith("[")]) == 3  # progress per instrument
    for t in (a, b, c):
        assert _bars(fresh_pg_dsn, t) == _as_rows(ref[t])
    corr = query(fresh_pg_dsn, "SELECT instrument_token, tf, ts, action, reason, old_values, new_values, source "
                               "FROM bar_corrections ORDER BY instrument_token, ts")
    assert len(corr) == 9
    assert {(x[0], x[3]) for x in corr} == {(a, "insert"), (b, "insert"), (b, "update")}
    (upd,) = [x for x in corr if x[3] == "update"]
    assert upd[1] == "1m" and upd[2] == wrong["date"] and upd[4] == "mismatch" and upd[7] == "kite"
    assert upd[5]["close"] == pytest.approx(wrong["close"] + 0.5) and upd[6]["close"] == wrong["close"]
    assert upd[5]["volume"] == wrong["volume"] * 2 and upd[6]["volume"] == wrong["volume"]
    gap = next(x for x in corr if x[3] == "insert")
    assert gap[5] is None and set(gap[6]) == {"open", "high", "low", "close", "volume"}
    runs = query(fresh_pg_dsn, "SELECT status, instruments, inserted, updated, unchanged, source FROM merge_runs")
    assert runs == [("ok", 3, 8, 1, 3 * 375 - 9, "kite")]

    # Act + Assert: a rerun changes nothing and records no correction.
    stamps = query(fresh_pg_dsn, "SELECT max(updated_at) FROM bars_1m")
    r2 = _merge(sim, fresh_pg_dsn, "--tokens", f"{a},{b},{c}")
    assert r2.returncode == 0, r2.stderr
    assert "gaps_filled=0 corrected=0" in r2.stdout.splitlines()[-1]
    assert query(fresh_pg_dsn, "SELECT count(*) FROM bar_corrections") == [(9,)]
    assert query(fresh_pg_dsn, "SELECT max(updated_at) FROM bars_1m") == stamps
    assert query(fresh_pg_dsn, "SELECT inserted, updated FROM merge_runs ORDER BY started_at") == [(8, 1), (0, 0)]


def test_tolerance_and_dry_run_when_merged_then_small_differences_kept_and_nothing_written(sim, fresh_pg_dsn):
    a = sim.token_list[0]
    ref = _candles(sim, a)
    _seed(fresh_pg_dsn, a, ref)
    with psycopg.connect(fresh_pg_dsn) as conn:  # one tick off on one bar, five ticks off on another
        conn.execute("UPDATE bars_1m SET close = close + 0.05, high = greatest(high, close + 0.05) "
                     "WHERE instrument_token = %s AND ts = %s", (a, ref[5]["date"]))
        conn.execute("UPDATE bars_1m SET close = close + 0.25, high = greatest(high, close + 0.25) "
                     "WHERE instrument_token = %s AND ts = %s", (a, ref[6]["date"]))
    before = _bars(fresh_pg_dsn, a)

    dry = _merge(sim, fresh_pg_dsn, "--tokens", str(a), "--tolerance", "price=2ticks", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "corrected=1" in dry.stdout and "would update" in dry.stdout and "-5 ticks" in dry.stdout
    assert _bars(fresh_pg_dsn, a) == before
    assert query(fresh_pg_dsn, "SELECT count(*) FROM merge_runs") == [(0,)]

    real = _merge(sim, fresh_pg_dsn, "--tokens", str(a), "--tolerance", "price=2ticks")
    assert real.returncode == 0, real.stderr
    after = _bars(fresh_pg_dsn, a)
    assert after[6] == _as_rows(ref)[6] and after[5] == before[5]  # 5 ticks corrected, 1 tick tolerated


def test_vendor_csv_source_when_merged_then_gaps_filled(sim, fresh_pg_dsn, tmp_path):
    a, b = sim.token_list[:2]
    ref = {t: _candles(sim, t) for t in (a, b)}
    csv_dir = tmp_path / "vendor"
    csv_dir.mkdir()
    with (csv_dir / f"{DAY}.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["instrument_token", "ts", "open", "high", "low", "close", "volume"])
        for t in (a, b):
            for r in ref[t]:
                w.writerow([t, r["date"].strftime("%Y-%m-%d %H:%M:%S"), r["open"], r["high"], r["low"], r["close"],
                            r["volume"]])
    _seed(fresh_pg_dsn, a, ref[a][:100])  # b has nothing at all
    res = _merge(sim, fresh_pg_dsn, "--tokens", f"{a},{b}", "--source", "csv", "--csv-dir", str(csv_dir))
    assert res.returncode == 0, res.stderr
    assert "gaps_filled=650 corrected=0" in res.stdout
    assert _bars(fresh_pg_dsn, a) == _as_rows(ref[a]) and _bars(fresh_pg_dsn, b) == _as_rows(ref[b])
    assert query(fresh_pg_dsn, "SELECT DISTINCT source FROM bar_corrections") == [("csv",)]


@pytest.mark.parametrize("args, needle", [
    (["--source", "csv"], "--csv-dir"),
    (["--date", "2999-01-01"], "future"),
    (["--tolerance", "price=lots"], "--tolerance"),
    (["--tokens", "NSE:NOSUCH"], "NSE:NOSUCH"),
    (["--session", "15:30-09:15"], "--session"),
])
def test_bad_arguments_exit_2_with_one_line(sim, fresh_pg_dsn, args, needle):
    res = _merge(sim, fresh_pg_dsn, *args)
    assert res.returncode == 2, res.stdout + res.stderr
    assert needle in res.stderr and "Traceback" not in res.stderr
