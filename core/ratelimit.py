"""Sliding-window rate limiting: the one limiter for clients that wait and servers that refuse.

A :class:`RateLimiter` allows at most ``limit`` calls in any ``window`` seconds,
for each of its windows (Kite's order API, for example, is 10 per second and
200 per minute). :meth:`RateLimiter.try_acquire` records a call if every window
allows it (a server answers 429 otherwise); :meth:`RateLimiter.acquire` sleeps
until it may (a client pacing itself). Clock and sleep are injected, so tests
drive time by hand. Thread safe.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence


class RateLimiter:
    """At most ``rate`` calls per ``per`` seconds (plus ``margin``), or per each of ``windows``.

    ``margin`` widens every window: a remote server counting in its own sliding
    window can trip a client that spaces calls at exactly ``per / rate``.
    """

    def __init__(self, rate: int | None = None, per: float = 1.0, margin: float = 0.0, *,
                 windows: Sequence[tuple[float, int]] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if windows is None:
            if rate is None:
                raise ValueError("give rate or windows")
            windows = ((per, rate),)
        elif rate is not None:
            raise ValueError("give rate or windows, not both")
        if not windows or any(limit < 1 or w <= 0 for w, limit in windows):
            raise ValueError("every window needs seconds > 0 and a limit >= 1")
        self.windows: tuple[tuple[float, int], ...] = tuple((w + margin, limit) for w, limit in windows)
        self.clock, self.sleep = clock, sleep
        self._longest = max(w for w, _ in self.windows)
        self._hits: deque[float] = deque()
        self._lock = threading.Lock()
        self.waited = 0.0

    def _wait_needed(self, now: float) -> float:
        """Seconds until every window has room (0 when a call is allowed now); caller holds the lock."""
        hits = self._hits
        while hits and now - hits[0] >= self._longest:
            hits.popleft()
        wait = 0.0
        for window, limit in self.windows:
            if len(hits) >= limit:
                oldest_counted = hits[len(hits) - limit]  # must leave the window before another call
                wait = max(wait, window - (now - oldest_counted))
        return wait

    def prime(self, ages_s: Iterable[float]) -> None:
        """Count calls made before this limiter existed (a previous run of the process), ``ages_s`` seconds ago."""
        with self._lock:
            now = self.clock()
            merged = sorted([*self._hits, *(now - a for a in ages_s if 0 <= a < self._longest)])
            self._hits = deque(merged)

    def try_acquire(self) -> bool:
        """Record one call and return True if every window allows it now, else change nothing."""
        with self._lock:
            now = self.clock()
            if self._wait_needed(now) > 0:
                return False
            self._hits.append(now)
            return True

    def acquire(self) -> None:
        """Block (through the injected ``sleep``) until a call is allowed, then record it."""
        while True:
            with self._lock:
                now = self.clock()
                wait = self._wait_needed(now)
                if wait <= 0:
                    self._hits.append(now)
                    return
            self.sleep(wait)
            self.waited += wait
