"""The broker facts sizing needs, through the real ``kiteconnect`` client: equity (margins) and LTP.

- :class:`EquityCache`: ``KiteConnect.margins("equity")["net"]``, reused for ``ttl_s``. When the call
  fails (network, 5xx, token, anything) sizing uses the configured capital, flagged ``fallback``,
  and the broker is asked again after ``retry_s`` (not on every order). Never a silent zero: a
  reading of zero or less is a failure too.
- :func:`ltp`: last prices for MARKET entries with no fresh 1 s bar (Kite's quote API allows 1 call/s:
  one call per batch for all its instruments).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)


class MarginsApi(Protocol):
    def margins(self, segment: str | None = None) -> dict[str, Any]: ...
    def ltp(self, *instruments: str) -> dict[str, Any]: ...


def kite_client(api_key: str, access_token: str, root: str, timeout_s: float) -> Any:
    """A ``KiteConnect`` for ``root`` (kitesim or Kite) with a short timeout (sizing must not stall)."""
    from kiteconnect import KiteConnect

    return KiteConnect(api_key, access_token=access_token, root=root, timeout=timeout_s)


@dataclass(slots=True)
class Equity:
    value: float
    source: str  # broker | fallback | capital
    error: str | None = None


class EquityCache:
    """Equity for sizing: the broker's margins, cached, or the configured capital."""

    def __init__(self, api: MarginsApi | None, capital: float, ttl_s: float, retry_s: float = 5.0,
                 pinned: bool = False, clock: Callable[[], float] = time.monotonic,
                 on_error: Callable[[str], None] | None = None) -> None:
        self.api, self.capital, self.ttl_s, self.retry_s = api, capital, ttl_s, retry_s
        self.pinned = pinned or api is None
        self.clock = clock
        self.on_error = on_error
        self._value: float | None = None
        self._at = -math.inf
        self._failed_at = -math.inf
        self.last_error: str | None = None

    def get(self) -> Equity:
        if self.pinned:
            return Equity(self.capital, "capital")
        now = self.clock()
        if self._value is not None and now - self._at < self.ttl_s:
            return Equity(self._value, "broker")
        if now - self._failed_at < self.retry_s:
            return Equity(self.capital, "fallback", self.last_error)
        try:
            assert self.api is not None
            data = self.api.margins("equity")
            net = float(data["net"])
            if not math.isfinite(net) or net <= 0:
                raise ValueError(f"margins equity.net is {net}")
        except Exception as exc:  # noqa: BLE001 - any broker failure means fallback, never a crash
            self._failed_at = now
            self._value = None
            self.last_error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]
            log.warning("margins failed, sizing on configured capital %.0f: %s", self.capital, self.last_error)
            if self.on_error is not None:
                self.on_error(type(exc).__name__)
            return Equity(self.capital, "fallback", self.last_error)
        self._value, self._at, self.last_error = net, now, None
        return Equity(net, "broker")


def ltp(api: MarginsApi | None, keys: Sequence[str],
        on_error: Callable[[str], None] | None = None) -> dict[str, float]:
    """``EXCHANGE:SYMBOL`` -> last price; whatever fails is simply absent."""
    if api is None or not keys:
        return {}
    try:
        data = api.ltp(*sorted(set(keys)))
    except Exception as exc:  # noqa: BLE001
        log.warning("ltp failed for %d instruments: %s: %s", len(keys), type(exc).__name__, exc)
        if on_error is not None:
            on_error(type(exc).__name__)
        return {}
    out: dict[str, float] = {}
    for k, v in (data or {}).items():
        try:
            p = float(v["last_price"])
        except (KeyError, TypeError, ValueError):
            continue
        if math.isfinite(p) and p > 0:
            out[k] = p
    return out
