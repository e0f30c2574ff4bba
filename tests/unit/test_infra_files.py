"""Infra files without a Docker engine: compose schema, paths, env names, scrape config."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import yaml

from core.config import load_config
from core.docker_env import DockerStack, render_env

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
COMPOSE = INFRA / "docker-compose.yml"
# The Compose Specification schema, vendored from the docker-compose 1.29.2 wheel (Apache-2.0).
SPEC = ROOT / "tests" / "data" / "compose_spec.json"


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_file_validates_against_compose_spec():
    schema = json.loads(SPEC.read_text())
    # The vendored spec predates the top-level `name:`; allow it, as current Compose does.
    schema["properties"]["name"] = {"type": "string"}
    jsonschema.Draft201909Validator(schema).validate(_compose())


def test_compose_runs_kafka_kraft_postgres_prometheus_grafana():
    services = _compose()["services"]
    assert set(services) >= {"kafka", "postgres", "prometheus", "grafana"}
    assert "broker,controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]
    mounts = services["postgres"]["volumes"]
    assert any(m.startswith("./postgres/init:/docker-entrypoint-initdb.d") for m in mounts)


def test_every_path_the_compose_file_mounts_exists():
    for svc in _compose()["services"].values():
        for vol in svc.get("volumes", []):
            src = vol.split(":", 1)[0]
            if src.startswith("./"):
                assert (INFRA / src).exists(), f"compose mounts missing path {src}"


def test_every_env_name_the_compose_file_uses_is_generated_by_docker_env():
    stack = load_config(ROOT / "configs" / "docker_stack.json", DockerStack)
    generated = {line.split("=", 1)[0] for line in render_env(stack).splitlines() if "=" in line}
    used = set(re.findall(r"\$\{([A-Z0-9_]+)(?::-[^}]*)?\}", COMPOSE.read_text()))
    assert used, "expected ${VAR} references"
    missing = used - generated
    assert not missing, f"compose uses env names docker-env does not generate: {sorted(missing)}"


def test_grafana_datasource_and_prometheus_config_are_valid_yaml_with_targets():
    ds = yaml.safe_load((INFRA / "grafana/provisioning/datasources/datasource.yml").read_text())
    assert ds["datasources"][0]["type"] == "prometheus"
    prom = yaml.safe_load((INFRA / "prometheus/prometheus.yml").read_text())
    targets = [t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert all(re.fullmatch(r"127\.0\.0\.1:\d+", t) for t in targets)


def test_docker_env_writes_file_and_rejects_unknown_key(tmp_path):
    from core.docker_env import main

    target = tmp_path / ".env.docker"
    assert main(["--target", str(target)]) == 0
    text = target.read_text()
    assert "POSTGRES_USER=tradestack" in text and "KAFKA_PORT=9092" in text
    bad = tmp_path / "stack.json"
    data = json.loads((ROOT / "configs/docker_stack.json").read_text())
    data["kafka"]["prot"] = 1
    bad.write_text(json.dumps(data))
    assert main(["--source", str(bad), "--target", str(target)]) == 2


def test_prometheus_config_passes_promtool():
    import shutil
    import subprocess

    import pytest

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package 'prometheus'); YAML shape is checked above")
    r = subprocess.run([promtool, "check", "config", str(INFRA / "prometheus/prometheus.yml")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
