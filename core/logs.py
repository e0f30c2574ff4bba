"""One-line structured logging: ``ts level service event key=value ...``.

Every service calls :func:`setup_logging` once. Secrets never reach the log:
values of keys that look like credentials are masked.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

_SECRET_HINTS = ("token", "secret", "password", "api_key", "dsn")


def _fmt_value(key: str, value: Any) -> str:
    if any(h in key.lower() for h in _SECRET_HINTS) and key.lower() not in ("instrument_token", "tokens"):
        return "***"
    text = str(value)
    if not text or any(c in text for c in " =\"\n"):
        text = '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


def kv(**fields: Any) -> str:
    """Render ``key=value`` pairs for a log line, masking secrets."""
    return " ".join(f"{k}={_fmt_value(k, v)}" for k, v in fields.items())


class _OneLineFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        msg = record.getMessage().replace("\n", "\\n")
        line = f"{ts}.{int(record.msecs):03d}Z {record.levelname:<5} {self.service} {msg}"
        if record.exc_info and record.levelno >= logging.ERROR:
            exc = record.exc_info[1]
            line += f" exc={type(exc).__name__}:{_fmt_value('exc', exc)}"
        return line


def setup_logging(service: str, level: str | None = None) -> logging.Logger:
    """Configure the root logger for one service; returns the service logger."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLineFormatter(service))
    root.addHandler(handler)
    root.setLevel((level or os.environ.get("LOG_LEVEL", "INFO")).upper())
    # Chatty third-party loggers stay at WARNING.
    for noisy in ("kafka", "urllib3", "botocore", "boto3", "s3transfer", "psycopg.pool"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return logging.getLogger(service)
