"""Credentials and rate limits of the simulated Kite API.

Tokens: the configured access token is valid from start-up; ``POST
/session/token`` issues more. With ``expires_after`` every token stops working
that many (wall) seconds after it was issued, and then every call fails with
403 TokenException "Incorrect `api_key` or `access_token`.", as Kite does after
its 06:00 IST expiry.

Tokens can also be managed by a test or an operator tool through ``POST
/_sim/session`` (:meth:`SessionStore.expire_all`, :meth:`SessionStore.add`).

Rate limits (per api_key, Kite's published numbers): order place/modify/cancel
10 per calendar second, 400 per calendar minute, 5000 per IST day, counted on
the wall clock the way Kite counts them since 1 April 2026 (see
:mod:`kitesim.limits`); quotes 1/s, historical 3/s and everything else 10/s in
sliding windows. A refused request is not counted; every 429 sent is counted
per category (``GET /_sim/stats`` -> ``rate_limited``).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from collections.abc import Callable

from core.ratelimit import RateLimiter
from kitesim.errors import INCORRECT_TOKEN, InputError, NetworkError, TokenError
from kitesim.limits import CalendarLimiter, Unit

#: Categories counted in calendar windows on the wall clock, as Kite does for orders.
CALENDAR_LIMITS: dict[str, tuple[tuple[Unit, int], ...]] = {
    "orders": (("second", 10), ("minute", 400), ("day", 5000)),
}

#: Categories counted in sliding windows of (seconds, limit).
RATE_LIMITS: dict[str, tuple[tuple[float, int], ...]] = {
    "quote": ((1.0, 1),),
    "historical": ((1.0, 3),),
    "other": ((1.0, 10),),
}


def checksum(api_key: str, request_token: str, api_secret: str) -> str:
    """The ``generate_session`` checksum: sha256(api_key + request_token + api_secret)."""
    return hashlib.sha256((api_key + request_token + api_secret).encode()).hexdigest()


def check_token_text(token: object) -> None:
    """Raise InputError unless ``token`` could travel in ``Authorization: token key:TOKEN``."""
    if not isinstance(token, str) or not token or len(token) > 200 or not token.isprintable() \
            or any(c.isspace() for c in token) or ":" in token:
        raise InputError("token must be 1-200 printable characters without spaces or ':'")


class SessionStore:
    """Valid access tokens of the one simulated app (``api_key``)."""

    def __init__(self, api_key: str, access_token: str, api_secret: str = "sim-secret",  # noqa: S107 - sim default
                 expires_after: float | None = None, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.api_key = api_key
        self.api_secret = api_secret
        self.expires_after = expires_after
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._tokens: dict[str, float] = {}
        self._issued = 0
        self._add(access_token)

    def _add(self, token: str) -> None:
        with self._lock:
            self._tokens[token] = self._monotonic()

    def valid(self, api_key: str | None, token: str | None) -> bool:
        """True for the app's key with a live token."""
        if api_key != self.api_key or not token:
            return False
        with self._lock:
            issued = self._tokens.get(token)
        if issued is None:
            return False
        return self.expires_after is None or self._monotonic() - issued < self.expires_after

    def check_header(self, header: str | None) -> str:
        """Check ``Authorization: token api_key:access_token``; returns the api_key or raises TokenError."""
        if header and header.startswith("token ") and ":" in header:
            api_key, _, token = header[len("token "):].partition(":")
            if self.valid(api_key.strip(), token.strip()):
                return api_key.strip()
        raise TokenError(INCORRECT_TOKEN)

    def generate(self, api_key: str | None, request_token: str | None, check: str | None) -> str:
        """Exchange a request token for a new access token (checksum verified)."""
        if api_key != self.api_key:
            raise TokenError("Invalid `api_key`.")
        if not request_token:
            raise TokenError("Invalid `request_token`.")
        if check != checksum(api_key, request_token, self.api_secret):
            raise TokenError("Invalid `checksum`.")
        with self._lock:
            self._issued += 1
            token = f"simsession{self._issued:04d}{hashlib.sha1(request_token.encode()).hexdigest()[:12]}"  # noqa: S324
        self._add(token)
        return token

    def invalidate(self, token: str | None) -> bool:
        """Forget a token (logout); True when it existed."""
        with self._lock:
            return self._tokens.pop(token or "", None) is not None

    def expire_all(self) -> int:
        """Invalidate every access token now (Kite's 06:00 IST expiry on demand); returns how many."""
        with self._lock:
            n = len(self._tokens)
            self._tokens.clear()
            return n

    def add(self, token: str) -> None:
        """Register an extra valid access token (as if obtained elsewhere, e.g. for ``set-token``)."""
        check_token_text(token)
        self._add(token)

    def live(self) -> int:
        """How many tokens are valid now."""
        with self._lock:
            issued = list(self._tokens.values())
        if self.expires_after is None:
            return len(issued)
        now = self._monotonic()
        return sum(1 for t in issued if now - t < self.expires_after)


class RequestLimits:
    """Kite's request limits per (api_key, category), and a count of the 429s they caused.

    Categories in ``calendar`` (orders) use a :class:`kitesim.limits.CalendarLimiter`
    on the ``wall`` clock; the others a sliding :class:`core.ratelimit.RateLimiter`
    on ``monotonic``.
    """

    def __init__(self, limits: dict[str, tuple[tuple[float, int], ...]] | None = None,
                 monotonic: Callable[[], float] = time.monotonic,
                 calendar: dict[str, tuple[tuple[Unit, int], ...]] | None = None,
                 wall: Callable[[], float] = time.time) -> None:
        self.limits = limits or RATE_LIMITS
        self.calendar = CALENDAR_LIMITS if calendar is None else calendar
        self._monotonic = monotonic
        self._wall = wall
        self._lock = threading.Lock()
        self._limiters: dict[tuple[str, str], RateLimiter | CalendarLimiter] = {}
        self._refused: Counter[str] = Counter()

    def _limiter(self, key: str, category: str) -> RateLimiter | CalendarLimiter:
        with self._lock:
            limiter = self._limiters.get((key, category))
            if limiter is None:
                if category in self.calendar:
                    limiter = CalendarLimiter(self.calendar[category], clock=self._wall)
                else:
                    windows = self.limits.get(category, self.limits["other"])
                    limiter = RateLimiter(windows=windows, clock=self._monotonic)
                self._limiters[(key, category)] = limiter
            return limiter

    def check(self, key: str, category: str) -> None:
        """Count one request or raise 429 NetworkException "Too many requests" (not counted)."""
        if not self._limiter(key, category).try_acquire():
            with self._lock:
                self._refused[category] += 1
            raise NetworkError("Too many requests", 429)

    def refused(self) -> dict[str, int]:
        """429s sent so far per category (every known category, zeros included)."""
        with self._lock:
            counts = dict(self._refused)
        return {c: counts.get(c, 0) for c in sorted({*self.calendar, *self.limits, *counts})}
