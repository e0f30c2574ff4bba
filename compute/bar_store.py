"""Postgres side of the bar services: idempotent bar upserts and resume state.

Bars are written with COPY into a temporary table and one
``INSERT ... ON CONFLICT (instrument_token, ts) DO UPDATE`` per timeframe
(a replayed bar overwrites itself with identical values). ``bar_state`` keeps
each instrument's last durable bar per timeframe; it only moves forward.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg

from compute.bars import Bar

BAR_COLUMNS = ("instrument_token", "ts", "open", "high", "low", "close", "volume", "ticks", "cum_volume")


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def group_by_tf(bars: Iterable[Bar]) -> dict[str, list[Bar]]:
    """Bars grouped by timeframe, input order kept."""
    out: dict[str, list[Bar]] = {}
    for b in bars:
        out.setdefault(b.tf, []).append(b)
    return out


def upsert_bars(conn: psycopg.Connection[Any], bars: Sequence[Bar]) -> None:
    """Write bars (any mix of timeframes) and advance ``bar_state``; the caller owns the transaction."""
    if not bars:
        return
    with conn.cursor() as cur:
        for tf, group in group_by_tf(bars).items():
            table = f"bars_{tf}"
            cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS _stage_{tf} (LIKE {table} INCLUDING DEFAULTS) "
                        "ON COMMIT DELETE ROWS")
            cols = ", ".join(BAR_COLUMNS)
            with cur.copy(f"COPY _stage_{tf} ({cols}) FROM STDIN") as copy:
                for b in group:
                    copy.write_row((b.instrument_token, _dt(b.ts), b.open, b.high, b.low, b.close,
                                    b.volume, b.ticks, b.cum_volume))
            updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in BAR_COLUMNS[2:])
            cur.execute(f"INSERT INTO {table} ({cols}) SELECT DISTINCT ON (instrument_token, ts) {cols} "
                        f"FROM _stage_{tf} ORDER BY instrument_token, ts "
                        f"ON CONFLICT (instrument_token, ts) DO UPDATE SET {updates}, updated_at = now()")
            last: dict[int, Bar] = {}
            for b in group:
                prev = last.get(b.instrument_token)
                if prev is None or b.ts >= prev.ts:
                    last[b.instrument_token] = b
            cur.executemany(
                "INSERT INTO bar_state (tf, instrument_token, last_ts, cum_volume) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (tf, instrument_token) DO UPDATE SET last_ts = EXCLUDED.last_ts, "
                "cum_volume = EXCLUDED.cum_volume, updated_at = now() "
                "WHERE bar_state.last_ts <= EXCLUDED.last_ts",
                [(tf, b.instrument_token, _dt(b.ts), b.cum_volume) for b in last.values()])


def load_state(conn: psycopg.Connection[Any], tfs: Sequence[str],
               tokens: Sequence[int]) -> list[tuple[str, int, int, int | None]]:
    """``(tf, instrument_token, last_ts_ms, cum_volume)`` of ``tokens`` for timeframes ``tfs``."""
    rows = conn.execute("SELECT tf, instrument_token, last_ts, cum_volume FROM bar_state "
                        "WHERE tf = ANY(%s) AND instrument_token = ANY(%s)", (list(tfs), list(tokens))).fetchall()
    return [(tf, int(tok), _ms(ts), cv) for tf, tok, ts, cv in rows]


def fetch_bars(conn: psycopg.Connection[Any], tf: str) -> list[Bar]:
    """Every bar of ``tf`` ordered by (instrument_token, ts) (tests, verification, archiving)."""
    rows = conn.execute(f"SELECT {', '.join(BAR_COLUMNS)} FROM bars_{tf} ORDER BY instrument_token, ts").fetchall()
    return [Bar(int(r[0]), tf, _ms(r[1]), r[2], r[3], r[4], r[5], int(r[6]), int(r[7]),
                None if r[8] is None else int(r[8])) for r in rows]
