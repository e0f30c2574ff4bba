"""The research command line.

    python -m backtest run --csv FILE --symbol NAME --strategy ma_crossover --params fast=10,slow=30 --out DIR
    python -m backtest run --from-db --symbols INFY,TCS --tf 1m --from 2026-11-02 --to 2026-11-20 \\
        --registry strategy/registry.yaml --out DIR
    python -m backtest sweep --csv FILE --symbol NAME --strategy ma_crossover --grid fast=5:20:5 --grid slow=20,30,50
    python -m backtest.scorer ...   (next-day promotion; its own --help)

Exit codes: 0 done, 1 a --fills-from-db run whose orders differ from the session's (or a database error),
2 a usage or config error (one line naming the option, file or value).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from backtest.options import add_data_options, add_model_options, job_from_args
from backtest.run import Job, execute, summary, write_outputs
from core.cli import run_cli
from core.errors import EXIT_CONFIG, ConfigError


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m backtest", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="one backtest", description="Replay history through the live decision code; "
                         "writes trades.csv, orders.csv, equity.csv, metrics.json and report.html to --out.")
    add_data_options(run)
    add_model_options(run)
    run.add_argument("--fills-from-db", action="store_true",
                     help="fill each order as the recorded session did (its rows in fills/orders at POSTGRES_DSN)")
    run.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory (created)")
    run.add_argument("--record", metavar="RUN_ID", nargs="?", const="",
                     help="also store the daily results per strategy in strategy_results (source backtest) for "
                          "python -m backtest.scorer; RUN_ID default: derived from the options")
    run.add_argument("--quiet", action="store_true", help="no progress lines")
    from backtest.sweep import add_sweep_parser  # noqa: PLC0415

    add_sweep_parser(sub)
    return ap


def cmd_run(args: argparse.Namespace, ap: argparse.ArgumentParser) -> int:
    job = job_from_args(args, ap)
    recorded = None
    if job.fills_from_db:
        from backtest.recorded import load_recorded  # noqa: PLC0415

        assert job.dsn is not None
        recorded = load_recorded(job.dsn, job.start, job.end)
    outcome = execute(job, recorded)
    write_outputs(args.out, job, outcome)
    print(f"backtest: {summary(outcome)}")
    if args.record is not None:
        _record(job, outcome, args.record)
    if recorded is not None:
        return _parity(job, outcome, args.out)
    print(f"backtest: wrote {args.out}/trades.csv, orders.csv, equity.csv, metrics.json, report.html")
    return 0


def _record(job: Job, outcome: Any, run_id: str) -> None:
    import hashlib  # noqa: PLC0415

    from backtest.results import daily_rows, record  # noqa: PLC0415
    from core.db import connect  # noqa: PLC0415
    from core.settings import load_settings  # noqa: PLC0415

    if not run_id:
        text = repr(sorted((k, str(v)) for k, v in vars(job).items() if k not in ("dsn", "progress")))
        run_id = "bt-" + hashlib.blake2b(text.encode(), digest_size=6).hexdigest()
    rows = daily_rows(outcome.trades)
    with connect(job.dsn or load_settings().dsn) as conn:
        n = record(conn, run_id, "backtest", rows)
        conn.commit()
    print(f"backtest: recorded {n} daily result row(s) as run {run_id} in strategy_results")


def _parity(job: Job, outcome: Any, out: Path) -> int:
    """--fills-from-db: the backtest's orders against the session's; exit 1 with the first order that differs.
    Sizing (the risk manager's quantities) is compared too and reported; see backtest.recorded.differences."""
    import json  # noqa: PLC0415

    from backtest.recorded import differences, session_orders  # noqa: PLC0415

    assert job.dsn is not None
    ours = outcome.result.orders
    theirs = session_orders(job.dsn, job.start, job.end, set(outcome.labels))
    order_diff, size_diff, n_size = differences(ours, theirs)
    (out / "parity.json").write_text(json.dumps({
        "orders_backtest": len(ours), "orders_session": len(theirs), "first_difference": order_diff,
        "sizing_differences": n_size, "first_sizing_difference": size_diff}, indent=2) + "\n", encoding="utf-8")
    if size_diff is None:
        print("parity: sizing: every order sized as the session's risk manager sized it")
    else:
        print(f"parity: sizing: {n_size} order(s) sized differently; first: {size_diff}")
    if order_diff is None:
        print(f"parity: the backtest decided the session's {len(theirs)} orders exactly (id, side, signal time)")
        return 0
    print(f"parity: FAILED: first diverging order: {order_diff}")
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.cmd == "run":
        return run_cli(lambda: cmd_run(args, ap))
    if args.cmd == "sweep":
        from backtest.sweep import cmd_sweep  # noqa: PLC0415

        return run_cli(lambda: cmd_sweep(args, ap))
    print(f"error: unknown command {args.cmd}", file=sys.stderr)
    return EXIT_CONFIG


__all__ = ["ConfigError", "main"]
