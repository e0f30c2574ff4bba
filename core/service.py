"""The service runtime: lifecycle, signals, heartbeat, retries, exit codes.

A service module is wiring: it subclasses :class:`Service` and calls
:func:`run_service`. The runtime owns the loop::

    STARTING -> RUNNING -> STOPPING -> STOPPED      (FAULTED on an unexpected error)

- SIGTERM/SIGINT only set a flag; the current step finishes, then ``stop()``
  drains, flushes and commits, and the process exits 0.
- ``TransientError`` (broker or database down) during start or a step is logged
  as one line and retried with capped exponential backoff; the service never
  commits past a failed step (see :mod:`core.stream`).
- ``ConfigError`` exits 2 with one line; ``FatalError`` exits 3 (the supervisor
  does not hot-loop on it); anything else is logged with a traceback, exit 1.
"""

from __future__ import annotations

import enum
import logging
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from types import FrameType
from typing import Any

from core.errors import (
    EXIT_CONFIG,
    EXIT_FATAL,
    EXIT_OK,
    EXIT_UNEXPECTED,
    ConfigError,
    FatalError,
    Interrupted,
    TransientError,
)
from core.logs import setup_logging
from core.metrics import Metrics
from core.settings import Settings, load_settings


class Lifecycle(enum.StrEnum):
    """Explicit service states (exported as a gauge and on /health)."""

    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAULTED = "faulted"


class Backoff:
    """Capped exponential backoff: 0.5 s, 1 s, 2 s ... up to ``cap``; reset on success."""

    def __init__(self, initial: float = 0.5, cap: float = 10.0, factor: float = 2.0) -> None:
        self.initial, self.cap, self.factor = initial, cap, factor
        self.current = initial
        self.failures = 0

    def next_delay(self) -> float:
        delay = self.current
        self.current = min(self.cap, self.current * self.factor)
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.current = self.initial
        self.failures = 0


class Service:
    """Base class: override ``start``, ``step`` and ``stop``; keep logic in pure classes."""

    name = "service"
    heartbeat_interval = 30.0

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.log = logging.getLogger(self.name)
        self.state = Lifecycle.STARTING
        self._stop = threading.Event()

    # -- to override -------------------------------------------------------
    def start(self) -> None:
        """Connect and build state. May raise TransientError (retried)."""

    def step(self) -> None:
        """One iteration: poll, process, deliver, commit. Must return within ~1 s."""
        self._stop.wait(0.5)

    def stop(self) -> None:
        """Drain: finish, flush, commit, close. Called once on the way out."""

    def heartbeat_fields(self) -> dict[str, Any]:
        """Key/values for the periodic heartbeat line."""
        return {}

    # -- runtime API --------------------------------------------------------
    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def request_stop(self) -> None:
        self._stop.set()

    def sleep(self, seconds: float) -> bool:
        """Interruptible sleep; returns True if a stop was requested meanwhile."""
        return self._stop.wait(seconds)

    def health(self) -> tuple[bool, dict[str, Any]]:
        return self.state == Lifecycle.RUNNING, {"state": self.state.value}


def _install_signal_handlers(svc: Service) -> None:
    def handler(signum: int, _frame: FrameType | None) -> None:
        svc.log.info("signal received signal=%s draining", signal.Signals(signum).name)
        svc.request_stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _retrying(svc: Service, what: str, fn: Callable[[], None], backoff: Backoff) -> bool:
    """Run ``fn`` until it succeeds or a stop is requested; True on success."""
    while not svc.stopping:
        try:
            fn()
            if backoff.failures:
                svc.log.info("%s recovered after failures=%d", what, backoff.failures)
            backoff.reset()
            return True
        except TransientError as exc:
            delay = backoff.next_delay()
            svc.log.warning("%s failed, retrying in %.1fs: %s", what, delay, exc)
            svc.sleep(delay)
    return False


def run_service(factory: Callable[[Settings, Metrics], Service], name: str,
                argv: list[str] | None = None, settings: Settings | None = None) -> int:
    """Run one service in the foreground until SIGTERM; returns the process exit code."""
    log = setup_logging(name)
    try:
        settings = settings or load_settings()
        logging.getLogger().setLevel(settings.log_level.upper())
        metrics = Metrics(name)
        svc = factory(settings, metrics)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    state_gauge = metrics.gauge("up", "1 while the service is running")
    _install_signal_handlers(svc)
    port = metrics.serve(settings.metrics_port, svc.health)
    log.info("service starting metrics=http://127.0.0.1:%d/metrics mode=%s", port, settings.trading_mode)
    backoff = Backoff()
    code = EXIT_OK
    try:
        if _retrying(svc, "start", svc.start, backoff):
            svc.state = Lifecycle.RUNNING
            state_gauge.set(1)
            log.info("service running")
            last_beat = time.monotonic()
            while not svc.stopping:
                if not _retrying(svc, "step", svc.step, backoff):
                    break
                if time.monotonic() - last_beat >= svc.heartbeat_interval:
                    last_beat = time.monotonic()
                    fields = " ".join(f"{k}={v}" for k, v in svc.heartbeat_fields().items())
                    log.info("heartbeat state=%s %s", svc.state.value, fields)
    except Interrupted as exc:
        log.info("stopping mid-batch, nothing committed: %s", exc)
    except ConfigError as exc:
        log.error("config error: %s", exc)
        print(f"error: {exc}", file=sys.stderr)
        code = EXIT_CONFIG
    except FatalError as exc:
        log.error("fatal: %s", exc)
        code = EXIT_FATAL
    except Exception:  # noqa: BLE001 - top-level handler: log and exit non-zero
        svc.state = Lifecycle.FAULTED
        log.error("unexpected error, exiting: %s", traceback.format_exc().replace("\n", " | "))
        code = EXIT_UNEXPECTED
    svc.state = Lifecycle.STOPPING
    state_gauge.set(0)
    try:
        svc.stop()
    except Exception:  # noqa: BLE001 - still exit, but say why
        log.error("error while stopping: %s", traceback.format_exc().replace("\n", " | "))
        code = code or EXIT_UNEXPECTED
    svc.state = Lifecycle.STOPPED if code == EXIT_OK else Lifecycle.FAULTED
    log.info("service stopped exit=%d", code)
    metrics.close()
    return code
