"""The ingestion service loop with a fake feed and producer: overflow policy, token expiry, watchdog wiring."""

from __future__ import annotations

import orjson
import pytest

from core import bus
from core.errors import ConfigError, FatalError
from core.metrics import Metrics
from core.settings import load_settings
from ingestion.kite_feed import ShardState
from ingestion.zerodha_ws import ZerodhaWs, parse_args
from tests.integration.kite_harness import write_universe


class FakeFeed:
    def __init__(self, shards):
        self.states = [ShardState(i, list(s)) for i, s in enumerate(shards)]
        self.gave_up = False
        self.auth = None
        self.forced: list[int] = []

    def auth_error(self):
        return self.auth

    def force_reconnect(self, shard):
        self.forced.append(shard)
        self.states[shard].forced_reconnects += 1

    def stop(self):
        pass


class FakeProducer:
    """Acknowledges at once; counts like bus.Producer (``acked`` per topic, ``failed`` per topic and reason)."""

    def __init__(self, fail_after: int | None = None):
        self.sent: list[tuple[str, dict, bytes]] = []
        self.fail_after = fail_after
        self.acked: dict[str, int] = {}
        self.failed: dict[tuple[str, str], int] = {}

    def produce(self, topic, value, key=None, headers=None, partition=None):
        if self.fail_after is not None and len(self.sent) >= self.fail_after:
            self.fail_after = None  # like bus.Producer: the latched error is raised once
            self.failed[(topic, "_MSG_TIMED_OUT")] = self.failed.get((topic, "_MSG_TIMED_OUT"), 0) + 1
            raise bus.DeliveryError("delivery to ticks failed: broker down")
        self.sent.append((topic, orjson.loads(value), key))
        self.acked[topic] = self.acked.get(topic, 0) + 1

    def poll(self, timeout=0.0):
        pass

    def flush(self, timeout=30.0):
        pass


def _raw(token: int, volume: int) -> dict:
    return {"instrument_token": token, "mode": "quote", "last_price": 100.0, "volume_traded": volume,
            "last_traded_quantity": 1, "tradable": True}


@pytest.fixture()
def make_service(tmp_path):
    def make(*argv: str) -> tuple[ZerodhaWs, Metrics]:
        universe = tmp_path / "tokens.csv"
        write_universe(universe, 6, skip_indices=True)
        args = parse_args(["--tokens", str(universe), "--market-hours", "always", *argv])
        metrics = Metrics("zerodha_ws")
        svc = ZerodhaWs(load_settings(), metrics, args)
        svc.feed = FakeFeed(svc.shards)  # type: ignore[assignment]
        svc.producer = FakeProducer()  # type: ignore[assignment]
        return svc, metrics
    return make


def _metric(metrics: Metrics, name: str, labels: dict[str, str] | None = None) -> float:
    value = metrics.registry.get_sample_value(f"tradestack_zerodha_ws_{name}", labels or {})
    return 0.0 if value is None else value


def test_queue_overflow_drop_oldest_then_newest_ticks_produced_and_drops_counted(make_service):
    svc, metrics = make_service("--queue-size", "10", "--overflow", "drop-oldest")
    token = svc.shards[0][0]
    svc.queue.put_batch(1_000, [_raw(token, v) for v in range(25)])  # what the reactor thread does
    svc.step()
    produced = [m["volume"] for _, m, _ in svc.producer.sent]
    assert produced == list(range(15, 25))
    assert _metric(metrics, "queue_dropped_total", {"policy": "drop-oldest"}) == 15
    assert _metric(metrics, "ticks_in_total") == 25 and _metric(metrics, "ticks_out_total") == 10


def test_queue_overflow_drop_newest_then_oldest_ticks_produced(make_service):
    svc, metrics = make_service("--queue-size", "10", "--overflow", "drop-newest")
    token = svc.shards[0][0]
    svc.queue.put_batch(1_000, [_raw(token, v) for v in range(25)])
    svc.step()
    assert [m["volume"] for _, m, _ in svc.producer.sent] == list(range(10))
    assert _metric(metrics, "queue_dropped_total", {"policy": "drop-newest"}) == 15


def test_ticks_keyed_by_token_on_configured_topic_and_lag_observed(make_service):
    svc, metrics = make_service("--topic", "ticks.test")
    a, b = svc.shards[0][:2]
    svc.queue.put_batch(1_700_000_000_000, [_raw(a, 1), _raw(b, 2), _raw(a, 3)])
    svc.step()
    assert [(t, m["instrument_token"], k) for t, m, k in svc.producer.sent] == [
        ("ticks.test", a, str(a).encode()), ("ticks.test", b, str(b).encode()), ("ticks.test", a, str(a).encode())]
    assert all(m["recv_ts"] == 1_700_000_000_000 for _, m, _ in svc.producer.sent)


def test_rejected_token_when_step_then_fatal_error_and_metric(make_service):
    svc, metrics = make_service()
    svc.feed.auth = (0, "WebSocket connection upgrade failed (403 - Forbidden)")
    with pytest.raises(FatalError, match="Kite rejected the access token"):
        svc.step()
    assert _metric(metrics, "auth_failures_total") == 1


def test_delivery_error_when_producing_then_counted_and_batch_still_produced(make_service):
    svc, metrics = make_service()
    svc.producer = FakeProducer(fail_after=2)  # type: ignore[assignment]
    token = svc.shards[0][0]
    svc.queue.put_batch(1, [_raw(token, v) for v in range(5)])
    svc.step()  # must not raise
    assert _metric(metrics, "delivery_errors_total") == 1
    assert [m["volume"] for _, m, _ in svc.producer.sent] == [0, 1, 2, 3, 4]


def test_silent_shard_when_checked_then_feed_reconnect_forced(make_service):
    svc, _ = make_service("--silence-after", "1")
    svc.watchdog.connected(0, 0.0)
    svc._watch(5.0)
    assert svc.feed.forced == [0]


def test_universe_over_kite_limit_then_config_error(tmp_path):
    universe = tmp_path / "tokens.csv"
    write_universe(universe, 10)
    args = parse_args(["--tokens", str(universe), "--max-per-connection", "3"])
    with pytest.raises(ConfigError, match="at most 9"):
        ZerodhaWs(load_settings(), Metrics("zerodha_ws"), args)


def test_cli_rejects_bad_values():
    for argv in (["--queue-size", "0"], ["--overflow", "drop-random"], ["--max-per-connection", "3001"],
                 ["--mode", "depth"]):
        with pytest.raises(SystemExit) as exc:
            parse_args(argv)
        assert exc.value.code == 2
