"""Config files (YAML/JSON/CSV) validated by pydantic models, unknown keys forbidden.

A bad file raises :class:`ConfigError` whose message is one line naming the
file, the key and the problem, e.g.::

    configs/process_supervisor.yaml: services.kafka.restrat: extra inputs are not permitted
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from core.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for every config model: frozen, unknown keys forbidden."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def format_validation_error(path: str | Path, err: ValidationError) -> str:
    """One line: ``file: key.path: problem`` (first error, plus a count of the rest)."""
    errors = err.errors()
    first = errors[0]
    loc = ".".join(str(p) for p in first["loc"]) or "<root>"
    msg = first["msg"]
    if first.get("type") == "extra_forbidden":
        msg = "unknown key"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    value = first.get("input")
    shown = ""
    if first.get("type") != "extra_forbidden" and not isinstance(value, dict | list):
        shown = f" (got {value!r})"
    return f"{path}: {loc}: {msg}{shown}{more}"


def read_structured(path: str | Path) -> Any:
    """Read a YAML or JSON file; a syntax error becomes a one-line ConfigError."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: file not found")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        first = str(exc).strip().splitlines()
        raise ConfigError(f"{p}: syntax error: {' '.join(s.strip() for s in first[:3])}") from None


def load_config(path: str | Path, model: type[M]) -> M:
    """Load a YAML/JSON config file into ``model`` or raise a one-line ConfigError."""
    data = read_structured(path)
    if data is None:
        data = {}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(path, exc)) from None


def load_csv_rows(path: str | Path, model: type[M]) -> list[M]:
    """Load a CSV file with a header row into a list of ``model`` rows (line numbers in errors)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: file not found")
    rows: list[M] = []
    with p.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        for lineno, raw in enumerate(reader, start=2):
            try:
                rows.append(model.model_validate(raw))
            except ValidationError as exc:
                raise ConfigError(format_validation_error(f"{p}:{lineno}", exc)) from None
    return rows
