"""The pure order state machine (execution.oms_core), as scenarios.

Kite's statuses (KITE_PROTOCOL.md "Orders") mapped onto the internal states, replays,
illegal transitions, cancels that fail, the overfill guard and late fills.
"""

from __future__ import annotations

import pytest

from execution.oms_core import (
    BROKER_END,
    FINAL,
    KITE_STATUS,
    TRANSITIONS,
    OrderState,
    Status,
    UnknownKiteStatus,
    apply_fill,
    apply_kite,
    cancel_failed,
    create,
    kite_target,
    transition,
)

S = Status
INTERIM_SUBMITTED = ("PUT ORDER REQ RECEIVED", "VALIDATION PENDING", "OPEN PENDING", "AMO REQ RECEIVED")
KEEPS_STATE = ("MODIFY VALIDATION PENDING", "MODIFY PENDING", "MODIFIED", "UPDATE")
DOCUMENTED = {
    # KITE_PROTOCOL.md: final OPEN, COMPLETE, CANCELLED, REJECTED; the interim ones; UPDATE in postbacks.
    "OPEN", "COMPLETE", "CANCELLED", "REJECTED", "PUT ORDER REQ RECEIVED", "VALIDATION PENDING", "OPEN PENDING",
    "MODIFY VALIDATION PENDING", "MODIFY PENDING", "MODIFIED", "TRIGGER PENDING", "CANCEL PENDING",
    "AMO REQ RECEIVED", "UPDATE",
}


def order(status: Status, qty: int | None = 10, filled: int = 0, avg: float | None = None) -> OrderState:
    return OrderState("o1", status, qty, filled, avg)


# -- the Kite status map ---------------------------------------------------------

def test_kite_status_map_covers_every_documented_status_plus_lapsed():
    assert set(KITE_STATUS) == DOCUMENTED | {"LAPSED"}


@pytest.mark.parametrize("kite", INTERIM_SUBMITTED)
def test_interim_status_on_allowed_order_then_submitted(kite):
    assert kite_target(kite, 0, 10, S.ALLOWED) == S.SUBMITTED
    out = apply_kite(order(S.ALLOWED), kite, 0)
    assert out.applied and out.after.status == S.SUBMITTED


def test_trigger_pending_on_submitted_stop_order_then_open():
    assert kite_target("TRIGGER PENDING", 0, 10, S.SUBMITTED) == S.OPEN
    out = apply_kite(order(S.SUBMITTED), "TRIGGER PENDING", 0)
    assert out.applied and out.after.status == S.OPEN


@pytest.mark.parametrize("kite", KEEPS_STATE)
@pytest.mark.parametrize("current", [S.SUBMITTED, S.OPEN, S.PARTIALLY_FILLED, S.CANCEL_REQUESTED])
def test_modify_and_update_statuses_keep_the_state(kite, current):
    filled = 3 if current == S.PARTIALLY_FILLED else 0
    assert kite_target(kite, filled, 10, current) == current
    cur = order(current, filled=filled)
    out = apply_kite(cur, kite, filled)
    assert out.kind == "noop" and out.after is cur


def test_update_with_a_fill_on_open_order_then_partially_filled():
    assert kite_target("UPDATE", 4, 10, S.OPEN) == S.PARTIALLY_FILLED


def test_cancel_pending_on_open_order_then_cancel_requested():
    out = apply_kite(order(S.OPEN), "CANCEL PENDING", 0)
    assert out.applied and out.after.status == S.CANCEL_REQUESTED


@pytest.mark.parametrize(("kite", "want"), [("COMPLETE", S.FILLED), ("CANCELLED", S.CANCELLED),
                                            ("REJECTED", S.REJECTED), ("LAPSED", S.EXPIRED)])
def test_broker_final_status_on_open_order_then_its_final_state(kite, want):
    out = apply_kite(order(S.OPEN), kite, 0)
    assert out.applied and out.after.status == want
    assert want in FINAL


def test_complete_before_its_trades_then_filled_with_quantities_left_to_the_fills():
    out = apply_kite(order(S.OPEN), "COMPLETE", 10)
    assert out.after.status == S.FILLED and out.after.filled_qty == 0  # the fills carry quantities


def test_open_with_part_filled_then_partially_filled():
    assert kite_target("OPEN", 4, 10, S.SUBMITTED) == S.PARTIALLY_FILLED
    out = apply_kite(order(S.OPEN), "OPEN", 4)
    assert out.applied and out.after.status == S.PARTIALLY_FILLED
    assert out.after.filled_qty == 0  # status only: quantities come from fills


def test_open_with_everything_filled_then_filled():
    assert kite_target("OPEN", 10, 10, S.OPEN) == S.FILLED


def test_status_strings_are_matched_case_and_space_insensitively():
    assert kite_target("  open pending ", 0, 10, S.ALLOWED) == S.SUBMITTED


@pytest.mark.parametrize("kite", ["FILLED", "PARTIAL", "", "OPEN_PENDING"])
def test_unknown_kite_status_then_raises(kite):
    with pytest.raises(UnknownKiteStatus):
        kite_target(kite, 0, 10, S.OPEN)
    with pytest.raises(UnknownKiteStatus):
        apply_kite(order(S.OPEN), kite, 0)


def test_older_open_snapshot_after_a_fill_then_noop():
    cur = order(S.PARTIALLY_FILLED, filled=4)
    out = apply_kite(cur, "OPEN", 0)
    assert out.kind == "noop" and out.after is cur


def test_interim_status_after_open_then_stale_noop_and_state_kept():
    cur = order(S.OPEN)
    out = apply_kite(cur, "OPEN PENDING", 0)
    assert out.kind == "noop" and out.after is cur and "stale" in (out.detail or "")


def test_open_snapshot_after_our_cancel_request_then_stale_not_a_failed_cancel():
    cur = order(S.CANCEL_REQUESTED, filled=2)
    for status, filled in (("OPEN", 0), ("OPEN", 2), ("PUT ORDER REQ RECEIVED", 0)):
        out = apply_kite(cur, status, filled)
        assert out.kind == "noop" and out.after is cur, status
    assert cancel_failed(cur).after.status == S.PARTIALLY_FILLED  # the gateway's word moves it back


@pytest.mark.parametrize("ours", [S.REJECTED_RISK, S.REJECTED_BUDGET])
def test_broker_snapshot_of_an_order_we_rejected_then_illegal_not_stale(ours):
    # we never placed it: a live broker order for it is a problem to see, not older news
    out = apply_kite(order(ours), "OPEN", 0)
    assert out.kind == "illegal" and out.after.status == ours


WORKING_SNAPSHOTS = (("OPEN", 0), ("OPEN", 4), ("OPEN", 10), ("OPEN PENDING", 0), ("PUT ORDER REQ RECEIVED", 0),
                     ("TRIGGER PENDING", 0), ("CANCEL PENDING", 0), ("MODIFY PENDING", 4), ("UPDATE", 4))


@pytest.mark.parametrize("final", sorted(BROKER_END))
@pytest.mark.parametrize(("kite", "filled"), WORKING_SNAPSHOTS)
def test_working_status_on_a_final_order_then_stale_noop_and_state_kept(final, kite, filled):
    # Postbacks arrive in any order: a snapshot from while the order was working, after its end.
    cur = order(final, filled=4 if final in (S.CANCELLED, S.EXPIRED) else 0)
    out = apply_kite(cur, kite, filled)
    assert out.kind == "noop" and not out.applied and out.after is cur
    assert out.detail == f"stale kite {kite} on {final}"


@pytest.mark.parametrize(("final", "kite"), [(S.CANCELLED, "COMPLETE"), (S.FILLED, "REJECTED"),
                                             (S.FILLED, "CANCELLED"), (S.REJECTED, "COMPLETE"),
                                             (S.EXPIRED, "CANCELLED"), (S.CANCELLED, "LAPSED"),
                                             (S.REJECTED_RISK, "COMPLETE"), (S.REJECTED_BUDGET, "REJECTED")])
def test_different_final_status_on_a_final_order_then_illegal_and_state_kept(final, kite):
    cur = order(final)
    out = apply_kite(cur, kite, 0)
    assert out.kind == "illegal" and out.after is cur
    assert out.detail is not None and out.detail.startswith(f"illegal transition {final} -> ")


def test_same_final_status_again_on_a_final_order_then_plain_noop():
    out = apply_kite(order(S.FILLED), "COMPLETE", 10)
    assert out.kind == "noop" and out.detail is None


# -- replays and illegal transitions -----------------------------------------------

@pytest.mark.parametrize("status", list(S))
def test_same_status_again_then_noop(status):
    cur = order(status)
    out = transition(cur, status)
    assert out.kind == "noop" and not out.applied and out.after is cur


def test_duplicate_kite_postback_then_noop():
    first = apply_kite(order(S.SUBMITTED), "OPEN", 0)
    again = apply_kite(first.after, "OPEN", 0)
    assert first.applied and again.kind == "noop"


@pytest.mark.parametrize(("src", "dst"), [(S.FILLED, S.OPEN), (S.REJECTED_RISK, S.SIZED), (S.NEW, S.ALLOWED),
                                          (S.CANCELLED, S.OPEN), (S.PARTIALLY_FILLED, S.OPEN),
                                          (S.ALLOWED, S.CANCEL_REQUESTED), (S.EXPIRED, S.FILLED)])
def test_illegal_transition_then_refused_with_reason_and_state_unchanged(src, dst):
    cur = order(src)
    out = transition(cur, dst, "because")
    assert out.kind == "illegal" and not out.applied
    assert out.after is cur and out.before is cur
    assert out.detail == f"illegal transition {src} -> {dst} (because)"


def test_final_states_have_no_way_out():
    for f in FINAL:
        assert TRANSITIONS[f] == frozenset()
        for dst in S:
            if dst != f:
                assert transition(order(f), dst).kind == "illegal"


def test_every_state_has_a_row_in_the_matrix():
    assert set(TRANSITIONS) == set(S)


def test_lifecycle_new_sized_allowed_submitted_open_then_each_step_applied():
    cur = create("o1", S.NEW, None).after
    for to, qty in [(S.SIZED, 12), (S.ALLOWED, None), (S.SUBMITTED, None), (S.OPEN, None)]:
        out = transition(cur, to, qty=qty)
        assert out.applied and out.status_changed
        cur = out.after
    assert cur.status == S.OPEN and cur.qty == 12


def test_sizing_sets_qty_on_the_transition():
    out = transition(order(S.NEW, qty=None), S.SIZED, "risk", qty=7)
    assert out.after.qty == 7 and out.after.status == S.SIZED


def test_forward_skip_fill_before_open_then_legal():
    assert transition(order(S.ALLOWED), S.PARTIALLY_FILLED).applied
    assert transition(order(S.SUBMITTED), S.FILLED).applied


# -- cancels -------------------------------------------------------------------------

def test_cancel_failed_on_unfilled_order_then_back_to_open():
    out = cancel_failed(order(S.CANCEL_REQUESTED), "order already traded")
    assert out.applied and out.after.status == S.OPEN
    assert out.detail == "cancel failed: order already traded"


def test_cancel_failed_on_part_filled_order_then_back_to_partially_filled():
    out = cancel_failed(order(S.CANCEL_REQUESTED, filled=4, avg=100.0))
    assert out.applied and out.after.status == S.PARTIALLY_FILLED and out.after.filled_qty == 4


@pytest.mark.parametrize("status", [s for s in S if s != S.CANCEL_REQUESTED])
def test_cancel_failed_without_a_cancel_request_then_noop(status):
    cur = order(status)
    out = cancel_failed(cur)
    assert out.kind == "noop" and out.after is cur


def test_cancel_landing_after_request_then_cancelled():
    out = apply_kite(order(S.CANCEL_REQUESTED, filled=3), "CANCELLED", 3)
    assert out.applied and out.after.status == S.CANCELLED and out.after.filled_qty == 3


# -- fills -----------------------------------------------------------------------------

def test_fill_on_open_order_then_partially_filled():
    out = apply_fill(order(S.OPEN), 4, 100.0, "f1")
    assert out.applied and out.after.status == S.PARTIALLY_FILLED
    assert out.after.filled_qty == 4 and out.after.avg_price == 100.0
    assert out.detail == "fill 4 @ 100 (f1)"


def test_fill_completing_the_order_then_filled():
    out = apply_fill(order(S.PARTIALLY_FILLED, filled=6, avg=100.0), 4, 101.0)
    assert out.after.status == S.FILLED and out.after.filled_qty == 10


def test_fill_on_allowed_order_before_the_broker_said_open_then_partially_filled():
    out = apply_fill(order(S.ALLOWED), 1, 50.0)
    assert out.applied and out.after.status == S.PARTIALLY_FILLED


def test_fill_after_cancel_request_keeps_cancel_requested_until_complete():
    cur = order(S.CANCEL_REQUESTED)
    first = apply_fill(cur, 6, 100.0)
    assert first.applied and first.after.status == S.CANCEL_REQUESTED and first.after.filled_qty == 6
    last = apply_fill(first.after, 4, 100.0)
    assert last.applied and last.after.status == S.FILLED and last.after.filled_qty == 10


def test_overfill_then_refused_whole():
    cur = order(S.PARTIALLY_FILLED, filled=8, avg=100.0)
    out = apply_fill(cur, 3, 100.0)
    assert out.kind == "illegal" and out.after is cur
    assert out.after.filled_qty == 8
    assert "overfill" in (out.detail or "")


def test_fill_of_exactly_the_rest_then_accepted():
    out = apply_fill(order(S.PARTIALLY_FILLED, filled=8, avg=100.0), 2, 100.0)
    assert out.applied and out.after.filled_qty == 10


@pytest.mark.parametrize("qty", [0, -1])
def test_fill_of_non_positive_qty_then_illegal(qty):
    cur = order(S.OPEN)
    assert apply_fill(cur, qty, 100.0).kind == "illegal"


@pytest.mark.parametrize("status", [S.CANCELLED, S.EXPIRED])
def test_late_fill_on_cancelled_or_expired_order_then_counted_with_status_kept(status):
    cur = order(status, filled=2, avg=100.0)
    out = apply_fill(cur, 3, 110.0)
    assert out.applied and out.after.status == status and out.after.filled_qty == 5
    assert out.after.avg_price == pytest.approx((2 * 100.0 + 3 * 110.0) / 5)


def test_fill_after_complete_reported_before_its_trades_then_counted_status_kept():
    out = apply_fill(order(S.FILLED), 10, 100.0)
    assert out.applied and out.after.status == S.FILLED and out.after.filled_qty == 10


def test_fill_on_unsized_order_then_illegal():
    cur = order(S.ALLOWED, qty=None)
    out = apply_fill(cur, 1, 100.0)
    assert out.kind == "illegal" and out.after is cur and "unsized" in (out.detail or "")


@pytest.mark.parametrize("status", [S.NEW, S.SIZED, S.REJECTED_RISK, S.REJECTED_BUDGET, S.REJECTED])
def test_fill_on_order_not_at_the_broker_or_rejected_then_illegal(status):
    cur = order(status)
    out = apply_fill(cur, 1, 100.0)
    assert out.kind == "illegal" and out.after is cur


def test_avg_price_is_the_qty_weighted_mean_of_the_fills():
    cur = order(S.OPEN, qty=100)
    fills = [(10, 100.0), (30, 102.5), (5, 99.0), (55, 101.25)]
    for q, p in fills:
        cur = apply_fill(cur, q, p).after
    want = sum(q * p for q, p in fills) / sum(q for q, _ in fills)
    assert cur.filled_qty == 100 and cur.status == S.FILLED
    assert cur.avg_price == pytest.approx(want)


def test_create_then_applied_without_a_before():
    out = create("o9", S.SIZED, 5, "created")
    assert out.applied and out.before is None and out.status_changed
    assert out.after == OrderState("o9", S.SIZED, 5, 0, None)
