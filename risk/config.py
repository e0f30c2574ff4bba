"""``configs/risk_budget.yaml``: the risk policy, validated (unknown keys forbidden, one line on error).

Loaded by both risk services (:mod:`risk.manager_v2`, :mod:`risk.order_budget_guard`) and by the
backtester, and checked by ``make check-config``. Amounts are rupees, percentages are of equity
(sizing) or of capital (buckets). Strategy names are the orders' ``strategy`` (a registry entry's
id, or an ensemble's id); bucket and per-strategy keys may be ``fnmatch`` patterns
(``ma_crossover_*``); an exact name wins over a pattern, the first matching pattern over later ones.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from core.config import StrictModel, load_config
from core.sessions import HHMM, hhmm_minutes
from core.settings import load_settings

FILE_NAME = "risk_budget.yaml"
PRODUCTS = ("MIS", "CNC", "NRML")
ProductName = Literal["MIS", "CNC", "NRML"]


def _mis_only() -> list[ProductName]:
    return ["MIS"]


class OrderCaps(StrictModel):
    """Order counts per window of the orders' ``signal_ts`` (IST calendar second/minute/day)."""

    per_second: int | None = Field(default=None, ge=1, description="orders per calendar second")
    per_minute: int | None = Field(default=None, ge=1)
    per_day: int | None = Field(default=None, ge=1)


class EntryHours(StrictModel):
    """When new entries may be signalled (exits always pass), on the order's ``signal_ts`` in IST."""

    within_session: bool = Field(default=True, description="inside the exchange's session (configs/sessions.yaml)")
    start_after_open_min: int = Field(default=0, ge=0, le=24 * 60)
    stop_before_close_min: int = Field(default=0, ge=0, le=24 * 60)
    start: HHMM | None = Field(default=None, description="optional IST HH:MM: no entry before")
    end: HHMM | None = Field(default=None, description="optional IST HH:MM: no entry at or after")

    @model_validator(mode="after")
    def _ordered(self) -> EntryHours:
        if self.start and self.end and hhmm_minutes(self.start) >= hhmm_minutes(self.end):
            raise ValueError(f"entry_hours: start {self.start} must be before end {self.end}")
        return self

    @property
    def start_min(self) -> int | None:
        return hhmm_minutes(self.start) if self.start else None

    @property
    def end_min(self) -> int | None:
        return hhmm_minutes(self.end) if self.end else None


class Bucket(StrictModel):
    """A share of capital for a group of strategies."""

    pct: float = Field(gt=0, le=100, description="% of capital this bucket may have in use")
    strategies: list[str] = Field(default_factory=list, description="names or fnmatch patterns")
    per_trade_pct: float | None = Field(default=None, gt=0, le=100,
                                        description="one order's notional at most this % of the bucket")


class StrategyLimits(StrictModel):
    """Per-strategy overrides and caps."""

    risk_per_trade_pct: float | None = Field(default=None, gt=0, le=100)
    max_notional: float | None = Field(default=None, gt=0, description="exposure of this strategy at most")
    max_open_positions: int | None = Field(default=None, ge=0)
    order_caps: OrderCaps = OrderCaps()
    enabled: bool = Field(default=True, description="false: every new entry rejected (exits pass)")


class RiskBudget(StrictModel):
    """The whole file."""

    capital: float = Field(gt=0, description="rupees; the buckets' base, and sizing's equity when the broker fails")
    equity_source: Literal["broker", "capital"] = Field(
        default="broker", description="broker: KiteConnect.margins (cached); capital: pinned (replays, backtests)")
    margins_ttl_s: float = Field(default=30.0, gt=0, le=3600)
    margins_timeout_s: float = Field(default=3.0, gt=0, le=60)
    margins_retry_s: float = Field(default=5.0, gt=0, le=3600,
                                   description="after a failed margins call, size on capital this long, then ask again")
    risk_per_trade_pct: float = Field(gt=0, le=100, description="% of equity lost if the stop is hit")
    default_stop_pct: float = Field(default=1.0, gt=0, le=100,
                                    description="stop distance for an entry without stop_loss, % of price")
    max_notional_per_order: float = Field(gt=0)
    max_position_notional: float | None = Field(default=None, gt=0, description="per instrument, all strategies")
    max_position_qty: int | None = Field(default=None, gt=0, description="per instrument, all strategies")
    max_open_positions: int = Field(ge=0, description="positions open (or entries pending) at once, account-wide")
    daily_loss_limit: float = Field(gt=0, description="rupees of realised + open loss in an IST day halting entries")
    max_price_age_s: float = Field(default=300, gt=0, description="a 1 s bar older than this is no entry price")
    allowed_products: list[ProductName] = Field(default_factory=_mis_only)
    freeze_qty: dict[str, int] = Field(default_factory=dict,
                                       description="max quantity of one order, by tradingsymbol or name")
    entry_hours: EntryHours = EntryHours()
    order_caps: OrderCaps = OrderCaps(per_second=10, per_minute=400, per_day=5000)
    strategy_order_caps: OrderCaps = Field(default=OrderCaps(),
                                           description="default caps for each strategy (strategies.X.order_caps wins)")
    buckets: dict[str, Bucket]
    strategies: dict[str, StrategyLimits] = Field(default_factory=dict)
    _bucket_memo: dict[str, str] = PrivateAttr(default_factory=dict)
    _caps_memo: dict[str, OrderCaps] = PrivateAttr(default_factory=dict)
    _limits_memo: dict[str, StrategyLimits] = PrivateAttr(default_factory=dict)

    @field_validator("freeze_qty")
    @classmethod
    def _freeze_positive(cls, v: dict[str, int]) -> dict[str, int]:
        for k, q in v.items():
            if q < 1:
                raise ValueError(f"freeze_qty.{k}: must be >= 1, got {q}")
        return v

    @model_validator(mode="after")
    def _buckets(self) -> RiskBudget:
        if "default" not in self.buckets:
            raise ValueError("buckets: a 'default' bucket is required (strategies no bucket names)")
        total = sum(b.pct for b in self.buckets.values())
        if total > 100 + 1e-9:
            raise ValueError(f"buckets: percentages add up to {total:g} > 100")
        seen: dict[str, str] = {}
        for name, b in self.buckets.items():
            for s in b.strategies:
                if s in seen:
                    raise ValueError(f"buckets.{name}.strategies: {s!r} is also in bucket {seen[s]!r}")
                seen[s] = name
        if not self.allowed_products:
            raise ValueError("allowed_products: at least one product")
        return self

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> RiskBudget:
        """A copy with its own (empty) lookup memos: a copy with other strategies or buckets must not
        answer from the original's."""
        copy = super().model_copy(update=update, deep=deep)
        object.__setattr__(copy, "__pydantic_private__", {k: {} for k in (self.__pydantic_private__ or {})})
        return copy

    # -- lookups ---------------------------------------------------------------
    def bucket_of(self, strategy: str) -> str:
        """The bucket a strategy draws on (exact name, then patterns in file order, else ``default``)."""
        # the private dict read directly: pydantic's __getattr__ path for a private attribute costs ~10 us,
        # more than the whole budget decision of an order in a backtest
        memo = self.__pydantic_private__["_bucket_memo"]  # type: ignore[index]
        hit = memo.get(strategy)
        if hit is None:
            hit = memo[strategy] = self._find_bucket(strategy)
        return hit

    def _find_bucket(self, strategy: str) -> str:
        for name, b in self.buckets.items():
            if strategy in b.strategies:
                return name
        for name, b in self.buckets.items():
            if any(fnmatch.fnmatchcase(strategy, p) for p in b.strategies):
                return name
        return "default"

    def limits_of(self, strategy: str) -> StrategyLimits:
        memo = self.__pydantic_private__["_limits_memo"]  # type: ignore[index]
        lim = memo.get(strategy)
        if lim is None:
            lim = memo[strategy] = self._find_limits(strategy)
        return lim

    def _find_limits(self, strategy: str) -> StrategyLimits:
        if strategy in self.strategies:
            return self.strategies[strategy]
        for pat, lim in self.strategies.items():
            if fnmatch.fnmatchcase(strategy, pat):
                return lim
        return _NO_LIMITS

    def bucket_budget(self, bucket: str) -> float:
        return self.capital * self.buckets[bucket].pct / 100

    def risk_pct(self, strategy: str) -> float:
        return self.limits_of(strategy).risk_per_trade_pct or self.risk_per_trade_pct

    def strategy_caps(self, strategy: str) -> OrderCaps:
        memo = self.__pydantic_private__["_caps_memo"]  # type: ignore[index]
        caps = memo.get(strategy)
        if caps is None:
            own = self.limits_of(strategy).order_caps
            d = self.strategy_order_caps
            caps = memo[strategy] = OrderCaps(per_second=own.per_second or d.per_second,
                                              per_minute=own.per_minute or d.per_minute,
                                              per_day=own.per_day or d.per_day)
        return caps

    def freeze_of(self, symbol: str, name: str | None = None) -> int | None:
        q = self.freeze_qty.get(symbol)
        if q is None and name:
            q = self.freeze_qty.get(name)
        return q


_NO_LIMITS = StrategyLimits()


def default_path() -> Path:
    """``$RISK_BUDGET`` or ``<TRADESTACK_CONFIG_DIR>/risk_budget.yaml``."""
    env = os.environ.get("RISK_BUDGET")
    if env:
        return Path(env)
    return load_settings().config_dir / FILE_NAME


def load_budget(path: str | Path | None = None) -> RiskBudget:
    """Load and validate the file (one-line :class:`core.errors.ConfigError` on any problem)."""
    return load_config(Path(path) if path else default_path(), RiskBudget)


CONFIG_CHECKS = [(FILE_NAME, load_budget)]
