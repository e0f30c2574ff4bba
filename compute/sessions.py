"""Exchange sessions and session-anchored bar buckets (pure, no I/O).

Indian exchanges run on IST (``Asia/Kolkata``: UTC+05:30, no DST), so a session
is a fixed local open/close time plus a fixed UTC offset. Multi-minute bars
(3m, 5m, 15m, 30m, 60m) are anchored to the session open rather than to the
clock: with NSE's 09:15-15:30 session, 60m bars are 09:15-10:15, ...,
14:15-15:15 and a truncated 15:15-15:30.

Anchoring rule (one local calendar day is cut into three regions, every bucket
stays inside one region, so a bucket never straddles the open, the close or
local midnight):

* **session** ``open <= t < close``: ``start = open + floor((t - open) / tf) * tf``,
  ``end = min(start + tf, close)`` (the last bucket is truncated at the close).
* **pre-open** ``t < open``: anchored to the open, counting backwards:
  ``start = max(open + floor((t - open) / tf) * tf, midnight)``, ``end = start' + tf``
  where ``start'`` is the unclipped start (so the first bucket of the day is
  truncated at local midnight, and the last pre-open bucket ends exactly at the open).
* **post-close** ``t >= close``: anchored to the close:
  ``start = close + floor((t - close) / tf) * tf``, ``end = min(start + tf, next midnight)``.

The hours come from the exchange calendar (:mod:`core.sessions`, ``configs/sessions.yaml``):
:func:`default_sessions` takes each exchange's regular open and close from it.

Session boundaries must fall on whole minutes so that 1m bars always nest
inside multi-minute buckets. 1s and 1m buckets are clock aligned and do not
use sessions at all (see :func:`compute.bars.bucket_bounds`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field

from core.sessions import DAY_MS, IST_OFFSET_MS, MINUTE_MS, ExchangeCalendar, hhmm_minutes, load_calendar

__all__ = ["DAY_MS", "IST_OFFSET_MS", "MINUTE_MS", "Session", "SessionCalendar", "default_sessions",
           "sessions_from_calendar"]



def _parse_hhmm(text: str) -> int:
    """``"09:15"`` -> milliseconds after local midnight; ``ValueError`` on bad input."""
    return hhmm_minutes(text) * MINUTE_MS


@dataclass(frozen=True, slots=True)
class Session:
    """One exchange's trading session: local open/close plus a fixed UTC offset.

    ``open_ms``/``close_ms`` are milliseconds after local midnight. Use
    :meth:`from_hhmm` to build one from ``"09:15"``-style strings.
    """

    exchange: str
    open_ms: int
    close_ms: int
    utc_offset_ms: int = IST_OFFSET_MS

    def __post_init__(self) -> None:
        if not (0 <= self.open_ms < self.close_ms <= DAY_MS):
            raise ValueError(f"{self.exchange}: need 00:00 <= open < close <= 24:00")
        if self.open_ms % MINUTE_MS or self.close_ms % MINUTE_MS or self.utc_offset_ms % MINUTE_MS:
            raise ValueError(f"{self.exchange}: open, close and UTC offset must be whole minutes")

    @classmethod
    def from_hhmm(cls, exchange: str, open_hhmm: str, close_hhmm: str,
                  utc_offset_minutes: int = 330) -> Session:
        """Build a session from local ``HH:MM`` strings (UTC offset: IST unless given)."""
        return cls(exchange, _parse_hhmm(open_hhmm), _parse_hhmm(close_hhmm), utc_offset_minutes * MINUTE_MS)

    def anchored_bucket(self, ts_ms: int, tf_ms: int) -> tuple[int, int]:
        """Return ``(start, end)`` epoch ms of the session-anchored bucket holding ``ts_ms``.

        ``tf_ms`` must be a whole number of minutes. See the module docstring
        for the rule inside, before and after the session.
        """
        local = ts_ms + self.utc_offset_ms
        midnight = local - local % DAY_MS
        t = local - midnight
        op, cl = self.open_ms, self.close_ms
        if t >= cl:
            start = cl + (t - cl) // tf_ms * tf_ms
            end = min(start + tf_ms, DAY_MS)
        elif t >= op:
            start = op + (t - op) // tf_ms * tf_ms
            end = min(start + tf_ms, cl)
        else:
            start = op + (t - op) // tf_ms * tf_ms  # floor of a negative offset: backwards from the open
            end = start + tf_ms
            start = max(start, 0)
        base = midnight - self.utc_offset_ms
        return base + start, base + end


def sessions_from_calendar(calendar: ExchangeCalendar) -> dict[str, Session]:
    """Anchoring sessions (regular open/close) of every exchange in a :mod:`core.sessions` calendar."""
    out = {}
    for ex in calendar.exchanges:
        hours = calendar.regular_hours(ex)
        out[ex] = Session(ex, hours.open_min * MINUTE_MS, hours.close_min * MINUTE_MS)
    return out


@functools.cache
def default_sessions() -> dict[str, Session]:
    """Sessions by Kite exchange code from ``configs/sessions.yaml`` (read once, on first use)."""
    return sessions_from_calendar(load_calendar())


def __getattr__(name: str) -> object:
    # ``NSE`` and ``DEFAULT_SESSIONS`` are read from the calendar file lazily, not at import.
    if name == "DEFAULT_SESSIONS":
        return default_sessions()
    if name == "NSE":
        return default_sessions()["NSE"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class SessionCalendar:
    """Which session applies to an instrument.

    ``exchange_of`` maps ``instrument_token`` to a Kite exchange code (from the
    instrument master); tokens not in it use ``default_exchange``. Lookups are
    cached per token, so the per-bar cost is one dict hit.
    """

    sessions: Mapping[str, Session] = field(default_factory=lambda: dict(default_sessions()))
    exchange_of: Mapping[int, str] = field(default_factory=dict)
    default_exchange: str = "NSE"
    _cache: dict[int, Session] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.default_exchange not in self.sessions:
            raise ValueError(f"default exchange {self.default_exchange!r} has no session")
        unknown = sorted({ex for ex in self.exchange_of.values() if ex not in self.sessions})
        if unknown:
            raise ValueError(f"no session configured for exchange(s) {', '.join(unknown)}")

    def session_for(self, instrument_token: int) -> Session:
        """The session of one instrument (the default exchange's when unknown)."""
        sess = self._cache.get(instrument_token)
        if sess is None:
            sess = self.sessions[self.exchange_of.get(instrument_token, self.default_exchange)]
            self._cache[instrument_token] = sess
        return sess
