"""Micro-benchmark of the pure bar cores: ``make bench`` (section ``bar_core``) or by hand
(``python -m tests.bench.bench_bar_core --help``).

Measures ticks/s through ``orjson.loads`` + :class:`compute.bar_builder_core.BarBuilder`
the way the service loop drives it: per poll batch, decode each message, one
``add_many``, then ``advance(now)`` and ``committable_offsets()`` (and, for
comparison, ``add`` per tick). The synthetic stream: ``--ticks`` (500k) over
``--instruments`` (200) at ``--rate-hz`` ticks/s each (10), 3 partitions, 1%
duplicates, ``exchange_ts`` jittered by up to ``--jitter-ms`` (50) so some
ticks arrive out of order; ``--depth`` adds 5-level depth (bigger JSON).

Two wall clocks: ``replay`` passes the real clock to ``advance`` (a catch-up
after a restart, where throughput matters: bars close by event time), and
``live`` passes each tick's arrival time (the wall clock runs with the data, so
quiet-instrument bookkeeping runs too). Then the 1s->1m and 1m->multi rollups
over the bars produced. Times are process CPU time (robust to a busy host).

The native variant (``compute._native.TickBarCore``, same semantics, C++ JSON decode) runs on the
same messages: ``stage_items`` per batch (copies the payloads out of the Python list, like the
Python variant's list building) and, where ``RawBatch.from_items`` works, ``stage`` on batches
built beforehand (as the librdkafka consumer hands them over: no per-message Python work).
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from compute.bar_builder_core import BarBuilder  # noqa: E402
from compute.bar_rollup import BarRollup  # noqa: E402
from compute.bars import MULTI_MINUTE_TFS, Bar  # noqa: E402
from tests.bench.harness import Section, fmt_rate, machine_notes  # noqa: E402

START_MS = 1_710_215_100_000  # 2024-03-12 09:15 IST
PARTITIONS = 3
Message = tuple[bytes, int, int, int]  # value, partition, offset, arrival ms


def make_messages(n: int, instruments: int, depth: bool, seed: int, jitter_ms: int = 50,
                  rate_hz: float = 10.0) -> list[Message]:
    """Kafka-like messages in arrival order."""
    rng = random.Random(seed)
    tokens = [100_000 + 7 * i for i in range(instruments)]
    price = {t: rng.uniform(100, 3000) for t in tokens}
    cum = {t: rng.randint(0, 100_000) for t in tokens}
    rate_per_ms = instruments * rate_hz / 1000
    offsets = [0] * PARTITIONS
    out: list[Message] = []
    t = float(START_MS)
    while len(out) < n:
        t += rng.expovariate(rate_per_ms)
        tok = rng.choice(tokens)
        price[tok] = max(1.0, price[tok] + rng.choice((-0.05, 0.0, 0.05)))
        cum[tok] += rng.randint(0, 500)
        ts = int(t) - rng.randrange(jitter_ms + 1)  # feed latency jitter: some ticks arrive out of order
        tick: dict[str, Any] = {
            "instrument_token": tok, "exchange_ts": ts, "recv_ts": int(t), "ltp": round(price[tok], 2),
            "volume": cum[tok], "last_qty": rng.randint(1, 500), "oi": None,
            "bid": round(price[tok] - 0.05, 2), "ask": round(price[tok] + 0.05, 2),
            "bid_qty": rng.randint(1, 5000), "ask_qty": rng.randint(1, 5000),
        }
        if depth:
            tick["depth"] = {
                side: [{"price": round(price[tok] + sgn * 0.05 * (k + 1), 2), "qty": rng.randint(1, 900),
                        "orders": rng.randint(1, 20)} for k in range(5)]
                for side, sgn in (("buy", -1), ("sell", 1))
            }
        body = orjson.dumps(tick)
        part = tok % PARTITIONS
        for _ in range(2 if rng.random() < 0.01 else 1):  # 1% duplicates
            out.append((body, part, offsets[part], int(t)))
            offsets[part] += 1
    return out


def bench_builder(messages: list[Message], batch: int, clock: str, batched: bool = True,
                  keep: bool = False) -> tuple[float, int, list[Bar]]:
    """CPU seconds for the whole stream, the bar count, and the bars when ``keep`` (else dropped,
    as the service drops them once produced: retaining them would only load the cyclic GC)."""
    loads = orjson.loads
    builder = BarBuilder(grace_ms=2000)
    kept: list[Bar] = []
    count = 0
    t0 = time.process_time()
    for lo in range(0, len(messages), batch):
        chunk = messages[lo:lo + batch]
        if batched:
            builder.add_many([(loads(value), part, off) for value, part, off, _ in chunk])
        else:
            for value, part, off, _ in chunk:
                builder.add(loads(value), part, off)
        now = chunk[-1][3] if clock == "live" else int(time.time() * 1000)
        out = builder.advance(now)
        count += len(out)
        if keep:
            kept += out
        builder.committable_offsets()
    out = builder.close_all()
    count += len(out)
    if keep:
        kept += out
    return time.process_time() - t0, count, kept


def native_core_class() -> Any | None:
    """``compute._native.TickBarCore``, or None when the extension is not built."""
    try:
        from compute.bar_builder_native import native_module

        return native_module().TickBarCore
    except ImportError:
        return None


def bench_native(messages: list[Message], batch: int, clock: str, prebuilt: bool = False) -> tuple[float, int]:
    """CPU seconds and bar count of the native core on the stream (decode + validate + bars)."""
    from compute.bar_builder_native import native_module

    mod = native_module()
    core = mod.TickBarCore(2000)
    batches = []
    if prebuilt:
        batches = [mod.RawBatch.from_items([(v, p, o) for v, p, o, _ in messages[lo:lo + batch]])
                   for lo in range(0, len(messages), batch)]
    count = 0
    t0 = time.process_time()
    for k, lo in enumerate(range(0, len(messages), batch)):
        chunk = messages[lo:lo + batch]
        if prebuilt:
            core.stage(batches[k], 1 << 62)
        else:
            core.stage_items([(value, part, off) for value, part, off, _ in chunk], 1 << 62)
        core.feed()
        now = chunk[-1][3] if clock == "live" else int(time.time() * 1000)
        count += len(core.advance(now))
        core.committable_offsets()
    count += len(core.close_all())
    return time.process_time() - t0, count


def bench_rollup(rollup: BarRollup, bars: list[Bar]) -> tuple[float, list[Bar]]:
    """CPU seconds to roll ``bars`` up (JSON round trip included), and the parents."""
    bodies = [orjson.dumps(bar.to_dict()) for bar in bars]
    t0 = time.process_time()
    out: list[Bar] = []
    for i, body in enumerate(bodies):
        rollup.add(orjson.loads(body), 0, i)
        if i % 200 == 0:
            out += rollup.advance(None)
    out += rollup.advance(None) + rollup.close_all()
    return time.process_time() - t0, out


def measure(ticks: int, instruments: int, rate_hz: float, jitter_ms: int, batch: int, depth: bool,
            repeat: int, seed: int) -> tuple[str, list[tuple[str, float, list[float], int]]]:
    """Every variant on one stream: (stream description, [(variant, median rate, all rates, outputs)])."""
    messages = make_messages(ticks, instruments, depth, seed, jitter_ms, rate_hz)
    avg_bytes = sum(len(m[0]) for m in messages) / len(messages)
    # The input fixture is not part of the system under test: keep the cyclic GC from
    # rescanning it on every full collection (it would not exist in the service).
    gc.collect()
    gc.freeze()
    desc = (f"{len(messages):,} ticks, {instruments} instruments at {rate_hz:g}/s, {avg_bytes:.0f} B/tick, "
            f"jitter {jitter_ms} ms, batch {batch}, median of {repeat}")
    rows: list[tuple[str, float, list[float], int]] = []

    def add(name: str, n: int, runs: list[tuple[float, int]]) -> None:
        rates = [n / cpu for cpu, _ in runs]
        rows.append((name, statistics.median(rates), rates, runs[0][1]))

    for clock, batched in (("replay", True), ("live", True), ("replay", False)):
        how = "add_many" if batched else "add"
        add(f"Python BarBuilder + orjson [{how}, {clock} clock]", len(messages),
            [bench_builder(messages, batch, clock, batched)[:2] for _ in range(repeat)])
    if native_core_class() is not None:
        for clock in ("replay", "live"):
            for how, prebuilt in (("stage_items", False), ("prebuilt RawBatch", True)):
                add(f"native TickBarCore [{how}, {clock} clock]", len(messages),
                    [bench_native(messages, batch, clock, prebuilt) for _ in range(repeat)])
    bars = bench_builder(messages, batch, "replay", True, keep=True)[2]
    runs_1m = [bench_rollup(BarRollup("1s", ["1m"]), bars) for _ in range(repeat)]
    add("rollup 1s -> 1m (child bars/s)", len(bars), [(cpu, len(out)) for cpu, out in runs_1m])
    bars_1m = runs_1m[0][1]
    runs_multi = [bench_rollup(BarRollup("1m", list(MULTI_MINUTE_TFS)), bars_1m) for _ in range(repeat)]
    add("rollup 1m -> 3m..60m (child bars/s)", len(bars_1m), [(cpu, len(out)) for cpu, out in runs_multi])
    gc.unfreeze()
    return desc, rows


def run(quick: bool = False) -> Section:
    """The ``make bench`` section: pure cores, no broker or database."""
    ticks = 100_000 if quick else 500_000
    repeat = 3 if quick else 5
    desc, rows = measure(ticks, 200, 10.0, 50, 500, False, repeat, 7)
    sec = Section("bar_core", "Bar cores: pure Python and C++ cores, no I/O (process CPU time)")
    sec.lines += [
        f"Machine: {machine_notes()}.",
        f"Stream: {desc}. Rates are inputs per CPU second (JSON decode included), "
        "medians of the runs; the native core gets batches with `stage_items` (payloads copied out of a "
        "Python list) or as prebuilt `RawBatch`es (as the librdkafka consumer hands them over).",
        "",
        "| variant | median rate | runs | outputs |",
        "|---|---:|---|---:|",
    ]
    for name, med, rates, outputs in rows:
        sec.lines.append(f"| {name} | {fmt_rate(med)} | {', '.join(fmt_rate(r) for r in rates)} | {outputs:,} |")
    return sec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=500_000)
    parser.add_argument("--instruments", type=int, default=200)
    parser.add_argument("--rate-hz", type=float, default=10.0, help="ticks/s per instrument")
    parser.add_argument("--jitter-ms", type=int, default=50,
                        help="exchange_ts = arrival - U(0, jitter): higher means more out-of-order ticks")
    parser.add_argument("--batch", type=int, default=500, help="messages per poll batch")
    parser.add_argument("--depth", action="store_true", help="add 5-level depth to every tick")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    desc, rows = measure(args.ticks, args.instruments, args.rate_hz, args.jitter_ms, args.batch, args.depth,
                         args.repeat, args.seed)
    print(f"stream: {desc}")
    for name, med, rates, outputs in rows:
        print(f"{name}: {med:,.0f}/s (runs {', '.join(f'{r:,.0f}' for r in rates)}) -> {outputs:,}")


if __name__ == "__main__":
    main()
