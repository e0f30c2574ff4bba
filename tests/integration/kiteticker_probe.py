"""Run the official KiteTicker against a ticker root for a while and print what it saw as JSON.

The Twisted reactor cannot restart inside one process, so tests run this script
in a subprocess, once per session::

    python tests/integration/kiteticker_probe.py --root ws://127.0.0.1:PORT --seconds 3 \
        --quote 738561 --full 256265 --ltp 408065

Output (one JSON document on stdout): ``connected``, ``ticks`` (each tick dict,
datetimes as ISO strings), ``frames`` (on_ticks calls), ``errors``/``closes``
(code, reason), ``order_updates`` and ``messages`` (raw text frames).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Any


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--api-key", default="sim")
    ap.add_argument("--access-token", default="sim-token")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--quote", type=int, nargs="*", default=[],
                    help="tokens left in the default (quote) mode")
    ap.add_argument("--full", type=int, nargs="*", default=[], help="tokens set to full mode")
    ap.add_argument("--ltp", type=int, nargs="*", default=[], help="tokens set to ltp mode")
    ap.add_argument("--stop-on-close", action="store_true", help="stop at the first close (no reconnect)")
    args = ap.parse_args()

    from kiteconnect import KiteTicker
    from twisted.internet import reactor

    out: dict[str, Any] = {"connected": False, "ticks": [], "frames": 0, "errors": [], "closes": [],
                           "order_updates": [], "messages": [], "binary_messages": 0}
    kws = KiteTicker(args.api_key, args.access_token, root=args.root, reconnect_max_tries=1,
                     connect_timeout=5)

    def on_connect(ws: KiteTicker, response: Any) -> None:
        out["connected"] = True
        tokens = args.quote + args.full + args.ltp
        if tokens:
            ws.subscribe(tokens)
        if args.full:
            ws.set_mode(ws.MODE_FULL, args.full)
        if args.ltp:
            ws.set_mode(ws.MODE_LTP, args.ltp)

    def on_ticks(ws: KiteTicker, ticks: list[dict[str, Any]]) -> None:
        out["frames"] += 1
        out["ticks"].extend(_jsonable(t) for t in ticks)

    def on_message(ws: KiteTicker, payload: bytes, is_binary: bool) -> None:
        if is_binary:
            out["binary_messages"] += 1
        else:
            out["messages"].append(payload.decode() if isinstance(payload, bytes) else payload)

    def on_error(ws: KiteTicker, code: Any, reason: Any) -> None:
        out["errors"].append([code, str(reason)])

    def on_close(ws: KiteTicker, code: Any, reason: Any) -> None:
        out["closes"].append([code, str(reason)])
        if args.stop_on_close:
            ws.stop_retry()
            reactor.callLater(0.1, _stop)

    def on_order_update(ws: KiteTicker, data: dict[str, Any]) -> None:
        out["order_updates"].append(data)

    stopped = []

    def _stop() -> None:
        if not stopped:
            stopped.append(True)
            kws.close(1000, "probe done")  # clean close, no reconnect
            reactor.callLater(0.3, lambda: reactor.stop() if reactor.running else None)

    kws.on_connect = on_connect
    kws.on_ticks = on_ticks
    kws.on_message = on_message
    kws.on_error = on_error
    kws.on_close = on_close
    kws.on_order_update = on_order_update
    reactor.callLater(args.seconds, _stop)
    kws.connect()  # blocks in reactor.run() until _stop
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
