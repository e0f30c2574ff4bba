"""Instrument master: sync Kite's instrument dump into Postgres, export ``tokens.csv`` from it.

    python -m ingestion.instruments sync [--exchange NSE ...]
    python -m ingestion.instruments export [--exchange NSE,BSE] [--segment NSE] [--instrument-type EQ]
        [--symbols INFY,NSE:TCS] [--symbols-file F] [--limit N] [--out configs/tokens.csv]

``sync`` calls ``KiteConnect(api_key, access_token, root=KITE_ROOT).instruments()``
and upserts every row into ``instruments`` keyed by instrument_token; a row is
only rewritten (and ``updated_at`` bumped) when a value changed, so a rerun
with the same dump changes nothing. Instruments missing from the dump are kept
(and counted): old contracts stay resolvable for history.

``export`` writes the selected rows in ``tokens.csv`` format (validated like
``configs/tokens.csv``; unusable rows are skipped with a reason) to ``--out``
(atomically) or stdout.

Exit codes: 0 ok, 2 bad arguments, 3 access token rejected (needs a new
KITE_ACCESS_TOKEN), 1 Kite or Postgres unreachable.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
from kiteconnect import KiteConnect, exceptions as kite_ex
from psycopg.rows import dict_row

from core.db import connect
from core.errors import EXIT_CONFIG, EXIT_FATAL, EXIT_OK, EXIT_UNEXPECTED, ConfigError, TransientError
from core.logs import setup_logging
from core.settings import load_settings
from ingestion.instrument_rows import (
    DB_COLUMNS,
    TOKENS_CSV_COLUMNS,
    ExportFilter,
    db_row,
    dedupe,
    universe_row,
)

log = logging.getLogger("instruments")
_NON_KEY = DB_COLUMNS[1:]


def fetch_dump(kite: KiteConnect, exchanges: list[str]) -> list[dict[str, Any]]:
    """Kite's instrument dump (all exchanges, or the given ones)."""
    if not exchanges:
        return list(kite.instruments())
    out: list[dict[str, Any]] = []
    for ex in exchanges:
        out += kite.instruments(ex)
    return out


def upsert_instruments(conn: psycopg.Connection[Any], rows: list[tuple[Any, ...]]) -> tuple[int, int]:
    """Stage ``rows`` with COPY and upsert changed ones; returns ``(inserted, updated)``."""
    cols = ", ".join(DB_COLUMNS)
    changed = " OR ".join(f"instruments.{c} IS DISTINCT FROM EXCLUDED.{c}" for c in _NON_KEY)
    sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in _NON_KEY)
    with conn.transaction():
        conn.execute("CREATE TEMP TABLE instruments_stage (LIKE instruments INCLUDING DEFAULTS) ON COMMIT DROP")
        with conn.cursor().copy(f"COPY instruments_stage ({cols}) FROM STDIN") as cp:
            for r in rows:
                cp.write_row(r)
        res = conn.execute(
            f"WITH up AS (INSERT INTO instruments ({cols}) SELECT {cols} FROM instruments_stage "
            f"ON CONFLICT (instrument_token) DO UPDATE SET {sets}, updated_at = now() WHERE {changed} "
            "RETURNING (xmax = 0) AS inserted) "
            "SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM up").fetchone()
    assert res is not None
    return int(res[0]), int(res[1])


def cmd_sync(args: argparse.Namespace) -> int:
    """``sync``: Kite dump -> instruments table."""
    s = load_settings()
    kite = KiteConnect(s.kite_api_key.get_secret_value(), s.kite_access_token.get_secret_value(), root=s.kite_root)
    exchanges = [e.strip().upper() for v in args.exchange or () for e in v.split(",") if e.strip()]
    dump = fetch_dump(kite, exchanges)
    rows = dedupe(db_row(r) for r in dump)
    with connect(s.dsn) as conn:
        inserted, updated = upsert_instruments(conn, rows)
        if exchanges:
            absent_row = conn.execute("SELECT count(*) FROM instruments WHERE exchange = ANY(%s) "
                                      "AND NOT instrument_token = ANY(%s)",
                                      (exchanges, [r[0] for r in rows])).fetchone()
        else:
            absent_row = conn.execute("SELECT count(*) FROM instruments WHERE NOT instrument_token = ANY(%s)",
                                      ([r[0] for r in rows],)).fetchone()
    absent = int(absent_row[0]) if absent_row else 0
    unchanged = len(rows) - inserted - updated
    print(f"instruments sync: fetched={len(dump)} unique={len(rows)} inserted={inserted} updated={updated} "
          f"unchanged={unchanged} absent_from_dump={absent}")
    return EXIT_OK


def select_rows(conn: psycopg.Connection[Any], flt: ExportFilter) -> list[dict[str, Any]]:
    """Rows of ``instruments`` passing ``flt``, in output order."""
    where, params = [], []
    if flt.exchanges:
        where.append("upper(exchange) = ANY(%s)")
        params.append(sorted(flt.exchanges))
    if flt.segments:
        where.append("upper(segment) = ANY(%s)")
        params.append(sorted(flt.segments))
    if flt.instrument_types:
        where.append("upper(instrument_type) = ANY(%s)")
        params.append(sorted(flt.instrument_types))
    sql = "SELECT * FROM instruments" + (" WHERE " + " AND ".join(where) if where else "")
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(sql, params).fetchall()
    return sorted((r for r in rows if flt.matches(r)), key=flt.order_key)


def render_csv(rows: list[dict[str, str]]) -> str:
    """``tokens.csv`` text."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=TOKENS_CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file and rename (readers never see half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def cmd_export(args: argparse.Namespace) -> int:
    """``export``: instruments table -> tokens.csv rows."""
    symbols = list(args.symbols or [])
    if args.symbols_file:
        if not args.symbols_file.is_file():
            raise ConfigError(f"{args.symbols_file}: file not found")
        symbols += [ln.split("#", 1)[0].strip() for ln in args.symbols_file.read_text().splitlines()]
    flt = ExportFilter.build(args.exchange, args.segment, args.instrument_type, [s for s in symbols if s])
    with connect(load_settings().dsn) as conn:
        rows = select_rows(conn, flt)
    out_rows: list[dict[str, str]] = []
    skipped: Counter[str] = Counter()
    for r in rows:
        row, reason = universe_row(r)
        if row is None:
            skipped[reason] += 1
            continue
        out_rows.append(row)
        if args.limit and len(out_rows) >= args.limit:
            break
    if not out_rows:
        raise ConfigError("no instrument matches the filters (run `sync` first?)")
    if flt.symbols:
        found = {f"{r['exchange']}:{r['tradingsymbol']}".upper() for r in out_rows}
        found |= {r["tradingsymbol"].upper() for r in out_rows}
        missing = [s for s in flt.symbols if s not in found]
        if missing:
            print(f"warning: symbols not found: {', '.join(missing[:20])}", file=sys.stderr)
    text = render_csv(out_rows)
    if args.out and str(args.out) != "-":
        write_atomic(args.out, text)
    else:
        sys.stdout.write(text)
    why = ", ".join(f"{k}: {v}" for k, v in skipped.most_common(5))
    print(f"instruments export: matched={len(rows)} written={len(out_rows)} skipped={sum(skipped.values())}"
          + (f" ({why})" if why else "") + (f" out={args.out}" if args.out else ""), file=sys.stderr)
    return EXIT_OK


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    ap = argparse.ArgumentParser(prog="python -m ingestion.instruments", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Env: KITE_API_KEY, KITE_ACCESS_TOKEN, KITE_ROOT, POSTGRES_DSN.")
    sub = ap.add_subparsers(dest="command", required=True)
    sp = sub.add_parser("sync", help="load KiteConnect.instruments() into the instruments table")
    sp.add_argument("--exchange", action="append", help="only these exchanges (repeat or comma-separate)")
    ep = sub.add_parser("export", help="write tokens.csv-format rows from the instruments table")
    ep.add_argument("--exchange", action="append", help="e.g. NSE,BSE (repeatable)")
    ep.add_argument("--segment", action="append", help="e.g. NSE, INDICES, NFO-FUT (repeatable)")
    ep.add_argument("--instrument-type", action="append", help="EQ, FUT, CE, PE (repeatable)")
    ep.add_argument("--symbols", action="append", help="INFY,NSE:TCS,... (repeatable; output keeps this order)")
    ep.add_argument("--symbols-file", type=Path, help="file with one SYMBOL or EXCHANGE:SYMBOL per line")
    ep.add_argument("--limit", type=int, default=0, help="write at most N rows (0 = all)")
    ep.add_argument("--out", type=Path, help="output file (default: stdout)")
    args = ap.parse_args(argv)
    if getattr(args, "limit", 0) < 0:
        ap.error("--limit must be >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    setup_logging("instruments")
    try:
        return cmd_sync(args) if args.command == "sync" else cmd_export(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except kite_ex.TokenException as exc:
        print(f"error: Kite rejected the access token ({exc.code}): {exc}; generate a new KITE_ACCESS_TOKEN",
              file=sys.stderr)
        return EXIT_FATAL
    except kite_ex.KiteException as exc:
        print(f"error: Kite API {type(exc).__name__} ({exc.code}): {exc}", file=sys.stderr)
        return EXIT_UNEXPECTED
    except (TransientError, psycopg.Error) as exc:
        print(f"error: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return EXIT_UNEXPECTED
    except OSError as exc:  # requests' ConnectionError is an OSError
        print(f"error: Kite unreachable: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}", file=sys.stderr)
        return EXIT_UNEXPECTED


if __name__ == "__main__":
    sys.exit(main())
