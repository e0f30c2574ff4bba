"""core.sessions: the exchange calendar from configs/sessions.yaml (holidays package + overrides)."""

from __future__ import annotations

import subprocess
import sys
from datetime import date, datetime
from pathlib import Path

import pytest

from core.clock import IST
from core.errors import ConfigError
from core.sessions import load_calendar, parse_calendar

ROOT = Path(__file__).resolve().parents[2]


def ms(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> int:
    return int(datetime(y, mo, d, h, mi, tzinfo=IST).timestamp() * 1000)


@pytest.fixture(scope="module")
def cal():
    return load_calendar(ROOT / "configs" / "sessions.yaml")


def test_regular_weekday_when_asked_then_nse_session_with_pre_open(cal):
    s = cal.session("NSE", date(2026, 11, 20))
    assert (s.pre_open_ms, s.open_ms, s.close_ms) == (ms(2026, 11, 20, 9), ms(2026, 11, 20, 9, 15),
                                                      ms(2026, 11, 20, 15, 30))
    assert s.open_at.strftime("%H:%M") == "09:15" and s.name == "regular"
    assert cal.is_open("NSE", ms(2026, 11, 20, 15, 29)) and not cal.is_open("NSE", ms(2026, 11, 20, 15, 30))
    assert not cal.is_open("NSE", ms(2026, 11, 20, 9, 14))


def test_known_nse_holiday_when_asked_then_closed_for_nse_and_its_derivatives(cal):
    diwali = date(2026, 11, 10)  # Diwali Balipratipada, a Tuesday
    assert cal.is_holiday("NSE", diwali)
    assert cal.session("NSE", diwali) is None and not cal.is_trading_day("NFO", diwali)
    assert not cal.is_open("NSE", ms(2026, 11, 10, 11))
    assert cal.next_open("NSE", ms(2026, 11, 10, 11)) == ms(2026, 11, 11, 9, 15)
    assert not cal.is_trading_day("NSE", date(2026, 1, 26))  # Republic Day
    assert cal.is_trading_day("MCX", diwali)  # MCX does not share NSE's list


def test_weekend_when_asked_then_closed_and_next_open_is_monday(cal):
    assert not cal.is_trading_day("NSE", date(2026, 11, 21))
    assert cal.next_open("NSE", ms(2026, 11, 20, 16)) == ms(2026, 11, 23, 9, 15)
    assert cal.previous_trading_day("NSE", date(2026, 11, 23)) == date(2026, 11, 20)


def test_muhurat_session_on_a_holiday_when_asked_then_its_own_evening_hours(cal):
    day = date(2024, 11, 1)  # Diwali Laxmi Pujan: a holiday with the Muhurat session
    assert cal.is_holiday("NSE", day)
    s = cal.session("NSE", day)
    assert s.name == "Muhurat trading" and (s.open_ms, s.close_ms) == (ms(2024, 11, 1, 18), ms(2024, 11, 1, 19))
    assert cal.is_open("NFO", ms(2024, 11, 1, 18, 30)) and not cal.is_open("NSE", ms(2024, 11, 1, 10))
    assert cal.next_open("NSE", ms(2024, 11, 1, 10)) == ms(2024, 11, 1, 18)


def test_saturday_special_session_when_asked_then_trading_day(cal):
    assert cal.is_trading_day("NSE", date(2025, 2, 1))


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "sessions.yaml"
    p.write_text(text)
    return p


def test_overrides_when_added_and_removed_then_applied_over_the_source(tmp_path):
    p = _write(tmp_path, """
exchanges:
  NSE: {open: "09:15", close: "15:30", holidays_from: XNSE,
        add_holidays: [2026-12-02], remove_holidays: [2026-12-25]}
""")
    cal = parse_calendar(p)
    assert not cal.is_trading_day("NSE", date(2026, 12, 2))
    assert cal.is_trading_day("NSE", date(2026, 12, 25))
    assert not cal.is_trading_day("NSE", date(2026, 11, 10))  # the package's list still applies


@pytest.mark.parametrize(("text", "needle"), [
    ('exchanges:\n  NSE: {open: "09:15", close: "15:30", opn: "09:00"}\n', "exchanges.NSE.opn: unknown key"),
    ('exchanges:\n  NSE: {open: "9:15", close: "15:30"}\n', "exchanges.NSE.open"),
    ('exchanges:\n  NSE: {open: "15:30", close: "09:15"}\n', "must be before close"),
    ('exchanges:\n  NSE: {open: "09:15", close: "15:30", holidays_from: XXXX}\n',
     "exchanges.NSE.holidays_from: holidays package has no financial calendar 'XXXX'"),
    ('exchanges:\n  NFO: {open: "09:15", close: "15:30", holidays_of: NSE}\n', "unknown exchange 'NSE'"),
])
def test_bad_file_when_loaded_then_one_line_naming_file_and_key(tmp_path, text, needle):
    p = _write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        parse_calendar(p)
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(str(p)) and needle in msg


def test_unknown_exchange_when_asked_then_config_error(cal):
    with pytest.raises(ConfigError, match="no exchange 'NASDAQ'"):
        cal.session("NASDAQ", date(2026, 11, 20))


def test_check_config_when_sessions_yaml_is_bad_then_one_line_and_exit_2(tmp_path):
    cfg = tmp_path / "configs"
    cfg.mkdir()
    for name in ("tokens.csv", "docker_stack.json", "process_supervisor.yaml"):
        (cfg / name).write_bytes((ROOT / "configs" / name).read_bytes())
    (cfg / "sessions.yaml").write_text('exchanges:\n  NSE: {open: "09:15", close: "25:00"}\n')
    r = subprocess.run([sys.executable, "-m", "core.check_config", "--config-dir", str(cfg)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if "sessions.yaml" in ln]
    assert len(lines) == 1 and "exchanges.NSE.close" in lines[0] and "25:00" in lines[0]
