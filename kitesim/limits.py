"""Kite's order rate limit as Zerodha counts it: per calendar second, minute and IST day.

Since 1 April 2026 Kite counts order requests (place, modify, cancel) in
calendar windows on its own clock, not in sliding windows: 10 orders at
09:15:00.9 and 10 more at 09:15:01.1 are allowed (two calendar seconds), while
11 between 09:15:01.0 and 09:15:01.9 are not. A sliding-window limiter (see
:mod:`core.ratelimit`) disagrees with Kite at every boundary, so the simulator
counts the way Kite does; a client pacing itself with a sliding window of the
same limit never trips it.

The windows are keyed by the integer second / minute of the wall clock
(``time.time()``) and by the IST calendar day (UTC+05:30, no DST), so the daily
count starts again at midnight IST. A refused call is not counted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Literal

Unit = Literal["second", "minute", "day"]

IST_OFFSET_S = 19_800  # +05:30: the day window turns over at midnight IST, not UTC


def window_key(unit: Unit, now: float) -> int:
    """The calendar window ``now`` falls in: its integer second, minute or IST day number."""
    if unit == "second":
        return int(now)
    if unit == "minute":
        return int(now // 60)
    return int((now + IST_OFFSET_S) // 86_400)


class CalendarLimiter:
    """At most ``limit`` calls per calendar window, for each ``(unit, limit)`` of ``limits``.

    Thread safe; ``clock`` is injected (a wall clock in seconds since the epoch)
    so tests can step across window boundaries by hand.
    """

    def __init__(self, limits: Sequence[tuple[Unit, int]], clock: Callable[[], float] = time.time) -> None:
        if not limits or any(limit < 1 for _, limit in limits):
            raise ValueError("every window needs a limit >= 1")
        self.limits: tuple[tuple[Unit, int], ...] = tuple(limits)
        self.clock = clock
        self._lock = threading.Lock()
        # per limit: [window key, calls counted in it]
        self._state: list[list[int]] = [[-1, 0] for _ in self.limits]

    def try_acquire(self) -> bool:
        """Count one call and return True if every window has room now, else count nothing."""
        with self._lock:
            now = self.clock()
            keys = [window_key(unit, now) for unit, _ in self.limits]
            for (_, limit), key, (seen_key, count) in zip(self.limits, keys, self._state, strict=True):
                if seen_key == key and count >= limit:
                    return False
            for key, state in zip(keys, self._state, strict=True):
                if state[0] != key:
                    state[0], state[1] = key, 0
                state[1] += 1
            return True

    def counts(self) -> dict[str, int]:
        """Calls counted in the current window of each unit (0 once a window has passed)."""
        with self._lock:
            now = self.clock()
            return {unit: (count if key == window_key(unit, now) else 0)
                    for (unit, _), (key, count) in zip(self.limits, self._state, strict=True)}
