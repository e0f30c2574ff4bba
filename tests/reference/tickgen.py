"""Deterministic multi-instrument tick streams for bar tests, benchmarks and exactness checks.

:func:`generate_ticks` returns ticks in *arrival* order (each tick also carries
``_arrival_ms``: the simulated wall clock at which a consumer sees it). The
stream has:

* dense instruments ticking in configurable windows, with silent gaps between;
* a quiet instrument ticking every 20-150 s across the whole span (so every
  session-anchored bucket, pre-open and post-close included, gets bars);
* an index-like instrument without volume (``volume``/depth fields ``None``);
* quote-only ticks (same ltp and volume, new bid/ask) and occasional ticks with
  a missing ``volume``;
* one instrument whose cumulative volume drops to a small value mid-stream
  (feed reconnect/reset), then grows again;
* exact duplicates (same market fields; ``recv_ts`` may differ);
* out-of-order arrival: arrival = ``exchange_ts`` + a random delay below
  ``max_disorder_ms`` (keep it <= the builder's grace and no tick is late).

Everything is derived from ``seed``; the same config gives the same list.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

IST = timezone(timedelta(hours=5, minutes=30))
INDEX_TOKEN = 256265  # NIFTY 50-style: no volume
QUIET_TOKEN = 3050241
RESET_TOKEN = 738561
_DENSE_BASE = 400_000


def ist_ms(day: str, hhmmss: str) -> int:
    """Epoch ms of ``day`` (``YYYY-MM-DD``) at local IST time ``HH:MM[:SS]``."""
    parts = [int(p) for p in hhmmss.split(":")] + [0]
    dt = datetime.fromisoformat(day).replace(hour=parts[0], minute=parts[1], second=parts[2], tzinfo=IST)
    return int(dt.timestamp() * 1000)


@dataclass
class TickGenConfig:
    """Knobs of :func:`generate_ticks` (defaults: a few thousand ticks covering all tf edges)."""

    seed: int = 0
    day: str = "2024-03-12"
    dense_instruments: int = 4
    #: IST windows where dense instruments tick; chosen around 09:15, 10:15, 15:15 and 15:30.
    windows: list[tuple[str, str]] = field(default_factory=lambda: [
        ("09:14:20", "09:16:10"), ("10:14:40", "10:15:30"), ("15:14:30", "15:15:40"), ("15:29:20", "15:30:40")])
    #: Span of the quiet and index instruments (they tick sparsely across all of it).
    span: tuple[str, str] = ("08:55", "15:50")
    dense_rate_hz: float = 4.0
    quiet_every_s: tuple[int, int] = (20, 150)
    index_every_s: tuple[int, int] = (1, 40)
    dup_prob: float = 0.03
    missing_volume_prob: float = 0.01
    quote_only_prob: float = 0.35
    max_disorder_ms: int = 1500
    #: Kite sends second-resolution exchange timestamps; True floors exchange_ts to the second.
    second_resolution: bool = False
    include_quiet: bool = True
    include_index: bool = True
    include_reset: bool = True


class _Walk:
    """Price/volume state of one instrument."""

    def __init__(self, rng: random.Random, token: int, price: float, has_volume: bool) -> None:
        self.rng = rng
        self.token = token
        self.price_ticks = int(price * 20)  # 0.05 tick size, integer to avoid float drift
        self.cum = rng.randint(0, 50_000) if has_volume else None
        self.has_volume = has_volume
        self.bid_ticks = self.price_ticks - 1

    def tick(self, ts: int, cfg: TickGenConfig) -> dict[str, Any]:
        rng = self.rng
        trade = rng.random() >= cfg.quote_only_prob
        if trade:
            self.price_ticks = max(20, self.price_ticks + rng.randint(-3, 3))
            if self.cum is not None:
                self.cum += rng.randint(1, 900)
        self.bid_ticks = self.price_ticks - rng.randint(1, 3)
        exch = ts - ts % 1000 if cfg.second_resolution else ts
        has_depth = self.has_volume
        tick: dict[str, Any] = {
            "instrument_token": self.token,
            "exchange_ts": exch,
            "recv_ts": ts + rng.randint(2, 40),
            "ltp": self.price_ticks / 20,
            "volume": self.cum,
            "last_qty": rng.randint(1, 500) if has_depth else None,
            "oi": None,
            "bid": self.bid_ticks / 20 if has_depth else None,
            "ask": (self.bid_ticks + rng.randint(1, 3)) / 20 if has_depth else None,
            "bid_qty": rng.randint(1, 5000) if has_depth else None,
            "ask_qty": rng.randint(1, 5000) if has_depth else None,
        }
        if self.cum is not None and rng.random() < cfg.missing_volume_prob:
            tick["volume"] = None
        return tick


def _poisson_times(rng: random.Random, start: int, end: int, rate_hz: float) -> list[int]:
    times: list[int] = []
    t = float(start)
    while True:
        t += rng.expovariate(rate_hz) * 1000
        if t >= end:
            return times
        times.append(int(t))


def _uniform_times(rng: random.Random, start: int, end: int, every_s: tuple[int, int]) -> list[int]:
    times: list[int] = []
    t = start
    while True:
        t += rng.randint(every_s[0] * 1000, every_s[1] * 1000)
        if t >= end:
            return times
        times.append(t)


def generate_ticks(cfg: TickGenConfig | None = None) -> list[dict[str, Any]]:
    """The tick stream in arrival order (see module docstring)."""
    cfg = cfg or TickGenConfig()
    rng = random.Random(cfg.seed)
    events: list[tuple[int, dict[str, Any]]] = []  # (event time, tick)

    def emit(walk: _Walk, times: list[int], reset_at: int | None = None) -> None:
        for ts in times:
            if reset_at is not None and ts >= reset_at and walk.cum is not None:
                walk.cum = rng.randint(0, 2_000)  # feed reset: cumulative volume restarts lower
                reset_at = None
            events.append((ts, walk.tick(ts, cfg)))

    for i in range(cfg.dense_instruments):
        walk = _Walk(rng, _DENSE_BASE + 17 * i, rng.uniform(100, 3000), True)
        times: list[int] = []
        for w_start, w_end in cfg.windows:
            lo, hi = ist_ms(cfg.day, w_start), ist_ms(cfg.day, w_end)
            # a silent gap inside each window for every other instrument
            if i % 2 and hi - lo > 20_000:
                gap_lo = rng.randint(lo, hi - 15_000)
                times += _poisson_times(rng, lo, gap_lo, cfg.dense_rate_hz)
                times += _poisson_times(rng, gap_lo + 12_000, hi, cfg.dense_rate_hz)
            else:
                times += _poisson_times(rng, lo, hi, cfg.dense_rate_hz)
        emit(walk, times)

    span_lo, span_hi = ist_ms(cfg.day, cfg.span[0]), ist_ms(cfg.day, cfg.span[1])
    if cfg.include_quiet:
        emit(_Walk(rng, QUIET_TOKEN, 512.0, True), _uniform_times(rng, span_lo, span_hi, cfg.quiet_every_s))
    if cfg.include_index:
        idx_times: list[int] = []
        for w_start, w_end in cfg.windows:
            idx_times += _uniform_times(rng, ist_ms(cfg.day, w_start), ist_ms(cfg.day, w_end), cfg.index_every_s)
        emit(_Walk(rng, INDEX_TOKEN, 22_000.0, False), sorted(idx_times))
    if cfg.include_reset and cfg.windows:
        lo, hi = ist_ms(cfg.day, cfg.windows[0][0]), ist_ms(cfg.day, cfg.windows[0][1])
        walk = _Walk(rng, RESET_TOKEN, 1450.0, True)
        walk.cum = 5_000_000
        emit(walk, _poisson_times(rng, lo, hi, cfg.dense_rate_hz), reset_at=(lo + hi) // 2)

    arrivals: list[tuple[int, int, dict[str, Any]]] = []
    seq = 0
    for ts, tick in events:
        delay = rng.randrange(cfg.max_disorder_ms) if cfg.max_disorder_ms > 0 else 0
        arrivals.append((ts + delay, seq, tick))
        seq += 1
        if rng.random() < cfg.dup_prob:
            dup = dict(tick)
            dup["recv_ts"] = tick["recv_ts"] + rng.randint(0, 5)
            extra = rng.randrange(cfg.max_disorder_ms - delay) if cfg.max_disorder_ms - delay > 0 else 0
            arrivals.append((ts + delay + extra, seq, dup))
            seq += 1
    arrivals.sort(key=lambda a: (a[0], a[1]))
    out = []
    for arrival, _, tick in arrivals:
        tick["_arrival_ms"] = arrival
        out.append(tick)
    return out
