"""``configs/execution.yaml``: the Zerodha gateway's and poller's settings, validated (one line on error)."""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path

from pydantic import Field, model_validator

from core.config import StrictModel, load_config
from core.settings import load_settings

FILE_NAME = "execution.yaml"


class Pacer(StrictModel):
    """Order requests we allow ourselves per window of wall time (Kite: 10/s, 400/min, 5000/day)."""

    per_second: int = Field(default=8, ge=1, le=10, description="Kite refuses more than 10 in a calendar second")
    per_minute: int = Field(default=390, ge=1, le=400, description="a margin under 400: bunches and jitter")
    per_day: int = Field(default=5000, ge=1, le=5000)

    def windows(self) -> tuple[tuple[float, int], ...]:
        return ((1.0, self.per_second), (60.0, self.per_minute), (86_400.0, self.per_day))


class Ambiguous(StrictModel):
    first_lookup_s: float = Field(default=1.0, gt=0, le=60)
    window_s: float = Field(default=60.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _ordered(self) -> Ambiguous:
        if self.window_s < self.first_lookup_s:
            raise ValueError(f"ambiguous: window_s {self.window_s} is shorter than first_lookup_s "
                             f"{self.first_lookup_s}")
        return self


class ProtectiveStops(StrictModel):
    strategies: list[str] = Field(default_factory=list, description="names or fnmatch patterns")

    def applies(self, strategy: str) -> bool:
        return any(strategy == p or fnmatch.fnmatchcase(strategy, p) for p in self.strategies)


class ExecutionConfig(StrictModel):
    pacer: Pacer = Pacer()
    market_protection: float = Field(default=-1, description="-1 automatic, or a percentage in (0, 100]")
    request_timeout_s: float = Field(default=7.0, gt=0, le=60)
    placer_threads: int = Field(default=4, ge=1, le=32)
    ambiguous: Ambiguous = Ambiguous()
    poll_interval_s: float = Field(default=2.0, gt=0, le=300)
    ip_retry_s: float = Field(default=60.0, gt=0, le=3600, description="while Kite refuses this IP: one try per")
    protective_stops: ProtectiveStops = ProtectiveStops()

    @model_validator(mode="after")
    def _protection(self) -> ExecutionConfig:
        mp = self.market_protection
        if mp != -1 and not 0 < mp <= 100:
            raise ValueError(f"market_protection must be -1 (automatic) or a percentage in (0, 100], got {mp:g} "
                             "(0 is rejected by Kite since April 2026)")
        return self


def default_path() -> Path:
    """``$EXECUTION_CONFIG`` or ``<TRADESTACK_CONFIG_DIR>/execution.yaml``."""
    env = os.environ.get("EXECUTION_CONFIG")
    return Path(env) if env else load_settings().config_dir / FILE_NAME


def load_execution(path: str | Path | None = None) -> ExecutionConfig:
    return load_config(Path(path) if path else default_path(), ExecutionConfig)


CONFIG_CHECKS = [(FILE_NAME, load_execution)]
