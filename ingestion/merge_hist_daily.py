"""Repair a day's 1-minute bars from a reference: Kite historical candles or vendor CSV files.

    python -m ingestion.merge_hist_daily --date 2026-11-20 [--tokens 738561,NSE:INFY ...]
        [--source kite|csv --csv-dir DIR] [--tolerance price=1tick,volume=0] [--dry-run]

For every instrument (default: the universe in ``tokens.csv``) it takes the
reference minute candles of the IST session (the exchange calendar's, configs/sessions.yaml),
compares them with ``bars_1m``, inserts missing minutes (gaps) and overwrites
bars that differ beyond the tolerance (see :mod:`ingestion.bar_merge`). Every
change is recorded in ``bar_corrections`` (field-level old/new values, source,
reason, run id) in the same transaction as the bar write, and each run in
``merge_runs``; a one-line summary is printed per instrument and for the run.
A rerun against the same reference finds nothing to change and records no
correction (it still records its ``merge_runs`` row, the proof it checked).

Kite: ``KiteConnect.historical_data(token, from, to, "minute")``, at most
``--rate`` requests per second (Kite allows 3), 429/5xx retried with backoff.
Vendor CSV: every ``*.csv`` under ``--csv-dir``; format in
:func:`ingestion.bar_merge.read_vendor_csv`. Run it after the session closes:
the live bar pipeline may still be writing today's bars before that.

Exit codes: 0 ok, 1 some instruments could not be fetched (or Postgres/Kite
unreachable), 2 bad arguments, 3 Kite rejected the access token.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import psycopg
from kiteconnect import KiteConnect, exceptions as kite_ex
from psycopg.types.json import Jsonb

from core.cli import run_cli
from core.db import connect
from core.errors import EXIT_OK, EXIT_UNEXPECTED, ConfigError, TransientError
from core.logs import setup_logging
from core.settings import load_settings
from core.universe import Instrument, load_universe
from ingestion.bar_merge import (
    IST,
    Candle,
    MergePlan,
    Tolerance,
    plan_merge,
    read_vendor_csv,
    session_window,
)
from ingestion.kite_history import KiteSource, history_limiter

log = logging.getLogger("merge_hist_daily")
TF = "1m"
BAR_TFS = ("1m", "3m", "5m", "15m", "30m", "60m")
DEFAULT_TICK = 0.05


@dataclass
class Outcome:
    """One instrument's result."""

    token: int
    label: str
    plan: MergePlan | None
    error: str = ""


# -- reference sources ------------------------------------------------------------------------

class CsvSource:
    """Minute candles from vendor CSV files (read once)."""

    name = "csv"

    def __init__(self, directory: Path, resolve: Callable[[str], int | None]) -> None:
        files = sorted(directory.rglob("*.csv"))
        if not files:
            raise ConfigError(f"{directory}: no *.csv files")
        self.by_token: dict[int, dict[int, Candle]] = {}
        self.skipped = 0
        for f in files:
            try:
                per_token, skipped = read_vendor_csv(f.read_text(encoding="utf-8"), resolve)
            except ConfigError as exc:
                raise ConfigError(f"{f}: {exc}") from None
            self.skipped += skipped
            for token, candles in per_token.items():
                book = self.by_token.setdefault(token, {})
                for c in candles:
                    book[c.ts] = c  # a later file wins for the same minute
        self.files = len(files)

    def candles(self, token: int, window: tuple[int, int]) -> list[Candle]:
        return [c for ts, c in sorted(self.by_token.get(token, {}).items()) if window[0] <= ts < window[1]]


# -- database ----------------------------------------------------------------------------------

def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _bars_table(tf: str) -> str:
    if tf not in BAR_TFS:
        raise ValueError(f"unknown timeframe {tf!r}")
    return f"bars_{tf}"


def load_bars(conn: psycopg.Connection[Any], token: int, window: tuple[int, int], tf: str = TF) -> dict[int, Candle]:
    """Our ``tf`` bars (default 1m) of ``token`` inside the window, keyed by bucket start ms."""
    rows = conn.execute(
        f"SELECT (extract(epoch FROM ts) * 1000)::bigint, open, high, low, close, volume FROM {_bars_table(tf)} "
        "WHERE instrument_token = %s AND ts >= %s AND ts < %s", (token, _dt(window[0]), _dt(window[1]))).fetchall()
    return {int(r[0]): Candle(int(r[0]), float(r[1]), float(r[2]), float(r[3]), float(r[4]), int(r[5]))
            for r in rows}


def apply_plan(conn: psycopg.Connection[Any], token: int, plan: MergePlan, run_id: uuid.UUID, source: str,
               tf: str = TF) -> None:
    """Write the plan's bars (into ``bars_<tf>``, default 1m) and their corrections in one transaction."""
    if not plan.changes:
        return
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO {_bars_table(tf)} (instrument_token, ts, open, high, low, close, volume, ticks) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, 0) ON CONFLICT (instrument_token, ts) DO UPDATE SET "
            "open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close, "
            "volume = EXCLUDED.volume, updated_at = now()",
            [(token, _dt(c.ts), c.bar.open, c.bar.high, c.bar.low, c.bar.close, c.bar.volume) for c in plan.changes])
        cur.executemany(
            "INSERT INTO bar_corrections (run_id, instrument_token, tf, ts, action, reason, detail, old_values, "
            "new_values, source) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [(run_id, token, tf, _dt(c.ts), c.action, c.reason, c.detail,
              Jsonb(c.old) if c.old is not None else None, Jsonb(c.new), source) for c in plan.changes])


def start_run(conn: psycopg.Connection[Any], run_id: uuid.UUID, day: date, source: str, tol: Tolerance,
              tf: str = TF, dry_run: bool = False) -> None:
    """Record a run as ``running`` (its corrections reference it)."""
    with conn.transaction():
        conn.execute("INSERT INTO merge_runs (run_id, trade_date, tf, source, tolerance, dry_run) "
                     "VALUES (%s, %s, %s, %s, %s, %s)", (run_id, day, tf, source, Jsonb(tol.as_dict()), dry_run))


def finish_run(conn: psycopg.Connection[Any], run_id: uuid.UUID, outcomes: list[Outcome], status: str) -> None:
    totals = _totals(outcomes)
    per = {str(o.token): ({"error": o.error} if o.plan is None else
                          {"reference": o.plan.reference, "inserted": o.plan.inserted, "updated": o.plan.updated,
                           "unchanged": o.plan.unchanged, "extra": o.plan.extra, "invalid": len(o.plan.invalid)})
           for o in outcomes}
    with conn.transaction():
        conn.execute(
            "UPDATE merge_runs SET status = %s, instruments = %s, reference = %s, inserted = %s, updated = %s, "
            "unchanged = %s, extra = %s, invalid = %s, failed = %s, per_instrument = %s, finished_at = now() "
            "WHERE run_id = %s",
            (status, len(outcomes), totals["reference"], totals["inserted"], totals["updated"], totals["unchanged"],
             totals["extra"], totals["invalid"], totals["failed"], Jsonb(per), run_id))


def _totals(outcomes: list[Outcome]) -> dict[str, int]:
    t = dict.fromkeys(("reference", "inserted", "updated", "unchanged", "extra", "invalid", "failed"), 0)
    for o in outcomes:
        if o.plan is None:
            t["failed"] += 1
            continue
        t["reference"] += o.plan.reference
        t["inserted"] += o.plan.inserted
        t["updated"] += o.plan.updated
        t["unchanged"] += o.plan.unchanged
        t["extra"] += o.plan.extra
        t["invalid"] += len(o.plan.invalid)
    return t


# -- CLI ----------------------------------------------------------------------------------------

def resolve_tokens(specs: list[str] | None, universe: list[Instrument]) -> list[int]:
    """``--tokens`` values (ints or EXCHANGE:SYMBOL, comma-separated) -> tokens; default: the universe."""
    if not specs:
        return [i.instrument_token for i in universe]
    keys = {i.key.upper(): i.instrument_token for i in universe}
    out: list[int] = []
    for part in (p.strip() for s in specs for p in s.split(",") if p.strip()):
        if part.isdigit():
            out.append(int(part))
        elif part.upper() in keys:
            out.append(keys[part.upper()])
        else:
            raise ConfigError(f"--tokens: {part!r} is neither a token nor an EXCHANGE:SYMBOL of the universe")
    return list(dict.fromkeys(out))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options; bad values exit 2."""
    ap = argparse.ArgumentParser(prog="python -m ingestion.merge_hist_daily", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Env: POSTGRES_DSN, KITE_API_KEY, KITE_ACCESS_TOKEN, KITE_ROOT.")
    ap.add_argument("--date", required=True, help="trading day, YYYY-MM-DD (IST)")
    ap.add_argument("--tokens", action="append", help="instrument tokens or EXCHANGE:SYMBOL, comma-separated "
                                                      "(default: every instrument of --universe)")
    ap.add_argument("--universe", type=Path, help="universe CSV (default: $TRADESTACK_CONFIG_DIR/tokens.csv)")
    ap.add_argument("--source", choices=("kite", "csv"), default="kite", help="reference candles (default kite)")
    ap.add_argument("--csv-dir", type=Path, help="directory of vendor CSV files (with --source csv)")
    ap.add_argument("--tolerance", default="price=0ticks,volume=0",
                    help="allowed difference before a bar is corrected: price=<N>ticks|<rupees>, "
                         "volume=<N>|<N>%% (default: exact)")
    ap.add_argument("--session", default=None,
                    help="IST session window HH:MM-HH:MM (default: the NSE session of --date from "
                         "configs/sessions.yaml)")
    ap.add_argument("--rate", type=int, default=3, help="max Kite historical requests per second (default 3)")
    ap.add_argument("--dry-run", action="store_true", help="show what would change; write nothing")
    args = ap.parse_args(argv)
    try:
        args.day = date.fromisoformat(args.date)
    except ValueError:
        ap.error(f"--date {args.date!r}: want YYYY-MM-DD")
    if args.day > datetime.now(IST).date():
        ap.error(f"--date {args.date}: in the future")
    if args.source == "csv" and (args.csv_dir is None or not args.csv_dir.is_dir()):
        ap.error("--source csv needs --csv-dir pointing at a directory")
    if args.csv_dir is not None and args.source != "csv":
        ap.error("--csv-dir only goes with --source csv")
    if not 1 <= args.rate <= 10:
        ap.error("--rate must be between 1 and 10")
    try:
        args.tol = Tolerance.parse(args.tolerance)
        if args.session is None:
            try:
                args.window = session_window(args.day)
            except ValueError as exc:
                ap.error(f"--date {args.date}: {exc}")
        else:
            open_s, close_s = args.session.split("-")
            args.window = session_window(args.day, open_s, close_s)
        if args.window[0] >= args.window[1]:
            raise ValueError("open must be before close")
    except ConfigError as exc:
        ap.error(str(exc))
    except ValueError as exc:
        ap.error(f"--session {args.session!r}: {exc}")
    return args


def run(args: argparse.Namespace, out: Callable[[str], None] = print) -> int:
    """The merge itself (arguments already validated)."""
    settings = load_settings()
    universe = load_universe(args.universe or settings.config_dir / "tokens.csv")
    by_token = {i.instrument_token: i for i in universe}
    tokens = resolve_tokens(args.tokens, universe)
    keys = {i.key.upper(): i.instrument_token for i in universe}
    source: KiteSource | CsvSource
    if args.source == "csv":
        source = CsvSource(args.csv_dir, lambda s: keys.get(s.strip().upper()))
    else:
        kite = KiteConnect(settings.kite_api_key.get_secret_value(), settings.kite_access_token.get_secret_value(),
                           root=settings.kite_root)
        source = KiteSource(kite, history_limiter(args.rate))
    run_id = uuid.uuid4()
    t0 = time.monotonic()
    outcomes: list[Outcome] = []
    with connect(settings.dsn) as conn:
        if not args.dry_run:
            start_run(conn, run_id, args.day, source.name, args.tol)
        status = "failed"
        try:
            for n, token in enumerate(tokens, start=1):
                inst = by_token.get(token)
                label = inst.key if inst else str(token)
                tick = inst.tick_size if inst else DEFAULT_TICK
                try:
                    reference = source.candles(token, args.window)
                except (TransientError, kite_ex.KiteException) as exc:
                    outcomes.append(Outcome(token, label, None, f"{type(exc).__name__}: {str(exc)[:160]}"))
                    out(f"[{n:>4}/{len(tokens)}] {label} ({token}): reference unavailable: {outcomes[-1].error}")
                    continue
                plan = plan_merge(reference, load_bars(conn, token, args.window), tick, args.tol, args.window)
                if not args.dry_run:
                    apply_plan(conn, token, plan, run_id, source.name)
                outcomes.append(Outcome(token, label, plan))
                out(f"[{n:>4}/{len(tokens)}] {label} ({token}): reference={plan.reference} gaps_filled={plan.inserted} "
                    f"corrected={plan.updated} unchanged={plan.unchanged} extra={plan.extra} "
                    f"invalid_reference={len(plan.invalid)}" + (" (dry run)" if args.dry_run else ""))
                for c in plan.changes if args.dry_run else ():
                    out(f"        would {c.action} {datetime.fromtimestamp(c.ts / 1000, IST):%H:%M} {c.detail}")
            totals = _totals(outcomes)
            status = "partial" if totals["failed"] else "ok"
        finally:
            if not args.dry_run:
                finish_run(conn, run_id, outcomes, status)
    t = _totals(outcomes)
    out(f"merge {args.day} source={source.name} run={run_id if not args.dry_run else 'dry-run'} status={status}: "
        f"instruments={len(outcomes)} reference={t['reference']} gaps_filled={t['inserted']} "
        f"corrected={t['updated']} unchanged={t['unchanged']} extra={t['extra']} invalid_reference={t['invalid']} "
        f"failed={t['failed']} in {time.monotonic() - t0:.1f}s")
    return EXIT_OK if status == "ok" else EXIT_UNEXPECTED


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    setup_logging("merge_hist_daily")
    return run_cli(lambda: run(args, lambda line: print(line, flush=True)))


if __name__ == "__main__":
    sys.exit(main())

