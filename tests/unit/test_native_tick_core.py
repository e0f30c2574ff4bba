"""compute._native.TickBarCore vs its specification, the Python tick path: differential tests.

The reference is the real Python code: :class:`compute.bar_service.BarProcessor` (orjson decode,
the sanity checks, the restorer hook) around :class:`compute.bar_builder_core.BarBuilder`. The native
core is driven in lockstep through ``stage`` / ``restore`` / ``feed`` / ``advance`` on the same
payload bytes, and after every step everything observable must be equal: reject indices and
reasons, the instruments handed to the restorer, bars (all fields, same order), commit offsets,
counters, open bars and which instruments are tracked.
"""

from __future__ import annotations

import json
import math
import random
import struct
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from compute.bar_builder_core import BarBuilder
from compute.bar_service import MAX_FUTURE_MS, MAX_TOKEN, MIN_TS_MS, BarProcessor
from compute.bars import Bar
from schemas.limits import MAX_TS_MS

try:
    from compute.bar_builder_native import NativeBarBuilder, native_module

    native = native_module()
except ImportError as exc:  # compute.native_tick_stream.NativeUnavailable: extension not built
    pytest.skip(f"native extension unavailable: {exc}", allow_module_level=True)

T0 = 1_710_215_100_000  # 2024-03-12 09:15:00 IST
TOKENS = (101, 202, 303, 2**31 + 5)
AHEAD_MS = 300_000  # the plausibility window both engines apply in the differential runs
PRICES = (100, 100.0, 100.05, 99.95, 100.1, 0.1 + 0.2, 101, 1e-7, 2500.5, 0.0, -0.0, 0)


class Msg:
    """A consumed message as BarProcessor sees it (value/partition/offset), plus its batch index."""

    def __init__(self, value: bytes | None, partition: int, offset: int, index: int) -> None:
        self._v, self._p, self._o, self.index = value, partition, offset, index

    def value(self) -> bytes | None:
        return self._v

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o


def reason_class(reason: str) -> str:
    """Full text for schema rejects (ours mirror Python's), the prefix for decode errors."""
    if reason.startswith("invalid JSON: "):
        return "invalid JSON"
    return reason


def native_row(t: tuple[Any, ...]) -> tuple[Any, ...]:
    return Bar(t[0], "1s", t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8]).to_row()


class Pair:
    """The Python reference and the native core, fed the same input in lockstep and compared."""

    def __init__(self, grace_ms: int, wall_grace_ms: int | None, durable: dict[int, tuple[int, int | None]],
                 universe: tuple[int, ...] = TOKENS) -> None:
        self.py = BarBuilder(grace_ms, wall_grace_ms)
        self.nat = native.TickBarCore(grace_ms, wall_grace_ms)
        self.durable = durable  # token -> (last_ts, cum_volume): what the restorer "loads"
        self.universe = universe
        self.py_new: list[list[tuple[int, int]]] = []
        self.proc = BarProcessor(self.py, "ticks", restorer=self._py_restore, max_ahead_ms=AHEAD_MS)
        self.bars = 0

    def _py_restore(self, new: dict[int, int]) -> None:
        self.py_new.append(list(new.items()))
        for tok, part in new.items():
            if tok in self.durable:
                self.py.restore(tok, *self.durable[tok], part)

    def batch(self, items: list[tuple[bytes | None, int, int]], now_ms: int) -> None:
        self.py_new = []
        em = self.proc.process([Msg(v, p, o, i) for i, (v, p, o) in enumerate(items)], now_ms)
        py_rejects = [(m.index, reason_class(r)) for m, r in em.rejects]
        py_bars = [b.to_row() for b in em.rows]

        self.nat.set_window(now_ms, AHEAD_MS)
        new, rejects = self.nat.stage_items(items, MAX_TS_MS)  # stage() on a RawBatch of copies
        nat_new = [list(new.items())] if new else []
        for tok, part in new.items():
            if tok in self.durable:
                self.nat.restore(tok, *self.durable[tok], part)
        self.nat.feed()
        nat_bars = [native_row(t) for t in self.nat.advance(now_ms)]

        assert [(i, reason_class(r)) for i, r in rejects] == py_rejects
        assert nat_new == self.py_new
        self.same_bars(nat_bars, py_bars)
        self.check()

    def advance(self, now_ms: int | None) -> None:
        self.same_bars([native_row(t) for t in self.nat.advance(now_ms)], [b.to_row() for b in self.py.advance(now_ms)])
        self.check()

    def close_all(self) -> None:
        self.same_bars([native_row(t) for t in self.nat.close_all()], [b.to_row() for b in self.py.close_all()])
        self.check()

    def restore(self, token: int, last_ts: int, cum: int | None, partition: int) -> None:
        self.py.restore(token, last_ts, cum, partition)
        self.nat.restore(token, last_ts, cum, partition)
        self.check()

    def drop(self, partitions: list[int]) -> None:
        self.proc.on_revoke([("ticks", p) for p in partitions])  # the core's drop_partitions + watermarks
        self.nat.drop_partitions(partitions)
        self.check()

    def same_bars(self, nat: list[tuple[Any, ...]], py: list[tuple[Any, ...]]) -> None:
        assert nat == py
        assert repr(nat) == repr(py)  # also float vs int and -0.0
        self.bars += len(py)

    def check(self) -> None:
        py, nat = self.py, self.nat
        assert list(nat.committable_offsets().items()) == list(py.committable_offsets().items())
        assert (nat.late_ticks, nat.duplicate_ticks, nat.skipped_ticks, nat.accepted_ticks, nat.bars_emitted,
                nat.open_bars) == (py.late_ticks, py.duplicate_ticks, py.skipped_ticks, py.accepted_ticks,
                                   py.bars_emitted, py.open_bars)
        for tok in self.universe:
            assert nat.is_tracked(tok) == (tok in py._inst)  # noqa: SLF001


# ------------------------------------------------------------------------------------- encoding
def enc_number(v: int | float, rng: random.Random) -> str:
    """A JSON text for ``v`` that orjson decodes to the same value (and type)."""
    if isinstance(v, int):
        return str(v)
    r = repr(v)
    if not math.isfinite(v):
        return r
    style = rng.random()
    if style < 0.5:
        return r if ("." in r or "e" in r) else r + ".0"
    d = Decimal(r)
    if style < 0.75:
        return f"{d:e}"  # exact decimal, exponent form
    return f"{d.scaleb(-3):f}e3" if "." in f"{d.scaleb(-3):f}" else f"{d.scaleb(-3):f}.0e3"


def esc_key(k: str, rng: random.Random) -> str:
    if rng.random() < 0.85:
        return json.dumps(k)
    return '"' + "".join(f"\\u{ord(c):04x}" if rng.random() < 0.7 else c for c in k) + '"'


def enc_value(v: Any, rng: random.Random) -> str:
    if v is None or isinstance(v, bool):
        return json.dumps(v)
    if isinstance(v, (int, float)):
        return enc_number(v, rng)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=rng.random() < 0.5)
    if isinstance(v, list):
        return "[" + rng.choice([",", ", "]).join(enc_value(x, rng) for x in v) + "]"
    items = list(v.items())
    if rng.random() < 0.5:
        rng.shuffle(items)
    return "{" + ",".join(esc_key(k, rng) + ":" + enc_value(x, rng) for k, x in items) + "}"


def encode(tick: dict[str, Any], rng: random.Random) -> bytes:
    """``tick`` as JSON in one of several equivalent spellings (key order, escapes, number forms, spaces)."""
    if rng.random() < 0.5:
        return orjson.dumps(tick)
    items = list(tick.items())
    if rng.random() < 0.5:
        rng.shuffle(items)
    sep = rng.choice([",", ", ", ",\n\t"])
    colon = rng.choice([":", " : ", ":\r\n"])
    body = sep.join(esc_key(k, rng) + colon + enc_value(v, rng) for k, v in items)
    return (rng.choice(["", " ", "\n"]) + "{" + body + "}" + rng.choice(["", " ", "\r\n"])).encode()


NESTED = ([1, {"a": 1.0}], [1.0, {"a": True}], {"x": [None, "é"], "y": 2}, {"y": 2.0, "x": [None, "\u00e9"]},
          "7", "\u0037", [], {}, [[[]]], {"a": {"b": 0}}, {"a": {"b": -0.0}}, [2**64 - 1], [1.8446744073709552e19])


def variant(tick: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """An equal-for-dedup copy of ``tick`` (different extras, int<->float, True<->1, nested re-spelt)."""
    t = dict(tick)
    t["recv_ts"] = t.get("recv_ts", 0) + rng.randint(1, 50)
    if rng.random() < 0.3:
        t["depth"] = {"buy": [{"price": 1.5, "qty": rng.randint(1, 9)}], "sell": []}
    for k in ("ltp", "bid", "ask", "bid_qty", "ask_qty", "last_qty", "oi"):
        v = t.get(k)
        if type(v) is float and v.is_integer() and rng.random() < 0.5:
            t[k] = int(v)
        elif type(v) is int and k != "ltp" and v in (0, 1) and rng.random() < 0.3:
            t[k] = bool(v)
        elif type(v) is int and rng.random() < 0.5:
            t[k] = float(v)
    if "oi" not in t and rng.random() < 0.5:
        t["oi"] = None  # missing == null
    elif t.get("oi", 0) is None and rng.random() < 0.5:
        del t["oi"]
    return t


MALFORMED: tuple[bytes | None, ...] = (
    None, b"", b"   ", b"{", b"{nope", b"[1, 2]", b"1", b'"x"', b"null", b"true", b"{}", b'{"a":1,}', b"{}x",
    b"\xef\xbb\xbf{}", b'{"ltp": NaN}', b'{"ltp": Infinity}', b'{"ltp": 1e400}', b'{"ltp": 01}', b'{"ltp": .5}',
    b'{"s": "\xff"}', b'{"s": "\\ud800"}', b'{"s": "\\udc00x"}', b'{"s": "a\x01"}', b'{"s": "\\x"}',
    b'{"d": ' + b"[" * 1024 + b"]" * 1024 + b"}", b"[" * 1025 + b"]" * 1025, b'{"a" 1}', b"{'a': 1}",
)


def malformed_tick(rng: random.Random, clock: int) -> bytes | None:
    """A poison message: bad JSON, not an object, wrong types, missing keys or out of range."""
    base: dict[str, Any] = {"instrument_token": rng.choice(TOKENS), "exchange_ts": T0 + clock, "ltp": 100.5,
                            "volume": 5}
    r = rng.random()
    if r < 0.3:
        return rng.choice(MALFORMED)
    field, bad = rng.choice([
        ("instrument_token", 0), ("instrument_token", -5), ("instrument_token", MAX_TOKEN),
        ("instrument_token", 2**64 - 1), ("instrument_token", "101"), ("instrument_token", 101.0),
        ("instrument_token", True), ("instrument_token", None), ("exchange_ts", MIN_TS_MS - 1),
        ("exchange_ts", T0 + 10 * MAX_FUTURE_MS), ("exchange_ts", 2**63 + 1), ("exchange_ts", float(T0)),
        ("exchange_ts", None), ("ltp", "100"), ("ltp", True), ("ltp", None), ("ltp", [1]), ("volume", -1),
        ("volume", 2**40), ("volume", 2**64 - 1), ("volume", 5.0), ("volume", False), ("volume", "5"),
    ])
    base[field] = bad
    if rng.random() < 0.25:
        del base[rng.choice(["instrument_token", "exchange_ts", "ltp"])]
    return orjson.dumps(base)


class Stream:
    """Seeded generator of tick payloads with disorder, duplicates, resets, repartitioning and poison."""

    def __init__(self, rng: random.Random, disorder: int, second_res: bool, partitions: int,
                 tokens: tuple[int, ...] = TOKENS[:3], future: bool = False) -> None:
        self.rng, self.disorder, self.second_res, self.partitions = rng, disorder, second_res, partitions
        self.future = future  # sometimes future-dated ticks (the plausibility window)
        self.tokens = tokens
        self.clock = 0  # ms after T0
        self.cum = {t: rng.randint(0, 1000) for t in tokens}
        self.offsets = [0] * partitions
        self.sent: list[dict[str, Any]] = []

    def _tick(self) -> dict[str, Any]:
        rng = self.rng
        tok = rng.choice(self.tokens)
        self.clock += rng.randint(0, 120)
        ts = T0 + self.clock
        if rng.random() < 0.3:
            ts -= rng.randint(0, self.disorder)
        if self.future and rng.random() < 0.04:  # future-dated: at, just past and far past the plausibility window
            ts += rng.choice((AHEAD_MS - 2000, AHEAD_MS + 4000, AHEAD_MS + 5000, int(5.5 * 3_600_000)))
        if self.second_res:
            ts -= ts % 1000
        t: dict[str, Any] = {"instrument_token": tok, "exchange_ts": ts, "recv_ts": T0 + self.clock,
                             "ltp": rng.choice(PRICES)}
        r = rng.random()
        if r < 0.08:
            t["volume"] = None
        elif r < 0.14:
            pass  # missing volume
        else:
            if r < 0.18:
                self.cum[tok] = rng.randint(0, 50)  # feed reset
            else:
                self.cum[tok] += rng.choice((0, 0, 1, 7, 300))
            t["volume"] = self.cum[tok]
        for k, pool in (("last_qty", (1, 5, None)), ("oi", (None, 0, 7)), ("bid", (None, 99.95, 100)),
                        ("ask", (None, 100.05)), ("bid_qty", (1, 2, 2.0)), ("ask_qty", (3, 1))):
            if rng.random() < 0.9:
                t[k] = rng.choice(pool)
        if rng.random() < 0.05:
            t["oi"] = rng.choice(NESTED)
        if rng.random() < 0.05:
            t["bid"] = rng.choice((2**63 + 5, 9.223372036854775808e18, 2**63, 2**53 + 1, float(2**53)))
        if rng.random() < 0.2:
            t["depth"] = {"buy": [{"price": t["ltp"], "qty": rng.randint(1, 900), "orders": 3}] * 2,
                          "sell": [{"price": 100.25, "qty": 1, "orders": 1}]}
        if rng.random() < 0.1:
            t["extra"] = rng.choice(("x", [1, {"q": None}], 1e300, -0.0, "\u20ac\\"))
        return t

    def message(self) -> tuple[bytes | None, int, int]:
        rng = self.rng
        r = rng.random()
        if r < 0.06:
            value = malformed_tick(rng, self.clock)
            tok = rng.choice(self.tokens)
        else:
            if r < 0.16 and self.sent:
                t = rng.choice(self.sent[-20:])
                value = orjson.dumps(t) if rng.random() < 0.3 else encode(variant(t, rng), rng)
            elif r < 0.2 and self.sent:  # same (ts, ltp, volume), other quote fields: not a duplicate
                t = dict(rng.choice(self.sent[-20:]))
                t["bid"] = rng.choice((98.0, 97.5, None))
                t["oi"] = rng.choice((11, 12))
                value = encode(t, rng)
            else:
                t = self._tick()
                self.sent.append(t)
                value = encode(t, rng)
            tok = t["instrument_token"]
        part = tok % self.partitions
        if rng.random() < 0.04:
            part = (part + 1) % self.partitions  # an instrument seen on another partition
        off = self.offsets[part]
        self.offsets[part] += rng.choice((1, 1, 1, 2))
        return value, part, off


def run_scenario(seed: int, grace: int, wall_grace: int | None, disorder: int, second_res: bool,
                 steps: int = 40) -> Pair:
    rng = random.Random(seed)
    partitions = rng.choice((1, 2, 3))
    durable = {tok: (T0 + rng.randint(-3, 8) * 1000 + rng.choice((0, 0, 0, 250)), rng.choice((None, 0, 500, 10**6)))
               for tok in TOKENS if rng.random() < 0.4}
    pair = Pair(grace, wall_grace, durable)
    stream = Stream(rng, disorder, second_res, partitions, future=True)
    for _ in range(steps):
        r = rng.random()
        if r < 0.7:
            items = [stream.message() for _ in range(rng.randint(1, 30))]
            lag = rng.choice((0, 0, 0, 10 * 60_000))  # sometimes the stream leads the wall clock (accelerated)
            pair.batch(items, T0 + stream.clock + rng.randint(-2000, 4000) - lag)
        elif r < 0.85:
            pair.advance(None if rng.random() < 0.2 else T0 + stream.clock + rng.randint(-3000, 8000))
        elif r < 0.9:
            tok = rng.choice(TOKENS)
            pair.restore(tok, T0 + stream.clock - rng.randint(-2000, 6000), rng.choice((None, 0, 123, 10**7)),
                         rng.choice((-1, 0, 1)))
        elif r < 0.95:
            pair.drop(rng.sample(range(partitions), rng.randint(0, partitions)))
        else:
            stream.clock += rng.randint(1000, 15000)  # a gap: quiet instruments close by the wall clock
            pair.advance(T0 + stream.clock)
    pair.close_all()
    pair.advance(T0 + stream.clock + 100_000)
    return pair


# ---------------------------------------------------------------------------------------- tests
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), grace=st.sampled_from([0, 500, 2000]),
       wall_grace=st.sampled_from([None, 0, 300, 3000]), disorder=st.sampled_from([0, 300, 2500, 6000]),
       second_res=st.booleans())
def test_native_core_matches_python_on_generated_streams(seed: int, grace: int, wall_grace: int | None,
                                                         disorder: int, second_res: bool) -> None:
    run_scenario(seed, grace, wall_grace, disorder, second_res)


def test_long_dense_stream_matches_python() -> None:
    """Many ticks per bar (second-resolution timestamps): the lazily built dedup index path."""
    rng = random.Random(3)
    pair = Pair(1000, 2000, {})
    stream = Stream(rng, 1500, True, 2, tokens=(101,))
    for _ in range(60):
        pair.batch([stream.message() for _ in range(80)], T0 + stream.clock)
    pair.close_all()
    assert pair.bars > 20 and pair.nat.duplicate_ticks > 50


def test_restore_before_first_ticks_and_replay_is_skipped() -> None:
    pair = Pair(2000, None, {101: (T0 + 2000, 50), 202: (T0 + 5000, None)})
    items = []
    for i in range(40):
        tok = (101, 202)[i % 2]
        items.append((orjson.dumps({"instrument_token": tok, "exchange_ts": T0 + 200 * i, "ltp": 10.0 + i,
                                    "volume": 40 + 3 * i}), 0, i))
    pair.batch(items[:25], T0)
    pair.batch(items[25:], T0 + 20_000)
    pair.close_all()
    assert pair.nat.skipped_ticks > 0 and pair.bars > 0


@pytest.mark.parametrize("value", [v for v in MALFORMED])
def test_malformed_documents_are_rejected_like_orjson(value: bytes | None) -> None:
    pair = Pair(2000, None, {})
    pair.batch([(value, 0, 0)], T0)


def _fuzz_payloads(rng: random.Random) -> list[bytes]:
    """Valid ticks mutated byte-wise: many become invalid, some stay valid with other values."""
    out = []
    alphabet = (b'{}[]":,-+.eE0123456789 \t\n\\/ubfnrtaxyz'
                b"\x00\x1f\x7f\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xed\xa0\x80\xff")
    for _ in range(60):
        t = {"instrument_token": rng.choice(TOKENS), "exchange_ts": T0 + rng.randint(0, 3000), "ltp": 100.25,
             "volume": rng.randint(0, 10**6), "oi": rng.choice((None, [1, "\u00e9"], "\\u00e9"))}
        body = bytearray(encode(t, rng))
        for _ in range(rng.randint(1, 3)):
            op = rng.random()
            pos = rng.randrange(len(body) + 1)
            if op < 0.35 and body:
                del body[min(pos, len(body) - 1)]
            elif op < 0.7:
                body[pos:pos] = bytes([rng.choice(alphabet)])
            elif op < 0.85 and body:
                body[min(pos, len(body) - 1)] = rng.choice(alphabet)
            else:
                body = body[:pos]
        out.append(bytes(body))
    return out


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32))
def test_mutated_payloads_are_rejected_iff_python_rejects_them(seed: int) -> None:
    rng = random.Random(seed)
    pair = Pair(2000, None, {})
    payloads = _fuzz_payloads(rng)
    pair.batch([(p, i % 2, i) for i, p in enumerate(payloads)], T0 + 5000)
    pair.close_all()


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=40))
def test_random_bytes_are_rejected_iff_orjson_rejects_them(data: bytes) -> None:
    pair = Pair(2000, None, {})
    pair.batch([(data, 0, 0), (b'{"instrument_token":5,"exchange_ts":%d,"ltp":1,"x":' % T0 + data + b"}", 0, 1)], T0)


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.sampled_from([0, 1, -1, 2, 2**63 - 1, 2**63, 2**64 - 1, -(2**63)]),
              st.sampled_from([0.0, -0.0, 1.0, 2.0, 1.5, 1e20, 9.223372036854775808e18, 1.8446744073709552e19, 0.1]),
              st.sampled_from(["", "a", "\u00e9", "\x00", "1", "\U0001f600"])),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["a", "b", "\u00e9"]), inner,
        max_size=3),
    max_leaves=6,
)


def respell(v: Any, rng: random.Random) -> Any:
    """A value == ``v`` in Python but spelt differently: ints <-> floats, bools -> ints, dict order."""
    if isinstance(v, bool):
        return int(v) if rng.random() < 0.5 else v
    if isinstance(v, int):
        return float(v) if -(2**53) <= v <= 2**53 and rng.random() < 0.7 else v
    if isinstance(v, float):
        return int(v) if v.is_integer() and abs(v) < 2**63 and rng.random() < 0.7 else v
    if isinstance(v, list):
        return [respell(x, rng) for x in v]
    if isinstance(v, dict):
        items = [(k, respell(x, rng)) for k, x in v.items()]
        rng.shuffle(items)
        return dict(items)
    return v


@settings(max_examples=400, deadline=None)
@given(a=json_values, b=json_values, field=st.sampled_from(["oi", "bid", "last_qty", "ask_qty"]),
       seed=st.integers(0, 1000))
def test_duplicate_detection_uses_python_equality_of_decoded_values(a: Any, b: Any, field: str, seed: int) -> None:
    rng = random.Random(seed)
    base = {"instrument_token": 101, "exchange_ts": T0 + 100, "ltp": 5.0, "volume": 10}
    c = respell(a, rng)
    assert c == a
    items = [(encode({**base, field: a}, rng), 0, 0), (encode({**base, field: b, "recv_ts": 1}, rng), 0, 1),
             (encode({**base, field: a, "depth": [a, b]}, rng), 0, 2), (encode({**base, field: c}, rng), 0, 3)]
    pair = Pair(2000, None, {})
    pair.batch(items, T0)
    pair.close_all()
    assert pair.nat.duplicate_ticks == (3 if a == b else 2)


def test_nested_duplicate_keys_in_dedup_fields_last_wins() -> None:
    tick = b'{"instrument_token":7,"exchange_ts":%d,"ltp":1,"oi":%s}'
    values = [b'{"a":1,"a":2}', b'{"a":2.0}', b'{"a":3}', b'{"b":[1],"a":{"x":1,"x":true}}',
              b'{"a":{"x":1.0},"b":[1.0]}',
              b'"\\u00e9"', b'"\xc3\xa9"', b'["\\ud83d\\ude00"]', b'["\xf0\x9f\x98\x80"]', b'[1e0, 2E+0, 300e-2]',
              b'[1,2,3]']
    pair = Pair(2000, None, {})
    pair.batch([(tick % (T0, v), 0, i) for i, v in enumerate(values)], T0)
    pair.close_all()
    assert pair.nat.duplicate_ticks == 5


def test_signed_zero_and_many_ticks_per_bar_use_the_index() -> None:
    tick = b'{"instrument_token":7,"exchange_ts":%d,"ltp":%s,"volume":%d}'
    items = []
    for i in range(300):  # 75 distinct (ts, volume), each with ltp 0.0, -0.0, 0 and -0: > 16 per bar
        items.append((tick % (T0 + 5 + i % 3, (b"0.0", b"-0.0", b"0", b"-0")[i % 4], i % 25), 0, i))
    pair = Pair(2000, None, {})
    pair.batch(items, T0)
    pair.close_all()
    assert pair.nat.duplicate_ticks == 300 - 75


def _bits(x: float) -> bytes:
    return struct.pack("<d", x)


@settings(max_examples=1000, deadline=None)
@given(mant=st.integers(0, 10**25), frac=st.integers(0, 25), exp=st.one_of(st.none(), st.integers(-340, 320)),
       neg=st.booleans())
def test_numbers_parse_exactly_like_orjson(mant: int, frac: int, exp: int | None, neg: bool) -> None:
    digits = str(mant)
    text = digits if frac == 0 or frac >= len(digits) else digits[:-frac] + "." + digits[-frac:]
    if exp is not None:
        text += f"e{exp}"
    text = ("-" if neg else "") + text
    try:
        expected = orjson.loads(text)
    except orjson.JSONDecodeError:
        expected = None
    core = native.TickBarCore(0)
    payload = b'{"instrument_token":7,"exchange_ts":%d,"ltp":%s}' % (T0, text.encode())
    rejects = core.add_items([(payload, 0, 0)])
    bars = core.close_all()
    if expected is None:
        assert [r[1].split(":")[0] for r in rejects] == ["invalid JSON"]
    else:
        assert rejects == []
        assert _bits(bars[0][2]) == _bits(float(expected)), (text, expected, bars[0][2])


def test_orjson_corner_cases() -> None:
    """Spot checks of what orjson accepts (and so must we), as a whole document and as a field."""
    docs = [b"18446744073709551615", b"18446744073709551616", b"-9223372036854775808", b"-9223372036854775809",
            b"1e-400", b"-0", b"-0.0", b"0e0", b"1E5", b"1.5e+3", b"01", b"-", b"1.", b".5", b"+1", b"1.e5", b"1e",
            b"0x10", b"1" * 400, b"1" * 308, b"2" * 309, b"1.7976931348623159e308", b"1.797693134862315807e308",
            b'"\\ud83d\\ude00"', b'"\\ud83dx"', b'"\\ud83d\\u0041"', b'"\xed\xa0\x80"', b'"\xc0\x80"',
            b'"\xf4\x90\x80\x80"', b'"\xf0\x9f\x98\x80"', b'"\xe2\x82"', b'"\xef\xbf\xbf"', b'"a\x7f"', b'"\\/"',
            b'"\xe0\x80\x80"', b'"\xe0\x9f\xbf"', b'"\xe0\xa0\x80"', b'"\xf0\x80\x80\x80"', b'"\xf0\x8f\xbf\xbf"',
            b'"\xf0\x90\x80\x80"', b'"\xed\xbf\xbf"', b'"\xed\x9f\xbf"', b'"\xc1\xbf"', b'"\xc2\x80"',
            b'"\xf5\x80\x80\x80"',
            b'"\xf4\x8f\xbf\xbf"', b'"\x80"', b'"\xc3"', b'"\xe2\x82\xac\xe2"', b'"\xf0\x9f\x98"', b'"\xdf\xbf"',
            b'"\xee\x80\x80"',
            b'"\\U0041"', b'"\\u00"', b"nul", b"tru", b"True", b"[1 2]", b"[1,]", b"[,1]", b"{,}", b"{1:2}", b"[]",
            b"\x0c{}", b"\x0b{}", b"{}\x00", b" \t\n\r{} \t\n\r", b'{"a":1,"a":2}', b'{"\\u0000":1}', b'{"\\ud800":1}',
            b"[" * 1024 + b"]" * 1024, b"[" * 1025 + b"]" * 1025]
    items = []
    for d in docs:
        items.append((d, 0, len(items)))
        items.append((b'{"instrument_token":7,"exchange_ts":%d,"ltp":1.5,"oi":%s}' % (T0, d), 0, len(items)))
    pair = Pair(2000, None, {})
    pair.batch(items, T0)
    pair.close_all()


def test_duplicate_keys_last_wins_and_escaped_keys_match() -> None:
    payloads = [
        b'{"instrument_token":7,"exchange_ts":%d,"ltp":"x","ltp":2.5,"volume":1}' % T0,
        b'{"instrument_token":7,"exchange_ts":%d,"ltp":2.5,"volume":1,"volume":null}' % (T0 + 1),
        b'{"\\u0069nstrument_token":7,"exchange_ts":%d,"\\u006c\\u0074\\u0070":3}' % (T0 + 2),
        b'{"instrument_token":7,"exchange_ts":%d,"lt\\u0070":3,"ltp":[1]}' % (T0 + 3),
    ]
    pair = Pair(2000, None, {})
    pair.batch([(p, 0, i) for i, p in enumerate(payloads)], T0)
    pair.close_all()


def test_api_errors_and_adapter() -> None:
    with pytest.raises(ValueError):
        native.TickBarCore(-1)
    with pytest.raises(ValueError):
        native.TickBarCore(0, -5)
    core = native.TickBarCore(1500)
    assert (core.grace_ms, core.wall_grace_ms) == (1500, 1500)
    b = NativeBarBuilder(grace_ms=0)
    ref = BarBuilder(grace_ms=0)
    ticks = [{"instrument_token": 9, "exchange_ts": T0 + 400 * i, "ltp": 50 + i, "volume": 10 + i} for i in range(8)]
    for i, t in enumerate(ticks):
        b.add(t, 0, i)
        ref.add(t, 0, i)
    bad = {"instrument_token": 9, "exchange_ts": T0}
    assert [str(e) for _, e in b.add_many([(bad, 0, 99)])] == [str(e) for _, e in ref.add_many([(bad, 0, 99)])]
    assert b.advance(T0) == ref.advance(T0) and b.close_all() == ref.close_all()
    assert b.tf == "1s" and 9 in b._inst and b.committable_offsets() == ref.committable_offsets()  # noqa: SLF001


def test_stage_reads_a_raw_batch_from_items() -> None:
    items = [(b'{"instrument_token":7,"exchange_ts":%d,"ltp":%d.5,"volume":%d}' % (T0 + 10 * i, i, i), 0, i)
             for i in range(20)] + [(None, 1, 0)]
    expected = native.TickBarCore(0).stage_items(items, 2**62)
    got = native.TickBarCore(0).stage(native.RawBatch.from_items(items), 2**62)
    assert got == expected


SPECIALS = [b'\\"', b"\\\\", b"\\n", b"\\u0000", b"\\u00e9", b"\\ud83d\\ude00", b"\\ud83d", b"\\q", b"\x00", b"\x1f",
            b"\x7f",
            b'"', b"\xc3\xa9", b"\xe2\x82\xac", b"\xf0\x9f\x98\x80", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\xff",
            b"\\"]


def test_string_scanning_at_every_position() -> None:
    """Each special byte sequence at offsets 0..19 of a key and of a dedup/extra string value."""
    items = []
    for special in SPECIALS:
        for pos in range(20):
            text = b"a" * pos + special + b"b" * (19 - pos)
            for fmt in (b'{"instrument_token":7,"exchange_ts":%d,"ltp":1.5,"oi":"%s"}',
                        b'{"instrument_token":7,"exchange_ts":%d,"ltp":1.5,"x%s":1}',
                        b'{"instrument_token":7,"exchange_ts":%d,"ltp":1.5,"extra":["%s"]}'):
                items.append((fmt % (T0 + len(items), text), 0, len(items)))
    pair = Pair(100_000, None, {})
    pair.batch(items, T0)
    pair.close_all()
