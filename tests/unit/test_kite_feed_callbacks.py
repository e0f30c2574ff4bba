"""KiteFeed's KiteTicker callbacks, driven by hand (no reactor, no network)."""

from __future__ import annotations

from ingestion.kite_feed import KiteFeed
from ingestion.tick_queue import TickQueue
from ingestion.watchdog import FeedWatchdog, MarketHours


class FakeTicker:
    def __init__(self, api_key, access_token, **kw):
        self.kw = kw
        self.ws = None


class FakeWs:
    def __init__(self):
        self.sent: list[tuple] = []

    def subscribe(self, tokens):
        self.sent.append(("subscribe", list(tokens)))

    def set_mode(self, mode, tokens):
        self.sent.append(("mode", mode, list(tokens)))


def _feed(queue_size: int = 100) -> tuple[KiteFeed, list[float]]:
    now = [1000.0]
    shards = [[11, 12], [13]]
    wd = FeedWatchdog(shards, MarketHours.parse("always"), 60, 5, now=now[0])
    feed = KiteFeed("k", "t", "ws://x", shards, TickQueue(queue_size), wd, ticker_factory=FakeTicker,
                    clock=lambda: now[0])
    return feed, now


def test_connect_when_first_and_again_then_subscribes_full_mode_and_counts_reconnects():
    feed, _ = _feed()
    t = feed.tickers[1]
    ws = FakeWs()
    t.on_connect(ws, None)
    t.on_close(ws, 1006, "connection was closed uncleanly (peer dropped the TCP connection)")
    t.on_reconnect(ws, 1)
    t.on_connect(ws, None)
    assert ws.sent == [("subscribe", [13]), ("mode", "full", [13])] * 2
    st = feed.states[1]
    assert (st.connects, st.reconnects, st.reconnect_attempts, st.connected) == (2, 1, 1, True)
    assert feed.tickers[0].kw["reconnect_max_delay"] == 5 and feed.tickers[0].kw["reconnect_max_tries"] == 300


def test_ticks_when_received_then_queued_with_receive_time_and_watchdog_noted():
    feed, now = _feed(queue_size=2)
    t = feed.tickers[0]
    t.on_connect(FakeWs(), None)
    now[0] = 1004.0
    t.on_message(None, b"\x00", True)  # heartbeat
    t.on_message(None, b"x" * 50, True)
    t.on_ticks(None, [{"instrument_token": 11}, {"instrument_token": 12}, {"instrument_token": 11}])
    assert feed.states[0].frames == 2 and feed.states[0].ticks == 3 and feed.states[0].dropped == 1
    assert [r for r, _ in feed.queue.drain(10)] == [1_004_000, 1_004_000]
    now[0] = 1008.0
    assert feed.watchdog.check(now[0]).silent_shards == []  # data 4 s ago, limit 5


def test_refused_upgrade_403_when_closed_then_auth_error_latched():
    feed, _ = _feed()
    t = feed.tickers[0]
    t.on_error(None, 1006, "connection was closed uncleanly (WebSocket connection upgrade failed (403 - Forbidden))")
    t.on_close(None, 1006, "connection was closed uncleanly (WebSocket connection upgrade failed (403 - Forbidden))")
    shard, reason = feed.auth_error()
    assert shard == 0 and "403" in reason


def test_server_close_for_expired_token_then_auth_error_latched():
    feed, _ = _feed()
    t = feed.tickers[1]
    t.on_connect(FakeWs(), None)
    t.on_close(None, 1008, "Incorrect `api_key` or `access_token`.")
    assert feed.auth_error() == (1, "Incorrect `api_key` or `access_token`.")


def test_ordinary_disconnect_and_server_error_message_are_not_auth_errors():
    feed, _ = _feed()
    t = feed.tickers[0]
    t.on_connect(FakeWs(), None)
    t.on_error(None, 0, "invalid message: xyz")
    t.on_close(None, 1001, "going away")
    assert feed.auth_error() is None and not feed.states[0].connected


def test_no_more_reconnects_then_feed_gave_up():
    feed, _ = _feed()
    feed.tickers[0].on_noreconnect(None)
    assert feed.gave_up
