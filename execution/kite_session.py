"""The Kite access token the broker-facing services use, renewable without a restart.

Kite's access token expires every day at 06:00 IST. The services start with ``KITE_ACCESS_TOKEN``
(environment or env file); a renewed token is written to ``<var>/secrets/kite_session.json`` (a
``0700`` directory, the file ``0600``, replaced atomically) and the running gateway and poller pick
it up at their next check (:class:`TokenSource`). Secrets never go to Postgres or a log line.

    python -m execution.kite_session set-token TOKEN|-       # a token you obtained yourself (-: from stdin)
    python -m execution.kite_session login --request-token RT  # exchange the login redirect's request
                                                               # token (needs KITE_API_SECRET)
    python -m execution.kite_session status                  # is one set, since when, until when
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from core.clock import IST
from core.settings import Settings, load_settings

FILE = "kite_session.json"


def session_path(settings: Settings) -> Path:
    return settings.var_dir / "secrets" / FILE


def next_expiry(now: datetime) -> datetime:
    """The next 06:00 IST after ``now`` (Kite's daily token expiry)."""
    local = now.astimezone(IST)
    at = local.replace(hour=6, minute=0, second=0, microsecond=0)
    if at <= local:
        at += timedelta(days=1)
    return at


def write_token(path: Path, token: str, source: str, now: datetime | None = None) -> dict[str, Any]:
    """Store ``token`` (atomically, owner-only); returns the record without the token."""
    if not token or not token.strip() or any(c.isspace() for c in token.strip()):
        raise ValueError("the access token must be one non-empty word")
    now = now or datetime.now(UTC)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    record = {"access_token": token.strip(), "source": source, "set_at": now.isoformat(),
              "expires_at": next_expiry(now).isoformat()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".kite_session.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(record, fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return {k: v for k, v in record.items() if k != "access_token"}


def read_token(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("access_token") else None


@dataclass
class TokenSource:
    """The token to use: the stored one when there is one, else ``KITE_ACCESS_TOKEN``.

    :meth:`current` re-reads the file when its modification time changed (a stat per call, so
    callers check it at most every few seconds), and ``version`` goes up with each new token.
    """

    path: Path
    fallback: str
    version: int = 0
    _token: str = ""
    _mtime: float = -1.0

    def current(self) -> str:
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            mtime = 0.0
        if mtime != self._mtime:
            self._mtime = mtime
            rec = read_token(self.path) if mtime else None
            token = rec["access_token"] if rec else self.fallback
            if token != self._token:
                self._token = token
                self.version += 1
        return self._token


def _describe(rec: dict[str, Any] | None) -> str:
    if rec is None:
        return "no stored token: the services use KITE_ACCESS_TOKEN from the environment"
    expires = datetime.fromisoformat(rec["expires_at"])
    state = "expired" if expires <= datetime.now(UTC) else "valid until"
    return f"token set {rec['set_at']} by {rec.get('source', '?')}; {state} {expires.isoformat()}"


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    ap = argparse.ArgumentParser(prog="python -m execution.kite_session", description=(__doc__ or "").splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    st = sub.add_parser("set-token", help="store an access token (the gateway and poller resume with it)")
    st.add_argument("token", help="the token, or - to read it from standard input (kept out of ps and history)")
    lg = sub.add_parser("login", help="exchange a request token for an access token (generate_session)")
    lg.add_argument("--request-token", required=True)
    sub.add_parser("status", help="whether a token is stored, since when, until when (never the token)")
    args = ap.parse_args(argv)
    settings = load_settings()
    path = session_path(settings)
    if args.cmd == "status":
        print(_describe(read_token(path)))
        return 0
    if args.cmd == "set-token":
        from_stdin = args.token == "-"  # noqa: S105 - the stdin marker, not a secret
        token = sys.stdin.readline().strip() if from_stdin else args.token
        try:
            rec = write_token(path, token, "set-token")
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"stored the access token in {path}; expires {rec['expires_at']}")
        return 0
    secret = os.environ.get("KITE_API_SECRET", "")
    if not secret:
        print("error: KITE_API_SECRET is not set (the app's secret, from the Kite developer console)", file=sys.stderr)
        return 2
    from kiteconnect import KiteConnect, exceptions as kex

    kite = KiteConnect(settings.kite_api_key.get_secret_value(), root=settings.kite_root, timeout=10)
    try:
        data = kite.generate_session(args.request_token, api_secret=secret)
    except kex.KiteException as exc:
        print(f"error: Kite refused the request token: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    rec = write_token(path, data["access_token"], "login")
    print(f"logged in as {data.get('user_id', '?')}; stored the access token in {path}; expires {rec['expires_at']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
