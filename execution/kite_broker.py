"""Kite order calls through the real ``kiteconnect`` client, and what each failure means for us.

The rule this module serves: a real order is placed at most once, and Kite has no idempotency key.
So every reply is classified (:func:`classify`):

- ``placed`` - a broker order id came back;
- ``rejected`` - the broker refused the request itself (InputException, OrderException and the
  like, other than a timeout): the order is not placed and will not be, the message says why;
- ``ambiguous`` - it may or may not have been placed: a read timeout or a broken connection after
  the request was sent, a 5xx, a ``NetworkException`` (a 429 is one too: Kite says it was not
  placed, but the lookup costs little and the rule stays simple), or HTTP 400 "Order request timed
  out" (seen placed seconds later). The order is looked up by its ``tag`` before anything else;
- ``not_sent`` - the connection was refused or could not be opened: nothing reached the broker;
- ``token`` - the access token is invalid or expired (403 TokenException): halt until renewed;
- ``ip_blocked`` - order requests from this IP are refused (not registered with Zerodha): halt.

``tag`` (at most 20 alphanumerics, Kite rejects longer) is derived from our order_id, so the broker's
order book tells which of its orders is which of ours (:func:`tag_for`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

#: A PermissionException about the IP (Kite's wording is not documented: match the meaning).
_IP_WORDS = re.compile(r"\bIP\b", re.I)
_TIMED_OUT = re.compile(r"timed?\s*out", re.I)

#: kiteconnect exception class name -> outcome (anything unlisted is ambiguous: look it up first).
_BY_TYPE = {"InputException": "rejected", "OrderException": "rejected", "MarginException": "rejected",
            "HoldingException": "rejected", "UserException": "rejected", "TokenException": "token",
            "NetworkException": "ambiguous", "DataException": "ambiguous", "GeneralException": "ambiguous"}


@dataclass(frozen=True, slots=True)
class Reply:
    """What a broker call came to."""

    outcome: str  # placed | rejected | ambiguous | not_sent | token | ip_blocked | ok
    message: str = ""
    broker_order_id: str | None = None
    status: int | None = None


def tag_for(order_id: str) -> str:
    """Kite ``tag`` of our order: the order_id itself when it is <= 20 alphanumerics, else a digest."""
    if len(order_id) <= 20 and order_id.isalnum():
        return order_id
    return hashlib.blake2b(order_id.encode(), digest_size=10).hexdigest()


def classify(exc: BaseException) -> Reply:
    """The outcome of a failed call (see the module docstring)."""
    import requests

    name = type(exc).__name__
    code = getattr(exc, "code", None)
    msg = str(exc).splitlines()[0][:300] if str(exc) else name
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return Reply("not_sent", f"connect timeout: {msg}")
    if isinstance(exc, requests.exceptions.ConnectionError) and _refused(exc):
        return Reply("not_sent", f"connection refused: {msg}")
    if isinstance(exc, requests.exceptions.RequestException):
        return Reply("ambiguous", f"{name}: {msg}")  # sent, no (complete) answer
    if name == "PermissionException":
        return Reply("ip_blocked" if _IP_WORDS.search(msg) else "rejected", msg, status=code)
    outcome = _BY_TYPE.get(name, "ambiguous")
    if outcome == "rejected" and _TIMED_OUT.search(msg):
        outcome = "ambiguous"  # HTTP 400 "Order request timed out": it may well be placed
    return Reply(outcome, f"{name}: {msg}", status=code)


def _refused(exc: BaseException) -> bool:
    text = repr(exc)
    return "NewConnectionError" in text or "Connection refused" in text or "Name or service not known" in text


def place_params(order: dict[str, Any], tag: str, market_protection: float) -> dict[str, Any]:
    """``KiteConnect.place_order`` keyword arguments for one of our orders."""
    otype = order["order_type"]
    params: dict[str, Any] = {
        "variety": "regular", "exchange": order["exchange"], "tradingsymbol": order["symbol"],
        "transaction_type": order["side"], "quantity": int(order["qty"]), "product": order["product"],
        "order_type": otype, "validity": "DAY", "tag": tag}
    if otype in ("LIMIT", "SL"):
        params["price"] = order["price"]
    if otype in ("SL", "SL-M"):
        params["trigger_price"] = order["trigger_price"]
    if otype in ("MARKET", "SL-M"):
        # Since April 2026 Kite rejects these without it: -1 (automatic) or a percentage in (0, 100].
        params["market_protection"] = int(market_protection) if float(market_protection).is_integer() \
            else market_protection
    return params


class KiteOrders:
    """The calls the gateway and the poller make (one ``KiteConnect``, replaced when the token changes)."""

    def __init__(self, api_key: str, access_token: str, root: str, timeout_s: float) -> None:
        from kiteconnect import KiteConnect

        self.kite = KiteConnect(api_key, access_token=access_token, root=root, timeout=timeout_s)

    def set_token(self, token: str) -> None:
        self.kite.set_access_token(token)

    def place(self, params: dict[str, Any]) -> Reply:
        try:
            return Reply("placed", broker_order_id=str(self.kite.place_order(**params)))
        except Exception as exc:  # noqa: BLE001 - every failure is classified
            return classify(exc)

    def cancel(self, broker_order_id: str, variety: str = "regular") -> Reply:
        try:
            self.kite.cancel_order(variety, broker_order_id)
            return Reply("ok", broker_order_id=broker_order_id)
        except Exception as exc:  # noqa: BLE001
            return classify(exc)

    def orders(self) -> list[dict[str, Any]]:
        """Today's order book (raises the client's exception on failure)."""
        return list(self.kite.orders())

    def trades(self) -> list[dict[str, Any]]:
        return list(self.kite.trades())

    def history(self, broker_order_id: str) -> list[dict[str, Any]]:
        return list(self.kite.order_history(broker_order_id))


def latest_by_tag(book: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Broker orders grouped by tag (untagged ones under ""), oldest first."""
    out: dict[str, list[dict[str, Any]]] = {}
    for o in book:
        out.setdefault(o.get("tag") or "", []).append(o)
    for v in out.values():
        v.sort(key=lambda o: (str(o.get("order_timestamp") or ""), str(o.get("order_id"))))
    return out
