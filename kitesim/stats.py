"""What the simulator did, for tests and operators (``GET /_sim/stats``, ``GET /_sim/ticks``).

Every packet sent on a WebSocket is logged per instrument in send order (a
bounded log), with the connection id, mode and the values it carried, so an
ingestion test can compare exactly what kitesim sent with what reached Kafka.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from kitesim.packets import Snapshot

#: Sent packets remembered per instrument (counts are exact regardless).
TICK_LOG_PER_TOKEN = 5_000


@dataclass
class ConnStats:
    """Counters of one WebSocket connection."""

    conn_id: int
    api_key: str
    connected_at: float = field(default_factory=time.time)
    frames: int = 0
    heartbeats: int = 0
    text_messages: int = 0
    packets: Counter[int] = field(default_factory=Counter)
    subscribed: int = 0
    closed: bool = False


@dataclass(frozen=True, slots=True)
class SentTick:
    """One packet as sent: which connection, which tick (scalars only), in which mode."""

    conn_id: int
    mode: str
    snapshot: bool
    seq: int
    ts: float
    exchange_timestamp: int
    last_price: int
    volume: int
    last_qty: int
    oi: int


class SimStats:
    """Thread-safe counters; the WebSocket loop writes, the REST thread reads."""

    def __init__(self, log_per_token: int = TICK_LOG_PER_TOKEN) -> None:
        self._lock = threading.Lock()
        self.started = time.time()
        self.log_per_token = log_per_token
        self.ticks_sent: Counter[int] = Counter()
        self.snapshots_sent: Counter[int] = Counter()
        self.frames_sent = 0
        self.heartbeats_sent = 0
        self.ws_rejected = 0
        self.ws_total = 0
        self.http_requests = 0
        self.http_errors: Counter[str] = Counter()
        self.faults_injected: Counter[str] = Counter()
        self.conns: dict[int, ConnStats] = {}
        self._log: dict[int, deque[SentTick]] = {}

    def conn_opened(self, conn_id: int, api_key: str) -> None:
        """A WebSocket connection was accepted."""
        with self._lock:
            self.ws_total += 1
            self.conns[conn_id] = ConnStats(conn_id, api_key)

    def conn_closed(self, conn_id: int) -> None:
        """A WebSocket connection ended."""
        with self._lock:
            if conn_id in self.conns:
                self.conns[conn_id].closed = True

    def conn_rejected(self) -> None:
        """A WebSocket upgrade was refused."""
        with self._lock:
            self.ws_rejected += 1

    def subscribed(self, conn_id: int, count: int) -> None:
        """A connection's subscription count changed."""
        with self._lock:
            if conn_id in self.conns:
                self.conns[conn_id].subscribed = count

    def sent_frame(self, conn_id: int, items: list[tuple[Snapshot, str, bool]]) -> None:
        """A binary frame of ``(snapshot, mode, is_snapshot)`` packets was queued on a connection."""
        with self._lock:
            self.frames_sent += 1
            cs = self.conns.get(conn_id)
            if cs:
                cs.frames += 1
            for snap, mode, is_snap in items:
                tok = snap.instrument_token
                (self.snapshots_sent if is_snap else self.ticks_sent)[tok] += 1
                if cs:
                    cs.packets[tok] += 1
                log = self._log.get(tok)
                if log is None:
                    log = self._log[tok] = deque(maxlen=self.log_per_token)
                log.append(SentTick(conn_id, mode, is_snap, snap.seq, snap.ts, snap.exchange_timestamp,
                                    snap.last_price, snap.volume, snap.last_qty, snap.oi))

    def sent_heartbeat(self, conn_id: int) -> None:
        """A heartbeat was queued."""
        with self._lock:
            self.heartbeats_sent += 1
            if conn_id in self.conns:
                self.conns[conn_id].heartbeats += 1

    def sent_text(self, conn_id: int) -> None:
        """A text frame (postback, message) was queued."""
        with self._lock:
            if conn_id in self.conns:
                self.conns[conn_id].text_messages += 1

    def http(self, status: int) -> None:
        """A REST request completed with ``status``."""
        with self._lock:
            self.http_requests += 1
            if status >= 400:
                self.http_errors[str(status)] += 1

    def fault(self, name: str) -> None:
        """An injected fault took effect (``http_5xx``, ``ip_not_registered``, ``order_reply_timeout``, ...)."""
        with self._lock:
            self.faults_injected[name] += 1

    def summary(self, ticks_generated: dict[int, int]) -> dict[str, Any]:
        """The ``/_sim/stats`` document (token keys are strings, as JSON needs)."""
        with self._lock:
            return {
                "uptime_s": round(time.time() - self.started, 3),
                "ticks_generated": {str(t): n for t, n in ticks_generated.items() if n},
                "ticks_sent": {str(t): n for t, n in sorted(self.ticks_sent.items())},
                "snapshots_sent": {str(t): n for t, n in sorted(self.snapshots_sent.items())},
                "frames_sent": self.frames_sent,
                "heartbeats_sent": self.heartbeats_sent,
                "ws_connections_total": self.ws_total,
                "ws_rejected": self.ws_rejected,
                "ws_connections": [
                    {"id": c.conn_id, "api_key": c.api_key, "open": not c.closed, "frames": c.frames,
                     "heartbeats": c.heartbeats, "text_messages": c.text_messages, "subscribed": c.subscribed,
                     "packets": {str(t): n for t, n in sorted(c.packets.items())}}
                    for c in self.conns.values()],
                "http_requests": self.http_requests,
                "http_errors": dict(self.http_errors),
                "faults_injected": dict(self.faults_injected),
            }

    def tick_log(self, token: int, divisor: int, conn_id: int | None = None, since_seq: int = 0,
                 limit: int = 10_000) -> list[dict[str, Any]]:
        """Packets sent for ``token`` in send order (optionally one connection, ``seq > since_seq``)."""
        with self._lock:
            entries = list(self._log.get(token, ()))
        out = []
        for e in entries:
            if conn_id is not None and e.conn_id != conn_id:
                continue
            if since_seq and e.seq <= since_seq:
                continue
            out.append({"conn": e.conn_id, "seq": e.seq, "mode": e.mode, "snapshot": e.snapshot,
                        "exchange_timestamp": e.exchange_timestamp, "ts": e.ts,
                        "last_price": e.last_price / divisor, "volume": e.volume, "last_qty": e.last_qty,
                        "oi": e.oi})
            if len(out) >= limit:
                break
        return out
