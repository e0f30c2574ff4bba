"""The paper venue's execution model, as scenarios on hand-made ticks (no Kafka, no database)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from core.sessions import load_calendar
from execution.oms_core import Status
from execution.paper_market import Quote, decode_tick, queue_ahead, quote_from_tick, traded_volume
from execution.paper_venue import PaperVenue, RejectedOrder, VenueFill, VenueStatus

TOKEN = 408065
TICK = 0.05
T0 = int(datetime(2026, 11, 20, 4, 0, tzinfo=UTC).timestamp() * 1000)  # Fri 09:30 IST


def quote(ts: int, ltp: float, volume: int, bids: list[tuple[float, int]], asks: list[tuple[float, int]],
          recv: int | None = None) -> Quote:
    t = {"exchange_ts": ts, "recv_ts": recv or ts + 5, "ltp": ltp, "volume": volume, "last_qty": None,
         "bids": bids, "asks": asks}
    return quote_from_tick(t, TICK)


BOOK_BIDS = [(100.00, 300), (99.95, 200), (99.90, 500)]
BOOK_ASKS = [(100.05, 100), (100.10, 200), (100.20, 400)]


def order(oid: str, side: str = "BUY", otype: str = "MARKET", qty: int = 10, price: float | None = None,
          trigger: float | None = None, ts: int = T0) -> dict:
    return {"order_id": oid, "instrument_token": TOKEN, "strategy": "s1", "exchange": "NSE", "side": side,
            "order_type": otype, "qty": qty, "price": price, "trigger_price": trigger, "signal_ts": ts}


def venue(latency: int = 50) -> PaperVenue:
    v = PaperVenue(load_calendar(), latency_ms=latency)
    v.on_tick(TOKEN, quote(T0 - 1000, 100.0, 1000, BOOK_BIDS, BOOK_ASKS))
    return v


def fills(v: PaperVenue) -> list[tuple[str, int, float]]:
    return [(e.order_id, e.qty, e.price) for e in v.effects if isinstance(e, VenueFill)]


def statuses(v: PaperVenue) -> list[tuple[str, Status]]:
    return [(e.order_id, e.status) for e in v.effects if isinstance(e, VenueStatus)]


def test_market_order_fill_price_is_the_depth_walk_vwap() -> None:
    v = venue()
    v.receive(order("m1", qty=250), TICK)
    assert fills(v) == []  # not arrived yet: latency
    v.on_tick(TOKEN, quote(T0 + 100, 100.0, 1000, BOOK_BIDS, BOOK_ASKS))
    got = fills(v)
    assert got == [("m1", 100, 100.05), ("m1", 150, 100.10)]
    vwap = sum(q * p for _, q, p in got) / 250
    assert vwap == pytest.approx((100 * 100.05 + 150 * 100.10) / 250)
    assert "m1" not in v.orders


def test_market_order_beyond_the_visible_depth_cancels_the_remainder() -> None:
    v = venue()
    v.receive(order("m1", side="SELL", qty=1200), TICK)
    v.on_tick(TOKEN, quote(T0 + 100, 100.0, 1000, BOOK_BIDS, BOOK_ASKS))
    assert sum(q for _, q, _ in fills(v)) == 1000
    assert statuses(v) == [("m1", Status.CANCELLED)]
    assert "200 beyond the visible depth" in [e for e in v.effects if isinstance(e, VenueStatus)][0].detail


def test_two_orders_in_one_tick_do_not_take_the_same_liquidity_twice() -> None:
    v = venue(latency=0)
    v.receive(order("a", qty=100), TICK)
    v.receive(order("b", qty=100), TICK)
    assert fills(v) == [("a", 100, 100.05), ("b", 100, 100.10)]


def test_resting_buy_at_the_best_bid_fills_only_after_the_queue_ahead_has_traded() -> None:
    v = venue()
    v.receive(order("l1", otype="LIMIT", qty=50, price=100.00), TICK)
    v.on_tick(TOKEN, quote(T0 + 100, 100.0, 1000, BOOK_BIDS, BOOK_ASKS))
    assert statuses(v) == [("l1", Status.OPEN)] and fills(v) == []
    assert v.orders["l1"].ahead == 300  # what the tick showed at 100.00
    # 200 trade at 100.00: the queue ahead shrinks, nothing for us
    v.on_tick(TOKEN, quote(T0 + 200, 100.0, 1200, [(100.00, 150)] + BOOK_BIDS[1:], BOOK_ASKS))
    assert fills(v) == [] and v.orders["l1"].ahead == 100
    # 130 more at 100.00: 100 clear the queue, 30 reach us
    v.on_tick(TOKEN, quote(T0 + 300, 100.0, 1330, [(100.00, 60)] + BOOK_BIDS[1:], BOOK_ASKS))
    assert fills(v) == [("l1", 30, 100.0)]
    # and the rest when more trades there
    v.on_tick(TOKEN, quote(T0 + 400, 100.0, 1400, [(100.00, 60)] + BOOK_BIDS[1:], BOOK_ASKS))
    assert fills(v) == [("l1", 30, 100.0), ("l1", 20, 100.0)]
    assert "l1" not in v.orders


def test_cancellations_ahead_shrink_the_queue_to_what_is_shown() -> None:
    v = venue()
    v.receive(order("l1", otype="LIMIT", qty=50, price=100.00), TICK)
    v.on_tick(TOKEN, quote(T0 + 100, 100.0, 1000, BOOK_BIDS, BOOK_ASKS))
    v.on_tick(TOKEN, quote(T0 + 200, 100.05, 1000, [(100.00, 40)] + BOOK_BIDS[1:], BOOK_ASKS))  # no trade
    assert v.orders["l1"].ahead == 40
    v.on_tick(TOKEN, quote(T0 + 300, 100.0, 1060, [(100.00, 5)] + BOOK_BIDS[1:], BOOK_ASKS))
    assert fills(v) == [("l1", 20, 100.0)]


def test_a_trade_through_our_price_fills_the_whole_order_at_its_price() -> None:
    v = venue()
    v.receive(order("l1", otype="LIMIT", qty=50, price=99.95), TICK)
    v.on_tick(TOKEN, quote(T0 + 100, 100.0, 1000, BOOK_BIDS, BOOK_ASKS))
    v.on_tick(TOKEN, quote(T0 + 200, 99.90, 1001, [(99.85, 10)], [(99.90, 10)]))
    assert fills(v) == [("l1", 50, 99.95)]


def test_visible_liquidity_through_our_price_fills_us() -> None:
    v = venue()
    v.receive(order("s1", side="SELL", otype="LIMIT", qty=80, price=100.20), TICK)
    v.on_tick(TOKEN, quote(T0 + 100, 100.0, 1000, BOOK_BIDS, BOOK_ASKS))
    assert v.orders["s1"].ahead == 400
    v.on_tick(TOKEN, quote(T0 + 200, 100.15, 1000, [(100.25, 30), (100.15, 500)], [(100.30, 10)]))
    assert fills(v) == [("s1", 30, 100.20)]  # the bid at 100.25 crosses our ask; 100.15 does not


def test_marketable_limit_walks_to_its_price_and_rests_the_remainder_with_nobody_ahead() -> None:
    v = venue(latency=0)
    v.receive(order("l1", otype="LIMIT", qty=500, price=100.10), TICK)
    assert fills(v) == [("l1", 100, 100.05), ("l1", 200, 100.10)]
    po = v.orders["l1"]
    assert (po.state, po.open_qty, po.ahead) == ("resting", 200, 0)
    assert statuses(v) == []  # it traded: PARTIALLY_FILLED comes from the fills, not an OPEN


def test_stop_market_triggers_on_the_last_price_and_walks_that_tick() -> None:
    v = venue()
    v.receive(order("st", side="SELL", otype="SL-M", qty=100, trigger=99.80), TICK)
    v.on_tick(TOKEN, quote(T0 + 100, 100.0, 1000, BOOK_BIDS, BOOK_ASKS))
    assert statuses(v) == [("st", Status.OPEN)] and v.orders["st"].state == "stop"
    v.on_tick(TOKEN, quote(T0 + 200, 99.85, 1010, [(99.80, 60), (99.75, 100)], [(99.85, 10)]))
    assert fills(v) == []
    v.on_tick(TOKEN, quote(T0 + 300, 99.80, 1020, [(99.75, 60), (99.70, 100)], [(99.80, 10)]))
    assert fills(v) == [("st", 60, 99.75), ("st", 40, 99.70)]


def test_latency_puts_the_order_against_the_tick_before_its_arrival() -> None:
    v = venue(latency=500)
    v.receive(order("m1", qty=10, ts=T0), TICK)  # arrives at T0 + 500
    v.on_tick(TOKEN, quote(T0 + 400, 100.0, 1000, BOOK_BIDS, [(101.00, 100)]))
    assert fills(v) == []
    v.on_tick(TOKEN, quote(T0 + 600, 100.0, 1000, BOOK_BIDS, [(102.00, 100)]))
    assert fills(v) == [("m1", 10, 101.0)]  # the market as it was at T0 + 500


def test_day_orders_expire_at_the_session_close_on_event_time() -> None:
    v = venue()
    v.receive(order("l1", otype="LIMIT", qty=10, price=90.00), TICK)
    v.on_tick(TOKEN, quote(T0 + 100, 100.0, 1000, BOOK_BIDS, BOOK_ASKS))
    close = int(datetime(2026, 11, 20, 10, 0, tzinfo=UTC).timestamp() * 1000)  # 15:30 IST
    v.on_tick(TOKEN, quote(close - 1000, 100.0, 1000, BOOK_BIDS, BOOK_ASKS))
    assert "l1" in v.orders
    v.advance_clock(close)
    st = [e for e in v.effects if isinstance(e, VenueStatus)]
    assert (st[-1].order_id, st[-1].status, st[-1].ts) == ("l1", Status.EXPIRED, close)
    assert "l1" not in v.orders


def test_restart_keeps_resting_orders_and_queue_positions() -> None:
    ticks = [quote(T0 + 100, 100.0, 1000, BOOK_BIDS, BOOK_ASKS),
             quote(T0 + 200, 100.0, 1200, [(100.00, 150)] + BOOK_BIDS[1:], BOOK_ASKS),
             quote(T0 + 300, 100.0, 1330, [(100.00, 60)] + BOOK_BIDS[1:], BOOK_ASKS),
             quote(T0 + 400, 100.0, 1400, [(100.00, 60)] + BOOK_BIDS[1:], BOOK_ASKS)]

    def start() -> PaperVenue:
        v = venue()
        v.receive(order("l1", otype="LIMIT", qty=50, price=100.00), TICK)
        v.receive(order("l2", otype="LIMIT", qty=20, price=100.00), TICK)
        return v

    straight = start()
    for q in ticks:
        straight.on_tick(TOKEN, q)
    interrupted = start()
    for q in ticks[:2]:
        interrupted.on_tick(TOKEN, q)
    _, changed = interrupted.drain()
    stored = {po.order_id: po for po in changed if po.state != "done"}
    quotes = {t: m.quote for t, m in interrupted.markets.items() if m.quote is not None}
    restarted = PaperVenue(load_calendar(), latency_ms=50)
    restarted.restore([type(po)(**{f: getattr(po, f) for f in po.__slots__}) for po in stored.values()], quotes)
    assert restarted.orders["l1"].ahead == 100 and restarted.markets[TOKEN].ahead[("BUY", 2000)] == 100
    assert not restarted.on_tick(TOKEN, ticks[1])  # a replayed tick is recognised and ignored
    for q in ticks[2:]:
        restarted.on_tick(TOKEN, q)
    after_restart = [e for e in straight.effects if isinstance(e, VenueFill) and e.ts > T0 + 200]
    assert [e for e in restarted.effects if isinstance(e, VenueFill)] == after_restart
    assert [(e.order_id, e.qty) for e in after_restart] == [("l1", 30), ("l1", 20), ("l2", 20)]


@pytest.mark.parametrize(("kw", "match"), [
    ({"otype": "LIMIT", "price": None}, "price is required"),
    ({"otype": "LIMIT", "price": 100.03}, "not a multiple of the tick size 0.05"),
    ({"otype": "SL-M", "trigger": None}, "trigger_price is required"),
    ({"ts": int(datetime(2026, 11, 20, 11, 0, tzinfo=UTC).timestamp() * 1000)}, "market closed"),
])
def test_orders_the_venue_cannot_take_are_rejected_with_the_reason(kw: dict, match: str) -> None:
    with pytest.raises(RejectedOrder, match=match):
        venue().receive(order("x", **kw), TICK)


def test_queue_placement_rules() -> None:
    q = quote(T0, 100.0, 0, BOOK_BIDS, BOOK_ASKS)
    assert queue_ahead(q, "BUY", 2000) == 300  # at the best bid
    assert queue_ahead(q, "BUY", 2001) == 0  # improves on it
    assert queue_ahead(q, "BUY", 1990) == 500  # beyond the visible levels: the deepest level's quantity
    assert queue_ahead(q, "SELL", 2004) == 400


def test_tick_decoding_and_traded_volume() -> None:
    raw = (b'{"instrument_token": 408065, "exchange_ts": %d, "recv_ts": %d, "ltp": 100.0, "volume": 10, '
           b'"last_qty": 2, "bid": 99.95, "ask": 100.05, "bid_qty": 5, "ask_qty": 0, "oi": null}') % (T0, T0)
    t = decode_tick(raw)
    assert t["bids"] == [(99.95, 5)] and t["asks"] == []
    q = quote_from_tick(t, TICK)
    assert (q.ltp, q.bids) == (2000, ((1999, 5),))
    assert traded_volume(None, q) == 2 and traded_volume(q, quote(T0 + 1, 100.0, 17, [], [])) == 7
    for bad in (b"{", b'{"instrument_token": 0}', raw.replace(b'"ltp": 100.0', b'"ltp": "x"')):
        with pytest.raises(Exception, match="tick|instrument_token|ltp"):
            decode_tick(bad)


def test_liquidity_we_took_is_not_taken_again_while_the_level_still_shows_it() -> None:
    v = venue()
    v.receive(order("l1", otype="LIMIT", qty=500, price=99.95), TICK)
    v.on_tick(TOKEN, quote(T0 + 100, 100.0, 1000, BOOK_BIDS, BOOK_ASKS))
    crossing = [(99.90, 100)]  # an ask through our bid, shown on three ticks in a row
    for i in range(3):
        v.on_tick(TOKEN, quote(T0 + 200 + i, 99.95, 1000, [(99.85, 10)], crossing))
    assert fills(v) == [("l1", 100, 99.95)]
    v.on_tick(TOKEN, quote(T0 + 300, 99.95, 1000, [(99.85, 10)], [(99.90, 40)]))  # others took 60 of it
    v.on_tick(TOKEN, quote(T0 + 400, 99.95, 1000, [(99.85, 10)], [(99.90, 90)]))  # 50 new
    assert fills(v) == [("l1", 100, 99.95), ("l1", 50, 99.95)]


def test_two_market_orders_on_successive_ticks_walk_what_the_first_left() -> None:
    v = venue(latency=0)
    v.receive(order("a", qty=100), TICK)
    v.on_tick(TOKEN, quote(T0 + 100, 100.0, 1000, BOOK_BIDS, BOOK_ASKS))  # the same depth again
    v.receive(order("b", qty=100), TICK)
    assert fills(v) == [("a", 100, 100.05), ("b", 100, 100.10)]


def test_an_order_meeting_the_first_tick_is_not_filled_again_by_that_tick() -> None:
    v = PaperVenue(load_calendar(), latency_ms=50)
    v.receive(order("l1", otype="LIMIT", qty=300, price=100.05), TICK)
    v.on_tick(TOKEN, quote(T0 + 100, 100.05, 1000, BOOK_BIDS, BOOK_ASKS))  # the instrument's first tick
    assert fills(v) == [("l1", 100, 100.05)]
    assert v.orders["l1"].open_qty == 200 and v.orders["l1"].ahead == 0


def test_restart_restores_time_priority_in_the_order_orders_started_resting() -> None:
    v = venue()
    v.receive(order("late", otype="LIMIT", qty=10, price=100.00, ts=T0 + 400), TICK)  # seq 1, arrives later
    v.receive(order("early", otype="LIMIT", qty=10, price=100.00, ts=T0), TICK)  # seq 2, rests first
    v.on_tick(TOKEN, quote(T0 + 100, 100.0, 1000, BOOK_BIDS, BOOK_ASKS))
    v.on_tick(TOKEN, quote(T0 + 500, 100.0, 1000, BOOK_BIDS, BOOK_ASKS))
    _, changed = v.drain()
    restarted = PaperVenue(load_calendar(), latency_ms=50)
    restarted.restore([type(po)(**{f: getattr(po, f) for f in po.__slots__}) for po in changed],
                      {TOKEN: v.markets[TOKEN].quote})
    restarted.on_tick(TOKEN, quote(T0 + 600, 100.0, 1310, [(100.00, 5)] + BOOK_BIDS[1:], BOOK_ASKS))
    assert fills(restarted) == [("early", 10, 100.0)]  # 310 traded: 300 ahead, then 'early', first to rest


def test_next_expiry_is_the_earliest_close_of_a_live_order() -> None:
    v = venue()
    assert v.next_expiry() is None
    v.receive(order("l1", otype="LIMIT", qty=10, price=90.00), TICK)
    assert v.next_expiry() == int(datetime(2026, 11, 20, 10, 0, tzinfo=UTC).timestamp() * 1000)
