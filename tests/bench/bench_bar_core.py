"""Micro-benchmark of the pure bar cores (not a test): ``python tests/bench/bench_bar_core.py``.

Measures ticks/s through ``orjson.loads`` + :class:`compute.tick_to_bar.BarBuilder`
(``add_many`` per poll batch, and ``add`` per tick) with an ``advance(now)`` +
``committable_offsets()`` every batch, like the service loop, over a synthetic stream (default 500k ticks, 200 instruments,
``--rate-hz`` ticks/s each (default 10), 3 partitions, 1% duplicates, exchange_ts jittered by up to
``--jitter-ms`` so some ticks arrive out of order). Then the
1s->1m and 1m->multi rollups over the bars it produced. Prints one line per
stage. Times are process CPU time (the figure is per core, robust to a busy host); ``--depth`` adds 5-level market depth to every tick (bigger JSON).
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from compute.bar_rollup import BarRollup  # noqa: E402
from compute.bars import MULTI_MINUTE_TFS  # noqa: E402
from compute.tick_to_bar import BarBuilder  # noqa: E402

START_MS = 1_710_215_100_000  # 2024-03-12 09:15 IST


def make_payloads(n: int, instruments: int, depth: bool, seed: int,
                  jitter_ms: int = 50, rate_hz: float = 10.0) -> list[tuple[bytes, int, int]]:
    """``(json_bytes, partition, arrival_ms)`` in arrival order."""
    rng = random.Random(seed)
    tokens = [100_000 + 7 * i for i in range(instruments)]
    price = {t: rng.uniform(100, 3000) for t in tokens}
    cum = {t: rng.randint(0, 100_000) for t in tokens}
    rate_per_ms = instruments * rate_hz / 1000
    out: list[tuple[bytes, int, int]] = []
    t = float(START_MS)
    for _ in range(n):
        t += rng.expovariate(rate_per_ms)
        tok = rng.choice(tokens)
        price[tok] = max(1.0, price[tok] + rng.choice((-0.05, 0.0, 0.05)))
        cum[tok] += rng.randint(0, 500)
        ts = int(t) - rng.randrange(jitter_ms + 1)  # feed latency jitter: some ticks arrive out of order
        tick = {
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
        out.append((body, tok % 3, int(t)))
        if rng.random() < 0.01:
            out.append((body, tok % 3, int(t)))
    return out


def bench_builder(payloads: list[tuple[bytes, int, int]], batch: int, batched: bool = True) -> tuple[float, list]:
    """Seconds of CPU for the whole stream, and the bars. ``batched`` uses ``add_many`` per poll batch."""
    loads = orjson.loads
    builder = BarBuilder(grace_ms=2000)
    offsets = [0, 0, 0]
    bars = []
    t0 = time.process_time()
    if batched:
        add_many = builder.add_many
        for lo in range(0, len(payloads), batch):
            chunk = payloads[lo:lo + batch]
            items = []
            for body, part, _ in chunk:
                items.append((loads(body), part, offsets[part]))
                offsets[part] += 1
            add_many(items)
            bars += builder.advance(chunk[-1][2])
            builder.committable_offsets()
    else:
        add = builder.add
        for i, (body, part, arrival) in enumerate(payloads, 1):
            add(loads(body), part, offsets[part])
            offsets[part] += 1
            if i % batch == 0:
                bars += builder.advance(arrival)
                builder.committable_offsets()
    bars += builder.close_all()
    elapsed = time.process_time() - t0
    return elapsed, bars


def bench_rollup(rollup: BarRollup, bars: list) -> tuple[float, list]:
    t0 = time.process_time()
    out = []
    for i, bar in enumerate(bars):
        rollup.add(orjson.loads(orjson.dumps(bar.to_dict())), 0, i)
        if i % 200 == 0:
            out += rollup.advance(None)
    out += rollup.advance(None) + rollup.close_all()
    return time.process_time() - t0, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=500_000)
    parser.add_argument("--instruments", type=int, default=200)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--depth", action="store_true", help="add 5-level depth to every tick")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rate-hz", type=float, default=10.0, help="ticks/s per instrument")
    parser.add_argument("--jitter-ms", type=int, default=50,
                        help="exchange_ts = arrival - U(0, jitter): higher means more out-of-order ticks")
    args = parser.parse_args()

    payloads = make_payloads(args.ticks, args.instruments, args.depth, args.seed, args.jitter_ms, args.rate_hz)
    avg_bytes = sum(len(p[0]) for p in payloads) / len(payloads)
    # The input fixture (500k tuples) is not part of the system under test: keep the cyclic
    # GC from rescanning it on every full collection, as it would not exist in the service.
    gc.collect()
    gc.freeze()
    bars: list = []
    for batched in (True, False):
        best = min(bench_builder(payloads, args.batch, batched)[0] for _ in range(args.repeat))
        _, bars = bench_builder(payloads, args.batch, batched)
        how = f"add_many per {args.batch}-tick batch" if batched else "add() per tick"
        print(f"bar_builder_1s [{how}]: {len(payloads) / best:,.0f} ticks/s ({len(payloads):,} ticks, "
              f"{args.instruments} instruments at {args.rate_hz:g}/s, {avg_bytes:.0f} B/tick, jitter {args.jitter_ms} ms, "
              f"orjson.loads incl., "
              f"best of {args.repeat}: {best:.3f} s CPU) -> {len(bars):,} bars")
    elapsed, bars_1m = bench_rollup(BarRollup("1s", ["1m"]), bars)
    print(f"rollup 1s->1m: {len(bars) / elapsed:,.0f} child bars/s ({len(bars):,} -> {len(bars_1m):,})")
    elapsed, multi = bench_rollup(BarRollup("1m", list(MULTI_MINUTE_TFS)), bars_1m)
    print(f"rollup 1m->3m..60m: {len(bars_1m) / elapsed:,.0f} child bars/s ({len(bars_1m):,} -> {len(multi):,})")


if __name__ == "__main__":
    main()
