"""Ensembles: several member strategies vote on one bar; at most one consolidated Signal comes out.

Each member strategy (an id from ``strategy/registry.yaml``) runs on the same
instrument and timeframe and votes a :class:`~strategy.api.Signal` or abstains
(``None``). An :class:`Ensemble` folds the votes by its ``mode``:

- ``any``: at least one vote for a side and none for the other;
- ``all``: every member votes the same side;
- ``k_of_n``: at least ``k`` members vote the same side;
- ``weighted``: ``score = sum(weight * (+1 BUY / -1 SELL) * strength)``; BUY when
  ``score >= threshold``, SELL when ``score <= -threshold``;
- ``priority``: the first member (member order) that votes decides.

When both sides qualify (``any`` with votes on both sides, ``k_of_n`` with both
sides at ``k``), ``on_conflict`` decides: ``flat`` (no signal, the default),
``priority`` (the side of the earliest voter in member order) or ``majority``
(the side with more votes; a tie gives no signal).

The consolidated signal takes the winning side; it is an entry if any
winning-side vote is an entry (an entry also closes an opposite position),
else an exit; its stop is the widest winning entry stop (lowest for BUY,
highest for SELL) so no member's risk budget is cut short; its strength is the
fraction of members on the winning side (weighted: ``|score| / sum of weights``).

:meth:`Ensemble.combine` also returns a votes record (plain JSON types, member
order) that the decision engine puts into the Order's ``extra`` so every
ensemble order can be audited back to its votes.

This module is pure: no I/O, no clock. :func:`load_ensembles` reads
``strategy/ensemble.yaml``; :func:`validate_members` checks it against the
registry (supplied by the caller, so this module does not depend on the
registry's loader).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, Strict, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from core.config import StrictModel, load_config
from core.errors import ConfigError
from strategy.api import Side, Signal

Mode = Literal["any", "all", "k_of_n", "weighted", "priority"]
OnConflict = Literal["flat", "priority", "majority"]

_FiniteFloat = Annotated[float, Strict(), Field(allow_inf_nan=False)]
_Id = Annotated[str, Strict(), Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")]

_CONFLICT_MODES = ("any", "k_of_n")
_EPS = 1e-9
"""Relative tolerance of the weighted threshold test (float sums: 0.7 + 0.1 must reach a threshold of 0.8)."""


def _bad(msg: str) -> PydanticCustomError:
    # A custom error keeps the message free of pydantic's "Value error," prefix; the loc names the key.
    return PydanticCustomError("ensemble_config", msg)


class EnsembleConfig(StrictModel):
    """One ensemble of ``strategy/ensemble.yaml``.

    Options belong to the modes that use them (``k`` to ``k_of_n``, ``weights`` and
    ``threshold`` to ``weighted``, ``on_conflict`` to ``any``/``k_of_n``): an option
    given to another mode is an error, because it would silently do nothing.
    """

    id: _Id
    """Becomes the Order's ``strategy``; must differ from every registry strategy id."""
    enabled: Annotated[bool, Strict()] = True
    members: list[_Id] = Field(min_length=2)
    """Registry strategy ids; their order is the priority order and the votes record's order."""
    mode: Mode
    k: Annotated[int, Strict()] | None = Field(default=None, validate_default=True)
    weights: dict[str, _FiniteFloat] | None = Field(default=None, validate_default=True)
    threshold: _FiniteFloat | None = Field(default=None, validate_default=True)
    on_conflict: OnConflict | None = Field(default=None, validate_default=True)

    @property
    def conflict(self) -> OnConflict:
        """The conflict rule in force (``flat`` unless given)."""
        return self.on_conflict or "flat"

    @field_validator("members")
    @classmethod
    def _unique_members(cls, v: list[str]) -> list[str]:
        seen: set[str] = set()
        for m in v:
            if m in seen:
                raise _bad(f"duplicate member {m!r}")
            seen.add(m)
        return v

    @field_validator("k")
    @classmethod
    def _k(cls, v: int | None, info: ValidationInfo) -> int | None:
        mode, members = info.data.get("mode"), info.data.get("members")
        if mode is None:  # the mode itself is invalid and reported
            return v
        if mode != "k_of_n":
            if v is not None:
                raise _bad(f"only used by mode k_of_n (mode is {mode!r})")
            return v
        if v is None:
            raise _bad("required by mode k_of_n")
        if members is not None and not 1 <= v <= len(members):
            raise _bad(f"must be between 1 and the {len(members)} members")
        return v

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: dict[str, float] | None, info: ValidationInfo) -> dict[str, float] | None:
        mode, members = info.data.get("mode"), info.data.get("members")
        if mode is None:
            return v
        if mode != "weighted":
            if v is not None:
                raise _bad(f"only used by mode weighted (mode is {mode!r})")
            return v
        if v is None:
            raise _bad("required by mode weighted (a weight > 0 for every member)")
        for name, w in v.items():
            if members is not None and name not in members:
                raise _bad(f"{name!r} is not a member")
            if w <= 0:
                raise _bad(f"{name!r}: weight must be > 0 (got {w!r})")
        missing = [m for m in members or () if m not in v]
        if missing:
            raise _bad(f"no weight for member(s) {', '.join(map(repr, missing))}")
        return v

    @field_validator("threshold")
    @classmethod
    def _threshold(cls, v: float | None, info: ValidationInfo) -> float | None:
        mode, weights = info.data.get("mode"), info.data.get("weights")
        if mode is None:
            return v
        if mode != "weighted":
            if v is not None:
                raise _bad(f"only used by mode weighted (mode is {mode!r})")
            return v
        if v is None:
            raise _bad("required by mode weighted")
        if weights is not None:  # else the weights error is the one reported
            total = sum(weights.values())
            if not 0 < v <= total:
                raise _bad(f"must be > 0 and <= the sum of the weights ({total:g})")
        return v

    @field_validator("on_conflict")
    @classmethod
    def _on_conflict(cls, v: OnConflict | None, info: ValidationInfo) -> OnConflict | None:
        mode = info.data.get("mode")
        if v is not None and mode is not None and mode not in _CONFLICT_MODES:
            raise _bad(f"only used by modes any and k_of_n (mode {mode!r} has no conflicts)")
        return v


class EnsembleFile(StrictModel):
    """``strategy/ensemble.yaml``: the ensembles, ids unique."""

    ensembles: list[EnsembleConfig] = Field(default_factory=list)

    @field_validator("ensembles")
    @classmethod
    def _unique_ids(cls, v: list[EnsembleConfig]) -> list[EnsembleConfig]:
        first: dict[str, int] = {}
        for i, e in enumerate(v):
            if e.id in first:
                raise _bad(f"duplicate id {e.id!r} (ensembles.{first[e.id]} and ensembles.{i})")
            first[e.id] = i
        return v


def load_ensembles(path: str | Path) -> EnsembleFile:
    """Load and validate ``strategy/ensemble.yaml``; a bad file raises a one-line ConfigError."""
    return load_config(path, EnsembleFile)


def ensemble_timeframes(config: EnsembleConfig, strategies: Mapping[str, tuple[bool, frozenset[str]]]
                        ) -> frozenset[str]:
    """The timeframes every member may run on (where the ensemble can run); empty if none or a member is unknown."""
    sets = [strategies[m][1] if m in strategies else frozenset[str]() for m in config.members]
    return frozenset.intersection(*sets)


def validate_members(ensembles: EnsembleFile, strategies: Mapping[str, tuple[bool, frozenset[str]]],
                     path: str | Path) -> None:
    """Check the ensembles against the registry (``strategies``: id -> (enabled, timeframes)).

    Every ensemble id must differ from every strategy id (both become an Order's
    ``strategy``, and order ids derive from it). An enabled ensemble's members
    must exist, be enabled and share at least one timeframe. Disabled ensembles
    are not checked further, so one can be kept while its members are reworked.
    Raises a one-line ConfigError naming ``path`` and the key.
    """
    for i, e in enumerate(ensembles.ensembles):
        if e.id in strategies:
            raise ConfigError(f"{path}: ensembles.{i}.id: {e.id!r} is also a strategy id in registry.yaml")
        if not e.enabled:
            continue
        for m in e.members:
            if m not in strategies:
                raise ConfigError(f"{path}: ensembles.{i}.members: {m!r} is not in registry.yaml")
            if not strategies[m][0]:
                raise ConfigError(f"{path}: ensembles.{i}.members: {m!r} is disabled in registry.yaml "
                                  f"(disable the ensemble or enable the member)")
        if not ensemble_timeframes(e, strategies):
            tfs = "; ".join(f"{m}: {','.join(sorted(strategies[m][1])) or '-'}" for m in e.members)
            raise ConfigError(f"{path}: ensembles.{i}.members: no timeframe shared by all members ({tfs})")


def _vote_label(s: Signal | None) -> str | None:
    return None if s is None else f"{s.side}:{s.kind}"


class Ensemble:
    """One ensemble's vote folding, built once from its config, then :meth:`combine` per instrument and bar."""

    __slots__ = ("config", "id", "members", "mode", "_n", "_weights", "_total_weight", "_label")

    def __init__(self, config: EnsembleConfig) -> None:
        self.config = config
        self.id = config.id
        self.members: tuple[str, ...] = tuple(config.members)
        self.mode: Mode = config.mode
        self._n = len(self.members)
        w = config.weights or {}
        self._weights = tuple(float(w.get(m, 1.0)) for m in self.members)
        self._total_weight = sum(self._weights)
        if config.mode == "k_of_n":
            self._label = f"k_of_n(k={config.k})"
        elif config.mode == "weighted":
            self._label = f"weighted(threshold={config.threshold:g})"
        else:
            self._label = config.mode

    def combine(self, votes: Mapping[str, Signal | None]) -> tuple[Signal | None, dict[str, Any]]:
        """Fold the members' votes (keyed by member id) into at most one Signal, plus the votes record.

        A member missing from ``votes`` abstains; keys that are not members are
        ignored (the caller may pass every strategy's vote on the bar).
        """
        cast = [votes.get(m) for m in self.members]
        buy = [i for i, s in enumerate(cast) if s is not None and s.side == "BUY"]
        sell = [i for i, s in enumerate(cast) if s is not None and s.side == "SELL"]
        score = 0.0
        for i, s in enumerate(cast):
            if s is not None:
                score += self._weights[i] * s.direction * s.strength
        side, note = self._decide(cast, buy, sell, score)
        record: dict[str, Any] = {
            "mode": self.mode,
            "votes": {m: _vote_label(s) for m, s in zip(self.members, cast, strict=True)},
            "buy": len(buy),
            "sell": len(sell),
            "score": round(score, 10),
            "decision": side,
        }
        if note:
            record["note"] = note
        if side is None:
            return None, record
        winners = buy if side == "BUY" else sell
        return self._signal(side, [cast[i] for i in winners], winners, score, note), record

    def _decide(self, cast: list[Signal | None], buy: list[int], sell: list[int], score: float
                ) -> tuple[Side | None, str]:
        """The winning side (or None) and a note on how a conflict was resolved or why nothing came out."""
        mode = self.mode
        if mode == "weighted":
            thr = self.config.threshold or 0.0
            tol = _EPS * thr
            if score >= thr - tol:
                return "BUY", ""
            if score <= -thr + tol:
                return "SELL", ""
            return None, "below threshold" if buy or sell else "no votes"
        if mode == "priority":
            first = next((s for s in cast if s is not None), None)
            return (None, "no votes") if first is None else (first.side, "")
        if mode == "all":
            if len(buy) == self._n:
                return "BUY", ""
            if len(sell) == self._n:
                return "SELL", ""
            return None, "not unanimous" if buy or sell else "no votes"
        # any is k_of_n with k = 1: a single vote on each side is already a conflict.
        need = (self.config.k or 1) if mode == "k_of_n" else 1
        buy_ok, sell_ok = len(buy) >= need, len(sell) >= need
        if buy_ok and not sell_ok:
            return "BUY", ""
        if sell_ok and not buy_ok:
            return "SELL", ""
        if not buy_ok:
            return None, "no quorum" if buy or sell else "no votes"
        return self._resolve(buy, sell)

    def _resolve(self, buy: list[int], sell: list[int]) -> tuple[Side | None, str]:
        rule = self.config.conflict
        if rule == "priority":
            return ("BUY" if buy[0] < sell[0] else "SELL"), "conflict: priority"
        if rule == "majority":
            if len(buy) == len(sell):
                return None, "conflict: majority tie"
            return ("BUY" if len(buy) > len(sell) else "SELL"), "conflict: majority"
        return None, "conflict: flat"

    def _signal(self, side: Side, winning: list[Signal | None], idx: list[int], score: float, note: str) -> Signal:
        entries = [s for s in winning if s is not None and s.kind == "entry"]
        stops = [s.stop_loss for s in entries if s.stop_loss is not None]
        stop = (min(stops) if side == "BUY" else max(stops)) if stops else None
        if self.mode == "weighted":
            strength = min(1.0, abs(score) / self._total_weight)
            tally = f"score {score:+.4g}"
        else:
            strength = len(idx) / self._n
            tally = f"{len(idx)}/{self._n}"
        voters = ", ".join(self.members[i] for i in idx)
        reason = f"ensemble {self.id} {self._label}: {side} {tally} [{voters}]" + (f" ({note})" if note else "")
        return Signal(side=side, kind="entry" if entries else "exit", stop_loss=stop, reason=reason,
                      strength=strength)
