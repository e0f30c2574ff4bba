"""Property test of the order state machine (execution.oms_core).

One order goes NEW -> SIZED -> ALLOWED; then a random sequence of events is folded through
the core: Kite status snapshots (every status of KITE_STATUS, with duplicates, in any order,
with random ``filled_quantity``), fills of random size (some would overfill), cancel requests,
failed cancels and the gateway's SUBMITTED. After every step the order is in a real state,
every applied change is legal, ``filled_qty`` stays within [previous, qty], a final status never
changes (a working-stage snapshot on it is a stale no-op), and the audit of applied changes replays
to exactly the final state.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings, strategies as st

from execution.oms_core import (
    BROKER_END,
    FINAL,
    KITE_STATUS,
    WORKING,
    OrderState,
    Outcome,
    Status,
    apply_fill,
    apply_kite,
    cancel_failed,
    create,
    legal,
    transition,
)

S = Status
MAX_QTY = 20


@dataclass(frozen=True)
class AuditRow:
    """What ``order_audit`` keeps of one applied change."""

    from_status: Status | None
    to_status: Status
    qty: int | None
    filled_qty: int
    avg_price: float | None


def _event(qty: int) -> st.SearchStrategy[tuple]:
    kite = st.tuples(st.just("kite"), st.sampled_from(sorted(KITE_STATUS)), st.integers(0, qty + 2))
    fill = st.tuples(st.just("fill"), st.integers(1, qty + 2), st.floats(1.0, 1000.0, allow_nan=False))
    return st.one_of(kite, fill, st.just(("cancel",)), st.just(("cancel_failed",)), st.just(("submitted",)))


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[int, list[tuple]]:
    qty = draw(st.integers(1, MAX_QTY))
    return qty, draw(st.lists(_event(qty), max_size=40))


def offer(cur: OrderState, event: tuple) -> Outcome:
    kind = event[0]
    if kind == "kite":
        return apply_kite(cur, event[1], event[2])
    if kind == "fill":
        return apply_fill(cur, event[1], event[2])
    if kind == "cancel":
        return transition(cur, S.CANCEL_REQUESTED, "cancel requested")
    if kind == "cancel_failed":
        return cancel_failed(cur, "broker refused")
    assert kind == "submitted"
    return transition(cur, S.SUBMITTED, "gateway placed it")


def record(audit: list[AuditRow], out: Outcome) -> None:
    if out.applied:
        a = out.after
        audit.append(AuditRow(out.before.status if out.before else None, a.status, a.qty, a.filled_qty,
                              a.avg_price))


def replay(audit: list[AuditRow], order_id: str) -> OrderState:
    """Rebuild the order from its audit alone: each row must start where the previous ended."""
    state: OrderState | None = None
    for row in audit:
        assert row.from_status == (state.status if state else None), f"audit gap before {row}"
        state = OrderState(order_id, row.to_status, row.qty, row.filled_qty, row.avg_price)
    assert state is not None
    return state


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_random_kite_sequences_never_reach_an_illegal_state_never_overfill_and_the_audit_explains_all(sc):
    qty, events = sc
    audit: list[AuditRow] = []
    out = create("o1", S.NEW, None, "created")
    record(audit, out)
    cur = out.after
    for to, q in [(S.SIZED, qty), (S.ALLOWED, None)]:
        out = transition(cur, to, qty=q)
        assert out.applied
        record(audit, out)
        cur = out.after
    accepted = 0

    for event in events:
        before = cur
        out = offer(cur, event)
        assert out.before is before
        after = out.after
        assert isinstance(after.status, Status)
        assert after.order_id == before.order_id and after.qty == qty
        if out.applied:
            moved = after.status != before.status
            assert (moved and legal(before.status, after.status)) or \
                (not moved and event[0] == "fill" and after.filled_qty > before.filled_qty), \
                f"{before.status} -> {after.status} on {event}"
            if event[0] == "fill":
                assert after.filled_qty == before.filled_qty + event[1]
                accepted += event[1]
            else:
                assert after.filled_qty == before.filled_qty and after.avg_price == before.avg_price
        else:
            assert after is before, f"{out.kind} outcome changed the order on {event}"
            assert out.kind in ("noop", "illegal")
            if event[0] == "fill":
                # A fill is refused only when it would overfill or the broker rejected the order.
                assert before.filled_qty + event[1] > qty or before.status == S.REJECTED
        assert before.filled_qty <= after.filled_qty <= qty
        if before.status in FINAL:
            assert after.status == before.status
            if event[0] == "kite" and KITE_STATUS[event[1]] in WORKING | {None} and before.status in BROKER_END:
                # Out-of-order postbacks: a working snapshot after the end is stale, not illegal.
                assert out.kind == "noop", f"{event} on {before.status}: {out.kind}"
        record(audit, out)
        cur = after

    assert cur.filled_qty == accepted
    assert replay(audit, "o1") == cur
