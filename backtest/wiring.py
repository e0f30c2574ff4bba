"""What a backtest decides with: the strategy specs (from ``--strategy/--params`` or a registry file),
the calendar for ``--session``, and the risk config (``configs/risk_budget.yaml``, equity pinned).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from backtest.calendars import AlwaysOpen, DailySessions
from core.config import format_validation_error, load_config
from core.errors import ConfigError
from core.sessions import load_calendar
from core.universe import Instrument
from risk.config import EntryHours, RiskBudget, load_budget
from strategy.api import InstrumentInfo
from strategy.engine import DecisionEngine, EnsembleSpec, StrategySpec
from strategy.registry import RegistryFile, build_registry, indicator_defaults
from strategy.strategies import STRATEGIES


def parse_params(text: str | None) -> dict[str, Any]:
    """``k=v,k=v`` with YAML scalars (``10``, ``2.5``, ``true``, ``sma``); ValueError names the bad pair."""
    out: dict[str, Any] = {}
    if not text:
        return out
    for pair in text.split(","):
        if not pair.strip():
            continue
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--params: {pair.strip()!r} is not key=value")
        try:
            out[key.strip()] = yaml.safe_load(raw.strip()) if raw.strip() else ""
        except yaml.YAMLError:
            raise ValueError(f"--params: {pair.strip()!r}: cannot read the value") from None
    return out


def infos(instruments: Sequence[Instrument]) -> dict[int, InstrumentInfo]:
    return {i.instrument_token: InstrumentInfo(i.instrument_token, i.tradingsymbol, i.exchange, i.tick_size,
                                               max(i.lot_size, 1)) for i in instruments if i.tradable}


def single_strategy(name: str, params: dict[str, Any], tf: str, tokens: frozenset[int], product: str
                    ) -> StrategySpec:
    """One strategy on the data's timeframe, labelled ``name``; params validated like the registry's."""
    cls = STRATEGIES.get(name)
    if cls is None:
        raise ConfigError(f"--strategy: unknown strategy {name!r} (known: {', '.join(sorted(STRATEGIES))})")
    if tf != "1d" and tf not in cls.timeframes:
        raise ConfigError(f"--strategy: {name} does not run on {tf} bars")
    defaults: dict[str, Any] = {}
    if tf != "1d":
        from core.settings import load_settings  # noqa: PLC0415
        from strategy.indicators.config import load_indicator_config  # noqa: PLC0415

        ind = load_settings().config_dir / "indicators.yaml"
        defaults = indicator_defaults(cls, tf, load_indicator_config(ind)) if ind.exists() else {}
    try:
        p = cls.Params.model_validate({**defaults, **params})
    except ValidationError as exc:
        raise ConfigError(format_validation_error("--params", exc)) from None
    return StrategySpec(name, cls, p, tf, tokens, product)


def from_registry(path: Path, ensembles: Path | None, universe: Sequence[Instrument], tfs: Sequence[str],
                  product: str | None) -> tuple[list[StrategySpec], list[EnsembleSpec], str]:
    """The registry's enabled strategies (and ensembles) on the timeframes the data has; square-off time."""
    reg = build_registry(path, load_config(path, RegistryFile), universe, ensembles)
    specs = [s for s in reg.specs if s.tf in tfs]
    ens = [e for e in reg.ensembles if e.tf in tfs]
    if not specs:
        have = sorted({s.tf for s in reg.specs})
        raise ConfigError(f"{path}: no enabled strategy runs on the data's timeframe(s) {', '.join(tfs)} "
                          f"(it has {', '.join(have) or 'none'})")
    if product:
        from dataclasses import replace  # noqa: PLC0415

        specs = [replace(s, product=product) for s in specs]
        ens = [replace(e, product=product) for e in ens]
    return specs, ens, reg.square_off


def calendar_for(session: str, tf: str) -> Any:
    if session == "none":
        return AlwaysOpen()
    cal = load_calendar()
    return DailySessions(cal) if tf == "1d" else cal


def risk_config(path: str | None, session: str, tf: str, product: str, equity: float | None) -> RiskBudget:
    """The live risk config, adjusted to the run: the product allowed, entry hours off for daily or 24-hour data."""
    cfg = load_budget(path)
    changes: dict[str, Any] = {"equity_source": "capital"}
    if product not in cfg.allowed_products:
        changes["allowed_products"] = [*cfg.allowed_products, product]
    if tf == "1d" or session == "none":
        changes["entry_hours"] = EntryHours(within_session=session != "none" and tf != "1d").model_dump()
    if equity is not None:
        changes["capital"] = equity
    return RiskBudget.model_validate({**cfg.model_dump(), **changes})  # validated afresh (no shared memos)


def build(specs: Sequence[StrategySpec], ens: Sequence[EnsembleSpec], instruments: dict[int, InstrumentInfo],
          calendar: Any, square_off: str = "15:15") -> DecisionEngine:
    return DecisionEngine(specs, instruments, calendar, square_off, ens)
