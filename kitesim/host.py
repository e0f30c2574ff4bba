"""What the simulator's front ends need from it: one Protocol per front end.

:class:`kitesim.server.Simulator` builds the shared state (market, order engine,
sessions, faults, statistics) and the front ends that serve it (the WebSocket
hub, the REST app and its ``/_sim`` control routes). The front ends see the
simulator only through these Protocols, so none of them imports the server that
imports them (``tests/unit/test_import_graph.py`` keeps the package acyclic),
and each one states exactly what it touches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from core.universe import Instrument
from kitesim.auth import RequestLimits, SessionStore
from kitesim.clock import SessionClock
from kitesim.faults import Faults
from kitesim.history import HistoryGenerator
from kitesim.market import Market
from kitesim.orders import OrderEngine
from kitesim.stats import SimStats


class HubHost(Protocol):
    """What the WebSocket hub reads: sessions, the latest snapshots, faults; it reports to stats."""

    @property
    def by_token(self) -> Mapping[int, Instrument]: ...
    @property
    def lock(self) -> AbstractContextManager[Any]: ...
    @property
    def market(self) -> Market: ...
    @property
    def sessions(self) -> SessionStore: ...
    @property
    def faults(self) -> Faults: ...
    @property
    def stats(self) -> SimStats: ...


class SimSettings(Protocol):
    """The start-up settings the control routes report."""

    @property
    def seed(self) -> int: ...
    @property
    def speed(self) -> float: ...


class TextBroadcaster(Protocol):
    """Sends a text frame to every WebSocket client (the hub)."""

    def broadcast_text_threadsafe(self, obj: dict[str, Any]) -> int: ...


class ControlHost(Protocol):
    """What the ``/_sim`` control routes read and change."""

    @property
    def config(self) -> SimSettings: ...
    @property
    def universe(self) -> Sequence[Instrument]: ...
    @property
    def by_token(self) -> Mapping[int, Instrument]: ...
    @property
    def lock(self) -> AbstractContextManager[Any]: ...
    @property
    def clock(self) -> SessionClock: ...
    @property
    def market(self) -> Market: ...
    @property
    def engine(self) -> OrderEngine: ...
    @property
    def faults(self) -> Faults: ...
    @property
    def stats(self) -> SimStats: ...
    @property
    def sessions(self) -> SessionStore: ...
    @property
    def limiter(self) -> RequestLimits: ...
    @property
    def hub(self) -> TextBroadcaster: ...
    @property
    def http_port(self) -> int: ...
    @property
    def ws_port(self) -> int: ...
    def replay_done(self) -> bool | None: ...


class RestHost(ControlHost, Protocol):
    """What the Kite REST app needs (it also mounts the control routes)."""

    @property
    def by_key(self) -> Mapping[str, Instrument]: ...
    @property
    def history(self) -> HistoryGenerator: ...
    def now_str(self) -> str: ...
    def fmt_time(self, epoch: float) -> str: ...
