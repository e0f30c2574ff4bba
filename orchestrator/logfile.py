"""Size-rotated per-service log files: ``var/log/<name>.log`` plus ``.1`` .. ``.N``.

A child's stdout and stderr go through a pipe to the supervisor, which copies
them here (a reader thread per child), so rotation never races the child.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import IO


class RotatingLogFile:
    """Append-only file that rotates when it grows past ``max_bytes``, keeping ``backups`` old files."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[bytes] = path.open("ab")
        self._size = self._fh.tell()

    def write(self, data: bytes) -> None:
        """Append ``data`` (rotating first if the file is full); thread-safe."""
        with self._lock:
            if self._size and self._size + len(data) > self.max_bytes:
                self._rotate()
            self._fh.write(data)
            self._fh.flush()
            self._size += len(data)

    def note(self, text: str) -> None:
        """Append a supervisor line (``--- supervisor: ...``) with a UTC timestamp."""
        ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.write(f"{ts} --- supervisor: {text}\n".encode())

    def _rotate(self) -> None:
        self._fh.close()
        if self.backups > 0:
            for i in range(self.backups - 1, 0, -1):
                src = self.path.with_name(f"{self.path.name}.{i}")
                if src.exists():
                    src.replace(self.path.with_name(f"{self.path.name}.{i + 1}"))
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
            self._fh = self.path.open("ab")
        else:
            self._fh = self.path.open("wb")
        self._size = 0

    def close(self) -> None:
        """Close the file (writes after this raise)."""
        with self._lock:
            self._fh.close()


def pump(stream: IO[bytes], sink: RotatingLogFile) -> None:
    """Copy ``stream`` into ``sink`` line by line until EOF (run in a daemon thread)."""
    try:
        for line in iter(lambda: stream.readline(65536), b""):
            sink.write(line)
    except (OSError, ValueError):
        pass  # pipe or file closed under us during shutdown
    finally:
        stream.close()


def start_pump(stream: IO[bytes], sink: RotatingLogFile, name: str) -> threading.Thread:
    """Start :func:`pump` in a daemon thread named after the service."""
    t = threading.Thread(target=pump, args=(stream, sink), name=f"log-{name}", daemon=True)
    t.start()
    return t
