"""IST time helpers and the simulator's (optionally accelerated) session clock.

IST is UTC+05:30 with no DST. Trading days and session hours are NSE's from the
exchange calendar (:mod:`core.sessions`, ``configs/sessions.yaml``): weekends and
NSE holidays are closed, special sessions (Muhurat) open with their own hours.
The simulator ticks around the clock unless started with ``--market-hours``, so
paper mode works on any day.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import date, datetime, timedelta

from core.clock import IST, parse_ist as core_parse_ist
from core.sessions import load_calendar

EXCHANGE = "NSE"
_REGULAR = load_calendar().regular_hours(EXCHANGE)
SESSION_OPEN_S = _REGULAR.open_min * 60  # regular hours: what the synthesised history covers
SESSION_CLOSE_S = _REGULAR.close_min * 60
DAY_S = 86400


def ist_datetime(epoch: float) -> datetime:
    """Aware IST datetime of an epoch time."""
    return datetime.fromtimestamp(epoch, IST)


def ist_date(epoch: float) -> date:
    """IST calendar date of an epoch time."""
    return ist_datetime(epoch).date()


def ist_str(epoch: float) -> str:
    """Naive IST ``YYYY-MM-DD HH:MM:SS`` (Kite's REST timestamp format)."""
    return ist_datetime(epoch).strftime("%Y-%m-%d %H:%M:%S")


def ist_iso(epoch: float) -> str:
    """``2017-12-15T09:15:00+0530`` (Kite's candle timestamp format)."""
    return ist_datetime(epoch).strftime("%Y-%m-%dT%H:%M:%S%z")


def midnight(d: date) -> float:
    """Epoch of 00:00 IST on ``d``."""
    return datetime(d.year, d.month, d.day, tzinfo=IST).timestamp()


def is_trading_day(d: date) -> bool:
    """True when NSE has a session on ``d`` (the calendar's holidays and special sessions included)."""
    return load_calendar().is_trading_day(EXCHANGE, d)


def session_bounds(d: date) -> tuple[float, float]:
    """Epoch seconds of the open and close on ``d`` (the regular hours when there is no session)."""
    s = load_calendar().session(EXCHANGE, d)
    if s is not None:
        return s.open_ms / 1000, s.close_ms / 1000
    m = midnight(d)
    return m + SESSION_OPEN_S, m + SESSION_CLOSE_S


def in_session(epoch: float) -> bool:
    """True inside a session of a trading day."""
    return load_calendar().is_open(EXCHANGE, int(epoch * 1000))


def next_session_open(epoch: float) -> float:
    """``epoch`` itself when in session, else the next session open."""
    if in_session(epoch):
        return epoch
    return load_calendar().next_open(EXCHANGE, int(epoch * 1000)) / 1000


def previous_trading_day(d: date) -> date:
    """The trading day before ``d``."""
    d -= timedelta(days=1)
    while not is_trading_day(d):
        d -= timedelta(days=1)
    return d


def parse_ist(text: str) -> float:
    """Parse ``YYYY-MM-DD``, ``YYYY-MM-DD HH:MM[:SS]`` or ISO with offset; naive means IST."""
    return core_parse_ist(text).timestamp()


class SessionClock:
    """Simulated epoch time: ``start + (elapsed wall time) * speed``.

    ``monotonic`` is injectable so tests can drive the clock by hand.
    """

    def __init__(self, start: float | None = None, speed: float = 1.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self.start = time.time() if start is None else start
        self.speed = speed
        self._monotonic = monotonic
        self._t0 = monotonic()

    def now(self) -> float:
        """Current simulated epoch seconds."""
        return self.start + (self._monotonic() - self._t0) * self.speed
