"""Prometheus metrics and a health endpoint on a loopback port, one per service.

``GET /metrics`` serves the service's registry; ``GET /health`` answers JSON
``{"service", "state", ...}`` with 200 while the service is running and 503
otherwise. Names follow ``tradestack_<service>_<thing>_total`` / ``_seconds``.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

log = logging.getLogger(__name__)

HealthFn = Callable[[], tuple[bool, dict[str, Any]]]
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _metric_part(name: str) -> str:
    return name.replace("-", "_").replace(".", "_")


class Metrics:
    """A service's metric registry; every metric is prefixed ``tradestack_<service>_``."""

    def __init__(self, service: str) -> None:
        self.service = _metric_part(service)
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self._server: ThreadingHTTPServer | None = None
        self.port: int | None = None

    def _name(self, name: str) -> str:
        return f"tradestack_{self.service}_{name}"

    def counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
        """A counter; ``name`` should end in ``_total`` (the client adds it if missing)."""
        return Counter(self._name(name.removesuffix("_total")), doc, list(labels), registry=self.registry)

    def gauge(self, name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
        """A gauge."""
        return Gauge(self._name(name), doc, list(labels), registry=self.registry)

    def histogram(self, name: str, doc: str, labels: Sequence[str] = (),
                  buckets: Sequence[float] = LATENCY_BUCKETS) -> Histogram:
        """A histogram (use ``_seconds`` names for latencies)."""
        return Histogram(self._name(name), doc, list(labels), buckets=list(buckets), registry=self.registry)

    def render(self) -> bytes:
        """The text exposition of every metric."""
        return generate_latest(self.registry)

    def serve(self, port: int, health: HealthFn, host: str = "127.0.0.1") -> int:
        """Start ``/metrics`` and ``/health`` on ``host:port`` (0 = any free port); returns the port."""
        metrics = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    body, ctype, code = metrics.render(), CONTENT_TYPE_LATEST, 200
                elif path in ("/health", "/healthz", "/ready"):
                    ok, info = health()
                    body = json.dumps({"service": metrics.service, **info}).encode()
                    ctype, code = "application/json", 200 if ok else 503
                else:
                    body, ctype, code = b"not found\n", "text/plain", 404
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence access log
                return

        server = ThreadingHTTPServer((host, port), Handler)
        server.daemon_threads = True
        self._server = server
        self.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
        return self.port

    def close(self) -> None:
        """Stop the HTTP server."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
