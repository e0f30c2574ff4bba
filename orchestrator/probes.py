"""Readiness probes (asyncio): TCP connect, HTTP GET 2xx, or a command exiting 0.

Each probe makes one attempt and returns True/False; it never raises for a
service that is simply not up yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import subprocess
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from orchestrator.config import ReadinessSpec
from orchestrator.procgroup import signal_group


async def probe_tcp(target: str, timeout: float) -> bool:
    """True if ``host:port`` accepts a TCP connection within ``timeout``."""
    host, _, port = target.rpartition(":")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host.strip("[]"), int(port)), timeout)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def _http_get_ok(url: str, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - URL from our own config
            return 200 <= int(resp.status) < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


async def probe_http(url: str, timeout: float) -> bool:
    """True if GET ``url`` answers 2xx within ``timeout`` (runs urllib in a worker thread)."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, _http_get_ok, url, timeout)


async def probe_command(cmd: str | list[str], timeout: float, env: Mapping[str, str], cwd: Path) -> bool:
    """True if ``cmd`` exits 0 within ``timeout``; the probe's process group is killed otherwise."""
    argv = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
    try:
        proc = subprocess.Popen(argv, env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError:
        return False
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while proc.poll() is None:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return proc.returncode == 0
    finally:
        if proc.poll() is None:
            signal_group(proc.pid, 9)
            proc.wait()


async def probe_once(spec: ReadinessSpec, env: Mapping[str, str], cwd: Path) -> bool:
    """One attempt of the configured probe."""
    if spec.tcp:
        return await probe_tcp(spec.tcp, spec.attempt_timeout)
    if spec.http:
        return await probe_http(spec.http, spec.attempt_timeout)
    assert spec.command is not None
    return await probe_command(spec.command, spec.attempt_timeout, env, cwd)
