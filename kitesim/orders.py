"""Simulated Kite order management: validation, status lifecycle, matching, trades.

Pure logic (no I/O, no wall clock). The caller serialises access (one lock).
Orders match against the simulated market's depth and trades only; they do
not move the market:

- MARKET (and triggered SL-M) orders walk the opposite depth; anything left
  stays OPEN and keeps filling on later ticks (a partial fill is an ``UPDATE``).
- LIMIT orders fill against depth levels at or better than the limit, and on
  later ticks also when a trade prints at or through the limit (up to the
  printed quantity), at the limit price.
- SL / SL-M orders wait in ``TRIGGER PENDING`` until the last price crosses the
  trigger. IOC remainders are cancelled at once. AMO orders wait in
  ``AMO REQ RECEIVED`` until the instrument's next tick.
- A cancel can be delayed (fault injection): the order sits in
  ``CANCEL PENDING`` and can still fill meanwhile, as on the real exchange.
- Acceptance can be delayed (fault injection, ``order_stuck_s``): a new order
  sits in ``PUT ORDER REQ RECEIVED`` (announced) and can be neither modified
  nor cancelled until :meth:`OrderEngine.process_due` moves it on, as Kite's
  OMS has been seen holding orders for a minute.
- MARKET and SL-M orders need ``market_protection``: -1 (automatic) or a
  percentage in (0, 100]; missing or 0 is rejected (Kite, since 1 April 2026).

Every status change is appended to the order's history and announced to the
``listeners`` as a postback dict (partial fills and modifications as ``UPDATE``).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Mapping
from typing import Any

from core.universe import Instrument
from kitesim.clock import in_session, ist_date
from kitesim.errors import InputError
from kitesim.packets import DepthLevel, Snapshot
from kitesim.portfolio import Portfolio
from kitesim.sim_order import SimOrder, rupees

VARIETIES = ("regular", "amo", "co", "iceberg", "auction")
SUPPORTED_VARIETIES = ("regular", "amo", "iceberg")
PRODUCTS = ("MIS", "CNC", "NRML")
ORDER_TYPES = ("MARKET", "LIMIT", "SL", "SL-M")
VALIDITIES = ("DAY", "IOC", "TTL")
SIDES = ("BUY", "SELL")
MAX_MODIFICATIONS = 25
LIVE_STATUSES = ("OPEN", "TRIGGER PENDING", "AMO REQ RECEIVED", "CANCEL PENDING")
RECEIVED = "PUT ORDER REQ RECEIVED"
#: statuses whose orders stay indexed by instrument (a held order is matched once accepted)
_TRACKED_STATUSES = (*LIVE_STATUSES, RECEIVED)
CIRCUIT_BAND = 0.20
MARKET_PROTECTION_REQUIRED = ("Market orders without market protection are not allowed via API. "
                              "Please set market protection or use a Limit order.")

Listener = Callable[[dict[str, Any]], None]


def _field(form: Mapping[str, str], key: str, required: bool = True) -> str | None:
    v = form.get(key)
    if v is None or str(v).strip() == "":
        if required:
            raise InputError(f"Missing or empty field `{key}`.")
        return None
    return str(v).strip()


def _int_field(form: Mapping[str, str], key: str, required: bool = True, default: int = 0) -> int:
    v = _field(form, key, required)
    if v is None:
        return default
    try:
        return int(v)
    except ValueError:
        raise InputError(f"Invalid `{key}`: {v!r} is not an integer.") from None


def _price_field(form: Mapping[str, str], key: str, inst: Instrument) -> int:
    v = _field(form, key, required=False)
    if v is None:
        return 0
    try:
        value = float(v)
    except ValueError:
        raise InputError(f"Invalid `{key}`: {v!r} is not a number.") from None
    if value < 0:
        raise InputError(f"Invalid `{key}`: must not be negative.")
    units = round(value * inst.price_divisor)
    off_grid = abs(units - value * inst.price_divisor) > 1e-6 * max(1.0, value) * inst.price_divisor
    if off_grid or units % inst.tick_units:
        what = key.replace("_", " ")
        raise InputError(f"Tick size for this script is {inst.tick_size:g}. Kindly enter the {what} "
                         "in the multiples of tick size for this script")
    return units


def _protection_field(form: Mapping[str, str], default: float = 0) -> float:
    """``market_protection`` as given: an int when integral (as Kite echoes it), else a float percentage."""
    v = _field(form, "market_protection", required=False)
    if v is None:
        return default
    try:
        value = float(v)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise InputError(f"Invalid `market_protection`: {v!r} is not a number.")
    return int(value) if value.is_integer() else value


def _choice(form: Mapping[str, str], key: str, allowed: tuple[str, ...], default: str | None = None) -> str:
    v = _field(form, key, required=default is None)
    if v is None:
        assert default is not None
        return default
    if v not in allowed:
        raise InputError(f"Invalid `{key}`: {v!r} (expected one of {', '.join(allowed)}).")
    return v


class OrderEngine:
    """Order book of one simulated user, matching against the simulated market."""

    def __init__(self, instruments: Mapping[str, Instrument], market: Callable[[int], Snapshot | None],
                 clock: Callable[[], float], seed: int, cash: float = 10_000_000.0,
                 market_hours: bool = False) -> None:
        self.instruments = instruments  # by "EXCHANGE:TRADINGSYMBOL"
        self.market = market
        self.clock = clock
        self.rng = random.Random(f"kitesim:{seed}:orders")
        self.portfolio = Portfolio(cash=cash, seed=seed, instruments=list(instruments.values()),
                                   market=market)
        self.orders: dict[str, SimOrder] = {}
        self.portfolio.working_orders = lambda: [o for o in self.orders.values() if o.status in LIVE_STATUSES]
        self.by_token: dict[int, list[str]] = {}
        self.listeners: list[Listener] = []
        self.reject_rate = 0.0
        self.market_hours = market_hours
        self._seq = 0
        self._trade_seq = 0
        day = ist_date(clock())
        self._id_prefix = day.strftime("%y%m%d")
        self._consumed: dict[tuple[int, int, str, int], int] = {}
        self._consumed_seq: dict[int, int] = {}

    # ------------------------------------------------------------------ requests

    def place(self, variety: str, form: Mapping[str, str], stuck_s: float = 0.0, wall_now: float = 0.0) -> str:
        """Validate and place an order; returns its order_id (it may end up REJECTED).

        With ``stuck_s`` > 0 the order is held in ``PUT ORDER REQ RECEIVED`` until
        :meth:`process_due` is called with a ``wall_now`` at least ``stuck_s`` later.
        """
        if variety not in VARIETIES:
            raise InputError(f"Invalid `variety`: {variety!r}.")
        if variety not in SUPPORTED_VARIETIES:
            raise InputError(f"Variety `{variety}` is not supported by the simulator.")
        if self.market_hours and variety != "amo" and not in_session(self.clock()):
            raise InputError("Markets are closed right now. Use GTT for placing long standing orders instead.")
        exchange = _field(form, "exchange")
        symbol = _field(form, "tradingsymbol")
        inst = self.instruments.get(f"{exchange}:{symbol}")
        if inst is None:
            raise InputError("The instrument you are placing an order for has either expired "
                             "or does not exist.")
        if not inst.tradable:
            raise InputError(f"Instrument {exchange}:{symbol} is an index and cannot be traded.")
        side = _choice(form, "transaction_type", SIDES)
        order_type = _choice(form, "order_type", ORDER_TYPES)
        product = _choice(form, "product", PRODUCTS)
        validity = _choice(form, "validity", VALIDITIES, default="DAY")
        qty = _int_field(form, "quantity")
        if qty <= 0:
            raise InputError("Invalid `quantity`: must be a positive integer.")
        if qty % max(1, inst.lot_size):
            raise InputError(f"Quantity should be a multiple of lot size ({inst.lot_size}).")
        price = _price_field(form, "price", inst)
        trigger = _price_field(form, "trigger_price", inst)
        protection = _protection_field(form)
        self._check_prices(inst, side, order_type, price, trigger, protection)
        tag = _field(form, "tag", required=False)
        if tag is not None and (len(tag) > 20 or not tag.isalnum()):
            raise InputError("Invalid `tag`: alphanumeric, at most 20 characters.")
        disclosed = _int_field(form, "disclosed_quantity", required=False, default=0)
        if not 0 <= disclosed <= qty:
            raise InputError("Invalid `disclosed_quantity`.")
        ttl = _int_field(form, "validity_ttl", required=False, default=0) if validity == "TTL" else None
        if validity == "TTL" and not ttl:
            raise InputError("Missing or empty field `validity_ttl`.")

        now = self.clock()
        self._seq += 1
        order_id = f"{self._id_prefix}{self._seq:09d}"
        guid = hashlib.sha1(f"{order_id}:{self.rng.random()}".encode()).hexdigest()[:20]  # noqa: S324 - not crypto
        o = SimOrder(order_id=order_id, variety=variety, inst=inst, transaction_type=side, order_type=order_type,
                     product=product, validity=validity, quantity=qty, price=price, trigger_price=trigger,
                     disclosed_quantity=disclosed, tag=tag, market_protection=protection, validity_ttl=ttl,
                     order_ts=now, guid=guid)
        self.orders[order_id] = o
        self.by_token.setdefault(inst.instrument_token, []).append(order_id)
        self._record(o)
        if stuck_s > 0:
            o.accept_due = wall_now + stuck_s
            self._announce(o)  # a client watching postbacks sees the order exists but is not yet accepted
            return order_id
        self._receive(o)
        return order_id

    def _receive(self, o: SimOrder) -> None:
        """Move a received order on: AMOs wait for the market, the others are validated and accepted."""
        o.accept_due = None
        if o.variety == "amo":
            self._transition(o, "AMO REQ RECEIVED", announce=True)
        else:
            self._accept(o)

    def _check_prices(self, inst: Instrument, side: str, order_type: str, price: int, trigger: int,
                      protection: float) -> None:
        if order_type in ("LIMIT", "SL") and price <= 0:
            raise InputError("Invalid `price`: required for LIMIT and SL orders.")
        if order_type in ("MARKET", "SL-M"):
            if price:
                raise InputError("Invalid `price`: must be 0 for MARKET and SL-M orders.")
            if protection == 0:
                raise InputError(MARKET_PROTECTION_REQUIRED)
            if protection != -1 and not 0 < protection <= 100:
                raise InputError("Invalid `market_protection`: -1 or a percentage above 0 up to 100.")
        if order_type in ("SL", "SL-M"):
            if trigger <= 0:
                raise InputError("Invalid `trigger_price`: required for SL and SL-M orders.")
            snap = self.market(inst.instrument_token)
            if snap is not None:
                if side == "BUY" and trigger <= snap.last_price:
                    raise InputError("Trigger price for stoploss buy orders should be higher than the last "
                                     "traded price.")
                if side == "SELL" and trigger >= snap.last_price:
                    raise InputError("Trigger price for stoploss sell orders should be lower than the last "
                                     "traded price.")
            wrong_side = price < trigger if side == "BUY" else price > trigger
            if order_type == "SL" and wrong_side:
                raise InputError("Trigger price should be " + ("lower" if side == "BUY" else "higher")
                                 + " than or equal to the limit price for SL orders.")
        elif trigger:
            raise InputError("Invalid `trigger_price`: only for SL and SL-M orders.")

    def modify(self, variety: str, order_id: str, form: Mapping[str, str]) -> str:
        """Modify a working order (quantity, price, trigger, order type, validity)."""
        o = self._get(order_id)
        if o.variety != variety:
            raise InputError(f"Invalid `variety` for order {order_id}.")
        if o.status not in ("OPEN", "TRIGGER PENDING", "AMO REQ RECEIVED"):
            raise InputError(f"Order cannot be modified as it is in {o.status} state.")
        if o.modifications >= MAX_MODIFICATIONS:
            raise InputError("Maximum allowed order modifications exceeded.")
        order_type = _choice(form, "order_type", ORDER_TYPES, default=o.order_type)
        qty = _int_field(form, "quantity", required=False, default=o.quantity)
        if qty <= o.filled_quantity or qty % max(1, o.inst.lot_size):
            raise InputError("Invalid `quantity`: must exceed the filled quantity and be a multiple of "
                             "lot size.")
        price = _price_field(form, "price", o.inst) if "price" in form else o.price
        trigger = _price_field(form, "trigger_price", o.inst) if "trigger_price" in form else o.trigger_price
        if order_type in ("MARKET", "SL-M"):
            price = 0
        if order_type in ("MARKET", "LIMIT"):
            trigger = 0
        protection = _protection_field(form, default=o.market_protection or -1)
        if o.status == "TRIGGER PENDING" or order_type in ("MARKET", "LIMIT"):
            self._check_prices(o.inst, o.transaction_type, order_type, price, trigger, protection)
        validity = _choice(form, "validity", VALIDITIES, default=o.validity)
        was_amo = o.status == "AMO REQ RECEIVED"
        o.modifications += 1
        self._transition(o, "MODIFY VALIDATION PENDING")
        self._transition(o, "MODIFY PENDING")
        o.order_type, o.quantity, o.validity = order_type, qty, validity
        o.price, o.trigger_price = price, trigger
        o.market_protection = protection if order_type in ("MARKET", "SL-M") else o.market_protection
        self._transition(o, "MODIFIED")
        if not was_amo:
            nxt = "TRIGGER PENDING" if order_type in ("SL", "SL-M") and o.trigger_price else "OPEN"
            self._transition(o, nxt)
            self._announce(o, "UPDATE")
            if nxt == "OPEN":
                self._match_now(o)
        else:
            self._transition(o, "AMO REQ RECEIVED")
            self._announce(o, "UPDATE")
        return o.order_id

    def cancel(self, variety: str, order_id: str, delay_s: float = 0.0, wall_now: float = 0.0) -> str:
        """Cancel a working order, at once or after ``delay_s`` (it can fill meanwhile)."""
        o = self._get(order_id)
        if o.variety != variety:
            raise InputError(f"Invalid `variety` for order {order_id}.")
        if o.status == "CANCEL PENDING":
            raise InputError("Order is already being cancelled.")
        if o.status not in ("OPEN", "TRIGGER PENDING", "AMO REQ RECEIVED"):
            raise InputError(f"Order cannot be cancelled as it is in {o.status} state.")
        self._transition(o, "CANCEL PENDING")
        if delay_s > 0:
            o.cancel_due = wall_now + delay_s
        else:
            self._finish_cancel(o, "Cancelled by user.")
        return o.order_id

    def process_due(self, wall_now: float) -> None:
        """Accept held orders and complete delayed cancels whose time has come (oldest order first).

        The simulator's market loop calls this every step (50 ms by default).
        """
        for o in list(self.orders.values()):
            if o.status == RECEIVED and o.accept_due is not None and o.accept_due <= wall_now:
                self._receive(o)
            elif o.status == "CANCEL PENDING" and o.cancel_due is not None and o.cancel_due <= wall_now:
                self._finish_cancel(o, "Cancelled by user.")

    # ------------------------------------------------------------------ market events

    def on_market(self, snap: Snapshot) -> None:
        """Match the instrument's working orders against a new tick."""
        ids = self.by_token.get(snap.instrument_token)
        if not ids:
            return
        for oid in list(ids):
            o = self.orders[oid]
            if o.status == "AMO REQ RECEIVED":
                self._accept(o)
            elif o.status == "TRIGGER PENDING":
                ltp, trig = snap.last_price, o.trigger_price
                crossed = ltp >= trig if o.is_buy else ltp <= trig
                if crossed:
                    o.exchange_ts = snap.ts
                    self._transition(o, "OPEN", announce=True)
                    self._fill_from_depth(o, snap)
            elif o.status in ("OPEN", "CANCEL PENDING"):
                self._fill_from_depth(o, snap)
                if o.pending > 0 and o.order_type in ("LIMIT", "SL") and snap.last_qty:
                    through = snap.last_price <= o.price if o.is_buy else snap.last_price >= o.price
                    if through:
                        self._fill(o, o.price, min(o.pending, snap.last_qty), snap.ts)
        self.by_token[snap.instrument_token] = [i for i in ids
                                                if self.orders[i].status in _TRACKED_STATUSES]

    # ------------------------------------------------------------------ queries

    def list_orders(self) -> list[dict[str, Any]]:
        """Every order of the day, oldest first."""
        return [o.as_dict() for o in self.orders.values()]

    def history(self, order_id: str) -> list[dict[str, Any]]:
        """Status history of one order."""
        return list(self._get(order_id).history)

    def trades(self) -> list[dict[str, Any]]:
        """Every trade of the day."""
        return list(self.portfolio.trades)

    def order_trades(self, order_id: str) -> list[dict[str, Any]]:
        """Trades of one order."""
        self._get(order_id)
        return [t for t in self.portfolio.trades if t["order_id"] == order_id]

    # ------------------------------------------------------------------ internals

    def _get(self, order_id: str) -> SimOrder:
        o = self.orders.get(order_id)
        if o is None:
            raise InputError(f"Invalid `order_id`: {order_id}.")
        return o

    def _accept(self, o: SimOrder) -> None:
        """Validation and RMS checks, then OPEN (or TRIGGER PENDING) and immediate matching."""
        self._transition(o, "VALIDATION PENDING")
        self._transition(o, "OPEN PENDING")
        reason = self._rms_reason(o)
        if reason:
            o.status_message = reason
            o.cancelled_quantity = 0
            self._transition(o, "REJECTED", announce=True)
            return
        self._seq_exchange(o)
        if o.order_type in ("SL", "SL-M"):
            self._transition(o, "TRIGGER PENDING", announce=True)
            return
        self._transition(o, "OPEN", announce=True)
        self._match_now(o)

    def _match_now(self, o: SimOrder) -> None:
        snap = self.market(o.inst.instrument_token)
        if snap is not None:
            self._fill_from_depth(o, snap)
        if o.validity == "IOC" and o.pending > 0 and o.status == "OPEN":
            self._finish_cancel(o, "IOC order cancelled: no more liquidity at the price.")

    def _rms_reason(self, o: SimOrder) -> str | None:
        if self.reject_rate and self.rng.random() < self.reject_rate:
            return "RMS:Rule: simulated rejection (fault injection)"
        snap = self.market(o.inst.instrument_token)
        div = o.inst.price_divisor
        if snap is not None and o.price and snap.close:
            lower, upper = snap.close * (1 - CIRCUIT_BAND), snap.close * (1 + CIRCUIT_BAND)
            if not lower <= o.price <= upper:
                return (f"Your order price is outside the circuit limits ({rupees(lower, div)} - "
                        f"{rupees(upper, div)}). Place an order within the daily range.")
        ref = o.price or (snap.last_price if snap else 0)
        return self.portfolio.check_order(o, ref)

    def _seq_exchange(self, o: SimOrder) -> None:
        o.exchange_order_id = f"{1_100_000_000_000_000 + self._seq * 7 + int(self.rng.random() * 7)}"
        o.exchange_ts = self.clock()

    def _levels(self, o: SimOrder, snap: Snapshot) -> tuple[str, tuple[DepthLevel, ...]]:
        return ("sell", snap.sell) if o.is_buy else ("buy", snap.buy)

    def _fill_from_depth(self, o: SimOrder, snap: Snapshot) -> None:
        """Take liquidity from the opposite depth of ``snap`` (shared by every order on this tick)."""
        token = snap.instrument_token
        if self._consumed_seq.get(token) != snap.seq:
            self._consumed = {k: v for k, v in self._consumed.items() if k[0] != token}
            self._consumed_seq[token] = snap.seq
        side, levels = self._levels(o, snap)
        limit = o.price if o.order_type in ("LIMIT", "SL") else None
        for i, lvl in enumerate(levels):
            if o.pending <= 0:
                break
            if lvl.qty <= 0 or lvl.price <= 0:
                continue
            if limit is not None and (lvl.price > limit if o.is_buy else lvl.price < limit):
                break
            key = (token, snap.seq, side, i)
            avail = lvl.qty - self._consumed.get(key, 0)
            if avail <= 0:
                continue
            q = min(avail, o.pending)
            self._consumed[key] = self._consumed.get(key, 0) + q
            self._fill(o, lvl.price, q, snap.ts)

    def _fill(self, o: SimOrder, price: int, qty: int, ts: float) -> None:
        o.filled_quantity += qty
        o.filled_value += price * qty
        o.update_ts = self.clock()
        self._trade_seq += 1
        self.portfolio.add_trade(o, price, qty, trade_id=f"{10_000_000 + self._trade_seq}", ts=self.clock())
        if o.pending == 0:
            o.status_message = None
            self._transition(o, "COMPLETE", announce=True)
        else:
            self._record(o)
            self._announce(o, "UPDATE")

    def _finish_cancel(self, o: SimOrder, message: str) -> None:
        o.cancelled_quantity += o.pending
        o.status_message = message
        o.cancel_due = None
        o.update_ts = self.clock()
        self._transition(o, "CANCELLED", announce=True)

    def _transition(self, o: SimOrder, status: str, announce: bool = False) -> None:
        o.status = status
        o.update_ts = self.clock()
        self._record(o)
        if announce:
            self._announce(o)

    def _record(self, o: SimOrder) -> None:
        o.history.append(o.as_dict())

    def _announce(self, o: SimOrder, status: str | None = None) -> None:
        if not self.listeners:
            return
        payload = o.as_dict(status)
        payload.update({"user_id": "SIM001",
                        "unfilled_quantity": o.pending if o.status in LIVE_STATUSES else 0,
                        "app_id": 1, "checksum": ""})
        for listener in self.listeners:
            listener(payload)
