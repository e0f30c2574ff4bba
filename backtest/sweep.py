"""``python -m backtest sweep``: a parameter grid (or a random sample of it) over one strategy, on every core,
ranked with walk-forward in-sample / out-of-sample splits so an overfit grid shows itself.

    python -m backtest sweep --csv FILE --symbol INFY --strategy ma_crossover \\
        --grid fast=5,10,20 --grid slow=30:90:20 --params kind=sma --folds 4 --rank-by sharpe --out DIR

Each combination runs once over the whole history (the data is loaded once and shared with the
worker processes by fork). The history is cut into ``--folds + 1`` consecutive segments of equal
length in time, and every segment's metric comes from that run's equity curve inside the segment
(rebased at its start). The table ranks combinations by their mean metric over the first ``folds``
segments (in-sample, IS) and shows beside it the last segment (out-of-sample, OOS), which no ranking
or choice ever looks at. The walk-forward lines pick, per fold *i*, the best combination of segment
*i* and report how it did on segment *i + 1*. A grid that merely fits noise has a good IS column
and an OOS column near zero or below, and its walk-forward picks do worse on the next segment.
Writes ``DIR/sweep.csv`` (every combination) and ``DIR/walk_forward.csv``.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import multiprocessing as mp
import os
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from backtest.metrics import compute_metrics, drawdown_series
from core.errors import ConfigError

RANK_KEYS = ("sharpe", "total_return_pct", "sortino", "profit_factor", "expectancy", "net_pnl")


def parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    """``k=v1,v2,...`` or ``k=start:stop:step`` (inclusive of stop) per item; ValueError names the bad one."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or not raw.strip():
            raise ValueError(f"--grid: {item!r} is not key=v1,v2 or key=start:stop:step")
        if key in grid:
            raise ValueError(f"--grid: {key} given twice")
        if raw.count(":") == 2 and "," not in raw:
            a, b, c = (yaml.safe_load(x) for x in raw.split(":"))
            if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in (a, b, c)) or c <= 0:
                raise ValueError(f"--grid: {item!r}: start:stop:step must be numbers with step > 0")
            n = int(math.floor((b - a) / c + 1e-9)) + 1
            if n <= 0:
                raise ValueError(f"--grid: {item!r} is empty (stop below start)")
            vals = [a + k * c for k in range(n)]
            grid[key] = [int(v) if all(isinstance(x, int) for x in (a, c)) else round(v, 10) for v in vals]
        else:
            grid[key] = [yaml.safe_load(v.strip()) for v in raw.split(",") if v.strip()]
    if not grid:
        raise ValueError("--grid: give at least one key=values")
    return grid


def combinations(grid: dict[str, list[Any]], sample: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    keys = list(grid)
    combos = [dict(zip(keys, vals, strict=True)) for vals in itertools.product(*(grid[k] for k in keys))]
    if sample is not None and sample < len(combos):
        combos = random.Random(seed).sample(combos, sample)
    return combos


def segment_bounds(t0: int, t1: int, n: int) -> list[tuple[int, int]]:
    """``n`` consecutive [start, end) time ranges covering [t0, t1]."""
    edges = [t0 + (t1 + 1 - t0) * k // n for k in range(n + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def segment_metric(ts: np.ndarray, equity: np.ndarray, trades: Sequence[Any], lo: int, hi: int, key: str,
                   cash: float) -> float | None:
    """``key`` of the run restricted to [lo, hi): its equity curve rebased at the segment's start, its trades
    closed there."""
    sel = (ts >= lo) & (ts < hi)
    if sel.sum() < 2:
        return None
    k = int(np.argmax(sel))
    base = float(equity[k - 1]) if k > 0 else cash
    closed = [t for t in trades if t.exit_ts is not None and lo <= t.exit_ts < hi]
    m = compute_metrics(ts[sel], equity[sel], closed, initial_cash=base)
    v = m.get(key)
    return None if v is None else float(v)


# -- the worker (forked: the bars are inherited, not pickled) -------------------------------------------
_SHARED: dict[str, Any] = {}


def _one(combo: dict[str, Any]) -> dict[str, Any]:
    from backtest.run import execute  # noqa: PLC0415

    job, sets, bounds, key = _SHARED["job"], _SHARED["sets"], _SHARED["bounds"], _SHARED["key"]
    try:
        o = execute(job, sets=sets, params=combo)
    except ConfigError as exc:
        return {"params": combo, "error": str(exc)}
    segs = [segment_metric(o.ts, o.equity, o.trades, lo, hi, key, o.initial_cash) for lo, hi in bounds]
    m = o.metrics
    dd = float(-drawdown_series(o.equity).min() * 100) if len(o.equity) else 0.0
    return {"params": combo, "segments": segs, "total_return_pct": m["total_return_pct"], "sharpe": m["sharpe"],
            "max_drawdown_pct": dd, "trades": m["trades"] or 0, "win_rate_pct": m["win_rate_pct"],
            "profit_factor": m["profit_factor"], "charges": m["charges"], key: m.get(key)}


def run_sweep(job: Any, sets: Sequence[Any], combos: list[dict[str, Any]], folds: int, key: str, jobs: int,
              progress: bool = True) -> tuple[list[dict[str, Any]], list[tuple[int, int]]]:
    t0 = min(int(s.ts[0]) for s in sets)
    t1 = max(int(s.ts[-1]) for s in sets)
    bounds = segment_bounds(t0, t1, folds + 1)
    job.progress = False
    _SHARED.update(job=job, sets=list(sets), bounds=bounds, key=key)
    results: list[dict[str, Any]] = []
    start = time.perf_counter()
    ctx = mp.get_context("fork")
    with ctx.Pool(processes=max(1, min(jobs, len(combos)))) as pool:
        for n, res in enumerate(pool.imap_unordered(_one, combos), 1):
            results.append(res)
            if progress:
                el = time.perf_counter() - start
                eta = el / n * (len(combos) - n)
                bar = "#" * int(30 * n / len(combos))
                end = "\r" if sys.stderr.isatty() and n < len(combos) else "\n"
                if end == "\r" or n == len(combos) or n % max(1, len(combos) // 20) == 0:
                    print(f"sweep: [{bar:<30}] {n}/{len(combos)} runs  {el:.0f} s elapsed, ~{eta:.0f} s left",
                          end=end, file=sys.stderr, flush=True)
    _SHARED.clear()
    return results, bounds


def rank(results: list[dict[str, Any]], folds: int) -> list[dict[str, Any]]:
    """Per combination: the mean IS metric (segments 0..folds-1) and the held-out OOS one (the last
    segment, never ranked on); best IS first."""
    for r in results:
        segs = r.get("segments") or []
        is_v = [v for v in segs[:folds] if v is not None]
        r["is_mean"] = sum(is_v) / len(is_v) if is_v else None
        r["oos_mean"] = segs[folds] if len(segs) > folds else None
    return sorted(results, key=lambda r: (r.get("is_mean") is None, -(r.get("is_mean") or 0.0)))


def walk_forward(results: list[dict[str, Any]], folds: int) -> list[dict[str, Any]]:
    """Per fold: the combination best in segment i, and its metric in segment i + 1."""
    out = []
    ok = [r for r in results if r.get("segments")]
    for i in range(folds):
        cands = [r for r in ok if r["segments"][i] is not None]
        if not cands:
            continue
        best = max(cands, key=lambda r: r["segments"][i])
        out.append({"fold": i + 1, "params": best["params"], "is": best["segments"][i],
                    "oos": best["segments"][i + 1]})
    return out


def _fmt(v: Any, nd: int = 2) -> str:
    return "-" if v is None else f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def _pstr(p: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in p.items())


def table(ranked: list[dict[str, Any]], key: str, top: int) -> str:
    head = f"{'#':>3}  {'params':<34} {'IS ' + key:>14} {'OOS ' + key:>14} {'return%':>9} {'maxDD%':>8} {'trades':>7}"
    lines = [head, "-" * len(head)]
    for n, r in enumerate(ranked[:top], 1):
        if "error" in r:
            lines.append(f"{n:>3}  {_pstr(r['params']):<34} error: {r['error']}")
            continue
        lines.append(f"{n:>3}  {_pstr(r['params']):<34} {_fmt(r['is_mean'], 3):>14} {_fmt(r['oos_mean'], 3):>14} "
                     f"{_fmt(r['total_return_pct']):>9} {_fmt(r['max_drawdown_pct']):>8} {r['trades']:>7}")
    return "\n".join(lines)


def write_csvs(out: Path, ranked: list[dict[str, Any]], wf: list[dict[str, Any]], key: str, folds: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    keys = sorted({k for r in ranked for k in r["params"]})
    with (out / "sweep.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow([*keys, f"is_{key}", f"oos_{key}", *(f"seg{i + 1}_{key}" for i in range(folds + 1)),
                    "total_return_pct", "sharpe", "max_drawdown_pct", "trades", "win_rate_pct", "profit_factor",
                    "charges", "error"])
        for r in ranked:
            segs = r.get("segments") or [None] * (folds + 1)
            w.writerow([*(r["params"].get(k) for k in keys), r.get("is_mean"), r.get("oos_mean"), *segs,
                        r.get("total_return_pct"), r.get("sharpe"), r.get("max_drawdown_pct"), r.get("trades"),
                        r.get("win_rate_pct"), r.get("profit_factor"), r.get("charges"), r.get("error", "")])
    with (out / "walk_forward.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["fold", "params", f"is_{key}", f"oos_{key}"])
        for row in wf:
            w.writerow([row["fold"], _pstr(row["params"]), row["is"], row["oos"]])


# -- the command ------------------------------------------------------------------------------------------
def add_sweep_parser(sub: Any) -> None:
    from backtest.options import add_data_options, add_model_options  # noqa: PLC0415

    p = sub.add_parser("sweep", help="a parameter grid with walk-forward splits",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_options(p)
    add_model_options(p)
    g = p.add_argument_group("the sweep")
    g.add_argument("--grid", action="append", default=[], metavar="K=V1,V2|K=A:B:STEP",
                   help="values of one param (repeat per param); A:B:STEP includes B")
    g.add_argument("--random", type=int, metavar="N", help="run N combinations drawn from the grid (random search)")
    g.add_argument("--seed", type=int, default=0, help="--random's seed (default 0)")
    g.add_argument("--folds", type=int, default=3, help="walk-forward folds (segments = folds + 1; default 3)")
    g.add_argument("--rank-by", choices=RANK_KEYS, default="sharpe", help="the metric ranked on (default sharpe)")
    g.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes (default: every core)")
    g.add_argument("--top", type=int, default=20, help="rows printed (default 20; sweep.csv has all)")
    g.add_argument("--out", type=Path, metavar="DIR", help="write sweep.csv and walk_forward.csv here")


def cmd_sweep(args: argparse.Namespace, ap: argparse.ArgumentParser) -> int:
    from backtest.options import job_from_args  # noqa: PLC0415
    from backtest.run import load  # noqa: PLC0415

    if args.strategy is None:
        ap.error("sweep needs --strategy (a grid is over one strategy's params)")
    if args.folds < 1 or args.jobs < 1 or args.top < 1 or (args.random is not None and args.random < 1):
        ap.error("--folds, --jobs, --top and --random must be >= 1")
    try:
        grid = parse_grid(args.grid)
    except ValueError as exc:
        ap.error(str(exc))
    combos = combinations(grid, args.random, args.seed)
    job = job_from_args(args, ap)
    sets = load(job)
    n_bars = sum(len(s) for s in sets)
    print(f"sweep: {len(combos)} combinations x {n_bars:,} bars on {min(args.jobs, len(combos))} processes, "
          f"{args.folds} walk-forward folds, ranked by {args.rank_by}", file=sys.stderr)
    results, _ = run_sweep(job, sets, combos, args.folds, args.rank_by, args.jobs)
    errors = [r for r in results if "error" in r]
    if len(errors) == len(results):
        raise ConfigError(f"every combination failed; first: {_pstr(errors[0]['params'])}: {errors[0]['error']}")
    ranked = rank(results, args.folds)
    wf = walk_forward(ranked, args.folds)
    print(table(ranked, args.rank_by, args.top))
    if wf:
        print(f"\nwalk-forward (best in-sample combination of each fold, then the next segment), {args.rank_by}:")
        for row in wf:
            print(f"  fold {row['fold']}: {_pstr(row['params']):<34} IS {_fmt(row['is'], 3):>10}  "
                  f"OOS {_fmt(row['oos'], 3):>10}")
        is_m = [r["is"] for r in wf if r["is"] is not None]
        oos_m = [r["oos"] for r in wf if r["oos"] is not None]
        if is_m and oos_m:
            print(f"  mean: IS {sum(is_m) / len(is_m):.3f}, OOS {sum(oos_m) / len(oos_m):.3f} "
                  f"(an OOS far below IS means the grid fits noise)")
    if errors:
        print(f"sweep: {len(errors)} combination(s) failed, e.g. {_pstr(errors[0]['params'])}: {errors[0]['error']}",
              file=sys.stderr)
    if args.out:
        write_csvs(args.out, ranked, wf, args.rank_by, args.folds)
        print(f"sweep: wrote {args.out}/sweep.csv, walk_forward.csv")
    return 0
