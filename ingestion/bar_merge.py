"""Reconcile our 1-minute bars with reference candles (Kite historical or vendor CSV). Pure.

:func:`plan_merge` compares, minute by minute inside the session window, the
reference candles with the bars we have and returns what to change:

- **gap**: a reference minute we have no bar for -> insert the reference bar;
- **mismatch**: a bar where some field differs from the reference by more
  than the tolerance -> the bar takes the reference values (all its OHLCV
  fields: the reference is the authority once the bar is known to be wrong);
  the correction records only the fields whose value actually changed;
- within tolerance -> unchanged; bars we have that the reference lacks are
  counted as ``extra`` and left alone (the reference may simply have skipped a
  minute without trades).

Applying a plan makes a second plan against the same reference empty, which
is what makes the daily merge idempotent. Also here: the tolerance spec
parser, the vendor CSV reader and a sliding-window rate limiter.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

from core.clock import IST, epoch_ms, parse_ist
from core.errors import ConfigError
from core.sessions import ExchangeCalendar, load_calendar

MINUTE_MS = 60_000
PRICE_FIELDS = ("open", "high", "low", "close")
FIELDS = (*PRICE_FIELDS, "volume")
_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class Candle:
    """One minute bar: ``ts`` is the bucket start, epoch ms UTC; prices in rupees."""

    ts: int
    open: float
    high: float
    low: float
    close: float
    volume: int

    def values(self) -> dict[str, float | int]:
        """The OHLCV fields as a dict."""
        return {"open": self.open, "high": self.high, "low": self.low, "close": self.close, "volume": self.volume}

    def problem(self) -> str | None:
        """Why this candle is not a valid bar, or None."""
        if min(self.open, self.high, self.low, self.close) <= 0:
            return "non-positive price"
        if self.high + _EPS < max(self.open, self.close, self.low) or self.low - _EPS > min(self.open, self.close):
            return "high/low do not bound open/close"
        if self.volume < 0:
            return "negative volume"
        if self.ts % MINUTE_MS:
            return "timestamp not on a minute"
        return None


@dataclass(frozen=True, slots=True)
class Tolerance:
    """How far a bar may differ from the reference before it is corrected.

    Price: ``price_ticks`` instrument ticks, or ``price_abs`` rupees when set.
    Volume: the larger of ``volume_abs`` and ``volume_pct`` % of the reference.
    The default (all zero) corrects every difference.
    """

    price_ticks: float = 0.0
    price_abs: float | None = None
    volume_abs: int = 0
    volume_pct: float = 0.0

    def price_limit(self, tick_size: float) -> float:
        """Largest allowed absolute price difference in rupees."""
        return self.price_abs if self.price_abs is not None else self.price_ticks * tick_size

    def volume_limit(self, reference: int) -> float:
        """Largest allowed absolute volume difference."""
        return max(float(self.volume_abs), self.volume_pct / 100.0 * reference)

    def as_dict(self) -> dict[str, Any]:
        """For the run record."""
        return {"price_ticks": self.price_ticks, "price_abs": self.price_abs, "volume_abs": self.volume_abs,
                "volume_pct": self.volume_pct}

    @classmethod
    def parse(cls, spec: str, flag: str = "--tolerance") -> Tolerance:
        """``price=2ticks,volume=1%`` / ``price=0.10,volume=500`` (either part may be omitted).

        ``flag`` names the option in error messages.
        """
        kw: dict[str, Any] = {}
        for part in (p.strip() for p in spec.split(",") if p.strip()):
            key, sep, val = part.partition("=")
            key, val = key.strip().lower(), val.strip().lower()
            try:
                if not sep:
                    raise ValueError("want key=value")
                if key == "price":
                    if val.endswith(("ticks", "tick")):
                        kw["price_ticks"] = float(val.removesuffix("s").removesuffix("tick"))
                    else:
                        kw["price_abs"] = float(val)
                elif key == "volume":
                    if val.endswith("%"):
                        kw["volume_pct"] = float(val[:-1])
                    else:
                        kw["volume_abs"] = int(val)
                else:
                    raise ValueError("keys are price and volume")
            except ValueError as exc:
                raise ConfigError(f"{flag} {spec!r}: {part!r}: {exc}") from None
        if any(isinstance(v, float | int) and (v < 0 or math.isnan(v)) for v in kw.values()):
            raise ConfigError(f"{flag} {spec!r}: values must be >= 0")
        return cls(**kw)


@dataclass(frozen=True, slots=True)
class BarChange:
    """One bar to write and the correction to record."""

    ts: int
    action: Literal["insert", "update"]
    reason: Literal["gap", "mismatch"]
    detail: str
    old: dict[str, float | int] | None
    new: dict[str, float | int]
    bar: Candle
    #: For a mismatch: the fields beyond the tolerance (OHLC order, then volume).
    fields: tuple[str, ...] = ()


@dataclass(slots=True)
class MergePlan:
    """What :func:`plan_merge` decided for one instrument."""

    changes: list[BarChange] = field(default_factory=list)
    unchanged: int = 0
    extra: int = 0
    reference: int = 0
    invalid: list[tuple[int, str]] = field(default_factory=list)

    @property
    def inserted(self) -> int:
        return sum(1 for c in self.changes if c.action == "insert")

    @property
    def updated(self) -> int:
        return sum(1 for c in self.changes if c.action == "update")


def _differs(a: float, b: float) -> bool:
    return abs(a - b) > _EPS * max(1.0, abs(a), abs(b))


def _describe(field_name: str, ours: float, ref: float, tick: float) -> str:
    if field_name == "volume":
        pct = f" ({(ours - ref) / ref * 100:+.1f}%)" if ref else ""
        return f"volume {int(ours)}->{int(ref)}{pct}"
    steps = f" ({(ref - ours) / tick:+.0f} ticks)" if tick > 0 else ""
    return f"{field_name} {ours:g}->{ref:g}{steps}"


def beyond_tolerance(ours: Candle, ref: Candle, tick_size: float, tol: Tolerance) -> list[str]:
    """The fields of ``ours`` farther from ``ref`` than ``tol`` allows (OHLC order, then volume)."""
    price_lim = tol.price_limit(tick_size) + _EPS * max(1.0, ref.close)
    beyond = [f for f in PRICE_FIELDS if abs(getattr(ours, f) - getattr(ref, f)) > price_lim]
    if abs(ours.volume - ref.volume) > tol.volume_limit(ref.volume):
        beyond.append("volume")
    return beyond


def compare(ours: Candle, ref: Candle, tick_size: float, tol: Tolerance) -> BarChange | None:
    """The correction turning ``ours`` into ``ref``, or None when within tolerance."""
    beyond = beyond_tolerance(ours, ref, tick_size, tol)
    if not beyond:
        return None
    o, r = ours.values(), ref.values()
    changed = [f for f in FIELDS if _differs(float(o[f]), float(r[f]))]
    detail = ", ".join(_describe(f, float(o[f]), float(r[f]), tick_size) for f in beyond)
    return BarChange(ref.ts, "update", "mismatch", detail, {f: o[f] for f in changed}, {f: r[f] for f in changed},
                     ref, tuple(beyond))


def plan_merge(reference: Iterable[Candle], ours: Mapping[int, Candle], tick_size: float, tol: Tolerance,
               window: tuple[int, int]) -> MergePlan:
    """Compare reference candles with our bars (keyed by ts) inside ``[start, end)`` ms."""
    start, end = window
    plan = MergePlan()
    ref_ts: set[int] = set()
    for c in sorted(reference, key=lambda c: c.ts):
        if not start <= c.ts < end:
            continue
        bad = c.problem()
        if bad:
            plan.invalid.append((c.ts, bad))
            continue
        plan.reference += 1
        ref_ts.add(c.ts)
        mine = ours.get(c.ts)
        if mine is None:
            plan.changes.append(BarChange(c.ts, "insert", "gap", "missing minute", None, c.values(), c))
            continue
        change = compare(mine, c, tick_size, tol)
        if change is None:
            plan.unchanged += 1
        else:
            plan.changes.append(change)
    plan.extra = sum(1 for ts in ours if start <= ts < end and ts not in ref_ts)
    return plan


# -- sessions -------------------------------------------------------------------------------

def session_window(day: date, open_hhmm: str | None = None, close_hhmm: str | None = None,
                   exchange: str = "NSE", calendar: ExchangeCalendar | None = None) -> tuple[int, int]:
    """``[open, close)`` of an IST session day, epoch ms.

    Without explicit hours, the exchange calendar's session of ``day`` (``configs/sessions.yaml``:
    regular hours, or a special session's); ``ValueError`` when the exchange does not trade that day.
    """
    if open_hhmm is None or close_hhmm is None:
        session = (calendar or load_calendar()).session(exchange, day)
        if session is None:
            raise ValueError(f"{exchange} does not trade on {day} (holiday or weekend, configs/sessions.yaml)")
        return session.open_ms, session.close_ms

    def at(hhmm: str) -> int:
        h, m = (int(x) for x in hhmm.split(":"))
        return int(datetime(day.year, day.month, day.day, h, m, tzinfo=IST).timestamp() * 1000)
    return at(open_hhmm), at(close_hhmm)


def parse_time_ms(text: str) -> int:
    """Epoch ms from epoch-ms digits, ISO with offset, or a naive time taken as IST."""
    s = text.strip()
    if s.isdigit():
        return int(s)
    try:
        return epoch_ms(parse_ist(s))
    except ValueError:
        raise ValueError(f"not a time: {text!r}") from None


# -- vendor CSV -----------------------------------------------------------------------------

def read_vendor_csv(text: str, resolve: Callable[[str], int | None]) -> tuple[dict[int, list[Candle]], int]:
    """Parse one vendor CSV file into candles per token; returns ``(candles, rows_skipped)``.

    Format (header row required, extra columns ignored)::

        instrument_token,ts,open,high,low,close,volume
        738561,2026-11-20 09:15:00,1545.6,1546.0,1545.1,1545.8,12345

    - the instrument: ``instrument_token``, or ``symbol`` as ``EXCHANGE:TRADINGSYMBOL``
      (resolved through the universe by ``resolve``);
    - the minute start: ``ts`` (alias ``date``, ``timestamp``, ``datetime``) as
      ``YYYY-MM-DD HH:MM[:SS]`` in IST, ISO 8601 with an offset
      (``2026-11-20T09:15:00+0530``, Kite's format) or epoch milliseconds;
    - prices in rupees, volume an integer (traded in that minute).
    """
    reader = csv.DictReader(io.StringIO(text))
    cols = {c.strip().lower(): c for c in reader.fieldnames or []}
    ts_col = next((cols[c] for c in ("ts", "date", "timestamp", "datetime") if c in cols), None)
    tok_col, sym_col = cols.get("instrument_token"), cols.get("symbol")
    missing = [c for c in FIELDS if c not in cols]
    if ts_col is None or (tok_col is None and sym_col is None) or missing:
        raise ConfigError("vendor CSV needs columns instrument_token|symbol, ts, open, high, low, close, volume")
    out: dict[int, list[Candle]] = {}
    skipped = 0
    for row in reader:
        try:
            token = int(row[tok_col]) if tok_col and row.get(tok_col) else resolve(str(row[sym_col or ""]))
            if token is None:
                skipped += 1
                continue
            c = Candle(parse_time_ms(row[ts_col]), float(row[cols["open"]]), float(row[cols["high"]]),
                       float(row[cols["low"]]), float(row[cols["close"]]), int(float(row[cols["volume"]])))
        except (ValueError, TypeError, KeyError):
            skipped += 1
            continue
        out.setdefault(token, []).append(c)
    return out, skipped


# -- rate limiting --------------------------------------------------------------------------

def kite_candles(records: Sequence[Mapping[str, Any]]) -> list[Candle]:
    """``KiteConnect.historical_data`` records (aware ``date``) -> candles."""
    out = []
    for r in records:
        d = r["date"]
        if isinstance(d, datetime):
            ts = int((d if d.tzinfo else d.replace(tzinfo=IST)).timestamp() * 1000)
        else:
            ts = parse_time_ms(str(d))
        out.append(Candle(ts, float(r["open"]), float(r["high"]), float(r["low"]), float(r["close"]),
                          int(r["volume"])))
    return out
