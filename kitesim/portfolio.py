"""Positions, holdings, funds and trades of the simulated user (pure logic).

Simplifications, stated once: one equity segment for every instrument (no
contract multipliers), margin rates MIS 20 %, NRML 15 %, CNC 100 %, no
overnight positions (every position is a day position), seeded static holdings.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import Any

from core.universe import Instrument
from kitesim.clock import ist_str
from kitesim.errors import InputError
from kitesim.packets import Snapshot
from kitesim.sim_order import SimOrder, rupees

MARGIN_RATE = {"MIS": 0.20, "NRML": 0.15, "CNC": 1.0}


class Portfolio:
    """Trades and what follows from them: positions, margins, holdings."""

    def __init__(self, cash: float, seed: int, instruments: list[Instrument],
                 market: Callable[[int], Snapshot | None]) -> None:
        self.cash = cash
        self.market = market
        self.trades: list[dict[str, Any]] = []
        self._pos: dict[tuple[int, str], dict[str, Any]] = {}
        self.working_orders: Callable[[], Iterable[SimOrder]] = list
        self._instruments = {i.instrument_token: i for i in instruments}
        self._holdings = self._seed_holdings(seed, instruments)

    # ------------------------------------------------------------------ trades

    def add_trade(self, o: SimOrder, price: int, qty: int, trade_id: str, ts: float) -> dict[str, Any]:
        """Record a fill and update the position."""
        div = o.inst.price_divisor
        trade = {
            "trade_id": trade_id, "order_id": o.order_id, "exchange": o.inst.exchange,
            "tradingsymbol": o.inst.tradingsymbol, "instrument_token": o.inst.instrument_token,
            "product": o.product, "average_price": rupees(price, div), "quantity": qty,
            "exchange_order_id": o.exchange_order_id, "transaction_type": o.transaction_type,
            "fill_timestamp": ist_str(ts), "order_timestamp": ist_str(o.order_ts),
            "exchange_timestamp": ist_str(ts),
        }
        self.trades.append(trade)
        p = self._pos.setdefault((o.inst.instrument_token, o.product),
                                 {"buy_qty": 0, "buy_value": 0, "sell_qty": 0, "sell_value": 0})
        side = "buy" if o.is_buy else "sell"
        p[f"{side}_qty"] += qty
        p[f"{side}_value"] += price * qty
        return trade

    # ------------------------------------------------------------------ checks

    def check_order(self, o: SimOrder, ref_price: int) -> str | None:
        """RMS reason to reject ``o`` (None when it may go to the exchange)."""
        div = o.inst.price_divisor
        if o.product == "CNC" and not o.is_buy:
            token = o.inst.instrument_token
            held = sum(h["quantity"] for h in self._holdings if h["instrument_token"] == token)
            p = self._pos.get((o.inst.instrument_token, "CNC"))
            net_today = (p["buy_qty"] - p["sell_qty"]) if p else 0
            pending_sells = sum(w.pending for w in self.working_orders()
                                if w is not o and w.product == "CNC" and not w.is_buy
                                and w.inst.instrument_token == o.inst.instrument_token)
            sellable = held + net_today - pending_sells
            if o.quantity > sellable:
                return f"Insufficient holdings: {sellable} sellable, {o.quantity} requested (CNC sell)."
            return None
        required = o.quantity * ref_price / div * MARGIN_RATE[o.product]
        available = self.available_margin(exclude=o)
        if required > available:
            return (f"Insufficient funds. Required margin is {required:.2f} but available margin is "
                    f"{available:.2f}.")
        return None

    def _position_margin(self) -> tuple[float, float, float]:
        """(margin used by open positions, realised P&L, unrealised P&L) in rupees."""
        used = realised = unrealised = 0.0
        for (token, product), p in self._pos.items():
            row = self._position_row(token, product, p)
            net = p["buy_qty"] - p["sell_qty"]
            used += abs(net) * row["average_price"] * MARGIN_RATE[product]
            realised += row["realised"]
            unrealised += row["unrealised"]
        return used, realised, unrealised

    def available_margin(self, exclude: SimOrder | None = None) -> float:
        """Cash + realised P&L - margin of positions and working orders."""
        used, realised, _ = self._position_margin()
        for w in self.working_orders():
            if w is exclude or (w.product == "CNC" and not w.is_buy):
                continue
            snap = self.market(w.inst.instrument_token)
            ref = w.price or (snap.last_price if snap else 0)
            used += w.pending * ref / w.inst.price_divisor * MARGIN_RATE[w.product]
        return self.cash + realised - used

    # ------------------------------------------------------------------ reports

    def _position_row(self, token: int, product: str, p: dict[str, Any]) -> dict[str, Any]:
        inst = self._instruments[token]
        div = inst.price_divisor
        snap = self.market(token)
        last = snap.last_price / div if snap else inst.last_price
        close = snap.close / div if snap else inst.last_price
        bq, sq = p["buy_qty"], p["sell_qty"]
        bv, sv = p["buy_value"] / div, p["sell_value"] / div
        bp = bv / bq if bq else 0.0
        sp = sv / sq if sq else 0.0
        net = bq - sq
        matched = min(bq, sq)
        realised = matched * (sp - bp) if matched else 0.0
        avg = bp if net > 0 else sp if net < 0 else 0.0
        unrealised = net * (last - avg) if net else 0.0
        value = sv - bv
        pnl = value + net * last

        def r(x: float) -> float:
            return round(x, 4)

        return {
            "tradingsymbol": inst.tradingsymbol, "exchange": inst.exchange, "instrument_token": token,
            "product": product, "quantity": net, "overnight_quantity": 0, "multiplier": 1,
            "average_price": r(avg), "close_price": r(close), "last_price": r(last), "value": r(value),
            "pnl": r(pnl), "m2m": r(pnl), "unrealised": r(unrealised), "realised": r(realised),
            "buy_quantity": bq, "buy_price": r(bp), "buy_value": r(bv), "buy_m2m": r(bv),
            "sell_quantity": sq, "sell_price": r(sp), "sell_value": r(sv), "sell_m2m": r(sv),
            "day_buy_quantity": bq, "day_buy_price": r(bp), "day_buy_value": r(bv),
            "day_sell_quantity": sq, "day_sell_price": r(sp), "day_sell_value": r(sv),
        }

    def positions(self) -> dict[str, list[dict[str, Any]]]:
        """Kite ``{"net": [...], "day": [...]}`` (identical: no overnight positions)."""
        rows = [self._position_row(t, prod, p) for (t, prod), p in self._pos.items()]
        return {"net": rows, "day": [dict(r) for r in rows]}

    def holdings(self) -> list[dict[str, Any]]:
        """Seeded long-term holdings with live prices."""
        out = []
        for h in self._holdings:
            inst = self._instruments[h["instrument_token"]]
            snap = self.market(inst.instrument_token)
            last = snap.last_price / inst.price_divisor if snap else inst.last_price
            close = snap.close / inst.price_divisor if snap else inst.last_price
            p = self._pos.get((inst.instrument_token, "CNC"))
            used = p["sell_qty"] if p else 0
            row = dict(h)
            row.update({"used_quantity": used, "last_price": last, "close_price": close,
                        "pnl": round((last - h["average_price"]) * h["quantity"], 2),
                        "day_change": round(last - close, 4),
                        "day_change_percentage": round((last - close) * 100 / close, 4) if close else 0.0})
            out.append(row)
        return out

    def margins(self, segment: str | None = None) -> dict[str, Any]:
        """Kite ``/user/margins`` (or one segment of it)."""
        used, realised, unrealised = self._position_margin()
        available = self.available_margin()
        working = self.cash + realised - used - available
        avail: dict[str, float] = {"adhoc_margin": 0, "cash": self.cash, "opening_balance": self.cash,
                                   "live_balance": round(available, 2), "collateral": 0, "intraday_payin": 0}
        utilised: dict[str, float] = {
            "debits": round(used + working, 2), "exposure": 0, "m2m_realised": round(realised, 2),
            "m2m_unrealised": round(unrealised, 2), "option_premium": 0, "payout": 0,
            "span": round(used + working, 2), "holding_sales": 0, "turnover": 0, "liquid_collateral": 0,
            "stock_collateral": 0, "delivery": 0}
        equity = {"enabled": True, "net": round(available, 2), "available": avail, "utilised": utilised}
        commodity = {"enabled": False, "net": 0, "available": dict.fromkeys(avail, 0),
                     "utilised": dict.fromkeys(utilised, 0)}
        if segment is None:
            return {"equity": equity, "commodity": commodity}
        if segment == "equity":
            return equity
        if segment == "commodity":
            return commodity
        raise InputError(f"Invalid segment `{segment}`.")

    # ------------------------------------------------------------------ seed data

    @staticmethod
    def _seed_holdings(seed: int, instruments: list[Instrument]) -> list[dict[str, Any]]:
        rng = random.Random(f"kitesim:{seed}:holdings")
        equities = [i for i in instruments
                    if i.exchange == "NSE" and i.instrument_type == "EQ" and i.tradable]
        chosen = rng.sample(equities, k=min(4, len(equities)))
        out = []
        for inst in chosen:
            qty = rng.randint(1, 40) * 5
            avg = round(inst.last_price * rng.uniform(0.8, 1.1), 2)
            isin = f"INE{inst.exchange_token:06d}01{inst.exchange_token % 10}"
            out.append({
                "tradingsymbol": inst.tradingsymbol, "exchange": inst.exchange,
                "instrument_token": inst.instrument_token, "isin": isin, "product": "CNC", "price": 0,
                "quantity": qty, "used_quantity": 0, "t1_quantity": 0, "realised_quantity": qty,
                "authorised_quantity": 0, "authorised_date": None, "opening_quantity": qty,
                "collateral_quantity": 0, "collateral_type": "", "discrepancy": False, "average_price": avg,
                "last_price": inst.last_price, "close_price": inst.last_price, "pnl": 0.0, "day_change": 0.0,
                "day_change_percentage": 0.0,
            })
        return out
