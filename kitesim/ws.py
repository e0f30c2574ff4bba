"""The Kite ticker WebSocket of the simulator (``websockets`` asyncio server).

- Upgrade at ``/?api_key=K&access_token=T``; a bad or expired token is refused
  with HTTP 403, more than ``max_connections`` per api_key with HTTP 429.
- Client text messages ``{"a":"subscribe"|"unsubscribe"|"mode","v":...}``;
  tokens are JSON ints, the default mode is ``quote``; re-subscribing is
  harmless (keeps the current mode). Newly subscribed tokens, and tokens whose
  mode changes, get the current state at once (logged as a snapshot).
- Binary frames of packets for the connection's subscribed tokens in its
  modes, a 1-byte heartbeat every second, and text frames for order postbacks
  (``{"type":"order","data":{...}}``: every status the order engine announces,
  including ``PUT ORDER REQ RECEIVED`` of an order held by the
  ``order_stuck_s`` fault) and messages/errors.
- Each connection has a bounded send queue; a client that cannot keep up is
  disconnected (close code 1013) rather than slowing everyone down.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from core.logs import kv
from kitesim.errors import INCORRECT_TOKEN
from kitesim.host import HubHost
from kitesim.packets import HEARTBEAT, MODES, Mode, Snapshot, assemble_frame, encode_packet

log = logging.getLogger("kitesim.ws")

MAX_TOKENS_PER_CONNECTION = 3000
SEND_QUEUE_FRAMES = 5000
PACKETS_PER_FRAME = 1000


def _credentials(path: str) -> tuple[str | None, str | None]:
    q = parse_qs(urlsplit(path).query)
    keys, tokens = q.get("api_key"), q.get("access_token")
    return (keys[-1] if keys else None), (tokens[-1] if tokens else None)


@dataclass
class Conn:
    """One client connection and its subscriptions."""

    conn_id: int
    ws: ServerConnection
    api_key: str
    token: str
    subs: dict[int, Mode] = field(default_factory=dict)
    queue: asyncio.Queue[bytes | str] = field(default_factory=lambda: asyncio.Queue(SEND_QUEUE_FRAMES))
    closing: bool = False


class TickHub:
    """Accepts ticker connections and fans ticks, heartbeats and postbacks out to them."""

    def __init__(self, sim: HubHost, max_connections: int = 3) -> None:
        self.sim = sim
        self.max_connections = max_connections
        self.conns: dict[int, Conn] = {}
        self._ids = itertools.count(1)
        self._server: Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the bound port."""
        self._loop = asyncio.get_running_loop()
        self._server = await serve(self._handle, host, port, process_request=self._check_upgrade,
                                   ping_interval=20, ping_timeout=20, close_timeout=2, max_size=2**20)
        sock = next(iter(self._server.sockets))
        return int(sock.getsockname()[1])

    async def stop(self) -> None:
        """Close every connection and stop listening."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 3)

    def _check_upgrade(self, connection: ServerConnection, request: Request) -> Response | None:
        api_key, token = _credentials(request.path)
        if not self.sim.sessions.valid(api_key, token):
            self.sim.stats.conn_rejected()
            log.info("ws_refused %s", kv(reason="bad_or_expired_token",
                                         known_app=api_key == self.sim.sessions.api_key))
            return _plain(connection, HTTPStatus.FORBIDDEN, INCORRECT_TOKEN)
        if sum(1 for c in self.conns.values() if c.api_key == api_key) >= self.max_connections:
            self.sim.stats.conn_rejected()
            log.info("ws_refused %s", kv(reason="too_many_connections", limit=self.max_connections))
            return _plain(connection, HTTPStatus.TOO_MANY_REQUESTS,
                          f"Maximum {self.max_connections} connections per api_key")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        api_key, token = _credentials(ws.request.path if ws.request else "/")
        conn = Conn(next(self._ids), ws, api_key or "", token or "")
        self.conns[conn.conn_id] = conn
        self.sim.stats.conn_opened(conn.conn_id, conn.api_key)
        log.info("ws_connected %s", kv(conn=conn.conn_id, peer=ws.remote_address))
        writer = asyncio.create_task(self._writer(conn))
        try:
            async for message in ws:
                if isinstance(message, str):
                    self._on_text(conn, message)
        except ConnectionClosed:
            pass
        finally:
            writer.cancel()
            self.conns.pop(conn.conn_id, None)
            self.sim.stats.conn_closed(conn.conn_id)
            log.info("ws_closed %s", kv(conn=conn.conn_id, code=ws.close_code))

    async def _writer(self, conn: Conn) -> None:
        with contextlib.suppress(ConnectionClosed, asyncio.CancelledError):
            while True:
                item = await conn.queue.get()
                await conn.ws.send(item)

    # ------------------------------------------------------------------ client messages

    def _on_text(self, conn: Conn, text: str) -> None:
        try:
            msg = orjson.loads(text)
            action, value = msg["a"], msg["v"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self._send_text(conn, {"type": "error", "data": f"invalid message: {text[:100]}"})
            return
        if action == "subscribe":
            self._subscribe(conn, value)
        elif action == "unsubscribe":
            for t in _tokens(value):
                conn.subs.pop(t, None)
        elif action == "mode":
            if not (isinstance(value, list) and len(value) == 2 and value[0] in MODES):
                self._send_text(conn, {"type": "error", "data": f"invalid mode message: {text[:100]}"})
                return
            mode: Mode = value[0]
            changed = [t for t in _tokens(value[1]) if t in conn.subs and conn.subs[t] != mode]
            for t in changed:
                conn.subs[t] = mode
            self._send_current(conn, changed)
        else:
            self._send_text(conn, {"type": "error", "data": f"unknown action: {str(action)[:40]}"})
        self.sim.stats.subscribed(conn.conn_id, len(conn.subs))

    def _subscribe(self, conn: Conn, value: Any) -> None:
        added = []
        for t in _tokens(value):
            if t in conn.subs or t not in self.sim.by_token:
                continue  # duplicates are harmless; unknown tokens are ignored like Kite does
            if len(conn.subs) >= MAX_TOKENS_PER_CONNECTION:
                self._send_text(conn, {"type": "error",
                                       "data": f"subscription limit of {MAX_TOKENS_PER_CONNECTION} reached"})
                break
            conn.subs[t] = "quote"
            added.append(t)
        self._send_current(conn, added)

    def _send_current(self, conn: Conn, tokens: Sequence[int]) -> None:
        """The current state of ``tokens`` (those that ticked already) as one frame."""
        if not tokens or self.sim.faults.ws_silent():
            return
        with self.sim.lock:
            snaps = [s for s in (self.sim.market.latest(t) for t in tokens) if s is not None and s.seq > 0]
        self._send_packets(conn, [(s, conn.subs[s.instrument_token], True) for s in snaps])

    # ------------------------------------------------------------------ fan-out (event loop thread)

    def broadcast_ticks(self, snaps: Sequence[Snapshot]) -> None:
        """Send new ticks to every connection subscribed to them, in generation order."""
        if not snaps or not self.conns or self.sim.faults.ws_silent():
            return
        for conn in list(self.conns.values()):
            subs = conn.subs
            if subs:
                self._send_packets(conn, [(s, subs[s.instrument_token], False) for s in snaps
                                          if s.instrument_token in subs])

    def _send_packets(self, conn: Conn, items: list[tuple[Snapshot, Mode, bool]]) -> None:
        for i in range(0, len(items), PACKETS_PER_FRAME):
            chunk = items[i:i + PACKETS_PER_FRAME]
            frame = assemble_frame([encode_packet(s, mode) for s, mode, _ in chunk])
            if not self._put(conn, frame):
                return
            self.sim.stats.sent_frame(conn.conn_id, [(s, m, snap) for s, m, snap in chunk])

    def heartbeat(self) -> None:
        """One 1-byte heartbeat to every connection (unless a silence fault is running)."""
        if self.sim.faults.ws_silent():
            return
        for conn in list(self.conns.values()):
            if self._put(conn, HEARTBEAT):
                self.sim.stats.sent_heartbeat(conn.conn_id)

    def enforce(self) -> None:
        """Apply the drop-connections fault and close connections whose token expired."""
        if self.sim.faults.take_drop_ws():
            for conn in list(self.conns.values()):
                log.info("ws_dropped %s", kv(conn=conn.conn_id, reason="fault"))
                conn.ws.transport.abort()
        for conn in list(self.conns.values()):
            if not conn.closing and not self.sim.sessions.valid(conn.api_key, conn.token):
                conn.closing = True
                log.info("ws_token_expired %s", kv(conn=conn.conn_id))
                asyncio.ensure_future(conn.ws.close(1008, INCORRECT_TOKEN))

    def _put(self, conn: Conn, item: bytes | str) -> bool:
        if conn.closing:
            return False
        try:
            conn.queue.put_nowait(item)
            return True
        except asyncio.QueueFull:
            conn.closing = True
            log.warning("ws_slow_consumer %s", kv(conn=conn.conn_id, queued=conn.queue.qsize()))
            asyncio.ensure_future(conn.ws.close(1013, "client too slow"))
            return False

    def _send_text(self, conn: Conn, obj: dict[str, Any]) -> None:
        if self._put(conn, orjson.dumps(obj).decode()):
            self.sim.stats.sent_text(conn.conn_id)

    # ------------------------------------------------------------------ thread-safe entry points

    def post_order_threadsafe(self, payload: dict[str, Any]) -> None:
        """Queue an order postback for the app's connections (callable from any thread)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._post_order, payload)

    def _post_order(self, payload: dict[str, Any]) -> None:
        for conn in list(self.conns.values()):
            if conn.api_key == self.sim.sessions.api_key:
                self._send_text(conn, {"type": "order", "data": payload})

    def broadcast_text_threadsafe(self, obj: dict[str, Any]) -> int:
        """Queue a text frame to every connection; returns how many connections there were."""
        n = len(self.conns)

        def send_all() -> None:
            for c in list(self.conns.values()):
                self._send_text(c, obj)

        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(send_all)
        return n


def _tokens(value: Any) -> list[int]:
    """The int tokens of a message value (anything else is ignored)."""
    if not isinstance(value, list):
        return []
    return [v for v in value if isinstance(v, int) and not isinstance(v, bool) and v > 0]


def _plain(connection: ServerConnection, status: HTTPStatus, text: str) -> Response:
    return connection.respond(status, text + "\n")
