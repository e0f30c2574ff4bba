"""Process supervisor: runs the stack described by ``configs/process_supervisor.yaml``.

Usage::

    python -m orchestrator.process_supervisor --config configs/process_supervisor.yaml [--mode paper]
    python -m orchestrator.process_supervisor --config ... --check     # validate and print the plan

Runs in the foreground. Each child gets its own process group
(``start_new_session``), its output in ``var/log/<name>.log`` (size-rotated)
and the environment ``os.environ`` over ``.env``/``infra/.env.docker``/
``infra/.env``, plus the file's ``env``, ``TRADING_MODE``, ``METRICS_PORT``
and the service's own ``env``. A service starts once its ``depends_on`` are
ready (probe passed; a oneshot: exited 0); a dependency that is disabled in
this mode is treated as satisfied (e.g. an external ``POSTGRES_DSN``).

SIGTERM/SIGINT stop the services in reverse dependency order (stop signal,
SIGKILL to the group after ``stop_timeout``); a second signal kills at once.
A child exiting with a code in ``fatal_exit_codes`` (default 2 and 3:
ConfigError/FatalError) is marked ``failed`` and not restarted, so an expired
token cannot hot-loop; ``ctl restart NAME`` retries it. Control channel:
``var/run/supervisor.sock`` (see :mod:`orchestrator.control`,
:mod:`orchestrator.ctl`); pid file ``var/run/supervisor.pid``.
Exit codes: 0 after a clean stop, 2 bad config (one line on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from core.errors import EXIT_CONFIG, EXIT_OK, EXIT_UNEXPECTED, ConfigError
from core.logs import kv, setup_logging
from core.settings import PROJECT_ROOT, child_environment
from orchestrator.config import Service, StackPlan, load_supervisor_config
from orchestrator.control import MAX_LINE, RunPaths, is_listening
from orchestrator.procgroup import kill_orphans, record_children
from orchestrator.runner import ServiceRunner

log = logging.getLogger("supervisor")
DEFAULT_CONFIG = PROJECT_ROOT / "configs" / "process_supervisor.yaml"


class Supervisor:
    """Owns the runners, the control socket and the shutdown sequence."""

    def __init__(self, plan: StackPlan, metrics_port: int = 0) -> None:
        self.plan = plan
        self.paths = RunPaths(plan.var_dir)
        self.metrics_port = metrics_port
        self._changed = asyncio.Event()
        self._shutdown = asyncio.Event()
        self._ops = asyncio.Lock()
        self._stopping = False
        self._metrics: Any = None
        self.runners: dict[str, ServiceRunner] = {
            name: ServiceRunner(svc, self.paths.log_dir, self._missing_deps, lambda: self._changed,
                                self._on_change)
            for name, svc in plan.services.items()
        }

    # ----- state plumbing ----------------------------------------------------------------------

    def _missing_deps(self, svc: Service) -> list[str]:
        return [d for d in svc.spec.depends_on if not self.runners[d].satisfied]

    def _on_change(self, runner: ServiceRunner) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()
        if self._metrics is not None:
            self._metrics.update(runner)
        try:
            record_children(self.paths.children_file,
                            {r.name: pid for r in self.runners.values() if (pid := r.pid) is not None})
        except OSError as exc:
            log.warning("cannot record children %s", kv(file=self.paths.children_file, error=exc))

    def status(self) -> dict[str, Any]:
        """The reply to ``status``: mode, pid and one row per service in start order."""
        return {"ok": True, "mode": self.plan.mode, "pid": os.getpid(), "config": str(self.plan.path),
                "stopping": self._stopping, "services": [r.snapshot() for r in self.runners.values()]}

    # ----- operations --------------------------------------------------------------------------

    async def stop_services(self, names: list[str], reason: str) -> None:
        """Stop ``names`` in reverse dependency order; services of one level stop concurrently."""
        levels = sorted({self.plan.services[n].level for n in names}, reverse=True)
        for level in levels:
            batch = [self.runners[n] for n in names if self.plan.services[n].level == level]
            await asyncio.gather(*(r.stop(reason) for r in batch))

    def _targets(self, target: str) -> list[str]:
        names = self.plan.resolve_target(target)
        if not names:
            raise ValueError(f"unknown service or group {target!r}")
        enabled = [n for n in names if self.plan.services[n].enabled]
        if not enabled:
            raise ValueError(f"{target!r} is not enabled in mode {self.plan.mode}")
        return enabled

    async def restart(self, target: str) -> list[str]:
        """Stop then start a service or every service of a group (others are untouched)."""
        names = self._targets(target)
        async with self._ops:
            log.info("restart %s", kv(target=target, services=",".join(names)))
            await self.stop_services(names, "restarting")
            for n in names:
                self.runners[n].start(manual=True)
        return names

    async def stop_target(self, target: str) -> list[str]:
        """Stop a service or group and leave it stopped (until ``restart``)."""
        names = self._targets(target)
        async with self._ops:
            log.info("stop %s", kv(target=target, services=",".join(names)))
            await self.stop_services(names, "stopped by ctl")
        return names

    def request_shutdown(self, signame: str = "ctl stop") -> None:
        """Begin the orderly shutdown; a second request kills every child group at once."""
        if self._shutdown.is_set():
            log.warning("second stop request, killing all children now %s", kv(signal=signame))
            for r in self.runners.values():
                r.kill_now()
            return
        log.info("shutdown requested %s", kv(signal=signame))
        self._stopping = True
        self._shutdown.set()

    # ----- control socket ----------------------------------------------------------------------

    async def _dispatch(self, req: dict[str, Any]) -> dict[str, Any]:
        cmd = req.get("cmd")
        if cmd == "status":
            return self.status()
        if self._stopping:
            return {"ok": False, "error": "supervisor is shutting down"}
        target = req.get("target")
        if cmd == "restart" and isinstance(target, str):
            return {"ok": True, "restarted": await self.restart(target)}
        if cmd == "stop" and isinstance(target, str) and target:
            return {"ok": True, "stopped": await self.stop_target(target)}
        if cmd == "stop":
            self.request_shutdown()
            return {"ok": True, "pid": os.getpid()}
        return {"ok": False, "error": f"unknown command {cmd!r} (status, restart TARGET, stop [TARGET])"}

    async def _handle_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 10.0)
            try:
                req = json.loads(line)
                if not isinstance(req, dict):
                    raise ValueError("bad request")
                reply = await self._dispatch(req)
            except ValueError as exc:
                reply = {"ok": False, "error": str(exc) or "bad request"}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except Exception:  # a control-channel bug must not kill the supervisor
            log.exception("control request failed")
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    # ----- main --------------------------------------------------------------------------------

    def _claim_run_dir(self) -> None:
        self.paths.run_dir.mkdir(parents=True, exist_ok=True)
        self.paths.log_dir.mkdir(parents=True, exist_ok=True)
        if is_listening(self.paths.socket):
            pid = self.paths.read_pid()
            raise ConfigError(f"{self.paths.socket}: another supervisor is running (pid {pid}); "
                              f"use python -m orchestrator.ctl stop")
        self.paths.socket.unlink(missing_ok=True)
        leftovers = kill_orphans(self.paths.children_file)
        if leftovers:
            log.warning("killed leftovers of a previous supervisor %s", kv(services=",".join(leftovers)))

    def _write_pid(self) -> None:
        tmp = self.paths.pid_file.with_suffix(".tmp")
        tmp.write_text(f"{os.getpid()}\n")
        tmp.replace(self.paths.pid_file)

    def _cleanup_files(self) -> None:
        if self.paths.read_pid() == os.getpid():
            self.paths.pid_file.unlink(missing_ok=True)
        self.paths.socket.unlink(missing_ok=True)
        if not any(r.pid for r in self.runners.values()):
            self.paths.children_file.unlink(missing_ok=True)

    async def run(self) -> int:
        """Start everything, serve the control socket, and stop everything on request."""
        self._claim_run_dir()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_shutdown, sig.name)
        loop.add_signal_handler(signal.SIGHUP, lambda: log.info("SIGHUP ignored"))
        server = await asyncio.start_unix_server(self._handle_client, path=str(self.paths.socket),
                                                 limit=MAX_LINE)
        os.chmod(self.paths.socket, 0o600)
        self._write_pid()
        self._start_metrics()
        log.info("supervisor up %s", kv(pid=os.getpid(), mode=self.plan.mode, config=self.plan.path,
                                         socket=self.paths.socket,
                                         services=",".join(s.name for s in self.plan.enabled())))
        try:
            for runner in self.runners.values():
                runner.start()
            await self._shutdown.wait()
        finally:
            self._stopping = True
            t0 = time.monotonic()
            async with self._ops:  # let a restart in progress finish first, then nothing starts again
                await self.stop_services(list(self.runners), "supervisor stopping")
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2.0)
            for r in self.runners.values():
                r.close()
            self._cleanup_files()
            if self._metrics is not None:
                self._metrics.close()
            log.info("supervisor stopped %s", kv(took_s=round(time.monotonic() - t0, 2)))
        return EXIT_OK

    def _start_metrics(self) -> None:
        if not self.metrics_port:
            return
        try:
            from orchestrator.supervisor_metrics import SupervisorMetrics

            self._metrics = SupervisorMetrics(self.runners, lambda: not self._stopping)
            self._metrics.serve(self.metrics_port)
        except OSError as exc:  # a busy port must not stop the stack
            log.error("metrics endpoint not started %s", kv(port=self.metrics_port, error=exc))
            self._metrics = None


def format_plan(plan: StackPlan) -> str:
    """Human summary of a resolved config (``--check``)."""
    lines = [f"{plan.path}: OK mode={plan.mode} var={plan.var_dir}"]
    for s in plan.services.values():
        flag = "on " if s.enabled else "off"
        probe = s.spec.readiness.describe() if s.spec.readiness else ("oneshot" if s.spec.oneshot else "-")
        deps = ",".join(s.spec.depends_on) or "-"
        lines.append(f"  [{flag}] {s.name:<24} group={s.group:<12} deps={deps:<20} ready={probe}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(prog="python -m orchestrator.process_supervisor",
                                description="Run the tradestack services in the foreground, supervised.")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                   help="supervisor YAML (default: %(default)s)")
    p.add_argument("--mode", choices=("paper", "dry", "live"), default=None,
                   help="trading mode (default: $TRADING_MODE or paper)")
    p.add_argument("--var-dir", type=Path, default=None,
                   help="runtime dir for logs, socket, pid, data (default: $TRADESTACK_VAR_DIR or ./var)")
    p.add_argument("--metrics-port", type=int, default=None,
                   help="serve supervisor metrics here (default: $SUPERVISOR_METRICS_PORT, 0 = off)")
    p.add_argument("--check", action="store_true", help="validate the config, print the plan, exit")
    return p


def _env_metrics_port() -> int:
    raw = child_environment().get("SUPERVISOR_METRICS_PORT", "").strip() or "0"
    if not raw.isdigit() or int(raw) > 65535:
        raise ConfigError(f"environment: SUPERVISOR_METRICS_PORT: must be a port number (got {raw!r})")
    return int(raw)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    setup_logging("supervisor")
    try:
        plan = load_supervisor_config(args.config, mode=args.mode, var_dir=args.var_dir)
        if args.check:
            print(format_plan(plan))
            return EXIT_OK
        port = args.metrics_port if args.metrics_port is not None else _env_metrics_port()
        return asyncio.run(Supervisor(plan, metrics_port=port).run())
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG
    except Exception:
        log.exception("supervisor crashed")
        return EXIT_UNEXPECTED


if __name__ == "__main__":
    sys.exit(main())
