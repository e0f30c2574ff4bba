"""The registry overlay: the next-day scorer's enable/disable decisions, applied over ``strategy/registry.yaml``.

``python -m backtest.scorer`` writes it (atomically) to ``var/strategy/registry_overlay.yaml``
(``TRADESTACK_REGISTRY_OVERLAY`` overrides the path); :func:`strategy.registry.load_registry` applies
it when the file exists, so the runner (and ``make check-config``) see the registry as decided::

    scored_for: 2026-11-23                 # the trading day the decisions are for
    generated_at: 2026-11-20T18:05:12+05:30
    strategies:
      orb_5m: {enabled: false, reason: "max drawdown 17.2% > 15% cap: demote"}
      supertrend_5m: {enabled: true, reason: "score 1.84 >= 0.00 over 31 trades, drawdown 3.1% within 15%: promote"}

An entry sets ``enabled`` of the registry entry with that id. An id the registry no longer has is
ignored with a warning (the registry changed since scoring); a member of an enabled ensemble stays
enabled (the ensemble would be invalid without it), with a warning. A malformed file (bad YAML, an
unknown key, a wrong type) is one :class:`~core.errors.ConfigError` line naming the file and the key.
Delete the file (or an entry) to run the registry as written.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

from pydantic import Field

from core.config import StrictModel, load_config
from core.settings import PROJECT_ROOT

log = logging.getLogger(__name__)

OVERLAY_ENV = "TRADESTACK_REGISTRY_OVERLAY"
DEFAULT_OVERLAY = PROJECT_ROOT / "var" / "strategy" / "registry_overlay.yaml"


class OverlayEntry(StrictModel):
    enabled: bool
    reason: str = ""


class OverlayFile(StrictModel):
    scored_for: date
    generated_at: datetime | None = None
    strategies: dict[str, OverlayEntry] = Field(default_factory=dict)


@dataclass(frozen=True)
class OverlayResult:
    """What applying an overlay decided: the ``enabled`` of every registry id, and what it changed."""

    path: Path
    scored_for: date
    enabled: dict[str, bool]
    changed: dict[str, bool] = field(default_factory=dict)
    ignored: tuple[str, ...] = ()
    kept_for_ensembles: tuple[str, ...] = ()


def overlay_path() -> Path:
    """``$TRADESTACK_REGISTRY_OVERLAY`` or ``var/strategy/registry_overlay.yaml`` of the project."""
    env = os.environ.get(OVERLAY_ENV)
    if not env:
        return DEFAULT_OVERLAY
    p = Path(env)
    return p if p.is_absolute() else PROJECT_ROOT / p


def load_overlay(path: Path) -> OverlayFile:
    """Load and validate one overlay file (one-line ConfigError naming the file and the key)."""
    return load_config(path, OverlayFile)


def resolve(path: Path, overlay: OverlayFile, registry: Mapping[str, bool],
            protected: Mapping[str, str] | None = None) -> OverlayResult:
    """Apply ``overlay`` to ``registry`` (id -> enabled as written); pure.

    ``protected``: id -> the enabled ensemble it votes in (an overlay never disables it)."""
    protected = protected or {}
    enabled = dict(registry)
    changed: dict[str, bool] = {}
    kept: list[str] = []
    for sid, entry in overlay.strategies.items():
        if sid not in enabled:
            continue
        if not entry.enabled and sid in protected:
            kept.append(sid)
            continue
        if enabled[sid] != entry.enabled:
            changed[sid] = entry.enabled
        enabled[sid] = entry.enabled
    ignored = tuple(sorted(set(overlay.strategies) - set(registry)))
    return OverlayResult(path, overlay.scored_for, enabled, changed, ignored, tuple(kept))


def apply_file(path: Path, registry: Mapping[str, bool], protected: Mapping[str, str] | None = None
               ) -> OverlayResult | None:
    """Load ``path`` (None when there is no such file), resolve it against ``registry`` and log the outcome."""
    if not path.is_file():
        log.info("registry overlay none file=%s", path)
        return None
    res = resolve(path, load_overlay(path), registry, protected)
    for sid in res.ignored:
        log.warning("registry overlay: %s: strategy %r is not in the registry (changed since scoring): ignored",
                    path, sid)
    for sid in res.kept_for_ensembles:
        log.warning("registry overlay: %s: strategy %r votes in enabled ensemble %r: stays enabled",
                    path, sid, (protected or {})[sid])
    on = ",".join(sorted(s for s, v in res.changed.items() if v)) or "-"
    off = ",".join(sorted(s for s, v in res.changed.items() if not v)) or "-"
    log.info("registry overlay applied file=%s scored_for=%s enabled=%s disabled=%s", path,
             res.scored_for.isoformat(), on, off)
    return res
