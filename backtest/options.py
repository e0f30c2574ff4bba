"""The options ``python -m backtest run`` and ``sweep`` share (data, what decides, execution and money)."""

from __future__ import annotations

import argparse
from pathlib import Path

from backtest.run import Job
from core.cli import iso_date, non_negative


def _slippage(text: str) -> int:
    key, sep, val = text.partition("=")
    if key != "ticks" or not sep:
        raise argparse.ArgumentTypeError(f"expected ticks=N, got {text!r}")
    return non_negative(val)


def add_data_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data (one of --csv, --parquet, --from-db)")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--csv", type=Path, metavar="FILE",
                     help="bars: a date/time first column, then open/high/low/close[/volume] in any case")
    src.add_argument("--parquet", type=Path, metavar="DIR", help="the bar archive (DIR/bars/tf=<tf>/date=...)")
    src.add_argument("--from-db", action="store_true", help="the bars_<tf> tables at POSTGRES_DSN")
    g.add_argument("--symbol", metavar="NAME", help="--csv: the instrument the file holds (INFY, NSE:INFY, GOOG)")
    g.add_argument("--symbols", metavar="S,S", help="--from-db/--parquet: instruments of configs/tokens.csv")
    g.add_argument("--tf", help="timeframe(s): 1m,5m,... (default: --csv infers it; else the registry's, or 1m)")
    g.add_argument("--from", dest="start", type=iso_date, metavar="DATE", help="first IST date (--from-db/--parquet)")
    g.add_argument("--to", dest="end", type=iso_date, metavar="DATE", help="last IST date, inclusive")
    g.add_argument("--tz", default="Asia/Kolkata", help="time zone of naive CSV times (default Asia/Kolkata)")


def add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("what decides (one of --strategy, --registry)")
    s = g.add_mutually_exclusive_group(required=True)
    s.add_argument("--strategy", metavar="NAME", help="one strategy of strategy/strategies (e.g. ma_crossover)")
    s.add_argument("--registry", type=Path, metavar="FILE", help="a registry file (strategy/registry.yaml format)")
    g.add_argument("--params", metavar="K=V,...", help="--strategy's params (e.g. fast=10,slow=30,kind=sma)")
    g.add_argument("--ensembles", type=Path, metavar="FILE", help="--registry: its ensembles file (default: none)")
    g.add_argument("--session", choices=("nse", "none"), default="nse",
                   help="session rules: nse (the exchange calendar, default) or none (24-hour data)")
    g.add_argument("--product", choices=("MIS", "CNC", "NRML"),
                   help="default: MIS on intraday bars, CNC on daily bars (--registry: the registry's)")
    e = p.add_argument_group("execution and money")
    e.add_argument("--fill", choices=("next_open", "close"), default="next_open",
                   help="a market order fills at the next bar's open (default) or at its bar's close")
    e.add_argument("--charges", default="zerodha", metavar="zerodha|none|bps=N",
                   help="Zerodha's schedule (configs/charges.yaml, by trade date; default), none, or N bps")
    e.add_argument("--slippage", type=_slippage, default=0, metavar="ticks=N", help="fills N ticks worse")
    e.add_argument("--sizing", choices=("risk", "fixed"), default="risk",
                   help="risk: the risk manager's sizing and budget guard (default); fixed: --qty lots per entry")
    e.add_argument("--qty", type=non_negative, default=1, help="--sizing fixed: lots per entry (default 1)")
    e.add_argument("--cash", type=float, metavar="N",
                   help="starting cash, also the pinned equity sizing uses (default: risk_budget.yaml capital)")
    e.add_argument("--risk-config", metavar="FILE", help="risk budget file (default configs/risk_budget.yaml)")


def job_from_args(args: argparse.Namespace, ap: argparse.ArgumentParser) -> Job:
    if args.csv is not None:
        if not args.symbol:
            ap.error("--csv needs --symbol NAME")
        source = "csv"
    else:
        if not args.symbols:
            ap.error("--from-db/--parquet need --symbols")
        if args.start is None or args.end is None:
            ap.error("--from-db/--parquet need --from and --to")
        if args.start > args.end:
            ap.error(f"--from {args.start} is after --to {args.end}")
        source = "parquet" if args.parquet is not None else "db"
    if args.params and not args.strategy:
        ap.error("--params goes with --strategy")
    if args.tf:
        from backtest.data import DB_TFS, TF_SECONDS  # noqa: PLC0415

        tfs = [t.strip() for t in args.tf.split(",")]
        allowed = TF_SECONDS if source == "csv" else DB_TFS
        bad = [t for t in tfs if t not in allowed]
        if bad:
            ap.error(f"--tf: {bad[0]!r} is not one of {', '.join(allowed)}")
        if source == "csv" and len(tfs) > 1:
            ap.error("--tf: a CSV file holds one timeframe")
    if getattr(args, "fills_from_db", False) and source != "db":
        ap.error("--fills-from-db replays a recorded session: give --from-db with its --symbols, --from and --to")
    if args.sizing == "fixed" and args.qty < 1:
        ap.error("--sizing fixed needs --qty >= 1")
    if args.cash is not None and not args.cash > 0:
        ap.error("--cash must be > 0")
    dsn = None
    if source == "db" or getattr(args, "fills_from_db", False) or getattr(args, "record", None) is not None:
        from core.settings import load_settings  # noqa: PLC0415

        dsn = load_settings().dsn
    symbols = tuple(s for s in (args.symbols or "").split(",") if s.strip())
    return Job(source=source, csv=args.csv, symbol=args.symbol, symbols=symbols, tz=args.tz, tf=args.tf,
               start=args.start, end=args.end, parquet=args.parquet, dsn=dsn, strategy=args.strategy,
               params=args.params, registry=args.registry, ensembles=args.ensembles, session=args.session,
               product=args.product, fill=args.fill, charges=args.charges, slippage_ticks=args.slippage,
               sizing=args.sizing, qty=args.qty, cash=args.cash, risk_config=args.risk_config,
               fills_from_db=getattr(args, "fills_from_db", False), progress=not getattr(args, "quiet", False))
