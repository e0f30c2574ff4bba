"""Kite API errors as the simulator reports them: an ``error_type`` and an HTTP status.

The official client raises the exception class named by ``error_type`` with
``code`` set to the HTTP status, so every error response must carry both.
"""

from __future__ import annotations

INCORRECT_TOKEN = "Incorrect `api_key` or `access_token`."  # noqa: S105 - an error message, not a secret
#: 403 PermissionException for order requests while the ``ip_not_registered`` fault is on.
IP_NOT_REGISTERED = ("Order request from an IP that is not registered for this app. Register your static IP "
                     "in the Kite Connect developer console (Profile > IP Whitelist) to place orders via the API.")
#: 400 InputException sent by the ``order_reply: http_400_timeout`` fault for an order that WAS placed.
ORDER_REQUEST_TIMED_OUT = "Order request timed out. Please check the order book before placing the order again."


class KiteError(Exception):
    """An error response: ``{"status":"error","message":..,"error_type":..}`` with ``http_status``."""

    error_type = "GeneralException"
    http_status = 500

    def __init__(self, message: str, http_status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if http_status is not None:
            self.http_status = http_status

    def envelope(self) -> dict[str, object]:
        """The JSON body of the error response."""
        return {"status": "error", "message": self.message, "data": None, "error_type": self.error_type}


class InputError(KiteError):
    """Missing or invalid parameters (400 InputException)."""

    error_type = "InputException"
    http_status = 400


class TokenError(KiteError):
    """Bad, missing or expired credentials (403 TokenException)."""

    error_type = "TokenException"
    http_status = 403


class PermissionDeniedError(KiteError):
    """The app may not make this call, e.g. an order from an unregistered IP (403 PermissionException)."""

    error_type = "PermissionException"
    http_status = 403


class OrderError(KiteError):
    """Order placement or manipulation failure (500 OrderException)."""

    error_type = "OrderException"
    http_status = 500


class NetworkError(KiteError):
    """Rate limited (429) or OMS unreachable (503): NetworkException."""

    error_type = "NetworkException"
    http_status = 503


class DataError(KiteError):
    """Bad response from the OMS (502 DataException)."""

    error_type = "DataException"
    http_status = 502


class NotFoundError(KiteError):
    """Unknown route or resource (404 GeneralException)."""

    error_type = "GeneralException"
    http_status = 404


def error_for_status(status: int, message: str | None = None) -> KiteError:
    """The error a failing upstream would produce for an HTTP status (used by fault injection)."""
    if status == 429:
        return NetworkError(message or "Too many requests", 429)
    if status == 502:
        return DataError(message or "Couldn't parse the JSON response received from the OMS", 502)
    if status in (503, 504):
        default = "Gateway timed out" if status == 504 else "Service unavailable"
        return NetworkError(message or default, status)
    return KiteError(message or "Internal server error", status)
