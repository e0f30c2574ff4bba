"""Numeric ranges of the event contracts: the one place the decoders and the models take them from.

Plain ints/floats on purpose, so the fast decoders (Python and C++) and the
pydantic models (:mod:`schemas.models`) can state the same rules. The bar
bounds are chosen so that a parent bar aggregated from valid children never
violates the table column types (``volume bigint``, ``ticks integer``,
``cum_volume bigint``, see ``infra/postgres/init/01_trading_v1.sql``) nor the
bounds the next stage checks: a bar of timeframe ``tf`` may hold at most
``seconds(tf) * MAX_BAR_VOLUME_PER_S`` volume and ``seconds(tf) *
MAX_BAR_TICKS_PER_S`` ticks (:func:`max_bar_volume`, :func:`max_bar_ticks`),
and a child's ``ts`` is aligned to its timeframe, so a parent holds at most
``seconds(parent) / seconds(child)`` children and their sums stay within the
parent's caps. The 60m caps fit the columns (asserted below).
"""

from __future__ import annotations

MAX_TOKEN: int = 2**63
"""``instrument_token`` must be in ``(0, MAX_TOKEN)``: it fits the ``bigint`` columns (Kite's are 32-bit)."""

MIN_TS_MS: int = 946_684_800_000
"""Event times (``exchange_ts``, bar ``ts``) must be ``>= MIN_TS_MS`` (2000-01-01T00:00:00Z)."""

MAX_TS_MS: int = 4_102_444_800_000
"""Event times must be ``< MAX_TS_MS`` (2100-01-01T00:00:00Z): an absolute bound for ``timestamptz``;
the plausibility window (:data:`DEFAULT_MAX_AHEAD_MS`) is the relative one."""

MAX_TICK_VOLUME: int = 2**40
"""A tick's cumulative day ``volume`` is null or an int in ``[0, MAX_TICK_VOLUME)``."""

MAX_CUM_VOLUME: int = MAX_TICK_VOLUME
"""A bar's ``cum_volume`` (the last tick volume) is null or an int in ``[0, MAX_CUM_VOLUME)``."""

DEFAULT_MAX_AHEAD_MS: int = 300_000
"""Plausibility window: an input whose event time is more than this beyond max(its partition's
event-time watermark, the wall clock) is rejected to the DLQ (env ``BAR_MAX_AHEAD_MS``)."""

MAX_AHEAD_LIMIT_MS: int = 86_400_000
"""Largest configurable plausibility window (one day)."""

MAX_BAR_VOLUME_PER_S: int = 2**51
"""Volume cap of a bar per second of its timeframe (1s bar: ``2**51``; 60m bar: ``3600 * 2**51 < 2**63``)."""

MAX_BAR_TICKS_PER_S: int = 2**19
"""Tick-count cap of a bar per second of its timeframe (60m bar: ``3600 * 2**19 < 2**31``)."""

TF_SECONDS: dict[str, int] = {"1s": 1, "1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800, "60m": 3600}
"""Length of each timeframe in seconds (mirrors ``compute.bars.TF_MS``)."""


def max_bar_volume(tf: str) -> int:
    """Upper bound (inclusive) of ``volume`` for a bar of ``tf``: ``volume`` in ``[0, max_bar_volume(tf)]``."""
    return TF_SECONDS[tf] * MAX_BAR_VOLUME_PER_S


def max_bar_ticks(tf: str) -> int:
    """Upper bound (inclusive) of ``ticks`` for a bar of ``tf``: ``ticks`` in ``[0, max_bar_ticks(tf)]``."""
    return TF_SECONDS[tf] * MAX_BAR_TICKS_PER_S


assert max_bar_volume("60m") < 2**63 and max_bar_ticks("60m") < 2**31  # the column types hold
