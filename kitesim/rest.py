"""The Kite Connect v3 REST API of the simulator (routes, envelopes, errors, limits, faults).

Success: ``{"status":"success","data":...}``. Errors: ``{"status":"error",
"message":..,"error_type":..}`` with the HTTP status the official client maps
to its exception classes (KITE_PROTOCOL.md). The ``/_sim/*`` control routes
live in :mod:`kitesim.control`; they need no credentials and see no faults.

A Kite request goes through: ``delay_ms`` -> route -> credentials (403
TokenException) -> for order requests the ``ip_not_registered`` fault (403
PermissionException) -> rate limits (429, counted) -> injected 5xx -> the
handler -> 5xx after processing -> for placements the ``order_reply`` fault
(reply held back, or 400 "Order request timed out" for a placed order).
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from typing import Any

from core.universe import Instrument
from kitesim.auth import RequestLimits, SessionStore
from kitesim.clock import parse_ist
from kitesim.control import ControlRoutes
from kitesim.errors import (
    IP_NOT_REGISTERED,
    ORDER_REQUEST_TIMED_OUT,
    InputError,
    KiteError,
    NotFoundError,
    PermissionDeniedError,
    error_for_status,
)
from kitesim.host import RestHost
from kitesim.httpd import Request, Response, Router, json_response
from kitesim.orders import CIRCUIT_BAND
from kitesim.sim_order import rupees

INSTRUMENT_COLUMNS = ("instrument_token", "exchange_token", "tradingsymbol", "name", "last_price", "expiry",
                      "strike", "tick_size", "lot_size", "instrument_type", "segment", "exchange")


def instruments_csv(instruments: list[Instrument]) -> bytes:
    """Kite's instrument dump CSV for ``instruments``."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(INSTRUMENT_COLUMNS)
    for i in instruments:
        w.writerow([i.instrument_token, i.exchange_token, i.tradingsymbol, i.name, f"{i.last_price:.10g}", "", "0",
                    f"{i.tick_size:.10g}", i.lot_size, i.instrument_type, i.segment, i.exchange])
    return buf.getvalue().encode()


class KiteRestApp:
    """Callable HTTP application: ``/_sim/*`` control routes, then the Kite routes."""

    def __init__(self, sim: RestHost) -> None:
        self.sim = sim
        self.sessions: SessionStore = sim.sessions
        self.limiter: RequestLimits = sim.limiter
        self.router = Router()
        self._register()
        self.control = ControlRoutes(sim)

    def __call__(self, req: Request) -> Response:
        if req.path.startswith("/_sim/"):
            resp = self.control(req)
        else:
            resp = self._kite(req)
        self.sim.stats.http(resp.status)
        return resp

    # ------------------------------------------------------------------ pipeline

    def _kite(self, req: Request) -> Response:
        faults = self.sim.faults
        cfg = faults.config
        if cfg.delay_ms:
            time.sleep(cfg.delay_ms / 1000)
        route, params, exists = self.router.match(req.method, req.path)
        try:
            if route is None:
                raise NotFoundError("Method not allowed" if exists else "Route not found",
                                    405 if exists else 404)
            api_key = self.sessions.api_key
            if route.auth:
                api_key = self.sessions.check_header(req.headers.get("authorization"))
            is_order = route.category == "orders"  # place, modify, cancel (not GET /orders)
            if is_order and cfg.ip_not_registered:
                # before the rate limit: Kite refuses these whatever the rate, and they are not counted
                self.sim.stats.fault("ip_not_registered")
                raise PermissionDeniedError(IP_NOT_REGISTERED)
            if cfg.rate_limits:
                self.limiter.check(api_key, route.category)
            if not cfg.http_5xx_after_processing:
                self._maybe_fail(req.path)
            req.path_params = params
            with self.sim.lock:
                data = route.handler(req)
            if cfg.http_5xx_after_processing:
                self._maybe_fail(req.path)
            if is_order and req.method == "POST":
                self._spoil_order_reply()
        except KiteError as exc:
            return json_response(exc.http_status, exc.envelope())
        if isinstance(data, Response):
            return data
        return json_response(200, {"status": "success", "data": data})

    def _maybe_fail(self, path: str) -> None:
        status = self.sim.faults.http_failure(path)
        if status is not None:
            self.sim.stats.fault("http_5xx")
            raise error_for_status(status)

    def _spoil_order_reply(self) -> None:
        """The ``order_reply`` fault, after an order was placed (outside the lock: the market goes on)."""
        faults = self.sim.faults
        kind = faults.order_reply_fault()
        if kind is None:
            return
        self.sim.stats.fault(f"order_reply_{kind}")
        if kind == "http_400_timeout":
            raise InputError(ORDER_REQUEST_TIMED_OUT)
        # "timeout": hold the (successful) reply back; a client with a shorter timeout gives up first
        time.sleep(faults.config.order_reply_delay_ms / 1000)

    def _register(self) -> None:
        r = self.router.add
        r("POST", r"/session/token", self.session_token, auth=False)
        r("DELETE", r"/session/token", self.session_delete, auth=False)
        r("GET", r"/user/profile", self.profile)
        r("GET", r"/user/margins", self.margins)
        r("GET", r"/user/margins/(?P<segment>\w+)", self.margins)
        r("POST", r"/orders/(?P<variety>\w+)", self.place, "orders")
        r("PUT", r"/orders/(?P<variety>\w+)/(?P<order_id>\w+)", self.modify, "orders")
        r("DELETE", r"/orders/(?P<variety>\w+)/(?P<order_id>\w+)", self.cancel, "orders")
        r("GET", r"/orders", self.orders)
        r("GET", r"/orders/(?P<order_id>\d+)", self.order_history)
        r("GET", r"/orders/(?P<order_id>\d+)/trades", self.order_trades)
        r("GET", r"/trades", self.trades)
        r("GET", r"/portfolio/positions", self.positions)
        r("GET", r"/portfolio/holdings", self.holdings)
        r("GET", r"/instruments", self.instruments)
        r("GET", r"/instruments/(?P<exchange>[A-Za-z]+)", self.instruments)
        r("GET", r"/instruments/historical/(?P<token>\d+)/(?P<interval>\w+)", self.historical, "historical")
        r("GET", r"/quote", self.quote, "quote")
        r("GET", r"/quote/ohlc", self.ohlc, "quote")
        r("GET", r"/quote/ltp", self.ltp, "quote")

    # ------------------------------------------------------------------ session and user

    def _user(self) -> dict[str, Any]:
        return {"user_type": "individual", "email": "sim@example.invalid", "user_name": "Kite Simulator",
                "user_shortname": "Sim", "broker": "ZERODHA", "user_id": "SIM001", "avatar_url": None,
                "exchanges": ["NSE", "BSE", "NFO", "CDS", "BCD", "BFO", "MCX"],
                "products": ["CNC", "NRML", "MIS"], "order_types": ["MARKET", "LIMIT", "SL", "SL-M"],
                "meta": {"demat_consent": "physical"}}

    def session_token(self, req: Request) -> dict[str, Any]:
        """``POST /session/token``: request_token + checksum -> access_token."""
        token = self.sessions.generate(req.param("api_key"), req.param("request_token"),
                                       req.param("checksum"))
        data = self._user()
        data.update({"api_key": self.sessions.api_key, "access_token": token, "public_token": token[-12:],
                     "refresh_token": "", "enctoken": "", "login_time": self.sim.now_str()})
        return data

    def session_delete(self, req: Request) -> bool:
        """``DELETE /session/token``: invalidate an access token."""
        self.sessions.invalidate(req.param("access_token"))
        return True

    def profile(self, req: Request) -> dict[str, Any]:
        """``GET /user/profile``."""
        return self._user()

    def margins(self, req: Request) -> dict[str, Any]:
        """``GET /user/margins[/{segment}]``."""
        return self.sim.engine.portfolio.margins(req.path_params.get("segment"))

    # ------------------------------------------------------------------ orders

    def place(self, req: Request) -> dict[str, str]:
        """``POST /orders/{variety}`` (held in PUT ORDER REQ RECEIVED by the ``order_stuck_s`` fault)."""
        stuck = self.sim.faults.config.order_stuck_s
        return {"order_id": self.sim.engine.place(req.path_params["variety"], req.form, stuck,
                                                  time.monotonic())}

    def modify(self, req: Request) -> dict[str, str]:
        """``PUT /orders/{variety}/{order_id}``."""
        p = req.path_params
        return {"order_id": self.sim.engine.modify(p["variety"], p["order_id"], req.form)}

    def cancel(self, req: Request) -> dict[str, str]:
        """``DELETE /orders/{variety}/{order_id}`` (delayed by the ``cancel_delay_ms`` fault)."""
        p = req.path_params
        delay = self.sim.faults.config.cancel_delay_ms / 1000
        return {"order_id": self.sim.engine.cancel(p["variety"], p["order_id"], delay, time.monotonic())}

    def orders(self, req: Request) -> list[dict[str, Any]]:
        """``GET /orders``."""
        return self.sim.engine.list_orders()

    def order_history(self, req: Request) -> list[dict[str, Any]]:
        """``GET /orders/{order_id}``."""
        return self.sim.engine.history(req.path_params["order_id"])

    def order_trades(self, req: Request) -> list[dict[str, Any]]:
        """``GET /orders/{order_id}/trades``."""
        return self.sim.engine.order_trades(req.path_params["order_id"])

    def trades(self, req: Request) -> list[dict[str, Any]]:
        """``GET /trades``."""
        return self.sim.engine.trades()

    def positions(self, req: Request) -> dict[str, Any]:
        """``GET /portfolio/positions``."""
        return self.sim.engine.portfolio.positions()

    def holdings(self, req: Request) -> list[dict[str, Any]]:
        """``GET /portfolio/holdings``."""
        return self.sim.engine.portfolio.holdings()

    # ------------------------------------------------------------------ market data

    def instruments(self, req: Request) -> Response:
        """``GET /instruments[/{exchange}]`` as CSV."""
        exchange = req.path_params.get("exchange")
        rows = [i for i in self.sim.universe if exchange is None or i.exchange == exchange.upper()]
        return Response(200, instruments_csv(rows), content_type="text/csv; charset=utf-8")

    def _resolve(self, req: Request) -> list[tuple[str, Instrument]]:
        out = []
        for key in req.query.get("i", []):
            inst = self.sim.by_key.get(key)
            if inst is None and key.isdigit():
                inst = self.sim.by_token.get(int(key))
            if inst is not None:
                out.append((key, inst))
        return out

    def _each(self, req: Request, build: Callable[[Instrument], dict[str, Any]]) -> dict[str, Any]:
        return {key: build(inst) for key, inst in self._resolve(req)}

    def quote(self, req: Request) -> dict[str, Any]:
        """``GET /quote?i=NSE:INFY`` (full quote with depth)."""
        return self._each(req, self._full_quote)

    def ohlc(self, req: Request) -> dict[str, Any]:
        """``GET /quote/ohlc``."""
        def build(inst: Instrument) -> dict[str, Any]:
            q = self._full_quote(inst)
            return {"instrument_token": q["instrument_token"], "last_price": q["last_price"],
                    "ohlc": q["ohlc"]}
        return self._each(req, build)

    def ltp(self, req: Request) -> dict[str, Any]:
        """``GET /quote/ltp``."""
        def build(inst: Instrument) -> dict[str, Any]:
            q = self._full_quote(inst)
            return {"instrument_token": q["instrument_token"], "last_price": q["last_price"]}
        return self._each(req, build)

    def _full_quote(self, inst: Instrument) -> dict[str, Any]:
        snap = self.sim.market.latest(inst.instrument_token)
        assert snap is not None
        div, tick = inst.price_divisor, inst.tick_units

        def p(units: int) -> float:
            return rupees(units, div)

        lower = round(snap.close * (1 - CIRCUIT_BAND) / tick) * tick
        upper = round(snap.close * (1 + CIRCUIT_BAND) / tick) * tick
        ts = snap.ts or self.sim.clock.now()
        return {
            "instrument_token": inst.instrument_token, "timestamp": self.sim.now_str(),
            "last_trade_time": self.sim.fmt_time(snap.last_trade_time or ts),
            "last_price": p(snap.last_price),
            "last_quantity": snap.last_qty, "buy_quantity": snap.total_buy_qty,
            "sell_quantity": snap.total_sell_qty, "volume": snap.volume, "average_price": p(snap.avg_price),
            "oi": snap.oi, "oi_day_high": snap.oi_day_high, "oi_day_low": snap.oi_day_low,
            "net_change": p(snap.last_price - snap.close), "lower_circuit_limit": p(lower),
            "upper_circuit_limit": p(upper),
            "ohlc": {"open": p(snap.open or snap.last_price), "high": p(snap.high or snap.last_price),
                     "low": p(snap.low or snap.last_price), "close": p(snap.close)},
            "depth": {side: [{"price": p(lv.price), "quantity": lv.qty, "orders": lv.orders} for lv in levels]
                      for side, levels in (("buy", snap.buy), ("sell", snap.sell))},
        }

    def historical(self, req: Request) -> dict[str, Any]:
        """``GET /instruments/historical/{token}/{interval}?from=&to=[&oi=1]``."""
        try:
            start = parse_ist(req.param("from") or "")
            end = parse_ist(req.param("to") or "")
        except ValueError as exc:
            raise InputError(f"invalid from/to: {exc}") from None
        p = req.path_params
        candles = self.sim.history.candles(int(p["token"]), p["interval"], start, end,
                                           with_oi=req.param("oi") in ("1", "true"))
        return {"candles": candles}
