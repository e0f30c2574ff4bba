"""core.service: the lifecycle states run_service moves a service through, and the heartbeat line.

A small Service subclass runs under the real runtime (signals, metrics server, logging, backoff);
it records every assignment of ``state`` so the tests see each transition, not just the end.
"""

from __future__ import annotations

import json
import re
import signal
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from core.errors import EXIT_FATAL, EXIT_OK, EXIT_UNEXPECTED, FatalError, TransientError
from core.metrics import Metrics
from core.service import Lifecycle, Service, run_service
from core.settings import Settings, load_settings

S, R, SG, SD, F = (Lifecycle.STARTING, Lifecycle.RUNNING, Lifecycle.STOPPING, Lifecycle.STOPPED,
                   Lifecycle.FAULTED)


class Scripted(Service):
    """Runs ``steps`` (callables) one per step, then asks to stop; records its states."""

    name = "unit_lifecycle"
    heartbeat_interval = 0.0  # a heartbeat line after every step

    def __init__(self, settings: Settings, metrics: Metrics, steps: list[Callable[[Scripted], None]],
                 start_failures: int = 0, stop_error: Exception | None = None) -> None:
        self.transitions: list[Lifecycle] = []
        super().__init__(settings, metrics)
        self.steps = list(steps)
        self.start_failures = start_failures
        self.stop_error = stop_error
        self.seen: dict[str, Lifecycle] = {}
        self.health_in_step: tuple[bool, dict[str, Any]] | None = None
        self.done = 0

    def __setattr__(self, key: str, value: Any) -> None:
        if key == "state":
            self.transitions.append(value)
        super().__setattr__(key, value)

    def start(self) -> None:
        self.seen["start"] = self.state
        if self.start_failures:
            self.start_failures -= 1
            raise TransientError("broker not up yet")

    def step(self) -> None:
        self.seen["step"] = self.state
        self.health_in_step = self.health()
        if not self.steps:
            self.request_stop()
            return
        self.steps.pop(0)(self)
        self.done += 1

    def stop(self) -> None:
        self.seen["stop"] = self.state
        if self.stop_error is not None:
            raise self.stop_error

    def heartbeat_fields(self) -> dict[str, Any]:
        return {"consumed": self.done, "dlq": 0, "partitions": 3}


@pytest.fixture(autouse=True)
def _keep_signal_handlers() -> Iterator[None]:
    """run_service installs SIGTERM/SIGINT handlers; give pytest its own back."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


def _run(monkeypatch: pytest.MonkeyPatch, **kw: Any) -> tuple[int, Scripted]:
    monkeypatch.setenv("METRICS_PORT", "0")
    made: list[Scripted] = []

    def factory(settings: Settings, metrics: Metrics) -> Scripted:
        made.append(Scripted(settings, metrics, **kw))
        return made[0]

    code = run_service(factory, Scripted.name, settings=load_settings(metrics_port=0))
    return code, made[0]


def _noop(_svc: Scripted) -> None:
    return None


def test_run_when_steps_succeed_then_starting_running_stopping_stopped_and_exit_0(monkeypatch):
    code, svc = _run(monkeypatch, steps=[_noop, _noop])
    assert code == EXIT_OK
    assert svc.transitions == [S, R, SG, SD]
    assert svc.seen == {"start": S, "step": R, "stop": SG}
    assert svc.health_in_step == (True, {"state": "running"})
    assert svc.health() == (False, {"state": "stopped"})


def test_run_when_start_fails_transiently_then_retried_and_still_starting_until_it_succeeds(monkeypatch, capsys):
    code, svc = _run(monkeypatch, steps=[_noop], start_failures=1)
    assert code == EXIT_OK
    assert svc.transitions == [S, R, SG, SD]
    assert "start failed, retrying in 0.5s: broker not up yet" in capsys.readouterr().err


def test_run_when_step_raises_unexpectedly_then_faulted_stop_still_runs_and_exit_1(monkeypatch):
    def boom(_svc: Scripted) -> None:
        raise RuntimeError("corrupt state")

    code, svc = _run(monkeypatch, steps=[_noop, boom])
    assert code == EXIT_UNEXPECTED
    assert svc.transitions == [S, R, F, SG, F]
    assert svc.seen["stop"] == SG
    assert svc.health() == (False, {"state": "faulted"})


def test_run_when_step_raises_fatal_then_stopping_then_faulted_and_exit_3(monkeypatch):
    def fatal(_svc: Scripted) -> None:
        raise FatalError("unrecoverable")

    code, svc = _run(monkeypatch, steps=[fatal])
    assert code == EXIT_FATAL
    assert svc.transitions == [S, R, SG, F]


def test_run_when_stop_raises_then_faulted_and_exit_1(monkeypatch):
    code, svc = _run(monkeypatch, steps=[_noop], stop_error=RuntimeError("close failed"))
    assert code == EXIT_UNEXPECTED
    assert svc.transitions == [S, R, SG, F]


def test_run_when_sigterm_during_a_step_then_the_step_finishes_and_exit_0(monkeypatch):
    def term(svc: Scripted) -> None:
        signal.raise_signal(signal.SIGTERM)  # the handler only sets the flag
        svc.after_signal = svc.stopping  # type: ignore[attr-defined]

    code, svc = _run(monkeypatch, steps=[term, _noop])
    assert code == EXIT_OK
    assert svc.after_signal is True  # type: ignore[attr-defined]
    assert svc.done == 1  # the loop left after the signalled step, the second never ran
    assert svc.transitions == [S, R, SG, SD]


def test_health_endpoint_when_running_then_200_with_state(monkeypatch, capsys):
    def probe(svc: Scripted) -> None:
        err = capsys.readouterr().err
        port = int(re.search(r"metrics=http://127\.0\.0\.1:(\d+)/metrics", err).group(1))  # type: ignore[union-attr]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
            svc.http = (resp.status, json.loads(resp.read()))  # type: ignore[attr-defined]

    _code, svc = _run(monkeypatch, steps=[probe])
    assert svc.http == (200, {"service": "unit_lifecycle", "state": "running"})  # type: ignore[attr-defined]


def test_heartbeat_when_interval_passes_then_one_line_with_state_and_every_field(monkeypatch, capsys):
    _code, _svc = _run(monkeypatch, steps=[_noop, _noop, _noop])
    beats = [line.split(" unit_lifecycle ", 1)[1] for line in capsys.readouterr().err.splitlines()
             if " heartbeat " in f" {line.split(' unit_lifecycle ', 1)[-1]} "]
    # one after every step (interval 0): the three scripted ones and the one that asked to stop
    assert beats == [f"heartbeat state=running consumed={n} dlq=0 partitions=3" for n in (1, 2, 3, 3)]
