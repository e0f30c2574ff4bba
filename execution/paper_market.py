"""The market as the paper venue sees it: ticks decoded to integer-tick quotes, and the queue model's arithmetic.

Pure: no I/O. :mod:`execution.paper_venue` keeps one :class:`Quote` per instrument (the latest tick)
and asks the functions here where a new resting order joins the queue and how much of the market's
traded volume reaches it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import orjson

from core.errors import PoisonMessage
from schemas.limits import MAX_TOKEN, MAX_TS_MS, MIN_TS_MS

Levels = tuple[tuple[int, int], ...]
"""Depth of one side as ``(price in ticks, qty)``, best first, only levels with a positive qty."""


@dataclass(frozen=True, slots=True)
class Quote:
    """One tick of one instrument, prices in integer ticks of its tick size."""

    ts: int  # exchange_ts, epoch ms
    recv_ts: int
    ltp: int
    volume: int | None  # cumulative day volume
    last_qty: int | None
    bids: Levels
    asks: Levels

    @property
    def mark(self) -> tuple[int, int, int]:
        """Orders ticks of one instrument: a tick at or below the stored mark was applied already."""
        return self.ts, self.volume if self.volume is not None else -1, self.recv_ts

    def to_json(self) -> dict[str, Any]:
        return {"ts": self.ts, "recv_ts": self.recv_ts, "ltp": self.ltp, "volume": self.volume,
                "last_qty": self.last_qty, "bids": self.bids, "asks": self.asks}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Quote:
        return cls(d["ts"], d["recv_ts"], d["ltp"], d["volume"], d["last_qty"],
                   tuple((int(p), int(q)) for p, q in d["bids"]), tuple((int(p), int(q)) for p, q in d["asks"]))


def to_ticks(price: float, tick_size: float) -> int | None:
    """``price`` in whole ticks, or None when it is not on the tick grid (within 1e-6 of a tick)."""
    x = price / tick_size
    n = round(x)
    return n if abs(x - n) < 1e-6 else None


def to_price(ticks: int, tick_size: float) -> float:
    return round(ticks * tick_size, 8)


def _int(v: Any, name: str, lo: int, hi: int) -> int:
    if type(v) is not int or not lo <= v < hi:
        raise PoisonMessage(f"{name} must be an integer in [{lo}, {hi}), got {v!r}")
    return v


def _opt_int(v: Any, name: str) -> int | None:
    return None if v is None else _int(v, name, 0, 2**62)


def _price(v: Any, name: str) -> float:
    if type(v) not in (int, float) or not math.isfinite(v) or v < 0:
        raise PoisonMessage(f"{name} must be a finite non-negative number, got {v!r}")
    return float(v)


def decode_tick(value: bytes | None) -> dict[str, Any]:
    """The fields of a Tick the paper venue reads, checked as the Tick contract checks them.

    Undecodable JSON, a missing or mistyped field, a token or timestamp out of range: PoisonMessage.
    Depth is optional (``depth.buy``/``depth.sell``: lists of ``{price, qty}``); without it the
    tick's ``bid``/``ask`` and their quantities make one level per side.
    """
    if value is None:
        raise PoisonMessage("tick without a value")
    try:
        d = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise PoisonMessage(f"undecodable tick: {exc}") from None
    if not isinstance(d, dict):
        raise PoisonMessage("a tick must be a JSON object")
    out: dict[str, Any] = {"instrument_token": _int(d.get("instrument_token"), "instrument_token", 1, MAX_TOKEN),
           "exchange_ts": _int(d.get("exchange_ts"), "exchange_ts", MIN_TS_MS, MAX_TS_MS),
           "recv_ts": _int(d.get("recv_ts"), "recv_ts", MIN_TS_MS, MAX_TS_MS),
           "ltp": _price(d.get("ltp"), "ltp"),
           "volume": _opt_int(d.get("volume"), "volume"),
           "last_qty": _opt_int(d.get("last_qty"), "last_qty")}
    bids: list[tuple[float, int]] = []
    asks: list[tuple[float, int]] = []
    depth = d.get("depth")
    if isinstance(depth, dict):
        for key, side in (("buy", bids), ("sell", asks)):
            levels = depth.get(key) or []
            if not isinstance(levels, list) or len(levels) > 5:
                raise PoisonMessage(f"depth.{key} must be a list of at most 5 levels")
            for lv in levels:
                if not isinstance(lv, dict):
                    raise PoisonMessage(f"depth.{key} levels must be objects")
                px, qty = _price(lv.get("price"), f"depth.{key}.price"), _opt_int(lv.get("qty"), f"depth.{key}.qty")
                if px > 0 and qty:
                    side.append((px, qty))
    elif depth is not None:
        raise PoisonMessage("depth must be an object")
    else:
        for px_key, q_key, side in (("bid", "bid_qty", bids), ("ask", "ask_qty", asks)):
            raw_px, raw_qty = d.get(px_key), d.get(q_key)
            if raw_px is not None and raw_qty is not None:
                p, q = _price(raw_px, px_key), _opt_int(raw_qty, q_key)
                if p > 0 and q:
                    side.append((p, q))
    out["bids"], out["asks"] = bids, asks
    return out


def quote_from_tick(t: dict[str, Any], tick_size: float) -> Quote:
    """A decoded tick in ticks of ``tick_size``; off-grid depth prices are rounded to the nearest tick."""
    def side(levels: list[tuple[float, int]], best_high: bool) -> Levels:
        out = sorted(((round(p / tick_size), q) for p, q in levels), reverse=best_high)
        return tuple(out)

    return Quote(t["exchange_ts"], t["recv_ts"], round(t["ltp"] / tick_size), t["volume"], t["last_qty"],
                 side(t["bids"], True), side(t["asks"], False))


def traded_volume(prev: Quote | None, q: Quote) -> int:
    """Volume traded between two ticks: the cumulative-volume delta, else the tick's last trade quantity.

    A cumulative volume that goes down (a new day) counts as no trade seen.
    """
    if prev is not None and prev.volume is not None and q.volume is not None:
        return max(0, q.volume - prev.volume)
    if prev is not None and (prev.ltp, prev.ts) == (q.ltp, q.ts):
        return 0
    return q.last_qty or 0


def queue_ahead(q: Quote | None, side: str, price: int) -> int:
    """Market quantity ahead of a new order of ours resting at ``price`` (ticks) on ``side``.

    The quantity the latest tick shows at that price; 0 when the price improves on the best (or the
    side shows nothing); when it lies beyond the five visible levels, the deepest level's quantity
    (an estimate: the queue there is not visible).
    """
    levels = () if q is None else (q.bids if side == "BUY" else q.asks)
    if not levels:
        return 0
    better = (lambda a, b: a > b) if side == "BUY" else (lambda a, b: a < b)
    if better(price, levels[0][0]):
        return 0
    for px, qty in levels:
        if px == price:
            return qty
    if better(levels[-1][0], price):
        return levels[-1][1]
    return 0


def displayed(q: Quote, side: str, price: int) -> int | None:
    """Quantity the tick shows at ``price`` on ``side``: 0 when the price is inside the visible range
    but has no level, None when it lies beyond the visible levels (nothing known)."""
    levels = q.bids if side == "BUY" else q.asks
    if not levels:
        return None
    for px, qty in levels:
        if px == price:
            return qty
    deepest = levels[-1][0]
    beyond = price < deepest if side == "BUY" else price > deepest
    return None if beyond else 0
