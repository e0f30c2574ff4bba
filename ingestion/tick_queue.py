"""A bounded hand-off queue between the Twisted reactor thread and the Kafka producer loop.

The reactor thread must never block: if it did, the WebSocket would stop
being read, Kite's heartbeats would go unanswered and the server would drop
us. So :meth:`TickQueue.put_batch` never waits; when the queue is full it
applies an explicit overflow policy and counts what it dropped:

- ``drop-oldest`` (the default): evict the oldest queued ticks to make room.
  A tick feed is a stream of *states*: the newest tick of an instrument
  supersedes older ones, and ``volume`` is cumulative, so a later tick still
  carries the volume of the dropped ones (bar volume stays right; only
  intra-bar extremes of dropped ticks are lost). After a burst, what is
  queued is the most recent market, which is what strategies act on.
- ``drop-newest``: refuse the incoming ticks, keeping the queued ones. Useful
  when a gap-free prefix matters more than freshness (e.g. recording).

Either way the per-instrument order of what passes through is preserved.
Items are ``(recv_ms, raw_tick)`` pairs: the receive time of the frame and the
KiteTicker tick dict (conversion happens on the consumer side, off the
reactor thread).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from itertools import repeat
from typing import Any, Literal

OverflowPolicy = Literal["drop-oldest", "drop-newest"]
POLICIES: tuple[OverflowPolicy, ...] = ("drop-oldest", "drop-newest")
QueueItem = tuple[int, Any]


class TickQueue:
    """Thread-safe bounded FIFO of ``(recv_ms, tick)`` with a non-blocking put."""

    def __init__(self, capacity: int, policy: OverflowPolicy = "drop-oldest") -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        if policy not in POLICIES:
            raise ValueError(f"overflow policy must be one of {', '.join(POLICIES)}, got {policy!r}")
        self.capacity = capacity
        self.policy: OverflowPolicy = policy
        # deque(maxlen=...) evicts from the left on extend: exactly drop-oldest, in C.
        self._q: deque[QueueItem] = deque(maxlen=capacity)
        self._cond = threading.Condition(threading.Lock())
        self.received = 0  # every tick offered; received = taken out + dropped + queued
        self.dropped = 0
        self.high_water = 0

    def put_batch(self, recv_ms: int, ticks: Sequence[Any]) -> int:
        """Enqueue one frame's ticks without ever blocking; returns how many ticks were dropped."""
        n = len(ticks)
        if not n:
            return 0
        with self._cond:
            free = self.capacity - len(self._q)
            if self.policy == "drop-oldest":
                dropped = max(0, n - free)
                self._q.extend(zip(repeat(recv_ms), ticks))
            else:
                take = min(n, free)
                dropped = n - take
                if take:
                    self._q.extend(zip(repeat(recv_ms), ticks[:take]))
            self.received += n
            self.dropped += dropped
            depth = len(self._q)
            if depth > self.high_water:
                self.high_water = depth
            self._cond.notify()
        return dropped

    def drain(self, max_items: int, timeout: float = 0.0) -> list[QueueItem]:
        """Remove and return up to ``max_items`` items, waiting up to ``timeout`` s for the first."""
        with self._cond:
            if not self._q and timeout > 0:
                self._cond.wait(timeout)
            q = self._q
            n = min(max_items, len(q))
            if n == len(q):
                out = list(q)
                q.clear()
                return out
            popleft = q.popleft
            return [popleft() for _ in range(n)]

    def __len__(self) -> int:
        return len(self._q)
