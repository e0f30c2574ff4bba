"""strategy/registry.yaml: validated against the strategy classes and the universe, one line per problem."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import ConfigError
from core.settings import PROJECT_ROOT
from core.universe import load_universe
from strategy.indicators.config import load_indicator_config
from strategy.registry import RegistryFile, build_registry, load_registry

UNIVERSE = load_universe(PROJECT_ROOT / "configs" / "tokens.csv")
INDICATORS = load_indicator_config(PROJECT_ROOT / "configs" / "indicators.yaml")


def build(tmp_path: Path, text: str, ensembles: str | None = None):  # type: ignore[no-untyped-def]
    import yaml

    reg = tmp_path / "registry.yaml"
    reg.write_text(text)
    ens = None
    if ensembles is not None:
        ens = tmp_path / "ensemble.yaml"
        ens.write_text(ensembles)
    return build_registry(reg, RegistryFile.model_validate(yaml.safe_load(text)), UNIVERSE, ens, INDICATORS)


ENTRY = "strategies:\n  - {id: a, strategy: ma_crossover, timeframes: [%s], instruments: %s, params: %s}\n"


def test_shipped_registry_and_ensembles_load():
    reg = load_registry()
    assert {s.label for s in reg.specs} >= {"ma_crossover_1m", "orb_5m"}
    assert [e.label for e in reg.ensembles] == ["trend_vote"]


def test_params_left_out_come_from_indicators_yaml_per_timeframe(tmp_path):
    reg = build(tmp_path, ENTRY % ("1m, 15m", "[INFY]", "{kind: ema}"))
    by_tf = {s.tf: s.params for s in reg.specs}
    assert (by_tf["1m"].fast, by_tf["1m"].slow) == (9, 21)  # configs/indicators.yaml 1m: ema_fast/ema_slow
    assert (by_tf["15m"].fast, by_tf["15m"].slow) == (12, 26)
    assert {s.label for s in reg.specs} == {"a_1m", "a_15m"}
    given = build(tmp_path, ENTRY % ("1m", "[INFY]", "{fast: 5, slow: 8}"))
    assert (given.specs[0].params.fast, given.specs[0].params.slow) == (5, 8)  # the registry wins


@pytest.mark.parametrize(("text", "needle"), [
    ("strategies:\n  - {id: a, strategy: ma_cross, timeframes: [1m]}\n",
     "strategies[0].strategy: unknown strategy 'ma_cross'"),
    (ENTRY % ("1m", "all", "{fastest: 3}"), "strategies[0].params.fastest: unknown key"),
    (ENTRY % ("1m", "all", "{fast: x}"), "strategies[0].params.fast"),
    (ENTRY % ("1m", "all", "{fast: 30}"), "fast (30) must be below slow (21)"),
    (ENTRY % ("1m", "[NOPE]", "{}"), "strategies[0].instruments: 'NOPE' is not in tokens.csv"),
    (ENTRY % ("1m", "['NIFTY 50']", "{}"), "is an index and cannot be traded"),
    (ENTRY % ("2m", "all", "{}"), "strategies.0.timeframes.0"),
    (ENTRY % ("1m", "{exchange: [MCX]}", "{}"), "selects no instrument"),
    ("strategies:\n  - {id: a, strategy: rsi_reversion, timeframes: [1m]}\n"
     "  - {id: a, strategy: rsi_reversion, timeframes: [5m]}\n", "strategies[1].id: duplicate id 'a'"),
])
def test_each_misconfiguration_is_one_line_naming_the_key(tmp_path, text, needle):
    with pytest.raises(ConfigError) as err:
        build(tmp_path, text) if "2m" not in text else load_registry(_write(tmp_path, text), UNIVERSE)
    msg = str(err.value)
    assert needle in msg and "\n" not in msg


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "registry.yaml"
    p.write_text(text)
    return p


def test_bare_symbol_listed_on_nse_and_bse_means_nse(tmp_path):
    reg = build(tmp_path, ENTRY % ("1m", "[INFY, 'BSE:INFY']", "{}"))
    exchanges = sorted(reg.instruments[t].exchange for t in reg.specs[0].tokens)
    assert exchanges == ["BSE", "NSE"]


def test_a_strategy_votes_in_one_ensemble(tmp_path):
    text = ("strategies:\n  - {id: a, strategy: rsi_reversion, timeframes: [5m]}\n"
            "  - {id: b, strategy: supertrend_trend, timeframes: [5m]}\n")
    ens = ("ensembles:\n  - {id: e1, members: [a, b], mode: any}\n  - {id: e2, members: [a, b], mode: all}\n")
    with pytest.raises(ConfigError, match="'a' votes in both 'e1' and 'e2'"):
        build(tmp_path, text, ens)
    ok = build(tmp_path, text, ens.splitlines()[0] + "\n" + ens.splitlines()[1] + "\n")
    assert [s.ensemble for s in ok.specs] == ["e1", "e1"]


def test_the_runner_and_check_config_exit_2_with_one_line_on_a_stale_name(tmp_path):
    bad = _write(tmp_path, "strategies:\n  - {id: a, strategy: gone_strategy, timeframes: [1m]}\n")
    env = {"STRATEGY_REGISTRY": str(bad), "PATH": "/usr/bin:/bin"}
    for args in (["-m", "strategy.runner_modular"], ["-m", "core.check_config"]):
        r = subprocess.run([sys.executable, *args], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        lines = [ln for ln in r.stderr.splitlines() if "gone_strategy" in ln]
        assert len(lines) == 1 and "unknown strategy 'gone_strategy'" in lines[0], r.stderr
