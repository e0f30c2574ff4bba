"""Instrument master rows: Kite's dump -> ``instruments`` table -> ``tokens.csv`` (pure).

``KiteConnect.instruments()`` returns dicts with ``instrument_token`` (int),
``exchange_token`` (str), ``tradingsymbol``, ``name``, ``last_price``,
``expiry`` (a date, or ``""``), ``strike``, ``tick_size``, ``lot_size``,
``instrument_type``, ``segment``, ``exchange``. :func:`db_row` turns one into
a row of the ``instruments`` table; :class:`ExportFilter` selects table rows and
:func:`universe_row` makes a ``tokens.csv`` row, validated by
:class:`core.universe.Instrument` (rows that cannot be a valid universe entry
are skipped with a reason, never written).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from pydantic import ValidationError

from core.universe import Instrument, is_tradable

DB_COLUMNS = ("instrument_token", "exchange_token", "tradingsymbol", "name", "last_price", "expiry", "strike",
              "tick_size", "lot_size", "instrument_type", "segment", "exchange")
TOKENS_CSV_COLUMNS = ("instrument_token", "exchange_token", "tradingsymbol", "name", "exchange", "segment",
                      "instrument_type", "tick_size", "lot_size", "last_price")
#: Kite lists indices with tick_size 0; the universe needs a grid, 0.05 is what index values move by.
INDEX_TICK = 0.05


def _int(v: Any) -> int | None:
    if v is None or v == "":
        return None
    return int(float(v))


def _float(v: Any) -> float | None:
    if v is None or v == "":
        return None
    return float(v)


def _expiry(v: Any) -> date | None:
    if isinstance(v, date):
        return v
    if isinstance(v, str) and len(v) == 10:
        return date.fromisoformat(v)
    return None


def db_row(rec: Mapping[str, Any]) -> tuple[Any, ...]:
    """One ``instruments`` table row (in :data:`DB_COLUMNS` order) from a Kite dump record."""
    return (int(rec["instrument_token"]), _int(rec.get("exchange_token")), str(rec["tradingsymbol"]),
            rec.get("name") or None, _float(rec.get("last_price")), _expiry(rec.get("expiry")),
            _float(rec.get("strike")), _float(rec.get("tick_size")) or 0.0, _int(rec.get("lot_size")) or 0,
            rec.get("instrument_type") or None, rec.get("segment") or None, str(rec["exchange"]))


def dedupe(rows: Iterable[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """One row per instrument_token (the last one wins), first-seen order kept."""
    by_token: dict[int, tuple[Any, ...]] = {}
    for r in rows:
        by_token[r[0]] = r
    return list(by_token.values())


def _split(values: Sequence[str] | None) -> set[str]:
    out: set[str] = set()
    for v in values or ():
        out.update(p.strip().upper() for p in v.split(",") if p.strip())
    return out


@dataclass(frozen=True)
class ExportFilter:
    """Which ``instruments`` rows go to ``tokens.csv``; empty sets mean "any".

    ``symbols`` entries are ``TRADINGSYMBOL`` (any exchange) or
    ``EXCHANGE:TRADINGSYMBOL``; when given, output follows their order.
    """

    exchanges: frozenset[str] = frozenset()
    segments: frozenset[str] = frozenset()
    instrument_types: frozenset[str] = frozenset()
    symbols: tuple[str, ...] = ()

    @classmethod
    def build(cls, exchanges: Sequence[str] | None = None, segments: Sequence[str] | None = None,
              instrument_types: Sequence[str] | None = None, symbols: Sequence[str] | None = None) -> ExportFilter:
        """From CLI-style values (each may be comma-separated, case-insensitive)."""
        syms: list[str] = []
        for v in symbols or ():
            syms += [p.strip().upper() for p in v.split(",") if p.strip()]
        return cls(frozenset(_split(exchanges)), frozenset(_split(segments)),
                   frozenset(_split(instrument_types)), tuple(dict.fromkeys(syms)))

    def matches(self, row: Mapping[str, Any]) -> bool:
        """True when ``row`` (a table row as a dict) passes every filter."""
        ex = str(row.get("exchange") or "").upper()
        if self.exchanges and ex not in self.exchanges:
            return False
        if self.segments and str(row.get("segment") or "").upper() not in self.segments:
            return False
        if self.instrument_types and str(row.get("instrument_type") or "").upper() not in self.instrument_types:
            return False
        if self.symbols:
            sym = str(row.get("tradingsymbol") or "").upper()
            return sym in self.symbols or f"{ex}:{sym}" in self.symbols
        return True

    def order_key(self, row: Mapping[str, Any]) -> tuple[int, str, str]:
        """Sort key: the symbol list's order when given, then exchange and symbol."""
        ex, sym = str(row.get("exchange") or "").upper(), str(row.get("tradingsymbol") or "").upper()
        pos = len(self.symbols)
        for key in (f"{ex}:{sym}", sym):
            if key in self.symbols:
                pos = self.symbols.index(key)
                break
        return pos, ex, sym


def _fmt(x: float) -> str:
    return f"{x:.8f}".rstrip("0").rstrip(".")


def universe_row(row: Mapping[str, Any]) -> tuple[dict[str, str] | None, str]:
    """A ``tokens.csv`` row for a table row, or ``(None, reason)`` when it cannot be one.

    Indices get tick size 0.05 and lot 0; the reference price is snapped to
    the tick grid (the simulator walks on it).
    """
    token = int(row["instrument_token"])
    tick = float(row.get("tick_size") or 0.0)
    if tick <= 0 and not is_tradable(token):
        tick = INDEX_TICK
    price = float(row.get("last_price") or 0.0)
    if tick > 0 and price > 0:
        price = max(tick, math.floor(price / tick + 0.5) * tick)
    if price <= 0:
        return None, "no last_price"
    lot = int(row.get("lot_size") or 0)
    if not is_tradable(token):
        lot = 0
    out = {
        "instrument_token": str(token),
        "exchange_token": str(row.get("exchange_token") or token >> 8),
        "tradingsymbol": str(row["tradingsymbol"]),
        "name": str(row.get("name") or ""),
        "exchange": str(row["exchange"]),
        "segment": str(row.get("segment") or ""),
        "instrument_type": str(row.get("instrument_type") or ""),
        "tick_size": _fmt(tick),
        "lot_size": str(lot),
        "last_price": _fmt(price),
    }
    try:
        Instrument.model_validate(out)
    except ValidationError as exc:
        first = exc.errors()[0]
        return None, f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    return out, ""
