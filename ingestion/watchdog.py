"""Feed staleness watchdog (pure: time is passed in, nothing is done, only decided).

The known field problem with Kite's WebSocket: the feed can go silent without
the socket closing, so KiteTicker never calls ``on_close`` and never
reconnects (its ping/pong check is inert: it never sends pings). This
watchdog looks at what arrives and decides:

- **silent connection** (to be force-reconnected): a connected shard that has
  received no frame at all, not even Kite's 1-second heartbeat, for
  ``silence_after_s`` (any time of day), or, during market hours, no tick
  packet for ``silence_after_s``. After a verdict the shard's clock restarts,
  so a reconnect that does not help is retried every ``silence_after_s``,
  not on every check.
- **stale instruments** (reported as a metric and a log line, not acted on,
  since an illiquid instrument can legitimately be quiet): during market hours,
  instruments with no tick for ``stale_after_s``, counted from the later of
  their last tick and today's session open.

Market hours come from the exchange calendar (:mod:`core.sessions`, NSE by
default): outside a session (before the open, after the close, weekends,
holidays) a feed that still sends heartbeats is left alone and nothing is
stale. ``always`` makes every moment market hours (tests, 24x7 simulators).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from core.errors import ConfigError
from core.sessions import ExchangeCalendar, load_calendar

IST_OFFSET_S = 5 * 3600 + 30 * 60
DAY_S = 86_400


def _hhmm(text: str) -> int:
    parts = text.strip().split(":")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"time must be HH:MM, got {text!r}")
    h, m = int(parts[0]), int(parts[1])
    if not (0 <= h <= 24 and 0 <= m < 60) or (h == 24 and m):
        raise ValueError(f"time out of range: {text!r}")
    return h * 3600 + m * 60


@dataclass(frozen=True)
class MarketHours:
    """When the market is open: an exchange's sessions from the calendar (default NSE), or a fixed window.

    ``exchange`` reads :mod:`core.sessions` (``configs/sessions.yaml``): trading
    days, holidays and special sessions included, so on a holiday or weekend the
    market is closed all day. ``window`` (seconds after IST midnight) is a fixed
    daily window instead (tests, operators overriding); ``always`` is 24x7.
    """

    exchange: str | None = "NSE"
    window: tuple[int, int] | None = None
    weekdays_only: bool = True
    always: bool = False
    calendar: ExchangeCalendar | None = None

    @classmethod
    def parse(cls, text: str, calendar: ExchangeCalendar | None = None) -> MarketHours:
        """An exchange code of the calendar (``"NSE"``), ``"always"``, or ``"HH:MM-HH:MM[/daily|/weekdays]"`` IST."""
        spec = text.strip()
        if spec.lower() == "always":
            return cls(None, weekdays_only=False, always=True)
        cal = calendar or load_calendar()
        if spec.upper() in cal.exchanges:
            return cls(spec.upper(), calendar=cal)
        window, _, days = spec.lower().partition("/")
        if days not in ("", "daily", "weekdays"):
            raise ConfigError(f"market hours {text!r}: suffix must be /daily or /weekdays")
        try:
            start, end = window.split("-")
            open_s, close_s = _hhmm(start), _hhmm(end)
        except ValueError as exc:
            raise ConfigError(f"market hours {text!r}: want an exchange ({', '.join(cal.exchanges)}), "
                              f"HH:MM-HH:MM[/daily] or 'always' ({exc})") from None
        if open_s >= close_s:
            raise ConfigError(f"market hours {text!r}: open must be before close")
        return cls(None, (open_s, close_s), weekdays_only=days != "daily")

    def session_start(self, epoch_s: float) -> float | None:
        """Epoch of the current session's open if ``epoch_s`` is inside market hours, else ``None``."""
        if self.always:
            return float("-inf")
        if self.window is None:
            session = (self.calendar or load_calendar()).session_at(self.exchange or "NSE", int(epoch_s * 1000))
            return None if session is None else session.open_ms / 1000
        local = epoch_s + IST_OFFSET_S
        midnight_local = local - local % DAY_S
        if self.weekdays_only and ((midnight_local // DAY_S) + 3) % 7 >= 5:  # 1970-01-01 was a Thursday
            return None
        sec = local - midnight_local
        open_s, close_s = self.window
        if open_s <= sec < close_s:
            return midnight_local - IST_OFFSET_S + open_s
        return None

    def is_open(self, epoch_s: float) -> bool:
        """True inside market hours."""
        return self.session_start(epoch_s) is not None


@dataclass(slots=True)
class WatchdogReport:
    """One check's verdict."""

    market_open: bool
    stale: list[int] = field(default_factory=list)
    silent_shards: list[int] = field(default_factory=list)


class FeedWatchdog:
    """Tracks per-shard and per-instrument arrival times; :meth:`check` decides.

    Shard-level notes (:meth:`connected`, :meth:`disconnected`, :meth:`frame`)
    come from the reactor thread and are single attribute writes; per-instrument
    notes (:meth:`ticks`) and :meth:`check` run on the service loop thread.
    """

    def __init__(self, shards: Sequence[Sequence[int]], hours: MarketHours, stale_after_s: float = 60.0,
                 silence_after_s: float = 15.0, now: float | None = None) -> None:
        if stale_after_s <= 0 or silence_after_s <= 0:
            raise ConfigError("stale and silence thresholds must be > 0 seconds")
        self.hours = hours
        self.stale_after_s = stale_after_s
        self.silence_after_s = silence_after_s
        start = time.time() if now is None else now
        self.started_at = start
        self.tokens = [t for shard in shards for t in shard]
        self._last_seen: dict[int, float] = {}
        n = len(shards)
        self._connected = [False] * n
        self._last_frame = [start] * n  # any frame, heartbeats included
        self._last_data = [start] * n  # frames carrying ticks

    # -- notes --------------------------------------------------------------
    def connected(self, shard: int, now: float) -> None:
        """A connection (re)opened: its silence clock starts now."""
        self._last_frame[shard] = now
        self._last_data[shard] = now
        self._connected[shard] = True

    def disconnected(self, shard: int) -> None:
        """A connection closed: KiteTicker's own reconnect is in charge until it reopens."""
        self._connected[shard] = False

    def frame(self, shard: int, now: float, has_ticks: bool) -> None:
        """A frame arrived on ``shard`` (a heartbeat when ``has_ticks`` is False)."""
        self._last_frame[shard] = now
        if has_ticks:
            self._last_data[shard] = now

    def ticks(self, tokens: Iterable[int], now: float) -> None:
        """Ticks of these instruments were received at ``now``."""
        seen = self._last_seen
        for t in tokens:
            seen[t] = now

    # -- verdict --------------------------------------------------------------
    def check(self, now: float) -> WatchdogReport:
        """Silent shards to reconnect and (during market hours) stale instruments."""
        session_start = self.hours.session_start(now)
        report = WatchdogReport(market_open=session_start is not None)
        limit = self.silence_after_s
        for i, up in enumerate(self._connected):
            if not up:
                continue
            no_frames = now - self._last_frame[i] > limit
            no_data = report.market_open and now - self._last_data[i] > limit
            if no_frames or no_data:
                report.silent_shards.append(i)
                # Restart the clock: the next verdict for this shard comes one period later.
                self._last_frame[i] = self._last_data[i] = now
        if session_start is not None:
            floor = max(session_start, self.started_at)
            cutoff = now - self.stale_after_s
            seen = self._last_seen
            report.stale = [t for t in self.tokens if max(seen.get(t, floor), floor) < cutoff]
        return report

    def last_seen(self, token: int) -> float | None:
        """When a tick of ``token`` was last noted."""
        return self._last_seen.get(token)
