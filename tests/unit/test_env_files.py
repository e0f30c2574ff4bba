"""core.settings: the env files a supervised child gets are parsed like the settings the supervisor validated.

Precedence (README, DESIGN section 3): process environment > ``.env`` > ``infra/.env.docker`` > ``infra/.env``.
"""

from __future__ import annotations

import pytest

from core import settings as settings_mod


@pytest.fixture
def env_files(tmp_path, monkeypatch):
    """Point the loader at three temp env files (legacy, docker, dotenv; lowest priority first)."""
    files = (tmp_path / "legacy.env", tmp_path / "docker.env", tmp_path / "dot.env")
    for f in files:
        f.write_text("")
    monkeypatch.setattr(settings_mod, "ENV_FILES", files)
    monkeypatch.setitem(settings_mod.Settings.model_config, "env_file", files)
    for k in ("TRADING_MODE", "KAFKA_BOOTSTRAP_SERVERS", "KAFKA_PARTITIONS", "LOG_LEVEL", "KITE_ROOT",
              "TS_TEST_HOST", "TS_TEST_PORT"):
        monkeypatch.delenv(k, raising=False)
    return files


def test_inline_comment_is_not_part_of_the_value(env_files):
    env_files[2].write_text("LOG_LEVEL=WARNING # the noisy one\n# a whole-line comment\nKAFKA_PARTITIONS=6\t# tab\n")
    merged = settings_mod.env_file_values()
    assert merged["LOG_LEVEL"] == "WARNING"
    assert merged["KAFKA_PARTITIONS"] == "6"
    s = settings_mod.load_settings()
    assert (s.log_level, s.kafka_partitions) == ("WARNING", 6)


def test_quotes_are_stripped_and_a_hash_inside_quotes_is_kept(env_files):
    env_files[2].write_text("KITE_ROOT='http://h:1/#frag' # comment\nLOG_LEVEL=\"INFO\"\nexport TRADING_MODE=dry\n")
    merged = settings_mod.env_file_values()
    assert merged["KITE_ROOT"] == "http://h:1/#frag"
    assert merged["LOG_LEVEL"] == "INFO"
    assert merged["TRADING_MODE"] == "dry"
    assert settings_mod.load_settings().kite_root == "http://h:1/#frag"


def test_dollar_brace_variables_expand_from_the_environment_and_earlier_keys(env_files, monkeypatch):
    monkeypatch.setenv("TS_TEST_HOST", "broker.internal")
    env_files[2].write_text("TS_TEST_PORT=9093\nKAFKA_BOOTSTRAP_SERVERS=${TS_TEST_HOST}:${TS_TEST_PORT}\n"
                            "KITE_ROOT=http://${TS_TEST_MISSING:-fallback}:1\n")
    merged = settings_mod.env_file_values()
    assert merged["KAFKA_BOOTSTRAP_SERVERS"] == "broker.internal:9093"
    assert merged["KITE_ROOT"] == "http://fallback:1"
    s = settings_mod.load_settings()
    assert (s.kafka_bootstrap_servers, s.kite_root) == (merged["KAFKA_BOOTSTRAP_SERVERS"], merged["KITE_ROOT"])


def test_child_environment_precedence_matches_settings(env_files, monkeypatch):
    legacy, docker, dotenv = env_files
    legacy.write_text("TRADING_MODE=live\nKAFKA_BOOTSTRAP_SERVERS=legacy:1\nKAFKA_PARTITIONS=7\nLOG_LEVEL=DEBUG\n")
    docker.write_text("KAFKA_BOOTSTRAP_SERVERS=docker:2 # generated\nKAFKA_PARTITIONS=5\nLOG_LEVEL=WARNING\n")
    dotenv.write_text("KAFKA_PARTITIONS=4\nLOG_LEVEL=ERROR\nBARE_KEY_WITHOUT_VALUE\n")
    monkeypatch.setenv("LOG_LEVEL", "CRITICAL")
    child = settings_mod.child_environment({"KITE_ROOT": "http://extra"})
    s = settings_mod.load_settings()
    assert (child["TRADING_MODE"], s.trading_mode) == ("live", "live")  # only in legacy
    assert (child["KAFKA_BOOTSTRAP_SERVERS"], s.kafka_bootstrap_servers) == ("docker:2", "docker:2")
    assert (child["KAFKA_PARTITIONS"], s.kafka_partitions) == ("4", 4)  # .env over env.docker
    assert (child["LOG_LEVEL"], s.log_level) == ("CRITICAL", "CRITICAL")  # process env over every file
    assert child["KITE_ROOT"] == "http://extra"  # extra over everything
    assert "BARE_KEY_WITHOUT_VALUE" not in child
