"""Kite WebSocket connections (KiteTicker on Twisted) feeding a :class:`TickQueue`.

One :class:`kiteconnect.KiteTicker` per shard, all on the one Twisted reactor,
which runs in a daemon thread (``connect(threaded=True)``): the Twisted reactor
cannot be restarted inside a process, so the service loop stays in the main
thread and a fresh reactor means a fresh process (the supervisor restarts us).

Everything in the callbacks runs on the reactor thread and must be cheap and
non-blocking: stamp the receive time, hand the parsed ticks to the queue, note
arrival times for the watchdog, bump plain counters. The service loop reads the
:class:`ShardState` counters and exports them as metrics.

Reconnects: KiteTicker's factory reconnects by itself (exponential backoff,
``reconnect_max_delay`` cap). On every (re)connect we subscribe the shard's
tokens and set the mode (KiteTicker's own ``resubscribe`` also runs on
reconnects; duplicates are harmless). :meth:`KiteFeed.force_reconnect` aborts a
silent connection so the factory reconnects it. A 403 on the upgrade (bad or
expired token) is latched as :attr:`ShardState.auth_error`: retrying cannot
help, the service turns it into a FatalError (exit 3).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kiteconnect import KiteTicker

from ingestion.tick_queue import TickQueue
from ingestion.watchdog import FeedWatchdog

log = logging.getLogger("zerodha_ws.feed")

#: autobahn reports a refused upgrade as "WebSocket connection upgrade failed (403 - Forbidden)".
_AUTH_FAILURE = re.compile(r"upgrade failed \((401|403)\b|TokenException|access_token", re.I)
MODES = ("full", "quote", "ltp")


@dataclass
class ShardState:
    """Counters and flags of one connection (written on the reactor thread, read by the loop)."""

    index: int
    tokens: list[int]
    connected: bool = False
    connects: int = 0
    reconnect_attempts: int = 0
    forced_reconnects: int = 0
    frames: int = 0
    ticks: int = 0
    dropped: int = 0
    last_close: str = ""
    auth_error: str | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def reconnects(self) -> int:
        """Successful connects after the first one."""
        return max(0, self.connects - 1)


TickerFactory = Callable[..., Any]


class KiteFeed:
    """Runs the shards' KiteTickers on the reactor thread; thread-safe controls for the loop."""

    def __init__(self, api_key: str, access_token: str, ws_root: str, shards: Sequence[Sequence[int]],
                 queue: TickQueue, watchdog: FeedWatchdog, mode: str = "full",
                 reconnect_max_delay: int = 5, reconnect_max_tries: int = 300, connect_timeout: int = 10,
                 ticker_factory: TickerFactory = KiteTicker, clock: Callable[[], float] = time.time) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self.mode = mode
        self.queue = queue
        self.watchdog = watchdog
        self.clock = clock
        self.states = [ShardState(i, list(tokens)) for i, tokens in enumerate(shards)]
        self.tickers: list[Any] = []
        self.gave_up = False
        self.closing = False  # set by stop(): closes after that are expected, not warnings
        for state in self.states:
            kt = ticker_factory(api_key, access_token, root=ws_root, reconnect=True,
                                reconnect_max_tries=reconnect_max_tries,
                                reconnect_max_delay=reconnect_max_delay, connect_timeout=connect_timeout)
            self._wire(kt, state)
            self.tickers.append(kt)
        self._started = False

    # -- reactor-thread callbacks ------------------------------------------------
    def _wire(self, kt: Any, st: ShardState) -> None:
        h = _ShardHandlers(self, st)
        kt.on_connect = h.on_connect
        kt.on_message = h.on_message
        kt.on_ticks = h.on_ticks
        kt.on_close = h.on_close
        kt.on_error = h.on_error
        kt.on_reconnect = h.on_reconnect
        kt.on_noreconnect = h.on_noreconnect

    # -- loop-thread controls ------------------------------------------------------
    def start(self, timeout: float = 10.0) -> None:
        """Start the reactor thread with the first shard, then add the other shards on it."""
        if self._started:
            return
        from twisted.internet import reactor

        self._started = True
        first, rest = self.tickers[0], self.tickers[1:]
        if reactor.running:  # pragma: no cover - only if someone else runs a reactor here
            for kt in self.tickers:
                reactor.callFromThread(kt.connect)
            return
        first.connect(threaded=True)
        deadline = time.monotonic() + timeout
        while not reactor.running and time.monotonic() < deadline:
            time.sleep(0.01)
        # Twisted is not thread-safe: further connections are opened from inside the reactor.
        for kt in rest:
            reactor.callFromThread(kt.connect)

    def force_reconnect(self, shard: int) -> None:
        """Abort ``shard``'s connection; KiteTicker's factory then reconnects and we resubscribe."""
        from twisted.internet import reactor

        kt = self.tickers[shard]
        self.states[shard].forced_reconnects += 1

        def drop() -> None:
            if kt.ws is not None:
                kt.ws.dropConnection(abort=True)

        reactor.callFromThread(drop)

    def auth_error(self) -> tuple[int, str] | None:
        """``(shard, reason)`` of the first rejected-token failure, if any."""
        for st in self.states:
            if st.auth_error is not None:
                return st.index, st.auth_error
        return None

    def stop(self, timeout: float = 3.0) -> None:
        """Close every connection (no more retries) and stop the reactor."""
        if not self._started:
            return
        from twisted.internet import reactor

        done = threading.Event()
        self.closing = True

        def shutdown() -> None:
            for kt in self.tickers:
                try:
                    kt.stop_retry()
                    if kt.ws is not None:
                        kt.ws.sendClose()
                except Exception as exc:  # noqa: BLE001 - best effort on the way out
                    log.debug("close failed: %s", exc)
            done.set()

        if reactor.running:
            reactor.callFromThread(shutdown)
            done.wait(timeout)
            time.sleep(0.1)  # let the close frames go out
            reactor.callFromThread(reactor.stop)  # type: ignore[misc]
        self._started = False


class _ShardHandlers:
    """KiteTicker callbacks of one shard (they run on the reactor thread: cheap, never blocking)."""

    def __init__(self, feed: KiteFeed, st: ShardState) -> None:
        self.feed, self.st, self.i = feed, st, st.index
        self.queue, self.watchdog, self.clock = feed.queue, feed.watchdog, feed.clock

    def on_connect(self, ws: Any, _response: Any) -> None:
        st = self.st
        st.connected = True
        st.connects += 1
        self.watchdog.connected(self.i, self.clock())
        ws.subscribe(st.tokens)
        ws.set_mode(self.feed.mode, st.tokens)
        if st.connects == 1:
            log.info("connected shard=%d instruments=%d mode=%s", self.i, len(st.tokens), self.feed.mode)
        else:
            log.info("reconnected shard=%d reconnects=%d resubscribed=%d", self.i, st.reconnects, len(st.tokens))

    def on_message(self, _ws: Any, payload: bytes, is_binary: bool) -> None:
        self.st.frames += 1
        self.watchdog.frame(self.i, self.clock(), is_binary and len(payload) > 4)

    def on_ticks(self, _ws: Any, ticks: list[dict[str, Any]]) -> None:
        self.st.ticks += len(ticks)
        self.st.dropped += self.queue.put_batch(int(self.clock() * 1000), ticks)

    def _auth_failure(self, reason: str) -> bool:
        """Latch a rejected-token failure (reported by the service as one fatal line)."""
        if not _AUTH_FAILURE.search(reason):
            return False
        if self.st.auth_error is None:
            self.st.auth_error = reason
        return True

    def on_close(self, _ws: Any, code: Any, reason: Any) -> None:
        st = self.st
        was = st.connected
        st.connected = False
        self.watchdog.disconnected(self.i)
        text = str(reason)
        st.last_close = f"{code} {text}"
        if self._auth_failure(text) or not was:
            return
        if self.feed.closing:
            log.info("closed shard=%d", self.i)
        else:
            log.warning("disconnected shard=%d code=%s reason=%s", self.i, code, text)

    def on_error(self, _ws: Any, code: Any, reason: Any) -> None:
        text = str(reason)
        if not self._auth_failure(text) and code == 0:  # a {"type":"error"} text frame from the server
            log.warning("server error message shard=%d message=%s", self.i, text)

    def on_reconnect(self, _ws: Any, attempts: int) -> None:
        self.st.reconnect_attempts += 1
        if attempts in (1, 2, 5) or attempts % 10 == 0:
            log.info("reconnecting shard=%d attempt=%d", self.i, attempts)

    def on_noreconnect(self, _ws: Any) -> None:
        self.feed.gave_up = True
        log.error("reconnect attempts exhausted shard=%d", self.i)
