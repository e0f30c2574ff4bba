"""configs/execution.yaml: defaults, Kite's bounds, one-line errors; the access-token store; live needs a yes."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.errors import ConfigError
from core.settings import load_settings
from execution.config import load_execution
from execution.kite_session import TokenSource, next_expiry, read_token, write_token
from execution.zerodha_gateway import check_mode

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_file_loads_with_kite_safe_defaults() -> None:
    cfg = load_execution(ROOT / "configs/execution.yaml")
    assert cfg.pacer.windows() == ((1.0, 8), (60.0, 390), (86_400.0, 5000))
    assert cfg.market_protection == -1 and not cfg.protective_stops.applies("anything")


@pytest.mark.parametrize(("text", "match"), [
    ("pacer: {per_second: 11}", "pacer.per_second: Input should be less than or equal to 10"),
    ("market_protection: 0", "market_protection must be -1 .automatic. or a percentage"),
    ("ambiguous: {first_lookup_s: 5, window_s: 1}", "window_s 1.0 is shorter than first_lookup_s"),
    ("pacing: {}", "pacing: unknown key"),
])
def test_bad_values_stop_with_one_line_naming_the_key(tmp_path: Path, text: str, match: str) -> None:
    f = tmp_path / "execution.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=match) as err:
        load_execution(f)
    assert "\n" not in str(err.value) and str(f) in str(err.value)


def test_protective_stops_match_names_and_patterns(tmp_path: Path) -> None:
    f = tmp_path / "execution.yaml"
    f.write_text("protective_stops: {strategies: [ma_crossover_*, breakout_5m]}")
    cfg = load_execution(f)
    assert cfg.protective_stops.applies("ma_crossover_1m") and cfg.protective_stops.applies("breakout_5m")
    assert not cfg.protective_stops.applies("breakout_1m")


def test_token_store_is_owner_only_and_atomic_and_the_source_follows_it(tmp_path: Path) -> None:
    path = tmp_path / "var" / "secrets" / "kite_session.json"
    src = TokenSource(path, "from-env")
    assert src.current() == "from-env" and src.version == 1
    rec = write_token(path, "tok-1", "set-token", now=datetime(2026, 11, 20, 1, 0, tzinfo=UTC))
    assert "access_token" not in rec and rec["expires_at"].startswith("2026-11-21T06:00:00+05:30")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    os.utime(path, (1, 1))  # a new mtime whatever the file system's resolution
    assert src.current() == "tok-1" and src.version == 2
    assert read_token(path)["source"] == "set-token"  # type: ignore[index]
    with pytest.raises(ValueError):
        write_token(path, "two words", "x")


def test_the_token_expires_at_the_next_0600_ist() -> None:
    assert next_expiry(datetime(2026, 11, 20, 0, 29, tzinfo=UTC)).isoformat() == "2026-11-20T06:00:00+05:30"  # 05:59
    assert next_expiry(datetime(2026, 11, 20, 0, 31, tzinfo=UTC)).isoformat() == "2026-11-21T06:00:00+05:30"  # 06:01


def test_live_mode_needs_an_explicit_yes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIVE_TRADING_CONFIRM", raising=False)
    with pytest.raises(ConfigError, match="LIVE_TRADING_CONFIRM=yes"):
        check_mode(load_settings(trading_mode="live"))
    monkeypatch.setenv("LIVE_TRADING_CONFIRM", "yes")
    check_mode(load_settings(trading_mode="live"))
    check_mode(load_settings(trading_mode="dry"))
    with pytest.raises(ConfigError, match="paper mode fills through"):
        check_mode(load_settings(trading_mode="paper"))
