"""Kite historical candles as a library: :class:`KiteSource`, rate limited and retried.

Shared by the daily repair CLI (:mod:`ingestion.merge_hist_daily`) and the vendor
check service (:mod:`compute.vendor_verify_runner`). Kite allows 3 historical requests
per second, counted in the server's own sliding window: :func:`history_limiter`
adds a safety margin to ours.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime

from kiteconnect import KiteConnect, exceptions as kite_ex

from core.clock import IST
from core.errors import FatalError, TransientError
from core.ratelimit import RateLimiter
from ingestion.bar_merge import Candle, kite_candles

log = logging.getLogger("kite_history")
KITE_RETRIES = 5
#: Seconds added to Kite's 1 s window so our count never runs ahead of the server's.
WINDOW_MARGIN_S = 0.05


def history_limiter(rate: int = 3) -> RateLimiter:
    """A limiter for Kite's historical API: ``rate`` calls per second plus :data:`WINDOW_MARGIN_S`."""
    return RateLimiter(rate, per=1.0, margin=WINDOW_MARGIN_S)


class KiteSource:
    """Candles from ``KiteConnect.historical_data``, rate limited, transient errors retried.

    Minute candles by default; ``interval`` takes any Kite interval (``3minute`` ... ``60minute``).
    """

    name = "kite"

    def __init__(self, kite: KiteConnect, limiter: RateLimiter, sleep: Callable[[float], None] = time.sleep) -> None:
        self.kite, self.limiter, self.sleep = kite, limiter, sleep
        self.requests = 0

    def candles(self, token: int, window: tuple[int, int], interval: str = "minute") -> list[Candle]:
        """Candles starting in ``[window[0], window[1]]`` (Kite's ``to`` is inclusive)."""
        start = datetime.fromtimestamp(window[0] / 1000, IST).strftime("%Y-%m-%d %H:%M:%S")
        end = datetime.fromtimestamp(window[1] / 1000, IST).strftime("%Y-%m-%d %H:%M:%S")
        delay = 0.5
        for attempt in range(1, KITE_RETRIES + 1):
            self.limiter.acquire()
            self.requests += 1
            try:
                return kite_candles(self.kite.historical_data(token, start, end, interval))
            except kite_ex.TokenException as exc:
                raise FatalError(f"Kite rejected the access token ({exc.code}): {exc}; "
                                 "generate a new KITE_ACCESS_TOKEN") from None
            except (kite_ex.NetworkException, kite_ex.DataException, kite_ex.GeneralException, OSError) as exc:
                code = getattr(exc, "code", None)
                if isinstance(exc, kite_ex.GeneralException) and (code or 500) < 500:
                    raise
                if attempt == KITE_RETRIES:
                    raise TransientError(f"{type(exc).__name__} {code or ''} after {attempt} attempts: "
                                         f"{str(exc)[:120]}") from None
                log.warning("historical fetch retry token=%d attempt=%d error=%s", token, attempt,
                            type(exc).__name__)
                self.sleep(delay * (2 if code == 429 else 1))
                delay = min(delay * 2, 8.0)
        raise AssertionError("unreachable")
