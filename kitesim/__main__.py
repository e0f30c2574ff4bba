"""``python -m kitesim``: run the Kite Connect simulator (WebSocket ticker + REST API).

Example::

    python -m kitesim --ws-port 18081 --http-port 18080 --seed 7

Bad arguments or config exit 2 with one line; SIGTERM/SIGINT stop it cleanly
(exit 0). Once both servers listen, one JSON line is printed on stdout:
``{"event": "ready", "http_port": ..., "ws_port": ...}`` (handy with port 0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from pathlib import Path
from typing import NoReturn

from core.cli import positive
from core.errors import EXIT_CONFIG, EXIT_OK, ConfigError
from core.logs import setup_logging
from kitesim.clock import parse_ist
from kitesim.server import DEFAULT_TOKENS, SimConfig, Simulator


class _OneLineParser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and exits 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        raise SystemExit(EXIT_CONFIG)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 0-65535: {value}")
    return value


def _start(text: str) -> float:
    try:
        return parse_ist(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """The CLI definition."""
    p = _OneLineParser(prog="kitesim",
                       description="Local Kite Connect v3 simulator (WebSocket ticker + REST).")
    p.add_argument("--ws-port", type=_port, required=True, help="WebSocket ticker port (0: any free port)")
    p.add_argument("--http-port", type=_port, required=True, help="REST API port (0: any free port)")
    p.add_argument("--seed", type=int, required=True, help="random seed: same seed, same market")
    p.add_argument("--tokens", type=Path, default=DEFAULT_TOKENS, help="instrument universe CSV")
    p.add_argument("--replay", type=Path, default=None, help="replay recorded ticks (.csv or .parquet)")
    p.add_argument("--speed", type=positive(float), default=1.0, help="simulated seconds per wall second")
    p.add_argument("--start", type=_start, default=None,
                   help="simulated start, IST (YYYY-MM-DD[ HH:MM:SS]); default: now or the replay's start")
    p.add_argument("--market-hours", action="store_true",
                   help="tick only in the 09:15-15:30 IST weekday session (default: around the clock)")
    p.add_argument("--api-key", default="sim", help="accepted api_key")
    p.add_argument("--access-token", default="sim-token", help="accepted access_token")
    p.add_argument("--api-secret", default="sim-secret", help="api_secret for the generate_session checksum")
    p.add_argument("--token-expires-after", type=positive(float), default=None, metavar="SECONDS",
                   help="access tokens stop working this many seconds after issue")
    p.add_argument("--max-ws-connections", type=int, default=3, help="WebSocket connections per api_key")
    p.add_argument("--cash", type=positive(float), default=10_000_000.0,
                   help="opening cash of the simulated account")
    p.add_argument("--no-rate-limits", action="store_true", help="do not enforce Kite's rate limits (429)")
    p.add_argument("--host", default="127.0.0.1", help="listen address")
    return p


def config_from_args(argv: list[str] | None = None) -> SimConfig:
    """Parse and check arguments into a SimConfig (usage errors exit 2)."""
    parser = build_parser()
    a = parser.parse_args(argv)
    if a.ws_port and a.ws_port == a.http_port:
        parser.error("--ws-port and --http-port must differ")
    if not a.tokens.is_file():
        parser.error(f"--tokens: file not found: {a.tokens}")
    if a.replay is not None and not a.replay.is_file():
        parser.error(f"--replay: file not found: {a.replay}")
    if a.max_ws_connections < 1:
        parser.error("--max-ws-connections must be >= 1")
    return SimConfig(ws_port=a.ws_port, http_port=a.http_port, seed=a.seed, tokens=a.tokens, replay=a.replay,
                     speed=a.speed, start=a.start, market_hours=a.market_hours, api_key=a.api_key,
                     access_token=a.access_token, api_secret=a.api_secret,
                     token_expires_after=a.token_expires_after, max_ws_connections=a.max_ws_connections,
                     cash=a.cash, host=a.host, rate_limits=not a.no_rate_limits)


async def _run(sim: Simulator) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def announce() -> None:
        while not sim.ready.is_set():
            await asyncio.sleep(0.02)
        print(json.dumps({"event": "ready", "http_port": sim.http_port, "ws_port": sim.ws_port}), flush=True)

    task = asyncio.create_task(announce())
    try:
        await sim.serve(stop)
    finally:
        task.cancel()


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    config = config_from_args(argv)
    setup_logging("kitesim")
    logging.getLogger("websockets").setLevel(logging.WARNING)
    try:
        sim = Simulator(config)
        asyncio.run(_run(sim))
    except ConfigError as exc:
        sys.stderr.write(f"kitesim: {exc}\n")
        return EXIT_CONFIG
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
