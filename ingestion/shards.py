"""Spread a universe over Kite WebSocket connections (pure).

Kite allows 3000 instruments per connection and 3 connections per api_key
(KITE_PROTOCOL.md). The universe is split over as few connections as needed,
balanced (4000 instruments -> 2000 + 2000, not 3000 + 1000) so no connection
carries more load than it must. More than ``per_connection * max_connections``
instruments is a configuration error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from core.errors import ConfigError

KITE_MAX_PER_CONNECTION = 3000
KITE_MAX_CONNECTIONS = 3


def shard_tokens(tokens: Sequence[int], per_connection: int = KITE_MAX_PER_CONNECTION,
                 max_connections: int = KITE_MAX_CONNECTIONS) -> list[list[int]]:
    """Split ``tokens`` (duplicates removed, order kept) into balanced shards of at most ``per_connection``.

    Raises :class:`ConfigError` for an empty universe or one larger than
    ``per_connection * max_connections``.
    """
    if per_connection < 1 or max_connections < 1:
        raise ConfigError("per_connection and max_connections must be >= 1")
    unique = list(dict.fromkeys(tokens))
    if not unique:
        raise ConfigError("universe is empty: nothing to subscribe")
    limit = per_connection * max_connections
    if len(unique) > limit:
        raise ConfigError(f"universe has {len(unique)} instruments; Kite allows at most {limit} "
                          f"({max_connections} connections x {per_connection}): trim tokens.csv")
    n_shards = math.ceil(len(unique) / per_connection)
    base, extra = divmod(len(unique), n_shards)
    shards: list[list[int]] = []
    start = 0
    for i in range(n_shards):
        size = base + (1 if i < extra else 0)
        shards.append(unique[start:start + size])
        start += size
    return shards
