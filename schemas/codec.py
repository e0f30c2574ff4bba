"""Build and read bus messages with the contract models (services off the hot path: ``orders`` on).

``decode(Order, message.value())`` gives a validated model or raises
:class:`core.errors.PoisonMessage` with a one-line reason (for the DLQ);
``encode(order)`` gives the message bytes, refusing an instance that no longer
satisfies its model (e.g. one mutated after it was built). JSON is parsed by
orjson, the same parser as the hot-path decoders, so both see the same values.
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError

from core import codec
from core.errors import PoisonMessage

M = TypeVar("M", bound=BaseModel)


def schema_error(exc: ValidationError) -> str:
    """The first error of a validation failure as one line: ``schema: <field path>: <message>``."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "message"
    return f"schema: {where}: {first['msg']}"


def decode(model: type[M], data: bytes | str | None) -> M:
    """Parse and validate one message as ``model``; :class:`PoisonMessage` if undecodable or invalid."""
    obj = codec.loads(data)
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        raise PoisonMessage(schema_error(exc)) from None


def encode(message: BaseModel) -> bytes:
    """The UTF-8 JSON bytes of a contract model instance (extra fields kept); ``ValueError`` if it is invalid."""
    data = message.model_dump(mode="python")
    try:
        type(message).model_validate(data)
    except ValidationError as exc:
        raise ValueError(f"{type(message).__name__}: {schema_error(exc)}") from None
    return codec.dumps(data)
