"""kitesim packets decode, through the official client's own parser, to exactly what was encoded."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st
from kiteconnect import KiteTicker

from core.universe import make_token, price_divisor
from kitesim.packets import (
    DEPTH_LEVELS,
    HEARTBEAT,
    DepthLevel,
    Snapshot,
    assemble_frame,
    decode_frame,
    encode_packet,
    frames,
)

U32 = st.integers(min_value=0, max_value=2**32 - 1)
U16 = st.integers(min_value=0, max_value=2**16 - 1)
SEGMENTS = {"NSE": 1, "NFO": 2, "CDS": 3, "BSE": 4, "BCD": 6, "INDICES": 9}

TICKER = KiteTicker("k", "t")


def parse(frame: bytes) -> list[dict[str, Any]]:
    """The real client's decoder (a private method: exactly what on_ticks receives)."""
    return TICKER._parse_binary(frame)  # noqa: SLF001


@st.composite
def snapshots(draw: st.DrawFn, segments: tuple[int, ...] = tuple(SEGMENTS.values())) -> Snapshot:
    token = make_token(draw(st.integers(min_value=1, max_value=2**24 - 1)), draw(st.sampled_from(segments)))
    level = st.builds(DepthLevel, qty=U32, price=U32, orders=U16)
    return Snapshot(
        instrument_token=token, last_price=draw(U32), last_qty=draw(U32), avg_price=draw(U32),
        volume=draw(U32),
        total_buy_qty=draw(U32), total_sell_qty=draw(U32), open=draw(U32), high=draw(U32), low=draw(U32),
        close=draw(U32), last_trade_time=draw(U32), oi=draw(U32), oi_day_high=draw(U32), oi_day_low=draw(U32),
        exchange_timestamp=draw(U32),
        buy=tuple(draw(level) for _ in range(DEPTH_LEVELS)),
        sell=tuple(draw(level) for _ in range(DEPTH_LEVELS)))


def _ts(value: int) -> datetime | None:
    try:
        return datetime.fromtimestamp(value)
    except (OverflowError, OSError, ValueError):
        return None


def _change(ltp: float, close: float) -> float:
    return (ltp - close) * 100 / close if close != 0 else 0


def expected_tick(s: Snapshot, mode: str) -> dict[str, Any]:
    """What the client must produce for ``s`` in ``mode`` (same arithmetic as the client)."""
    div = float(price_divisor(s.instrument_token))
    tradable = s.instrument_token & 0xFF != 9
    out: dict[str, Any] = {"tradable": tradable, "mode": mode, "instrument_token": s.instrument_token,
                           "last_price": s.last_price / div}
    if mode == "ltp":
        return out
    ohlc = {"open": s.open / div, "high": s.high / div, "low": s.low / div, "close": s.close / div}
    out["ohlc"] = ohlc
    out["change"] = _change(out["last_price"], ohlc["close"])
    if s.is_index:
        if mode == "full":
            out["exchange_timestamp"] = _ts(s.exchange_timestamp)
        return out
    out.update({"last_traded_quantity": s.last_qty, "average_traded_price": s.avg_price / div,
                "volume_traded": s.volume, "total_buy_quantity": s.total_buy_qty,
                "total_sell_quantity": s.total_sell_qty})
    if mode == "full":
        out.update({"last_trade_time": _ts(s.last_trade_time), "oi": s.oi, "oi_day_high": s.oi_day_high,
                    "oi_day_low": s.oi_day_low, "exchange_timestamp": _ts(s.exchange_timestamp),
                    "depth": {side: [{"quantity": lv.qty, "price": lv.price / div, "orders": lv.orders}
                                     for lv in levels]
                              for side, levels in (("buy", s.buy), ("sell", s.sell))}})
    return out


@pytest.mark.parametrize("mode", ["ltp", "quote", "full"])
@pytest.mark.parametrize("segment", ["NSE", "CDS", "BCD", "INDICES", "NFO", "BSE"])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_packet_decodes_in_official_client_exactly(mode: str, segment: str, data: st.DataObject) -> None:
    snap = data.draw(snapshots(segments=(SEGMENTS[segment],)))

    ticks = parse(assemble_frame([encode_packet(snap, mode)]))  # type: ignore[arg-type]

    assert ticks == [expected_tick(snap, mode)]


@settings(max_examples=100, deadline=None)
@given(items=st.lists(st.tuples(snapshots(), st.sampled_from(["ltp", "quote", "full"])), min_size=1,
                      max_size=30))
def test_frame_of_mixed_packets_decodes_in_order(items: list[tuple[Snapshot, str]]) -> None:
    frame = assemble_frame([encode_packet(s, m) for s, m in items])  # type: ignore[arg-type]

    assert parse(frame) == [expected_tick(s, m) for s, m in items]


@settings(max_examples=50, deadline=None)
@given(items=st.lists(st.tuples(snapshots(), st.sampled_from(["ltp", "quote", "full"])), min_size=1,
                      max_size=20))
def test_reference_decoder_matches_encoder(items: list[tuple[Snapshot, str]]) -> None:
    decoded = decode_frame(assemble_frame([encode_packet(s, m) for s, m in items]))  # type: ignore[arg-type]

    for (snap, mode), d in zip(items, decoded, strict=True):
        assert d["instrument_token"] == snap.instrument_token
        assert d["last_price"] == snap.last_price
        assert d["mode"] == mode
        if mode == "full" and not snap.is_index:
            assert d["buy"] == list(snap.buy) and d["sell"] == list(snap.sell)
            assert d["exchange_timestamp"] == snap.exchange_timestamp


def test_packet_lengths_tell_the_mode() -> None:
    eq = Snapshot(instrument_token=738561, last_price=154560)
    idx = Snapshot(instrument_token=256265, last_price=2605265)

    assert [len(encode_packet(eq, m)) for m in ("ltp", "quote", "full")] == [8, 44, 184]
    assert [len(encode_packet(idx, m)) for m in ("ltp", "quote", "full")] == [8, 28, 32]


def test_heartbeat_yields_no_ticks() -> None:
    assert parse(HEARTBEAT) == []


def test_negative_index_change_is_twos_complement_and_ignored_by_client() -> None:
    idx = Snapshot(instrument_token=256265, last_price=100, close=200, open=150, high=210, low=90)

    (tick,) = parse(assemble_frame([encode_packet(idx, "quote")]))

    assert tick["change"] == -50.0
    assert decode_frame(assemble_frame([encode_packet(idx, "quote")]))[0]["change"] == -100


def test_out_of_range_values_are_rejected() -> None:
    with pytest.raises(ValueError, match="last_price"):
        encode_packet(Snapshot(instrument_token=738561, last_price=2**32), "ltp")
    with pytest.raises(ValueError, match="orders"):
        bad = (DepthLevel(1, 1, 70000),) + (DepthLevel(0, 0, 0),) * 4
        encode_packet(Snapshot(instrument_token=738561, last_price=1, buy=bad), "full")


def test_frames_split_large_batches() -> None:
    packets = [encode_packet(Snapshot(instrument_token=738561, last_price=i), "ltp") for i in range(2500)]

    out = frames(packets, max_per_frame=1000)

    assert len(out) == 3
    assert [t["last_price"] for f in out for t in parse(f)] == [i / 100 for i in range(2500)]
