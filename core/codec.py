"""JSON encoding for bus messages (orjson: UTF-8 bytes, fast)."""

from __future__ import annotations

from typing import Any

import orjson

from core.errors import PoisonMessage


def dumps(obj: Any) -> bytes:
    """Encode a message as compact UTF-8 JSON bytes."""
    return orjson.dumps(obj)


def loads(data: bytes | str | None) -> Any:
    """Decode JSON bytes; undecodable input raises :class:`PoisonMessage`."""
    if data is None:
        raise PoisonMessage("empty message value")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise PoisonMessage(f"invalid JSON: {exc}") from None


def key_bytes(key: object) -> bytes | None:
    """Message keys are the natural key rendered as UTF-8 text."""
    if key is None:
        return None
    if isinstance(key, bytes):
        return key
    return str(key).encode()
