"""The fast decoders against the contract models: a differential test over a fuzz corpus.

Decoders under test, each fed the same message bytes:

- Python tick path: :class:`compute.bar_service.BarProcessor` (orjson, object check, token /
  event-time range) around :class:`compute.bar_builder_core.BarBuilder` (its type and volume checks);
- C++ tick path: :class:`compute._native.TickBarCore` (``stage_items`` + ``feed``), as
  ``tests/unit/test_native_tick_core.py`` drives it;
- bar rollup: ``BarProcessor`` around :class:`compute.bar_rollup.BarRollup` for the 1 m
  aggregator (``1s`` children) and the multi-timeframe one (``1m`` children);
- the strategy runner's bar decoder (:func:`strategy.runner_core.decode_input` on ``bars.1m``).

The model path is :func:`schemas.decode` (orjson, then the pydantic model). The corpus holds
valid messages, boundary values of :mod:`schemas.limits`, and invalid ones: missing fields,
wrong types, bools, floats for ints, huge ints (past int64 / uint64: orjson turns those into
floats), NaN/Infinity tokens and overflowing exponents, nesting around orjson's depth limit,
top-level non-objects, extra fields.

Rules that are not the model's business are kept out of the way: every message goes to a fresh
decoder (no duplicates, no lateness, no partition state), and the wall clock is
:data:`schemas.limits.MAX_TS_MS` (2100-01-01) with the widest plausibility window, so the
event-time plausibility window (relative to the partition watermark and the wall clock) never
fires; the C++ core, which takes its upper event-time bound from the caller (``max_ts``; the
service passes the window's bound), is given the contract's bound ``MAX_TS_MS``. The rollup's
``tf == source timeframe`` rule is contextual too: a bar of another valid timeframe is a valid
Bar that the aggregator rejects as the wrong input.

What must hold: whenever the model accepts, every decoder accepts with the same values;
whenever a decoder accepts, the model accepts too, except for the one documented leniency of
the tick hot path: it validates only the fields it reads (``instrument_token``,
``exchange_ts``, ``ltp``, ``volume``, where a missing ``volume`` is null), so a tick that is
invalid only in fields no bar uses (``recv_ts``, ``last_qty``, ``oi``, ``bid``, ``ask``,
``bid_qty``, ``ask_qty``, ``depth``, or without the ``volume`` key) still makes bars. The two
tick decoders agree with each other always.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st
from pydantic import ValidationError

from compute.bar_builder_core import BarBuilder
from compute.bar_rollup import BarRollup
from compute.bar_service import BarProcessor
from core.errors import PoisonMessage
from schemas import Bar, Tick, decode
from schemas.limits import (
    MAX_AHEAD_LIMIT_MS,
    MAX_CUM_VOLUME,
    MAX_TICK_VOLUME,
    MAX_TOKEN,
    MAX_TS_MS,
    MIN_TS_MS,
    max_bar_ticks,
    max_bar_volume,
)

try:
    from compute.bar_builder_native import native_module

    native: Any = native_module()
except ImportError:  # compute.native_tick_stream.NativeUnavailable: the C++ path is then not compared
    native = None

WALL_MS = MAX_TS_MS  # the wall clock: every valid event time is in the past
T0 = 1_710_215_100_000  # 2024-03-12 09:15:00 IST
TICK_READ = ("instrument_token", "exchange_ts", "ltp", "volume")
TICK_UNREAD = ("recv_ts", "last_qty", "oi", "bid", "ask", "bid_qty", "ask_qty", "depth")
BAR_FIELDS = ("instrument_token", "tf", "ts", "open", "high", "low", "close", "volume", "ticks", "cum_volume")
SETTINGS = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Msg:
    """A consumed message as BarProcessor sees it."""

    def __init__(self, value: bytes) -> None:
        self._v = value

    def value(self) -> bytes:
        return self._v

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 0


# ------------------------------------------------------------------------------------------ corpus
def to_json(obj: Any) -> bytes:
    """JSON text of ``obj`` as any producer might write it: stdlib json writes NaN/Infinity tokens and big ints."""
    return json.dumps(obj).encode()


SPECIAL_FLOATS = [math.nan, math.inf, -math.inf, -0.0, 0.0, 5e-324, 1.7976931348623157e308]
NASTY = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.sampled_from(SPECIAL_FLOATS),
    st.text(max_size=4), st.sampled_from(["1", "1.0", "NaN", ""]),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
    st.sampled_from([2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 10**30, -(2**63), -(2**63) - 1]),
)
_TS_EDGE = [MIN_TS_MS - 1, MIN_TS_MS, MAX_TS_MS - 1, MAX_TS_MS, float(T0), T0 + 1, T0 + 1000, T0 + 60_000,
            MIN_TS_MS - 60_000, (MAX_TS_MS - 1) // 60_000 * 60_000, MAX_TS_MS - 1000]
_QTY_EDGE = [0, -1, 2**63 - 1, 2**63, None, 1.0]
BOUNDARY: dict[str, list[Any]] = {
    "instrument_token": [0, 1, -1, MAX_TOKEN - 1, MAX_TOKEN, 2**64 - 1, 2**64, True, 1.0],
    "exchange_ts": _TS_EDGE, "recv_ts": _TS_EDGE, "ts": _TS_EDGE,
    "ltp": [0, -0.0, True, 1.7976931348623157e308, "1", None, math.nan],
    "volume": [0, -1, MAX_TICK_VOLUME - 1, MAX_TICK_VOLUME, None, max_bar_volume("1s"), max_bar_volume("1s") + 1,
               max_bar_volume("1m"), max_bar_volume("1m") + 1, max_bar_volume("60m"), 2**63, 2**64 - 1, 1.0],
    "ticks": [0, -1, max_bar_ticks("1s"), max_bar_ticks("1s") + 1, max_bar_ticks("1m"), max_bar_ticks("1m") + 1,
              2**40, True, 4.0],
    "cum_volume": [0, -5, MAX_CUM_VOLUME - 1, MAX_CUM_VOLUME, None, 2**64 - 1, 1.0],
    "tf": ["1s", "1m", "5m", "60m", "2s", "", 1, None],
    "open": [math.inf, -math.inf, math.nan, 0, 1e308], "high": [0, -1e308, math.inf], "low": [0, 1e308, -math.inf],
    "close": [0, 1e308, math.nan],
    "last_qty": _QTY_EDGE, "oi": _QTY_EDGE, "bid_qty": _QTY_EDGE, "ask_qty": _QTY_EDGE,
    "bid": [math.nan, True, "1", 0], "ask": [math.inf, None, 0],
    "depth": [None, {}, {"buy": [], "sell": []}, {"buy": [{"price": 1.0, "qty": 1, "orders": 1}] * 6, "sell": []},
              {"buy": [{"price": 1.0, "qty": -1, "orders": 1}], "sell": []}, [], "x"],
}
TOKENS = st.one_of(st.integers(1, 2**31), st.sampled_from([1, 2**32 + 7, MAX_TOKEN - 1]))
TS = st.one_of(st.integers(MIN_TS_MS, MAX_TS_MS - 1), st.sampled_from([MIN_TS_MS, MAX_TS_MS - 1, T0]))
PRICE = st.one_of(st.floats(-1e9, 1e9, allow_nan=False), st.integers(-(10**6), 10**6),
                  st.sampled_from([0.0, -0.0, 0, 1e-7, 1.7976931348623157e308, 5e-324]))
QTY = st.one_of(st.none(), st.integers(0, 10**9))


@st.composite
def depth(draw: st.DrawFn) -> Any:
    level = st.fixed_dictionaries({"price": PRICE, "qty": st.integers(0, 10**6), "orders": st.integers(0, 999)})
    return draw(st.one_of(st.none(), st.fixed_dictionaries({"buy": st.lists(level, max_size=5),
                                                            "sell": st.lists(level, max_size=5)})))


@st.composite
def valid_tick(draw: st.DrawFn) -> dict[str, Any]:
    t: dict[str, Any] = {
        "instrument_token": draw(TOKENS), "exchange_ts": draw(TS), "recv_ts": draw(TS), "ltp": draw(PRICE),
        "volume": draw(st.one_of(st.none(), st.integers(0, MAX_TICK_VOLUME - 1),
                                 st.sampled_from([0, MAX_TICK_VOLUME - 1]))),
        "last_qty": draw(QTY), "oi": draw(QTY), "bid": draw(st.one_of(st.none(), PRICE)),
        "ask": draw(st.one_of(st.none(), PRICE)), "bid_qty": draw(QTY), "ask_qty": draw(QTY),
    }
    d = draw(depth())
    if d is not None or draw(st.booleans()):
        t["depth"] = d
    return t


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[dict[str, Any]], fields: tuple[str, ...]) -> bytes:
    """``base`` with a few fields deleted or replaced by nasty values, extra fields, maybe deep nesting."""
    obj = dict(draw(base))
    for _ in range(draw(st.integers(1, 3))):
        field = draw(st.sampled_from(fields))
        how = draw(st.integers(0, 5))
        if how == 0:
            obj.pop(field, None)
        elif how <= 3:
            obj[field] = draw(st.sampled_from(BOUNDARY[field]))
        else:
            obj[field] = draw(NASTY)
    if draw(st.booleans()):
        obj[draw(st.sampled_from(["source", "seq", "x", "depth_note"]))] = draw(NASTY)
    text = to_json(obj)
    deep = draw(st.sampled_from([0, 0, 0, 1, 64, 1022, 1023, 1024]))
    if deep:  # orjson's limit is 1024 levels, the message object included
        text = text[:-1] + (b", " if len(obj) else b"") + b'"deep": ' + b"[" * deep + b"]" * deep + b"}"
    return text


RAW_EDGE = [b"", b" ", b"null", b"1", b'"x"', b"[]", b"[{}]", b"{}", b"\xff\xfe", b"{", b'{"instrument_token": 1',
            b'{"instrument_token": 1, "exchange_ts": 1710215100000, "ltp": NaN, "volume": 1}',
            b'{"instrument_token": 1, "exchange_ts": 1710215100000, "ltp": Infinity, "volume": 1}',
            b'{"instrument_token": 1, "exchange_ts": 1710215100000, "ltp": 1e400, "volume": 1}',
            b'{"instrument_token": 18446744073709551616, "exchange_ts": 1710215100000, "ltp": 1, "volume": 1}']


# ------------------------------------------------------------------------------------------ decoders
def python_tick(raw: bytes) -> tuple[str | None, tuple[Any, ...] | None]:
    """(reject reason, bar row) of the Python tick path for one message on a fresh builder."""
    builder = BarBuilder(0, None)
    em = BarProcessor(builder, "ticks", max_ahead_ms=MAX_AHEAD_LIMIT_MS).process([Msg(raw)], WALL_MS)
    if em.rejects:
        return em.rejects[0][1], None
    bars = em.rows + builder.close_all()
    assert len(bars) == 1
    return None, bars[0].to_row()


def native_tick(raw: bytes) -> tuple[str | None, tuple[Any, ...] | None]:
    """(reject reason, bar row) of the C++ tick path for one message on a fresh core."""
    core = native.TickBarCore(0, None)
    # The core's upper event-time bound is the caller's ``max_ts`` (exclusive): give it the contract's.
    _new, rejects = core.stage_items([(raw, 0, 0)], MAX_TS_MS)
    core.feed()
    if rejects:
        return rejects[0][1], None
    (t,) = core.close_all()
    return None, (t[0], "1s", *t[1:])


def rollup_bar(raw: bytes, source: str, target: str) -> tuple[str | None, tuple[Any, ...] | None]:
    """(reject reason, parent bar row) of an aggregator's decoder for one child on a fresh rollup."""
    rollup = BarRollup(source, [target])
    em = BarProcessor(rollup, f"bars.{source}", max_ahead_ms=MAX_AHEAD_LIMIT_MS).process([Msg(raw)], WALL_MS)
    if em.rejects:
        return em.rejects[0][1], None
    bars = em.rows + rollup.close_all()
    assert len(bars) == 1
    return None, bars[0].to_row()


def model_errors(model: type[Tick] | type[Bar], raw: bytes) -> list[dict[str, Any]] | None:
    """None when ``schemas.decode`` accepts ``raw``; else the model's errors ([] if not even JSON)."""
    try:
        decode(model, raw)
    except PoisonMessage:
        try:
            model.model_validate(orjson.loads(raw))
        except orjson.JSONDecodeError:
            return []
        except ValidationError as exc:
            return list(exc.errors())
        raise AssertionError("decode rejected what model_validate accepts") from None
    return None


def tolerated(errors: list[dict[str, Any]]) -> bool:
    """The tick hot path's documented leniency: every model error is about a field no bar reads."""
    return bool(errors) and all(
        (e["loc"] and e["loc"][0] in TICK_UNREAD) or (tuple(e["loc"]) == ("volume",) and e["type"] == "missing")
        for e in errors)


# ------------------------------------------------------------------------------------------ ticks
def check_tick(raw: bytes) -> None:
    py_reason, py_row = python_tick(raw)
    if native is not None:
        nat_reason, nat_row = native_tick(raw)
        assert (nat_reason is None) == (py_reason is None), (raw, py_reason, nat_reason)
        assert repr(nat_row) == repr(py_row)
    errors = model_errors(Tick, raw)
    if errors is None:
        assert py_reason is None, (raw, py_reason)
        m = decode(Tick, raw)
        assert py_row is not None
        token, tf, ts, o, h, lo, c, _vol, ticks, cum = py_row
        assert (token, tf, ts, ticks, cum) == (m.instrument_token, "1s", m.exchange_ts - m.exchange_ts % 1000, 1,
                                               m.volume)
        assert repr(o) == repr(h) == repr(lo) == repr(c) == repr(m.ltp)  # same float, ints made floats alike
    elif py_reason is None:
        assert tolerated(errors), (raw, errors)


@SETTINGS
@given(st.one_of(valid_tick().map(to_json), mutated(valid_tick(), TICK_READ + TICK_UNREAD),
                 mutated(valid_tick(), TICK_READ), mutated(valid_tick(), TICK_READ), st.sampled_from(RAW_EDGE)))
@example(to_json({"instrument_token": MAX_TOKEN, "exchange_ts": T0, "recv_ts": T0, "ltp": 1.0, "volume": None,
                  "last_qty": None, "oi": None, "bid": None, "ask": None, "bid_qty": None, "ask_qty": None}))
def test_tick_decoders_accept_what_the_model_accepts(raw: bytes) -> None:
    check_tick(raw)


def _tick(**kw: Any) -> dict[str, Any]:
    t: dict[str, Any] = {"instrument_token": 738561, "exchange_ts": T0, "recv_ts": T0 + 3, "ltp": 2500.5,
                         "volume": 10, "last_qty": 1, "oi": None, "bid": 2500.0, "ask": 2501.0, "bid_qty": 5,
                         "ask_qty": 7}
    t.update(kw)
    return {k: v for k, v in t.items() if v is not _DROP}


_DROP = object()
TICK_CASES = {
    "valid": (_tick(), True),
    "ltp int": (_tick(ltp=2500), True),
    "token lowest": (_tick(instrument_token=1), True),
    "token highest": (_tick(instrument_token=MAX_TOKEN - 1), True),
    "token zero": (_tick(instrument_token=0), False),
    "token 2**63": (_tick(instrument_token=MAX_TOKEN), False),
    "token bool": (_tick(instrument_token=True), False),
    "token float": (_tick(instrument_token=738561.0), False),
    "token string": (_tick(instrument_token="738561"), False),
    "ts lowest": (_tick(exchange_ts=MIN_TS_MS), True),
    "ts below 2000": (_tick(exchange_ts=MIN_TS_MS - 1), False),
    "ts last before 2100": (_tick(exchange_ts=MAX_TS_MS - 1), True),
    "ts 2100": (_tick(exchange_ts=MAX_TS_MS), False),
    "ts float": (_tick(exchange_ts=float(T0)), False),
    "ltp missing": (_tick(ltp=_DROP), False),
    "ltp bool": (_tick(ltp=False), False),
    "ltp string": (_tick(ltp="2500.5"), False),
    "ltp null": (_tick(ltp=None), False),
    "volume top": (_tick(volume=MAX_TICK_VOLUME - 1), True),
    "volume 2**40": (_tick(volume=MAX_TICK_VOLUME), False),
    "volume negative": (_tick(volume=-1), False),
    "volume float": (_tick(volume=10.0), False),
    "volume bool": (_tick(volume=True), False),
    "volume 2**64-1": (_tick(volume=2**64 - 1), False),
    "extra nested": (_tick(source={"a": [1, {"b": None}]}), True),
}


@pytest.mark.parametrize("name", sorted(TICK_CASES))
def test_tick_boundaries(name: str) -> None:
    obj, valid = TICK_CASES[name]
    raw = to_json(obj)
    assert (model_errors(Tick, raw) is None) is valid
    assert (python_tick(raw)[0] is None) is valid
    check_tick(raw)


def test_tick_hot_path_leniency_is_only_unread_fields() -> None:
    """The documented disagreement, shown: invalid only where no bar looks -> bars, but not a Tick."""
    for obj in (_tick(recv_ts=_DROP), _tick(last_qty="x"), _tick(bid=True), _tick(volume=_DROP),
                _tick(depth={"buy": [{"price": 1.0}], "sell": []}), _tick(oi=-1)):
        raw = to_json(obj)
        assert python_tick(raw)[0] is None
        errors = model_errors(Tick, raw)
        assert errors and tolerated(errors)


# ------------------------------------------------------------------------------------------ bars
@st.composite
def valid_bar(draw: st.DrawFn, tf: str) -> dict[str, Any]:
    step = 1000 if tf == "1s" else 60_000
    prices = sorted(draw(st.lists(PRICE, min_size=4, max_size=4)), key=float)
    lo, a, b, hi = prices
    o, c = (a, b) if draw(st.booleans()) else (b, a)
    bar: dict[str, Any] = {
        "instrument_token": draw(TOKENS), "tf": tf,
        "ts": draw(st.one_of(st.integers(MIN_TS_MS // step + 1, (MAX_TS_MS - 1) // step).map(lambda k: k * step),
                             st.sampled_from([MIN_TS_MS, T0, (MAX_TS_MS - 1) // step * step]))),
        "open": o, "high": hi, "low": lo, "close": c,
        "volume": draw(st.one_of(st.integers(0, 10**9), st.sampled_from([0, max_bar_volume(tf)]))),
        "ticks": draw(st.one_of(st.integers(0, 5000), st.sampled_from([0, max_bar_ticks(tf)]))),
    }
    cum = draw(st.one_of(st.none(), st.integers(0, MAX_CUM_VOLUME - 1), st.sampled_from([0, MAX_CUM_VOLUME - 1]),
                         st.just("absent")))
    if cum != "absent":
        bar["cum_volume"] = cum
    return bar


def runner_bar(raw: bytes, source: str) -> tuple[str | None, tuple[Any, ...] | None]:
    """(reject reason, bar row) of the strategy runner's decoder for one message on ``bars.<source>``."""
    from strategy.runner_core import decode_input

    try:
        return None, decode_input(f"bars.{source}", raw).to_row()
    except PoisonMessage as exc:
        return str(exc), None


def check_bar(raw: bytes, source: str, target: str) -> None:
    reason, row = rollup_bar(raw, source, target)
    errors = model_errors(Bar, raw)
    right_tf = errors is None and decode(Bar, raw).tf == source
    assert (reason is None) == right_tf, (raw, reason, errors)
    if source != "1s":  # the strategy runner reads bars.1m and up with the same rules
        r_reason, r_row = runner_bar(raw, source)
        assert (r_reason is None) == right_tf, (raw, r_reason, errors)
        if right_tf:
            m = decode(Bar, raw)
            assert r_row is not None
            assert repr(r_row) == repr((m.instrument_token, m.tf, m.ts, m.open, m.high, m.low, m.close, m.volume,
                                        m.ticks, m.cum_volume)), (raw, r_row)
    if right_tf:
        m = decode(Bar, raw)
        assert row is not None
        token, tf, ts, o, h, lo, c, vol, ticks, cum = row
        assert (token, tf, vol, ticks, cum) == (m.instrument_token, target, m.volume, m.ticks, m.cum_volume)
        assert ts <= m.ts < ts + (60_000 if target == "1m" else 300_000)
        assert [repr(x) for x in (o, h, lo, c)] == [repr(x) for x in (m.open, m.high, m.low, m.close)]


ROLLUPS = [("1s", "1m"), ("1m", "5m")]


@pytest.mark.parametrize(("source", "target"), ROLLUPS)
@SETTINGS
@given(data=st.data())
def test_rollup_decoder_accepts_exactly_what_the_model_accepts(source: str, target: str, data: st.DataObject) -> None:
    other = "1m" if source == "1s" else "1s"
    raw = data.draw(st.one_of(valid_bar(source).map(to_json), mutated(valid_bar(source), BAR_FIELDS),
                              mutated(valid_bar(source), BAR_FIELDS), mutated(valid_bar(source), BAR_FIELDS),
                              valid_bar(other).map(to_json), st.sampled_from(RAW_EDGE)))
    check_bar(raw, source, target)


def _bar(**kw: Any) -> dict[str, Any]:
    b: dict[str, Any] = {"instrument_token": 738561, "tf": "1s", "ts": T0, "open": 10.0, "high": 11.0, "low": 9.5,
                         "close": 10.5, "volume": 100, "ticks": 4, "cum_volume": 5000}
    b.update(kw)
    return {k: v for k, v in b.items() if v is not _DROP}


BAR_CASES = {
    "valid": (_bar(), True),
    "int prices": (_bar(open=10, high=11, low=9, close=10), True),
    "flat": (_bar(open=1.0, high=1.0, low=1.0, close=1.0), True),
    "cum_volume absent": (_bar(cum_volume=_DROP), True),
    "cum_volume null": (_bar(cum_volume=None), True),
    "volume cap": (_bar(volume=max_bar_volume("1s")), True),
    "volume past cap": (_bar(volume=max_bar_volume("1s") + 1), False),
    "volume 2**64-1": (_bar(volume=2**64 - 1), False),
    "volume negative": (_bar(volume=-1), False),
    "ticks cap": (_bar(ticks=max_bar_ticks("1s")), True),
    "ticks 2**40": (_bar(ticks=2**40), False),
    "cum_volume -5": (_bar(cum_volume=-5), False),
    "cum_volume 2**40": (_bar(cum_volume=MAX_CUM_VOLUME), False),
    "high below low": (_bar(high=9.0, low=9.5, open=9.2, close=9.2), False),
    "open above high": (_bar(open=12.0), False),
    "close below low": (_bar(close=9.0), False),
    "ts unaligned": (_bar(ts=T0 + 1), False),
    "ts below 2000": (_bar(ts=MIN_TS_MS - 1000), False),
    "volume bool": (_bar(volume=True), False),
    "ticks float": (_bar(ticks=4.0), False),
    "open string": (_bar(open="10.0"), False),
    "tf unknown": (_bar(tf="2s"), False),
    "token 2**63": (_bar(instrument_token=MAX_TOKEN), False),
}


@pytest.mark.parametrize("name", sorted(BAR_CASES))
def test_bar_boundaries(name: str) -> None:
    obj, valid = BAR_CASES[name]
    raw = to_json(obj)
    assert (model_errors(Bar, raw) is None) is valid
    assert (rollup_bar(raw, "1s", "1m")[0] is None) is valid
    check_bar(raw, "1s", "1m")
