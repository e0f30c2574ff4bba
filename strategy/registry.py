"""``strategy/registry.yaml``: which strategies run, with what params, on which instruments and timeframes.

Validated against the strategy classes (:data:`strategy.strategies.STRATEGIES`):
a stale strategy name, an unknown or ill-typed param, a timeframe the strategy
cannot run on, or a symbol not in the universe (``configs/tokens.csv``) is one
:class:`~core.errors.ConfigError` line naming the file and the key; the runner
and ``make check-config`` exit 2 on it. Ensembles (``strategy/ensemble.yaml``)
are checked against it too: members exist, are enabled and share a timeframe.

``instruments`` is ``all`` (every tradable instrument: indices excluded), a
list of symbols (``NSE:INFY``, or ``INFY``: NSE when also listed on BSE), or a filter over the universe::

    instruments: {exchange: [NSE], instrument_type: [EQ], exclude: [YESBANK]}

A strategy on one timeframe is labelled by its ``id`` (the Orders' ``strategy``);
on several, each copy is ``<id>_<tf>`` so positions and order ids never mix.

:func:`load_registry` applies the scorer's overlay (:mod:`strategy.overlay`) when its file exists:
it sets ``enabled`` per id, so the next day runs what ``python -m backtest.scorer`` decided.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from core.config import StrictModel, format_validation_error, load_config
from core.errors import ConfigError
from core.sessions import hhmm_minutes
from core.settings import PROJECT_ROOT
from core.universe import Instrument
from strategy.api import TF_MS, InstrumentInfo, Params
from strategy.engine import EnsembleSpec, StrategySpec
from strategy.overlay import apply_file, overlay_path
from strategy.strategies import STRATEGIES

DECISION_TFS = ("1m", "3m", "5m", "15m", "30m", "60m")
DEFAULT_REGISTRY = PROJECT_ROOT / "strategy" / "registry.yaml"
DEFAULT_ENSEMBLES = PROJECT_ROOT / "strategy" / "ensemble.yaml"


class InstrumentFilter(StrictModel):
    exchange: list[str] | None = None
    segment: list[str] | None = None
    instrument_type: list[str] | None = None
    symbols: list[str] | None = None
    exclude: list[str] = Field(default_factory=list)


class StrategyEntry(StrictModel):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")
    strategy: str
    enabled: bool = True
    timeframes: list[Literal["1m", "3m", "5m", "15m", "30m", "60m"]] = Field(min_length=1)
    instruments: Literal["all"] | list[str] | InstrumentFilter = "all"
    product: Literal["MIS", "CNC", "NRML"] | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("timeframes")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("duplicate timeframe")
        return v


class Defaults(StrictModel):
    product: Literal["MIS", "CNC", "NRML"] = "MIS"
    square_off: str = "15:15"

    @field_validator("square_off")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        hhmm_minutes(v)
        return v


class RegistryFile(StrictModel):
    defaults: Defaults = Field(default_factory=Defaults)
    strategies: list[StrategyEntry] = Field(default_factory=list)


@dataclass(frozen=True)
class Registry:
    """The validated registry, resolved against the universe."""

    path: Path
    file: RegistryFile
    specs: tuple[StrategySpec, ...]
    instruments: Mapping[int, InstrumentInfo]
    ensembles: tuple[EnsembleSpec, ...] = ()
    overlay: Path | None = None  # the scorer's overlay applied to ``file`` (None: none)

    @property
    def square_off(self) -> str:
        return self.file.defaults.square_off

    def timeframes(self) -> list[str]:
        tfs = {s.tf for s in self.specs} | {e.tf for e in self.ensembles}
        return sorted(tfs, key=TF_MS.__getitem__)


def label_for(entry_id: str, tf: str, n_tfs: int) -> str:
    return entry_id if n_tfs == 1 else f"{entry_id}_{tf}"


def _resolve_instruments(where: str, sel: Any, universe: Sequence[Instrument]) -> frozenset[int]:
    tradable = [i for i in universe if i.tradable]
    by_sym: dict[str, list[Instrument]] = {}
    for i in universe:
        by_sym.setdefault(i.key, []).append(i)
        by_sym.setdefault(i.tradingsymbol, []).append(i)

    def lookup(sym: str, key: str) -> list[Instrument]:
        found = by_sym.get(sym.strip().upper())
        if not found:
            raise ConfigError(f"{where}.{key}: {sym!r} is not in tokens.csv")
        if len(found) > 1:
            nse = [i for i in found if i.exchange == "NSE"]
            if nse and ":" not in sym:
                found = nse  # a bare symbol listed on NSE and BSE means NSE, as on Kite
        if len(found) > 1:
            raise ConfigError(f"{where}.{key}: {sym!r} is ambiguous (listed on "
                              f"{', '.join(sorted(i.exchange for i in found))}): write EXCHANGE:SYMBOL")
        if not found[0].tradable:
            raise ConfigError(f"{where}.{key}: {sym!r} is an index and cannot be traded")
        return found

    if sel == "all":
        chosen = tradable
    elif isinstance(sel, list):
        chosen = [i for s in sel for i in lookup(s, "instruments")]
    else:
        f: InstrumentFilter = sel
        pool = [i for s in f.symbols for i in lookup(s, "instruments.symbols")] if f.symbols else tradable
        chosen = [i for i in pool
                  if (f.exchange is None or i.exchange in f.exchange)
                  and (f.segment is None or i.segment in f.segment)
                  and (f.instrument_type is None or i.instrument_type in f.instrument_type)]
        drop = {i.instrument_token for s in f.exclude for i in lookup(s, "instruments.exclude")}
        chosen = [i for i in chosen if i.instrument_token not in drop]
    if not chosen:
        raise ConfigError(f"{where}.instruments: selects no instrument")
    return frozenset(i.instrument_token for i in chosen)


def _params(where: str, cls: Any, raw: dict[str, Any]) -> Params:
    try:
        params: Params = cls.Params.model_validate(raw)
        return params
    except ValidationError as exc:
        line = format_validation_error("", exc).removeprefix(": ")
        raise ConfigError(f"{where}.params.{line}" if exc.errors()[0]["loc"] else f"{where}.params: {line}") from None


def indicator_defaults(cls: Any, tf: str, indicators: Any) -> dict[str, Any]:
    """The params ``cls`` takes from ``configs/indicators.yaml`` on ``tf`` (see ``Strategy.indicator_params``)."""
    if indicators is None:
        return {}
    entries = indicators.for_timeframe(tf)
    out: dict[str, Any] = {}
    for param, (entry, key) in cls.indicator_params.items():
        spec = entries.get(entry)
        if spec is not None and key in spec.params:
            out[param] = spec.params[key]
    return out


def build_registry(path: Path, file: RegistryFile, universe: Sequence[Instrument],
                   ensemble_path: Path | None = None, indicators: Any = None) -> Registry:
    """Validate ``file`` against the strategy classes and the universe; resolve instruments and labels.

    A param an entry leaves out comes from ``indicators`` (the loaded ``configs/indicators.yaml``) for
    the timeframe when the strategy maps it there, else from the strategy's Params defaults."""
    name = path.name
    seen: set[str] = set()
    specs: list[StrategySpec] = []
    enabled: dict[str, tuple[bool, frozenset[str]]] = {}
    entries: dict[str, StrategyEntry] = {}
    for n, e in enumerate(file.strategies):
        where = f"{name}: strategies[{n}]"
        if e.id in seen:
            raise ConfigError(f"{where}.id: duplicate id {e.id!r}")
        seen.add(e.id)
        cls = STRATEGIES.get(e.strategy)
        if cls is None:
            raise ConfigError(f"{where}.strategy: unknown strategy {e.strategy!r} "
                              f"(known: {', '.join(sorted(STRATEGIES))})")
        for tf in e.timeframes:
            if tf not in cls.timeframes:
                raise ConfigError(f"{where}.timeframes: {e.strategy} does not run on {tf}")
        by_tf = {tf: _params(where, cls, {**indicator_defaults(cls, tf, indicators), **e.params})
                 for tf in e.timeframes}
        tokens = _resolve_instruments(where, e.instruments, universe)
        enabled[e.id] = (e.enabled, frozenset(e.timeframes))
        entries[e.id] = e
        if not e.enabled:
            continue
        for tf in e.timeframes:
            specs.append(StrategySpec(label_for(e.id, tf, len(e.timeframes)), cls, by_tf[tf], tf, tokens,
                                      e.product or file.defaults.product))
    ensembles: list[EnsembleSpec] = []
    if ensemble_path is not None and ensemble_path.exists():
        ensembles = _ensembles(ensemble_path, enabled, entries, specs, file)
    members = {s.label: s for s in specs}
    voting: dict[str, str] = {}
    for ens in ensembles:
        for m in ens.members:
            if m in voting:
                raise ConfigError(f"{ensemble_path.name if ensemble_path else 'ensemble.yaml'}: {m!r} votes in "
                                  f"both {voting[m]!r} and {ens.label!r} (a strategy votes in one ensemble)")
            voting[m] = ens.label
            members[m] = replace(members[m], ensemble=ens.label)
    infos = {i.instrument_token: InstrumentInfo(i.instrument_token, i.tradingsymbol, i.exchange, i.tick_size,
                                                max(i.lot_size, 1)) for i in universe if i.tradable}
    return Registry(path, file, tuple(members.values()), infos, tuple(ensembles))


def _ensembles(path: Path, enabled: dict[str, tuple[bool, frozenset[str]]], entries: dict[str, StrategyEntry],
               specs: list[StrategySpec], file: RegistryFile) -> list[EnsembleSpec]:
    from strategy.ensemble_engine import Ensemble, load_ensembles, validate_members  # noqa: PLC0415

    ens_file = load_ensembles(path)
    validate_members(ens_file, enabled, path)
    by_label = {s.label: s for s in specs}
    out: list[EnsembleSpec] = []
    for n, cfg in enumerate(ens_file.ensembles):
        if not cfg.enabled:
            continue
        if cfg.id in by_label:
            raise ConfigError(f"{path.name}: ensembles.{n}.id: {cfg.id!r} is also a strategy label in registry.yaml")
        common = frozenset.intersection(*(enabled[m][1] for m in cfg.members))
        tf = min(common, key=TF_MS.__getitem__)
        labels = tuple(label_for(m, tf, len(entries[m].timeframes)) for m in cfg.members)
        tokens = frozenset.union(*(by_label[lb].tokens for lb in labels))
        products = {by_label[lb].product for lb in labels}
        if len(products) > 1:
            raise ConfigError(f"{path.name}: ensembles[{cfg.id}]: members trade different products "
                              f"({', '.join(sorted(products))})")
        out.append(EnsembleSpec(cfg.id, _LabelledEnsemble(Ensemble(cfg), dict(zip(labels, cfg.members, strict=True))),
                                labels, tf, tokens, products.pop()))
    return out


class _LabelledEnsemble:
    """The ensemble keyed by registry ids, fed votes keyed by the engine's labels."""

    def __init__(self, ensemble: Any, ids: dict[str, str]) -> None:
        self.ensemble, self.ids = ensemble, ids

    def combine(self, votes: Mapping[str, Any]) -> Any:
        return self.ensemble.combine({self.ids[k]: v for k, v in votes.items() if k in self.ids})


def registry_path() -> Path:
    return Path(os.environ.get("STRATEGY_REGISTRY") or DEFAULT_REGISTRY)


def ensemble_path() -> Path:
    return Path(os.environ.get("STRATEGY_ENSEMBLES") or DEFAULT_ENSEMBLES)


def _apply_overlay(file: RegistryFile, overlay: Path, ensembles: Path) -> RegistryFile | None:
    """``file`` with ``enabled`` as the overlay says (members of enabled ensembles stay enabled); None: no file."""
    from strategy.ensemble_engine import load_ensembles  # noqa: PLC0415

    protected = {m: e.id for e in load_ensembles(ensembles).ensembles if e.enabled
                 for m in e.members} if ensembles.exists() else {}
    res = apply_file(overlay, {e.id: e.enabled for e in file.strategies}, protected)
    if res is None:
        return None
    entries = [e.model_copy(update={"enabled": res.enabled[e.id]}) for e in file.strategies]
    return file.model_copy(update={"strategies": entries})


def load_registry(path: Path | None = None, universe: Sequence[Instrument] | None = None,
                  ensembles: Path | None = None, overlay: Path | bool | None = True) -> Registry:
    """Load and validate the registry (and the ensembles beside it); one ConfigError line on a problem.

    ``overlay``: the scorer's overlay to apply when its file exists (True: ``TRADESTACK_REGISTRY_OVERLAY``
    or ``var/strategy/registry_overlay.yaml``; False/None: none, the registry as written)."""
    from core.settings import load_settings  # noqa: PLC0415
    from core.universe import load_universe  # noqa: PLC0415
    from strategy.indicators.config import load_indicator_config  # noqa: PLC0415

    path = path or registry_path()
    ens_path = ensembles if ensembles is not None else ensemble_path()
    file = load_config(path, RegistryFile)
    over = overlay_path() if overlay is True else overlay if isinstance(overlay, Path) else None
    overlaid = _apply_overlay(file, over, ens_path) if over is not None else None
    if overlaid is None:
        over = None
    else:
        file = overlaid
    config_dir = load_settings().config_dir
    if universe is None:
        universe = load_universe(config_dir / "tokens.csv")
    ind_path = config_dir / "indicators.yaml"
    indicators = load_indicator_config(ind_path) if ind_path.exists() else None
    return replace(build_registry(path, file, universe, ens_path, indicators), overlay=over)


def _check_registry(_: Path) -> object:
    return load_registry()


CONFIG_CHECKS = [(str(DEFAULT_REGISTRY), _check_registry)]
"""``make check-config`` validates the registry the runner loads (``STRATEGY_REGISTRY``, default
``strategy/registry.yaml``) with its ensembles and the scorer's overlay (:mod:`strategy.overlay`)."""
