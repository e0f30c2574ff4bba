"""Fault injection for the simulator, driven by ``POST /_sim/faults``.

Settings persist until changed (``DELETE /_sim/faults`` resets them); ``drop_ws``
and ``ws_silence_s`` are one-shot actions taken when posted.

Order faults modelled on what Kite has been seen doing (KITE_PROTOCOL.md,
"Failure facts"):

- ``order_reply`` ("ok" | "timeout" | "http_400_timeout"): the order IS placed
  (it is in ``GET /orders`` and may fill), then its reply is spoiled: held back
  ``order_reply_delay_ms`` (default 8000, above pykiteconnect's 7 s timeout), or
  answered 400 InputException "Order request timed out...". It applies to the
  next ``order_reply_next`` placements if that is set (then ``order_reply`` goes
  back to "ok"), else to each placement with probability ``order_reply_rate``
  (default 1.0: every placement), drawn from a seeded RNG.
- ``order_stuck_s``: new orders sit in ``PUT ORDER REQ RECEIVED`` this long.
- ``ip_not_registered``: every order request (place, modify, cancel) gets 403
  PermissionException, as Kite answers an IP missing from the app's whitelist.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kitesim.errors import InputError

OrderReply = Literal["ok", "timeout", "http_400_timeout"]


class FaultConfig(BaseModel):
    """Current fault settings (unknown keys are rejected)."""

    model_config = ConfigDict(extra="forbid")

    delay_ms: int = Field(default=0, ge=0, le=60_000, description="added latency of every Kite REST response")
    http_5xx_rate: float = Field(default=0.0, ge=0.0, le=1.0,
                                 description="probability a REST call fails with 5xx")
    http_5xx_next: int = Field(default=0, ge=0,
                               description="the next N matching REST calls fail (deterministic)")
    http_5xx_code: Literal[500, 502, 503, 504] | None = Field(
        default=None, description="status of injected failures (default: cycles 500/502/503/504)")
    http_5xx_paths: list[str] = Field(default_factory=list, description="path prefixes to fail (empty: all)")
    http_5xx_after_processing: bool = Field(
        default=False, description="apply the request, then fail the reply (order placed, reply lost)")
    order_reject_rate: float = Field(default=0.0, ge=0.0, le=1.0,
                                     description="probability RMS rejects an order")
    cancel_delay_ms: int = Field(default=0, ge=0, le=600_000,
                                 description="cancels wait in CANCEL PENDING this long (may still fill)")
    rate_limits: bool = Field(default=True, description="enforce Kite's rate limits (429)")
    order_reply: OrderReply = Field(
        default="ok", description="spoil the reply of a placed order: hold it back or answer 400 timed out")
    order_reply_next: int = Field(default=0, ge=0,
                                  description="spoil only the next N placements, then order_reply is 'ok'")
    order_reply_rate: float = Field(default=1.0, ge=0.0, le=1.0,
                                    description="probability a placement's reply is spoiled (without _next)")
    order_reply_delay_ms: int = Field(default=8000, ge=0, le=60_000,
                                      description="how long order_reply 'timeout' holds the reply back")
    order_stuck_s: float = Field(default=0.0, ge=0.0, le=600.0,
                                 description="new orders stay in PUT ORDER REQ RECEIVED this many seconds")
    ip_not_registered: bool = Field(default=False,
                                    description="refuse order place/modify/cancel with 403 PermissionException")


class FaultPatch(FaultConfig):
    """A ``POST /_sim/faults`` body: any settings plus one-shot actions."""

    drop_ws: bool = Field(default=False, description="abort every WebSocket connection now (no close frame)")
    ws_silence_s: float = Field(default=0.0, ge=0.0, le=3600.0,
                                description="send nothing (no ticks, heartbeats) this long; keep sockets")


class Faults:
    """Thread-safe fault state shared by the REST and WebSocket servers."""

    def __init__(self, seed: int, defaults: FaultConfig | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.defaults = defaults or FaultConfig()
        self.config = self.defaults
        self._rng = random.Random(f"kitesim:{seed}:faults")
        # its own stream, so turning one fault on does not change the other's draws
        self._reply_rng = random.Random(f"kitesim:{seed}:order_reply")
        self._lock = threading.Lock()
        self._monotonic = monotonic
        self._drop_ws = False
        self._silent_until = 0.0
        self._cycle = 0

    def update(self, body: dict[str, Any]) -> FaultConfig:
        """Merge ``body`` into the settings and take the one-shot actions; bad input -> InputError."""
        if not isinstance(body, dict):
            raise InputError("faults body must be a JSON object")
        try:
            patch = FaultPatch.model_validate({**self.config.model_dump(), **body})
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
            raise InputError(f"faults: {loc}: {msg}") from None
        if patch.order_reply == "ok":
            if body.get("order_reply_next"):
                raise InputError("faults: order_reply_next: needs order_reply 'timeout' or 'http_400_timeout'")
            patch.order_reply_next = 0  # switching the mode off drops what was left of a countdown
        with self._lock:
            self.config = FaultConfig.model_validate(patch.model_dump(exclude={"drop_ws", "ws_silence_s"}))
            if patch.drop_ws:
                self._drop_ws = True
            if patch.ws_silence_s:
                self._silent_until = self._monotonic() + patch.ws_silence_s
            return self.config

    def reset(self) -> FaultConfig:
        """Back to the start-up settings (no faults)."""
        with self._lock:
            self.config = self.defaults
            self._drop_ws = False
            self._silent_until = 0.0
            return self.config

    def http_failure(self, path: str) -> int | None:
        """The status an injected failure of this request should have, or None."""
        with self._lock:
            c = self.config
            if c.http_5xx_paths and not any(path.startswith(p) for p in c.http_5xx_paths):
                return None
            fail = False
            if c.http_5xx_next > 0:
                self.config = c.model_copy(update={"http_5xx_next": c.http_5xx_next - 1})
                fail = True
            elif c.http_5xx_rate and self._rng.random() < c.http_5xx_rate:
                fail = True
            if not fail:
                return None
            if c.http_5xx_code is not None:
                return c.http_5xx_code
            self._cycle += 1
            return (500, 502, 503, 504)[self._cycle % 4]

    def order_reply_fault(self) -> OrderReply | None:
        """How to spoil the reply of an order just placed ("timeout", "http_400_timeout"), or None.

        Call once per successful placement: it counts ``order_reply_next`` down.
        """
        with self._lock:
            c = self.config
            if c.order_reply == "ok":
                return None
            if c.order_reply_next > 0:
                left = c.order_reply_next - 1
                update: dict[str, Any] = {"order_reply_next": left}
                if left == 0:
                    update["order_reply"] = "ok"  # deterministic: exactly N spoiled, then normal
                self.config = c.model_copy(update=update)
                return c.order_reply
            return c.order_reply if self._reply_rng.random() < c.order_reply_rate else None

    def take_drop_ws(self) -> bool:
        """True once after ``drop_ws`` was posted."""
        with self._lock:
            drop, self._drop_ws = self._drop_ws, False
            return drop

    def ws_silent(self) -> bool:
        """True while a ``ws_silence_s`` window is running."""
        return self._monotonic() < self._silent_until

    def snapshot(self) -> dict[str, Any]:
        """Current settings plus the silence state, for ``GET /_sim/faults``."""
        with self._lock:
            out = self.config.model_dump()
        out["ws_silent_for_s"] = round(max(0.0, self._silent_until - self._monotonic()), 3)
        return out
