"""``python -m backtest run``: one backtest from the command line to ``--out DIR``.

Writes ``trades.csv``, ``orders.csv``, ``equity.csv``, ``metrics.json`` and ``report.html``
(see :mod:`backtest.cli` for the options). :func:`execute` is the whole run as a function
(the sweep and the parity test call it).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from backtest import data
from backtest.metrics import compute_metrics, ist_iso, per_strategy
from backtest.replay import Options, Recorded, Replay, Result
from backtest.trades import Trade
from backtest.wiring import build, calendar_for, from_registry, infos, parse_params, risk_config, single_strategy
from core.errors import ConfigError
from strategy.api import TF_MS


@dataclass
class Job:
    """Everything a run needs (the CLI's options, parsed)."""

    source: str                        # csv | db | parquet
    csv: Path | None = None
    symbol: str | None = None
    symbols: tuple[str, ...] = ()
    tz: str = "Asia/Kolkata"
    tf: str | None = None
    start: Any = None                  # date
    end: Any = None
    parquet: Path | None = None
    dsn: str | None = None
    strategy: str | None = None
    params: str | None = None
    registry: Path | None = None
    ensembles: Path | None = None
    session: str = "nse"
    product: str | None = None
    fill: str = "next_open"
    charges: str = "zerodha"
    slippage_ticks: int = 0
    sizing: str = "risk"
    qty: int = 1
    cash: float | None = None
    risk_config: str | None = None
    fills_from_db: bool = False
    progress: bool = True


@dataclass
class Outcome:
    result: Result
    trades: list[Trade]
    metrics: dict[str, Any]
    ts: np.ndarray
    equity: np.ndarray
    cash: np.ndarray
    exposure: np.ndarray
    initial_cash: float
    labels: tuple[str, ...] = ()


def load_bars(job: Job, universe: Sequence[Any], tfs: Sequence[str]) -> list[data.BarSet]:
    if job.source == "csv":
        assert job.csv is not None and job.symbol is not None
        return [data.read_csv(job.csv, job.symbol, universe, job.tz, job.tf)]
    insts = data.select_instruments(job.symbols, universe)
    if job.source == "parquet":
        assert job.parquet is not None
        return [data.read_parquet(job.parquet, tf, insts, job.start, job.end) for tf in tfs]
    assert job.dsn is not None
    return [data.read_db(job.dsn, tf, insts, job.start, job.end) for tf in tfs]


def registry_tfs(job: Job) -> list[str]:
    """The timeframes to load: ``--tf``, else every timeframe the registry decides on (validated first)."""
    if job.tf:
        return [t.strip() for t in job.tf.split(",")]
    if job.registry is None:
        return ["1m"]
    from core.config import load_config  # noqa: PLC0415
    from strategy.registry import RegistryFile  # noqa: PLC0415

    reg = load_config(job.registry, RegistryFile)
    tfs = {tf for e in reg.strategies if e.enabled for tf in e.timeframes}
    return sorted(tfs, key=TF_MS.__getitem__) or ["1m"]


def load(job: Job) -> list[data.BarSet]:
    """The job's bars (every timeframe it decides on)."""
    from core.settings import load_settings  # noqa: PLC0415
    from core.universe import load_universe  # noqa: PLC0415

    universe = load_universe(load_settings().config_dir / "tokens.csv")
    return load_bars(job, universe, registry_tfs(job))


def execute(job: Job, recorded: dict[str, Recorded] | None = None, sets: Sequence[data.BarSet] | None = None,
            params: dict[str, Any] | None = None) -> Outcome:
    """One run: ``sets`` (default: loaded from the job), ``params`` overriding ``--params`` (the sweep)."""
    from backtest.charges import parse_charges_option, segment_for  # noqa: PLC0415

    sets = list(sets) if sets is not None else load(job)
    tf = min((s.tf for s in sets), key=TF_MS.__getitem__)
    product = job.product or ("CNC" if tf == "1d" else "MIS")
    if product == "MIS" and tf == "1d":
        raise ConfigError("--product MIS: intraday positions need intraday bars; use CNC or NRML on daily data")
    calendar = calendar_for(job.session, tf)
    insts = {t: i for s in sets for t, i in s.instruments.items()}
    tokens = frozenset(insts)
    if job.registry is not None:
        specs, ens, square_off = from_registry(job.registry, job.ensembles, list(insts.values()),
                                               [s.tf for s in sets], job.product)
    else:
        assert job.strategy is not None
        try:
            given = parse_params(job.params)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        specs, ens, square_off = [single_strategy(job.strategy, {**given, **(params or {})}, tf, tokens, product)], \
            [], "15:15"
    engine = build(specs, ens, infos(list(insts.values())), calendar, square_off)
    risk = risk_config(job.risk_config, job.session, tf, product, job.cash) if job.sizing == "risk" else None
    cash = job.cash if job.cash is not None else (risk.capital if risk is not None else 1_000_000.0)
    try:
        charges = parse_charges_option(job.charges)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    _check_charges(charges, sets, specs, ens, insts, segment_for)
    opts = Options(fill="recorded" if recorded is not None else job.fill, slippage_ticks=job.slippage_ticks,
                   sizing=job.sizing, qty=job.qty, equity=cash, cash=cash, charges=charges, segment=segment_for,
                   risk=risk, calendar=calendar, recorded=recorded or {}, progress=job.progress)
    replay = Replay(engine, sets, opts)
    result = replay.run()
    token, ts_, _, _, _, close, _, tfi = replay.merged
    trades = result.portfolio.finish(result.last_close)
    # each point is the equity after a bar's close, so it is labelled with that close time
    ts, equity, cash_s, exposure = result.portfolio.equity_curve(cash, token, ts_ + TF_MS[tf], close, tfi == 0)
    metrics = compute_metrics(ts, equity, trades, initial_cash=cash, exposure=exposure)
    metrics = {**metrics, "bars": result.bars, "orders": len(result.orders),
               "orders_rejected": sum(1 for r in result.orders if r.status.startswith("REJECTED")),
               "bars_per_s": round(result.bars / result.seconds) if result.seconds else None}
    labels = tuple(s.label for s in specs if s.ensemble is None) + tuple(e.label for e in ens)
    return Outcome(result, trades, metrics, ts, equity, cash_s, exposure, cash, labels)


def _check_charges(model: Any, sets: Sequence[data.BarSet], specs: Sequence[Any], ens: Sequence[Any],
                   insts: dict[int, Any], segment_for: Any) -> None:
    """A charge schedule that starts after the data is a one-line error before the run, not a crash in it."""
    period = getattr(model, "period", None)
    if period is None:
        return
    from core.sessions import ist_date  # noqa: PLC0415

    first = ist_date(int(min(int(s.ts[0]) for s in sets if len(s))))
    for spec in [*specs, *ens]:
        for tok in spec.tokens:
            inst = insts.get(tok)
            if inst is None:
                continue
            try:
                seg = segment_for(spec.product, inst.exchange, inst.instrument_type)
                period(seg, first)
            except ValueError as exc:
                raise ConfigError(f"--charges zerodha: {exc}, or use --charges none|bps=N") from None


# ---------------------------------------------------------------------- outputs
TRADE_COLUMNS = ("entry_time", "exit_time", "side", "qty", "entry_price", "exit_price", "pnl", "charges",
                 "net_pnl", "strategy", "symbol")
ORDER_COLUMNS = ("order_id", "strategy", "symbol", "side", "intent", "qty", "sized_qty", "signal_time", "status",
                 "filled_qty",
                 "fill_time", "fill_price", "charges", "reason", "detail")


def _num(x: float | None, nd: int = 4) -> str:
    return "" if x is None else f"{round(x, nd):g}" if abs(x) < 1e15 else repr(x)


def write_outputs(out: Path, job: Job, o: Outcome) -> None:
    out.mkdir(parents=True, exist_ok=True)
    _atomic_csv(out / "trades.csv", TRADE_COLUMNS, (
        (ist_iso(t.entry_ts), "" if t.exit_ts is None else ist_iso(t.exit_ts), t.side, t.qty,
         _num(t.entry_price), _num(t.exit_price), _num(t.pnl, 2), _num(t.charges, 2), _num(t.net_pnl, 2),
         t.strategy, t.symbol) for t in o.trades))
    _atomic_csv(out / "orders.csv", ORDER_COLUMNS, (
        (r.order["order_id"], r.order["strategy"], r.order["symbol"], r.order["side"],
         r.order["extra"].get("intent"), "" if r.order["qty"] is None else r.order["qty"],
         "" if r.qty is None else r.qty, ist_iso(r.order["signal_ts"]), r.status, r.filled,
         "" if r.fill_ts is None else ist_iso(r.fill_ts),
         _num(r.fill_price), _num(r.charges, 2), r.order["extra"].get("reason", ""), r.detail)
        for r in o.result.orders))
    peak = np.maximum.accumulate(o.equity) if len(o.equity) else o.equity
    _atomic_csv(out / "equity.csv", ("time", "equity", "cash", "exposure", "drawdown_pct"), (
        (ist_iso(int(t)), f"{e:.2f}", f"{c:.2f}", f"{x:.2f}", f"{(e / p - 1) * 100 if p else 0.0:.4f}")
        for t, e, c, x, p in zip(o.ts.tolist(), o.equity.tolist(), o.cash.tolist(), o.exposure.tolist(),
                                 peak.tolist(), strict=True)))
    params = {k: (str(v) if isinstance(v, Path) or v is not None and not isinstance(v, int | float | str | bool)
                  else v) for k, v in vars(job).items() if k not in ("dsn",)}
    _atomic_text(out / "metrics.json", json.dumps({**o.metrics, "params": params}, indent=2, default=str) + "\n")
    from backtest.report import write_report  # noqa: PLC0415

    title = job.strategy or (job.registry.name if job.registry else "backtest")
    write_report(out / "report.html", title=f"Backtest: {title}", metrics=o.metrics,
                 per_strategy=per_strategy(o.trades), trades=o.trades, ts_ms=o.ts, equity=o.equity, params=params)


def _atomic_csv(path: Path, header: Sequence[str], rows: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    os.replace(tmp, path)


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def summary(o: Outcome) -> str:
    m = o.metrics
    return (f"{m['bars']:,} bars, {m['orders']:,} orders ({m['orders_rejected']} rejected), {m['trades'] or 0} closed "
            f"trades; return {m['total_return_pct']:.2f}%, max drawdown {m['max_drawdown_pct']:.2f}%, "
            f"charges {m['charges']:.2f}; {m['bars_per_s'] or 0:,} bars/s")
