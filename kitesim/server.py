"""Wiring of the simulator: market, orders, REST server, WebSocket hub, the loop.

One asyncio loop (its own thread when started with :func:`start_in_thread`)
runs the WebSocket server, the market clock (every ``step_s``: advance the
market, match orders, fan out ticks) and the heartbeat; the REST server runs on
``http.server`` threads. ``Simulator.lock`` serialises every access to the
market and the order book.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from core.errors import ConfigError
from core.logs import kv
from core.universe import Instrument, by_key, by_token, load_universe
from kitesim.auth import RequestLimits, SessionStore
from kitesim.clock import SessionClock, ist_date, ist_str
from kitesim.faults import FaultConfig, Faults
from kitesim.history import CandleBook, HistoryGenerator
from kitesim.httpd import HttpServer
from kitesim.market import EventSource, Market, RandomWalk
from kitesim.orders import OrderEngine
from kitesim.replay import Replay
from kitesim.rest import KiteRestApp
from kitesim.stats import SimStats
from kitesim.ws import TickHub

log = logging.getLogger("kitesim")

MAX_EVENTS_PER_STEP = 2000
DEFAULT_TOKENS = Path(__file__).resolve().parents[1] / "configs" / "tokens.csv"


@dataclass(frozen=True)
class SimConfig:
    """Everything the simulator is started with (the CLI maps onto this)."""

    ws_port: int = 0
    http_port: int = 0
    seed: int = 1
    tokens: Path = DEFAULT_TOKENS
    replay: Path | None = None
    speed: float = 1.0
    api_key: str = "sim"
    access_token: str = "sim-token"  # noqa: S105 - the simulator's public test credentials
    api_secret: str = "sim-secret"  # noqa: S105
    token_expires_after: float | None = None
    start: float | None = None
    market_hours: bool = False
    host: str = "127.0.0.1"
    max_ws_connections: int = 3
    cash: float = 10_000_000.0
    rate_limits: bool = True
    step_s: float = 0.05


class Simulator:
    """The simulator's state and servers. Build, then :meth:`serve` in an event loop."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.universe: list[Instrument] = load_universe(config.tokens)
        self.by_token = by_token(self.universe)
        self.by_key = by_key(self.universe)
        self.lock = threading.RLock()
        self.replay: Replay | None = None
        source: EventSource
        if config.replay is not None:
            self.replay, skipped = Replay.from_file(config.replay, self.by_token)
            if skipped:
                log.warning("replay_rows_skipped %s", kv(rows=skipped, reason="token not in universe"))
            start = config.start if config.start is not None else self.replay.first_ts
            source = self.replay
        else:
            start = config.start if config.start is not None else time.time()
            source = RandomWalk(self.universe, config.seed, start, market_hours=config.market_hours)
        self.clock = SessionClock(start, config.speed)
        self.market = Market(self.universe, config.seed, source)
        self.candles = CandleBook()
        self.market.observers.append(self.candles.record)
        self.history = HistoryGenerator(self.universe, config.seed, ist_date(start), self.candles)
        self.engine = OrderEngine(self.by_key, self.market.latest, self.clock.now, config.seed,
                                  cash=config.cash, market_hours=config.market_hours)
        self.market.observers.append(lambda _ev, snap: self.engine.on_market(snap))
        self.sessions = SessionStore(config.api_key, config.access_token, config.api_secret,
                                     config.token_expires_after)
        self.limiter = RequestLimits()
        self.faults = Faults(config.seed, FaultConfig(rate_limits=config.rate_limits))
        self.stats = SimStats()
        self.hub = TickHub(self, max_connections=config.max_ws_connections)
        self.engine.listeners.append(self.hub.post_order_threadsafe)
        self.http: HttpServer | None = None
        self.http_port = 0
        self.ws_port = 0
        self.ready = threading.Event()

    def now_str(self) -> str:
        """Simulated now as a naive IST string."""
        return ist_str(self.clock.now())

    def fmt_time(self, epoch: float) -> str:
        """An epoch as a naive IST string."""
        return ist_str(epoch)

    def replay_done(self) -> bool | None:
        """None without a replay, else whether every recorded tick was played."""
        return None if self.replay is None else self.replay.done

    async def serve(self, stop: asyncio.Event) -> None:
        """Run both servers and the market until ``stop`` is set."""
        cfg = self.config
        try:
            self.http = HttpServer(KiteRestApp(self), cfg.host, cfg.http_port)
        except OSError as exc:
            raise ConfigError(f"cannot listen on http port {cfg.http_port}: {exc.strerror}") from None
        try:
            self.ws_port = await self.hub.start(cfg.host, cfg.ws_port)
        except OSError as exc:
            self.http.stop()
            raise ConfigError(f"cannot listen on ws port {cfg.ws_port}: {exc.strerror}") from None
        self.http_port = self.http.port
        self.http.start()
        self.ready.set()
        log.info("ready %s", kv(http_port=self.http_port, ws_port=self.ws_port, seed=cfg.seed, speed=cfg.speed,
                                instruments=len(self.universe), sim_time=self.now_str(),
                                replay=str(cfg.replay) if cfg.replay else None))
        tasks = [asyncio.create_task(self._market_loop(stop)),
                 asyncio.create_task(self._heartbeat_loop(stop))]
        try:
            await stop.wait()
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            await self.hub.stop()
            self.http.stop()
            log.info("stopped %s", kv(ticks=sum(self.market.ticks_generated.values())))

    async def _market_loop(self, stop: asyncio.Event) -> None:
        step = self.config.step_s
        while not stop.is_set():
            with self.lock:
                # bounded batches keep the loop (heartbeats, REST lock) responsive at high --speed
                snaps = self.market.advance(self.clock.now(), limit=MAX_EVENTS_PER_STEP)
                self.engine.process_due(time.monotonic())
            self.hub.broadcast_ticks(snaps)
            self.hub.enforce()
            await asyncio.sleep(0 if len(snaps) >= MAX_EVENTS_PER_STEP else step)

    async def _heartbeat_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(1.0)
            self.hub.heartbeat()


class RunningSimulator:
    """A simulator serving on a background thread (for tests and embedding)."""

    def __init__(self, sim: Simulator, thread: threading.Thread, loop: asyncio.AbstractEventLoop,
                 stop: asyncio.Event) -> None:
        self.sim = sim
        self._thread = thread
        self._loop = loop
        self._stop = stop

    @property
    def http_url(self) -> str:
        """``http://host:port`` of the REST API (the ``root`` for KiteConnect)."""
        return f"http://{self.sim.config.host}:{self.sim.http_port}"

    @property
    def ws_url(self) -> str:
        """``ws://host:port`` of the ticker (the ``root`` for KiteTicker)."""
        return f"ws://{self.sim.config.host}:{self.sim.ws_port}"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the servers and join the thread."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout)

    def __enter__(self) -> RunningSimulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_in_thread(config: SimConfig, timeout: float = 15.0) -> RunningSimulator:
    """Build and start a simulator on a daemon thread; returns once both servers listen.

    Use ports 0 to get free ports (read them from ``.sim.http_port`` / ``.sim.ws_port``).
    """
    sim = Simulator(config)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    errors: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(sim.serve(stop))
        except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
            errors.append(exc)
            sim.ready.set()
        finally:
            loop.close()

    thread = threading.Thread(target=run, name="kitesim", daemon=True)
    thread.start()
    if not sim.ready.wait(timeout):
        raise TimeoutError("kitesim did not become ready")
    if errors:
        raise errors[0]
    return RunningSimulator(sim, thread, loop, stop)
