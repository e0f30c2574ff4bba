"""compute.bar_service: the processor's poison handling, restore hook, commit offsets and wall-clock gate."""

from __future__ import annotations

import orjson

from compute.bar_service import BarProcessor, WallClockGate
from compute.tick_to_bar import BarBuilder


class Msg:
    """A stand-in for a consumed message (value/partition/offset/topic/key), built from plain data."""

    def __init__(self, value: bytes, partition: int, offset: int) -> None:
        self._v, self._p, self._o = value, partition, offset

    def value(self) -> bytes:
        return self._v

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def topic(self) -> str:
        return "ticks"

    def key(self) -> bytes:
        return b"k"


T0 = 1_710_215_100_000  # 2024-03-12 09:15 IST


def _tick(token: int, ts: int, ltp: float = 100.0, vol: int = 10) -> bytes:
    ts += T0
    return orjson.dumps({"instrument_token": token, "exchange_ts": ts, "recv_ts": ts, "ltp": ltp, "volume": vol,
                         "last_qty": 1, "oi": None, "bid": None, "ask": None, "bid_qty": None, "ask_qty": None})


def test_poison_inputs_are_rejected_and_good_ones_processed():
    restored: list[dict[int, int]] = []
    proc = BarProcessor(BarBuilder(grace_ms=0), "ticks", restorer=restored.append)
    msgs = [Msg(b"{nope", 0, 0), Msg(b"[1, 2]", 0, 1), Msg(orjson.dumps({"instrument_token": [1]}), 0, 2),
            Msg(_tick(5, 1_000), 0, 3), Msg(_tick(5, 2_500), 0, 4),
            Msg(_tick(6, 2 * 86_400_000), 0, 5), Msg(_tick(2**63, 1_000), 0, 6)]  # far-future ts, token beyond bigint
    em = proc.process(msgs, T0)  # the wall clock at the stream's start: only event-time closing
    reasons = sorted(err.split(":")[0] for _m, err in em.rejects)
    assert reasons == ["invalid JSON", "message is not a JSON object", "schema", "schema", "schema"]
    assert restored == [{5: 0}]  # the new instrument's resume point is asked for once
    assert [orjson.loads(m.value)["ts"] - T0 for m in em.messages] == [1_000]  # 1 s bar closed by event time
    assert em.messages[0].topic == "bars.1s" and em.messages[0].key == b"5"


def test_committable_never_passes_an_open_bar_or_what_was_consumed():
    proc = BarProcessor(BarBuilder(grace_ms=2000), "ticks")
    proc.process([Msg(_tick(7, 1_000), 0, 10), Msg(_tick(7, 1_200), 0, 11)], T0)
    assert proc.committable({("ticks", 0): 12}) == {("ticks", 0): 10}  # the open bar holds offset 10


def test_gate_clock_stops_while_a_partition_stalls_and_resumes_after_silent_close():
    gate = WallClockGate(live_window_ms=5_000, silent_close_ms=30_000)
    gate.assigned([0, 1], 0)
    assert gate.wall_now(0, [0, 1]) == 0
    assert gate.wall_now(4_000, [0]) == 4_000  # both within the live window
    assert gate.wall_now(8_000, [0]) == 4_000  # partition 1 quiet 8 s: the clock stands still
    for t in (12_000, 16_000, 20_000, 24_000, 28_000):
        assert gate.wall_now(t, [0]) == 4_000
    assert gate.wall_now(31_000, [0]) == 7_000  # partition 1 silent >= 30 s: the clock runs again
    gate.revoked([1])
    assert gate.wall_now(32_000, [0]) == 8_000
