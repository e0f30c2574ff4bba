"""Exception classes that decide what a service does (Freqtrade-style).

- ``ConfigError``: bad configuration or usage. One line, exit code 2, no restart loop.
- ``FatalError``: an operational stop the supervisor must not hot-loop on
  (expired token, live trading without confirmation). Exit code 3.
- ``TransientError``: retry with backoff (broker or database down).
- ``PoisonMessage``: an input that can never be processed; routed to the DLQ.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_CONFIG = 2
EXIT_FATAL = 3


class TradestackError(Exception):
    """Base class of every error the project raises on purpose."""


class ConfigError(TradestackError):
    """A configuration or usage error: reported as one line, exit code 2."""


class FatalError(TradestackError):
    """An operational condition that needs a human (exit code 3, not restarted)."""


class TransientError(TradestackError):
    """A condition expected to clear by itself (retry with backoff)."""


class PoisonMessage(TradestackError):
    """An input message that cannot be decoded or fails its schema."""


class Interrupted(TradestackError):
    """A stop request interrupted work in progress: exit cleanly without committing it."""
