"""Position sizing and the manager's order rules, pure (no I/O): :mod:`risk.manager_v2` and the backtester.

An entry is sized so that hitting its stop loses ``risk_per_trade_pct`` of equity::

    qty = floor(equity x risk% / |entry price - stop_loss|)   rounded down to the lot size,
          then capped by max_notional_per_order, the instrument's position limits and the
          exchange freeze quantity.

An exit keeps the quantity the strategy gave it (the position it closes). Rejections carry one
of the ``REJECT_*`` reasons (REJECTED_RISK). Time rules read the order's ``signal_ts``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from core.errors import ConfigError
from core.sessions import DAY_MS, IST_OFFSET_MS, ExchangeCalendar
from risk.config import RiskBudget

REJECT_PRODUCT = "product_not_allowed"
REJECT_HOURS = "outside_entry_hours"
REJECT_NO_PRICE = "no_price"
REJECT_STOP_SIDE = "stop_wrong_side"
REJECT_STOP_WIDE = "stop_too_wide"
REJECT_NOTIONAL = "notional_cap_below_lot"
REJECT_POSITION = "position_limit"
REJECT_EXIT_QTY = "exit_without_qty"
REJECT_BAD_ORDER = "invalid_order"
REJECT_EXIT_NOTHING = "exit_without_position"
REASONS = (REJECT_PRODUCT, REJECT_HOURS, REJECT_NO_PRICE, REJECT_STOP_SIDE, REJECT_STOP_WIDE, REJECT_NOTIONAL,
           REJECT_POSITION, REJECT_EXIT_QTY, REJECT_BAD_ORDER, REJECT_EXIT_NOTHING)


#: The runner's intents (strategy.engine): only ``entry`` opens risk; the others close a position.
INTENTS = ("entry", "exit", "square_off", "flatten")


def intent_of(order: dict[str, Any]) -> str:
    """``entry`` unless the order says otherwise (the runner's ``extra.intent``: entry, exit, square_off, flatten)."""
    extra = order.get("extra") or {}
    return str(extra.get("intent") or order.get("intent") or "entry")


def is_entry(order: dict[str, Any]) -> bool:
    return intent_of(order) == "entry"


@dataclass(frozen=True, slots=True)
class Market:
    """What sizing knows of the world for one order (gathered by the service at its edges)."""

    equity: float
    equity_source: str                 # broker | fallback | capital
    price: float | None = None         # the entry price, from price_source
    price_source: str | None = None    # order | bar_1s | ltp | ref_price
    lot_size: int = 1
    name: str | None = None            # the instrument's name (freeze quantities by underlying)
    position_qty: int = 0              # |qty| held or pending on this instrument, all strategies
    position_notional: float = 0.0
    #: what an exit of this strategy may close on this instrument: its filled position on the side the
    #: exit closes, less its exits already on the way (None: unknown, the exit's quantity is kept)
    exit_available: int | None = None


@dataclass(slots=True)
class Sizing:
    """The decision: ``qty`` (None when rejected) with its ``reason`` and the ``risk`` record."""

    qty: int | None
    reason: str | None
    risk: dict[str, Any] = field(default_factory=dict)

    @property
    def rejected(self) -> bool:
        return self.qty is None


def order_price(order: dict[str, Any]) -> float | None:
    """The order's own price: LIMIT/SL its ``price``, SL-M its ``trigger_price``; MARKET none."""
    ot = order.get("order_type")
    if ot in ("LIMIT", "SL"):
        return order.get("price")
    if ot == "SL-M":
        return order.get("trigger_price")
    return None


def entry_window_reason(order: dict[str, Any], cfg: RiskBudget, calendar: ExchangeCalendar) -> str | None:
    """None if ``signal_ts`` is inside the entry hours, else a one-line detail."""
    eh = cfg.entry_hours
    ts = int(order["signal_ts"])
    minute = ((ts + IST_OFFSET_MS) % DAY_MS) // 60_000
    if eh.start_min is not None and minute < eh.start_min:
        return f"signal at IST minute {minute} before entry start {eh.start}"
    if eh.end_min is not None and minute >= eh.end_min:
        return f"signal at IST minute {minute} at/after entry end {eh.end}"
    if eh.within_session:
        exch = str(order.get("exchange") or "NSE")
        try:
            sess = calendar.session_at(exch, ts)
        except (ConfigError, KeyError, ValueError):  # the calendar raises ConfigError for an unknown exchange
            return f"exchange {exch} has no calendar"
        if sess is None or not sess.contains(ts):
            return f"signal outside the {exch} session"
        if ts < sess.open_ms + eh.start_after_open_min * 60_000:
            return f"within {eh.start_after_open_min} min of the open"
        if ts >= sess.close_ms - eh.stop_before_close_min * 60_000:
            return f"within {eh.stop_before_close_min} min of the close"
    return None


def size(order: dict[str, Any], mkt: Market, cfg: RiskBudget, calendar: ExchangeCalendar) -> Sizing:
    """Size one order (entry or exit) or reject it with a reason."""
    risk: dict[str, Any] = {"sizing_source": mkt.equity_source, "equity": round(mkt.equity, 2),
                            "intent": intent_of(order), "signal_ts": order.get("signal_ts")}
    if risk["intent"] not in INTENTS:  # never let a misspelt intent pass as an exit (exits skip every limit)
        return Sizing(None, REJECT_BAD_ORDER, {**risk, "detail": f"unknown intent {risk['intent']!r}"})
    if not is_entry(order):
        return _size_exit(order, mkt, risk)
    refused = _entry_refusal(order, mkt, cfg, calendar, risk)
    if refused is not None:
        return refused
    assert mkt.price is not None  # _entry_refusal rejects an entry without a price
    price = mkt.price
    risk.update(entry_price=price, price_source=mkt.price_source)
    stop = _stop(order, price, cfg, risk)
    if isinstance(stop, Sizing):
        return stop
    lot = max(1, mkt.lot_size)
    pct = cfg.risk_pct(str(order["strategy"]))
    amount = mkt.equity * pct / 100
    qty_risk = math.floor(amount / stop + 1e-9)
    risk.update(risk_pct=pct, risk_amount=round(amount, 2), qty_risk=qty_risk, lot_size=lot)
    if qty_risk // lot * lot <= 0:
        return Sizing(None, REJECT_STOP_WIDE, {**risk, "detail": f"risk {amount:.2f} / stop distance {stop:g} "
                                                                 f"is below one lot of {lot}"})
    return _capped(order, mkt, cfg, price, qty_risk // lot * lot, risk)


def _size_exit(order: dict[str, Any], mkt: Market, risk: dict[str, Any]) -> Sizing:
    """An exit keeps the strategy's quantity (the position it closes), at most what the strategy holds
    filled on the side it closes (less exits already on the way): an "exit" never opens a position, so
    exits can pass the kill switch and the loss limit safely."""
    qty = order.get("qty")
    if not isinstance(qty, int) or qty <= 0:
        return Sizing(None, REJECT_EXIT_QTY, {**risk, "detail": f"exit qty {qty!r}"})
    avail = mkt.exit_available
    if avail is not None and qty > avail:
        if avail <= 0:
            return Sizing(None, REJECT_EXIT_NOTHING, {**risk, "exit_available": avail,
                                                      "detail": f"{order['side']} {qty} closes nothing held"})
        return Sizing(avail, None, {**risk, "sizing": "exit", "qty": avail, "caps": ["position_held"],
                                    "exit_requested": qty})
    return Sizing(qty, None, {**risk, "sizing": "exit", "qty": qty})


def _entry_refusal(order: dict[str, Any], mkt: Market, cfg: RiskBudget, calendar: ExchangeCalendar,
                   risk: dict[str, Any]) -> Sizing | None:
    """The rules an entry must pass before it is sized: product, entry hours, a usable price."""
    if order.get("product") not in cfg.allowed_products:
        return Sizing(None, REJECT_PRODUCT, {**risk, "detail": f"product {order.get('product')} not in "
                                                               f"{'/'.join(cfg.allowed_products)}"})
    why = entry_window_reason(order, cfg, calendar)
    if why:
        return Sizing(None, REJECT_HOURS, {**risk, "detail": why})
    price = mkt.price
    if price is None or not math.isfinite(price) or price <= 0:
        return Sizing(None, REJECT_NO_PRICE, {**risk, "detail": "no order price, fresh 1 s bar, LTP or ref price"})
    return None


def _stop(order: dict[str, Any], price: float, cfg: RiskBudget, risk: dict[str, Any]) -> float | Sizing:
    """The stop distance per share (the order's stop, else ``default_stop_pct`` of the price), or a rejection."""
    stop = order.get("stop_loss")
    if stop is not None:
        buy = order["side"] == "BUY"
        if (buy and stop >= price) or (not buy and stop <= price):
            return Sizing(None, REJECT_STOP_SIDE, {**risk, "stop_loss": stop,
                                                   "detail": f"{order['side']} at {price:g} with stop {stop:g}"})
        dist, stop_source = abs(price - float(stop)), "order"
    else:
        dist, stop_source = price * cfg.default_stop_pct / 100, "default_pct"
    risk.update(stop_loss=stop, stop_distance=round(dist, 6), stop_source=stop_source)
    return dist


class _Caps:
    """Lowers a quantity to each limit in turn (in whole lots), remembering which limits bit."""

    def __init__(self, qty: int, lot: int) -> None:
        self.qty = qty
        self.lot = lot
        self.names: list[str] = []

    def apply(self, limit_qty: int, name: str) -> None:
        limit_qty = max(0, limit_qty) // self.lot * self.lot
        if limit_qty < self.qty:
            self.qty = limit_qty
            self.names.append(name)


def _capped(order: dict[str, Any], mkt: Market, cfg: RiskBudget, price: float, qty: int,
            risk: dict[str, Any]) -> Sizing:
    """The risk quantity capped by the order notional, the instrument's position limits and the freeze qty."""
    lot = risk["lot_size"]
    caps = _Caps(qty, lot)
    caps.apply(math.floor(cfg.max_notional_per_order / price + 1e-9), "max_notional_per_order")
    if caps.qty <= 0:
        return Sizing(None, REJECT_NOTIONAL, {**risk, "caps": caps.names, "detail": f"max_notional_per_order "
                      f"{cfg.max_notional_per_order:g} is below one lot of {lot} at {price:g}"})
    if cfg.max_position_notional is not None:
        caps.apply(math.floor((cfg.max_position_notional - mkt.position_notional) / price + 1e-9),
                   "max_position_notional")
    if cfg.max_position_qty is not None:
        caps.apply(cfg.max_position_qty - mkt.position_qty, "max_position_qty")
    if caps.qty <= 0:
        return Sizing(None, REJECT_POSITION, {**risk, "caps": caps.names, "position_qty": mkt.position_qty,
                      "position_notional": round(mkt.position_notional, 2),
                      "detail": "the instrument's position limit is reached"})
    freeze = cfg.freeze_of(str(order.get("symbol")), mkt.name)
    if freeze is not None:
        caps.apply(freeze, "freeze_qty")
        if caps.qty <= 0:
            return Sizing(None, REJECT_POSITION, {**risk, "caps": caps.names,
                                                  "detail": f"freeze qty {freeze} < one lot"})
    risk.update(qty=caps.qty, notional=round(caps.qty * price, 2), caps=caps.names)
    return Sizing(caps.qty, None, risk)
