"""``configs/indicators.yaml``: indicator parameters per bar timeframe, validated like ``create()`` validates.

Shape (every timeframe key optional when ``default`` is given; a timeframe's entries override
``default``'s entries of the same name)::

    default:
      atr: {name: atr, period: 14}
    1m:
      ema_fast: {name: ema, period: 9}
      bb: {name: bollinger, period: 20, stddev: 2.0}

Each entry is ``name`` plus that indicator's parameters, checked by
:func:`strategy.indicators.validate_params` (the very check ``create`` runs), so a config that
loads is a config whose indicators build. A bad file is one :class:`~core.errors.ConfigError`
line naming the file, the key and the problem, e.g.
``configs/indicators.yaml: 5m.rsi: Value error, rsi: period must be >= 2 (got 1)``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, StringConstraints, model_validator

from core.config import StrictModel, load_config
from strategy.indicators import Indicator, create, validate_params

TIMEFRAMES = ("1m", "3m", "5m", "15m", "30m", "60m")
EntryName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,39}$")]


class IndicatorSpec(StrictModel):
    """One indicator: its ``create`` name and parameters (written flat in YAML, beside ``name``)."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict, description="validated, defaults filled in")

    @model_validator(mode="before")
    @classmethod
    def _flat(cls, data: Any) -> Any:
        """``{name: ema, period: 9}`` -> name + params, each checked by the indicator's own rules."""
        if not isinstance(data, dict):
            raise ValueError("an indicator is a mapping like {name: ema, period: 9}")
        if "name" not in data:
            raise ValueError("missing 'name' (one of the strategy.indicators names)")
        params = {k: v for k, v in data.items() if k != "name"}
        return {"name": data["name"], "params": validate_params(data["name"], params)}

    def build(self) -> Indicator:
        """A fresh indicator with these parameters."""
        return create(self.name, **self.params)


Entries = dict[EntryName, IndicatorSpec]


class IndicatorConfig(StrictModel):
    """The whole file: ``default`` and per-timeframe entries; unknown timeframe keys are errors."""

    default: Entries = Field(default_factory=dict, description="entries every timeframe gets")
    tf_1m: Entries | None = Field(default=None, alias="1m")
    tf_3m: Entries | None = Field(default=None, alias="3m")
    tf_5m: Entries | None = Field(default=None, alias="5m")
    tf_15m: Entries | None = Field(default=None, alias="15m")
    tf_30m: Entries | None = Field(default=None, alias="30m")
    tf_60m: Entries | None = Field(default=None, alias="60m")

    @model_validator(mode="after")
    def _every_timeframe_covered(self) -> IndicatorConfig:
        if not self.default:
            missing = [tf for tf in TIMEFRAMES if getattr(self, f"tf_{tf}") is None]
            if missing:
                raise ValueError(f"timeframe(s) {', '.join(missing)} missing and no 'default' entries")
        return self

    def for_timeframe(self, timeframe: str) -> dict[str, IndicatorSpec]:
        """The entries for ``timeframe``: ``default`` overridden by the timeframe's own."""
        if timeframe not in TIMEFRAMES:
            raise ValueError(f"unknown timeframe {timeframe!r} (expected one of: {', '.join(TIMEFRAMES)})")
        return {**self.default, **(getattr(self, f"tf_{timeframe}") or {})}

    def build(self, timeframe: str) -> dict[str, Indicator]:
        """Fresh indicators for ``timeframe``, by entry name."""
        return {key: spec.build() for key, spec in self.for_timeframe(timeframe).items()}


def load_indicator_config(path: str | Path) -> IndicatorConfig:
    """Load and validate ``path`` (``configs/indicators.yaml``) or raise a one-line ConfigError."""
    return load_config(path, IndicatorConfig)


CONFIG_CHECKS: list[tuple[str, Callable[[Path], object]]] = [("indicators.yaml", load_indicator_config)]
"""For ``make check-config`` (entry point ``strategy_indicators`` in pyproject.toml)."""
