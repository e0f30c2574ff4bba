"""How long each bar stage can hold a bar back, and the wall graces that follow (pure, no I/O).

The bar pipeline closes a quiet instrument's bar by wall time: the builder
after ``wall_grace`` of quiet, an aggregator after its own wall grace on a
clock (:class:`compute.bar_service.WallClockGate`) that stands still while its
input stalls. The rule that keeps ``kill -9`` of any stage from closing a
parent before its last child arrives: *each aggregator's wall grace must
exceed the longest time its input can hold a child back* (plus transport).

What an input can hold back (``input_hold``), for a stage fed by ``up``:

* ``up.hold``: in steady state the upstream emits a bucket's bar up to this
  long after the bucket ends (the builder: ``2 * grace + wall_grace``; an
  aggregator: its own input hold + ``max(grace, wall_grace)`` + the longest
  time its clock can stand still in one stall, ``silent_close - live_window``);
* ``live_window``: when the upstream dies, this stage's clock keeps running
  until its input has been quiet for its live window (which must exceed the
  input's own cadence, else the clock stops between normal messages and falls
  behind for good: 5 s for 1 s bars, 65 s for 1 m bars);
* ``up.restart_hold``: a restarted upstream replays its input and re-emits a
  held bar within ``grace + wall_grace`` of reading it again.

So ``min_wall_grace = up.hold + live_window + up.restart_hold + TRANSPORT_MS``.
A restart longer than ``silent_close`` lets the clock run again (the session
may be over), so ``silent_close`` must exceed the live window and the
upstream's restart time (process start + consumer-group join, a few seconds):
the defaults give it 25 s over the live window.

Known limit: ``up.hold`` of an aggregator counts one stall. The gate's clock
never catches up after a stall, so each further upstream restart on the same
day adds its stall (up to ``silent_close - live_window``) to what that stage
holds back for the next; many restarts in one session can outgrow the next
stage's margin.

The shipped defaults are computed here, each with :data:`SAFETY_MARGIN_MS`
above its minimum (rounded up to whole 5 s), and :func:`check_chain` rejects
a configuration that breaks the rule.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

#: Loopback produce -> consume -> decode of a child bar, with room for a slow batch.
TRANSPORT_MS = 1000
#: Added on top of each derived minimum for the shipped defaults.
SAFETY_MARGIN_MS = 4000
#: An aggregator's input partition quiet longer than this counts as stalled (its clock stops): the
#: input's cadence plus room (1 s bars: 1 s; 1 m bars: 60 s, all instruments' at about the same time).
LIVE_WINDOW_MS = 5000
LIVE_WINDOW_MULTI_MS = 65000
#: Builder defaults (event-time grace; wall grace for quiet instruments).
BAR_GRACE_MS = 2000
BAR_WALL_GRACE_MS = 2000
#: Aggregators: event-time grace (children arrive in ``ts`` order) and the silent closes.
AGG_GRACE_MS = 0
AGG_SILENT_CLOSE_MS = LIVE_WINDOW_MS + 25000
AGG_MULTI_SILENT_CLOSE_MS = LIVE_WINDOW_MULTI_MS + 25000

#: Environment names of the knobs (the supervisor gives every bar service the same env).
ENV = {
    "bar_grace_ms": "BAR_GRACE_MS",
    "bar_wall_grace_ms": "BAR_WALL_GRACE_MS",
    "agg_grace_ms": "AGG_GRACE_MS",
    "agg_1m_wall_grace_ms": "AGG_1M_WALL_GRACE_MS",
    "agg_multi_wall_grace_ms": "AGG_MULTI_WALL_GRACE_MS",
    "agg_silent_close_ms": "AGG_SILENT_CLOSE_MS",
    "agg_multi_silent_close_ms": "AGG_MULTI_SILENT_CLOSE_MS",
}


@dataclass(frozen=True)
class StageHold:
    """What one stage can hold back: in steady state (``hold``) and right after a restart."""

    hold_ms: int
    restart_hold_ms: int


def builder_hold(grace_ms: int, wall_grace_ms: int) -> StageHold:
    """The 1 s builder: a bar can come out ``2 * grace + wall_grace`` after its end."""
    return StageHold(2 * grace_ms + wall_grace_ms, grace_ms + wall_grace_ms)


def input_hold(up: StageHold, live_window_ms: int = LIVE_WINDOW_MS) -> int:
    """The longest a child can arrive after its parent's end, the upstream's restarts included."""
    return up.hold_ms + live_window_ms + up.restart_hold_ms


def min_wall_grace(up: StageHold, live_window_ms: int = LIVE_WINDOW_MS) -> int:
    """The smallest safe wall grace for a stage fed by ``up``."""
    return input_hold(up, live_window_ms) + TRANSPORT_MS


def rollup_hold(up: StageHold, grace_ms: int, wall_grace_ms: int, silent_close_ms: int,
                live_window_ms: int = LIVE_WINDOW_MS) -> StageHold:
    """An aggregator fed by ``up``: what it can hold back for the stage after it."""
    stall = max(0, silent_close_ms - live_window_ms)
    own = max(grace_ms, wall_grace_ms)
    return StageHold(input_hold(up, live_window_ms) + own + stall, own)


def _round_up(ms: int, step: int = 5000) -> int:
    return -(-ms // step) * step


def default_wall_graces(grace_ms: int = BAR_GRACE_MS, wall_grace_ms: int = BAR_WALL_GRACE_MS,
                        agg_grace_ms: int = AGG_GRACE_MS,
                        silent_close_ms: int = AGG_SILENT_CLOSE_MS) -> tuple[int, int]:
    """``(1m, multi)`` wall graces: each stage's minimum + :data:`SAFETY_MARGIN_MS`, rounded up to 5 s."""
    builder = builder_hold(grace_ms, wall_grace_ms)
    one_m = _round_up(min_wall_grace(builder) + SAFETY_MARGIN_MS)
    agg_1m = rollup_hold(builder, agg_grace_ms, one_m, silent_close_ms)
    return one_m, _round_up(min_wall_grace(agg_1m, LIVE_WINDOW_MULTI_MS) + SAFETY_MARGIN_MS)


#: The shipped defaults (20000 and 150000 with the builder's 2000/2000 and a 30 s silent close).
AGG_1M_WALL_GRACE_MS, AGG_MULTI_WALL_GRACE_MS = default_wall_graces()


@dataclass(frozen=True)
class Knobs:
    """The wall-clock knobs of the whole pipeline, as the supervisor passes them to every stage."""

    bar_grace_ms: int = BAR_GRACE_MS
    bar_wall_grace_ms: int = BAR_WALL_GRACE_MS
    agg_grace_ms: int = AGG_GRACE_MS
    agg_1m_wall_grace_ms: int = AGG_1M_WALL_GRACE_MS
    agg_multi_wall_grace_ms: int = AGG_MULTI_WALL_GRACE_MS
    agg_silent_close_ms: int = AGG_SILENT_CLOSE_MS
    agg_multi_silent_close_ms: int = AGG_MULTI_SILENT_CLOSE_MS


def check_chain(k: Knobs, stage: str = "all") -> list[str]:
    """Violations of the hold rule, one line each (empty: safe).

    ``stage`` is ``"1m"``, ``"multi"`` or ``"all"``: which aggregator's wall grace to check.
    """
    problems = []
    for name in ENV:
        if getattr(k, name) < 0:
            problems.append(f"{ENV[name]}={getattr(k, name)} must be >= 0")
    if problems:
        return problems
    if stage in ("1m", "all") and k.agg_silent_close_ms <= LIVE_WINDOW_MS:
        problems.append(f"AGG_SILENT_CLOSE_MS={k.agg_silent_close_ms} must exceed the live window "
                        f"{LIVE_WINDOW_MS} ms (and an upstream restart)")
    if stage in ("multi", "all") and k.agg_multi_silent_close_ms <= LIVE_WINDOW_MULTI_MS:
        problems.append(f"AGG_MULTI_SILENT_CLOSE_MS={k.agg_multi_silent_close_ms} must exceed the live window "
                        f"{LIVE_WINDOW_MULTI_MS} ms (and an upstream restart)")
    builder = builder_hold(k.bar_grace_ms, k.bar_wall_grace_ms)
    need_1m = min_wall_grace(builder)
    if stage in ("1m", "all") and k.agg_1m_wall_grace_ms < need_1m:
        problems.append(f"AGG_1M_WALL_GRACE_MS={k.agg_1m_wall_grace_ms} is below {need_1m}: the builder "
                        f"(BAR_GRACE_MS={k.bar_grace_ms}, BAR_WALL_GRACE_MS={k.bar_wall_grace_ms}) can hold a "
                        f"1s bar back {input_hold(builder)} ms, restarts included")
    agg_1m = rollup_hold(builder, k.agg_grace_ms, k.agg_1m_wall_grace_ms, k.agg_silent_close_ms)
    need_multi = min_wall_grace(agg_1m, LIVE_WINDOW_MULTI_MS)
    if stage in ("multi", "all") and k.agg_multi_wall_grace_ms < need_multi:
        problems.append(f"AGG_MULTI_WALL_GRACE_MS={k.agg_multi_wall_grace_ms} is below {need_multi}: the 1m "
                        f"aggregator (AGG_1M_WALL_GRACE_MS={k.agg_1m_wall_grace_ms}, AGG_SILENT_CLOSE_MS="
                        f"{k.agg_silent_close_ms}) can hold a 1m bar back "
                        f"{input_hold(agg_1m, LIVE_WINDOW_MULTI_MS)} ms")
    return problems


def knobs_from_env(env: Mapping[str, str] | None = None, **overrides: int | None) -> Knobs:
    """The knobs from ``env`` (default ``os.environ``), then non-None ``overrides`` (CLI flags).

    Raises ValueError naming the variable when a value is not an integer.
    """
    env = os.environ if env is None else env
    values: dict[str, int] = {}
    for field, var in ENV.items():
        raw = env.get(var)
        if raw not in (None, ""):
            try:
                values[field] = int(raw)
            except ValueError:
                raise ValueError(f"environment: {var}: not an integer (got {raw!r})") from None
    values.update({f: v for f, v in overrides.items() if v is not None})
    if "bar_wall_grace_ms" not in values and "bar_grace_ms" in values:
        values["bar_wall_grace_ms"] = values["bar_grace_ms"]  # the builder's wall grace defaults to its grace
    return Knobs(**values)
