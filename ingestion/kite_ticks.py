"""KiteTicker tick dicts -> the Tick contract (DESIGN section 4). Pure, no I/O.

What the official client hands ``on_ticks`` (``kiteconnect/ticker.py``):

- prices already divided by the segment divisor (floats, rupees);
- ``exchange_timestamp`` / ``last_trade_time`` as *naive* datetimes built with
  ``datetime.fromtimestamp(epoch_s)``, i.e. in the process's local zone;
- ``depth`` levels keyed ``quantity``/``price``/``orders``;
- ltp (8 bytes), index quote (28) and equity quote (44) packets carry no
  exchange timestamp; index packets carry no volume, quantity or depth.

Timestamps: a naive datetime made by ``fromtimestamp`` is turned back into
epoch time with ``datetime.timestamp()``, which interprets it in the same
local zone, so the round trip is exact whatever the machine's ``TZ`` is (the
service also pins ``TZ=Asia/Kolkata``, a zone without DST, so no fold can make
it ambiguous). Aware datetimes and raw epoch numbers are accepted too. A
missing or zero exchange timestamp falls back to the receive time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

DEPTH_LEVELS = 5


def epoch_ms(value: object) -> int | None:
    """Epoch milliseconds of a KiteTicker timestamp (naive local / aware datetime, or epoch s).

    Returns ``None`` for missing values and for the epoch itself (Kite sends 0
    when it has no time).
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        ms = round(value.timestamp() * 1000)
    elif isinstance(value, int | float):
        ms = round(float(value) * 1000)
    else:
        return None
    return ms if ms > 0 else None


def _levels(raw: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{"price": lv["price"], "qty": lv["quantity"], "orders": lv["orders"]} for lv in raw]


def _best(levels: list[dict[str, Any]]) -> tuple[float | None, int | None]:
    """Price and quantity of the best level, or ``(None, None)`` when the side is empty."""
    if levels:
        top = levels[0]
        if top["price"] > 0 and top["qty"] > 0:
            return top["price"], top["qty"]
    return None, None


def to_tick(raw: Mapping[str, Any], recv_ms: int) -> dict[str, Any]:
    """Convert one KiteTicker tick dict into a Tick-contract dict.

    ``recv_ms`` is when the frame carrying it was received (epoch ms). Extra
    optional fields: ``mode`` and, in full mode, ``ltt`` (last trade time, ms).
    """
    exchange_ts = epoch_ms(raw.get("exchange_timestamp")) or recv_ms
    tick: dict[str, Any] = {
        "instrument_token": raw["instrument_token"],
        "exchange_ts": exchange_ts,
        "recv_ts": recv_ms,
        "ltp": raw["last_price"],
        "volume": None, "last_qty": None, "oi": None,
        "bid": None, "ask": None, "bid_qty": None, "ask_qty": None,
        "mode": raw.get("mode"),
    }
    if "volume_traded" in raw:  # equity quote/full packets (indices carry no volume)
        tick["volume"] = raw["volume_traded"]
        tick["last_qty"] = raw["last_traded_quantity"]
    if "oi" in raw:
        tick["oi"] = raw["oi"]
    depth = raw.get("depth")
    if depth:
        buy, sell = _levels(depth.get("buy", ())), _levels(depth.get("sell", ()))
        tick["bid"], tick["bid_qty"] = _best(buy)
        tick["ask"], tick["ask_qty"] = _best(sell)
        tick["depth"] = {"buy": buy, "sell": sell}
    ltt = epoch_ms(raw.get("last_trade_time"))
    if ltt is not None:
        tick["ltt"] = ltt
    return tick


def to_ticks(raws: Iterable[Mapping[str, Any]], recv_ms: int) -> list[dict[str, Any]]:
    """Convert every tick of one frame."""
    return [to_tick(r, recv_ms) for r in raws]
