"""core: settings precedence, one-line config errors, metrics + health endpoint, backoff, codec."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from pydantic import Field

from core import codec, settings as settings_mod
from core.config import StrictModel, load_config
from core.errors import ConfigError, PoisonMessage
from core.metrics import Metrics
from core.service import Backoff


class _Svc(StrictModel):
    cmd: str
    port: int = Field(ge=1)


class _File(StrictModel):
    services: dict[str, _Svc]


def test_unknown_key_is_one_line_naming_file_and_key(tmp_path):
    f = tmp_path / "conf.yaml"
    f.write_text("services:\n  kafka:\n    cmd: x\n    port: 1\n    restrat: always\n")
    with pytest.raises(ConfigError) as err:
        load_config(f, _File)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{f}: services.kafka.restrat: unknown key")


def test_bad_value_names_the_value(tmp_path):
    f = tmp_path / "conf.yaml"
    f.write_text("services:\n  kafka:\n    cmd: x\n    port: 0\n")
    with pytest.raises(ConfigError, match=r"services\.kafka\.port: .*greater than or equal to 1.*\(got 0\)"):
        load_config(f, _File)


def test_yaml_syntax_error_is_one_line(tmp_path):
    f = tmp_path / "conf.yaml"
    f.write_text("services: [unclosed\n")
    with pytest.raises(ConfigError) as err:
        load_config(f, _File)
    assert "syntax error" in str(err.value) and "\n" not in str(err.value)


def test_env_beats_dotenv_beats_env_docker_beats_legacy(tmp_path, monkeypatch):
    legacy, docker, dotenv = tmp_path / "legacy", tmp_path / "docker", tmp_path / "dotenv"
    legacy.write_text("TRADING_MODE=live\nKAFKA_BOOTSTRAP_SERVERS=legacy:1\nKAFKA_PARTITIONS=7\nLOG_LEVEL=DEBUG\n")
    docker.write_text("KAFKA_BOOTSTRAP_SERVERS=docker:2\nKAFKA_PARTITIONS=5\nLOG_LEVEL=WARNING\n")
    dotenv.write_text("KAFKA_PARTITIONS=4\nLOG_LEVEL=ERROR\n")
    monkeypatch.setattr(settings_mod, "ENV_FILES", (legacy, docker, dotenv))
    monkeypatch.setitem(settings_mod.Settings.model_config, "env_file", (legacy, docker, dotenv))
    for k in ("TRADING_MODE", "KAFKA_BOOTSTRAP_SERVERS", "KAFKA_PARTITIONS", "LOG_LEVEL"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("LOG_LEVEL", "CRITICAL")
    s = settings_mod.load_settings()
    assert s.trading_mode == "live"  # only in legacy
    assert s.kafka_bootstrap_servers == "docker:2"  # env.docker over legacy
    assert s.kafka_partitions == 4  # .env over env.docker
    assert s.log_level == "CRITICAL"  # process env over everything
    merged = settings_mod.env_file_values()
    assert merged["KAFKA_PARTITIONS"] == "4" and merged["TRADING_MODE"] == "live"


def test_bad_env_value_is_one_line_config_error(monkeypatch):
    monkeypatch.setenv("TRADING_MODE", "yolo")
    with pytest.raises(ConfigError, match="^environment: TRADING_MODE: "):
        settings_mod.load_settings()


def test_secrets_never_appear_in_repr(monkeypatch):
    monkeypatch.setenv("KITE_ACCESS_TOKEN", "very-secret-token")
    monkeypatch.setenv("POSTGRES_DSN", "postgresql://u:hunter2@h/db")
    s = settings_mod.load_settings()
    assert "very-secret-token" not in repr(s) and "hunter2" not in repr(s)
    assert s.dsn.endswith("@h/db")


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 - loopback test server
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_metrics_and_health_endpoint():
    m = Metrics("unit-svc")
    c = m.counter("messages_in_total", "in", ["topic"])
    c.labels("ticks").inc(3)
    state = {"ok": False}
    port = m.serve(0, lambda: (state["ok"], {"state": "running" if state["ok"] else "starting"}))
    try:
        code, body = _get(f"http://127.0.0.1:{port}/metrics")
        assert code == 200
        assert b'tradestack_unit_svc_messages_in_total{topic="ticks"} 3.0' in body
        code, body = _get(f"http://127.0.0.1:{port}/health")
        assert code == 503 and json.loads(body)["state"] == "starting"
        state["ok"] = True
        code, body = _get(f"http://127.0.0.1:{port}/health")
        assert code == 200 and json.loads(body) == {"service": "unit_svc", "state": "running"}
        assert _get(f"http://127.0.0.1:{port}/nope")[0] == 404
    finally:
        m.close()


def test_backoff_grows_caps_and_resets():
    b = Backoff(initial=0.5, cap=3.0)
    assert [b.next_delay() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    b.reset()
    assert b.next_delay() == 0.5


def test_codec_poison_on_bad_json():
    assert codec.loads(codec.dumps({"a": 1})) == {"a": 1}
    with pytest.raises(PoisonMessage):
        codec.loads(b"{nope")
    with pytest.raises(PoisonMessage):
        codec.loads(None)
