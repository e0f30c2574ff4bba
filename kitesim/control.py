"""``/_sim/*`` control routes: readiness, statistics, sent-tick log, fault injection, sessions.

Plain JSON (not the Kite envelope), no credentials, no rate limits, no faults.
Bad input is answered 400 ``{"error": "..."}``.

- ``GET /_sim/health`` -> ``{"status":"ok","http_port":..,"ws_port":..,"seed":..,"sim_time":..}``
- ``GET /_sim/stats`` -> ticks generated/sent per instrument, connections, frames, HTTP counts,
  ``rate_limited`` (429s sent per rate-limit category: ``{"orders":0,"quote":0,...}``) and
  ``faults_injected`` (how often each injected fault took effect)
- ``GET /_sim/ticks?token=T[&conn=C][&since=SEQ][&limit=N]`` -> packets sent for T, in send order
- ``GET|POST|DELETE /_sim/faults`` -> read / merge / reset the fault settings (see kitesim.faults)
- ``POST /_sim/ws_message`` ``{"type":"message"|"error","data":"..."}`` -> text frame to every client
- ``POST /_sim/session`` ``{"expire_all": true}`` -> every access token stops working now (later
  calls get 403 TokenException "Incorrect `api_key` or `access_token`.", ticker connections are
  closed); ``{"add_token": "T"}`` -> T becomes a valid access token too. Both may be given (expire
  first, then add). Returns ``{"expired": n, "added": bool, "live_tokens": n}``.
  ``POST /session/token`` (``generate_session``) keeps issuing new tokens meanwhile.
"""

from __future__ import annotations

from typing import Any

import orjson

from kitesim.auth import check_token_text
from kitesim.clock import ist_str
from kitesim.errors import KiteError
from kitesim.host import ControlHost
from kitesim.httpd import Request, Response, Router, json_response


class ControlRoutes:
    """The control application (callable)."""

    def __init__(self, sim: ControlHost) -> None:
        self.sim = sim
        self.router = Router()
        r = self.router.add
        r("GET", "/_sim/health", self.health)
        r("GET", "/_sim/stats", self.stats)
        r("GET", "/_sim/ticks", self.ticks)
        r("GET", "/_sim/faults", self.faults_get)
        r("POST", "/_sim/faults", self.faults_post)
        r("DELETE", "/_sim/faults", self.faults_reset)
        r("POST", "/_sim/ws_message", self.ws_message)
        r("POST", "/_sim/session", self.session)

    def __call__(self, req: Request) -> Response:
        route, params, exists = self.router.match(req.method, req.path)
        if route is None:
            return json_response(405 if exists else 404, {"error": "not found"})
        req.path_params = params
        try:
            return json_response(200, route.handler(req))
        except (KiteError, ValueError) as exc:
            return json_response(400, {"error": str(exc)})

    def health(self, req: Request) -> dict[str, Any]:
        """Readiness: both servers are listening."""
        sim = self.sim
        now = sim.clock.now()
        return {"status": "ok", "http_port": sim.http_port, "ws_port": sim.ws_port, "seed": sim.config.seed,
                "speed": sim.config.speed, "sim_time": ist_str(now), "sim_epoch": now,
                "instruments": len(sim.universe), "replay_done": sim.replay_done()}

    def stats(self, req: Request) -> dict[str, Any]:
        """Counters (see kitesim.stats)."""
        sim = self.sim
        with sim.lock:
            generated = dict(sim.market.ticks_generated)
            orders, trades = len(sim.engine.orders), len(sim.engine.portfolio.trades)
        out = sim.stats.summary(generated)
        out.update({"orders": orders, "trades": trades, "sim_time": ist_str(sim.clock.now()),
                    "rate_limited": sim.limiter.refused()})
        return out

    def ticks(self, req: Request) -> dict[str, Any]:
        """Packets sent for one instrument, in send order."""
        token_s = req.param("token")
        if not token_s or not token_s.isdigit():
            raise ValueError("query parameter `token` (an instrument token) is required")
        token = int(token_s)
        inst = self.sim.by_token.get(token)
        if inst is None:
            raise ValueError(f"unknown instrument token {token}")
        conn = req.param("conn")
        rows = self.sim.stats.tick_log(token, inst.price_divisor, conn_id=int(conn) if conn else None,
                                       since_seq=int(req.param("since") or 0),
                                       limit=int(req.param("limit") or 10_000))
        return {"token": token, "count": len(rows), "ticks": rows}

    def faults_get(self, req: Request) -> dict[str, Any]:
        """Current fault settings."""
        return self.sim.faults.snapshot()

    def faults_post(self, req: Request) -> dict[str, Any]:
        """Merge settings / take actions."""
        self.sim.faults.update(_body(req))
        with self.sim.lock:
            self.sim.engine.reject_rate = self.sim.faults.config.order_reject_rate
        return self.sim.faults.snapshot()

    def faults_reset(self, req: Request) -> dict[str, Any]:
        """Clear every fault."""
        self.sim.faults.reset()
        with self.sim.lock:
            self.sim.engine.reject_rate = self.sim.faults.config.order_reject_rate
        return self.sim.faults.snapshot()

    def session(self, req: Request) -> dict[str, Any]:
        """Expire every access token and/or register an extra one."""
        body = _body(req)
        if not isinstance(body, dict) or not body:
            raise ValueError("session: give {\"expire_all\": true} and/or {\"add_token\": \"...\"}")
        unknown = sorted(set(body) - {"expire_all", "add_token"})
        if unknown:
            raise ValueError(f"session: {unknown[0]}: unknown key")
        expire, token = body.get("expire_all", False), body.get("add_token")
        if not isinstance(expire, bool):
            raise ValueError("session: expire_all: must be true or false")
        if token is not None:
            try:
                check_token_text(token)  # before expiring anything: a bad body changes nothing
            except KiteError as exc:
                raise ValueError(f"session: add_token: {exc}") from None
        sessions = self.sim.sessions
        expired = sessions.expire_all() if expire else 0
        if token is not None:
            sessions.add(token)
        return {"expired": expired, "added": token is not None, "live_tokens": sessions.live()}

    def ws_message(self, req: Request) -> dict[str, Any]:
        """Send a ``message`` or ``error`` text frame to every WebSocket client."""
        body = req.json()
        kind = body.get("type", "message") if isinstance(body, dict) else None
        if kind not in ("message", "error"):
            raise ValueError("type must be 'message' or 'error'")
        sent = self.sim.hub.broadcast_text_threadsafe({"type": kind, "data": body.get("data", "")})
        return {"sent": sent}


def _body(req: Request) -> Any:
    """The request's JSON body; malformed JSON -> ValueError (a 400)."""
    try:
        return req.json()
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"body is not JSON: {exc}") from None
