"""Replay recorded ticks (CSV or Parquet) as the simulator's event source.

Accepted columns (the ``ticks`` topic's Tick contract, with Kite aliases):

- ``instrument_token`` (required)
- time: ``exchange_ts`` (epoch ms) or ``ts`` (epoch ms) or ``exchange_timestamp`` (epoch s)
- price: ``ltp`` or ``last_price`` (rupees)
- optional: ``volume`` / ``volume_traded`` (cumulative), ``last_qty`` /
  ``last_traded_quantity``, ``oi``, ``bid``, ``ask``, ``bid_qty``, ``ask_qty``

Rows are replayed in time order (stable for equal times); rows for tokens not
in the universe are skipped and counted.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from core.errors import ConfigError
from core.universe import Instrument
from kitesim.market import EventSource, TradeEvent

_TIME_COLUMNS = (("exchange_ts", 1000.0), ("ts", 1000.0), ("exchange_timestamp", 1.0))
_PRICE_COLUMNS = ("ltp", "last_price")
_VOLUME_COLUMNS = ("volume", "volume_traded")
_QTY_COLUMNS = ("last_qty", "last_traded_quantity")


def _first(row: Mapping[str, Any], names: Iterable[str]) -> Any:
    for n in names:
        v = row.get(n)
        if v is not None and v != "":
            return v
    return None


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a ``.csv`` or ``.parquet`` file as dicts."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq  # imported lazily: only replay needs it

        return pq.read_table(path).to_pylist()  # type: ignore[no-any-return]
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _count(row: Mapping[str, Any], name: str) -> int | None:
    v = row.get(name)
    return int(float(v)) if v not in (None, "") else None


def _units(row: Mapping[str, Any], name: str, divisor: int) -> int | None:
    v = row.get(name)
    return round(float(v) * divisor) if v not in (None, "") else None


def _row_time(row: Mapping[str, Any]) -> float | None:
    for col, div in _TIME_COLUMNS:
        v = row.get(col)
        if v is not None and v != "":
            return float(v) / div
    return None


def events_from_rows(rows: Iterable[Mapping[str, Any]], instruments: Mapping[int, Instrument],
                     source: str = "replay") -> tuple[list[TradeEvent], int]:
    """Convert rows into time-ordered events; returns ``(events, skipped_rows)``.

    Without a ``last_qty`` column the traded quantity is the cumulative volume's
    increase since the instrument's previous row (in time order).
    """
    parsed: list[tuple[float, int, TradeEvent]] = []
    skipped = 0
    for lineno, row in enumerate(rows, start=2):
        try:
            token = int(row["instrument_token"])
            inst = instruments.get(token)
            if inst is None:
                skipped += 1
                continue
            ts = _row_time(row)
            price = _first(row, _PRICE_COLUMNS)
            if ts is None or price is None:
                raise ValueError("needs a time column (exchange_ts|ts|exchange_timestamp) and ltp")
            div = inst.price_divisor
            vol_raw, qty_raw = _first(row, _VOLUME_COLUMNS), _first(row, _QTY_COLUMNS)
            ev = TradeEvent(ts=ts, token=token, price=round(float(price) * div),
                            qty=int(float(qty_raw)) if qty_raw is not None else -1,
                            volume=int(float(vol_raw)) if vol_raw is not None else None,
                            oi=_count(row, "oi"), bid=_units(row, "bid", div), ask=_units(row, "ask", div),
                            bid_qty=_count(row, "bid_qty"), ask_qty=_count(row, "ask_qty"))
        except (KeyError, ValueError, TypeError) as exc:
            raise ConfigError(f"{source}:{lineno}: {exc}") from None
        parsed.append((ts, lineno, ev))
    parsed.sort(key=lambda item: (item[0], item[1]))
    events: list[TradeEvent] = []
    last_volume: dict[int, int] = {}
    for _, _, ev in parsed:
        if ev.qty < 0:  # no quantity column: derive it from the cumulative volume
            prev = last_volume.get(ev.token)
            qty = max(0, ev.volume - prev) if (ev.volume is not None and prev is not None) else 0
            ev = replace(ev, qty=qty)
        if ev.volume is not None:
            last_volume[ev.token] = ev.volume
        events.append(ev)
    return events, skipped


class Replay(EventSource):
    """Event source that plays recorded events back as simulated time passes."""

    def __init__(self, events: list[TradeEvent]) -> None:
        self.events = events
        self.pos = 0

    @classmethod
    def from_file(cls, path: str | Path, instruments: Mapping[int, Instrument]) -> tuple[Replay, int]:
        """Load a replay file; returns ``(replay, skipped_rows)``. Bad files raise ConfigError."""
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: file not found")
        if p.suffix not in (".csv", ".parquet"):
            raise ConfigError(f"{p}: replay file must be .csv or .parquet")
        try:
            rows = read_rows(p)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{p}: cannot read: {exc}") from None
        events, skipped = events_from_rows(rows, instruments, str(p))
        if not events:
            raise ConfigError(f"{p}: no ticks for instruments in the universe")
        return cls(events), skipped

    @property
    def first_ts(self) -> float:
        """Time of the first recorded event (where the simulated clock starts)."""
        return self.events[0].ts

    @property
    def done(self) -> bool:
        """True once every event was played."""
        return self.pos >= len(self.events)

    def events_until(self, now: float, limit: int | None = None) -> list[TradeEvent]:
        """Recorded events with ``ts <= now`` not yet played (at most ``limit``)."""
        start = self.pos
        end = len(self.events) if limit is None else min(len(self.events), start + limit)
        while self.pos < end and self.events[self.pos].ts <= now:
            self.pos += 1
        return self.events[start:self.pos]
