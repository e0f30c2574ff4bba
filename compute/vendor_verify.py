"""Vendor verification of multi-minute bars: which buckets to check, and how they compare. Pure.

The multi-timeframe aggregator can compare its ``bars_{tf}`` with the vendor's
historical candles of the same interval (Kite ``3minute`` ... ``60minute``,
anchored at 09:15 IST like ours). This module decides, per instrument and
timeframe:

- **what is ready to check** (:func:`pending_window`): buckets that closed at
  least the verification lag ago (``cutoff``), that our pipeline has already
  made durable (up to the end of the instrument's last bar in ``bar_state``:
  a bucket our pipeline has not reached yet is not "missing"), and that were
  not verified before (``verified_to``), going back at most to ``since``;
- **how it compares** (:func:`verify_bars`): inside that window and inside
  the session, each vendor candle against our bar of the same start, with the
  tolerance of the daily merge (:class:`ingestion.bar_merge.Tolerance`):

  * **mismatch**: some field beyond the tolerance -> a correction to the
    vendor's values (applied only when the operator asked for corrections);
  * **missing_ours**: a vendor candle without our bar; **missing_vendor**: our
    bar without a vendor candle. Both are only counted: a correction never
    inserts or deletes a bar (gaps are the daily 1m merge's job);
  * **invalid**: a malformed vendor candle, or one not on one of our bucket
    starts (the vendor anchors differently): ignored, counted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from compute.bars import TF_MS
from compute.sessions import DAY_MS, Session
from core.clock import IST
from ingestion.bar_merge import BarChange, Candle, MergePlan, Tolerance, compare

#: Our timeframe -> Kite historical interval (Kite anchors intraday candles at the session open too).
KITE_INTERVALS: dict[str, str] = {
    "3m": "3minute", "5m": "5minute", "15m": "15minute", "30m": "30minute", "60m": "60minute",
}


def in_session(session: Session, ts_ms: int) -> bool:
    """True when ``ts_ms`` falls inside the session hours of its local day."""
    t = (ts_ms + session.utc_offset_ms) % DAY_MS
    return session.open_ms <= t < session.close_ms


def pending_window(session: Session, tf: str, cutoff_ms: int, last_bar_ts: int, verified_to: int | None,
                   since_ms: int) -> tuple[int, int] | None:
    """``[start, end)`` of bucket starts of one instrument ready to verify, or None.

    ``end`` is the earlier of the start of the bucket still open at ``cutoff_ms``
    and the end of our last durable bar (``last_bar_ts``); ``start`` is
    ``verified_to`` (where the previous pass stopped), or the bucket holding
    ``since_ms`` when that is later (first run, or a long outage).
    """
    size = TF_MS[tf]
    first_open = session.anchored_bucket(cutoff_ms, size)[0]
    ours_end = session.anchored_bucket(last_bar_ts, size)[1]
    end = min(first_open, ours_end)
    start = session.anchored_bucket(since_ms, size)[0]
    if verified_to is not None and verified_to > start:
        start = verified_to
    return (start, end) if start < end else None


def narrow_to_ours(session: Session, window: tuple[int, int], ours: Iterable[int]) -> tuple[int, int] | None:
    """``window`` starting no earlier than the session open of the day of our first bar in it.

    None when we have no bar inside the window and the session: there is nothing
    of ours to check (and a vendor's candles of days before our data begins, say
    on a first run with a long lookback, are not "missing" bars).
    """
    start, end = window
    first = min((ts for ts in ours if start <= ts < end and in_session(session, ts)), default=None)
    if first is None:
        return None
    local = first + session.utc_offset_ms
    day_open = local - local % DAY_MS + session.open_ms - session.utc_offset_ms
    return max(start, day_open), end


@dataclass(slots=True)
class VerifyResult:
    """How one instrument's bars of one timeframe compared with the vendor inside a window."""

    token: int
    tf: str
    window: tuple[int, int]
    checked: int = 0
    reference: int = 0
    mismatches: list[BarChange] = field(default_factory=list)
    missing_vendor: list[int] = field(default_factory=list)
    missing_ours: list[int] = field(default_factory=list)
    invalid: list[tuple[int, str]] = field(default_factory=list)

    @property
    def matched(self) -> int:
        """Bars within tolerance."""
        return self.checked - len(self.mismatches)

    def field_counts(self) -> Counter[str]:
        """Mismatching bars per field beyond tolerance."""
        return Counter(f for m in self.mismatches for f in m.fields)

    def corrections(self) -> MergePlan:
        """The mismatches as a plan for :func:`ingestion.merge_hist_daily.apply_plan` (updates only)."""
        return MergePlan(changes=list(self.mismatches), unchanged=self.matched, extra=len(self.missing_vendor),
                         reference=self.reference, invalid=list(self.invalid))


def verify_bars(vendor: Iterable[Candle], ours: Mapping[int, Candle], tf: str, session: Session, tick_size: float,
                tol: Tolerance, window: tuple[int, int], token: int = 0) -> VerifyResult:
    """Compare vendor candles with our bars (keyed by bucket start) inside ``window`` and the session."""
    start, end = window
    size = TF_MS[tf]
    res = VerifyResult(token, tf, window)

    def wanted(ts: int) -> bool:
        return start <= ts < end and in_session(session, ts)

    seen: set[int] = set()
    for c in sorted(vendor, key=lambda c: c.ts):
        if not wanted(c.ts):
            continue
        bad = c.problem()
        if bad is None and session.anchored_bucket(c.ts, size)[0] != c.ts:
            bad = f"not a session-anchored {tf} bucket start"
        if bad is not None or c.ts in seen:
            res.invalid.append((c.ts, bad or "duplicate candle"))
            continue
        seen.add(c.ts)
        res.reference += 1
        mine = ours.get(c.ts)
        if mine is None:
            res.missing_ours.append(c.ts)
            continue
        res.checked += 1
        change = compare(mine, c, tick_size, tol)
        if change is not None:
            res.mismatches.append(change)
    res.missing_vendor = sorted(ts for ts in ours if wanted(ts) and ts not in seen)
    return res


def ist_label(ts_ms: int) -> str:
    """``2026-11-20 09:15`` (IST) for log lines."""
    return datetime.fromtimestamp(ts_ms / 1000, IST).strftime("%Y-%m-%d %H:%M")


def mismatch_lines(results: Sequence[VerifyResult], limit: int, corrected: bool) -> list[str]:
    """One log line per mismatching bar, at most ``limit``, then one line summing up the rest."""
    lines: list[str] = []
    rest: Counter[str] = Counter()
    verb = "corrected" if corrected else "not corrected"
    for r in results:
        for m in r.mismatches:
            if len(lines) < limit:
                lines.append(f"vendor mismatch tf={r.tf} instrument_token={r.token} bar={ist_label(m.ts)} IST "
                             f"ours->vendor: {m.detail} ({verb})")
            else:
                rest[r.tf] += 1
    if rest:
        per_tf = " ".join(f"{tf}={n}" for tf, n in sorted(rest.items(), key=lambda kv: TF_MS[kv[0]]))
        lines.append(f"vendor mismatches not logged one by one: {sum(rest.values())} more ({per_tf}, {verb})")
    return lines
