"""Minimal HTTP/1.1 plumbing for the simulator's REST API (standard library only).

A ``ThreadingHTTPServer`` parses requests into :class:`Request` objects and
hands them to one application callable returning a :class:`Response`. Routing
is a small regex table. Keep-alive is supported (the official client reuses
connections), so every response carries a Content-Length.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

log = logging.getLogger("kitesim.http")


@dataclass
class Request:
    """A parsed HTTP request."""

    method: str
    path: str
    query: dict[str, list[str]]
    form: dict[str, str]
    headers: dict[str, str]
    body: bytes = b""
    path_params: dict[str, str] = field(default_factory=dict)

    def param(self, name: str) -> str | None:
        """Form value, else the last query value, else None."""
        if name in self.form:
            return self.form[name]
        values = self.query.get(name)
        return values[-1] if values else None

    def params(self) -> dict[str, str]:
        """Query (last values) overlaid with the form."""
        merged = {k: v[-1] for k, v in self.query.items() if v}
        merged.update(self.form)
        return merged

    def json(self) -> Any:
        """The body parsed as JSON (empty body -> {})."""
        return orjson.loads(self.body) if self.body.strip() else {}


@dataclass
class Response:
    """An HTTP response."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def json_response(status: int, payload: Any) -> Response:
    """A JSON response (orjson: fast, handles dataclasses and non-str keys poorly on purpose)."""
    return Response(status, orjson.dumps(payload))


App = Callable[[Request], Response]


@dataclass(frozen=True)
class Route:
    """One route: method, compiled path pattern, handler, rate-limit category, auth flag."""

    method: str
    pattern: re.Pattern[str]
    handler: Callable[[Request], Any]
    category: str = "other"
    auth: bool = True


class Router:
    """Regex route table; :meth:`match` returns the route and path params."""

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(self, method: str, path: str, handler: Callable[[Request], Any], category: str = "other",
            auth: bool = True) -> None:
        """Register ``path`` (a regex with named groups, anchored)."""
        self.routes.append(Route(method, re.compile(f"^{path}$"), handler, category, auth))

    def match(self, method: str, path: str) -> tuple[Route | None, dict[str, str], bool]:
        """``(route, params, path_exists)``; path_exists tells 405 from 404."""
        exists = False
        for r in self.routes:
            m = r.pattern.match(path)
            if m:
                exists = True
                if r.method == method:
                    return r, m.groupdict(), True
        return None, {}, exists


def _make_handler(app: App) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "kitesim/1"
        # headers and body go out in two writes: with Nagle on, the body waits for the client's
        # delayed ACK (~40 ms a request), which made a burst of 15 orders span a calendar second
        disable_nagle_algorithm = True

        def _dispatch(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            ctype = self.headers.get("Content-Type", "")
            form: dict[str, str] = {}
            if body and "application/x-www-form-urlencoded" in ctype:
                form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8"), keep_blank_values=True).items()}
            req = Request(method=self.command, path=parts.path or "/",
                          query=parse_qs(parts.query, keep_blank_values=True), form=form,
                          headers={k.lower(): v for k, v in self.headers.items()}, body=body)
            try:
                resp = app(req)
            except Exception:  # noqa: BLE001 - last line of defence: never kill the server thread
                log.exception("unhandled error path=%s", req.path)
                resp = json_response(500, {"status": "error", "message": "Internal server error", "data": None,
                                           "error_type": "GeneralException"})
            try:
                self.send_response(resp.status)
                self.send_header("Content-Type", resp.content_type)
                self.send_header("Content-Length", str(len(resp.body)))
                for k, v in resp.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(resp.body)
            except (BrokenPipeError, ConnectionResetError):
                # the client gave up first (e.g. the order_reply "timeout" fault): expected, not an error
                self.close_connection = True
                log.debug("client gone before the reply path=%s", req.path)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _dispatch  # noqa: N815 - http.server API

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server API
            log.debug("http " + format, *args)

    return Handler


class HttpServer:
    """A threaded HTTP server running ``app`` on a background thread."""

    def __init__(self, app: App, host: str, port: int) -> None:
        ThreadingHTTPServer.allow_reuse_address = True
        self.httpd = ThreadingHTTPServer((host, port), _make_handler(app))
        self.httpd.daemon_threads = True
        self.port: int = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="kitesim-http", daemon=True)

    def start(self) -> None:
        """Serve in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.httpd.shutdown()
        self.httpd.server_close()
