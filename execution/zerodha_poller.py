"""Zerodha poller: the broker's order book and trades reconciled into our tables (``TRADING_MODE`` dry or live).

Every ``poll_interval_s`` (``configs/execution.yaml``, 2 s), and at once when the broker pushes an order
postback (KiteTicker's ``on_order_update``, on its own WebSocket connection: a cue to read that order
again, never a source of truth), it reads ``orders()`` and ``trades()`` through the real client and
applies them with :func:`execution.broker_recon.reconcile`: status corrections through the OMS, fills
for trades not yet recorded (``fill_id`` ``kite-<trade_id>``) to ``fills`` (table and topic), and
alerts for broker orders unknown to us, for our placed orders missing at the broker and for a tag on
two broker orders (``broker_alerts``, a log line the first time, ``alerts{kind}`` gauge).

It also keeps the protective stops (:mod:`execution.protective_stops`): an SL-M exit after an entry
fills, for the strategies ``protective_stops.strategies`` names.

Like the gateway it halts on a TokenException until a renewed token is stored
(``python -m execution.kite_session``).

    python -m execution.zerodha_poller [--config configs/execution.yaml]
"""

from __future__ import annotations

import argparse
import queue
import sys
import time
from typing import Any

import orjson

from core import bus, db
from core.errors import TransientError
from core.metrics import Metrics
from core.service import Service, run_service
from core.settings import Settings
from core.topics import FILLS, ORDER_UPDATES, all_topics
from execution import broker_recon, outbox, protective_stops
from execution.config import ExecutionConfig, load_execution
from execution.kite_broker import KiteOrders
from execution.kite_session import TokenSource, session_path
from execution.oms import OmsMetrics, OmsTx
from execution.zerodha_gateway import check_mode

#: Postbacks come in bursts: at most one read of the book per this many seconds (two GETs each; Kite allows
#: 10 requests a second outside the order and quote APIs, and the gateway's tag lookups share them).
MIN_POLL_GAP_S = 0.35


class ZerodhaPoller(Service):
    name = "zerodha_poller"

    def __init__(self, settings: Settings, metrics: Metrics, cfg: ExecutionConfig) -> None:
        super().__init__(settings, metrics)
        self.cfg = cfg
        self.tokens = TokenSource(session_path(settings), settings.kite_access_token.get_secret_value())
        self.kite: KiteOrders | None = None
        self.pool: Any = None
        self.producer: bus.Producer | None = None
        self.cues: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.ticker: Any = None
        self._next_poll = 0.0
        self._earliest = 0.0
        self._token_version = 0
        self._halted = False
        self._alerted: set[tuple[str, str]] = set()
        self.oms_metrics = OmsMetrics(metrics)
        m = metrics
        self.m_polls = m.counter("polls_total", "Order book reads, by outcome", ["outcome"])
        self.m_fills = m.counter("fills_total", "Fills recorded from broker trades")
        self.m_corrections = m.counter("status_corrections_total", "Order states moved by the broker's book")
        self.m_adopted = m.counter("adopted_total", "Placements found at the broker by tag")
        self.m_alerts = m.gauge("alerts", "Open reconciliation alerts by kind", ["kind"])
        self.m_cues = m.counter("postbacks_total", "Order postbacks received (cues to read the book)")
        self.m_halted = m.gauge("halted", "1 while halted on a rejected access token")
        self.m_stops = m.counter("protective_stops_total", "Protective stop actions", ["action"])

    def start(self) -> None:
        if self.pool is None:
            self.pool = db.make_pool(self.settings.dsn, name=self.name)
        if self.producer is None:
            bus.ensure_topics(self.settings.kafka_bootstrap_servers, all_topics(self.settings.kafka_partitions))
            self.producer = bus.Producer(self.settings.kafka_bootstrap_servers, **{"client.id": self.name})
        if self.kite is None:
            self.kite = KiteOrders(self.settings.kite_api_key.get_secret_value(), self.tokens.current(),
                                   self.settings.kite_root, self.cfg.request_timeout_s)
            self._token_version = self.tokens.version
            self._start_postbacks()
        self._send_outbox()

    def _start_postbacks(self) -> None:
        """Order postbacks over the WebSocket (optional: without them the poll interval alone applies)."""
        ws_root = getattr(self.settings, "kite_ws_root", None)
        if not ws_root:
            return
        try:
            from kiteconnect import KiteTicker

            kt = KiteTicker(self.settings.kite_api_key.get_secret_value(), self.tokens.current(), root=ws_root,
                            reconnect=True)

            def on_order_update(_ws: Any, data: dict[str, Any]) -> None:
                self.cues.put(str(data.get("order_id", "")))

            kt.on_order_update = on_order_update
            kt.connect(threaded=True)
            self.ticker = kt
        except Exception as exc:  # noqa: BLE001 - polling alone still reconciles
            self.log.warning("order postbacks unavailable (polling every %.1fs only): %s", self.cfg.poll_interval_s,
                             exc)

    def step(self) -> None:
        self._check_token()
        cued = False
        try:
            while True:
                if self.cues.get_nowait():
                    self.m_cues.inc()
                cued = True
        except queue.Empty:
            pass
        now = time.monotonic()
        if (not cued and now < self._next_poll) or now < self._earliest:
            self.sleep(min(0.05, max(0.0, min(self._next_poll, self._earliest) - now) or 0.05))
            if cued:
                self.cues.put("")  # keep the cue for the next pass
            return
        self._next_poll = now + self.cfg.poll_interval_s
        self._earliest = now + MIN_POLL_GAP_S
        if self._halted:
            return
        self.poll_once()

    def poll_once(self) -> broker_recon.ReconResult | None:
        """One reconciliation pass (also used by tests and the flatten tool)."""
        assert self.kite is not None and self.pool is not None
        try:
            book, trades = self.kite.orders(), self.kite.trades()
        except Exception as exc:  # noqa: BLE001 - the broker is unreachable or refuses: next poll
            name = type(exc).__name__
            self.m_polls.labels(name).inc()
            if name == "TokenException":
                self._halt()
            else:
                self.log.warning("order book read failed, retrying in %.1fs: %s: %s", self.cfg.poll_interval_s,
                                 name, str(exc)[:200])
            return None
        self.m_polls.labels("ok").inc()
        try:
            with db.transaction(self.pool) as conn:
                tx = OmsTx(conn, self.name, int(time.time() * 1000), self.oms_metrics)
                res = broker_recon.reconcile(conn, tx, book, trades)
                actions = protective_stops.maintain(conn, tx, self.cfg.protective_stops, int(time.time() * 1000))
                updates = tx.finish()
                ids = outbox.put(conn, self.name,
                                 [(FILLS, f["order_id"].encode(), orjson.dumps(f)) for f in res.fills] +
                                 [(ORDER_UPDATES, u["order_id"].encode(), orjson.dumps(u)) for u in updates] +
                                 actions.messages)
                alerts = conn.execute("SELECT kind, count(*) FROM broker_alerts WHERE NOT cleared GROUP BY kind"
                                      ).fetchall()
        except Exception as exc:  # noqa: BLE001
            if not db.is_transient(exc):
                raise
            raise TransientError(f"reconciliation: database unavailable: {type(exc).__name__}") from exc
        self.m_fills.inc(len(res.fills))
        self.m_corrections.inc(res.statuses)
        self.m_adopted.inc(len(res.adopted))
        for kind, n in alerts:
            self.m_alerts.labels(kind).set(n)
        for action, n in actions.counts.items():
            self.m_stops.labels(action).inc(n)
        for kind, ref, detail in res.alerts:
            if (kind, ref) not in self._alerted:
                self._alerted.add((kind, ref))
                self.log.warning("ALERT %s ref=%s %s", kind, ref, detail)
        if ids:
            self._send_outbox()
        return res

    def _halt(self) -> None:
        if not self._halted:
            self.log.error("HALT Kite rejected the access token: polling paused until a new one is stored "
                           "(python -m execution.kite_session login --request-token RT, or set-token TOKEN)")
        self._halted = True
        self.m_halted.set(1)

    def _check_token(self) -> None:
        token = self.tokens.current()
        if self.tokens.version != self._token_version and self.kite is not None:
            self._token_version = self.tokens.version
            self.kite.set_token(token)
            if self._halted:
                self._halted = False
                self.m_halted.set(0)
                self._next_poll = 0.0
                self.log.warning("a renewed access token was stored: polling resumes")
            if self.ticker is not None:  # its WebSocket keeps the token it started with
                self.log.info("order postbacks keep the token they started with; polling every %.1fs covers "
                              "them once it expires (a restart reconnects them)", self.cfg.poll_interval_s)

    def _send_outbox(self) -> None:
        outbox.send(self.pool, self.producer, self.name)  # a failure raises: the step is retried

    def stop(self) -> None:
        if self.ticker is not None:
            import logging

            logging.getLogger("kiteconnect.ticker").setLevel(logging.CRITICAL)  # its close is logged as an error
            try:
                self.ticker.close()
            except Exception:  # noqa: BLE001, S110 - the reactor may be gone already
                pass
        if self.pool is not None:
            self.pool.close()

    def heartbeat_fields(self) -> dict[str, Any]:
        return {"halted": self._halted, "alerts": len(self._alerted)}


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    ap = argparse.ArgumentParser(prog="python -m execution.zerodha_poller",
                                 description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--config", help="execution settings (env EXECUTION_CONFIG, default <config dir>/execution.yaml)")
    args = ap.parse_args(argv)

    def factory(settings: Settings, metrics: Metrics) -> ZerodhaPoller:
        check_mode(settings)
        return ZerodhaPoller(settings, metrics, load_execution(args.config))

    return run_service(factory, ZerodhaPoller.name)


if __name__ == "__main__":
    sys.exit(main())
