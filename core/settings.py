"""The one settings loader: environment, then ``.env``, ``infra/.env.docker``, legacy ``infra/.env``.

Precedence (highest first): process environment, ``.env``, ``infra/.env.docker``,
``infra/.env``. Secrets are ``SecretStr`` and never appear in logs or reprs.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from dotenv import dotenv_values
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# Later files win in pydantic-settings, so list lowest priority first.
ENV_FILES = (
    PROJECT_ROOT / "infra" / ".env",
    PROJECT_ROOT / "infra" / ".env.docker",
    PROJECT_ROOT / ".env",
)

DEFAULT_KAFKA = "127.0.0.1:19092"
DEFAULT_PG_PORT = 15432
DEFAULT_DSN = f"postgresql://tradestack@127.0.0.1:{DEFAULT_PG_PORT}/tradestack"
#: Values of ``KAFKA_COMPRESSION`` (librdkafka's ``compression.type``).
COMPRESSIONS = ("none", "gzip", "snappy", "lz4", "zstd")


class Settings(BaseSettings):
    """Wiring every service reads (DESIGN section 11)."""

    model_config = SettingsConfigDict(env_file=ENV_FILES, env_file_encoding="utf-8", extra="ignore",
                                      case_sensitive=False)

    kafka_bootstrap_servers: str = DEFAULT_KAFKA
    postgres_dsn: SecretStr = SecretStr(DEFAULT_DSN)
    trading_mode: Literal["paper", "dry", "live"] = "paper"
    metrics_port: int = Field(default=0, ge=0, le=65535)
    kite_api_key: SecretStr = SecretStr("sim")
    kite_access_token: SecretStr = SecretStr("sim-token")
    kite_root: str = "http://127.0.0.1:18080"
    kite_ws_root: str = "ws://127.0.0.1:18081"
    tradestack_config_dir: Path = PROJECT_ROOT / "configs"
    tradestack_var_dir: Path = PROJECT_ROOT / "var"
    live_trading_confirm: str = ""
    kafka_partitions: int = Field(default=3, ge=1, le=256)
    #: ``compression.type`` of every producer (core.bus.producer_config): the embedded broker keeps
    #: batches as produced, so lz4 cuts its memory ~6x (docs/BENCHMARKS.md).
    kafka_compression: str = "lz4"
    log_level: str = "INFO"

    @field_validator("kafka_compression")
    @classmethod
    def _known_compression(cls, value: str) -> str:
        value = value.strip().lower() or "lz4"
        if value not in COMPRESSIONS:
            raise ValueError(f"{value!r}: expected one of {', '.join(COMPRESSIONS)}")
        return value

    @property
    def dsn(self) -> str:
        """The Postgres DSN in clear text (pass to drivers only, never log it)."""
        return self.postgres_dsn.get_secret_value()

    @property
    def config_dir(self) -> Path:
        p = self.tradestack_config_dir
        return p if p.is_absolute() else PROJECT_ROOT / p

    @property
    def var_dir(self) -> Path:
        p = self.tradestack_var_dir
        return p if p.is_absolute() else PROJECT_ROOT / p


def load_settings(**overrides: object) -> Settings:
    """Build settings from env and env files; a bad value is a one-line ConfigError."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"]).upper()
        raise ConfigError(f"environment: {key}: {first['msg']}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings (cached)."""
    return load_settings()


def env_file_values() -> dict[str, str]:
    """Merged key/values of the env files in precedence order (for the supervisor's children).

    Parsed by python-dotenv exactly as pydantic-settings parses them for :class:`Settings`
    (``# comments`` stripped, quotes and escapes, ``${VAR}`` expanded against the process
    environment and the file's earlier keys), so a child sees the values the supervisor
    validated. A bare ``KEY`` line (no ``=``) sets nothing.
    """
    merged: dict[str, str] = {}
    for f in ENV_FILES:
        if f.is_file():
            values = dotenv_values(f, encoding="utf-8", interpolate=True)
            merged.update({k: v for k, v in values.items() if v is not None})
    return merged


def child_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """os.environ over the env files, plus ``extra`` on top: the env a supervised child gets."""
    env = env_file_values()
    env.update(os.environ)
    if extra:
        env.update(extra)
    return env
