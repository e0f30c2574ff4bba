"""Ingestion when Kafka refuses every tick for good (e.g. not authorised on a real cluster).

The producer stand-in behaves like :class:`core.bus.Producer` with an incurable delivery error:
each queued message fails in its delivery report (counted per reason), the first failure is
latched and raised by the next ``produce``. The service must stop with FatalError after a
bounded number of such errors, and still account for every tick it received.
"""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError

from core import bus
from core.errors import FatalError
from core.metrics import Metrics
from core.settings import load_settings
from ingestion.kite_feed import ShardState
from ingestion.zerodha_ws import PERMANENT_ERRORS_MAX, ZerodhaWs, parse_args
from tests.integration.kite_harness import write_universe


class Feed:
    def __init__(self, shards: list[list[int]]) -> None:
        self.states = [ShardState(i, list(s)) for i, s in enumerate(shards)]
        self.gave_up = False

    def auth_error(self) -> None:
        return None

    def force_reconnect(self, shard: int) -> None:
        pass

    def stop(self) -> None:
        pass


class RefusingProducer:
    """Every delivery fails with ``code``; counts like bus.Producer (``acked``, ``failed``)."""

    def __init__(self, code: int) -> None:
        self.code = code
        self.acked: dict[str, int] = {}
        self.failed: dict[tuple[str, str], int] = {}
        self.queued: list[str] = []
        self.latched: KafkaError | None = None

    def produce(self, topic: str, value: bytes, key: bytes | None = None, **_: Any) -> None:
        if self.latched is not None:
            err, self.latched = self.latched, None
            raise bus.DeliveryError(f"delivery to {topic} failed: {err.str()}", err)
        self.queued.append(topic)

    def poll(self, timeout: float = 0.0) -> None:
        for topic in self.queued:  # the delivery reports
            err = KafkaError(self.code)
            key = (topic, err.name())
            self.failed[key] = self.failed.get(key, 0) + 1
            self.latched = self.latched or err
        self.queued = []

    def flush(self, timeout: float = 30.0) -> None:
        self.poll()


def _tick(token: int, volume: int) -> dict[str, Any]:
    return {"instrument_token": token, "mode": "quote", "last_price": 100.0, "volume_traded": volume,
            "last_traded_quantity": 1, "tradable": True}


def _lost(metrics: Metrics) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in metrics.registry.collect():
        for s in family.samples:
            if s.name == "tradestack_zerodha_ws_ticks_lost_total":
                out[s.labels["reason"]] = s.value
    return out


def test_kafka_refusing_every_tick_stops_the_service_and_every_tick_is_counted(tmp_path: Any) -> None:
    universe = tmp_path / "tokens.csv"
    write_universe(universe, 4, skip_indices=True)
    metrics = Metrics("zerodha_ws")
    svc = ZerodhaWs(load_settings(), metrics, parse_args(["--tokens", str(universe), "--market-hours", "always"]))
    svc.feed = Feed(svc.shards)  # type: ignore[assignment]
    svc.producer = RefusingProducer(KafkaError.TOPIC_AUTHORIZATION_FAILED)  # type: ignore[assignment]
    token = svc.shards[0][0]
    steps = 0
    with pytest.raises(FatalError, match=r"TOPIC_AUTHORIZATION_FAILED.*no retry can cure"):
        for steps in range(1, 20):  # noqa: B007 - counted below
            svc.queue.put_batch(1_000, [_tick(token, steps * 100 + v) for v in range(10)])
            svc.step()
    # The first batch queues (its reports fail later); each later batch raises one latched error.
    assert steps == PERMANENT_ERRORS_MAX + 1
    svc.queue.put_batch(2_000, [_tick(token, v) for v in range(7)])  # arrives while stopping
    svc.stop()
    lost = _lost(metrics)
    assert metrics.registry.get_sample_value("tradestack_zerodha_ws_ticks_out_total") == 0
    assert sum(lost.values()) == svc.queue.received == 10 * steps + 7
    assert lost["abandoned"] == 10 + 7  # the batch the error stopped, and what came after
