"""Helpers every command-line tool shares: exit codes for expected errors, argparse types, env defaults.

Expected conditions reach the operator as one line, never a traceback:
``ConfigError`` exits 2, ``FatalError`` 3, ``TransientError`` or a database
error 1 (retry later).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from datetime import date

import psycopg

from core.errors import EXIT_CONFIG, EXIT_FATAL, EXIT_UNEXPECTED, ConfigError, FatalError, TransientError


def run_cli(body: Callable[[], int]) -> int:
    """Run a CLI body and map the project's expected errors to one line and an exit code."""
    try:
        return body()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except FatalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FATAL
    except (TransientError, psycopg.Error) as exc:
        text = str(exc).strip()
        print(f"error: {text.splitlines()[0] if text else type(exc).__name__}", file=sys.stderr)
        return EXIT_UNEXPECTED


def positive(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    """An argparse ``type=`` accepting numbers > 0 of ``kind`` (usage error otherwise: exit 2)."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def non_negative(text: str) -> int:
    """An argparse ``type=`` for whole numbers >= 0 (usage error otherwise: exit 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def iso_date(text: str) -> date:
    """An argparse ``type=`` for a YYYY-MM-DD date (usage error otherwise: exit 2)."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def env_int(name: str, default: int) -> int:
    """An integer from the environment (for supervisor-set defaults of CLI flags); bad value: exit 2."""
    value = env_or_none(name)
    return default if value is None else value


def env_or_none(name: str) -> int | None:
    """An optional integer from the environment; a bad value is a one-line usage error (exit 2)."""
    raw = os.environ.get(name)
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        print(f"error: environment: {name}: not an integer (got {raw!r})", file=sys.stderr)
        raise SystemExit(2) from None
