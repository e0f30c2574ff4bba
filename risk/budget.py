"""The budget guard's decision, pure (no I/O): :mod:`risk.order_budget_guard` and the backtester.

:class:`Book` is what is in use when a batch is decided, read from Postgres by
:mod:`risk.exposure` (open positions from ``fills``, pending entries from ``orders``, the day's
PnL, the order counts of the signal's second/minute/day, the kill switch); :func:`decide` takes
one sized order against it and, when it allows an entry, books it (so the next order of the same
batch sees it).

Exits always pass (the kill switch, the loss limit and the budgets only stop new risk). Entries
are refused, in this order, with a ``REJECT_*`` reason (REJECTED_BUDGET).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from core.sessions import DAY_MS, IST_OFFSET_MS
from risk.config import OrderCaps, RiskBudget
from risk.sizing import is_entry

REJECT_KILL = "kill_switch"
REJECT_DISABLED = "strategy_disabled"
REJECT_DAILY_LOSS = "daily_loss_limit"
REJECT_OPEN_POSITIONS = "max_open_positions"
REJECT_STRATEGY_POSITIONS = "strategy_max_open_positions"
REJECT_PER_TRADE = "per_trade_cap"
REJECT_BUCKET = "bucket_exhausted"
REJECT_STRATEGY_CAP = "strategy_cap"
REJECT_NO_NOTIONAL = "no_entry_price"
#: Order-count caps: ``order_cap_<account|strategy>_<second|minute|day>``.
CAP_WINDOWS = ("second", "minute", "day")
REASONS = (REJECT_KILL, REJECT_DISABLED, REJECT_DAILY_LOSS, REJECT_OPEN_POSITIONS, REJECT_STRATEGY_POSITIONS,
           REJECT_PER_TRADE, REJECT_BUCKET, REJECT_STRATEGY_CAP, REJECT_NO_NOTIONAL,
           *(f"order_cap_{scope}_{w}" for scope in ("account", "strategy") for w in CAP_WINDOWS))

ACCOUNT = "*"
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def windows(signal_ts: int) -> tuple[tuple[str, int], ...]:
    """The calendar second, minute and IST day an order's signal falls in (its order-cap windows)."""
    return (("second", signal_ts // 1000), ("minute", signal_ts // 60_000),
            ("day", (signal_ts + IST_OFFSET_MS) // DAY_MS + _EPOCH_ORDINAL))  # == ist_date(signal_ts).toordinal()


@dataclass(slots=True)
class Book:
    """What is in use, as of the batch being decided."""

    kill: bool = False
    kill_reason: str | None = None
    #: strategy -> notional of its open positions and pending entries
    used_by_strategy: dict[str, float] = field(default_factory=dict)
    #: strategy -> the pending-entries part of ``used_by_strategy``
    pending_by_strategy: dict[str, float] = field(default_factory=dict)
    #: (strategy, instrument_token) with an open position or a pending entry
    open_keys: set[tuple[str, int]] = field(default_factory=set)
    #: IST day ordinal -> PnL of that day (realised from fills + open marked to the latest 1 s bar)
    day_pnl: dict[int, float] = field(default_factory=dict)
    #: (strategy or ACCOUNT, window, window key) -> orders allowed
    counts: Counter[tuple[str, str, int]] = field(default_factory=Counter)

    #: bucket -> used, summed from used_by_strategy once per batch, then kept by decide()
    _by_bucket: dict[str, float] | None = None

    def used_by_bucket(self, cfg: RiskBudget) -> dict[str, float]:
        if self._by_bucket is None:
            out = dict.fromkeys(cfg.buckets, 0.0)
            for strat, v in self.used_by_strategy.items():
                b = cfg.bucket_of(strat)
                out[b] = out.get(b, 0.0) + v
            self._by_bucket = out
        return self._by_bucket

    def open_count(self, strategy: str | None = None) -> int:
        if strategy is None:
            return len(self.open_keys)
        return sum(1 for s, _ in self.open_keys if s == strategy)


@dataclass(slots=True)
class Verdict:
    allowed: bool
    reason: str | None
    budget: dict[str, Any]


def _cap_reason(book: Book, who: str, scope: str, caps: OrderCaps, signal_ts: int) -> str | None:
    for window, key in windows(signal_ts):
        limit = getattr(caps, f"per_{window}")
        if limit is not None and book.counts[(who, window, key)] >= limit:
            return f"order_cap_{scope}_{window}"
    return None


def _count(book: Book, strategy: str, signal_ts: int) -> None:
    for window, key in windows(signal_ts):
        book.counts[(ACCOUNT, window, key)] += 1
        book.counts[(strategy, window, key)] += 1


def decide(order: dict[str, Any], book: Book, cfg: RiskBudget) -> Verdict:
    """Allow or refuse one sized order, booking what an allowed order uses."""
    strat = str(order["strategy"])
    token = int(order["instrument_token"])
    ts = int(order["signal_ts"])
    bucket = cfg.bucket_of(strat)
    budget_total = cfg.bucket_budget(bucket)
    risk = order.get("risk") or {}
    price = risk.get("entry_price") or order.get("price") or (order.get("extra") or {}).get("ref_price")
    notional = float(order["qty"]) * float(price) if price else None
    used_bucket = book.used_by_bucket(cfg).get(bucket, 0.0)
    info: dict[str, Any] = {"bucket": bucket, "bucket_budget": round(budget_total, 2),
                            "bucket_used": round(used_bucket, 2), "notional": None if notional is None
                            else round(notional, 2), "signal_ts": ts}
    if not is_entry(order):
        _count(book, strat, ts)
        return Verdict(True, None, {**info, "decision": "allowed", "exit": True})

    def no(reason: str, detail: str) -> Verdict:
        return Verdict(False, reason, {**info, "decision": "rejected", "reason": reason, "detail": detail})

    if book.kill:
        return no(REJECT_KILL, f"kill switch on: {book.kill_reason or 'no reason given'}")
    lim = cfg.limits_of(strat)
    if not lim.enabled:
        return no(REJECT_DISABLED, f"{strat} is disabled in risk_budget.yaml")
    day = windows(ts)[2][1]
    pnl = book.day_pnl.get(day, 0.0)
    if pnl <= -cfg.daily_loss_limit:
        return no(REJECT_DAILY_LOSS, f"day PnL {pnl:.2f} <= -{cfg.daily_loss_limit:g}")
    why = _cap_reason(book, ACCOUNT, "account", cfg.order_caps, ts) or \
        _cap_reason(book, strat, "strategy", cfg.strategy_caps(strat), ts)
    if why:
        return no(why, "order count limit of the signal's window reached")
    if notional is None:
        return no(REJECT_NO_NOTIONAL, "sized order without an entry price")
    key = (strat, token)
    if key not in book.open_keys:
        if book.open_count() >= cfg.max_open_positions:
            return no(REJECT_OPEN_POSITIONS, f"{book.open_count()} open >= {cfg.max_open_positions}")
        if lim.max_open_positions is not None and book.open_count(strat) >= lim.max_open_positions:
            return no(REJECT_STRATEGY_POSITIONS, f"{strat}: {book.open_count(strat)} open >= "
                                                 f"{lim.max_open_positions}")
    per_trade = cfg.buckets[bucket].per_trade_pct
    if per_trade is not None and notional > budget_total * per_trade / 100 + 1e-6:
        return no(REJECT_PER_TRADE, f"notional {notional:.2f} > {per_trade:g}% of bucket {bucket}")
    if used_bucket + notional > budget_total + 1e-6:
        return no(REJECT_BUCKET, f"bucket {bucket}: used {used_bucket:.2f} + {notional:.2f} > {budget_total:.2f}")
    used_strat = book.used_by_strategy.get(strat, 0.0)
    if lim.max_notional is not None and used_strat + notional > lim.max_notional + 1e-6:
        return no(REJECT_STRATEGY_CAP, f"{strat}: used {used_strat:.2f} + {notional:.2f} > {lim.max_notional:g}")
    book.used_by_strategy[strat] = used_strat + notional
    book.used_by_bucket(cfg)[bucket] = used_bucket + notional
    book.pending_by_strategy[strat] = book.pending_by_strategy.get(strat, 0.0) + notional
    book.open_keys.add(key)
    _count(book, strat, ts)
    return Verdict(True, None, {**info, "decision": "allowed", "bucket_used_after": round(used_bucket + notional, 2),
                                "day_pnl": round(pnl, 2)})
