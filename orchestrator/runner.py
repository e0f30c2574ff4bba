"""One supervised service: spawn, readiness, exit handling, restart with backoff, stop.

A :class:`ServiceRunner` owns at most one child process at a time and one
asyncio task (its lifecycle loop). The restart decision itself is the pure
:class:`~orchestrator.lifecycle.RestartTracker`. Nothing a child does can
raise out of the loop: unexpected errors mark the service failed and are logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from core.logs import kv
from orchestrator.config import Service
from orchestrator.lifecycle import RestartTracker, ServiceState, describe_exit
from orchestrator.logfile import RotatingLogFile, start_pump
from orchestrator.probes import probe_once
from orchestrator.procgroup import descendants, kill_leftovers, signal_group, signal_pid

if TYPE_CHECKING:
    from pathlib import Path

log = logging.getLogger("supervisor")


async def wait_process(proc: subprocess.Popen[bytes]) -> int:
    """Wait for ``proc`` to exit without blocking the loop (pidfd when available, else polling)."""
    if proc.poll() is not None:
        return proc.returncode
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        while proc.poll() is None:
            await asyncio.sleep(0.05)
        return proc.returncode
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[None] = loop.create_future()
    def on_exit() -> None:
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(fd, on_exit)
    try:
        if proc.poll() is None:
            await exited
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    return proc.wait()


class ServiceRunner:
    """Runs one :class:`Service` under its restart policy.

    ``deps_satisfied`` tells whether every dependency is ready right now;
    ``changed`` returns an event set on the next state change of any service;
    ``on_change`` is called after this service's state changes.
    """

    def __init__(self, service: Service, log_dir: Path, deps_satisfied: Callable[[Service], list[str]],
                 changed: Callable[[], asyncio.Event], on_change: Callable[[ServiceRunner], None]) -> None:
        self.service = service
        self.name = service.name
        self.tracker = RestartTracker(service.spec.restart, oneshot=service.spec.oneshot)
        self.state = ServiceState.STOPPED if service.enabled else ServiceState.DISABLED
        self.detail = "" if service.enabled else "not enabled in this mode"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_mono: float | None = None
        self.started_wall: float | None = None
        self.restarts = 0
        self.last_exit: int | None = None
        self.log_path = log_dir / f"{service.name}.log"
        self._log: RotatingLogFile | None = None
        self._task: asyncio.Task[None] | None = None
        self._not_ready = False  # the current child was stopped for a readiness timeout
        self._missing_deps = deps_satisfied
        self._changed = changed
        self._on_change = on_change

    # ----- views -------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The live child's pid, else None."""
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    @property
    def satisfied(self) -> bool:
        """True if dependents may start: ready, a oneshot that exited 0, or disabled (ignored)."""
        if self.state is ServiceState.DISABLED or self.state is ServiceState.READY:
            return True
        return self.service.spec.oneshot and self.state is ServiceState.EXITED and self.last_exit == 0

    def snapshot(self) -> dict[str, Any]:
        """The service's row for ``ctl status --json``."""
        spec = self.service.spec
        running = self.pid is not None
        uptime = time.monotonic() - self.started_mono if running and self.started_mono else None
        return {
            "name": self.name, "group": spec.group, "state": str(self.state), "pid": self.pid,
            "restarts": self.restarts, "uptime": round(uptime, 1) if uptime is not None else None,
            "url": self.service.url, "ready": self.satisfied and self.state is not ServiceState.DISABLED,
            "enabled": self.service.enabled, "oneshot": spec.oneshot, "depends_on": list(spec.depends_on),
            "last_exit": describe_exit(self.last_exit) if self.last_exit is not None else None,
            "detail": self.detail, "log": str(self.log_path),
            "started_at": self.started_wall if running else None,
        }

    def _set(self, state: ServiceState, detail: str = "") -> None:
        changed = state is not self.state or detail != self.detail
        self.state, self.detail = state, detail
        if changed:
            self._on_change(self)

    def _logfile(self) -> RotatingLogFile:
        if self._log is None:
            self._log = RotatingLogFile(self.log_path, self.service.log.max_bytes, self.service.log.backups)
        return self._log

    # ----- control -----------------------------------------------------------------------------

    def start(self, manual: bool = False) -> None:
        """Start the lifecycle loop (no-op if it is running or the service is disabled)."""
        if not self.service.enabled or (self._task is not None and not self._task.done()):
            return
        if manual:
            self.tracker.reset()
            self.restarts += 1
        self._task = asyncio.get_running_loop().create_task(self._lifecycle(), name=f"svc-{self.name}")

    async def stop(self, reason: str = "stopped") -> None:
        """Stop the loop and the child (stop signal, then SIGKILL to the group after the timeout)."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.proc is not None and self.proc.poll() is None:
            await self._terminate(self.proc, reason)
        if self.service.enabled:
            self._set(ServiceState.STOPPED, reason)

    def kill_now(self) -> None:
        """SIGKILL the child's process group at once (second Ctrl-C)."""
        if self.proc is not None and self.proc.poll() is None:
            signal_group(self.proc.pid, signal.SIGKILL)

    def close(self) -> None:
        """Close the log file."""
        if self._log is not None:
            self._log.close()
            self._log = None

    # ----- lifecycle ---------------------------------------------------------------------------

    async def _lifecycle(self) -> None:
        try:
            while True:
                await self._wait_deps()
                proc = self._spawn()
                self._not_ready = False
                rc = 127 if proc is None else await self._supervise(proc)
                ran_for = time.monotonic() - (self.started_mono or time.monotonic())
                if not await self._after_exit(rc, ran_for):
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the supervisor must survive anything a child does
            log.exception("service error %s", kv(service=self.name))
            if self.proc is not None and self.proc.poll() is None:
                signal_group(self.proc.pid, signal.SIGKILL)
            self._set(ServiceState.FAILED, f"supervisor error: {type(exc).__name__}: {exc}")

    async def _wait_deps(self) -> None:
        while True:
            event = self._changed()
            missing = self._missing_deps(self.service)
            if not missing:
                return
            self._set(ServiceState.WAITING, f"waiting for {', '.join(missing)}")
            await event.wait()

    def _spawn(self) -> subprocess.Popen[bytes] | None:
        svc = self.service
        sink = self._logfile()
        sink.note(f"starting: {shlex.join(svc.argv)}")
        self.started_mono, self.started_wall = time.monotonic(), time.time()
        try:
            proc = subprocess.Popen(svc.argv, cwd=svc.cwd, env=svc.env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            sink.note(f"cannot start: {exc}")
            log.error("spawn failed %s", kv(service=self.name, error=exc))
            self.proc = None
            return None
        assert proc.stdout is not None
        start_pump(proc.stdout, sink, self.name)
        self.proc = proc
        log.info("started %s", kv(service=self.name, pid=proc.pid, restarts=self.restarts))
        return proc

    async def _supervise(self, proc: subprocess.Popen[bytes]) -> int:
        """From spawn to exit: readiness, then wait for the child to exit; returns its code."""
        spec = self.service.spec
        exit_wait = asyncio.ensure_future(wait_process(proc))
        probe: asyncio.Future[bool] | None = None
        try:
            if spec.oneshot:
                self._set(ServiceState.STARTING, "running (oneshot)")
            elif spec.readiness is None:
                # No probe: ready once up `ready_after` seconds (a crash at import is never "ready").
                self._set(ServiceState.STARTING, f"ready if still up after {spec.ready_after:g}s")
                await asyncio.wait({exit_wait}, timeout=spec.ready_after)
                if not exit_wait.done():
                    self._set(ServiceState.READY)
                    log.info("ready %s", kv(service=self.name, pid=proc.pid))
            else:
                self._set(ServiceState.STARTING, f"probing {spec.readiness.describe()}")
                probe = asyncio.ensure_future(self._probe_until_ready(proc))
                await asyncio.wait({exit_wait, probe}, return_when=asyncio.FIRST_COMPLETED)
                if probe.done() and probe.result():
                    self._set(ServiceState.READY)
                    log.info("ready %s", kv(service=self.name, pid=proc.pid,
                                            after_s=round(time.monotonic() - (self.started_mono or 0), 2)))
                elif probe.done() and not exit_wait.done():
                    msg = f"not ready after {spec.readiness.timeout:g}s ({spec.readiness.describe()})"
                    log.error("readiness timeout %s", kv(service=self.name, pid=proc.pid, probe=msg))
                    self._logfile().note(msg + ", stopping it")
                    self._not_ready = True
                    await self._terminate(proc, "readiness timeout")
            return await exit_wait
        finally:
            for fut in (probe, exit_wait):
                if fut is not None and not fut.done():
                    fut.cancel()

    async def _probe_until_ready(self, proc: subprocess.Popen[bytes]) -> bool:
        spec = self.service.spec.readiness
        assert spec is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + spec.timeout
        while loop.time() < deadline and proc.poll() is None:
            try:
                if await probe_once(spec, self.service.env, self.service.cwd):
                    return proc.poll() is None
            except Exception as exc:  # a probe bug must not take the runner down
                log.warning("probe error %s", kv(service=self.name, error=exc))
            await asyncio.sleep(spec.interval)
        return False

    async def _after_exit(self, rc: int, ran_for: float) -> bool:
        """Record an exit and apply the restart policy; True to loop and start again."""
        self.last_exit = rc
        if self.proc is not None:
            signal_group(self.proc.pid, signal.SIGKILL)  # no orphans: whatever is left of its group
        what = describe_exit(rc)
        decision = self.tracker.on_exit(rc, ran_for, time.monotonic(), not_ready=self._not_ready)
        then = f"restart in {decision.delay:.1f}s" if decision.action == "restart" else decision.action
        self._logfile().note(f"{what} after {ran_for:.1f}s -> {then} ({decision.reason})")
        level = logging.INFO if decision.action == "exited" and rc == 0 else logging.WARNING
        if decision.action == "failed":
            level = logging.ERROR
        log.log(level, "exited %s", kv(service=self.name, code=what, ran_s=round(ran_for, 1),
                                       action=decision.action, delay_s=round(decision.delay, 2),
                                       reason=decision.reason))
        if decision.action == "restart":
            self._set(ServiceState.BACKOFF, f"{what}; restart in {decision.delay:.1f}s")
            await asyncio.sleep(decision.delay)
            self.restarts += 1
            return True
        state = ServiceState.FAILED if decision.action == "failed" else ServiceState.EXITED
        self._set(state, decision.reason)
        return False

    async def _terminate(self, proc: subprocess.Popen[bytes], reason: str) -> None:
        """Stop signal (group or leader), wait ``stop_timeout``, then SIGKILL the group and leftovers."""
        spec = self.service.spec
        if proc.poll() is None:
            tree = descendants(proc.pid)
            sig = signal.Signals[spec.stop_signal]
            target = "group" if spec.stop_group else "pid"
            self._logfile().note(f"stopping ({reason}): {sig.name} to {target} {proc.pid}")
            (signal_group if spec.stop_group else signal_pid)(proc.pid, sig)
            try:
                await asyncio.wait_for(wait_process(proc), spec.stop_timeout)
            except TimeoutError:
                log.warning("stop timeout, killing %s", kv(service=self.name, pid=proc.pid,
                                                           timeout_s=spec.stop_timeout))
                self._logfile().note(f"not stopped after {spec.stop_timeout:g}s: SIGKILL to group {proc.pid}")
                signal_group(proc.pid, signal.SIGKILL)
                await wait_process(proc)
            signal_group(proc.pid, signal.SIGKILL)
            kill_leftovers(tree)
            self.last_exit = proc.returncode
            self._logfile().note(f"stopped: {describe_exit(proc.returncode)}")
            log.info("stopped %s", kv(service=self.name, pid=proc.pid, code=describe_exit(proc.returncode)))
