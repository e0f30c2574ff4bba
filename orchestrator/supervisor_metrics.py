"""The supervisor's own Prometheus metrics (optional: ``SUPERVISOR_METRICS_PORT``).

``tradestack_supervisor_service_up{service}``: 1 while ready (or a oneshot done);
``tradestack_supervisor_service_failed{service}``: 1 once marked failed;
``tradestack_supervisor_service_restarts{service}``: restarts so far;
``tradestack_supervisor_broker_rss_bytes``: the embedded broker's resident memory
(process tree), ``tradestack_supervisor_broker_memory_fraction``: that as a share
of the machine's memory, ``tradestack_supervisor_broker_rss_warn_fraction``: the
warning threshold (``BROKER_RSS_WARN_FRACTION``). 0 while no embedded broker runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from core.metrics import Metrics
from orchestrator.kafka_launcher import BrokerMemory
from orchestrator.lifecycle import ServiceState
from orchestrator.runner import ServiceRunner


class SupervisorMetrics:
    """Gauges per service, updated on every state change; served with a /health endpoint."""

    def __init__(self, runners: Mapping[str, ServiceRunner], healthy: Callable[[], bool]) -> None:
        self._runners = runners
        self._healthy = healthy
        self.metrics = Metrics("supervisor")
        self.up = self.metrics.gauge("service_up", "1 while the service is ready", ["service"])
        self.failed = self.metrics.gauge("service_failed", "1 once the supervisor gave up", ["service"])
        self.restarts = self.metrics.gauge("service_restarts", "restarts since the supervisor started",
                                           ["service"])
        self.broker_rss = self.metrics.gauge("broker_rss_bytes",
                                             "resident memory of the embedded broker (process tree)")
        self.broker_fraction = self.metrics.gauge("broker_memory_fraction",
                                                  "embedded broker RSS / machine physical memory")
        self.broker_warn = self.metrics.gauge("broker_rss_warn_fraction",
                                              "share of memory past which the supervisor warns")
        for r in runners.values():
            self.update(r)

    def update_broker(self, mem: BrokerMemory | None) -> None:
        """Refresh the broker gauges (0 while the broker is down)."""
        self.broker_rss.set(mem.rss_bytes if mem else 0)
        self.broker_fraction.set(mem.fraction if mem else 0)
        if mem:
            self.broker_warn.set(mem.warn_fraction)

    def update(self, runner: ServiceRunner) -> None:
        """Refresh one service's gauges."""
        enabled_ok = runner.satisfied and runner.state is not ServiceState.DISABLED
        self.up.labels(runner.name).set(1 if enabled_ok else 0)
        self.failed.labels(runner.name).set(1 if runner.state is ServiceState.FAILED else 0)
        self.restarts.labels(runner.name).set(runner.restarts)

    def _health(self) -> tuple[bool, dict[str, Any]]:
        states = {r.name: str(r.state) for r in self._runners.values()}
        return self._healthy(), {"state": "running" if self._healthy() else "stopping", "services": states}

    def serve(self, port: int) -> int:
        """Start ``/metrics`` and ``/health`` on loopback."""
        return self.metrics.serve(port, self._health)

    def close(self) -> None:
        """Stop the HTTP endpoint."""
        self.metrics.close()
