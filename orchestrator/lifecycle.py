"""Pure lifecycle logic for one supervised service: states and the restart decision.

No I/O and no clock: callers pass ``now`` and how long the child ran, so the
policy is unit-tested without processes or sleeps.

Exit handling (in this order):

1. An exit code listed in ``fatal_exit_codes`` (default 2 = ConfigError,
   3 = FatalError) marks the service ``failed`` at once: it needs a human, and
   restarting would only hot-loop. ``ctl restart NAME`` tries again.
2. A oneshot that exited 0 is ``exited`` (done, and satisfies its dependents).
3. Policy ``never``, or ``on-failure`` with exit 0: ``exited`` (0) or ``failed``.
4. Otherwise restart after an exponential backoff
   (``initial * multiplier**(n-1)`` capped at ``max``, n = consecutive failures;
   a run of at least ``stable_after`` seconds resets n). If ``max_restarts``
   restarts already happened within ``window`` seconds, the service is
   ``failed`` instead; other services are not affected.
"""

from __future__ import annotations

import enum
import signal
from collections import deque
from dataclasses import dataclass
from typing import Literal

from orchestrator.config import RestartSpec


class ServiceState(enum.StrEnum):
    """What ``ctl status`` shows for a service."""

    WAITING = "waiting"      # enabled, waiting for its dependencies to be ready
    STARTING = "starting"    # running, readiness probe not passed yet
    READY = "ready"          # running and ready
    BACKOFF = "backoff"      # exited, restart scheduled
    FAILED = "failed"        # gave up (too many restarts, fatal exit code, or policy)
    STOPPED = "stopped"      # stopped by the operator or the supervisor
    EXITED = "exited"        # exited and not restarted by policy (oneshot done, exit 0)
    DISABLED = "disabled"    # not enabled in this mode / enabled: false


@dataclass(frozen=True)
class ExitDecision:
    """What to do after a child exited."""

    action: Literal["restart", "exited", "failed"]
    delay: float = 0.0
    reason: str = ""


def describe_exit(returncode: int) -> str:
    """``exit 1`` or ``signal SIGKILL`` for a Popen return code."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit {returncode}"


def backoff_delay(spec: RestartSpec, consecutive_failures: int) -> float:
    """Delay before restart number ``consecutive_failures`` (1-based), capped at ``backoff_max``."""
    n = max(1, consecutive_failures)
    delay = spec.backoff_initial * spec.backoff_multiplier ** (n - 1)
    return min(spec.backoff_max, delay)


class RestartTracker:
    """Decides restart/exited/failed for each exit of one service; keeps the window history."""

    def __init__(self, spec: RestartSpec, oneshot: bool = False) -> None:
        self.spec = spec
        self.oneshot = oneshot
        self.consecutive_failures = 0
        self._restarts: deque[float] = deque()

    def reset(self) -> None:
        """Forget history (an operator restart)."""
        self.consecutive_failures = 0
        self._restarts.clear()

    def restarts_in_window(self, now: float) -> int:
        """Restarts counted against ``max_restarts`` at time ``now``."""
        while self._restarts and now - self._restarts[0] > self.spec.window:
            self._restarts.popleft()
        return len(self._restarts)

    def on_exit(self, returncode: int, ran_for: float, now: float, not_ready: bool = False) -> ExitDecision:
        """The decision for an exit with ``returncode`` after running ``ran_for`` seconds.

        ``not_ready``: the supervisor stopped the child because its readiness
        probe never passed; that is a failure whatever the exit code.
        """
        what = "readiness timeout" if not_ready else describe_exit(returncode)
        if returncode in self.spec.fatal_exit_codes and not not_ready:
            return ExitDecision("failed", reason=f"{what}: fatal exit code, not restarted")
        ok = returncode == 0 and not not_ready
        if self.oneshot and ok:
            return ExitDecision("exited", reason=f"{what}: oneshot done")
        if self.spec.policy == "never" or (self.spec.policy == "on-failure" and ok):
            return ExitDecision("exited" if ok else "failed",
                                reason=f"{what}: restart policy {self.spec.policy}")
        if ran_for >= self.spec.stable_after:
            self.consecutive_failures = 0
        count = self.restarts_in_window(now)
        if count >= self.spec.max_restarts:
            return ExitDecision(
                "failed", reason=f"{what}: {count} restarts within {self.spec.window:g}s, giving up")
        self.consecutive_failures += 1
        self._restarts.append(now)
        return ExitDecision("restart", delay=backoff_delay(self.spec, self.consecutive_failures), reason=what)
