"""Next-day strategy scorer: promote, keep or demote each registry strategy from its recent results.

    python -m backtest.scorer [--for DATE] [--window-days 20] [--min-trades 10] [--max-drawdown-pct 15]
        [--min-score 0] [--sources backtest,paper,live] [--charges zerodha|none|bps=N] [--dry-run]
        [--overlay PATH] [--registry PATH] [--dsn DSN]

For the trading day ``--for`` (default: the next NSE session not yet open) it reads the results of the
``--window-days`` NSE trading days before it: backtests from ``strategy_results`` (the latest recorded
run per day), paper / dry / live from ``fills`` (round trips at average cost, charges per fill from
``configs/charges.yaml``, ``--charges``). Results recorded under ``<id>_<tf>`` labels count for entry ``id``.
It prints a ranked table (scoring and decision rules: :mod:`backtest.scoring`), then, unless
``--dry-run``, in one go: the fills-derived daily results of the window into ``strategy_results``
(run id ``fills``), a ``strategy_scores`` row per strategy (upserted for the day), and the registry
overlay (:mod:`strategy.overlay`, written atomically) the strategy runner applies at its next start.
"keep" keeps the state the runner has now (the registry with the overlay in force); a member of an
enabled ensemble is never disabled (it places no orders of its own; the ensemble needs it).
Uses ``POSTGRES_DSN``. Exit codes: 0 done, 1 database unreachable or failing, 2 usage or config error.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
import yaml

from backtest.charges import ChargeCalculator, parse_charges_option
from backtest.results import FILLS_RUN_ID, SOURCES, DailyResult, daily_rows, load_results, replace_days
from backtest.roundtrips import FillCharges, load_fills, round_trips
from backtest.scoring import Decision, Policy, group_by_entry, render_table, score_all
from core import db
from core.cli import iso_date, non_negative, positive, run_cli
from core.clock import IST
from core.errors import EXIT_OK, EXIT_UNEXPECTED, ConfigError
from core.logs import setup_logging
from core.sessions import ExchangeCalendar, ist_date, ist_midnight_ms, load_calendar
from core.settings import load_settings
from risk.config import load_budget
from strategy.overlay import overlay_path
from strategy.registry import Registry, label_for, load_registry, registry_path

log = logging.getLogger("scorer")
EXCHANGE = "NSE"
DEFAULT_SOURCES = ("backtest", "paper", "live")
FILL_VENUES = ("paper", "dry", "live")


def next_session_day(cal: ExchangeCalendar, now_ms: int) -> date:
    """Today (IST) when its session has not opened yet, else the next trading day."""
    day = ist_date(now_ms)
    s = cal.session(EXCHANGE, day)
    if s is not None and now_ms < s.open_ms:
        return day
    return ist_date(cal.next_open(EXCHANGE, ist_midnight_ms(day + timedelta(days=1))))


def window(cal: ExchangeCalendar, for_day: date, n: int) -> list[date]:
    """The ``n`` trading days before ``for_day``, oldest first."""
    days: list[date] = []
    d = for_day
    while len(days) < n:
        d = cal.previous_trading_day(EXCHANGE, d)
        days.append(d)
    return days[::-1]


def labels_to_ids(reg: Registry) -> dict[str, str]:
    """Every label a registry entry's results may be recorded under -> its id."""
    out: dict[str, str] = {}
    for e in reg.file.strategies:
        out[e.id] = e.id
        for tf in e.timeframes:
            out[label_for(e.id, tf, len(e.timeframes))] = e.id
    return out


def ensemble_members(reg: Registry, label_to_id: dict[str, str]) -> dict[str, str]:
    """Registry id -> the enabled ensemble it votes in."""
    return {label_to_id[m]: ens.label for ens in reg.ensembles for m in ens.members if m in label_to_id}


def protect_members(decisions: list[Decision], members: dict[str, str]) -> list[Decision]:
    """A member of an enabled ensemble stays enabled (the overlay could not disable it anyway)."""
    return [replace(d, enabled=True, reason=f"{d.reason} (votes in ensemble {members[d.strategy]}: stays enabled)")
            if d.strategy in members and not d.enabled else d for d in decisions]


def fills_results(conn: psycopg.Connection[Any], venues: Sequence[str], before: datetime, calc: ChargeCalculator
                  ) -> dict[str, list[DailyResult]]:
    """Daily results per venue from the fills before ``before``, charges from ``calc``."""
    if not venues:
        return {}
    fills = load_fills(conn, venues, before)
    charges = FillCharges(calc)
    out = {v: daily_rows(round_trips([f for f in fills if f.venue == v], charges)) for v in venues}
    if charges.unpriced:
        log.warning("fills without charges (the schedule cannot price them) count=%d first=%s",
                    len(charges.unpriced), charges.unpriced[0])
    return out


def overlay_doc(for_day: date, decisions: Sequence[Decision], now: datetime) -> dict[str, Any]:
    """The overlay file's content (:class:`strategy.overlay.OverlayFile`)."""
    return {"scored_for": for_day, "generated_at": now.isoformat(timespec="seconds"),
            "strategies": {d.strategy: {"enabled": d.enabled, "reason": d.reason}
                           for d in sorted(decisions, key=lambda d: d.strategy)}}


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in its directory and a rename (never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_SCORE_UPSERT = ("INSERT INTO strategy_scores (scored_for, strategy, score, decision, enabled, reason, metrics, "
                 "window_from, window_to) VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s) "
                 "ON CONFLICT (scored_for, strategy) DO UPDATE SET score = EXCLUDED.score, "
                 "decision = EXCLUDED.decision, enabled = EXCLUDED.enabled, reason = EXCLUDED.reason, "
                 "metrics = EXCLUDED.metrics, window_from = EXCLUDED.window_from, window_to = EXCLUDED.window_to, "
                 "created_at = now()")


def write_scores(conn: psycopg.Connection[Any], for_day: date, days: Sequence[date],
                 decisions: Sequence[Decision]) -> None:
    """Upsert the day's rows; rows of that day for strategies no longer scored are removed."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("DELETE FROM strategy_scores WHERE scored_for = %s AND NOT (strategy = ANY(%s))",
                    (for_day, [d.strategy for d in decisions]))
        if not decisions:
            return
        cur.executemany(_SCORE_UPSERT, [(for_day, d.strategy, d.metrics.score, d.decision, d.enabled, d.reason,
                                         orjson.dumps(d.metrics.to_json()).decode(), days[0], days[-1])
                                        for d in decisions])


def _sources(text: str) -> tuple[str, ...]:
    got = tuple(s.strip() for s in text.split(",") if s.strip())
    bad = [s for s in got if s not in SOURCES]
    if bad or not got:
        raise argparse.ArgumentTypeError(f"unknown source {bad[0]!r} (known: {', '.join(SOURCES)})" if bad
                                         else "no source given")
    return got


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m backtest.scorer", description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--for", dest="for_day", type=iso_date, metavar="DATE",
                    help="the trading day to decide for (default: the next NSE session not yet open)")
    ap.add_argument("--window-days", type=positive(int), default=20, metavar="N",
                    help="NSE trading days before --for to score over (default 20)")
    ap.add_argument("--min-trades", type=non_negative, default=10, metavar="N",
                    help="fewer trades in the window: keep as is (default 10)")
    ap.add_argument("--max-drawdown-pct", type=positive(float), default=15.0, metavar="X",
                    help="demote when the max drawdown exceeds X%% of capital (default 15)")
    ap.add_argument("--min-score", type=float, default=0.0, metavar="S",
                    help="demote below this score (mean/std x sqrt(days) of daily net PnL; default 0)")
    ap.add_argument("--sources", type=_sources, default=DEFAULT_SOURCES, metavar="LIST",
                    help=f"comma-separated, of {', '.join(SOURCES)} (default {','.join(DEFAULT_SOURCES)})")
    ap.add_argument("--charges", default="zerodha", metavar="SPEC",
                    help="charges on paper/dry/live fills: zerodha (configs/charges.yaml), none or bps=N "
                         "(default zerodha)")
    ap.add_argument("--dry-run", action="store_true", help="print the table and decisions, write nothing")
    ap.add_argument("--overlay", type=Path, default=None, metavar="PATH",
                    help="overlay file read and written (env TRADESTACK_REGISTRY_OVERLAY, "
                         "default var/strategy/registry_overlay.yaml)")
    ap.add_argument("--registry", type=Path, default=None, metavar="PATH",
                    help="strategy registry (env STRATEGY_REGISTRY, default strategy/registry.yaml)")
    ap.add_argument("--dsn", help="Postgres DSN (default POSTGRES_DSN)")
    return ap


def run(args: argparse.Namespace, now: Callable[[], float] = time.time) -> int:
    """Score, print, and (unless ``--dry-run``) write; raises the project's errors (see :func:`main`)."""
    overlay = args.overlay or overlay_path()
    reg = load_registry(args.registry or registry_path(), overlay=overlay)
    capital = load_budget().capital
    try:
        calc = parse_charges_option(args.charges)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    cal = load_calendar()
    now_ms = int(now() * 1000)
    for_day: date = args.for_day or next_session_day(cal, now_ms)
    days = window(cal, for_day, args.window_days)
    label_to_id = labels_to_ids(reg)
    policy = Policy(args.min_trades, args.max_drawdown_pct, args.min_score)
    before = datetime.fromtimestamp(ist_midnight_ms(days[-1] + timedelta(days=1)) / 1000, IST)
    venues = [s for s in args.sources if s in FILL_VENUES]
    with db.connect(args.dsn or load_settings().dsn, timeout=10) as conn:
        try:
            from_fills = fills_results(conn, venues, before, calc)
            backtests = load_results(conn, ["backtest"], days[0], days[-1]) if "backtest" in args.sources else []
        except psycopg.errors.UndefinedTable as exc:
            print(f"error: {str(exc).splitlines()[0]}: run `python -m core.migrate` (make up does)", file=sys.stderr)
            return EXIT_UNEXPECTED
        pairs = [(r.source, r.result) for r in backtests]
        pairs += [(v, r) for v, rows in from_fills.items() for r in rows if days[0] <= r.day <= days[-1]]
        grouped, unknown = group_by_entry(pairs, label_to_id)
        current = {e.id: e.enabled for e in reg.file.strategies}
        decisions = protect_members(score_all(grouped, current, capital, policy), ensemble_members(reg, label_to_id))
        print(f"scored for {for_day}: window {days[0]}..{days[-1]} ({len(days)} trading days), sources "
              f"{','.join(args.sources)}, capital {capital:,.0f}, min trades {policy.min_trades}, "
              f"max drawdown {policy.max_drawdown_pct:g}%, min score {policy.min_score:g}")
        print(render_table(decisions))
        if unknown:
            print(f"ignored results of labels not in the registry: {', '.join(sorted(unknown))}")
        if args.dry_run:
            print("dry run: nothing written")
            return EXIT_OK
        with conn.transaction():
            for v, rows in from_fills.items():
                replace_days(conn, v, FILLS_RUN_ID, days[0], days[-1], rows)
            write_scores(conn, for_day, days, decisions)
        conn.commit()  # the reads' transaction too: the rows are in before the overlay names them
        stamp = datetime.fromtimestamp(now_ms / 1000, IST)
        write_atomic(overlay, yaml.safe_dump(overlay_doc(for_day, decisions, stamp), sort_keys=False, width=200))
    log.info("scores written scored_for=%s strategies=%d overlay=%s", for_day, len(decisions), overlay)
    print(f"wrote {len(decisions)} rows to strategy_scores for {for_day} and overlay {overlay}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parser().parse_args(argv)
    setup_logging("scorer")
    return run_cli(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
