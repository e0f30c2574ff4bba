"""``${VAR:-default}`` and ``{placeholder}`` expansion for supervisor config values.

Pure functions, no I/O. Supported forms inside a string:

- ``${VAR}``: the value of ``VAR``; an error if it is unset.
- ``${VAR:-default}``: ``VAR`` if set and non-empty, else ``default`` (which may
  itself contain ``${...}``, e.g. ``${DSN:-postgresql://h:${PG_PORT:-15432}/db}``).
- ``$$``: a literal ``$``.
- ``{name}`` for the names in ``placeholders`` (``{python}``, ``{root}``, ...).
  Any other ``{...}`` text is left untouched, so ``python -c "d = {}"`` is safe.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


class InterpolationError(ValueError):
    """A ``${...}`` expression that cannot be expanded (message says why)."""


def _find_close(text: str, start: int) -> int:
    """Index of the ``}`` closing a ``${`` whose body starts at ``start`` (nesting aware)."""
    depth = 1
    i = start
    while i < len(text):
        if text.startswith("${", i):
            depth += 1
            i += 2
            continue
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise InterpolationError(f"unterminated '${{' in {text!r}")


def expand_env(text: str, env: Mapping[str, str]) -> str:
    """Expand ``${VAR}``, ``${VAR:-default}`` and ``$$`` in ``text`` using ``env``."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
            continue
        if not text.startswith("${", i):
            out.append(text[i])
            i += 1
            continue
        end = _find_close(text, i + 2)
        body = text[i + 2:end]
        m = _NAME.match(body)
        if not m:
            raise InterpolationError(f"bad reference '${{{body}}}'")
        name, rest = m.group(0), body[m.end():]
        value = env.get(name)
        if rest == "":
            if value is None:
                raise InterpolationError(f"environment variable {name} is not set (use ${{{name}:-default}})")
            out.append(value)
        elif rest.startswith(":-"):
            out.append(value if value else expand_env(rest[2:], env))
        else:
            raise InterpolationError(f"bad reference '${{{body}}}' (use ${{VAR}} or ${{VAR:-default}})")
        i = end + 1
    return "".join(out)


def expand_placeholders(text: str, placeholders: Mapping[str, str]) -> str:
    """Replace ``{name}`` for known ``placeholders``; unknown ``{...}`` stays as written."""

    def sub(m: re.Match[str]) -> str:
        return placeholders.get(m.group(1), m.group(0))

    return _PLACEHOLDER.sub(sub, text)


def expand_tree(value: Any, env: Mapping[str, str], placeholders: Mapping[str, str],
                path: str = "") -> Any:
    """Expand every string leaf of a YAML tree; errors carry the dotted key path.

    Raises ``InterpolationError`` whose message starts with ``key.path: ``.
    Mapping keys are not expanded.
    """
    if isinstance(value, str):
        try:
            return expand_placeholders(expand_env(value, env), placeholders)
        except InterpolationError as exc:
            raise InterpolationError(f"{path or '<root>'}: {exc}") from None
    if isinstance(value, dict):
        return {k: expand_tree(v, env, placeholders, f"{path}.{k}" if path else str(k))
                for k, v in value.items()}
    if isinstance(value, list):
        return [expand_tree(v, env, placeholders, f"{path}.{i}" if path else str(i))
                for i, v in enumerate(value)]
    return value
