"""compute.bar_service: the processor's poison handling, restore hook, commit offsets and wall-clock gate."""

from __future__ import annotations

import orjson

from compute.bar_builder_core import BarBuilder
from compute.bar_service import BarProcessor, WallClockGate


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
    assert reasons == ["implausible", "invalid JSON", "message is not a JSON object", "schema", "schema"]
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


# --------------------------------------------------------------------------- plausibility window (issue 8 item 2)
AHEAD = 300_000
FAR = int(5.5 * 3_600_000)  # an IST time read as UTC


def _state(proc: BarProcessor) -> tuple[object, ...]:
    core = proc.core
    return (dict(proc.event_wm), core.committable_offsets(), core.open_bars, sorted(core._inst),  # noqa: SLF001
            core.late_ticks, core.duplicate_ticks)


def test_tick_beyond_the_window_is_rejected_counted_and_changes_nothing():
    proc = BarProcessor(BarBuilder(grace_ms=2000), "ticks", max_ahead_ms=AHEAD)
    proc.process([Msg(_tick(5, 1_000), 0, 0)], T0 + 1_000)
    before = _state(proc)
    em = proc.process([Msg(_tick(5, FAR), 0, 1), Msg(_tick(9, FAR), 0, 2)], T0 + 1_100)
    assert [(m.offset(), r.split(":")[0]) for m, r in em.rejects] == [(1, "implausible"), (2, "implausible")]
    assert proc.implausible == 2 and em.rows == []
    assert _state(proc) == before  # no state, no watermark, no commit hold


def test_window_is_relative_to_max_of_partition_watermark_and_wall_clock():
    proc = BarProcessor(BarBuilder(grace_ms=0), "ticks", max_ahead_ms=AHEAD)
    # Exactly at the edge passes; one ms beyond is rejected (by the wall clock: no watermark yet).
    em = proc.process([Msg(_tick(5, AHEAD + 1), 0, 0), Msg(_tick(5, AHEAD), 0, 1)], T0)
    assert [m.offset() for m, _ in em.rejects] == [0]
    # Accelerated paper: the partition watermark leads the wall clock, ticks a bit ahead of it pass...
    t = AHEAD
    for step in range(1, 20):
        t += 60_000  # a simulated minute per wall second
        em = proc.process([Msg(_tick(5, t), 0, 1 + step)], T0 + step * 1_000)
        assert em.rejects == []
    assert proc.event_wm[0] == T0 + t
    # ...while the other partition (no watermark) is bounded by the wall clock only.
    em = proc.process([Msg(_tick(6, t), 1, 0)], T0 + 20_000)
    assert [r.split(":")[0] for _m, r in em.rejects] == ["implausible"]


def test_replay_and_overnight_gap_pass():
    proc = BarProcessor(BarBuilder(grace_ms=0), "ticks", max_ahead_ms=AHEAD)
    now = T0 + 30 * 86_400_000  # replay of history: event times far in the past
    night = 17 * 3_600_000 + 45 * 60_000  # 15:30 -> next day 09:15
    em = proc.process([Msg(_tick(5, 1_000), 0, 0), Msg(_tick(5, 2_000), 0, 1),
                       Msg(_tick(5, night), 0, 2)], now)
    assert em.rejects == []
    live = BarProcessor(BarBuilder(grace_ms=0), "ticks", max_ahead_ms=AHEAD)
    live.process([Msg(_tick(5, 1_000), 0, 0)], T0 + 1_000)
    em = live.process([Msg(_tick(5, night), 0, 1)], T0 + night)  # live: the wall clock moved on overnight
    assert em.rejects == []


def test_future_tick_does_not_wedge_its_instrument():
    """Several instruments at live pace, one tick 5.5 h ahead for one of them: its bars keep coming."""
    proc = BarProcessor(BarBuilder(grace_ms=2000, wall_grace_ms=2000), "ticks", max_ahead_ms=AHEAD)
    counts: dict[int, int] = {}
    off = 0
    for sec in range(60):
        batch = []
        for tok in (1, 2, 3, 4):
            for k in range(4):
                batch.append(Msg(_tick(tok, sec * 1_000 + k * 250, 100.0 + k, 10 + sec * 4 + k), tok % 2, off))
                off += 1
            if sec == 10 and tok == 3:
                batch.append(Msg(_tick(3, 10_000 + FAR), 1, off))
                off += 1
        em = proc.process(batch, T0 + sec * 1_000 + 999)
        for b in em.rows:
            counts[b.instrument_token] = counts.get(b.instrument_token, 0) + 1
    assert proc.implausible == 1
    assert counts[3] == counts[1] >= 55  # one bar per second, like the others
