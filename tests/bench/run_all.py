"""Run the benchmarks and write their sections into docs/BENCHMARKS.md (``make bench``).

    python -m tests.bench.run_all [--only bus,...] [--quick] [--write docs/BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from tests.bench.harness import write_sections
from tests.bench.quix_baseline import require_quixstreams

BENCHES = {
    "bus": "tests.bench.bench_bus",
    "ingestion": "tests.bench.bench_ingestion",
    "bars": "tests.bench.bench_bars",
    "bar_core": "tests.bench.bench_bar_core",
    "broker_memory": "tests.bench.bench_broker_memory",  # the whole stack on make up's ports, ~7 min
    "indicators": "tests.bench.bench_indicators",
    "strategy": "tests.bench.bench_strategy",
    "risk": "tests.bench.bench_risk",
    "matcher": "tests.bench.bench_matcher",
    "gateway": "tests.bench.bench_gateway",
    "backtest": "tests.bench.bench_backtest",
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.bench.run_all", description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated subset of: " + ", ".join(BENCHES))
    ap.add_argument("--quick", action="store_true", help="smaller inputs, fewer runs")
    ap.add_argument("--write", type=Path, help="markdown file to update")
    args = ap.parse_args(argv)
    names = args.only.split(",") if args.only else list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        ap.error(f"unknown benchmark(s): {', '.join(unknown)}")
    if "bars" in names:
        require_quixstreams()  # before minutes of other measurements, not after
    sections = []
    for name in names:
        print(f"== {name}", flush=True)
        sec = importlib.import_module(BENCHES[name]).run(quick=args.quick)
        print(sec.render(), flush=True)
        sections.append(sec)
    if args.write:
        write_sections(args.write, sections)
        print(f"wrote {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
