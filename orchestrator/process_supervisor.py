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

The embedded broker keeps every message in memory: every
``BROKER_SAMPLE_S`` the supervisor samples its RSS (``status`` reply, metrics)
and logs one warning line when it passes ``BROKER_RSS_WARN_FRACTION`` of the
machine's memory (default 0.25; again every ``BROKER_WARN_REPEAT_S`` while
above). ``reset-broker`` starts the broker empty: it stops the tick sources
(group ``ingestion``), waits until every consumer group has processed all the
broker holds (else it refuses, restarts the sources and changes nothing),
then stops the broker's dependents, restarts the broker and starts them again.
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
from orchestrator.kafka_launcher import (
    BROKER_SERVICE,
    DEFAULT_WARN_FRACTION,
    WARN_FRACTION_ENV,
    BrokerMemory,
    broker_memory,
    parse_warn_fraction,
    wait_drained,
)
from orchestrator.lifecycle import ServiceState
from orchestrator.procgroup import kill_orphans, record_children
from orchestrator.runner import ServiceRunner

log = logging.getLogger("supervisor")
DEFAULT_CONFIG = PROJECT_ROOT / "configs" / "process_supervisor.yaml"
BROKER_SAMPLE_S = 10.0
BROKER_WARN_REPEAT_S = 1800.0
SOURCE_GROUP = "ingestion"  # what reset-broker stops first: the services that bring data in
DEFAULT_DRAIN_TIMEOUT_S = 180.0


class Supervisor:
    """Owns the runners, the control socket and the shutdown sequence."""

    def __init__(self, plan: StackPlan, metrics_port: int = 0,
                 warn_fraction: float = DEFAULT_WARN_FRACTION) -> None:
        self.plan = plan
        self.warn_fraction = warn_fraction
        self._warned_at: float | None = None  # monotonic time of the last broker memory warning
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
        mem = self.broker_memory()
        return {"ok": True, "mode": self.plan.mode, "pid": os.getpid(), "config": str(self.plan.path),
                "stopping": self._stopping, "services": [r.snapshot() for r in self.runners.values()],
                "broker": mem.as_dict() if mem else None}

    # ----- the embedded broker's memory --------------------------------------------------------

    def broker_memory(self) -> BrokerMemory | None:
        """The embedded broker's memory now; None if there is none (external Kafka) or it is down."""
        runner = self.runners.get(BROKER_SERVICE)
        pid = runner.pid if runner is not None else None
        return broker_memory(pid, self.warn_fraction) if pid is not None else None

    def check_broker_memory(self, now: float) -> BrokerMemory | None:
        """Sample, update the gauges, and log the warning on crossing (and every repeat period above)."""
        mem = self.broker_memory()
        if self._metrics is not None:
            self._metrics.update_broker(mem)
        if mem is None or not mem.over:
            if self._warned_at is not None and mem is not None:
                log.info("broker memory back under the threshold %s", kv(detail=mem.describe()))
            self._warned_at = None if mem is not None else self._warned_at
            return mem
        if self._warned_at is None or now - self._warned_at >= BROKER_WARN_REPEAT_S:
            self._warned_at = now
            log.warning("%s %s", mem.warning(), kv(pid=mem.pid, rss_bytes=mem.rss_bytes,
                                                    fraction=round(mem.fraction, 4),
                                                    warn_fraction=mem.warn_fraction))
        return mem

    async def _watch_broker(self) -> None:
        if BROKER_SERVICE not in self.runners or not self.plan.services[BROKER_SERVICE].enabled:
            return
        while True:
            try:
                self.check_broker_memory(time.monotonic())
            except Exception:  # a sampling bug must not stop the watch
                log.exception("broker memory sample failed")
            await asyncio.sleep(BROKER_SAMPLE_S)

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

    def _dependents(self, name: str) -> list[str]:
        """Enabled services that depend on ``name``, directly or not, in start order."""
        found: set[str] = set()
        for n, svc in self.plan.services.items():  # start order: a dependency comes before its dependents
            if any(d == name or d in found for d in svc.spec.depends_on):
                found.add(n)
        return [n for n in self.plan.services if n in found and self.plan.services[n].enabled]

    async def reset_broker(self, drain_timeout: float) -> dict[str, Any]:
        """Restart the embedded broker empty, refusing if any consumer group has unprocessed records.

        Order: stop the sources (group ``ingestion``); wait until every consumer
        group has committed past all the broker holds; stop the broker's other
        dependents (reverse dependency order); restart the broker; start the
        dependents again (each once its dependencies are ready). On a refusal the
        sources are started again and nothing else changes.
        """
        kafka = self.plan.services.get(BROKER_SERVICE)
        if kafka is None or not kafka.enabled:
            raise ValueError("no embedded broker in this stack (external KAFKA_BOOTSTRAP_SERVERS?): "
                             "nothing to reset")
        async with self._ops:
            broker = self.runners[BROKER_SERVICE]
            if broker.state is not ServiceState.READY:
                raise ValueError(f"refused: the broker is {broker.state}, not ready")
            dependents = self._dependents(BROKER_SERVICE)
            sources = [n for n in dependents if self.plan.services[n].group == SOURCE_GROUP]
            before = self.broker_memory()
            bootstrap = kafka.env.get("KAFKA_BOOTSTRAP_SERVERS", "")
            log.info("broker reset: stopping the sources, then waiting for the consumers to catch up %s",
                     kv(sources=",".join(sources) or "-", drain_timeout_s=drain_timeout))
            await self.stop_services(sources, "broker reset: draining")
            try:
                pending = await asyncio.to_thread(wait_drained, bootstrap, drain_timeout)
            except Exception as exc:  # the broker did not answer: same as not drained
                pending = [f"broker did not answer: {type(exc).__name__}: {exc}"]
            if pending:
                for n in sources:
                    self.runners[n].start(manual=True)
                msg = (f"refused: {pending[0]}" + (f" (+{len(pending) - 1} more)" if len(pending) > 1 else "")
                       + f" after {drain_timeout:g}s; broker not reset, sources restarted (open bars hold "
                       f"their input until their bucket ends: reset before the session or allow a longer "
                       f"--drain-timeout)")
                log.warning("broker reset %s", kv(result=msg))
                raise ValueError(msg)
            others = [n for n in dependents if n not in sources]
            await self.stop_services(others, "broker reset")
            await broker.stop("broker reset")
            for n in (BROKER_SERVICE, *dependents):
                self.runners[n].start(manual=True)
            log.info("broker reset: broker restarted empty, dependents starting %s",
                     kv(rss_before=before.rss_bytes if before else None, dependents=",".join(dependents)))
        return {"ok": True, "reset": BROKER_SERVICE, "restarted": [BROKER_SERVICE, *dependents],
                "rss_before": before.rss_bytes if before else None}

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
        if cmd == "reset-broker":
            timeout = req.get("drain_timeout", DEFAULT_DRAIN_TIMEOUT_S)
            if not isinstance(timeout, int | float) or timeout <= 0:
                raise ValueError("drain_timeout must be a positive number of seconds")
            return await self.reset_broker(float(timeout))
        if cmd == "stop" and isinstance(target, str) and target:
            return {"ok": True, "stopped": await self.stop_target(target)}
        if cmd == "stop":
            self.request_shutdown()
            return {"ok": True, "pid": os.getpid()}
        return {"ok": False, "error": f"unknown command {cmd!r} (status, restart TARGET, stop [TARGET], reset-broker)"}

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
        watch = loop.create_task(self._watch_broker(), name="broker-memory")
        log.info("supervisor up %s", kv(pid=os.getpid(), mode=self.plan.mode, config=self.plan.path,
                                         socket=self.paths.socket,
                                         services=",".join(s.name for s in self.plan.enabled())))
        try:
            for runner in self.runners.values():
                runner.start()
            await self._shutdown.wait()
        finally:
            self._stopping = True
            watch.cancel()
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


def _env_warn_fraction() -> float:
    try:
        return parse_warn_fraction(child_environment().get(WARN_FRACTION_ENV))
    except ValueError as exc:
        raise ConfigError(f"environment: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    setup_logging("supervisor")
    try:
        plan = load_supervisor_config(args.config, mode=args.mode, var_dir=args.var_dir)
        warn = _env_warn_fraction()
        if args.check:
            print(format_plan(plan))
            return EXIT_OK
        port = args.metrics_port if args.metrics_port is not None else _env_metrics_port()
        return asyncio.run(Supervisor(plan, metrics_port=port, warn_fraction=warn).run())
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG
    except Exception:
        log.exception("supervisor crashed")
        return EXIT_UNEXPECTED


if __name__ == "__main__":
    sys.exit(main())
