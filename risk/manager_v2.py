"""Risk sizing manager v2: ``orders`` -> ``orders.sized`` (the orders table: NEW -> SIZED | REJECTED_RISK).

Sizes each entry on :mod:`risk.sizing` (``configs/risk_budget.yaml``): qty = floor(risk amount /
stop distance), rounded down to the lot size, capped by notional, position and freeze limits.
Exits keep the strategy's quantity.

- **Entry price**: the order's price (LIMIT/SL; SL-M its trigger), or for MARKET orders the order's
  ``extra.ref_price`` (the close of the bar that decided it: the price at ``signal_ts``, as a backtest
  sizes), else for an order without one the close of the latest 1 s bar that ended by ``signal_ts``
  (``bars_1s``, at most ``max_price_age_s`` old), else the broker's LTP (one quote call per batch);
  ``risk.price_source`` says which.
- **Equity**: ``KiteConnect.margins("equity")["net"]`` (``KITE_ROOT``: kitesim in paper/dry and tests),
  cached ``margins_ttl_s``. When the broker fails, sizing uses the configured ``capital`` with
  ``risk.sizing_source = "fallback"`` and ``sizing_fallback_total`` counts it: never a zero, never a
  crash. ``equity_source: capital`` pins it (replays, parity runs).
- A rejection sets REJECTED_RISK with its reason (``orders.status_detail``, ``risk.reason``, an
  ``order.updates`` message, ``rejects_total{reason}``).

Delivery: :class:`execution.stage.OrderStage` (decide in Postgres once, then publish; NEW orders
the topic no longer holds are re-driven from the table).

    python -m risk.manager_v2 [--budget configs/risk_budget.yaml] [--group ID]
"""

from __future__ import annotations

import sys
from typing import Any

import psycopg

from core.metrics import Metrics
from core.sessions import load_calendar
from core.settings import Settings
from core.topics import ORDERS, ORDERS_SIZED
from core.universe import load_universe
from execution.oms import OmsTx, Status
from execution.stage import Decision, OrderStage
from risk import broker, exposure, sizing
from risk.cli import run_risk_service
from risk.config import RiskBudget
from schemas.models import Order


class RiskManager(OrderStage):
    name = "risk_manager"
    group_id = "risk_manager"
    input_topics = (ORDERS,)
    input_model = Order
    input_status = Status.NEW
    output_topic = ORDERS_SIZED
    output_states = frozenset({Status.SIZED, Status.REJECTED_RISK})
    passing_states = frozenset({Status.SIZED})
    reject_state = Status.REJECTED_RISK
    reject_field = "risk"

    def __init__(self, settings: Settings, metrics: Metrics, cfg: RiskBudget, kite: Any | None = None) -> None:
        self.cfg = cfg
        super().__init__(settings, metrics)
        m = metrics
        self.m_sized = m.counter("sized_total", "Orders sized", ["intent"])
        self.m_rejects = m.counter("rejects_total", "Orders rejected (REJECTED_RISK), by reason", ["reason"])
        self.m_fallback = m.counter("sizing_fallback_total",
                                    "Entries sized on the configured capital: broker margins failed")
        self.m_broker_err = m.counter("broker_errors_total", "Broker API errors (margins, ltp), by type",
                                      ["call", "error"])
        self.m_equity = m.gauge("equity", "Equity the last entry was sized on (rupees)")
        self.m_price_src = m.counter("entry_price_source_total", "Where entry prices came from", ["source"])
        self.calendar = load_calendar()
        self.instruments = {i.instrument_token: i for i in load_universe(settings.config_dir / "tokens.csv")}
        if kite is None and cfg.equity_source == "broker":
            kite = broker.kite_client(settings.kite_api_key.get_secret_value(),
                                      settings.kite_access_token.get_secret_value(), settings.kite_root,
                                      cfg.margins_timeout_s)
        self.kite = kite
        self.equity = broker.EquityCache(kite, cfg.capital, cfg.margins_ttl_s, retry_s=cfg.margins_retry_s,
                                         pinned=cfg.equity_source == "capital",
                                         on_error=lambda e: self.m_broker_err.labels("margins", e).inc())
        self._lots: dict[int, tuple[int, str | None]] = {}
        self._equity: broker.Equity | None = None

    # -- the decision ---------------------------------------------------------
    def decide(self, conn: psycopg.Connection[Any], tx: OmsTx, orders: list[dict[str, Any]]) -> list[Decision]:
        entries = [o for o in orders if sizing.is_entry(o)]
        eq = self._equity if entries and self._equity is not None else self.equity.get() if entries else \
            broker.Equity(self.cfg.capital, "n/a")
        tokens = sorted({int(o["instrument_token"]) for o in entries})
        exit_keys = sorted({(str(o["strategy"]), int(o["instrument_token"]), str(o["side"])) for o in orders
                            if not sizing.is_entry(o)})
        prices, held, exits = self._entry_prices(conn, entries, tokens, exit_keys)
        lots = self._lot_sizes(conn, tokens)
        used_exits: dict[tuple[str, int, str], int] = {}
        out: list[Decision] = []
        for o in orders:
            tok = int(o["instrument_token"])
            price, src = prices.get(o["order_id"], (None, None))
            lot, name = lots.get(tok, (1, None))
            q, n = held.get(tok, (0, 0.0))
            avail = None
            if not sizing.is_entry(o):  # what is filled on the side it closes, less exits already on the way
                ekey = (str(o["strategy"]), tok, str(o["side"]))
                net, working = exits.get(ekey, (0, 0))
                closing = max(net, 0) if o["side"] == "SELL" else max(-net, 0)
                avail = closing - working - used_exits.get(ekey, 0)
            mkt = sizing.Market(eq.value, eq.source, price, src, lot, name, q, n, avail)
            s = sizing.size(o, mkt, self.cfg, self.calendar)
            if s.rejected:
                reason = s.reason or "rejected"
                s.risk["reason"] = reason
                detail = f"{reason}: {s.risk.get('detail', '')}".rstrip(": ")
                out.append(Decision(Status.REJECTED_RISK, detail, fields={"risk": s.risk, "status_detail": detail},
                                    reason=reason))
                continue
            assert s.qty is not None
            if not sizing.is_entry(o):  # two exits of one batch do not both close the same shares
                ekey = (str(o["strategy"]), tok, str(o["side"]))
                used_exits[ekey] = used_exits.get(ekey, 0) + s.qty
            if sizing.is_entry(o):
                held[tok] = (q + s.qty, n + s.qty * (price or 0.0))  # the next entry of this batch sees it
            detail = (f"qty {s.qty} risking {s.risk.get('risk_amount')} of equity {s.risk.get('equity')} "
                      f"({eq.source})" if sizing.is_entry(o) else f"exit qty {s.qty}")
            output = {**o, "qty": s.qty, "risk": s.risk}
            out.append(Decision(Status.SIZED, detail, qty=s.qty, fields={"risk": s.risk}, output=output))
        return out

    def prepare(self, orders: list[dict[str, Any]]) -> None:
        """Equity before the transaction: a slow margins call must not hold the orders' row locks."""
        self._equity = self.equity.get() if any(sizing.is_entry(o) for o in orders) else None

    def on_decided(self, decided: list[tuple[dict[str, Any], Decision]]) -> None:
        for o, d in decided:
            risk = d.fields.get("risk") or {}
            if d.to == Status.REJECTED_RISK:
                self.m_rejects.labels(d.reason or "rejected").inc()
                continue
            self.m_sized.labels(sizing.intent_of(o)).inc()
            if sizing.is_entry(o):
                self.m_equity.set(float(risk.get("equity") or 0.0))
                if risk.get("sizing_source") == "fallback":
                    self.m_fallback.inc()
                self.m_price_src.labels(str(risk.get("price_source"))).inc()

    def _entry_prices(self, conn: psycopg.Connection[Any], entries: list[dict[str, Any]], tokens: list[int],
                      exit_keys: list[tuple[str, int, str]]
                      ) -> tuple[dict[str, tuple[float | None, str | None]], exposure.Held, exposure.ExitRoom]:
        """(order_id -> (price, source): order price, latest 1 s bar, broker LTP, ref price; and what is
        held or pending on each token), the database reads in one round trip."""
        out: dict[str, tuple[float | None, str | None]] = {}
        need: list[dict[str, Any]] = []
        for o in entries:
            p = sizing.order_price(o)
            ref = (o.get("extra") or {}).get("ref_price")
            if p is not None and p > 0:
                out[o["order_id"]] = (p, "order")
            elif isinstance(ref, int | float) and not isinstance(ref, bool) and ref > 0:
                # the close of the bar that decided it: the price at signal_ts by definition, known without a
                # read (a 1 s bar is published before it is stored, so a read could still find the one before)
                out[o["order_id"]] = (float(ref), "ref_price")
            else:
                need.append(o)
        age = int(self.cfg.max_price_age_s * 1000)
        # event time: the latest 1 s bar that ended by each order's own signal (never one after it)
        closes, held, exits = exposure.sizing_reads(
            conn, [(int(o["instrument_token"]), int(o["signal_ts"])) for o in need], age, tokens, exit_keys)
        missing: list[dict[str, Any]] = []
        for o in need:
            c = closes.get((int(o["instrument_token"]), int(o["signal_ts"])))
            if c is not None:
                out[o["order_id"]] = (c, "bar_1s")
            else:
                missing.append(o)
        if missing:
            keys = {f"{o['exchange']}:{o['symbol']}": o for o in missing}
            quotes = broker.ltp(self.kite, list(keys),
                                on_error=lambda e: self.m_broker_err.labels("ltp", e).inc())
            for o in missing:
                p = quotes.get(f"{o['exchange']}:{o['symbol']}")
                if p is not None:
                    out[o["order_id"]] = (p, "ltp")
        return out, held, exits

    def _lot_sizes(self, conn: psycopg.Connection[Any], tokens: list[int]) -> dict[int, tuple[int, str | None]]:
        """token -> (lot size, name): the universe, else the instrument master table, else 1."""
        unknown = [t for t in tokens if t not in self._lots and t not in self.instruments]
        if unknown:
            for tok, lot, name in conn.execute(
                    "SELECT instrument_token, lot_size, name FROM instruments WHERE instrument_token = ANY(%s)",
                    (unknown,)).fetchall():
                self._lots[int(tok)] = (max(1, int(lot or 1)), name)
        out: dict[int, tuple[int, str | None]] = {}
        for t in tokens:
            if t in self.instruments:
                inst = self.instruments[t]
                out[t] = (max(1, inst.lot_size), inst.name or None)
            else:
                out[t] = self._lots.get(t, (1, None))
        return out

    def heartbeat_fields(self) -> dict[str, Any]:
        eq = self.equity
        return {**super().heartbeat_fields(), "equity_source": "capital" if eq.pinned else
                ("fallback" if eq.last_error else "broker")}


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    return run_risk_service(RiskManager, "python -m risk.manager_v2", __doc__ or "", argv)


if __name__ == "__main__":
    sys.exit(main())
