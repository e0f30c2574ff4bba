"""Order budget guard: ``orders.sized`` -> ``orders.allowed`` (the orders table: SIZED -> ALLOWED | REJECTED_BUDGET).

Each batch is decided (:func:`risk.budget.decide`) against what is in use *now*, read from
Postgres (:mod:`risk.exposure`): open positions from ``fills``, entries still pending in
``orders``, the IST day's PnL, the allowed-order counts of each signal's second/minute/day, and the
kill switch. ``used`` is therefore persistent by construction: a restart (or a second guard,
serialised by an advisory lock) sees exactly what the last decision saw, and exits, cancels and
rejections release budget as soon as the OMS records them. ``risk_budget_usage`` keeps the
per-bucket figures of the last batch for operators.

- Exits always pass (kill switch, daily loss limit and budgets stop new risk only).
- Entries: kill switch, strategy disabled, daily loss limit (realised + open PnL), order-count
  caps (account, strategy; on ``signal_ts``), max open positions (account, strategy), per-trade cap,
  bucket budget, strategy notional cap; each refusal is REJECTED_BUDGET with its reason
  (``orders.status_detail``, ``budget.reason``, ``order.updates``, ``rejects_total{reason}``).
- The kill switch (``python -m risk.kill_switch on``) is read at every batch: an entry decided after
  it is set is refused (within one poll, a few ms).

    python -m risk.order_budget_guard [--budget configs/risk_budget.yaml] [--group ID]
"""

from __future__ import annotations

import sys
import time
from typing import Any

import psycopg

from core.metrics import Metrics
from core.settings import Settings
from core.topics import ORDERS_ALLOWED, ORDERS_SIZED
from execution.oms import OmsTx, Status
from execution.stage import Decision, OrderStage
from risk import budget, exposure
from risk.cli import run_risk_service
from risk.config import RiskBudget
from schemas.models import SizedOrder

#: Serialises guards deciding against the same books (pg_advisory_xact_lock key).
LOCK_KEY = 0x7241_6753  # "rAgS"


class BudgetGuard(OrderStage):
    name = "order_budget_guard"
    group_id = "order_budget_guard"
    input_topics = (ORDERS_SIZED,)
    input_model = SizedOrder
    input_status = Status.SIZED
    output_topic = ORDERS_ALLOWED
    output_states = frozenset({Status.ALLOWED, Status.REJECTED_BUDGET})
    passing_states = frozenset({Status.ALLOWED})
    reject_state = Status.REJECTED_BUDGET
    reject_field = "budget"

    def __init__(self, settings: Settings, metrics: Metrics, cfg: RiskBudget) -> None:
        self.cfg = cfg
        super().__init__(settings, metrics)
        m = metrics
        self.m_allowed = m.counter("allowed_total", "Orders allowed", ["intent"])
        self.m_rejects = m.counter("rejects_total", "Orders rejected (REJECTED_BUDGET), by reason", ["reason"])
        self.m_used = m.gauge("budget_used", "Rupees in use (open positions + pending entries), by bucket", ["bucket"])
        self.m_budget = m.gauge("budget", "Rupees a bucket may use", ["bucket"])
        self.m_kill = m.gauge("kill_switch", "1 while the kill switch blocks new entries")
        self.m_day_pnl = m.gauge("day_pnl", "PnL of the latest decided IST day (rupees, realised + open)")
        self.m_status = m.gauge("orders_by_status", "Orders in the table by OMS state", ["status"])
        self._kill: bool | None = None
        self._last_status = 0.0
        self._last_counts = 0.0
        self._pruned = False
        for b in cfg.buckets:
            self.m_budget.labels(b).set(cfg.bucket_budget(b))

    def decide(self, conn: psycopg.Connection[Any], tx: OmsTx, orders: list[dict[str, Any]]) -> list[Decision]:
        book = exposure.load_book(conn, orders, lock_key=LOCK_KEY)
        self._note_kill(book.kill, book.kill_reason)
        out: list[Decision] = []
        for o in orders:
            v = budget.decide(o, book, self.cfg)
            if v.allowed:
                detail = "exit: always allowed" if v.budget.get("exit") else \
                    f"bucket {v.budget['bucket']}: {v.budget.get('bucket_used_after')} of {v.budget['bucket_budget']}"
                out.append(Decision(Status.ALLOWED, detail, fields={"budget": v.budget},
                                    output={**o, "budget": v.budget}))
            else:
                reason = v.reason or "rejected"
                detail = f"{reason}: {v.budget.get('detail', '')}"
                out.append(Decision(Status.REJECTED_BUDGET, detail, fields={"budget": v.budget,
                                                                           "status_detail": detail}, reason=reason))
        self._book = book
        if book.day_pnl:
            self.m_day_pnl.set(book.day_pnl[max(book.day_pnl)])
        return out

    def on_decided(self, decided: list[tuple[dict[str, Any], Decision]]) -> None:
        for _o, d in decided:
            if d.to == Status.ALLOWED:
                self.m_allowed.labels("exit" if (d.fields.get("budget") or {}).get("exit") else "entry").inc()
            else:
                self.m_rejects.labels(d.reason or "rejected").inc()

    def after_batch(self, conn: psycopg.Connection[Any], decided: list[tuple[dict[str, Any], Decision]]) -> None:
        book = getattr(self, "_book", None)
        if book is None or not decided:
            return
        used = book.used_by_bucket(self.cfg)
        rows = []
        for b, u in used.items():
            self.m_used.labels(b).set(u)
            pending = sum(v for s, v in book.pending_by_strategy.items() if self.cfg.bucket_of(s) == b)
            n_open = sum(1 for s, _ in book.open_keys if self.cfg.bucket_of(s) == b)
            rows.append((b, self.cfg.bucket_budget(b), u, u - pending, pending, n_open,
                         book.day_pnl[max(book.day_pnl)] if book.day_pnl else None))
        conn.cursor().executemany(
            "INSERT INTO risk_budget_usage (bucket, budget, used, positions, pending, open_positions, day_pnl) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (bucket) DO UPDATE SET budget = EXCLUDED.budget, "
            "used = EXCLUDED.used, positions = EXCLUDED.positions, pending = EXCLUDED.pending, "
            "open_positions = EXCLUDED.open_positions, "
            "day_pnl = EXCLUDED.day_pnl, updated_at = now()", rows)

    def start(self) -> None:
        super().start()
        if self._pruned or self.pool is None:
            return
        # per-second and per-minute counts matter only inside their window: keep the two days (of event
        # time: a replay of old days keeps its own) before the newest; the per-day counts stay
        try:
            with self.pool.connection() as conn:
                n = conn.execute(
                    "DELETE FROM risk_order_counts WHERE (win = 's' AND key < (SELECT max(key) FROM risk_order_counts "
                    "WHERE win = 's') - 172800) OR (win = 'm' AND key < (SELECT max(key) FROM risk_order_counts "
                    "WHERE win = 'm') - 2880)").rowcount
        except Exception as exc:  # noqa: BLE001 - housekeeping; the next start tries again
            self.log.warning("pruning risk_order_counts failed: %s", type(exc).__name__)
            return
        self._pruned = True
        if n:
            self.log.info("pruned order-count windows older than two days rows=%d", n)

    def step(self) -> None:
        super().step()
        now = time.monotonic()
        if now - self._last_status >= 5.0 and self.pool is not None:
            self._last_status = now
            self._poll_status()

    def _poll_status(self) -> None:
        """Kill switch state (every 5 s) and orders by status (every 30 s: a scan of the table) for the
        metrics, also while no order flows."""
        assert self.pool is not None
        now = time.monotonic()
        counts = None
        try:
            with self.pool.connection() as conn:
                kill, reason = exposure.kill_switch(conn)
                if now - self._last_counts >= 30.0:
                    self._last_counts = now
                    counts = conn.execute("SELECT status, count(*) FROM orders GROUP BY status").fetchall()
                conn.rollback()
        except Exception as exc:  # noqa: BLE001 - metrics only; the next batch retries the database
            self.log.debug("status poll failed: %s", exc)
            return
        self._note_kill(kill, reason)
        if counts is None:
            return
        for st in Status:
            self.m_status.labels(st.value).set(0)
        for st, n in counts:
            self.m_status.labels(st).set(n)

    def _note_kill(self, kill: bool, reason: str | None) -> None:
        self.m_kill.set(1 if kill else 0)
        if kill != self._kill:
            if self._kill is not None or kill:
                self.log.warning("kill switch %s%s", "ON: new entries blocked" if kill else "off: entries allowed",
                                 f" reason={reason}" if kill and reason else "")
            self._kill = kill

    def heartbeat_fields(self) -> dict[str, Any]:
        return {**super().heartbeat_fields(), "kill_switch": "on" if self._kill else "off"}


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    return run_risk_service(BudgetGuard, "python -m risk.order_budget_guard", __doc__ or "", argv)


if __name__ == "__main__":
    sys.exit(main())
