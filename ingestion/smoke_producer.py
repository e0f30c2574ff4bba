"""Synthetic tick source for dry runs: seeded random walk -> ``ticks`` topic.

Event time follows the wall clock (1-2 ticks/s per instrument) unless
``--rate`` asks for a total ticks/s, which runs the event clock faster.
``--count`` stops after that many ticks. Runs as a supervised service with
metrics and health like every other service.

    python -m ingestion.smoke_producer [--tokens configs/tokens.csv] [--seed 7] [--rate N] [--count N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from core import bus, codec
from core.errors import ConfigError, TransientError
from core.metrics import Metrics
from core.service import Service, run_service
from core.settings import Settings
from core.topics import TICKS, all_topics
from core.universe import is_tradable, load_universe
from ingestion.synthetic import SyntheticMarket

MEAN_TICKS_PER_SEC = 1.0 / 0.75  # gaps are uniform in 0.5-1.0 s


class SmokeProducer(Service):
    """Produces synthetic ticks at the configured pace."""

    name = "smoke_producer"

    def __init__(self, settings: Settings, metrics: Metrics, args: argparse.Namespace) -> None:
        super().__init__(settings, metrics)
        tokens_path = args.tokens or settings.config_dir / "tokens.csv"
        universe = load_universe(tokens_path)
        if args.limit:
            universe = universe[: args.limit]
        instruments = [(i.instrument_token, i.tick_size, i.last_price or 100.0,
                        is_tradable(i.instrument_token), i.lot_size) for i in universe]
        self.start_wall_ms = int(time.time() * 1000)
        self.market = SyntheticMarket(instruments, args.seed, self.start_wall_ms)
        natural = len(instruments) * MEAN_TICKS_PER_SEC
        self.speed = max(1.0, args.rate / natural) if args.rate else 1.0
        self.count = args.count
        self.sent = 0
        self.producer: bus.Producer | None = None
        self.m_out = metrics.counter("ticks_out_total", "Ticks produced")
        self.m_speed = metrics.gauge("event_clock_speed", "Event-time speed vs wall clock")
        self.m_speed.set(self.speed)
        self.log.info("universe instruments=%d speed=%.1fx target_rate=%.0f/s", len(instruments),
                      self.speed, natural * self.speed)

    def start(self) -> None:
        bus.ensure_topics(self.settings.kafka_bootstrap_servers, all_topics(self.settings.kafka_partitions))
        self.producer = bus.Producer(self.settings.kafka_bootstrap_servers, **{"client.id": self.name})

    def _event_now(self) -> int:
        elapsed = time.time() * 1000 - self.start_wall_ms
        return int(self.start_wall_ms + elapsed * self.speed)

    def step(self) -> None:
        assert self.producer is not None
        until = self._event_now()
        produce = self.producer.produce
        now_ms = int(time.time() * 1000)
        n = 0
        for tick in self.market.ticks_until(until):
            tick["recv_ts"] = now_ms
            produce(TICKS, codec.dumps(tick), str(tick["instrument_token"]).encode())
            n += 1
            self.sent += 1
            if self.count and self.sent >= self.count:
                self.request_stop()
                break
        if n:
            self.producer.poll(0)
            self.m_out.inc(n)
        wait_ms = (self.market.next_due_ms() - self._event_now()) / self.speed
        self.sleep(min(0.2, max(0.0, wait_ms / 1000)))

    def stop(self) -> None:
        if self.producer is not None:
            try:
                self.producer.flush(5)  # bounded: the supervisor's stop timeout is 10 s
            except TransientError as exc:
                self.log.warning("synthetic ticks not delivered at stop: %s", exc)
        self.log.info("stopped sent=%d", self.sent)

    def heartbeat_fields(self) -> dict[str, Any]:
        return {"sent": self.sent}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    ap = argparse.ArgumentParser(prog="python -m ingestion.smoke_producer", description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=Path, help="universe CSV (default: $TRADESTACK_CONFIG_DIR/tokens.csv)")
    ap.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    ap.add_argument("--rate", type=float, default=0.0, help="total ticks/s (default: real time, 1-2/s each)")
    ap.add_argument("--count", type=int, default=0, help="stop after this many ticks (default: run forever)")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N instruments")
    args = ap.parse_args(argv)
    if args.rate < 0 or args.count < 0 or args.limit < 0:
        ap.error("--rate, --count and --limit must be >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    try:
        return run_service(lambda s, m: SmokeProducer(s, m, args), SmokeProducer.name)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
