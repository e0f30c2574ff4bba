"""Credentials and rate limits of the simulated Kite API.

Tokens: the configured access token is valid from start-up; ``POST
/session/token`` issues more. With ``expires_after`` every token stops working
that many (wall) seconds after it was issued, and then every call fails with
403 TokenException "Incorrect `api_key` or `access_token`.", as Kite does after
its 06:00 IST expiry.

Rate limits (per api_key, sliding windows, Kite's published numbers): order
place/modify/cancel 10/s, 400/min, 5000/day; quotes 1/s; historical 3/s;
everything else 10/s. A refused request is not counted.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable

from core.ratelimit import RateLimiter
from kitesim.errors import INCORRECT_TOKEN, NetworkError, TokenError

RATE_LIMITS: dict[str, tuple[tuple[float, int], ...]] = {
    "orders": ((1.0, 10), (60.0, 400), (86400.0, 5000)),
    "quote": ((1.0, 1),),
    "historical": ((1.0, 3),),
    "other": ((1.0, 10),),
}


def checksum(api_key: str, request_token: str, api_secret: str) -> str:
    """The ``generate_session`` checksum: sha256(api_key + request_token + api_secret)."""
    return hashlib.sha256((api_key + request_token + api_secret).encode()).hexdigest()


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


class RequestLimits:
    """Kite's request limits per (api_key, category): one :class:`core.ratelimit.RateLimiter` each."""

    def __init__(self, limits: dict[str, tuple[tuple[float, int], ...]] | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits or RATE_LIMITS
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._limiters: dict[tuple[str, str], RateLimiter] = {}

    def check(self, key: str, category: str) -> None:
        """Count one request or raise 429 NetworkException "Too many requests" (not counted)."""
        with self._lock:
            limiter = self._limiters.get((key, category))
            if limiter is None:
                windows = self.limits.get(category, self.limits["other"])
                limiter = self._limiters[(key, category)] = RateLimiter(windows=windows, clock=self._monotonic)
        if not limiter.try_acquire():
            raise NetworkError("Too many requests", 429)
