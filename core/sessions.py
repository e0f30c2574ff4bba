"""The exchange calendar: trading days and session hours per exchange (one source for the stack).

Configured by ``configs/sessions.yaml`` (validated, unknown keys forbidden; a bad
file is one :class:`~core.errors.ConfigError` line naming file, key and value).
Per Kite exchange code (NSE, BSE, NFO, BFO, CDS, BCD, MCX; indices are quoted
on NSE/BSE and follow them) the file gives the regular pre-open, open and close
in IST, where the trading holidays come from (the ``holidays`` package's
exchange calendars, e.g. ``XNSE``; or another exchange of the file), the
file's own overrides (``add_holidays`` / ``remove_holidays``) and special
sessions with their own hours (Muhurat trading on Diwali evening, Saturday
sessions), which apply even on a weekend or holiday.

Usage::

    calendar = load_calendar()
    calendar.is_trading_day("NSE", date(2026, 11, 10))   # False: Diwali Balipratipada
    s = calendar.session("NSE", date(2026, 11, 20))       # Session(open_ms=..., close_ms=...)
    calendar.is_open("NSE", ts_ms); calendar.next_open("NSE", ts_ms)

Everything but :func:`load_calendar` is pure: the holiday source is an
injected function, so tests can pass their own.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field, model_validator

from core.clock import IST
from core.config import StrictModel, load_config
from core.errors import ConfigError

MINUTE_MS = 60_000
DAY_MS = 86_400_000
IST_OFFSET_MS = 330 * MINUTE_MS  # UTC+05:30, no DST
#: How far :meth:`ExchangeCalendar.next_open` looks ahead before giving up.
MAX_SCAN_DAYS = 400

HolidaySource = Callable[[str, int], frozenset[date]]
"""``(market code, year) -> holiday dates``; the default reads the ``holidays`` package."""


def hhmm_minutes(text: str) -> int:
    """``"09:15"`` -> minutes after local midnight (``"24:00"`` allowed); ``ValueError`` otherwise."""
    parts = text.strip().split(":")
    if len(parts) != 2 or not all(p.isdigit() and len(p) == 2 for p in parts):
        raise ValueError(f"time must be HH:MM, got {text!r}")
    hours, minutes = int(parts[0]), int(parts[1])
    if not (0 <= hours <= 24 and 0 <= minutes < 60) or (hours == 24 and minutes):
        raise ValueError(f"time out of range: {text!r}")
    return hours * 60 + minutes


def _valid_hhmm(text: str) -> str:
    hhmm_minutes(text)
    return text


HHMM = Annotated[str, AfterValidator(_valid_hhmm)]
"""A config field holding an IST ``HH:MM`` time (validated by :func:`hhmm_minutes`)."""


# -- the file ------------------------------------------------------------------------------

class _Hours(StrictModel):
    """Pre-open (optional), open and close, ``HH:MM`` IST."""

    pre_open: HHMM | None = None
    open: HHMM
    close: HHMM

    @model_validator(mode="after")
    def _ordered(self) -> _Hours:
        op, cl = hhmm_minutes(self.open), hhmm_minutes(self.close)
        if op >= cl:
            raise ValueError(f"open {self.open} must be before close {self.close}")
        if self.pre_open is not None and hhmm_minutes(self.pre_open) > op:
            raise ValueError(f"pre_open {self.pre_open} must not be after open {self.open}")
        return self


class SpecialSessionConfig(_Hours):
    """A one-day session with its own hours (held even on a weekend or holiday)."""

    date: date
    name: str


class ExchangeConfig(_Hours):
    """One exchange: regular hours, holiday source, overrides, special sessions."""

    holidays_from: str | None = None
    holidays_of: str | None = None
    add_holidays: list[date] = Field(default_factory=list)
    remove_holidays: list[date] = Field(default_factory=list)
    special_sessions: list[SpecialSessionConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_source(self) -> ExchangeConfig:
        if self.holidays_from and self.holidays_of:
            raise ValueError("give holidays_from or holidays_of, not both")
        return self


class SessionsFile(StrictModel):
    """``configs/sessions.yaml``."""

    exchanges: dict[str, ExchangeConfig]

    @model_validator(mode="after")
    def _references(self) -> SessionsFile:
        for name, ex in self.exchanges.items():
            ref = ex.holidays_of
            if ref is not None:
                if ref not in self.exchanges:
                    raise ValueError(f"exchanges.{name}.holidays_of: unknown exchange {ref!r}")
                if self.exchanges[ref].holidays_of is not None:
                    raise ValueError(f"exchanges.{name}.holidays_of: {ref!r} itself uses holidays_of")
        return self


# -- the calendar ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class DailyHours:
    """An exchange's regular hours as minutes after IST midnight."""

    open_min: int
    close_min: int
    pre_open_min: int | None = None


@dataclass(frozen=True, slots=True)
class Session:
    """One trading session of one exchange on one IST date (times are epoch ms UTC)."""

    exchange: str
    day: date
    open_ms: int
    close_ms: int
    pre_open_ms: int | None = None
    name: str = "regular"

    def contains(self, ts_ms: int) -> bool:
        """True for ``open <= ts_ms < close``."""
        return self.open_ms <= ts_ms < self.close_ms

    @property
    def open_at(self) -> datetime:
        """The open as an aware IST datetime."""
        return datetime.fromtimestamp(self.open_ms / 1000, IST)

    @property
    def close_at(self) -> datetime:
        """The close as an aware IST datetime."""
        return datetime.fromtimestamp(self.close_ms / 1000, IST)


def ist_date(ts_ms: int) -> date:
    """IST calendar date of an epoch-ms time."""
    return date.fromordinal(date(1970, 1, 1).toordinal() + (ts_ms + IST_OFFSET_MS) // DAY_MS)


def ist_midnight_ms(day: date) -> int:
    """Epoch ms of 00:00 IST on ``day``."""
    return (day.toordinal() - date(1970, 1, 1).toordinal()) * DAY_MS - IST_OFFSET_MS


def package_holidays(market: str, year: int) -> frozenset[date]:
    """Holidays of a ``holidays``-package financial market (``XNSE``, ``XBOM``) in ``year``."""
    import holidays  # noqa: PLC0415  (only when a calendar first needs a year)

    return frozenset(holidays.financial_holidays(market, years=year).keys())


def check_market(market: str) -> None:
    """Raise ``ValueError`` unless the ``holidays`` package knows ``market``."""
    import holidays  # noqa: PLC0415

    if market not in holidays.list_supported_financial():
        raise ValueError(f"holidays package has no financial calendar {market!r}")


@dataclass
class ExchangeCalendar:
    """Trading days and sessions per exchange, from a validated :class:`SessionsFile`."""

    config: SessionsFile
    holiday_source: HolidaySource = package_holidays
    _years: dict[tuple[str, int], frozenset[date]] = field(default_factory=dict, init=False, repr=False)
    _days: dict[tuple[str, date], Session | None] = field(default_factory=dict, init=False, repr=False)

    @property
    def exchanges(self) -> tuple[str, ...]:
        """The configured exchange codes."""
        return tuple(self.config.exchanges)

    def _exchange(self, exchange: str) -> ExchangeConfig:
        try:
            return self.config.exchanges[exchange]
        except KeyError:
            raise ConfigError(f"sessions.yaml: no exchange {exchange!r} configured "
                              f"(have {', '.join(self.config.exchanges)})") from None

    def regular_hours(self, exchange: str) -> DailyHours:
        """The exchange's regular daily hours (what multi-minute bar buckets anchor to)."""
        ex = self._exchange(exchange)
        return DailyHours(hhmm_minutes(ex.open), hhmm_minutes(ex.close),
                          None if ex.pre_open is None else hhmm_minutes(ex.pre_open))

    def holidays(self, exchange: str, year: int) -> frozenset[date]:
        """Trading holidays of ``exchange`` in ``year`` (source, then the file's overrides)."""
        key = (exchange, year)
        got = self._years.get(key)
        if got is None:
            ex = self._exchange(exchange)
            base: set[date] = set()
            if ex.holidays_of is not None:
                base |= self.holidays(ex.holidays_of, year)
            elif ex.holidays_from is not None:
                base |= self.holiday_source(ex.holidays_from, year)
            base |= {d for d in ex.add_holidays if d.year == year}
            base -= set(ex.remove_holidays)
            got = self._years[key] = frozenset(base)
        return got

    def _special(self, exchange: str, day: date) -> SpecialSessionConfig | None:
        ex = self._exchange(exchange)
        for s in ex.special_sessions:
            if s.date == day:
                return s
        return None if ex.holidays_of is None else self._special(ex.holidays_of, day)

    def is_holiday(self, exchange: str, day: date) -> bool:
        """True on a listed trading holiday (weekends are not listed)."""
        return day in self.holidays(exchange, day.year)

    def session(self, exchange: str, day: date) -> Session | None:
        """The session of ``exchange`` on IST date ``day``, or ``None`` when it does not trade (memoised)."""
        key = (exchange, day)
        if key in self._days:
            return self._days[key]
        s = self._days[key] = self._session(exchange, day)
        return s

    def _session(self, exchange: str, day: date) -> Session | None:
        special = self._special(exchange, day)
        hours: _Hours
        if special is not None:
            hours, name = special, special.name
        elif day.weekday() >= 5 or self.is_holiday(exchange, day):
            return None
        else:
            hours, name = self._exchange(exchange), "regular"
        base = ist_midnight_ms(day)
        pre = None if hours.pre_open is None else base + hhmm_minutes(hours.pre_open) * MINUTE_MS
        return Session(exchange, day, base + hhmm_minutes(hours.open) * MINUTE_MS,
                       base + hhmm_minutes(hours.close) * MINUTE_MS, pre, name)

    def is_trading_day(self, exchange: str, day: date) -> bool:
        """True when ``exchange`` has a session (regular or special) on ``day``."""
        return self.session(exchange, day) is not None

    def session_at(self, exchange: str, ts_ms: int) -> Session | None:
        """The session that is open at ``ts_ms`` (``open <= ts < close``), else ``None``."""
        s = self.session(exchange, ist_date(ts_ms))
        return s if s is not None and s.contains(ts_ms) else None

    def is_open(self, exchange: str, ts_ms: int) -> bool:
        """True while a session of ``exchange`` is open at ``ts_ms``."""
        return self.session_at(exchange, ts_ms) is not None

    def next_open(self, exchange: str, ts_ms: int) -> int:
        """``ts_ms`` itself while open, else the open (epoch ms) of the next session."""
        day = ist_date(ts_ms)
        for _ in range(MAX_SCAN_DAYS):
            s = self.session(exchange, day)
            if s is not None and ts_ms < s.close_ms:
                return max(ts_ms, s.open_ms)
            day += timedelta(days=1)
        raise ConfigError(f"sessions.yaml: {exchange} has no session within {MAX_SCAN_DAYS} days")

    def previous_trading_day(self, exchange: str, day: date) -> date:
        """The last trading day of ``exchange`` before ``day``."""
        for _ in range(MAX_SCAN_DAYS):
            day -= timedelta(days=1)
            if self.is_trading_day(exchange, day):
                return day
        raise ConfigError(f"sessions.yaml: {exchange} has no session within {MAX_SCAN_DAYS} days")


def default_path() -> Path:
    """``$TRADESTACK_CONFIG_DIR/sessions.yaml`` (default ``configs/`` of the project)."""
    from core.settings import PROJECT_ROOT  # noqa: PLC0415  (settings pulls pydantic-settings)

    d = Path(os.environ.get("TRADESTACK_CONFIG_DIR") or PROJECT_ROOT / "configs")
    return (d if d.is_absolute() else PROJECT_ROOT / d) / "sessions.yaml"


def parse_calendar(path: str | Path, holiday_source: HolidaySource = package_holidays,
                   known_markets: Callable[[str], None] = check_market) -> ExchangeCalendar:
    """Load and validate one sessions file (the holiday market codes included)."""
    cfg = load_config(path, SessionsFile)
    for name, ex in cfg.exchanges.items():
        if ex.holidays_from is not None:
            try:
                known_markets(ex.holidays_from)
            except ValueError as exc:
                raise ConfigError(f"{path}: exchanges.{name}.holidays_from: {exc} "
                                  f"(got {ex.holidays_from!r})") from None
    return ExchangeCalendar(cfg, holiday_source)


@lru_cache(maxsize=8)
def _cached(path: Path) -> ExchangeCalendar:
    return parse_calendar(path)


def load_calendar(path: str | Path | None = None) -> ExchangeCalendar:
    """The calendar of ``path`` (default :func:`default_path`), parsed once per process."""
    return _cached(Path(path) if path is not None else default_path())

