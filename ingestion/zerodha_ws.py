"""Kite WebSocket -> ``ticks`` topic: the market data ingestion service.

Wiring only (logic lives in the pure siblings):

- ``core.universe`` loads ``tokens.csv``; :func:`ingestion.shards.shard_tokens`
  spreads it over up to 3 connections of up to 3000 instruments (more than
  9000 is a ConfigError, exit 2);
- :class:`ingestion.kite_feed.KiteFeed` runs one KiteTicker per shard (FULL
  mode by default) on the Twisted reactor thread and hands frames to a bounded
  :class:`ingestion.tick_queue.TickQueue` (never blocks the reactor; overflow
  policy drop-oldest by default, counted);
- this loop (main thread) drains the queue, converts with
  :func:`ingestion.kite_ticks.to_tick` and produces to Kafka keyed by
  instrument_token (idempotent producer: per-instrument order is kept);
- :class:`ingestion.watchdog.FeedWatchdog` force-reconnects a connection that
  went silent without closing and reports stale instruments in market hours;
- a rejected access token (HTTP 403 on the upgrade) is one fatal line, a
  metric, and exit code 3 (the supervisor does not hot-loop on it).

    python -m ingestion.zerodha_ws [--tokens configs/tokens.csv] [--mode full] [--queue-size 50000]
        [--overflow drop-oldest|drop-newest] [--market-hours NSE|HH:MM-HH:MM|always] [--stale-after 60]
        [--silence-after 15] [--max-per-connection 3000] [--reconnect-max-delay 5] [--topic ticks]

Env: KITE_API_KEY, KITE_ACCESS_TOKEN, KITE_WS_ROOT, KAFKA_BOOTSTRAP_SERVERS,
METRICS_PORT, TRADESTACK_CONFIG_DIR (see DESIGN section 11).

Metrics (prefix ``tradestack_zerodha_ws_``): ``ticks_in_total``, ``ticks_out_total`` (acknowledged),
``ticks_lost_total{reason}``,
``queue_depth``, ``queue_capacity``, ``queue_dropped_total{policy}``,
``ws_connected{shard}``, ``ws_reconnects_total{shard}``,
``ws_reconnect_attempts_total{shard}``, ``watchdog_forced_reconnects_total{shard}``,
``stale_instruments``, ``market_open``, ``auth_failures_total``,
``delivery_errors_total``, ``exchange_to_kafka_lag_seconds`` (histogram; Kite's
exchange time has 1 s resolution, so values carry up to 1 s of truncation).
Exit codes: 0 on SIGTERM, 2 bad config (e.g. more than 9000 instruments), 3
access token rejected, 1 KiteTicker gave up reconnecting (the supervisor
restarts the process: the Twisted reactor cannot be restarted in-process).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from core import bus, codec
from core.cli import positive
from core.errors import ConfigError, FatalError, TradestackError
from core.metrics import Metrics
from core.service import Service, run_service
from core.settings import Settings
from core.topics import TICKS, all_topics
from core.universe import load_universe
from ingestion.kite_feed import MODES, KiteFeed
from ingestion.kite_ticks import to_tick
from ingestion.shards import KITE_MAX_CONNECTIONS, KITE_MAX_PER_CONNECTION, shard_tokens
from ingestion.tick_queue import POLICIES, TickQueue
from ingestion.watchdog import FeedWatchdog, MarketHours

BATCH = 5000
WATCHDOG_EVERY_S = 1.0
STALE_LOG_EVERY_S = 60.0
#: Delivery errors no retry can cure (not authorised, message too large, bad config) in a row,
#: with nothing acknowledged in between, before the service stops (FatalError, exit 3).
PERMANENT_ERRORS_MAX = 3
LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)


class FeedLost(TradestackError):
    """KiteTicker gave up reconnecting: exit non-zero so the supervisor restarts us (fresh reactor)."""


class ZerodhaWs(Service):
    """Kite ticks -> Kafka ``ticks``."""

    name = "zerodha_ws"

    def __init__(self, settings: Settings, metrics: Metrics, args: argparse.Namespace) -> None:
        super().__init__(settings, metrics)
        tokens_path = args.tokens or settings.config_dir / "tokens.csv"
        universe = load_universe(tokens_path)
        self.shards = shard_tokens([i.instrument_token for i in universe], args.max_per_connection,
                                   KITE_MAX_CONNECTIONS)
        self.queue = TickQueue(args.queue_size, args.overflow)
        self.watchdog = FeedWatchdog(self.shards, MarketHours.parse(args.market_hours),
                                     args.stale_after, args.silence_after)
        self.args = args
        self.topic: str = args.topic
        self.feed: KiteFeed | None = None
        self.producer: bus.Producer | None = None
        self._keys: dict[int, bytes] = {}
        self._synced: dict[tuple[str, int], int] = {}
        self._next_watch = 0.0
        self._stale_logged_at = 0.0
        self._stale_last = 0
        self.produced = 0
        self._init_metrics(metrics)
        self.log.info("universe file=%s instruments=%d connections=%s mode=%s queue=%d overflow=%s",
                      tokens_path, len(universe), "+".join(str(len(s)) for s in self.shards), args.mode,
                      args.queue_size, args.overflow)

    def _init_metrics(self, m: Metrics) -> None:
        self.m_in = m.counter("ticks_in_total", "Ticks received from the Kite WebSocket")
        self.m_out = m.counter("ticks_out_total", "Ticks Kafka acknowledged")
        self.m_lost = m.counter("ticks_lost_total", "Ticks received but never delivered to Kafka", ["reason"])
        self._acked_seen = 0
        self._lost_seen: dict[str, int] = {}
        self._permanent_errors = 0
        self._abandoned = 0  # ticks never offered to Kafka because an incurable error stopped us
        self.m_drop = m.counter("queue_dropped_total", "Ticks dropped by the queue overflow policy", ["policy"])
        self.m_depth = m.gauge("queue_depth", "Ticks waiting between the WebSocket and Kafka")
        m.gauge("queue_capacity", "Queue capacity in ticks").set(self.queue.capacity)
        self.m_reconn = m.counter("ws_reconnects_total", "WebSocket reconnections (successful)", ["shard"])
        self.m_attempts = m.counter("ws_reconnect_attempts_total", "WebSocket reconnect attempts", ["shard"])
        self.m_forced = m.counter("watchdog_forced_reconnects_total",
                                  "Reconnects forced by the watchdog on a silent connection", ["shard"])
        self.m_connected = m.gauge("ws_connected", "1 while the shard's WebSocket is open", ["shard"])
        self.m_stale = m.gauge("stale_instruments", "Instruments without a tick for --stale-after s (market hours)")
        self.m_market = m.gauge("market_open", "1 inside the configured market hours")
        self.m_auth = m.counter("auth_failures_total", "Access token rejected by Kite (403): needs a new token")
        self.m_deliv = m.counter("delivery_errors_total", "Kafka delivery failures reported by the producer")
        self.m_lag = m.histogram("exchange_to_kafka_lag_seconds",
                                 "Exchange timestamp (1 s resolution) to produce time", buckets=LAG_BUCKETS)
        for st in range(len(self.shards)):
            for c in (self.m_reconn, self.m_attempts, self.m_forced):
                c.labels(str(st))
            self.m_connected.labels(str(st)).set(0)
        self.m_drop.labels(self.queue.policy)

    # -- lifecycle ----------------------------------------------------------------
    def start(self) -> None:
        bootstrap = self.settings.kafka_bootstrap_servers
        topics = all_topics(self.settings.kafka_partitions)
        topics.setdefault(self.topic, self.settings.kafka_partitions)
        bus.ensure_topics(bootstrap, topics)
        if self.producer is None:
            self.producer = bus.Producer(bootstrap, **{"client.id": self.name})
        s = self.settings
        self.feed = KiteFeed(s.kite_api_key.get_secret_value(), s.kite_access_token.get_secret_value(),
                             s.kite_ws_root, self.shards, self.queue, self.watchdog, mode=self.args.mode,
                             reconnect_max_delay=self.args.reconnect_max_delay)
        self.feed.start()
        self.log.info("feed started root=%s connections=%d", s.kite_ws_root, len(self.shards))

    def step(self) -> None:
        assert self.feed is not None and self.producer is not None
        self._check_fatal()
        items = self.queue.drain(BATCH, timeout=0.2)
        if items:
            self._produce(items)
        self.producer.poll(0)
        self._sync_delivery()
        now = time.time()
        if now >= self._next_watch:
            self._next_watch = now + WATCHDOG_EVERY_S
            self._watch(now)
            self._sync_metrics()

    def _check_fatal(self) -> None:
        assert self.feed is not None
        auth = self.feed.auth_error()
        if auth is not None:
            shard, reason = auth
            self.m_auth.inc()
            how = "HTTP 403 on the WebSocket upgrade" if "403" in reason else f"server closed: {reason[:80]}"
            raise FatalError(f"Kite rejected the access token ({how}, shard {shard}): "
                             "token expired or invalid; generate a new KITE_ACCESS_TOKEN and restart")
        if self.feed.gave_up:
            raise FeedLost("Kite WebSocket reconnect attempts exhausted; exiting so the supervisor restarts us")

    def _produce(self, items: list[tuple[int, Any]]) -> None:
        assert self.producer is not None
        produce, dumps, keys, topic = self.producer.produce, codec.dumps, self._keys, self.topic
        now_ms = int(time.time() * 1000)
        observe = self.m_lag.observe
        tokens = []
        n = 0
        for i, (recv_ms, raw) in enumerate(items):
            tick = to_tick(raw, recv_ms)
            token = tick["instrument_token"]
            key = keys.get(token)
            if key is None:
                key = keys[token] = str(token).encode()
            payload = dumps(tick)
            try:
                produce(topic, payload, key)
            except bus.DeliveryError as exc:
                # An earlier message was not delivered (it is lost: a live feed cannot be replayed; the
                # producer counted it). Say it and go on: the error is cleared, this tick is queued now.
                self.m_deliv.inc()
                self.log.error("kafka delivery failed: %s", exc)
                self._give_up_if_permanent(exc, len(items) - i)
                try:
                    produce(topic, payload, key)
                except bus.DeliveryError as again:  # this tick is lost too (counted by the producer)
                    self.log.error("kafka produce failed: %s", again)
                    self._give_up_if_permanent(again, len(items) - i - 1)
                    continue
            n += 1
            tokens.append(token)
            if raw.get("exchange_timestamp") is not None:
                observe(max(0.0, (now_ms - tick["exchange_ts"]) / 1000.0))
        self.produced += n
        self._sync_delivery()
        self.watchdog.ticks(tokens, now_ms / 1000.0)

    def _give_up_if_permanent(self, exc: bus.DeliveryError, unsent: int) -> None:
        """Stop (FatalError, exit 3) after :data:`PERMANENT_ERRORS_MAX` incurable errors in a row.

        ``unsent`` ticks of the current batch are then never offered to Kafka: counted lost
        (``abandoned``), like what is still queued when the service stops.
        """
        if not exc.permanent:
            return
        self._permanent_errors += 1
        if self._permanent_errors < PERMANENT_ERRORS_MAX:
            return
        self._abandoned += unsent
        self._sync_delivery()
        name = exc.kafka_error.name() if exc.kafka_error is not None else "?"
        raise FatalError(f"kafka refuses ticks for {self.topic} ({name}, {self._permanent_errors} times in a row, "
                         f"no retry can cure it): {exc}")

    def _sync_delivery(self) -> None:
        """``ticks_out`` = ticks Kafka acknowledged; ``ticks_lost{reason}`` = every tick that never will be."""
        p = self.producer
        if p is None:
            return
        acked = p.acked.get(self.topic, 0)
        if acked > self._acked_seen:
            self.m_out.inc(acked - self._acked_seen)
            self._acked_seen = acked
            self._permanent_errors = 0  # Kafka takes ticks again
        lost = {reason: n for (topic, reason), n in p.failed.items() if topic == self.topic}
        lost["queue_overflow"] = self.queue.dropped
        lost["abandoned"] = self._abandoned
        for reason, n in lost.items():
            seen = self._lost_seen.get(reason, 0)
            if n > seen:
                self.m_lost.labels(reason).inc(n - seen)
                self._lost_seen[reason] = n

    def _watch(self, now: float) -> None:
        assert self.feed is not None
        report = self.watchdog.check(now)
        self.m_market.set(1 if report.market_open else 0)
        for shard in report.silent_shards:
            self.log.warning("watchdog: connection silent for %.0fs, forcing reconnect shard=%d",
                             self.watchdog.silence_after_s, shard)
            self.feed.force_reconnect(shard)
        n_stale = len(report.stale)
        self.m_stale.set(n_stale)
        changed = n_stale != self._stale_last
        if n_stale and (changed or now - self._stale_logged_at >= STALE_LOG_EVERY_S):
            sample = ",".join(str(t) for t in report.stale[:10])
            self.log.warning("watchdog: stale instruments=%d of %d (no tick for %.0fs) e.g. %s",
                             n_stale, len(self.watchdog.tokens), self.watchdog.stale_after_s, sample)
            self._stale_logged_at = now
        elif changed and not n_stale:
            self.log.info("watchdog: no stale instruments")
        self._stale_last = n_stale

    def _sync_metrics(self) -> None:
        assert self.feed is not None
        self.m_depth.set(len(self.queue))
        self._inc("in", 0, self.m_in, self.queue.received)
        self._inc("drop", 0, self.m_drop.labels(self.queue.policy), self.queue.dropped)
        for st in self.feed.states:
            label = str(st.index)
            self.m_connected.labels(label).set(1 if st.connected else 0)
            self._inc("reconn", st.index, self.m_reconn.labels(label), st.reconnects)
            self._inc("attempts", st.index, self.m_attempts.labels(label), st.reconnect_attempts)
            self._inc("forced", st.index, self.m_forced.labels(label), st.forced_reconnects)

    def _inc(self, what: str, idx: int, counter: Any, total: int) -> None:
        """Counters live on the reactor side as plain ints; export the increase since last sync."""
        last = self._synced.get((what, idx), 0)
        if total > last:
            counter.inc(total - last)
            self._synced[(what, idx)] = total

    def stop(self) -> None:
        if self.feed is not None:
            self.feed.stop()
        # Whatever reached the queue goes out before we leave.
        if self.producer is not None:
            rest = self.queue.drain(len(self.queue) + 1)
            if rest and self._permanent_errors >= PERMANENT_ERRORS_MAX:
                self._abandoned += len(rest)  # Kafka refuses them: do not try again on the way out
            elif rest:
                self._produce(rest)
            try:
                self.producer.flush(10)
            except bus.DeliveryError as exc:
                self.log.error("final flush incomplete: %s", exc)
            self._sync_delivery()
        self._sync_metrics_safe()
        # Every received tick is acknowledged or counted lost (queue overflow included) by now.
        by_reason = ",".join(f"{r}:{n}" for r, n in sorted(self._lost_seen.items())) or "none"
        self.log.info("stopped received=%d acknowledged=%d lost=%d lost_by_reason=%s queued=%d produced=%d",
                      self.queue.received, self._acked_seen, sum(self._lost_seen.values()), by_reason,
                      len(self.queue), self.produced)

    def _sync_metrics_safe(self) -> None:
        if self.feed is not None:
            self._sync_metrics()

    def health(self) -> tuple[bool, dict[str, Any]]:
        ok, info = super().health()
        states = self.feed.states if self.feed else []
        info.update(connections=len(self.shards), connected=sum(s.connected for s in states),
                    queued=len(self.queue), stale=self._stale_last)
        return ok, info

    def heartbeat_fields(self) -> dict[str, Any]:
        states = self.feed.states if self.feed else []
        return {"received": self.queue.received, "produced": self.produced, "queued": len(self.queue),
                "dropped": self.queue.dropped, "connected": sum(s.connected for s in states),
                "reconnects": sum(s.reconnects for s in states), "stale": self._stale_last}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options (wiring comes from the environment)."""
    ap = argparse.ArgumentParser(prog="python -m ingestion.zerodha_ws", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=Path, help="universe CSV (default: $TRADESTACK_CONFIG_DIR/tokens.csv)")
    ap.add_argument("--topic", default=TICKS, help=f"Kafka topic to produce to (default {TICKS})")
    ap.add_argument("--mode", choices=MODES, default="full", help="Kite streaming mode (default full)")
    ap.add_argument("--queue-size", type=positive(int), default=50_000,
                    help="ticks buffered between the WebSocket thread and Kafka; a parsed full-mode tick "
                         "takes ~3.5 KB, so 50000 is ~175 MB at worst (default 50000)")
    ap.add_argument("--overflow", choices=POLICIES, default="drop-oldest",
                    help="what a full queue drops; it never blocks the WebSocket (default drop-oldest)")
    ap.add_argument("--market-hours", default=os.environ.get("INGEST_MARKET_HOURS", "NSE"),
                    help="when the staleness watchdog expects ticks: an exchange of configs/sessions.yaml "
                         "(its sessions and holidays), an IST window HH:MM-HH:MM[/daily] or 'always' "
                         "(env INGEST_MARKET_HOURS; default NSE)")
    ap.add_argument("--stale-after", type=positive(float), default=60.0,
                    help="seconds without a tick before an instrument counts as stale, market hours (default 60)")
    ap.add_argument("--silence-after", type=positive(float), default=15.0,
                    help="seconds without frames (in market hours: without ticks) before forcing a reconnect "
                         "(default 15)")
    ap.add_argument("--max-per-connection", type=positive(int), default=KITE_MAX_PER_CONNECTION,
                    help="instruments per WebSocket connection; Kite allows 3000 x 3 connections (default 3000)")
    ap.add_argument("--reconnect-max-delay", type=positive(int), default=5,
                    help="cap of KiteTicker's reconnect backoff in seconds, at least 5 (default 5)")
    args = ap.parse_args(argv)
    if args.max_per_connection > KITE_MAX_PER_CONNECTION:
        ap.error(f"--max-per-connection cannot exceed Kite's limit of {KITE_MAX_PER_CONNECTION}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    # KiteTicker makes naive local datetimes; pin a zone without DST so they map back exactly.
    os.environ["TZ"] = "Asia/Kolkata"
    time.tzset()
    # KiteTicker logs every close/retry at ERROR; we report those ourselves, one line each.
    logging.getLogger("kiteconnect.ticker").setLevel(logging.CRITICAL)
    try:
        MarketHours.parse(args.market_hours)
        return run_service(lambda s, m: ZerodhaWs(s, m, args), ZerodhaWs.name)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
