"""Bar builder throughput on the embedded broker, against the consume+decode limit and quixstreams.

One run, same stream for every contender: ``N`` JSON ticks (default 500k) of
200 instruments in one partition of ``ticks``.

- raw consume, and consume + ``orjson.loads`` / ``json.loads``: the limit any
  Python consumer of this topic has;
- tradestack: the real ``compute.bar_builder_1s`` service loop in this process
  (consume -> decode -> BarBuilder -> produce ``bars.1s`` -> flush -> COPY
  upsert to ``bars_1s`` -> commit), a fresh consumer group and database each run;
- the same 1 s OHLCV tumbling window written with quixstreams (see
  ``quix_baseline.py``; its volume is a sum of ``last_qty``).

Rates are ticks/s from the first consumed message to the last (group join
excluded; every timer starts once its first message is consumed), medians of
several runs. A second part measures bar emission
latency on a live-paced stream: wall time at which each 1 s bar was produced
minus its bucket end (the flush grace is included by design).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson

from core import bus, codec
from core.metrics import Metrics
from core.migrate import apply_migrations
from core.settings import load_settings
from ingestion.synthetic import SyntheticMarket
from tests.bench.harness import Section, embedded_broker, fmt_rate, machine_notes
from tests.bench.quix_baseline import quix_ohlcv_rate
from tests.conftest import free_port, wait_tcp

INSTRUMENTS = 200


def make_ticks(n: int, gap_ms: tuple[int, int], seed: int = 1, start_ms: int | None = None) -> list[bytes]:
    inst = [(256 * (2000 + i) + 1, 0.05, 200.0 + i, True, 1) for i in range(INSTRUMENTS)]
    m = SyntheticMarket(inst, seed=seed, start_ms=start_ms or 1_710_215_100_000, gap_ms=gap_ms)
    return [orjson.dumps(m.next_tick()) for _ in range(n)]


def produce(bootstrap: str, topic: str, payloads: list[bytes]) -> None:
    p = bus.Producer(bootstrap)
    for v in payloads:
        # key = instrument token, as ingestion does (cheap slice of the JSON prefix)
        p.produce(topic, v, v[20:27])
    p.flush(120)


def consume_rate(bootstrap: str, topic: str, n: int, decode) -> float:  # type: ignore[no-untyped-def]
    c = bus.Consumer(bootstrap, f"raw-{uuid.uuid4().hex[:8]}", [topic])
    got = len(c.poll_batch(1, 30.0))
    t0 = time.perf_counter()
    while got < n:
        msgs = c.poll_batch(10000, 1.0)
        if decode is not None:
            for m in msgs:
                decode(m.value())
        got += len(msgs)
    rate = (n - 1) / (time.perf_counter() - t0)
    c.close()
    return rate


def native_consume_rate(bootstrap: str, topic: str, n: int) -> float:
    """Msgs/s of the native librdkafka batch consumer (compute.native_tick_stream), no decode: its ceiling."""
    from compute.native_tick_stream import NativeConsumer

    c = NativeConsumer(bootstrap, f"rawn-{uuid.uuid4().hex[:8]}", [topic])
    got = len(c.poll_batch(1, 30.0))
    t0 = time.perf_counter()
    while got < n:
        got += len(c.poll_batch(10000, 1.0))
    rate = (n - 1) / (time.perf_counter() - t0)
    c.close()
    return rate


def native_decode_rate(bootstrap: str, topic: str, n: int) -> float:
    """Msgs/s of the native consumer + the C++ core's decode/validation only (``stage``, no bars)."""
    from compute.bar_builder_native import NativeBarBuilder
    from compute.native_tick_stream import NativeConsumer

    core = NativeBarBuilder()
    c = NativeConsumer(bootstrap, f"decn-{uuid.uuid4().hex[:8]}", [topic])
    got = len(c.poll_batch(1, 30.0))
    t0 = time.perf_counter()
    while got < n:
        b = c.poll_batch(10000, 1.0)
        new, bad = core.stage(b, 1 << 62)
        if bad:
            raise RuntimeError(f"bench ticks rejected: {bad[:3]}")
        got += len(b)
    rate = (n - 1) / (time.perf_counter() - t0)
    c.close()
    return rate


def builder_rate(bootstrap: str, pg: str, n: int, topic: str, engine: str = "native") -> tuple[float, int]:
    """Ticks/s of the real bar builder service loop (in this process) over the first ``n`` ticks of ``topic``."""
    import argparse as _ap

    from compute.bar_builder_1s import BarBuilderService as _Service

    class BarBuilderService(_Service):
        input_topic = topic

    dsn = f"{pg}/bench_{uuid.uuid4().hex[:8]}"
    apply_migrations(dsn)
    settings = load_settings(kafka_bootstrap_servers=bootstrap, postgres_dsn=dsn, kafka_partitions=1)
    args = _ap.Namespace(grace_ms=2000, wall_grace_ms=None, group=f"bench-{uuid.uuid4().hex[:8]}", engine=engine)
    svc = BarBuilderService(settings, Metrics("bench_builder"), args)
    svc.start()
    # Every contender's clock starts at the same point: when its first message has been consumed
    # (the group join is over). The service takes that one message with a batch of one, then runs
    # at its normal batch size; the rate counts the n - 1 messages after it, as the consume and
    # quixstreams timers do.
    batch_size = svc.batch_size
    svc.batch_size = 1
    consumed = 0
    while not consumed:
        svc.step()
        consumed = sum(svc._consumed.values())  # noqa: SLF001 - next offsets of one partition
    svc.batch_size = batch_size
    t0 = time.perf_counter()
    first = consumed
    while consumed < n:
        svc.step()
        consumed = sum(svc._consumed.values())  # noqa: SLF001
    rate = (consumed - first) / (time.perf_counter() - t0)
    bars = svc.core.bars_emitted
    svc.request_stop()
    svc.stop()
    return rate, bars


@contextmanager
def embedded_pg() -> Iterator[str]:
    """A throwaway Postgres with the stack's durability settings (fsync and synchronous commit on)."""
    import tempfile

    from orchestrator.pg_launcher import start_embedded_postgres, stop

    port = free_port()
    with tempfile.TemporaryDirectory() as d:
        proc = start_embedded_postgres(Path(d) / "pg", port, fast=False)
        wait_tcp(port, 60)
        try:
            yield f"postgresql://tradestack@127.0.0.1:{port}"
        finally:
            stop(proc)


def emission_latency(bootstrap: str, pg: str, seconds: float = 20.0) -> tuple[float, float, int]:
    """p50/p99 seconds from 1 s bucket end to the bar's produce time, live-paced 200 instruments."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    dsn = f"{pg}/lat_{uuid.uuid4().hex[:8]}"
    apply_migrations(dsn)
    import os
    import tempfile

    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=bootstrap, POSTGRES_DSN=dsn, PYTHONPATH=str(ROOT),
               METRICS_PORT="0", KAFKA_PARTITIONS="1")
    logs = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    builder = subprocess.Popen([sys.executable, "-m", "compute.bar_builder_1s"], env=env, cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=(logs / "builder.log").open("wb"))
    time.sleep(6)  # group join before the live feed starts
    live_from_ms = int(time.time() * 1000)
    producer = subprocess.Popen([sys.executable, "-m", "ingestion.smoke_producer"], env=env,
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=(logs / "producer.log").open("wb"))
    time.sleep(seconds)
    producer.terminate()
    producer.wait(20)
    time.sleep(5)
    builder.terminate()
    builder.wait(30)
    c = bus.Consumer(bootstrap, f"lat-{uuid.uuid4().hex[:8]}", ["bars.1s"])
    lat: list[float] = []
    idle = 0
    deadline = time.monotonic() + 30  # the group join comes first
    while idle < 3 and time.monotonic() < deadline:
        msgs = c.poll_batch(10000, 1.0)
        if lat or msgs:
            idle = 0 if msgs else idle + 1
        for m in msgs:
            bar = codec.loads(m.value())
            if bar["ts"] < live_from_ms:
                continue  # bars of the throughput runs (historical event times)
            lat.append((m.timestamp()[1] - (bar["ts"] + 1000)) / 1000)
    c.close()
    lat.sort()
    if not lat:
        raise RuntimeError(f"no bars produced in the latency run; logs in {logs}")
    return lat[len(lat) // 2], lat[int(len(lat) * 0.99)], len(lat)


def run(quick: bool = False) -> Section:
    n = 100_000 if quick else 500_000
    runs = 1 if quick else 3
    sec = Section("bars", "Bars: 1 s bar builder vs the consume+decode limit and quixstreams")
    densities = [("dense: ~10 ticks/s per instrument", (50, 150))]
    if not quick:
        densities.append(("Kite-like: ~1.3 ticks/s per instrument", (500, 1000)))
    rows = []
    with embedded_broker() as bootstrap, embedded_pg() as pg:
        for label, gap in densities:
            payloads = make_ticks(n, gap)
            topic = f"bench.ticks.{uuid.uuid4().hex[:6]}"
            bus.ensure_topics(bootstrap, {topic: 1})
            produce(bootstrap, topic, payloads)
            raw = statistics.median(consume_rate(bootstrap, topic, n, None) for _ in range(runs))
            dec_or = statistics.median(consume_rate(bootstrap, topic, n, orjson.loads) for _ in range(runs))
            dec_js = statistics.median(consume_rate(bootstrap, topic, n, json.loads) for _ in range(runs))
            raw_native = statistics.median(native_consume_rate(bootstrap, topic, n) for _ in range(runs))
            dec_native = statistics.median(native_decode_rate(bootstrap, topic, n) for _ in range(runs))
            nat_runs = [builder_rate(bootstrap, pg, n, topic, "native") for _ in range(runs)]
            py_runs = [builder_rate(bootstrap, pg, n, topic, "python") for _ in range(runs)]
            if nat_runs[0][1] != py_runs[0][1]:
                raise RuntimeError(f"engines disagree on the bar count: {nat_runs[0][1]} vs {py_runs[0][1]}")
            nat = statistics.median(r for r, _ in nat_runs)
            py = statistics.median(r for r, _ in py_runs)
            q_rate = quix_ohlcv_rate(bootstrap, topic, n)
            rows.append((label, raw, dec_or, dec_js, raw_native, dec_native, nat, [r for r, _ in nat_runs], py,
                         nat_runs[0][1], q_rate))
    # A fresh broker for the live part: the in-memory one now holds millions of messages.
    with embedded_broker() as bootstrap, embedded_pg() as pg:
        p50, p99, nbars = emission_latency(bootstrap, pg, 15.0 if quick else 25.0)
    sec.lines += [
        f"Machine: {machine_notes()}. Broker: Tansu (embedded, in-memory), one partition; Postgres 18 embedded.",
        f"{n:,} JSON ticks, {INSTRUMENTS} instruments; medians of {runs} run(s) for consume and builder, "
        "one quixstreams run (it is slow).",
        "",
        "| stream | raw consume (confluent-kafka) | consume+orjson | consume+json | raw consume (native batches) "
        "| native consume+decode | **bar builder, native engine** | native runs | bar builder, python engine "
        "| bars out | quixstreams tumbling OHLCV | native / quixstreams | native / consume+orjson "
        "| native / native consume+decode |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, raw, dec_or, dec_js, raw_native, dec_native, nat, nat_all, py, bars, q_rate in rows:
        sec.lines.append(
            f"| {label} | {fmt_rate(raw)} | {fmt_rate(dec_or)} | {fmt_rate(dec_js)} | {fmt_rate(raw_native)} | "
            f"{fmt_rate(dec_native)} | **{fmt_rate(nat)}** | {', '.join(fmt_rate(r) for r in nat_all)} | "
            f"{fmt_rate(py)} | {bars:,} | {fmt_rate(q_rate)} | {nat / q_rate:.1f}x | {nat / dec_or:.2f} | "
            f"{nat / dec_native:.2f} |")
    sec.lines += [
        "",
        "Rates in ticks/s. Native consume+decode is the native consumer plus the C++ core's JSON decode and "
        "validation of every tick (`stage`, no bars): the limit of the native engine. "
        "A builder figure is the whole service loop in one process: consume, decode, "
        "build, produce the bars, flush, COPY-upsert them to Postgres, commit. The native engine "
        "(default) reads librdkafka batches straight into the C++ core; the python engine is "
        "confluent-kafka + orjson + compute.bar_builder_core.BarBuilder. Both produce the same bars (checked here "
        "by count, in tests row by row).",
        "",
        f"Emission latency (live-paced smoke producer over configs/tokens.csv, {nbars:,} bars, default engine): "
        f"wall time from the end of a 1 s bucket to the bar's produce time: p50 {p50:.2f} s, p99 {p99:.2f} s. "
        "The 2 s flush grace (wait for out-of-order ticks) is most of it by design: a bar closes when a tick "
        "2 s past its end arrives, or after 2 s of wall time for a quiet instrument.",
    ]
    return sec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    print(run(quick=ap.parse_args().quick).render())


if __name__ == "__main__":
    main()
