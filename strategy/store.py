"""Postgres side of the strategy runner: warm-up bars, restart state, and the idempotent order writes.

- :func:`write_orders`: new orders go into ``orders`` with status NEW
  (``ON CONFLICT (order_id) DO NOTHING``: a replay or restart never duplicates a
  row, and never moves an order a later stage already advanced back to NEW), and
  ``strategy_progress`` advances, in the caller's transaction.
- :func:`load_progress`, :func:`load_bars`: what the runner decided before, and
  the bars to warm its indicators on (and to decide on after a crash).
- :func:`load_positions`, :func:`load_pending`, :func:`load_fill_ids`: positions
  from ``fills``, orders still on their way, the fills already counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg

from compute.bars import Bar

ORDER_COLUMNS = ("order_id", "strategy", "instrument_token", "symbol", "exchange", "side", "order_type", "product",
                 "price", "trigger_price", "stop_loss", "qty", "tf", "status", "signal_ts", "created_ts", "extra")
OPEN_STATUSES = ("NEW", "SIZED", "ALLOWED", "SUBMITTED", "OPEN", "PARTIALLY_FILLED", "CANCEL_REQUESTED")
"""OMS states of an order that may still fill."""

_INSERT_ORDER = (f"INSERT INTO orders ({', '.join(ORDER_COLUMNS)}) VALUES "
                 f"({', '.join(['%s'] * len(ORDER_COLUMNS))}) ON CONFLICT (order_id) DO NOTHING")
_AUDIT_CREATED = ("INSERT INTO order_audit (order_id, from_status, to_status, ts, source, detail, applied, version, "
                  "filled_qty) SELECT oid, NULL, 'NEW', ts, 'strategy_runner', 'created by the strategy', true, 1, 0 "
                  "FROM unnest(%s::text[], %s::timestamptz[]) AS t(oid, ts) ON CONFLICT DO NOTHING")
_PROGRESS = ("INSERT INTO strategy_progress (tf, instrument_token, last_ts) "
             "SELECT * FROM unnest(%s::text[], %s::bigint[], %s::timestamptz[]) "
             "ON CONFLICT (tf, instrument_token) DO UPDATE SET last_ts = GREATEST(strategy_progress.last_ts, "
             "EXCLUDED.last_ts), updated_at = now()")


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _ms(dt: datetime) -> int:
    return round(dt.timestamp() * 1000)


State = tuple[int, float | None, int | None]
"""A position's decided ``(direction, stop, entry_ts)``."""

_STATE = ("INSERT INTO strategy_state (strategy, instrument_token, direction, stop, entry_ts) "
          "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (strategy, instrument_token) DO UPDATE SET "
          "direction = EXCLUDED.direction, stop = EXCLUDED.stop, entry_ts = EXCLUDED.entry_ts, updated_at = now()")


@dataclass(slots=True)
class RunnerRows:
    """One batch's writes: orders (dicts of the Order contract), decided bars ``(tf, token) -> ts``,
    and the decided state of the positions that changed ``(strategy, token) -> (direction, stop, entry_ts)``."""

    orders: list[dict[str, Any]]
    progress: dict[tuple[str, int], int]
    states: dict[tuple[str, int], State] | None = None

    def __bool__(self) -> bool:
        return bool(self.orders) or bool(self.progress) or bool(self.states)

    def __len__(self) -> int:
        return len(self.orders)


def order_row(o: dict[str, Any]) -> tuple[Any, ...]:
    return (o["order_id"], o["strategy"], o["instrument_token"], o["symbol"], o["exchange"], o["side"],
            o["order_type"], o["product"], o["price"], o["trigger_price"], o["stop_loss"], o["qty"], o["tf"], "NEW",
            _dt(o["signal_ts"]), _dt(o["created_ts"]), orjson.dumps(o.get("extra")).decode())


def write_orders(conn: psycopg.Connection[Any], rows: RunnerRows) -> None:
    """Insert new orders (status NEW, existing ids untouched) and advance the progress marks."""
    with conn.cursor() as cur:
        if rows.orders:
            cur.executemany(_INSERT_ORDER, [order_row(o) for o in rows.orders])
            # the OMS audit's first row (version 1: created at NEW); a replay's conflicts with the existing one
            cur.execute(_AUDIT_CREATED, ([o["order_id"] for o in rows.orders],
                                         [_dt(o["created_ts"]) for o in rows.orders]))
        if rows.progress:  # one statement for the batch's marks (one per instrument and timeframe)
            marks = sorted(rows.progress.items())
            cur.execute(_PROGRESS, [[tf for (tf, _), _ in marks], [tok for (_, tok), _ in marks],
                                    [_dt(ts) for _, ts in marks]])
        if rows.states:
            cur.executemany(_STATE, [(strat, tok, d, stop, None if ets is None else _dt(ets))
                                     for (strat, tok), (d, stop, ets) in sorted(rows.states.items())])


def load_states(conn: psycopg.Connection[Any]) -> dict[tuple[str, int], State]:
    """``(strategy, token) -> (direction, stop, entry_ts)`` as last decided."""
    with conn.cursor() as cur:
        cur.execute("SELECT strategy, instrument_token, direction, stop, entry_ts FROM strategy_state")
        return {(s, t): (d, stop, None if ets is None else _ms(ets)) for s, t, d, stop, ets in cur.fetchall()}


def load_progress(conn: psycopg.Connection[Any]) -> dict[tuple[str, int], int]:
    """``(tf, token) -> ts`` of the last bar the runner decided."""
    with conn.cursor() as cur:
        cur.execute("SELECT tf, instrument_token, last_ts FROM strategy_progress")
        return {(tf, tok): _ms(ts) for tf, tok, ts in cur.fetchall()}


def load_bars(conn: psycopg.Connection[Any], tf: str, tokens: Sequence[int], per_token: int,
              upto_ms: int | None = None) -> list[Bar]:
    """The last ``per_token`` bars of each token in ``bars_<tf>`` (``ts <= upto_ms`` if given), oldest first."""
    if not tokens:
        return []
    table = f"bars_{tf}"
    if tf not in ("1m", "3m", "5m", "15m", "30m", "60m"):
        raise ValueError(f"no bars table for {tf!r}")
    upto = "AND ts <= %s" if upto_ms is not None else ""
    params: list[Any] = [list(tokens)]
    if upto_ms is not None:
        params.append(_dt(upto_ms))
    params.append(per_token)
    sql = (f"SELECT instrument_token, ts, open, high, low, close, volume, ticks, cum_volume FROM ("
           f"SELECT b.*, row_number() OVER (PARTITION BY instrument_token ORDER BY ts DESC) AS rn "
           f"FROM {table} b WHERE instrument_token = ANY(%s) {upto}) t WHERE rn <= %s ORDER BY ts, instrument_token")
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return [Bar(tok, tf, _ms(ts), o, h, lo, c, v, n, cum) for tok, ts, o, h, lo, c, v, n, cum in cur.fetchall()]


def load_bars_upto(conn: psycopg.Connection[Any], tf: str, marks: dict[int, int], per_token: int) -> list[Bar]:
    """The last ``per_token`` bars of each token at or before its mark (what was decided), oldest first."""
    if not marks or per_token <= 0:
        return []
    tokens = sorted(marks)
    with conn.cursor() as cur:
        cur.execute(f"SELECT b.instrument_token, b.ts, b.open, b.high, b.low, b.close, b.volume, b.ticks, "
                    f"b.cum_volume FROM unnest(%s::bigint[], %s::timestamptz[]) AS m(tok, mark) "
                    f"CROSS JOIN LATERAL (SELECT * FROM bars_{tf} x WHERE x.instrument_token = m.tok "
                    f"AND x.ts <= m.mark ORDER BY x.ts DESC LIMIT %s) b ORDER BY b.ts, b.instrument_token",
                    [tokens, [_dt(marks[t]) for t in tokens], per_token])
        return [Bar(tok, tf, _ms(ts), o, h, lo, c, v, n, cum) for tok, ts, o, h, lo, c, v, n, cum in cur.fetchall()]


def load_bars_after(conn: psycopg.Connection[Any], tf: str, marks: dict[int, int]) -> list[Bar]:
    """Bars of ``bars_<tf>`` after each token's mark (the decisions a crash left undone), oldest first."""
    if not marks:
        return []
    tokens = sorted(marks)
    with conn.cursor() as cur:
        cur.execute(f"SELECT b.instrument_token, b.ts, b.open, b.high, b.low, b.close, b.volume, b.ticks, "
                    f"b.cum_volume FROM bars_{tf} b JOIN unnest(%s::bigint[], %s::timestamptz[]) AS m(tok, mark) "
                    f"ON b.instrument_token = m.tok AND b.ts > m.mark ORDER BY b.ts, b.instrument_token",
                    [tokens, [_dt(marks[t]) for t in tokens]])
        return [Bar(tok, tf, _ms(ts), o, h, lo, c, v, n, cum) for tok, ts, o, h, lo, c, v, n, cum in cur.fetchall()]


def load_positions(conn: psycopg.Connection[Any],
                   strategies: Iterable[str]) -> dict[tuple[str, int], tuple[int, float]]:
    """``(strategy, token) -> (signed qty, average price of the open quantity)`` from ``fills``, in fill order."""
    with conn.cursor() as cur:
        cur.execute("SELECT strategy, instrument_token, side, qty, price FROM fills WHERE strategy = ANY(%s) "
                    "ORDER BY ts, fill_id", [list(strategies)])
        out: dict[tuple[str, int], tuple[int, float]] = {}
        for strat, tok, side, qty, price in cur.fetchall():
            q, avg = out.get((strat, tok), (0, 0.0))
            signed = qty if side == "BUY" else -qty
            new = q + signed
            if q == 0 or (q > 0) == (signed > 0):
                avg = (avg * abs(q) + price * qty) / abs(new) if new else 0.0
            elif new == 0:
                avg = 0.0
            elif (new > 0) != (q > 0):
                avg = price
            out[(strat, tok)] = (new, avg)
        return out


def load_pending(conn: psycopg.Connection[Any], strategies: Iterable[str]) -> list[tuple[str, str, int, str, str,
                                                                                          int | None, float | None]]:
    """Orders still on their way: ``(order_id, strategy, token, intent, side, qty, stop_loss)``, oldest first."""
    with conn.cursor() as cur:
        cur.execute("SELECT order_id, strategy, instrument_token, coalesce(extra->>'intent', 'entry'), side, "
                    "qty - filled_qty, stop_loss FROM orders WHERE strategy = ANY(%s) AND status = ANY(%s) "
                    "ORDER BY signal_ts, order_id", [list(strategies), list(OPEN_STATUSES)])
        return [tuple(r) for r in cur.fetchall()]  # type: ignore[misc]


def load_last_stops(conn: psycopg.Connection[Any], strategies: Iterable[str]) -> dict[tuple[str, int], float]:
    """The stop of each (strategy, token)'s latest entry order (the active stop of an open position)."""
    with conn.cursor() as cur:
        cur.execute("SELECT DISTINCT ON (strategy, instrument_token) strategy, instrument_token, stop_loss "
                    "FROM orders WHERE strategy = ANY(%s) AND extra->>'intent' = 'entry' "
                    "ORDER BY strategy, instrument_token, signal_ts DESC", [list(strategies)])
        return {(s, t): sl for s, t, sl in cur.fetchall() if sl is not None}


def load_fill_ids(conn: psycopg.Connection[Any], strategies: Iterable[str], since_ms: int) -> set[str]:
    """Fill ids already in ``fills`` (so a fill replayed from the topic is not counted twice)."""
    with conn.cursor() as cur:
        cur.execute("SELECT fill_id FROM fills WHERE strategy = ANY(%s) AND ts >= %s",
                    [list(strategies), _dt(since_ms)])
        return {r[0] for r in cur.fetchall()}
