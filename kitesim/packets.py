"""Kite WebSocket binary packets: pure encoding (and a reference decoder for tests).

Wire format (KITE_PROTOCOL.md): a frame is ``uint16 n_packets`` then, per packet,
``uint16 length`` + the packet. All fields are big-endian unsigned 32-bit ints;
depth entries are ``qty u32, price u32, orders u16, 2 pad bytes``. Prices are
integers in ``1/price_divisor`` rupee units. The packet length alone tells the
client the mode:

=========  ======================  =====================================
length     kind                    fields
=========  ======================  =====================================
8          ltp (any segment)       token, ltp
28 / 32    index quote / full      token, ltp, high, low, open, close, change[, exchange_ts]
44 / 184   quote / full            token, ltp, ltq, atp, volume, tbq, tsq, open, high, low, close
                                   [, ltt, oi, oi_high, oi_low, exchange_ts, depth 10 x 12]
=========  ======================  =====================================
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from core.universe import SEGMENT_INDICES, price_divisor, segment_of

Mode = Literal["ltp", "quote", "full"]
MODES: tuple[Mode, ...] = ("ltp", "quote", "full")

HEARTBEAT = b"\x00"
DEPTH_LEVELS = 5
U32_MAX = 2**32 - 1
#: Most packets one frame can carry (the count is a uint16).
MAX_PACKETS_PER_FRAME = 65535

_LTP = struct.Struct(">II")
_QUOTE = struct.Struct(">11I")
_FULL_EXTRA = struct.Struct(">5I")
_DEPTH = struct.Struct(">IIH2x")
_INDEX_QUOTE = struct.Struct(">7I")
_INDEX_FULL = struct.Struct(">8I")
_LEN = struct.Struct(">H")

LTP_LEN, INDEX_QUOTE_LEN, INDEX_FULL_LEN, QUOTE_LEN, FULL_LEN = 8, 28, 32, 44, 184


@dataclass(frozen=True, slots=True)
class DepthLevel:
    """One level of market depth, price in wire units."""

    qty: int
    price: int
    orders: int


def _empty_depth() -> tuple[DepthLevel, ...]:
    return tuple(DepthLevel(0, 0, 0) for _ in range(DEPTH_LEVELS))


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The market state of one instrument after one tick, prices in integer wire units.

    ``seq`` numbers the instrument's ticks from 1; ``ts`` is the simulated epoch
    time (seconds, float) of the tick.
    """

    instrument_token: int
    last_price: int
    seq: int = 0
    ts: float = 0.0
    last_qty: int = 0
    avg_price: int = 0
    volume: int = 0
    total_buy_qty: int = 0
    total_sell_qty: int = 0
    open: int = 0
    high: int = 0
    low: int = 0
    close: int = 0
    last_trade_time: int = 0
    oi: int = 0
    oi_day_high: int = 0
    oi_day_low: int = 0
    exchange_timestamp: int = 0
    buy: tuple[DepthLevel, ...] = field(default_factory=_empty_depth)
    sell: tuple[DepthLevel, ...] = field(default_factory=_empty_depth)

    @property
    def is_index(self) -> bool:
        """Indices (segment 9) use the 28/32-byte index packets."""
        return segment_of(self.instrument_token) == SEGMENT_INDICES


def _u32(value: int, name: str) -> int:
    if not 0 <= value <= U32_MAX:
        raise ValueError(f"{name}={value} does not fit an unsigned 32-bit field")
    return value


def encode_ltp(snap: Snapshot) -> bytes:
    """8-byte ltp packet."""
    return _LTP.pack(_u32(snap.instrument_token, "instrument_token"), _u32(snap.last_price, "last_price"))


def encode_quote(snap: Snapshot) -> bytes:
    """44-byte quote packet (non-index)."""
    s = snap
    return _QUOTE.pack(*(_u32(v, n) for n, v in (
        ("instrument_token", s.instrument_token), ("last_price", s.last_price), ("last_qty", s.last_qty),
        ("avg_price", s.avg_price), ("volume", s.volume), ("total_buy_qty", s.total_buy_qty),
        ("total_sell_qty", s.total_sell_qty), ("open", s.open), ("high", s.high), ("low", s.low),
        ("close", s.close))))


def encode_full(snap: Snapshot) -> bytes:
    """184-byte full packet (non-index): quote + times, OI and 5+5 depth levels."""
    s = snap
    if len(s.buy) != DEPTH_LEVELS or len(s.sell) != DEPTH_LEVELS:
        raise ValueError(f"depth needs {DEPTH_LEVELS} levels per side")
    parts = [encode_quote(s), _FULL_EXTRA.pack(*(_u32(v, n) for n, v in (
        ("last_trade_time", s.last_trade_time), ("oi", s.oi), ("oi_day_high", s.oi_day_high),
        ("oi_day_low", s.oi_day_low), ("exchange_timestamp", s.exchange_timestamp))))]
    for lvl in (*s.buy, *s.sell):
        if not 0 <= lvl.orders <= 0xFFFF:
            raise ValueError(f"depth orders={lvl.orders} does not fit an unsigned 16-bit field")
        parts.append(_DEPTH.pack(_u32(lvl.qty, "depth qty"), _u32(lvl.price, "depth price"), lvl.orders))
    return b"".join(parts)


def encode_index(snap: Snapshot, full: bool) -> bytes:
    """28-byte (quote) or 32-byte (full) index packet.

    The ``change`` field (ltp - close) can be negative: it is sent as 32-bit
    two's complement (the official client ignores it and recomputes change).
    """
    s = snap
    head = [_u32(v, n) for n, v in (("instrument_token", s.instrument_token), ("last_price", s.last_price),
                                     ("high", s.high), ("low", s.low), ("open", s.open), ("close", s.close))]
    change = (s.last_price - s.close) & U32_MAX
    if full:
        return _INDEX_FULL.pack(*head, change, _u32(s.exchange_timestamp, "exchange_timestamp"))
    return _INDEX_QUOTE.pack(*head, change)


def encode_packet(snap: Snapshot, mode: Mode) -> bytes:
    """The packet for ``snap`` in ``mode``; indices get index packets."""
    if mode == "ltp":
        return encode_ltp(snap)
    if snap.is_index:
        return encode_index(snap, full=mode == "full")
    if mode == "quote":
        return encode_quote(snap)
    if mode == "full":
        return encode_full(snap)
    raise ValueError(f"unknown mode {mode!r}")


def assemble_frame(packets: Sequence[bytes]) -> bytes:
    """One binary frame: packet count, then each packet prefixed with its length."""
    if not packets:
        raise ValueError("a frame needs at least one packet")
    if len(packets) > MAX_PACKETS_PER_FRAME:
        raise ValueError(f"{len(packets)} packets exceed {MAX_PACKETS_PER_FRAME} per frame")
    out = [_LEN.pack(len(packets))]
    for p in packets:
        out.append(_LEN.pack(len(p)))
        out.append(p)
    return b"".join(out)


def frames(packets: Iterable[bytes], max_per_frame: int = 1000) -> list[bytes]:
    """Split packets into as few frames as allowed (``max_per_frame`` each)."""
    batch: list[bytes] = []
    result: list[bytes] = []
    for p in packets:
        batch.append(p)
        if len(batch) >= max_per_frame:
            result.append(assemble_frame(batch))
            batch = []
    if batch:
        result.append(assemble_frame(batch))
    return result


# ---------------------------------------------------------------- reference decoder (tests, tools)

def split_frame(frame: bytes) -> list[bytes]:
    """The packets of a frame (a 1-byte heartbeat has none)."""
    if len(frame) < 2:
        return []
    (n,) = _LEN.unpack_from(frame, 0)
    pos, packets = 2, []
    for _ in range(n):
        (length,) = _LEN.unpack_from(frame, pos)
        packets.append(frame[pos + 2: pos + 2 + length])
        pos += 2 + length
    if pos != len(frame):
        raise ValueError(f"frame has {len(frame) - pos} trailing bytes")
    return packets


def decode_packet(packet: bytes) -> dict[str, Any] | None:
    """Decode one packet into integer wire fields (``None`` for unknown lengths)."""
    n = len(packet)
    if n == LTP_LEN:
        token, ltp = _LTP.unpack(packet)
        return {"mode": "ltp", "instrument_token": token, "last_price": ltp}
    if n in (INDEX_QUOTE_LEN, INDEX_FULL_LEN):
        vals = _INDEX_FULL.unpack(packet) if n == INDEX_FULL_LEN else (*_INDEX_QUOTE.unpack(packet), None)
        token, ltp, high, low, open_, close, change, ets = vals
        out: dict[str, Any] = {"mode": "full" if n == INDEX_FULL_LEN else "quote", "instrument_token": token,
                               "last_price": ltp, "high": high, "low": low, "open": open_, "close": close,
                               "change": change - 2**32 if change >= 2**31 else change}
        if ets is not None:
            out["exchange_timestamp"] = ets
        return out
    if n in (QUOTE_LEN, FULL_LEN):
        keys = ("instrument_token", "last_price", "last_qty", "avg_price", "volume", "total_buy_qty",
                "total_sell_qty", "open", "high", "low", "close")
        out = dict(zip(keys, _QUOTE.unpack_from(packet, 0), strict=True))
        out["mode"] = "quote"
        if n == FULL_LEN:
            out["mode"] = "full"
            extra = ("last_trade_time", "oi", "oi_day_high", "oi_day_low", "exchange_timestamp")
            out.update(zip(extra, _FULL_EXTRA.unpack_from(packet, 44), strict=True))
            levels = [_DEPTH.unpack_from(packet, 64 + 12 * i) for i in range(2 * DEPTH_LEVELS)]
            out["buy"] = [DepthLevel(*lv) for lv in levels[:DEPTH_LEVELS]]
            out["sell"] = [DepthLevel(*lv) for lv in levels[DEPTH_LEVELS:]]
        return out
    return None


def decode_frame(frame: bytes) -> list[dict[str, Any]]:
    """Decode every known packet of a frame into integer wire fields."""
    return [d for d in (decode_packet(p) for p in split_frame(frame)) if d is not None]


def to_rupees(token: int, value: int) -> float:
    """Convert an integer wire price to rupees for ``token``'s segment."""
    return value / price_divisor(token)
