"""Session calendars for history the NSE calendar does not describe.

The engine and the risk code ask a calendar for the session of a day (``session``) and the
session open at an instant (``session_at``). Two stand-ins answer like
:class:`core.sessions.ExchangeCalendar`:

- :class:`AlwaysOpen` (``--session none``, 24-hour data): every day is one session from
  00:00 IST to the next midnight inclusive (so a daily bar deciding at midnight is still in
  it); MIS square-off still applies at the registry's square-off time.
- :class:`DailySessions` (daily bars with ``--session nse``): a trading day of the real
  calendar is a whole-day session, a weekend or holiday has none.
"""

from __future__ import annotations

from datetime import date

from core.sessions import DAY_MS, ExchangeCalendar, Session, ist_date, ist_midnight_ms


class AlwaysOpen:
    def session(self, exchange: str, day: date) -> Session:
        base = ist_midnight_ms(day)
        return Session(exchange, day, base, base + DAY_MS + 1)

    def session_at(self, exchange: str, ts_ms: int) -> Session:
        return self.session(exchange, ist_date(ts_ms))


class DailySessions:
    def __init__(self, base: ExchangeCalendar) -> None:
        self.base = base

    def session(self, exchange: str, day: date) -> Session | None:
        if self.base.session(exchange, day) is None:
            return None
        start = ist_midnight_ms(day)
        return Session(exchange, day, start, start + DAY_MS + 1)

    def session_at(self, exchange: str, ts_ms: int) -> Session | None:
        day = ist_date(ts_ms)
        s = self.session(exchange, day)
        if s is None and ts_ms == ist_midnight_ms(day):  # a daily bar deciding at the next midnight
            from datetime import timedelta  # noqa: PLC0415

            s = self.session(exchange, day - timedelta(days=1))
        return s
