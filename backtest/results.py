"""Daily results per strategy: what the backtester and the fills record, and what the scorer reads.

A :class:`DailyResult` aggregates the CLOSED round trips (:class:`backtest.trades.Trade`) of one
strategy label whose exit falls on one IST day. Rows live in ``strategy_results``
(``infra/postgres/init/16_research.sql``), keyed by ``(source, run_id, strategy, day)``:

    rows = daily_rows(trades)
    record(conn, run_id, "backtest", rows)        # idempotent; replaces the run's earlier rows

A win is a trade with a positive net PnL (after charges).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import psycopg

from backtest.trades import Trade
from core.sessions import ist_date

#: Where a result comes from: ``strategy_results.source`` (the fills' venues, and the backtester).
SOURCES = ("backtest", "paper", "dry", "live")
#: The run id of results derived from the ``fills`` table (one per source).
FILLS_RUN_ID = "fills"

_UPSERT = ("INSERT INTO strategy_results (source, run_id, strategy, day, trades, wins, gross_pnl, charges, net_pnl) "
           "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (source, run_id, strategy, day) DO UPDATE SET "
           "trades = EXCLUDED.trades, wins = EXCLUDED.wins, gross_pnl = EXCLUDED.gross_pnl, "
           "charges = EXCLUDED.charges, net_pnl = EXCLUDED.net_pnl, recorded_at = now()")


@dataclass(frozen=True, slots=True)
class DailyResult:
    """Closed round trips of one strategy label on one IST day (by exit time)."""

    strategy: str
    day: date
    trades: int
    wins: int
    gross_pnl: float
    charges: float
    net_pnl: float


def daily_rows(trades: Iterable[Trade]) -> list[DailyResult]:
    """Aggregate the closed trades by (strategy, IST date of ``exit_ts``); open trades are left out.

    Sorted by (strategy, day)."""
    acc: dict[tuple[str, date], list[float]] = {}
    for t in trades:
        if t.exit_ts is None:
            continue
        a = acc.setdefault((t.strategy, ist_date(t.exit_ts)), [0, 0, 0.0, 0.0])
        a[0] += 1
        a[1] += 1 if t.net_pnl > 0 else 0
        a[2] += t.pnl
        a[3] += t.charges
    return [DailyResult(s, d, int(a[0]), int(a[1]), a[2], a[3], a[2] - a[3]) for (s, d), a in sorted(acc.items())]


def record(conn: psycopg.Connection[Any], run_id: str, source: str, rows: Iterable[DailyResult], *,
           replace: bool = True) -> int:
    """Write ``rows`` to ``strategy_results`` under ``(source, run_id)``; returns the rows written.

    Idempotent: an upsert keyed by (source, run_id, strategy, day). With ``replace`` the run's earlier
    rows are deleted first, so a re-run that no longer trades on some day leaves no stale row. One
    transaction (a savepoint when the caller has one open): nothing is half-written."""
    if source not in SOURCES:
        raise ValueError(f"source {source!r}: expected one of {', '.join(SOURCES)}")
    if not run_id:
        raise ValueError("run_id must not be empty")
    params = [(source, run_id, r.strategy, r.day, r.trades, r.wins, r.gross_pnl, r.charges, r.net_pnl)
              for r in rows]
    with conn.transaction(), conn.cursor() as cur:
        if replace:
            cur.execute("DELETE FROM strategy_results WHERE source = %s AND run_id = %s", (source, run_id))
        if params:
            cur.executemany(_UPSERT, params)
    return len(params)


def replace_days(conn: psycopg.Connection[Any], source: str, run_id: str, first: date, last: date,
                 rows: Sequence[DailyResult]) -> int:
    """Replace the run's rows of days ``first..last`` with ``rows`` (the fills-derived results of a window)."""
    with conn.transaction():
        conn.execute("DELETE FROM strategy_results WHERE source = %s AND run_id = %s AND day BETWEEN %s AND %s",
                     (source, run_id, first, last))
        return record(conn, run_id, source, [r for r in rows if first <= r.day <= last], replace=False)


@dataclass(frozen=True, slots=True)
class SourcedResult:
    """A :class:`DailyResult` with where it came from (what the scorer weighs)."""

    source: str
    run_id: str
    result: DailyResult


def load_results(conn: psycopg.Connection[Any], sources: Sequence[str], first: date, last: date
                 ) -> list[SourcedResult]:
    """Rows of days ``first..last`` from ``sources``: for each (source, strategy, day), the most recently
    recorded run's row only (a backtest re-run under a new run id supersedes the older one)."""
    rows = conn.execute(
        "SELECT DISTINCT ON (source, strategy, day) source, run_id, strategy, day, trades, wins, gross_pnl, "
        "charges, net_pnl FROM strategy_results WHERE source = ANY(%s) AND day BETWEEN %s AND %s "
        "ORDER BY source, strategy, day, recorded_at DESC, run_id DESC", (list(sources), first, last)).fetchall()
    return [SourcedResult(src, run, DailyResult(s, d, int(n), int(w), float(g), float(c), float(net)))
            for src, run, s, d, n, w, g, c, net in rows]
