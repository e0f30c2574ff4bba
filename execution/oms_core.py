"""The order state machine, pure: states, the transition matrix, Kite's statuses mapped onto it.

:mod:`execution.oms` puts it in front of Postgres; this module does no I/O, so the
property tests (and the backtester) run it directly.

Lifecycle::

    NEW -> SIZED -> ALLOWED -> SUBMITTED -> OPEN -> PARTIALLY_FILLED -> FILLED
     |       |         |           \\          \\            \\
     |       |         |            +-> CANCEL_REQUESTED -> CANCELLED (or back to OPEN /
     v       v         v                                   PARTIALLY_FILLED: the cancel failed)
    REJECTED_RISK  REJECTED_BUDGET  REJECTED / CANCELLED / EXPIRED

Rules:

- A transition not in :data:`TRANSITIONS` is *illegal*: recorded and counted by the caller,
  never applied. Forward skips along the lifecycle are legal (a fill seen before the
  broker's OPEN, an order adopted after a crash straight at COMPLETE).
- The same state again (a replay, a duplicate postback) is a no-op.
- Fills move ``filled_qty``; the status follows (PARTIALLY_FILLED, FILLED) except after a
  cancel request (it stays CANCEL_REQUESTED until the fill completes the order or the
  cancel lands) and on CANCELLED/EXPIRED (a late trade report of a fill that happened
  before the cancel: quantity counted, status kept).
- ``filled_qty`` never exceeds ``qty``: a fill that would overfill is refused whole (on the order:
  :mod:`execution.oms` still records the execution in ``fills``).
- Kite's postbacks and order-book reads arrive in any order: a snapshot of a working stage on a
  final order (OPEN after COMPLETE, OPEN PENDING after CANCELLED) is stale news, a no-op; a
  different final status on a final order (COMPLETE after CANCELLED) is illegal.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace


class Status(enum.StrEnum):
    """Internal order states (``orders.status``)."""

    NEW = "NEW"
    SIZED = "SIZED"
    ALLOWED = "ALLOWED"
    REJECTED_RISK = "REJECTED_RISK"
    REJECTED_BUDGET = "REJECTED_BUDGET"
    SUBMITTED = "SUBMITTED"
    OPEN = "OPEN"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCEL_REQUESTED = "CANCEL_REQUESTED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"


S = Status
#: No transition leaves these.
FINAL = frozenset({S.REJECTED_RISK, S.REJECTED_BUDGET, S.FILLED, S.CANCELLED, S.REJECTED, S.EXPIRED})
#: At the broker (or the paper venue) and still able to trade.
WORKING = frozenset({S.SUBMITTED, S.OPEN, S.PARTIALLY_FILLED, S.CANCEL_REQUESTED})
#: Final without having traded everything (a fill may still be reported late on CANCELLED/EXPIRED).
_LATE_FILL_OK = frozenset({S.CANCELLED, S.EXPIRED, S.FILLED})

BROKER_END = frozenset({S.FILLED, S.CANCELLED, S.REJECTED, S.EXPIRED})
_BROKER_END = BROKER_END
TRANSITIONS: dict[Status, frozenset[Status]] = {
    S.NEW: frozenset({S.SIZED, S.REJECTED_RISK}),
    S.SIZED: frozenset({S.ALLOWED, S.REJECTED_BUDGET}),
    # ALLOWED -> CANCELLED/EXPIRED: never placed (flatten, the close); -> OPEN.. : adopted from the broker
    S.ALLOWED: frozenset({S.SUBMITTED, S.OPEN, S.PARTIALLY_FILLED}) | _BROKER_END,
    S.SUBMITTED: frozenset({S.OPEN, S.PARTIALLY_FILLED, S.CANCEL_REQUESTED}) | _BROKER_END,
    S.OPEN: frozenset({S.PARTIALLY_FILLED, S.CANCEL_REQUESTED}) | _BROKER_END,
    S.PARTIALLY_FILLED: frozenset({S.CANCEL_REQUESTED, S.FILLED, S.CANCELLED, S.EXPIRED}),
    # back to OPEN / PARTIALLY_FILLED: the cancel failed (the order traded, or the broker refused it)
    S.CANCEL_REQUESTED: frozenset({S.OPEN, S.PARTIALLY_FILLED, S.FILLED, S.CANCELLED, S.EXPIRED}),
    **{f: frozenset() for f in FINAL},
}

#: Kite order statuses (KITE_PROTOCOL.md "Orders") -> internal state. ``None``: no state of its own
#: (a modification in flight, a postback ``UPDATE``): the order keeps its state, quantities may move.
KITE_STATUS: dict[str, Status | None] = {
    "PUT ORDER REQ RECEIVED": S.SUBMITTED,
    "VALIDATION PENDING": S.SUBMITTED,
    "OPEN PENDING": S.SUBMITTED,
    "AMO REQ RECEIVED": S.SUBMITTED,
    "TRIGGER PENDING": S.OPEN,  # a stop order resting at the broker until its trigger
    "OPEN": S.OPEN,
    "MODIFY VALIDATION PENDING": None,
    "MODIFY PENDING": None,
    "MODIFIED": None,
    "UPDATE": None,
    "CANCEL PENDING": S.CANCEL_REQUESTED,
    "COMPLETE": S.FILLED,
    "CANCELLED": S.CANCELLED,
    "REJECTED": S.REJECTED,
    "LAPSED": S.EXPIRED,
}


class UnknownKiteStatus(ValueError):
    """A status string Kite does not document."""


def _kite_status(kite_status: str) -> Status | None:
    """The state a Kite status names by itself (None: none of its own); raises on an unknown one."""
    key = kite_status.strip().upper()
    if key not in KITE_STATUS:
        raise UnknownKiteStatus(f"unknown Kite order status {kite_status!r}")
    return KITE_STATUS[key]


def kite_target(kite_status: str, filled: int, qty: int | None, current: Status) -> Status:
    """The internal state a Kite order snapshot (status + ``filled_quantity``) puts the order in.

    ``OPEN`` with some quantity filled is PARTIALLY_FILLED (Kite keeps a part-filled order OPEN);
    a status with no state of its own keeps ``current`` (moved to PARTIALLY_FILLED when the
    snapshot shows a fill and the order is merely OPEN/SUBMITTED).
    """
    target = _kite_status(kite_status)
    if target is None:
        target = current
    if target in (S.OPEN, S.SUBMITTED) and filled > 0:
        target = S.FILLED if qty is not None and filled >= qty else S.PARTIALLY_FILLED
    return target


@dataclass(frozen=True, slots=True)
class OrderState:
    """What the state machine knows of one order."""

    order_id: str
    status: Status
    qty: int | None = None
    filled_qty: int = 0
    avg_price: float | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of offering one event to the state machine.

    ``kind``: ``applied`` (``after`` differs from ``before``: audit it, publish it), ``noop``
    (a replay: nothing to record) or ``illegal`` (record and count, ``after is before``).
    """

    kind: str
    before: OrderState | None
    after: OrderState
    detail: str | None = None

    @property
    def applied(self) -> bool:
        return self.kind == "applied"

    @property
    def status_changed(self) -> bool:
        return self.applied and (self.before is None or self.before.status != self.after.status)


def legal(src: Status, dst: Status) -> bool:
    return dst in TRANSITIONS[src]


def create(order_id: str, status: Status, qty: int | None, detail: str | None = None) -> Outcome:
    """A row that did not exist, inserted at the state of the message that brought it."""
    st = OrderState(order_id, status, qty)
    return Outcome("applied", None, st, detail)


def transition(cur: OrderState, to: Status, detail: str | None = None, *, qty: int | None = None) -> Outcome:
    """Move ``cur`` to ``to`` if the matrix allows it (``qty`` sets the quantity, e.g. on SIZED)."""
    if to == cur.status:
        return Outcome("noop", cur, cur)
    if not legal(cur.status, to):
        return Outcome("illegal", cur, cur, f"illegal transition {cur.status} -> {to}"
                       + (f" ({detail})" if detail else ""))
    # A broker's COMPLETE may come before its trades: the status is the broker's word, the
    # quantities follow from the fills (never invented here).
    after = replace(cur, status=to, qty=cur.qty if qty is None else qty)
    return Outcome("applied", cur, after, detail)


#: How far along a working order is; a Kite snapshot of an earlier stage is stale (see apply_kite).
_STAGE = {S.ALLOWED: 0, S.SUBMITTED: 1, S.OPEN: 2, S.PARTIALLY_FILLED: 3, S.CANCEL_REQUESTED: 4}


def apply_kite(cur: OrderState, kite_status: str, filled: int, detail: str | None = None) -> Outcome:
    """Offer a Kite status snapshot; quantities are not taken from it (fills carry them)."""
    target = kite_target(kite_status, filled, cur.qty, cur.status)
    named = _kite_status(kite_status)
    if cur.status in BROKER_END and (named is None or named in WORKING):
        # A snapshot taken while the order was still working (OPEN, part-filled or not, an interim
        # status, a modification, an UPDATE), delivered after its end at the broker: older news, not a
        # move. (On an order we rejected ourselves, REJECTED_RISK/BUDGET, a live broker order is no news
        # but a problem: illegal, audited and counted.)
        return Outcome("noop", cur, cur, f"stale kite {kite_status} on {cur.status}")
    if target == cur.status:
        return Outcome("noop", cur, cur)
    if _STAGE.get(target, 99) < _STAGE.get(cur.status, -1):
        # Kite's postbacks and order-book reads arrive in any order: a snapshot from an earlier stage
        # of a working order (OPEN PENDING after OPEN, OPEN after a fill or after our cancel request)
        # is older news, not a move back. A cancel that failed is the gateway's word (cancel_failed).
        return Outcome("noop", cur, cur, f"stale kite {kite_status} on {cur.status}")
    note = f"kite {kite_status}" + (f": {detail}" if detail else "")
    return transition(cur, target, note)


def apply_fill(cur: OrderState, qty: int, price: float, detail: str | None = None) -> Outcome:
    """Count a (new, deduplicated by the caller) fill of ``qty`` at ``price``.

    ``detail`` (the fill's id) is in every outcome's detail, refusals included: two different
    refused fills are two audit rows, a repeat of the same one is the same row.
    """
    why = f" ({detail})" if detail else ""
    if qty <= 0:
        return Outcome("illegal", cur, cur, f"fill of {qty}: quantity must be positive{why}")
    if cur.qty is None:
        return Outcome("illegal", cur, cur, f"fill of {qty} on an unsized order ({cur.status}){why}")
    if cur.filled_qty + qty > cur.qty:
        return Outcome("illegal", cur, cur, f"overfill refused: {cur.filled_qty} + {qty} > qty {cur.qty}{why}")
    if cur.status in (S.NEW, S.SIZED, S.REJECTED_RISK, S.REJECTED_BUDGET, S.REJECTED):
        return Outcome("illegal", cur, cur, f"fill of {qty} on an order in {cur.status}{why}")
    filled = cur.filled_qty + qty
    avg = price if not cur.filled_qty or cur.avg_price is None else \
        (cur.avg_price * cur.filled_qty + price * qty) / filled
    if cur.status in _LATE_FILL_OK or cur.status == S.CANCEL_REQUESTED:
        status = S.FILLED if (filled == cur.qty and cur.status == S.CANCEL_REQUESTED) else cur.status
    else:
        status = S.FILLED if filled == cur.qty else S.PARTIALLY_FILLED
    after = replace(cur, status=status, filled_qty=filled, avg_price=avg)
    return Outcome("applied", cur, after, f"fill {qty} @ {price:g}{why}")


def cancel_failed(cur: OrderState, detail: str | None = None) -> Outcome:
    """The broker refused a cancel (or the order traded first): back to where it was working."""
    if cur.status != S.CANCEL_REQUESTED:
        return Outcome("noop", cur, cur)
    to = S.PARTIALLY_FILLED if cur.filled_qty else S.OPEN
    return transition(cur, to, "cancel failed" + (f": {detail}" if detail else ""))
