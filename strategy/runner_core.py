"""The strategy runner's pure processor: bars, fills and order updates in; orders and rows out.

Wraps the :class:`~strategy.engine.DecisionEngine` for :class:`core.stream.StreamService`:

- ``bars.<tf>`` -> decode with the rollups' fast decoder (held to the Bar model),
  reject a bar beyond the plausibility window (more than ``max_ahead_ms`` past
  max(the latest bar decided, the wall clock): a bar stamped hours ahead would
  otherwise make every real bar of its instrument look already decided), skip a
  bar at or before its (tf, instrument)'s last decided bar (a replay, or one the
  warm-up covered), decide, and emit the orders on ``orders`` (key ``order_id``)
  and as rows for the ``orders`` table, with the progress mark and the changed
  positions' decided state;
- ``fills`` -> the position of (strategy, instrument), each ``fill_id`` counted once;
- ``order.updates`` -> an order that ended unfilled (rejected by risk, cancelled,
  expired) no longer holds its position's intent.

Poison (undecodable, out of range, or input the engine cannot decide on, e.g. a
price range whose ATR overflows) goes to ``dlq``; the batch goes on. With
``max_age_ms``, a bar more than that older than the wall clock (the runner was
down for hours) only warms indicators and strategy state: no decision, no order,
counted as ``late_bars``, so yesterday's signals never reach a broker today.

Orders are encoded with field order fixed and ``created_ts`` = ``signal_ts``, so two
runs over the same bars produce byte-identical messages.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson
from confluent_kafka import Message
from pydantic import ValidationError

from compute.bar_rollup import decode_bar
from compute.bars import BadBarInput
from core.errors import PoisonMessage
from core.stream import Emission, OutMessage
from core.topics import FILLS, ORDER_UPDATES, ORDERS
from schemas import Fill, OrderUpdate, decode
from schemas.limits import DEFAULT_MAX_AHEAD_MS
from schemas.models import Order
from strategy.engine import DecisionEngine
from strategy.store import RunnerRows, State

TF_OF_TOPIC = {f"bars.{tf}": tf for tf in ("1m", "3m", "5m", "15m", "30m", "60m")}
MAX_ORDER_QTY = 2**31 - 1  # the orders table's integer columns


def encode_order(order: dict[str, Any]) -> bytes:
    """The ``orders`` message (validated by the Order model; field order as built by the engine)."""
    Order.model_validate(order)
    if order["qty"] is not None and not 0 < order["qty"] <= MAX_ORDER_QTY:
        raise ValueError(f"order quantity out of range: {order['qty']}")
    return orjson.dumps(order)


def decode_input(topic: str, value: bytes | None) -> Any:
    """One input message, validated; :class:`PoisonMessage` when it cannot be used."""
    if value is None:
        raise PoisonMessage("empty message")
    if topic in TF_OF_TOPIC:
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
        fill = decode(Fill, value)
        if fill.qty > MAX_ORDER_QTY or fill.price <= 0:
            raise PoisonMessage(f"fill out of range: qty {fill.qty}, price {fill.price}")
        return fill
    if topic == ORDER_UPDATES:
        return decode(OrderUpdate, value)
    raise PoisonMessage(f"unexpected topic {topic}")


class RunnerCore:
    """Stateful but I/O-free: the service restores it at start and feeds it batches."""

    def __init__(self, engine: DecisionEngine, progress: dict[tuple[str, int], int] | None = None,
                 seen_fills: set[str] | None = None, on_latency: Callable[[float], None] | None = None,
                 max_ahead_ms: int = DEFAULT_MAX_AHEAD_MS, max_age_ms: int = 0) -> None:
        self.engine = engine
        self.progress: dict[tuple[str, int], int] = dict(progress or {})
        self.seen_fills: set[str] = set(seen_fills or ())
        self.pending: list[dict[str, Any]] = []  # orders decided at start-up (catch-up), emitted first
        self.pending_progress: dict[tuple[str, int], int] = {}
        self._marks: dict[tuple[str, int], int] = {}  # bars decided since the last emission
        self.on_latency = on_latency
        self.max_ahead_ms = max_ahead_ms
        self.max_age_ms = max_age_ms
        self.watermark = max(self.progress.values(), default=0)  # the latest bar decided (event time)
        self.counts = {"bars": 0, "stale_bars": 0, "late_bars": 0, "fills": 0, "duplicate_fills": 0,
                       "updates": 0, "implausible": 0}
        self.orders_by_strategy: dict[str, int] = {}
        self.bars_by_tf: dict[str, int] = {}

    # -- start-up -------------------------------------------------------------
    def warm(self, bars: Iterable[Any], tf: str) -> int:
        """Feed bars already decided (no orders): indicators and strategy state catch up."""
        n = 0
        for bar in bars:
            self.engine.on_bar(bar, tf, emit=False)
            n += 1
        return n

    def catch_up(self, bars: Iterable[Any], tf: str, now_ms: int) -> int:
        """Decide bars stored after the last decided one (a crash left them undone); emitted on the first batch."""
        n = 0
        for bar in bars:
            orders = self._bar(bar, tf, now_ms)
            if orders is not None:
                self.pending.extend(orders)
                n += 1
        self.pending_progress.update(self._drain_marks())
        return n

    # -- the stream (core.stream.Processor) -----------------------------------
    def process(self, msgs: Sequence[Message], now_ms: int) -> Emission:
        orders: list[dict[str, Any]] = self.pending
        self.pending = []
        marks = self.pending_progress
        self.pending_progress = {}
        rejects: list[tuple[Message, str]] = []
        for m in msgs:
            topic = m.topic()
            try:
                v = decode_input(topic, m.value())
                if topic in TF_OF_TOPIC:
                    limit = max(self.watermark, now_ms) + self.max_ahead_ms
                    if v.ts > limit:
                        self.counts["implausible"] += 1
                        raise PoisonMessage(f"implausible: bar ts {v.ts} more than {self.max_ahead_ms} ms past "
                                            f"max(latest bar decided, wall clock)")
                    t0 = time.perf_counter()
                    out = self._bar(v, v.tf, now_ms)
                    if out:
                        orders.extend(out)
                        if self.on_latency is not None:
                            self.on_latency(time.perf_counter() - t0)
                elif topic == FILLS:
                    self._fill(v)
                else:
                    self.counts["updates"] += 1
                    self.engine.on_order_update(v.order_id, v.to_status)
            except PoisonMessage as exc:
                rejects.append((m, str(exc)))
            except (ArithmeticError, ValueError, ValidationError) as exc:
                # valid by the contract, yet the engine cannot decide on it (e.g. a price range whose ATR
                # overflows): dead-letter it rather than crash-loop on the same batch
                rejects.append((m, f"cannot decide on it: {type(exc).__name__}: {exc}"))
        marks.update(self._drain_marks())
        msgs_out = [OutMessage(ORDERS, o["order_id"].encode(), encode_order(o)) for o in orders]
        for o in orders:
            self.orders_by_strategy[o["strategy"]] = self.orders_by_strategy.get(o["strategy"], 0) + 1
        states = self.drain_states()
        rows = RunnerRows(orders, marks, states) if (orders or marks or states) else None
        return Emission(messages=msgs_out, rows=rows, rejects=rejects)

    def committable(self, consumed: dict[Any, int]) -> dict[Any, int]:
        return consumed  # every decision is in the batch's output

    def on_revoke(self, parts: Iterable[Any]) -> None:
        return None

    def drain_states(self) -> dict[tuple[str, int], State]:
        """The decided state of every position that changed since the last call."""
        eng = self.engine
        out = {key: (eng.positions[key].direction, eng.positions[key].stop, eng.positions[key].entry_ts)
               for key in eng.dirty}
        eng.dirty.clear()
        return out

    # -- internals ------------------------------------------------------------
    def _fill(self, v: Any) -> None:
        if v.fill_id in self.seen_fills:
            self.counts["duplicate_fills"] += 1
            return
        if (v.strategy, v.instrument_token) not in self.engine.positions:
            return  # another strategy's (or an instrument no longer configured): not ours to count
        self.seen_fills.add(v.fill_id)
        self.counts["fills"] += 1
        self.engine.on_fill(v.strategy, v.instrument_token, v.side, v.qty, v.price, v.order_id)

    def _bar(self, bar: Any, tf: str, now_ms: int) -> list[dict[str, Any]] | None:
        """Decide one bar unless it was decided before; None for a stale bar."""
        key = (tf, bar.instrument_token)
        last = self.progress.get(key)
        if last is not None and bar.ts <= last:
            self.counts["stale_bars"] += 1
            return None
        self.counts["bars"] += 1
        self.bars_by_tf[tf] = self.bars_by_tf.get(tf, 0) + 1
        self.progress[key] = bar.ts
        self._marks[key] = bar.ts
        if bar.ts > self.watermark:
            self.watermark = bar.ts
        if self.max_age_ms and bar.ts < now_ms - self.max_age_ms:
            self.counts["late_bars"] += 1
            self.engine.on_bar(bar, tf, emit=False)  # indicators and strategy state move on; no order this late
            return []
        return self.engine.on_bar(bar, tf)

    def _drain_marks(self) -> dict[tuple[str, int], int]:
        marks, self._marks = self._marks, {}
        return marks
