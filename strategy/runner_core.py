"""The strategy runner's pure processor: bars, fills and order updates in; orders and rows out.

Wraps the :class:`~strategy.engine.DecisionEngine` for :class:`core.stream.StreamService`:

- ``bars.<tf>`` -> decode with the contract model (poison -> ``dlq``), skip a bar
  at or before its (tf, instrument)'s last decided bar (a replay, or one the
  warm-up already covered), decide, and emit the orders on ``orders`` (key
  ``order_id``) and as rows for the ``orders`` table, with the progress mark;
- ``fills`` -> the position of (strategy, instrument), each ``fill_id`` counted once;
- ``order.updates`` -> an order that ended unfilled (rejected by risk, cancelled,
  expired) no longer holds its position's intent.

Orders are encoded with field order fixed and ``created_ts`` = ``signal_ts``, so two
runs over the same bars produce byte-identical messages.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson

from compute.bar_rollup import decode_bar
from compute.bars import BadBarInput
from core.errors import PoisonMessage
from core.stream import Emission, OutMessage, Record, RecordProcessor
from core.topics import FILLS, ORDER_UPDATES, ORDERS
from schemas import Fill, OrderUpdate, decode
from schemas.models import Order
from strategy.engine import DecisionEngine
from strategy.store import RunnerRows

TF_OF_TOPIC = {f"bars.{tf}": tf for tf in ("1m", "3m", "5m", "15m", "30m", "60m")}


def encode_order(order: dict[str, Any]) -> bytes:
    """The ``orders`` message (validated by the Order model; field order as built by the engine)."""
    Order.model_validate(order)
    return orjson.dumps(order)


class RunnerCore(RecordProcessor):
    """Stateful but I/O-free: the service restores it at start and feeds it batches."""

    def __init__(self, engine: DecisionEngine, progress: dict[tuple[str, int], int] | None = None,
                 seen_fills: set[str] | None = None,
                 on_latency: Callable[[float], None] | None = None) -> None:
        self.engine = engine
        self.progress: dict[tuple[str, int], int] = dict(progress or {})
        self.seen_fills: set[str] = set(seen_fills or ())
        self.pending: list[dict[str, Any]] = []  # orders decided at start-up (catch-up), emitted first
        self.pending_progress: dict[tuple[str, int], int] = {}
        self._marks: dict[tuple[str, int], int] = {}  # bars decided since the last emission
        self.on_latency = on_latency
        self.counts = {"bars": 0, "stale_bars": 0, "fills": 0, "duplicate_fills": 0, "updates": 0}
        self.orders_by_strategy: dict[str, int] = {}

    # -- start-up -------------------------------------------------------------
    def warm(self, bars: Iterable[Any], tf: str) -> int:
        """Feed bars already decided (no orders): indicators and strategy state catch up."""
        n = 0
        for bar in bars:
            key = (tf, bar.instrument_token)
            last = self.progress.get(key)
            if last is not None and bar.ts > last:
                continue
            self.engine.on_bar(bar, tf, emit=False)
            n += 1
        return n

    def catch_up(self, bars: Iterable[Any], tf: str) -> int:
        """Decide bars stored after the last decided one (a crash left them undone); emitted on the first batch."""
        n = 0
        for bar in bars:
            orders = self._bar(bar, tf)
            if orders is not None:
                self.pending.extend(orders)
                n += 1
        self.pending_progress.update(self._drain_marks())
        return n

    # -- the stream -----------------------------------------------------------
    def decode(self, topic: str, value: bytes | None) -> Any:
        if value is None:
            raise PoisonMessage("empty message")
        if topic in TF_OF_TOPIC:
            # the rollups' fast decoder (held to the Bar model by tests/unit/test_contract_decoders.py)
            try:
                data = orjson.loads(value)
            except orjson.JSONDecodeError as exc:
                raise PoisonMessage(f"undecodable JSON: {exc}") from None
            if type(data) is not dict:
                raise PoisonMessage("a bar must be a JSON object")
            try:
                return decode_bar(data, TF_OF_TOPIC[topic])
            except BadBarInput as exc:
                raise PoisonMessage(str(exc)) from None
        if topic == FILLS:
            return decode(Fill, value)
        if topic == ORDER_UPDATES:
            return decode(OrderUpdate, value)
        raise PoisonMessage(f"unexpected topic {topic}")

    def process_records(self, records: Sequence[Record], now_ms: int) -> Emission:
        orders: list[dict[str, Any]] = self.pending
        self.pending = []
        marks = self.pending_progress
        self.pending_progress = {}
        engine = self.engine
        for rec in records:
            v = rec.value
            if rec.topic in TF_OF_TOPIC:
                t0 = time.perf_counter()
                out = self._bar(v, v.tf)
                if out:
                    orders.extend(out)
                    if self.on_latency is not None:
                        self.on_latency(time.perf_counter() - t0)
            elif rec.topic == FILLS:
                if v.fill_id in self.seen_fills:
                    self.counts["duplicate_fills"] += 1
                    continue
                self.seen_fills.add(v.fill_id)
                self.counts["fills"] += 1
                engine.on_fill(v.strategy, v.instrument_token, v.side, v.qty, v.price, v.order_id)
            else:
                self.counts["updates"] += 1
                engine.on_order_update(v.order_id, v.to_status)
        marks.update(self._drain_marks())
        msgs = [OutMessage(ORDERS, o["order_id"].encode(), encode_order(o)) for o in orders]
        for o in orders:
            self.orders_by_strategy[o["strategy"]] = self.orders_by_strategy.get(o["strategy"], 0) + 1
        rows = RunnerRows(orders, marks) if (orders or marks) else None
        return Emission(messages=msgs, rows=rows)

    # -- internals ------------------------------------------------------------
    def _bar(self, bar: Any, tf: str) -> list[dict[str, Any]] | None:
        """Decide one bar unless it was decided before; None for a stale bar."""
        key = (tf, bar.instrument_token)
        last = self.progress.get(key)
        if last is not None and bar.ts <= last:
            self.counts["stale_bars"] += 1
            return None
        self.counts["bars"] += 1
        self.progress[key] = bar.ts
        self._marks[key] = bar.ts
        return self.engine.on_bar(bar, tf)

    def _drain_marks(self) -> dict[tuple[str, int], int]:
        marks, self._marks = self._marks, {}
        return marks
