"""Process-group helpers: signal a child's whole group, find and kill leftovers.

Every supervised child is started with ``start_new_session=True``, so its pid
is also its process group id and everything it forks stays in that group
unless it calls ``setsid`` itself; for those, descendants are also tracked by
pid (psutil) and killed if they outlive their leader.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil


def signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to process group ``pgid``; False if the group no longer exists."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return False


def signal_pid(pid: int, sig: int) -> bool:
    """Send ``sig`` to one process; False if it no longer exists."""
    try:
        os.kill(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def descendants(pid: int) -> list[psutil.Process]:
    """All live descendants of ``pid`` (empty if it is gone)."""
    try:
        children: list[psutil.Process] = psutil.Process(pid).children(recursive=True)
        return children
    except psutil.Error:
        return []


def kill_leftovers(procs: list[psutil.Process]) -> int:
    """SIGKILL the still-running processes of a snapshot (pid reuse safe); returns how many."""
    killed = 0
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                p.kill()
                killed += 1
        except psutil.Error:
            continue
    return killed


def stop_popen(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 10.0,
               group: bool = True) -> int:
    """Stop a child started with ``start_new_session``: ``sig``, wait, then SIGKILL its group.

    Returns the child's return code. Used by test fixtures and the launchers'
    helpers; the supervisor has an asyncio version of the same sequence.
    """
    if proc.poll() is None:
        tree = descendants(proc.pid)
        (signal_group if group else signal_pid)(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
        signal_group(proc.pid, signal.SIGKILL)
        kill_leftovers(tree)
    return proc.returncode


def tcp_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_tcp(proc: subprocess.Popen[bytes], host: str, port: int, timeout: float) -> None:
    """Block until ``host:port`` accepts connections; RuntimeError if ``proc`` dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {host}:{port} was ready")
        if tcp_open(host, port):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{host}:{port} not ready after {timeout:g}s")


def record_children(path: Path, children: dict[str, int]) -> None:
    """Write ``{name: {pid, pgid, created}}`` of live children, atomically (for :func:`kill_orphans`)."""
    entries: dict[str, dict[str, float]] = {}
    for name, pid in children.items():
        try:
            entries[name] = {"pid": pid, "created": psutil.Process(pid).create_time()}
        except psutil.Error:
            continue
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(entries))
    tmp.replace(path)


def kill_orphans(path: Path) -> list[str]:
    """SIGKILL the process groups recorded by a previous supervisor that died without stopping them.

    A recorded pid is only killed if its start time still matches (pid reuse safe).
    Returns the names of the services whose leftovers were killed; removes the file.
    """
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    killed: list[str] = []
    for name, entry in entries.items() if isinstance(entries, dict) else ():
        try:
            proc = psutil.Process(int(entry["pid"]))
            if abs(proc.create_time() - float(entry["created"])) > 0.01:
                continue
            tree = proc.children(recursive=True)
            signal_group(proc.pid, signal.SIGKILL)
            proc.kill()
            kill_leftovers(tree)
            killed.append(name)
        except (psutil.Error, KeyError, TypeError, ValueError):
            continue
    path.unlink(missing_ok=True)
    return killed
