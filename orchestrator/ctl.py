"""Talk to the running supervisor over its control socket.

Usage::

    python -m orchestrator.ctl status [--json]
    python -m orchestrator.ctl restart NAME|GROUP
    python -m orchestrator.ctl stop [NAME|GROUP] [--timeout S]   # no target: the whole supervisor
    python -m orchestrator.ctl wait-ready [--timeout S]          # used by `make up`
    python -m orchestrator.ctl ping                              # exit 0 if a supervisor answers
    python -m orchestrator.ctl reset-broker [--drain-timeout S]  # start the day with an empty broker

``status`` ends with the embedded broker's memory and, past
``BROKER_RSS_WARN_FRACTION`` of the machine's, a WARNING line saying what to do.
``reset-broker`` asks the supervisor to restart the embedded broker empty (see
:meth:`orchestrator.process_supervisor.Supervisor.reset_broker`): it refuses,
changing nothing, if a consumer group has not processed everything the broker
holds within ``--drain-timeout`` (default 180 s) once the sources are stopped;
on success it waits until every service is ready again.

Exit codes: 0 success; 1 supervisor unreachable, a service failed, or a
timeout; 2 usage. ``stop`` with no supervisor running is a success (idempotent
``make down``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from core.errors import EXIT_OK, EXIT_UNEXPECTED
from orchestrator.control import ControlError, RunPaths, default_var_dir, request

COLUMNS = ("NAME", "GROUP", "STATE", "PID", "RESTARTS", "UPTIME", "URL", "DETAIL")
_BLOCKING = {"failed", "exited", "stopped"}  # states that will not become ready by themselves
START_GRACE_S = 15.0  # wait-ready: how long a supervisor may take to open its socket


def format_duration(seconds: float | None) -> str:
    """Compact duration: ``42s``, ``3m04s``, ``2h05m``, ``1d03h``; ``-`` for None."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def format_status_table(reply: dict[str, Any]) -> str:
    """The ``status`` table: one header line, one line per service, a summary line."""
    rows = [COLUMNS]
    for s in reply.get("services", []):
        rows.append((s["name"], s["group"], s["state"], str(s["pid"] or "-"), str(s["restarts"]),
                     format_duration(s["uptime"]), s["url"] or "-", s["detail"] or ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1] for r in rows]
    services = reply.get("services", [])
    enabled = [s for s in services if s["enabled"]]
    ready = sum(1 for s in enabled if s["ready"])
    lines.append(f"mode={reply.get('mode')} supervisor_pid={reply.get('pid')} ready={ready}/{len(enabled)}"
                 + (" (stopping)" if reply.get("stopping") else ""))
    lines.extend(format_broker_lines(reply.get("broker")))
    return "\n".join(line.rstrip() for line in lines)


def format_broker_lines(broker: dict[str, Any] | None) -> list[str]:
    """The broker memory line of ``status``, and the warning line past the threshold."""
    if not broker:
        return []
    gib = 2**30
    lines = [f"broker: {broker['service']} pid {broker['pid']} rss={broker['rss_bytes'] / gib:.2f}GiB "
             f"({broker['fraction']:.1%} of {broker['total_bytes'] / gib:.1f}GiB, "
             f"warn at {broker['warn_fraction']:.0%})"]
    if broker.get("warning"):
        lines.append(str(broker["warning"]))
    return lines


def readiness_verdict(reply: dict[str, Any]) -> tuple[str, list[str]]:
    """``("ready", [])``, ``("failed", names)`` or ``("waiting", names)`` for ``wait-ready``."""
    enabled = [s for s in reply.get("services", []) if s["enabled"]]
    if reply.get("stopping"):
        return "failed", ["<supervisor stopping>"]
    bad = [s["name"] for s in enabled if not s["ready"] and s["state"] in _BLOCKING]
    if bad:
        return "failed", bad
    waiting = [s["name"] for s in enabled if not s["ready"]]
    return ("waiting", waiting) if waiting else ("ready", [])


def _cmd_status(paths: RunPaths, args: argparse.Namespace) -> int:
    reply = request(paths.socket, {"cmd": "status"}, timeout=args.timeout or 10.0)
    print(json.dumps(reply, indent=2) if args.json else format_status_table(reply))
    return EXIT_OK


def _cmd_ping(paths: RunPaths, args: argparse.Namespace) -> int:
    reply = request(paths.socket, {"cmd": "status"}, timeout=args.timeout or 5.0)
    print(f"supervisor running (pid {reply.get('pid')}, mode {reply.get('mode')})")
    return EXIT_OK


def _cmd_restart(paths: RunPaths, args: argparse.Namespace) -> int:
    reply = request(paths.socket, {"cmd": "restart", "target": args.target}, timeout=args.timeout or 300.0)
    print("restarted: " + ", ".join(reply["restarted"]))
    return EXIT_OK


def _cmd_reset_broker(paths: RunPaths, args: argparse.Namespace) -> int:
    drain = args.drain_timeout
    reply = request(paths.socket, {"cmd": "reset-broker", "drain_timeout": drain}, timeout=drain + 180.0)
    before = reply.get("rss_before")
    held = f" (it held {before / 2**20:,.0f} MiB)" if isinstance(before, int) else ""
    print(f"broker reset{held}; restarted: " + ", ".join(reply["restarted"]))
    return _cmd_wait_ready(paths, args)


def _wait_gone(pid: int, timeout: float) -> bool:
    """True once ``pid`` has exited (a zombie waiting for its parent to reap it counts as exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        except psutil.Error:
            pass
        time.sleep(0.1)
    return False


def _cmd_stop(paths: RunPaths, args: argparse.Namespace) -> int:
    timeout = args.timeout or 300.0
    if args.target:
        reply = request(paths.socket, {"cmd": "stop", "target": args.target}, timeout=timeout)
        print("stopped: " + ", ".join(reply["stopped"]))
        return EXIT_OK
    try:
        reply = request(paths.socket, {"cmd": "stop"}, timeout=10.0)
    except ControlError as exc:
        if paths.read_pid() is None:
            print(f"supervisor not running ({exc})")
            return EXIT_OK
        raise
    pid = int(reply["pid"])
    if not _wait_gone(pid, timeout):
        print(f"supervisor pid {pid} still running after {timeout:g}s", file=sys.stderr)
        return EXIT_UNEXPECTED
    print(f"supervisor stopped (pid {pid})")
    return EXIT_OK


def _print_log_tails(paths: RunPaths, names: list[str], lines: int = 15) -> None:
    """The last lines of each named service's log (what an operator reads first)."""
    for name in names:
        log = paths.var_dir / "log" / f"{name}.log"
        if not log.is_file():
            continue
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
        print(f"--- last {len(tail)} lines of {log} ---", file=sys.stderr)
        for line in tail:
            print(line, file=sys.stderr)


def _cmd_wait_ready(paths: RunPaths, args: argparse.Namespace) -> int:
    timeout = args.timeout or 120.0
    started = time.monotonic()
    deadline = started + timeout
    last: dict[str, Any] | None = None
    pending: list[str] = ["<supervisor>"]
    while time.monotonic() < deadline:
        try:
            last = request(paths.socket, {"cmd": "status"}, timeout=5.0)
        except ControlError as exc:
            # Still starting, or never started (bad config): give it a grace period, not the full timeout.
            if paths.read_pid() is None and time.monotonic() - started > START_GRACE_S:
                print(f"supervisor is not running: {exc}", file=sys.stderr)
                out = paths.var_dir / "log" / "supervisor.out"
                if out.is_file():
                    print(f"--- last lines of {out} ---", file=sys.stderr)
                    for line in out.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]:
                        print(line, file=sys.stderr)
                return EXIT_UNEXPECTED
            time.sleep(0.25)
            continue
        verdict, pending = readiness_verdict(last)
        if verdict == "ready":
            print(f"all services ready ({len([s for s in last['services'] if s['enabled']])})")
            return EXIT_OK
        if verdict == "failed":
            print(f"not ready: {', '.join(pending)} failed", file=sys.stderr)
            print(format_status_table(last), file=sys.stderr)
            _print_log_tails(paths, pending)
            return EXIT_UNEXPECTED
        time.sleep(0.25)
    print(f"not ready after {timeout:g}s: {', '.join(pending)}", file=sys.stderr)
    if last is not None:
        print(format_status_table(last), file=sys.stderr)
        _print_log_tails(paths, pending)
    return EXIT_UNEXPECTED


def _positive(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds (got {raw!r})")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(prog="python -m orchestrator.ctl",
                                description="Control the running process supervisor.")
    p.add_argument("--var-dir", type=Path, default=None,
                   help="supervisor runtime dir (default: $TRADESTACK_VAR_DIR or ./var)")
    p.add_argument("--socket", type=Path, default=None,
                   help="control socket (default: VAR/run/supervisor.sock)")
    sub = p.add_subparsers(dest="command", required=True)
    st = sub.add_parser("status", help="table of services (or --json)")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    rs = sub.add_parser("restart", help="restart a service or every service of a group")
    rs.add_argument("target", metavar="NAME|GROUP")
    sp = sub.add_parser("stop", help="stop the supervisor and all services, or one service/group")
    sp.add_argument("target", nargs="?", metavar="NAME|GROUP")
    wr = sub.add_parser("wait-ready", help="block until every enabled service is ready (1 if one failed)")
    pg = sub.add_parser("ping", help="exit 0 if a supervisor answers on the socket")
    rb = sub.add_parser("reset-broker", help="restart the embedded broker empty (refuses if data would be lost)")
    rb.add_argument("--drain-timeout", type=_positive, default=180.0,
                    help="seconds the consumers get to catch up once the sources stop (default 180)")
    for sp_ in (st, rs, sp, wr, pg, rb):
        sp_.add_argument("--timeout", type=float, default=None, help="seconds to wait")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = build_parser().parse_args(argv)
    var_dir = args.var_dir or default_var_dir(os.environ)
    paths = RunPaths(var_dir, args.socket)
    handlers = {"status": _cmd_status, "restart": _cmd_restart, "stop": _cmd_stop,
                "wait-ready": _cmd_wait_ready, "ping": _cmd_ping, "reset-broker": _cmd_reset_broker}
    try:
        return handlers[args.command](paths, args)
    except ControlError as exc:
        print(f"ctl {args.command}: {exc}", file=sys.stderr)
        return EXIT_UNEXPECTED


if __name__ == "__main__":
    sys.exit(main())
