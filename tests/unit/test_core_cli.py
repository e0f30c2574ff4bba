"""core.cli: integer defaults from the environment (``env_int``, ``env_or_none``)."""

from __future__ import annotations

import pytest

from core.cli import env_int, env_or_none


def test_env_int_default_value_and_empty(monkeypatch):
    monkeypatch.delenv("TS_TEST_N", raising=False)
    assert env_int("TS_TEST_N", 7) == 7 and env_or_none("TS_TEST_N") is None
    monkeypatch.setenv("TS_TEST_N", "")
    assert env_int("TS_TEST_N", 7) == 7
    monkeypatch.setenv("TS_TEST_N", "-3")
    assert env_int("TS_TEST_N", 7) == -3 and env_or_none("TS_TEST_N") == -3


def test_env_int_bad_value_is_one_line_exit_2(monkeypatch, capsys):
    monkeypatch.setenv("TS_TEST_N", "12ms")
    with pytest.raises(SystemExit) as exc:
        env_int("TS_TEST_N", 7)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err == "error: environment: TS_TEST_N: not an integer (got '12ms')\n"
