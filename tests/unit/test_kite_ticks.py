"""KiteTicker tick dicts (from real binary frames) -> Tick contract."""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta, timezone

import pytest
from kiteconnect import KiteTicker

from ingestion.kite_ticks import epoch_ms, to_tick, to_ticks
from kitesim.packets import DepthLevel, Snapshot, assemble_frame, encode_packet
from schemas import Tick

IST = timezone(timedelta(hours=5, minutes=30))
EXCH_S = 1_763_702_130  # 2025-11-21 10:45:30 IST
RECV_MS = 1_763_702_130_250


def _parse(*packets: bytes) -> list[dict]:
    return KiteTicker("k", "t")._parse_binary(assemble_frame(list(packets)))


def _snap(token: int = 738561, **kw) -> Snapshot:
    buy = tuple(DepthLevel(100 + i, 154_550 - 5 * i, 3 + i) for i in range(5))
    sell = tuple(DepthLevel(200 + i, 154_560 + 5 * i, 4 + i) for i in range(5))
    base = dict(instrument_token=token, last_price=154_555, last_qty=7, avg_price=154_500, volume=123_456,
                total_buy_qty=1000, total_sell_qty=2000, open=154_000, high=155_000, low=153_900, close=153_000,
                last_trade_time=EXCH_S - 1, oi=0, oi_day_high=0, oi_day_low=0, exchange_timestamp=EXCH_S,
                buy=buy, sell=sell)
    base.update(kw)
    return Snapshot(**base)


@pytest.fixture(params=["UTC", "Asia/Kolkata", "America/New_York"])
def local_tz(request):
    """KiteTicker's naive datetimes depend on the process zone; conversion must not."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = request.param
    time.tzset()
    yield request.param
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


def test_full_packet_when_converted_then_matches_contract_with_exact_epoch_ms(local_tz):
    raw = _parse(encode_packet(_snap(), "full"))[0]
    tick = to_tick(raw, RECV_MS)
    Tick.model_validate(tick)
    assert tick["exchange_ts"] == EXCH_S * 1000
    assert tick["ltt"] == (EXCH_S - 1) * 1000
    assert tick["recv_ts"] == RECV_MS
    assert tick["ltp"] == 1545.55
    assert tick["volume"] == 123_456 and tick["last_qty"] == 7 and tick["oi"] == 0
    assert (tick["bid"], tick["bid_qty"], tick["ask"], tick["ask_qty"]) == (1545.5, 100, 1545.6, 200)
    assert len(tick["depth"]["buy"]) == 5 and len(tick["depth"]["sell"]) == 5
    assert tick["depth"]["sell"][4] == {"price": 1545.8, "qty": 204, "orders": 8}
    assert tick["mode"] == "full"


def test_quote_and_ltp_packets_when_no_exchange_time_then_use_recv_time():
    quote = to_tick(_parse(encode_packet(_snap(), "quote"))[0], RECV_MS)
    ltp = to_tick(_parse(encode_packet(_snap(), "ltp"))[0], RECV_MS)
    for t in (quote, ltp):
        Tick.model_validate(t)
        assert t["exchange_ts"] == RECV_MS
        assert t["bid"] is None and t["ask"] is None and "depth" not in t
    assert quote["volume"] == 123_456 and quote["oi"] is None
    assert ltp["volume"] is None and ltp["last_qty"] is None


def test_index_full_packet_when_converted_then_no_volume_and_exchange_time_kept(local_tz):
    snap = Snapshot(instrument_token=256265, last_price=2_605_265, open=2_600_000, high=2_610_000,
                    low=2_590_000, close=2_600_000, exchange_timestamp=EXCH_S)
    tick = to_tick(_parse(encode_packet(snap, "full"))[0], RECV_MS)
    Tick.model_validate(tick)
    assert tick["ltp"] == 26052.65
    assert tick["exchange_ts"] == EXCH_S * 1000
    assert tick["volume"] is None and tick["bid"] is None and tick["oi"] is None


def test_cds_prices_when_converted_then_use_segment_divisor():
    token = 1001 << 8 | 3
    snap = _snap(token, last_price=835_012_500, buy=tuple(DepthLevel(1, 835_000_000, 1) for _ in range(5)))
    tick = to_tick(_parse(encode_packet(snap, "full"))[0], RECV_MS)
    assert tick["ltp"] == pytest.approx(83.50125)
    assert tick["bid"] == pytest.approx(83.5)


def test_empty_depth_side_when_converted_then_bid_is_null():
    empty = tuple(DepthLevel(0, 0, 0) for _ in range(5))
    tick = to_tick(_parse(encode_packet(_snap(buy=empty), "full"))[0], RECV_MS)
    assert tick["bid"] is None and tick["bid_qty"] is None and tick["ask"] == 1545.6


def test_zero_exchange_timestamp_when_converted_then_falls_back_to_recv():
    tick = to_tick(_parse(encode_packet(_snap(exchange_timestamp=0, last_trade_time=0), "full"))[0], RECV_MS)
    assert tick["exchange_ts"] == RECV_MS and "ltt" not in tick


def test_epoch_ms_accepts_aware_naive_and_numbers():
    aware = datetime.fromtimestamp(EXCH_S, IST)
    assert epoch_ms(aware) == EXCH_S * 1000
    assert epoch_ms(datetime.fromtimestamp(EXCH_S)) == EXCH_S * 1000
    assert epoch_ms(EXCH_S) == EXCH_S * 1000
    assert epoch_ms(None) is None and epoch_ms(0) is None and epoch_ms("x") is None


def test_frame_with_many_packets_when_converted_then_order_kept():
    packets = [encode_packet(_snap(738561, volume=100 + i), "full") for i in range(20)]
    ticks = to_ticks(_parse(*packets), RECV_MS)
    assert [t["volume"] for t in ticks] == [100 + i for i in range(20)]
