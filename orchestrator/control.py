"""The supervisor's control channel: paths and the one-JSON-line request/response protocol.

The supervisor listens on ``<var>/run/supervisor.sock`` (mode 0600) and writes
its pid to ``<var>/run/supervisor.pid``. A client sends one JSON object on one
line and reads one JSON object back::

    {"cmd": "status"}                 -> {"ok": true, "mode": "paper", "pid": 123, "services": [...]}
    {"cmd": "restart", "target": T}   -> {"ok": true, "restarted": ["risk_manager_v2", ...]}
    {"cmd": "stop"}                   -> {"ok": true, "pid": 123}   (the supervisor then shuts down)
    {"cmd": "stop", "target": T}      -> {"ok": true, "stopped": [...]}  (those services only)
    {"cmd": "reset-broker", "drain_timeout": S}
                                      -> {"ok": true, "reset": "kafka", "restarted": [...], "rss_before": N}

``status`` also carries ``"broker"``: the embedded broker's memory
(``pid``, ``rss_bytes``, ``total_bytes``, ``fraction``, ``warn_fraction``,
``warning``), or null with an external broker.

Errors come back as ``{"ok": false, "error": "one line"}``.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_LINE = 1 << 20
# Same as core.settings.PROJECT_ROOT; kept import-free so `ctl` starts fast (no pydantic).
_PROJECT_ROOT = Path(__file__).resolve().parents[1]


def default_var_dir(env: Mapping[str, str]) -> Path:
    """``TRADESTACK_VAR_DIR`` (relative to the project root) or ``<root>/var``."""
    raw = env.get("TRADESTACK_VAR_DIR")
    if not raw:
        return _PROJECT_ROOT / "var"
    p = Path(raw)
    return p if p.is_absolute() else _PROJECT_ROOT / p


@dataclass(frozen=True)
class RunPaths:
    """Where the supervisor keeps its socket, pid file and the services' logs."""

    var_dir: Path
    socket_override: Path | None = None

    @property
    def run_dir(self) -> Path:
        """``<var>/run``."""
        return self.var_dir / "run"

    @property
    def socket(self) -> Path:
        """The control socket (``--socket`` overrides the default)."""
        return self.socket_override or self.run_dir / "supervisor.sock"

    @property
    def pid_file(self) -> Path:
        """The supervisor's pid file."""
        return self.run_dir / "supervisor.pid"

    @property
    def children_file(self) -> Path:
        """Live children (pid, start time), so a successor can kill them if this supervisor is SIGKILLed."""
        return self.run_dir / "supervisor.children.json"

    @property
    def log_dir(self) -> Path:
        """``<var>/log``: one ``<service>.log`` each."""
        return self.var_dir / "log"

    def read_pid(self) -> int | None:
        """The pid in the pid file if that process is alive, else None."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        return pid


class ControlError(Exception):
    """The supervisor is unreachable or answered with an error."""


def request(sock_path: Path, payload: dict[str, Any], timeout: float = 120.0) -> dict[str, Any]:
    """Send one request and return the decoded reply; ControlError on any failure."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        try:
            s.connect(str(sock_path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise ControlError(f"supervisor not running (nothing listens on {sock_path})") from None
        s.sendall(json.dumps(payload).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
            if len(buf) > MAX_LINE:
                raise ControlError("reply too long")
    except TimeoutError:
        raise ControlError(f"no reply from supervisor within {timeout:g}s") from None
    except OSError as exc:
        raise ControlError(f"control socket {sock_path}: {exc}") from None
    finally:
        s.close()
    try:
        reply: dict[str, Any] = json.loads(buf)
    except json.JSONDecodeError:
        raise ControlError("supervisor closed the connection without a valid reply") from None
    if not reply.get("ok"):
        raise ControlError(str(reply.get("error", "unknown error")))
    return reply


def is_listening(sock_path: Path) -> bool:
    """True if something accepts connections on the control socket."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(str(sock_path))
        return True
    except OSError:
        return False
    finally:
        s.close()
