"""The next-day scorer's pure core: combine daily results, compute metrics, decide promote / keep / demote.

Combining. A strategy's day may have a row from several sources (a backtest of that day, its paper
fills, its live fills). They are averaged per day with :data:`SOURCE_WEIGHTS` (live 3, paper and dry
2, backtest 1): what the strategy really did counts more than what a replay says it would have done,
and a day only backtested still counts. Trades and wins are averaged the same way.

Metrics over the window's days with a result (a day without one is a day it did not trade):

- trades, net PnL, win rate (wins / trades), profit factor over days (sum of winning days' net /
  |sum of losing days' net|; None without a losing day);
- max drawdown: the largest fall of the cumulative daily net PnL from its running peak (starting at
  0), in % of the configured capital;
- score: ``mean / std x sqrt(n)`` of the daily net PnL (a Sharpe-like t-statistic: consistent
  profits over more days score higher), ``std`` the sample deviation floored at
  :data:`STD_FLOOR_FRACTION` of capital so a few identical days cannot score infinity; 0 below 2 days.

Decisions, first match wins (:func:`decide`):

1. max drawdown > cap -> demote (disabled), whatever the trade count;
2. trades < minimum -> keep the current enabled state;
3. score < minimum -> demote;
4. else promote (enabled).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date

from backtest.results import DailyResult

#: Weight of each source when a day has results from several.
SOURCE_WEIGHTS: Mapping[str, float] = {"backtest": 1.0, "paper": 2.0, "dry": 2.0, "live": 3.0}
#: The daily-PnL standard deviation used by the score is at least this fraction of capital.
STD_FLOOR_FRACTION = 1e-5
DECISIONS = ("promote", "keep", "demote")


@dataclass(frozen=True, slots=True)
class DayStats:
    """One day of one strategy, its sources combined."""

    day: date
    trades: float
    wins: float
    gross_pnl: float
    charges: float
    net_pnl: float
    sources: tuple[str, ...]


@dataclass(frozen=True)
class Metrics:
    trades: int
    net_pnl: float
    gross_pnl: float
    charges: float
    win_rate: float | None
    profit_factor: float | None
    max_drawdown_pct: float
    score: float
    days: int
    source_days: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Policy:
    min_trades: int = 10
    max_drawdown_pct: float = 15.0
    min_score: float = 0.0


@dataclass(frozen=True)
class Decision:
    strategy: str
    decision: str          # promote | keep | demote
    enabled: bool          # for the day scored
    reason: str            # one line
    metrics: Metrics


def combine_days(results: Iterable[tuple[str, DailyResult]],
                 weights: Mapping[str, float] = SOURCE_WEIGHTS) -> list[DayStats]:
    """One strategy's ``(source, row)`` results -> one :class:`DayStats` per day (weighted mean), by day."""
    by_day: dict[date, list[tuple[str, DailyResult]]] = {}
    for src, r in results:
        by_day.setdefault(r.day, []).append((src, r))
    out: list[DayStats] = []
    for day in sorted(by_day):
        rows = by_day[day]
        total = sum(weights[s] for s, _ in rows)

        def avg(attr: str, rows: list[tuple[str, DailyResult]] = rows, total: float = total) -> float:
            return sum(weights[s] * float(getattr(r, attr)) for s, r in rows) / total

        out.append(DayStats(day, avg("trades"), avg("wins"), avg("gross_pnl"), avg("charges"), avg("net_pnl"),
                            tuple(sorted({s for s, _ in rows}))))
    return out


def max_drawdown(daily_net: Sequence[float]) -> float:
    """The largest fall (rupees, >= 0) of the cumulative sum from its running peak, the peak starting at 0."""
    cum = peak = worst = 0.0
    for x in daily_net:
        cum += x
        peak = max(peak, cum)
        worst = max(worst, peak - cum)
    return worst


def sharpe_score(daily_net: Sequence[float], capital: float) -> float:
    """``mean / std x sqrt(n)`` of the daily net PnL; std floored at ``STD_FLOOR_FRACTION x capital``."""
    n = len(daily_net)
    if n < 2:
        return 0.0
    mean = sum(daily_net) / n
    var = sum((x - mean) ** 2 for x in daily_net) / (n - 1)
    std = max(math.sqrt(var), STD_FLOOR_FRACTION * capital)
    return mean / std * math.sqrt(n)


def compute_metrics(days: Sequence[DayStats], capital: float) -> Metrics:
    """The window's metrics of one strategy (``days`` in date order)."""
    net = [d.net_pnl for d in days]
    trades = sum(d.trades for d in days)
    wins = sum(d.wins for d in days)
    gains = sum(x for x in net if x > 0)
    losses = -sum(x for x in net if x < 0)
    source_days: dict[str, int] = {}
    for d in days:
        for s in d.sources:
            source_days[s] = source_days.get(s, 0) + 1
    return Metrics(trades=round(trades), net_pnl=sum(net), gross_pnl=sum(d.gross_pnl for d in days),
                   charges=sum(d.charges for d in days), win_rate=wins / trades if trades > 0 else None,
                   profit_factor=gains / losses if losses > 0 else None,
                   max_drawdown_pct=max_drawdown(net) / capital * 100, score=sharpe_score(net, capital),
                   days=len(days), source_days=source_days)


def decide(strategy: str, m: Metrics, current_enabled: bool, policy: Policy) -> Decision:
    """Promote, keep or demote ``strategy`` for the next day, with a one-line reason."""
    if m.max_drawdown_pct > policy.max_drawdown_pct:
        return Decision(strategy, "demote", False, f"max drawdown {m.max_drawdown_pct:.1f}% > "
                        f"{policy.max_drawdown_pct:g}% cap: demote", m)
    if m.trades < policy.min_trades:
        state = "enabled" if current_enabled else "disabled"
        return Decision(strategy, "keep", current_enabled, f"{m.trades} trades < {policy.min_trades} minimum: "
                        f"keep as is ({state})", m)
    if m.score < policy.min_score:
        return Decision(strategy, "demote", False, f"score {m.score:.2f} < {policy.min_score:.2f} minimum over "
                        f"{m.trades} trades: demote", m)
    return Decision(strategy, "promote", True, f"score {m.score:.2f} >= {policy.min_score:.2f} over {m.trades} "
                    f"trades, drawdown {m.max_drawdown_pct:.1f}% within {policy.max_drawdown_pct:g}%: promote", m)


def score_all(results: Mapping[str, Sequence[tuple[str, DailyResult]]], current: Mapping[str, bool],
              capital: float, policy: Policy, weights: Mapping[str, float] = SOURCE_WEIGHTS) -> list[Decision]:
    """A decision per strategy id of ``current`` (id -> enabled now), ranked by score then net PnL."""
    out = [decide(sid, compute_metrics(combine_days(results.get(sid, ()), weights), capital), enabled, policy)
           for sid, enabled in current.items()]
    return sorted(out, key=lambda d: (-d.metrics.score, -d.metrics.net_pnl, d.strategy))


def group_by_entry(results: Iterable[tuple[str, DailyResult]], label_to_id: Mapping[str, str]
                   ) -> tuple[dict[str, list[tuple[str, DailyResult]]], set[str]]:
    """Results keyed by registry id (a ``<id>_<tf>`` label counts for its entry), and the unknown labels.

    Several labels of one entry on one day (its timeframes) are summed first, per source."""
    summed: dict[tuple[str, str, date], DailyResult] = {}
    unknown: set[str] = set()
    for src, r in results:
        sid = label_to_id.get(r.strategy)
        if sid is None:
            unknown.add(r.strategy)
            continue
        prev = summed.get((sid, src, r.day))
        summed[(sid, src, r.day)] = r if prev is None else DailyResult(
            sid, r.day, prev.trades + r.trades, prev.wins + r.wins, prev.gross_pnl + r.gross_pnl,
            prev.charges + r.charges, prev.net_pnl + r.net_pnl)
    out: dict[str, list[tuple[str, DailyResult]]] = {}
    for (sid, src, _), r in sorted(summed.items(), key=lambda kv: (kv[0][0], kv[0][2], kv[0][1])):
        out.setdefault(sid, []).append((src, r))
    return out, unknown


def _fmt(x: float | None, spec: str, none: str = "-") -> str:
    return none if x is None else format(x, spec)


def render_table(decisions: Sequence[Decision]) -> str:
    """The ranked table the CLI prints."""
    head = ("#", "strategy", "trades", "net pnl", "win%", "PF", "max DD%", "score", "decision", "reason")
    rows = [head]
    for i, d in enumerate(decisions, 1):
        m = d.metrics
        pf = _fmt(m.profit_factor, ".2f", "inf" if m.net_pnl > 0 else "-")
        rows.append((str(i), d.strategy, str(m.trades), f"{m.net_pnl:,.2f}",
                     _fmt(None if m.win_rate is None else m.win_rate * 100, ".1f"), pf,
                     f"{m.max_drawdown_pct:.2f}", f"{m.score:.2f}", d.decision, d.reason))
    widths = [max(len(r[c]) for r in rows) for c in range(len(head) - 1)]
    right = {0, 2, 3, 4, 5, 6, 7}
    lines = []
    for r in rows:
        cells = [r[c].rjust(widths[c]) if c in right else r[c].ljust(widths[c]) for c in range(len(head) - 1)]
        lines.append("  ".join(cells) + "  " + r[-1])
    return "\n".join(lines)
