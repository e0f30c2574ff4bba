"""The paper venue's Postgres side (14_paper.sql): live orders and marks to restore, changes to write."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg

from execution.paper_market import Quote
from execution.paper_venue import PaperOrder

_COLS = ("order_id, seq, instrument_token, strategy, exchange, side, order_type, qty, tick_size, price_ticks, "
         "trigger_ticks, filled, fills, state, arrival_ts, expiry_ts, queue_ahead, priority")
_UPSERT = (f"INSERT INTO paper_orders ({_COLS}) VALUES ({', '.join(['%s'] * 18)}) "
           "ON CONFLICT (order_id) DO UPDATE SET filled = EXCLUDED.filled, fills = EXCLUDED.fills, "
           "state = EXCLUDED.state, price_ticks = EXCLUDED.price_ticks, queue_ahead = EXCLUDED.queue_ahead, "
           "priority = EXCLUDED.priority, updated_at = now()")


def _dt(ms: int | None) -> datetime | None:
    return None if not ms else datetime.fromtimestamp(ms / 1000, tz=UTC)


def _ms(dt: datetime | None) -> int:
    return 0 if dt is None else round(dt.timestamp() * 1000)


def load_live(conn: psycopg.Connection[Any]) -> tuple[list[PaperOrder], dict[int, Quote], int]:
    """Orders still working at the venue (time priority order), the stored marks, and the next seq."""
    rows = conn.execute(f"SELECT {_COLS} FROM paper_orders WHERE state <> 'done' ORDER BY seq").fetchall()
    orders = [PaperOrder(oid, seq, tok, strat, exch, side, otype, qty, tick, price, trig, filled, fills, state,
                         _ms(arr), _ms(exp), ahead, prio)
              for (oid, seq, tok, strat, exch, side, otype, qty, tick, price, trig, filled, fills, state, arr, exp,
                   ahead, prio) in rows]
    quotes = {int(tok): Quote.from_json(q) for tok, q in conn.execute(
        "SELECT instrument_token, quote FROM paper_quotes").fetchall()}
    row = conn.execute("SELECT COALESCE(max(GREATEST(seq, priority)), 0) + 1 FROM paper_orders").fetchone()
    return orders, quotes, int(row[0]) if row else 1


def write_orders(conn: psycopg.Connection[Any], orders: Sequence[PaperOrder]) -> None:
    if not orders:
        return
    conn.cursor().executemany(_UPSERT, [
        (o.order_id, o.seq, o.token, o.strategy, o.exchange, o.side, o.order_type, o.qty, o.tick_size, o.price,
         o.trigger, o.filled, o.fills, o.state, _dt(o.arrival_ts), _dt(o.expiry_ts), o.ahead, o.priority)
        for o in orders])


def write_quotes(conn: psycopg.Connection[Any], quotes: dict[int, Quote]) -> None:
    if not quotes:
        return
    conn.cursor().executemany(
        "INSERT INTO paper_quotes (instrument_token, ts, quote) VALUES (%s, %s, %s) "
        "ON CONFLICT (instrument_token) DO UPDATE SET ts = EXCLUDED.ts, quote = EXCLUDED.quote, updated_at = now()",
        [(tok, _dt(q.ts), orjson.dumps(q.to_json()).decode()) for tok, q in quotes.items()])


def cancel_requests(conn: psycopg.Connection[Any]) -> list[str]:
    """Paper orders the OMS has at CANCEL_REQUESTED (flatten, an operator)."""
    return [r[0] for r in conn.execute(
        "SELECT order_id FROM orders WHERE status = 'CANCEL_REQUESTED' AND venue = 'paper' ORDER BY order_id")]


def db_tick_sizes(conn: psycopg.Connection[Any], tokens: Sequence[int]) -> dict[int, float]:
    """Tick sizes from the instrument master (``instruments``, kept by the instrument sync)."""
    if not tokens:
        return {}
    return {int(t): float(s) for t, s in conn.execute(
        "SELECT instrument_token, tick_size FROM instruments WHERE instrument_token = ANY(%s)",
        (list(tokens),)).fetchall()}


def universe_tick_sizes(path: Path) -> dict[int, float]:
    """Tick sizes from the universe file (``configs/tokens.csv``); empty if it is missing."""
    from core.universe import load_universe

    if not path.exists():
        return {}
    return {i.instrument_token: i.tick_size for i in load_universe(path)}

