"""Indicator throughput: updates/s per indicator, and a two-SMA + ATR "strategy" per bar (the backtester's loop).

    python -m tests.bench.bench_indicators [--bars 200000]

Bars are the tests' slotted dataclass over a generated 1m series (tests/unit/indicator_data.py);
each figure is the best of three runs. ``run(quick)`` returns a harness Section for
``tests.bench.run_all`` should it be registered there.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from strategy.indicators import NAMES, create
from tests.unit.indicator_data import Bar, intraday_1m


def _best(fn: Any, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def measure(n_bars: int = 200_000) -> dict[str, float]:
    """updates/s per indicator (default params) and bars/s of the sma(10) + sma(30) + atr(14) loop."""
    bars: list[Bar] = intraday_1m(n_bars, seed=11).bars()
    rates: dict[str, float] = {}
    for name in NAMES:
        def one(name: str = name) -> None:
            update = create(name).update
            for b in bars:
                update(b)
        rates[name] = n_bars / _best(one)

    def strategy() -> None:
        fast, slow, atr = create("sma", period=10), create("sma", period=30), create("atr", period=14)
        above = False
        for b in bars:
            f = fast.update(b)
            s = slow.update(b)
            a = atr.update(b)
            if f is not None and s is not None and a is not None:
                above = f > s + 0.1 * a  # a decision of the usual shape, so the loop is not all calls
        del above
    rates["strategy: 2 sma + atr (bars/s)"] = n_bars / _best(strategy)
    return rates


def run(quick: bool = False) -> Any:
    """A Section for the bench harness (``docs/BENCHMARKS.md``)."""
    from tests.bench.harness import Section, machine_notes

    n = 50_000 if quick else 200_000
    rates = measure(n)
    lines = [f"{n} generated 1m bars, best of 3, pure Python ({machine_notes()}).", "",
             "| indicator | updates/s |", "|---|---:|"]
    lines += [f"| {k} | {v:,.0f} |" for k, v in rates.items()]
    return Section("indicators", "Indicator updates (strategy.indicators)", lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.bench.bench_indicators", description=__doc__.splitlines()[0])
    ap.add_argument("--bars", type=int, default=200_000)
    args = ap.parse_args(argv)
    for name, rate in measure(args.bars).items():
        print(f"{name:32s} {rate:>12,.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
