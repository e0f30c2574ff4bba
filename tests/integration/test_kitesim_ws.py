"""The official KiteTicker against kitesim (each ticker session in a subprocess: Twisted cannot restart)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kiteconnect import KiteConnect

from kitesim.server import RunningSimulator
from kitesim.testing import control, running_simulator

PROBE = Path(__file__).with_name("kiteticker_probe.py")
RELIANCE, INFY, NIFTY, USDINR_CDS, USDINR_BCD, NIFTY_FUT = 738561, 408065, 256265, 471555, 179259142, 13358850

QUOTE_KEYS = {"tradable", "mode", "instrument_token", "last_price", "last_traded_quantity",
              "average_traded_price",
              "volume_traded", "total_buy_quantity", "total_sell_quantity", "ohlc", "change"}
FULL_KEYS = QUOTE_KEYS | {"last_trade_time", "oi", "oi_day_high", "oi_day_low", "exchange_timestamp", "depth"}
INDEX_QUOTE_KEYS = {"tradable", "mode", "instrument_token", "last_price", "ohlc", "change"}


def probe_cmd(root: str, seconds: float, *args: str) -> list[str]:
    return [sys.executable, str(PROBE), "--root", root, "--seconds", str(seconds), *args]


def run_probe(root: str, seconds: float, *args: str) -> dict[str, Any]:
    done = subprocess.run(probe_cmd(root, seconds, *args), capture_output=True, text=True,
                          timeout=seconds + 20,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def sim() -> Iterator[RunningSimulator]:
    with running_simulator(seed=5, rate_limits=False) as s:
        yield s


@pytest.fixture(scope="module")
def session(sim: RunningSimulator) -> dict[str, Any]:
    """One 4-second ticker session: quote, full and ltp tokens, and a market order placed meanwhile."""
    proc = subprocess.Popen(probe_cmd(sim.ws_url, 4.0, "--quote", str(RELIANCE),
                                      "--full", str(NIFTY), str(USDINR_CDS), str(USDINR_BCD), str(NIFTY_FUT),
                                      "--ltp", str(INFY)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        conns = control(sim.http_url, "/_sim/stats")["ws_connections"]
        if any(c["open"] and c["subscribed"] == 6 for c in conns):
            break
        time.sleep(0.05)
    kite = KiteConnect(api_key="sim", access_token="sim-token", root=sim.http_url)
    order_id = kite.place_order(variety="regular", exchange="NSE", tradingsymbol="RELIANCE",
                                transaction_type="BUY",
                                quantity=2, product="MIS", order_type="MARKET", market_protection=-1)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    result["order_id"] = order_id
    result["stats"] = control(sim.http_url, "/_sim/stats")
    return result


def _by(session: dict[str, Any], token: int, mode: str) -> list[dict[str, Any]]:
    return [t for t in session["ticks"] if t["instrument_token"] == token and t["mode"] == mode]


def test_connects_and_receives_ticks(session: dict[str, Any]) -> None:
    assert session["connected"]
    assert session["frames"] > 0
    assert session["errors"] == []


def test_quote_mode_ticks_have_quote_keys(session: dict[str, Any]) -> None:
    ticks = _by(session, RELIANCE, "quote")

    assert len(ticks) >= 3  # 1-2 ticks a second
    assert all(set(t) == QUOTE_KEYS for t in ticks)
    assert all(t["tradable"] for t in ticks)
    volumes = [t["volume_traded"] for t in ticks]
    assert volumes == sorted(volumes)
    assert all(round(t["last_price"] / 0.05, 6) == round(t["last_price"] / 0.05) for t in ticks)


def test_full_mode_ticks_have_full_keys_with_depth(session: dict[str, Any]) -> None:
    for token in (USDINR_CDS, USDINR_BCD, NIFTY_FUT):
        ticks = _by(session, token, "full")
        assert ticks, token
        t = ticks[-1]
        assert set(t) == FULL_KEYS
        assert len(t["depth"]["buy"]) == 5 and len(t["depth"]["sell"]) == 5
        assert t["depth"]["buy"][0]["price"] <= t["depth"]["sell"][0]["price"]
        assert t["ohlc"]["low"] <= t["last_price"] <= t["ohlc"]["high"]
    assert 50 < _by(session, USDINR_CDS, "full")[-1]["last_price"] < 150  # CDS divisor 1e7
    assert 50 < _by(session, USDINR_BCD, "full")[-1]["last_price"] < 150  # BCD divisor 1e4
    assert _by(session, NIFTY_FUT, "full")[-1]["oi"] > 0


def test_index_ticks_are_index_packets(session: dict[str, Any]) -> None:
    full = _by(session, NIFTY, "full")

    assert full
    assert all(set(t) == INDEX_QUOTE_KEYS | {"exchange_timestamp"} and t["tradable"] is False for t in full)
    assert 20_000 < full[-1]["last_price"] < 32_000


def test_ltp_mode_ticks(session: dict[str, Any]) -> None:
    ticks = _by(session, INFY, "ltp")

    assert ticks and all(set(t) == {"tradable", "mode", "instrument_token", "last_price"} for t in ticks)


def test_heartbeats_arrive(session: dict[str, Any]) -> None:
    # 1-byte heartbeats are binary messages without ticks
    assert session["binary_messages"] > session["frames"]


def test_order_postbacks_arrive_as_text_frames(session: dict[str, Any]) -> None:
    updates = [u for u in session["order_updates"] if u["order_id"] == session["order_id"]]

    assert [u["status"] for u in updates][0] == "OPEN"
    assert updates[-1]["status"] == "COMPLETE" and updates[-1]["filled_quantity"] == 2


def test_stats_count_what_was_sent_per_instrument(session: dict[str, Any], sim: RunningSimulator) -> None:
    received: dict[int, int] = {}
    for t in session["ticks"]:
        received[t["instrument_token"]] = received.get(t["instrument_token"], 0) + 1
    stats = session["stats"]
    sent = {int(k): v for k, v in stats["ticks_sent"].items()}
    snaps = {int(k): v for k, v in stats["snapshots_sent"].items()}

    for token, n in received.items():
        assert n == sent.get(token, 0) + snaps.get(token, 0), token
    log = control(sim.http_url, f"/_sim/ticks?token={RELIANCE}")["ticks"]
    assert [e["volume"] for e in log] == [t["volume_traded"] for t in _by(session, RELIANCE, "quote")]


def test_round_trip_when_decoded_by_kiteticker_then_exact_values_kitesim_sent(
        session: dict[str, Any], sim: RunningSimulator) -> None:
    # The probe's connection: the one that subscribed the session's six tokens.
    conn = next(c["id"] for c in session["stats"]["ws_connections"] if c["subscribed"] == 6)
    tokens = (RELIANCE, INFY, NIFTY, USDINR_CDS, USDINR_BCD, NIFTY_FUT)
    for token in tokens:
        got = [t for t in session["ticks"] if t["instrument_token"] == token]
        sent = control(sim.http_url, f"/_sim/ticks?token={token}&conn={conn}")["ticks"]
        assert got, token
        # every packet, in order, with the price kitesim sent (integer units / the segment's divisor)
        assert [t["last_price"] for t in got] == [e["last_price"] for e in sent], token
        assert [t["mode"] for t in got] == [e["mode"] for e in sent], token
        traded = [(t.get("volume_traded"), t.get("last_traded_quantity")) for t in got if "volume_traded" in t]
        # quote and full packets of tradable instruments carry volume and last quantity (index packets do not)
        sent_traded = [(e["volume"], e["last_qty"]) for e in sent if e["mode"] != "ltp" and got[0]["tradable"]]
        assert traded == sent_traded, token
    fut = _by(session, NIFTY_FUT, "full")
    assert [t["oi"] for t in fut] == [e["oi"] for e in control(
        sim.http_url, f"/_sim/ticks?token={NIFTY_FUT}&conn={conn}")["ticks"] if e["mode"] == "full"]


def test_bad_token_is_refused_with_403(sim: RunningSimulator) -> None:
    out = run_probe(sim.ws_url, 5.0, "--access-token", "bad", "--stop-on-close", "--quote", str(RELIANCE))

    assert not out["connected"]
    assert out["errors"] and out["closes"]
    assert "403" in out["errors"][0][1]


def test_expired_token_is_refused_and_live_connection_closed() -> None:
    with running_simulator(seed=2, token_expires_after=2.5, rate_limits=False) as s:
        live = run_probe(s.ws_url, 3.5, "--quote", str(RELIANCE))
        refused = run_probe(s.ws_url, 5.0, "--stop-on-close", "--quote", str(RELIANCE))

    assert live["connected"] and live["closes"] and live["closes"][0][0] == 1008
    assert not refused["connected"] and "403" in refused["errors"][0][1]


def test_drop_fault_makes_client_see_unclean_close(sim: RunningSimulator) -> None:
    before = max((c["id"] for c in control(sim.http_url, "/_sim/stats")["ws_connections"]), default=0)
    proc = subprocess.Popen(probe_cmd(sim.ws_url, 3.0, "--stop-on-close", "--quote", str(RELIANCE)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        conns = control(sim.http_url, "/_sim/stats")["ws_connections"]
        if any(c["open"] and c["id"] > before for c in conns):
            break
        time.sleep(0.05)
    control(sim.http_url, "/_sim/faults", {"drop_ws": True})
    out, _ = proc.communicate(timeout=30)
    result = json.loads(out.strip().splitlines()[-1])

    assert result["connected"]
    assert result["errors"] and result["errors"][0][0] == 1006


# ---------------------------------------------------------------- raw protocol (websockets client, no Twisted)


def _collect(ws: Any, seconds: float) -> tuple[list[bytes], list[str]]:
    binary: list[bytes] = []
    text: list[str] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            msg = ws.recv(timeout=left)
        except TimeoutError:
            break
        (binary if isinstance(msg, bytes) else text).append(msg)
    return binary, text


def _url(sim: RunningSimulator, token: str = "sim-token") -> str:
    return f"{sim.ws_url}/?api_key=sim&access_token={token}"


def test_raw_subscribe_mode_unsubscribe_and_duplicates(sim: RunningSimulator) -> None:
    from websockets.sync.client import connect

    from kitesim.packets import decode_frame

    with connect(_url(sim)) as ws:
        ws.send(json.dumps({"a": "subscribe", "v": [RELIANCE, NIFTY, 12345]}))
        ws.send(json.dumps({"a": "mode", "v": ["full", [RELIANCE]]}))
        ws.send(json.dumps({"a": "subscribe", "v": [RELIANCE]}))  # a reconnect-style duplicate
        ws.send("not json")
        binary, text = _collect(ws, 1.6)
        ws.send(json.dumps({"a": "unsubscribe", "v": [RELIANCE, NIFTY]}))
        time.sleep(0.2)
        after, _ = _collect(ws, 1.2)

    packets = [p for frame in binary for p in decode_frame(frame)]
    assert {p["instrument_token"] for p in packets} == {RELIANCE, NIFTY}
    assert [p["mode"] for p in packets if p["instrument_token"] == RELIANCE][-1] == "full"
    assert {p["mode"] for p in packets if p["instrument_token"] == NIFTY} == {"quote"}
    assert b"\x00" in binary  # heartbeat
    assert any(json.loads(t)["type"] == "error" for t in text)
    assert all(f == b"\x00" for f in after)  # only heartbeats after unsubscribing


def test_silence_fault_stops_ticks_and_heartbeats_but_keeps_the_socket(sim: RunningSimulator) -> None:
    from websockets.sync.client import connect

    with connect(_url(sim)) as ws:
        ws.send(json.dumps({"a": "subscribe", "v": [RELIANCE, INFY]}))
        _collect(ws, 0.3)
        control(sim.http_url, "/_sim/faults", {"ws_silence_s": 1.5})
        silent, _ = _collect(ws, 1.3)
        time.sleep(0.3)
        resumed, _ = _collect(ws, 1.2)

    assert silent == []
    assert resumed


def test_connection_limit_per_api_key(sim: RunningSimulator) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    conns = [connect(_url(sim)) for _ in range(3)]
    try:
        with pytest.raises(InvalidStatus) as err:
            connect(_url(sim))
    finally:
        for c in conns:
            c.close()

    assert err.value.response.status_code == 429
