"""execution.oms (OmsTx) against a real, freshly migrated Postgres.

The idempotent upsert, versioned audit rows (applied and refused), fills deduplicated by
fill_id with the overfill guard (a refused fill is still an execution: it is in ``fills`` and
``positions``, only the order does not count it), the OrderUpdates finish() returns, replay_updates and
load_orders, and two transactions on one order serializing on its row lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from core.metrics import Metrics
from execution.oms import OmsMetrics, OmsTx, Status, load_orders, replay_updates
from tests.conftest import query

pytestmark = pytest.mark.integration

S = Status
T0 = 1_764_822_600_000  # 2025-12-04 10:00 IST, ms
UPDATE_KEYS = {"order_id", "from_status", "to_status", "ts", "source", "detail"}


def make_order(oid: str = "o1", qty: int | None = None, **kw: Any) -> dict[str, Any]:
    o = {"order_id": oid, "strategy": "mac", "instrument_token": 738561, "symbol": "RELIANCE", "exchange": "NSE",
         "side": "BUY", "order_type": "LIMIT", "product": "MIS", "price": 1000.0, "trigger_price": None,
         "stop_loss": 990.0, "qty": qty, "tf": "1m", "signal_ts": T0 - 60_000, "created_ts": T0 - 59_000}
    o.update(kw)
    return o


def make_fill(fid: str, qty: int, price: float = 1000.0, oid: str = "o1", ts: int = T0) -> dict[str, Any]:
    return {"fill_id": fid, "order_id": oid, "broker_order_id": "250101000001", "instrument_token": 738561,
            "side": "BUY", "qty": qty, "price": price, "ts": ts, "venue": "paper", "strategy": "mac"}


def in_tx(dsn: str, fn: Callable[[OmsTx], Any], *, source: str = "test", now_ms: int = T0,
          metrics: OmsMetrics | None = None) -> tuple[Any, list[dict[str, Any]]]:
    """Run ``fn`` on an OmsTx in one committed transaction; returns (its result, finish()'s updates)."""
    with psycopg.connect(dsn) as conn, conn.transaction():
        tx = OmsTx(conn, source, now_ms, metrics)
        result = fn(tx)
        updates = tx.finish()
    return result, updates


def order_row(dsn: str, oid: str = "o1") -> tuple[Any, ...]:
    return query(dsn, "SELECT status, qty, filled_qty, avg_price, version FROM orders WHERE order_id = %s", oid)[0]


def net_qty(dsn: str, strategy: str = "mac", token: int = 738561) -> int | None:
    rows = query(dsn, "SELECT net_qty FROM positions WHERE strategy = %s AND instrument_token = %s", strategy, token)
    return rows[0][0] if rows else None


def audit(dsn: str, oid: str = "o1") -> list[tuple[Any, ...]]:
    return query(dsn, "SELECT from_status, to_status, applied, version, filled_qty, source, detail FROM order_audit "
                      "WHERE order_id = %s ORDER BY id", oid)


def at_allowed(dsn: str, qty: int = 10, oid: str = "o1") -> None:
    """An order taken NEW -> SIZED -> ALLOWED (versions 1..3)."""
    def go(tx: OmsTx) -> None:
        tx.ensure([make_order(oid)], S.NEW)
        assert tx.transition(oid, S.SIZED, "sized", qty=qty).applied
        assert tx.transition(oid, S.ALLOWED, "allowed").applied
    in_tx(dsn, go)


# -- ensure: the idempotent upsert ------------------------------------------------------

def test_ensure_missing_order_then_inserted_at_the_status_with_audit_version_1(fresh_pg_dsn):
    states, updates = in_tx(fresh_pg_dsn, lambda tx: tx.ensure([make_order(qty=5, extra={"k": 1}, note="x")],
                                                               S.SIZED), source="risk_guard")
    assert states["o1"].status == S.SIZED and states["o1"].qty == 5 and states["o1"].filled_qty == 0
    assert order_row(fresh_pg_dsn) == ("SIZED", 5, 0, None, 1)
    assert query(fresh_pg_dsn, "SELECT strategy, symbol, extra FROM orders")[0] == \
        ("mac", "RELIANCE", {"k": 1, "note": "x"})
    assert audit(fresh_pg_dsn) == [(None, "SIZED", True, 1, 0, "risk_guard", "created from the SIZED message")]
    assert [(u["from_status"], u["to_status"], u["version"]) for u in updates] == [(None, "SIZED", 1)]


def test_ensure_existing_order_then_not_overwritten_and_no_audit_row(fresh_pg_dsn):
    in_tx(fresh_pg_dsn, lambda tx: tx.ensure([make_order()], S.NEW))
    states, updates = in_tx(fresh_pg_dsn, lambda tx: tx.ensure([make_order(qty=99, symbol="TCS")], S.SIZED))
    assert states["o1"].status == S.NEW and states["o1"].qty is None
    assert updates == []
    assert order_row(fresh_pg_dsn) == ("NEW", None, 0, None, 1)
    assert query(fresh_pg_dsn, "SELECT symbol FROM orders")[0][0] == "RELIANCE"
    assert len(audit(fresh_pg_dsn)) == 1


def test_ensure_a_batch_of_known_and_new_orders_then_only_the_new_ones_inserted(fresh_pg_dsn):
    in_tx(fresh_pg_dsn, lambda tx: tx.ensure([make_order("a")], S.NEW))
    states, updates = in_tx(fresh_pg_dsn, lambda tx: tx.ensure([make_order("a"), make_order("b"), make_order("a")],
                                                               S.NEW))
    assert set(states) == {"a", "b"}
    assert [u["order_id"] for u in updates] == ["b"]
    assert query(fresh_pg_dsn, "SELECT count(*) FROM orders")[0][0] == 2


# -- transitions -------------------------------------------------------------------------

def test_applied_transition_then_version_bumped_and_one_audit_row(fresh_pg_dsn):
    in_tx(fresh_pg_dsn, lambda tx: tx.ensure([make_order()], S.NEW))

    def size(tx: OmsTx) -> Any:
        tx.load(["o1"])
        return tx.transition("o1", S.SIZED, "risk 1%", qty=12, fields={"risk": {"pct": 1.0}})
    out, updates = in_tx(fresh_pg_dsn, size, source="risk_manager", now_ms=T0 + 5)
    assert out.applied
    assert order_row(fresh_pg_dsn) == ("SIZED", 12, 0, None, 2)
    assert query(fresh_pg_dsn, "SELECT risk FROM orders")[0][0] == {"pct": 1.0}
    assert audit(fresh_pg_dsn)[1:] == [("NEW", "SIZED", True, 2, 0, "risk_manager", "risk 1%")]
    assert updates == [{"order_id": "o1", "from_status": "NEW", "to_status": "SIZED", "ts": T0 + 5,
                        "source": "risk_manager", "detail": "risk 1%", "filled_qty": 0, "qty": 12, "version": 2}]


def test_replayed_transition_then_noop_without_audit_row(fresh_pg_dsn):
    at_allowed(fresh_pg_dsn)
    n = len(audit(fresh_pg_dsn))

    def again(tx: OmsTx) -> Any:
        tx.load(["o1"])
        return tx.transition("o1", S.ALLOWED, "allowed")
    out, updates = in_tx(fresh_pg_dsn, again, now_ms=T0 + 1000)
    assert out.kind == "noop" and updates == []
    assert order_row(fresh_pg_dsn) == ("ALLOWED", 10, 0, None, 3)
    assert len(audit(fresh_pg_dsn)) == n


def test_illegal_transition_then_audited_once_not_applied_and_counted(fresh_pg_dsn):
    at_allowed(fresh_pg_dsn)
    metrics = OmsMetrics(Metrics("oms_test"))

    def back(tx: OmsTx) -> Any:
        tx.load(["o1"])
        return tx.transition("o1", S.SIZED, "resized")
    for k in range(2):  # the same illegal attempt twice (a replayed message): one audit row
        out, updates = in_tx(fresh_pg_dsn, back, now_ms=T0 + k, metrics=metrics)
        assert out.kind == "illegal" and updates == []
    assert order_row(fresh_pg_dsn) == ("ALLOWED", 10, 0, None, 3)
    refused = [r for r in audit(fresh_pg_dsn) if not r[2]]
    assert refused == [("ALLOWED", "SIZED", False, None, 0, "test", "illegal transition ALLOWED -> SIZED (resized)")]
    assert metrics.illegal.labels("ALLOWED", "SIZED")._value.get() == 2


def test_kite_statuses_and_cancel_failed_through_the_tx_then_audited_in_order(fresh_pg_dsn):
    at_allowed(fresh_pg_dsn)

    def broker(tx: OmsTx) -> None:
        tx.load(["o1"])
        assert tx.transition("o1", S.SUBMITTED, "placed", fields={"broker_order_id": "B1", "venue": "paper"}).applied
        assert tx.kite_status("o1", "OPEN PENDING", 0).kind == "noop"
        assert tx.kite_status("o1", "OPEN", 0).applied
        assert tx.kite_status("o1", "CANCEL PENDING", 0).applied
        assert tx.cancel_failed("o1", "already traded").applied
    _, updates = in_tx(fresh_pg_dsn, broker, source="gateway")
    assert [(u["from_status"], u["to_status"], u["version"]) for u in updates] == [
        ("ALLOWED", "SUBMITTED", 4), ("SUBMITTED", "OPEN", 5), ("OPEN", "CANCEL_REQUESTED", 6),
        ("CANCEL_REQUESTED", "OPEN", 7)]
    assert order_row(fresh_pg_dsn) == ("OPEN", 10, 0, None, 7)
    assert query(fresh_pg_dsn, "SELECT broker_order_id, venue FROM orders")[0] == ("B1", "paper")
    assert [r[3] for r in audit(fresh_pg_dsn)] == [1, 2, 3, 4, 5, 6, 7]


def test_transition_on_an_order_not_loaded_then_keyerror(fresh_pg_dsn):
    with psycopg.connect(fresh_pg_dsn) as conn, conn.transaction():
        tx = OmsTx(conn, "test", T0)
        with pytest.raises(KeyError):
            tx.transition("nope", S.SIZED)
        assert tx.load(["nope"]) == {}


def test_transition_setting_a_column_the_oms_does_not_own_then_valueerror(fresh_pg_dsn):
    in_tx(fresh_pg_dsn, lambda tx: tx.ensure([make_order()], S.NEW))
    with psycopg.connect(fresh_pg_dsn) as conn, conn.transaction():
        tx = OmsTx(conn, "test", T0)
        tx.load(["o1"])
        with pytest.raises(ValueError, match="cannot set"):
            tx.transition("o1", S.SIZED, qty=1, fields={"status": "FILLED"})


# -- fills --------------------------------------------------------------------------------

def _fill(f: dict[str, Any]) -> Callable[[OmsTx], Any]:
    def go(tx: OmsTx) -> Any:
        tx.load([f["order_id"]])
        return tx.fill(f)
    return go


def test_fill_then_inserted_into_fills_and_counted_on_the_order(fresh_pg_dsn):
    at_allowed(fresh_pg_dsn)
    out, updates = in_tx(fresh_pg_dsn, _fill(make_fill("f1", 4, 1001.5)), source="gateway")
    assert out.applied
    assert query(fresh_pg_dsn, "SELECT fill_id, order_id, qty, price, venue FROM fills") == \
        [("f1", "o1", 4, 1001.5, "paper")]
    assert order_row(fresh_pg_dsn) == ("PARTIALLY_FILLED", 10, 4, 1001.5, 4)
    assert [(u["from_status"], u["to_status"], u["filled_qty"]) for u in updates] == \
        [("ALLOWED", "PARTIALLY_FILLED", 4)]


def test_duplicate_fill_id_then_none_and_nothing_changes(fresh_pg_dsn):
    at_allowed(fresh_pg_dsn)
    in_tx(fresh_pg_dsn, _fill(make_fill("f1", 4)))
    before = (order_row(fresh_pg_dsn), audit(fresh_pg_dsn))
    out, updates = in_tx(fresh_pg_dsn, _fill(make_fill("f1", 4)), now_ms=T0 + 10)
    assert out is None and updates == []
    assert (order_row(fresh_pg_dsn), audit(fresh_pg_dsn)) == before
    assert query(fresh_pg_dsn, "SELECT count(*) FROM fills")[0][0] == 1


def test_duplicate_of_the_fill_that_completed_the_order_then_none_not_an_illegal_overfill(fresh_pg_dsn):
    at_allowed(fresh_pg_dsn)
    in_tx(fresh_pg_dsn, _fill(make_fill("f1", 10)))
    assert order_row(fresh_pg_dsn)[:3] == ("FILLED", 10, 10)
    before = (order_row(fresh_pg_dsn), audit(fresh_pg_dsn))
    metrics = OmsMetrics(Metrics("oms_test"))
    out, updates = in_tx(fresh_pg_dsn, _fill(make_fill("f1", 10)), now_ms=T0 + 10, metrics=metrics)
    assert out is None and updates == []
    assert (order_row(fresh_pg_dsn), audit(fresh_pg_dsn)) == before  # no refused-overfill audit row
    assert metrics.illegal.labels("FILLED", "FILLED")._value.get() == 0


def test_same_fill_twice_in_one_transaction_then_counted_once(fresh_pg_dsn):
    at_allowed(fresh_pg_dsn)

    def twice(tx: OmsTx) -> tuple[Any, Any]:
        tx.load(["o1"])
        return tx.fill(make_fill("f1", 3)), tx.fill(make_fill("f1", 3))
    (first, second), updates = in_tx(fresh_pg_dsn, twice)
    assert first.applied and second is None and len(updates) == 1
    assert order_row(fresh_pg_dsn)[:3] == ("PARTIALLY_FILLED", 10, 3)


def test_two_fills_at_the_same_instant_then_both_audited(fresh_pg_dsn):
    at_allowed(fresh_pg_dsn)

    def two(tx: OmsTx) -> None:
        tx.load(["o1"])
        assert tx.fill(make_fill("f1", 3, 100.0)).applied
        assert tx.fill(make_fill("f2", 3, 100.0)).applied
    _, updates = in_tx(fresh_pg_dsn, two)
    in_tx(fresh_pg_dsn, _fill(make_fill("f3", 2, 100.0)))  # same now_ms, another transaction
    rows = [r for r in audit(fresh_pg_dsn) if r[3] and r[3] > 3]
    assert [(r[0], r[1], r[3], r[4]) for r in rows] == [
        ("ALLOWED", "PARTIALLY_FILLED", 4, 3), ("PARTIALLY_FILLED", "PARTIALLY_FILLED", 5, 6),
        ("PARTIALLY_FILLED", "PARTIALLY_FILLED", 6, 8)]
    assert order_row(fresh_pg_dsn) == ("PARTIALLY_FILLED", 10, 8, 100.0, 6)
    assert len(updates) == 2


def test_overfill_then_refused_on_the_order_audited_but_recorded_in_fills_and_positions(fresh_pg_dsn):
    at_allowed(fresh_pg_dsn)
    in_tx(fresh_pg_dsn, _fill(make_fill("f1", 8)))
    metrics = OmsMetrics(Metrics("oms_test"))
    out, updates = in_tx(fresh_pg_dsn, _fill(make_fill("f2", 3)), metrics=metrics)
    assert out.kind == "illegal" and updates == []
    assert order_row(fresh_pg_dsn)[:3] == ("PARTIALLY_FILLED", 10, 8)
    # the execution happened: it is on record, and the position holds all 11
    assert query(fresh_pg_dsn, "SELECT fill_id, qty FROM fills ORDER BY fill_id") == [("f1", 8), ("f2", 3)]
    assert net_qty(fresh_pg_dsn) == 11
    refused = [r for r in audit(fresh_pg_dsn) if not r[2]]
    assert len(refused) == 1 and "overfill" in refused[0][6]
    assert metrics.illegal.labels("PARTIALLY_FILLED", "PARTIALLY_FILLED")._value.get() == 1


def test_two_distinct_refused_fills_then_each_audited_and_recorded_once(fresh_pg_dsn):
    at_allowed(fresh_pg_dsn)
    in_tx(fresh_pg_dsn, _fill(make_fill("f1", 8)))
    in_tx(fresh_pg_dsn, _fill(make_fill("f2", 3)))
    in_tx(fresh_pg_dsn, _fill(make_fill("f3", 3)))
    before = (order_row(fresh_pg_dsn), audit(fresh_pg_dsn), net_qty(fresh_pg_dsn))
    again, updates = in_tx(fresh_pg_dsn, _fill(make_fill("f3", 3)), now_ms=T0 + 10)  # the same refused fill
    assert again is None and updates == []
    assert (order_row(fresh_pg_dsn), audit(fresh_pg_dsn), net_qty(fresh_pg_dsn)) == before
    refused = [r[6] for r in audit(fresh_pg_dsn) if not r[2]]
    assert len(refused) == 2 and any("f2" in d for d in refused) and any("f3" in d for d in refused)
    assert query(fresh_pg_dsn, "SELECT fill_id FROM fills ORDER BY fill_id") == [("f1",), ("f2",), ("f3",)]
    assert net_qty(fresh_pg_dsn) == 14 and order_row(fresh_pg_dsn)[:3] == ("PARTIALLY_FILLED", 10, 8)


def test_fill_on_a_rejected_order_then_in_fills_and_positions_but_not_on_the_order(fresh_pg_dsn):
    at_allowed(fresh_pg_dsn)

    def reject(tx: OmsTx) -> None:
        tx.load(["o1"])
        assert tx.kite_status("o1", "REJECTED", 0, "margin exceeds").applied
    in_tx(fresh_pg_dsn, reject, source="gateway")
    before = order_row(fresh_pg_dsn)
    metrics = OmsMetrics(Metrics("oms_test"))
    out, updates = in_tx(fresh_pg_dsn, _fill(make_fill("f1", 4, 1001.0)), source="poller", metrics=metrics)
    assert out.kind == "illegal" and out.after.status == S.REJECTED and updates == []
    assert order_row(fresh_pg_dsn) == before == ("REJECTED", 10, 0, None, 4)
    assert query(fresh_pg_dsn, "SELECT fill_id, order_id, qty, price FROM fills") == [("f1", "o1", 4, 1001.0)]
    assert net_qty(fresh_pg_dsn) == 4
    refused = [r for r in audit(fresh_pg_dsn) if not r[2]]
    assert refused == [("REJECTED", "REJECTED", False, None, 0, "poller", "fill of 4 on an order in REJECTED (f1)")]
    assert metrics.illegal.labels("REJECTED", "REJECTED")._value.get() == 1


@pytest.mark.parametrize("status", [S.NEW, S.SIZED])
def test_fill_on_an_order_not_yet_allowed_then_in_fills_and_positions_but_not_on_the_order(fresh_pg_dsn, status):
    def create(tx: OmsTx) -> None:
        tx.ensure([make_order()], S.NEW)
        if status == S.SIZED:
            assert tx.transition("o1", S.SIZED, "sized", qty=10).applied
    in_tx(fresh_pg_dsn, create)
    before = order_row(fresh_pg_dsn)
    out, updates = in_tx(fresh_pg_dsn, _fill(make_fill("f1", 2)))
    assert out.kind == "illegal" and updates == []
    assert order_row(fresh_pg_dsn) == before
    assert query(fresh_pg_dsn, "SELECT fill_id FROM fills") == [("f1",)] and net_qty(fresh_pg_dsn) == 2


def test_late_fill_after_cancel_then_counted_status_kept(fresh_pg_dsn):
    at_allowed(fresh_pg_dsn)

    def go(tx: OmsTx) -> None:
        tx.load(["o1"])
        tx.kite_status("o1", "OPEN", 0)
        tx.transition("o1", S.CANCEL_REQUESTED, "flatten")
        assert tx.fill(make_fill("f1", 4)).after.status == S.CANCEL_REQUESTED
        tx.kite_status("o1", "CANCELLED", 4)
        assert tx.fill(make_fill("f2", 1)).after.status == S.CANCELLED
    in_tx(fresh_pg_dsn, go)
    assert order_row(fresh_pg_dsn)[:3] == ("CANCELLED", 10, 5)


def test_working_kite_snapshot_after_the_order_ended_then_stale_noop_not_audited(fresh_pg_dsn):
    at_allowed(fresh_pg_dsn)
    metrics = OmsMetrics(Metrics("oms_test"))

    def go(tx: OmsTx) -> None:
        tx.load(["o1"])
        assert tx.kite_status("o1", "CANCELLED", 0).applied
        for kite, filled in (("OPEN", 0), ("OPEN", 3), ("OPEN PENDING", 0), ("UPDATE", 0)):
            out = tx.kite_status("o1", kite, filled)
            assert out.kind == "noop" and out.detail == f"stale kite {kite} on CANCELLED"
        assert tx.kite_status("o1", "COMPLETE", 10).kind == "illegal"  # a different end stays illegal
    _, updates = in_tx(fresh_pg_dsn, go, metrics=metrics)
    assert [(u["from_status"], u["to_status"]) for u in updates] == [("ALLOWED", "CANCELLED")]
    assert order_row(fresh_pg_dsn)[0] == "CANCELLED"
    assert [(r[0], r[1]) for r in audit(fresh_pg_dsn) if not r[2]] == [("CANCELLED", "FILLED")]
    assert metrics.illegal.labels("CANCELLED", "FILLED")._value.get() == 1


# -- finish, replay_updates, load_orders --------------------------------------------------

def test_finish_returns_an_order_update_per_applied_change_in_order(fresh_pg_dsn):
    def lifecycle(tx: OmsTx) -> None:
        tx.ensure([make_order()], S.NEW)
        tx.transition("o1", S.SIZED, "sized", qty=5)
        tx.transition("o1", S.SIZED, "replay")  # noop: no update
        tx.transition("o1", S.FILLED, "illegal")  # refused: no update
        tx.transition("o1", S.ALLOWED, "ok")
        tx.fill(make_fill("f1", 5))
    _, updates = in_tx(fresh_pg_dsn, lifecycle, source="stage", now_ms=T0 + 7)
    assert all(UPDATE_KEYS <= set(u) for u in updates)
    assert [(u["from_status"], u["to_status"]) for u in updates] == [
        (None, "NEW"), ("NEW", "SIZED"), ("SIZED", "ALLOWED"), ("ALLOWED", "FILLED")]
    assert {u["source"] for u in updates} == {"stage"} and {u["ts"] for u in updates} == {T0 + 7}
    assert [u["version"] for u in updates] == [1, 2, 3, 4]
    assert order_row(fresh_pg_dsn) == ("FILLED", 5, 5, 1000.0, 4)
    # the audit holds exactly these applied changes, plus the one refused attempt
    applied = [(r[0], r[1], r[3]) for r in audit(fresh_pg_dsn) if r[2]]
    assert applied == [(u["from_status"], u["to_status"], u["version"]) for u in updates]


def test_finish_with_nothing_done_then_no_updates(fresh_pg_dsn):
    assert in_tx(fresh_pg_dsn, lambda tx: None)[1] == []


def test_replay_updates_then_the_audited_updates_of_that_source_only(fresh_pg_dsn):
    in_tx(fresh_pg_dsn, lambda tx: tx.ensure([make_order("a"), make_order("b")], S.NEW), source="runner")

    def size(tx: OmsTx) -> None:
        tx.load(["a", "b"])
        tx.transition("a", S.SIZED, "sized a", qty=3)
        tx.transition("b", S.REJECTED_RISK, "too big")
        tx.transition("a", S.REJECTED_RISK, "illegal")  # not applied: not replayed
    _, sent = in_tx(fresh_pg_dsn, size, source="risk_manager", now_ms=T0 + 3)
    got = replay_updates(psycopg.connect(fresh_pg_dsn), ["a", "b", "zz"], "risk_manager")
    keys = ("order_id", "from_status", "to_status", "ts", "source", "detail", "filled_qty", "version")
    assert got == [{k: u[k] for k in keys} for u in sorted(sent, key=lambda u: u["order_id"])]
    assert [(u["order_id"], u["to_status"]) for u in got] == [("a", "SIZED"), ("b", "REJECTED_RISK")]
    with psycopg.connect(fresh_pg_dsn) as conn:
        assert [u["to_status"] for u in replay_updates(conn, ["a"], "runner")] == ["NEW"]
        assert replay_updates(conn, [], "risk_manager") == []


def test_load_orders_by_status_and_by_ids(fresh_pg_dsn):
    orders = [make_order(f"o{i}", created_ts=T0 + i) for i in range(4)]
    in_tx(fresh_pg_dsn, lambda tx: tx.ensure(orders, S.NEW))

    def move(tx: OmsTx) -> None:
        tx.load(["o1", "o3"])
        tx.transition("o1", S.SIZED, qty=2, fields={"risk": {"r": 1}})
        tx.transition("o3", S.SIZED, qty=4)
    in_tx(fresh_pg_dsn, move)
    with psycopg.connect(fresh_pg_dsn) as conn:
        assert [o["order_id"] for o in load_orders(conn, statuses=["NEW"])] == ["o0", "o2"]
        sized = load_orders(conn, statuses=["SIZED"])
        assert [(o["order_id"], o["qty"], o["version"]) for o in sized] == [("o1", 2, 2), ("o3", 4, 2)]
        assert sized[0]["risk"] == {"r": 1} and sized[0]["signal_ts"] == T0 - 60_000
        assert sized[0]["created_ts"] == T0 + 1
        assert [o["order_id"] for o in load_orders(conn, ids=["o3", "o0", "nope"])] == ["o0", "o3"]
        assert [o["order_id"] for o in load_orders(conn, ids=["o0", "o1"], statuses=["SIZED"])] == ["o1"]
        assert len(load_orders(conn, limit=3)) == 3
        assert load_orders(conn, statuses=["SIZED"], older_than_ms=3_600_000) == []


# -- concurrency --------------------------------------------------------------------------

def test_two_transactions_filling_one_order_then_serialized_and_no_fill_lost(fresh_pg_dsn):
    at_allowed(fresh_pg_dsn)
    locked = threading.Event()
    t2_state: dict[str, Any] = {}

    def second() -> None:
        locked.wait(10)
        with psycopg.connect(fresh_pg_dsn) as conn, conn.transaction():
            tx = OmsTx(conn, "gateway-2", T0)
            t2_state["seen"] = tx.load(["o1"])["o1"]  # blocks on FOR UPDATE until the first commits
            t2_state["at"] = time.monotonic()
            t2_state["out"] = tx.fill(make_fill("f2", 4, 110.0))
            tx.finish()

    worker = threading.Thread(target=second)
    worker.start()
    with psycopg.connect(fresh_pg_dsn) as conn:
        with conn.transaction():
            tx = OmsTx(conn, "gateway-1", T0)
            tx.load(["o1"])
            locked.set()
            time.sleep(0.5)  # the second transaction is now waiting on the row lock
            assert "seen" not in t2_state
            assert tx.fill(make_fill("f1", 6, 100.0)).applied
            tx.finish()
            committed_at = time.monotonic()
    worker.join(20)
    assert not worker.is_alive()
    assert t2_state["at"] >= committed_at
    assert t2_state["seen"].filled_qty == 6  # it read the first's committed fill
    assert t2_state["out"].applied
    assert order_row(fresh_pg_dsn) == ("FILLED", 10, 10, pytest.approx(104.0), 5)
    assert query(fresh_pg_dsn, "SELECT count(*) FROM fills")[0][0] == 2
    assert [r[3] for r in audit(fresh_pg_dsn)] == [1, 2, 3, 4, 5]


def test_two_stages_ensuring_the_same_missing_order_concurrently_then_one_row_one_create_audit(fresh_pg_dsn):
    barrier = threading.Barrier(2)
    results: list[tuple[Any, list[dict[str, Any]]]] = []

    def stage(status: Status, name: str) -> None:
        with psycopg.connect(fresh_pg_dsn) as conn:
            with conn.transaction():
                tx = OmsTx(conn, name, T0)
                barrier.wait(10)
                st = tx.ensure([make_order(qty=3)], status)
                results.append((st["o1"], tx.finish()))

    threads = [threading.Thread(target=stage, args=a) for a in ((S.NEW, "runner"), (S.SIZED, "risk_manager"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert len(results) == 2
    creates = [u for _, ups in results for u in ups]
    assert len(creates) == 1  # exactly one of them inserted it
    assert {st.status for st, _ in results} == {Status(creates[0]["to_status"])}
    assert query(fresh_pg_dsn, "SELECT count(*) FROM orders")[0][0] == 1
    assert [r[:4] for r in audit(fresh_pg_dsn)] == [(None, creates[0]["to_status"], True, 1)]
