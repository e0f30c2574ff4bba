"""strategy.ensemble_engine: each mode's decisions, conflicts, kind/stop rules, the votes record, config errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.errors import ConfigError
from strategy.api import Signal
from strategy.ensemble_engine import (
    Ensemble,
    EnsembleConfig,
    EnsembleFile,
    ensemble_timeframes,
    load_ensembles,
    validate_members,
)

ROOT = Path(__file__).resolve().parents[2]


def buy(kind: str = "entry", stop: float | None = None, strength: float = 1.0) -> Signal:
    return Signal("BUY", kind, stop, "test", strength)  # type: ignore[arg-type]


def sell(kind: str = "entry", stop: float | None = None, strength: float = 1.0) -> Signal:
    return Signal("SELL", kind, stop, "test", strength)  # type: ignore[arg-type]


def ens(members: str = "a b c", **kw: Any) -> Ensemble:
    return Ensemble(EnsembleConfig(id="ens", members=members.split(), **kw))


# -- any -------------------------------------------------------------------------------------

def test_any_one_buy_and_no_sell_then_buy_with_strength_the_fraction_of_members():
    sig, rec = ens(mode="any").combine({"a": None, "b": buy(), "c": None})
    assert sig is not None and sig.side == "BUY" and sig.kind == "entry"
    assert sig.strength == pytest.approx(1 / 3)
    assert rec["decision"] == "BUY"


def test_any_no_votes_then_no_signal():
    sig, rec = ens(mode="any").combine({})
    assert sig is None and rec["decision"] is None and rec["buy"] == rec["sell"] == 0


def test_any_buy_and_sell_with_default_flat_then_no_signal():
    sig, rec = ens(mode="any").combine({"a": buy(), "b": buy(), "c": sell()})
    assert sig is None
    assert rec["note"] == "conflict: flat"


def test_any_conflict_priority_takes_the_earliest_voter_not_the_first_member():
    e = ens(mode="any", on_conflict="priority")
    sig, _ = e.combine({"a": None, "b": sell(), "c": buy()})
    assert sig is not None and sig.side == "SELL"
    sig, _ = e.combine({"a": buy(), "b": sell(), "c": sell()})
    assert sig is not None and sig.side == "BUY"
    assert sig.strength == pytest.approx(1 / 3)  # one member on the winning side


def test_any_conflict_majority_takes_the_side_with_more_votes_and_a_tie_gives_nothing():
    e = ens("a b c d", mode="any", on_conflict="majority")
    sig, _ = e.combine({"a": sell(), "b": buy(), "c": buy()})
    assert sig is not None and sig.side == "BUY" and sig.strength == pytest.approx(2 / 4)
    sig, rec = e.combine({"a": sell(), "b": buy()})
    assert sig is None and rec["note"] == "conflict: majority tie"


# -- all -------------------------------------------------------------------------------------

def test_all_unanimous_sell_then_sell_with_full_strength():
    sig, _ = ens(mode="all").combine({"a": sell(), "b": sell("exit"), "c": sell()})
    assert sig is not None and sig.side == "SELL" and sig.strength == 1.0


@pytest.mark.parametrize("votes", [
    {"a": buy(), "b": buy()},                       # c missing: abstains
    {"a": buy(), "b": buy(), "c": None},
    {"a": buy(), "b": buy(), "c": sell()},
])
def test_all_one_abstention_or_dissent_then_no_signal(votes):
    sig, _ = ens(mode="all").combine(votes)
    assert sig is None


# -- k_of_n ----------------------------------------------------------------------------------

def test_k_of_n_reaching_k_then_signal_one_short_then_none():
    e = ens("a b c d", mode="k_of_n", k=2)
    sig, _ = e.combine({"a": buy(), "d": buy()})
    assert sig is not None and sig.side == "BUY" and sig.strength == pytest.approx(0.5)
    sig, rec = e.combine({"a": buy()})
    assert sig is None and rec["note"] == "no quorum"


def test_k_of_n_other_side_below_k_is_not_a_conflict():
    sig, _ = ens("a b c d", mode="k_of_n", k=2).combine({"a": buy(), "b": buy(), "c": sell()})
    assert sig is not None and sig.side == "BUY"


@pytest.mark.parametrize(("on_conflict", "votes", "side"), [
    ("flat", {"a": buy(), "b": sell(), "c": buy(), "d": sell()}, None),
    ("priority", {"a": None, "b": sell(), "c": buy(), "d": buy(), "e": sell()}, "SELL"),
    ("priority", {"a": buy(), "b": sell(), "c": sell(), "d": buy()}, "BUY"),
    ("majority", {"a": sell(), "b": sell(), "c": buy(), "d": buy(), "e": buy()}, "BUY"),
    ("majority", {"a": sell(), "b": sell(), "c": buy(), "d": buy()}, None),
])
def test_k_of_n_both_sides_reach_k_then_on_conflict_decides(on_conflict, votes, side):
    sig, rec = ens("a b c d e", mode="k_of_n", k=2, on_conflict=on_conflict).combine(votes)
    assert (sig.side if sig else None) == side
    assert rec["note"].startswith("conflict")


def test_k_of_n_k_equal_n_behaves_like_all():
    e = ens(mode="k_of_n", k=3)
    assert e.combine({"a": buy(), "b": buy()})[0] is None
    assert e.combine({"a": buy(), "b": buy(), "c": buy()})[0] is not None


# -- weighted --------------------------------------------------------------------------------

W = {"a": 0.7, "b": 0.1, "c": 0.2}


def test_weighted_score_exactly_at_the_threshold_counts_despite_float_sums():
    e = ens(mode="weighted", weights=W, threshold=0.8)
    assert 0.7 + 0.1 < 0.8  # the float sum falls short; the engine must still treat it as equal
    sig, rec = e.combine({"a": buy(), "b": buy()})
    assert sig is not None and sig.side == "BUY"
    assert sig.strength == pytest.approx(0.8)
    assert rec["score"] == pytest.approx(0.8)
    sig, _ = e.combine({"a": sell(), "b": sell()})
    assert sig is not None and sig.side == "SELL"


def test_weighted_just_below_the_threshold_then_no_signal():
    e = ens(mode="weighted", weights=W, threshold=0.8)
    sig, rec = e.combine({"a": buy(), "c": buy(strength=0.49)})  # 0.7 + 0.098
    assert sig is None and rec["note"] == "below threshold"


def test_weighted_integer_weights_boundary_on_both_sides():
    e = ens(mode="weighted", weights={"a": 1, "b": 1, "c": 2}, threshold=2)
    assert e.combine({"c": buy()})[0].side == "BUY"  # type: ignore[union-attr]
    assert e.combine({"a": sell(), "b": sell()})[0].side == "SELL"  # type: ignore[union-attr]
    assert e.combine({"a": buy()})[0] is None
    assert e.combine({"a": buy(), "b": buy(), "c": sell()})[0] is None  # score 0


def test_weighted_opposing_votes_and_strength_scale_the_score():
    e = ens(mode="weighted", weights=W, threshold=0.5)
    sig, rec = e.combine({"a": buy(), "b": buy(), "c": sell()})  # 0.7 + 0.1 - 0.2
    assert rec["score"] == pytest.approx(0.6) and sig is not None and sig.side == "BUY"
    assert sig.reason.endswith("[a, b]")  # the dissenter is not a voter of the signal
    sig, rec = e.combine({"a": buy(strength=0.5), "b": buy(), "c": sell()})  # 0.35 + 0.1 - 0.2
    assert rec["score"] == pytest.approx(0.25) and sig is None


# -- priority --------------------------------------------------------------------------------

def test_priority_first_voter_in_member_order_decides():
    e = ens(mode="priority")
    sig, _ = e.combine({"a": None, "b": sell("exit"), "c": buy()})
    assert sig is not None and sig.side == "SELL" and sig.kind == "exit"
    assert sig.strength == pytest.approx(1 / 3)
    sig, _ = e.combine({"a": buy(), "b": sell(), "c": sell()})
    assert sig is not None and sig.side == "BUY"
    assert e.combine({"a": None})[0] is None


def test_priority_same_side_lower_members_count_for_kind_stop_and_strength():
    sig, _ = ens(mode="priority").combine({"a": buy("exit"), "b": sell(), "c": buy("entry", 98.0)})
    assert sig is not None and (sig.side, sig.kind, sig.stop_loss) == ("BUY", "entry", 98.0)
    assert sig.strength == pytest.approx(2 / 3)


# -- kind and stop ---------------------------------------------------------------------------

def test_buy_entry_takes_the_lowest_stop_of_the_winning_entries():
    sig, _ = ens(mode="any").combine({"a": buy("entry", 97.0), "b": buy("exit", 90.0), "c": buy("entry", 95.0)})
    assert sig is not None and (sig.kind, sig.stop_loss) == ("entry", 95.0)


def test_sell_entry_takes_the_highest_stop_and_ignores_the_losing_side():
    e = ens(mode="k_of_n", k=1, on_conflict="majority")
    sig, _ = e.combine({"a": sell("entry", 103.0), "b": sell("entry", 105.0), "c": buy("entry", 200.0)})
    assert sig is not None and (sig.side, sig.kind, sig.stop_loss) == ("SELL", "entry", 105.0)


def test_entries_without_stop_are_skipped_and_all_exits_give_an_exit_without_stop():
    e = ens(mode="all")
    sig, _ = e.combine({"a": buy("entry"), "b": buy("entry", 96.5), "c": buy("exit")})
    assert sig is not None and (sig.kind, sig.stop_loss) == ("entry", 96.5)
    sig, _ = e.combine({"a": buy("entry"), "b": buy("exit"), "c": buy("exit")})
    assert sig is not None and (sig.kind, sig.stop_loss) == ("entry", None)
    sig, _ = e.combine({"a": sell("exit", 101.0), "b": sell("exit"), "c": sell("exit")})
    assert sig is not None and (sig.kind, sig.stop_loss) == ("exit", None)


# -- the votes record and the reason ---------------------------------------------------------

def test_votes_record_is_plain_json_in_member_order_whatever_the_mapping_order():
    e = ens("z m a", mode="k_of_n", k=2)
    votes = {"a": sell("exit"), "x_not_a_member": buy(), "z": buy()}
    sig, rec = e.combine(votes)
    assert sig is None
    assert list(rec) == ["mode", "votes", "buy", "sell", "score", "decision", "note"]
    assert list(rec["votes"].items()) == [("z", "BUY:entry"), ("m", None), ("a", "SELL:exit")]
    assert (rec["mode"], rec["buy"], rec["sell"], rec["score"]) == ("k_of_n", 1, 1, 0.0)
    assert json.loads(json.dumps(rec)) == rec
    assert e.combine(dict(reversed(list(votes.items())))) == (sig, rec)


def test_reason_names_the_ensemble_mode_and_winning_voters():
    sig, _ = ens("a b c", mode="k_of_n", k=2, on_conflict="priority").combine({"a": sell(), "b": buy(), "c": buy()})
    assert sig is not None
    assert sig.reason == "ensemble ens k_of_n(k=2): BUY 2/3 [b, c]"


# -- config errors ---------------------------------------------------------------------------

def _write(tmp_path: Path, *ensembles: dict[str, Any]) -> Path:
    p = tmp_path / "ensemble.yaml"
    p.write_text(yaml.safe_dump({"ensembles": list(ensembles)}, sort_keys=False))
    return p


def _one(**kw: Any) -> dict[str, Any]:
    return {"id": "e1", "members": ["a", "b", "c"], **kw}


@pytest.mark.parametrize(("entry", "key", "problem"), [
    (_one(mode="k_of_n", k=4), "ensembles.0.k", "between 1 and the 3 members"),
    (_one(mode="k_of_n", k=0), "ensembles.0.k", "between 1 and the 3 members"),
    (_one(mode="k_of_n"), "ensembles.0.k", "required by mode k_of_n"),
    (_one(mode="k_of_n", k="2"), "ensembles.0.k", "valid integer"),
    (_one(mode="any", k=2), "ensembles.0.k", "only used by mode k_of_n"),
    (_one(mode="weighted", threshold=1), "ensembles.0.weights", "required by mode weighted"),
    (_one(mode="weighted", weights={"a": 1, "b": 0, "c": 1}, threshold=1), "ensembles.0.weights",
     "'b': weight must be > 0"),
    (_one(mode="weighted", weights={"a": 1, "b": -1, "c": 1}, threshold=1), "ensembles.0.weights",
     "'b': weight must be > 0"),
    (_one(mode="weighted", weights={"a": 1, "b": 1, "c": 1, "d": 1}, threshold=1), "ensembles.0.weights",
     "'d' is not a member"),
    (_one(mode="weighted", weights={"a": 1, "b": 1}, threshold=1), "ensembles.0.weights",
     "no weight for member(s) 'c'"),
    (_one(mode="weighted", weights={"a": 1, "b": 1, "c": 1}), "ensembles.0.threshold", "required by mode weighted"),
    (_one(mode="weighted", weights={"a": 1, "b": 1, "c": 1}, threshold=0), "ensembles.0.threshold",
     "> 0 and <= the sum of the weights (3)"),
    (_one(mode="weighted", weights={"a": 1, "b": 1, "c": 1}, threshold=3.01), "ensembles.0.threshold",
     "> 0 and <= the sum of the weights (3)"),
    (_one(mode="all", weights={"a": 1, "b": 1, "c": 1}), "ensembles.0.weights", "only used by mode weighted"),
    (_one(mode="k_of_n", k=2, threshold=1), "ensembles.0.threshold", "only used by mode weighted"),
    (_one(mode="weighted", weights={"a": 1, "b": 1, "c": 1}, threshold=2, on_conflict="flat"),
     "ensembles.0.on_conflict", "only used by modes any and k_of_n"),
    (_one(mode="priority", on_conflict="majority"), "ensembles.0.on_conflict", "only used by modes any and k_of_n"),
    (_one(mode="any", on_conflict="coin_toss"), "ensembles.0.on_conflict", "'flat', 'priority' or 'majority'"),
    (_one(mode="vote"), "ensembles.0.mode", "'any', 'all', 'k_of_n', 'weighted' or 'priority'"),
    ({"id": "e1", "members": ["a", "b", "a"], "mode": "any"}, "ensembles.0.members", "duplicate member 'a'"),
    ({"id": "e1", "members": ["a"], "mode": "any"}, "ensembles.0.members", "at least 2 items"),
    (_one(mode="any", wieghts={}), "ensembles.0.wieghts", "unknown key"),
    (_one(mode="any", enabled="yes"), "ensembles.0.enabled", "valid boolean"),
])
def test_misconfiguration_is_one_line_naming_file_key_and_problem(tmp_path, entry, key, problem):
    p = _write(tmp_path, _one(mode="all", id="ok"), entry)  # a valid first entry: the index must be right
    key = key.replace("ensembles.0", "ensembles.1")
    with pytest.raises(ConfigError) as ei:
        load_ensembles(p)
    msg = str(ei.value)
    assert "\n" not in msg
    assert msg.startswith(f"{p}: {key}: "), msg
    assert problem in msg, msg


def test_duplicate_ensemble_ids_are_rejected_naming_both_entries(tmp_path):
    p = _write(tmp_path, _one(mode="any"), _one(mode="all", id="e2"), _one(mode="all"))
    with pytest.raises(ConfigError, match=r"ensembles: duplicate id 'e1' \(ensembles.0 and ensembles.2\)"):
        load_ensembles(p)


def test_valid_file_of_every_mode_loads_with_defaults(tmp_path):
    p = _write(tmp_path, _one(mode="any"), _one(id="e2", mode="k_of_n", k=2, enabled=False),
               _one(id="e3", mode="weighted", weights={"a": 1, "b": 2, "c": 3}, threshold=6),
               _one(id="e4", mode="priority"))
    f = load_ensembles(p)
    assert [(e.id, e.enabled, e.conflict) for e in f.ensembles] == [
        ("e1", True, "flat"), ("e2", False, "flat"), ("e3", True, "flat"), ("e4", True, "flat")]


def test_shipped_ensemble_yaml_loads_and_builds():
    f = load_ensembles(ROOT / "strategy" / "ensemble.yaml")
    assert f.ensembles
    for cfg in f.ensembles:
        e = Ensemble(cfg)
        sig, rec = e.combine({})
        assert sig is None and list(rec["votes"]) == list(cfg.members)


# -- validate_members ------------------------------------------------------------------------

REGISTRY = {
    "ma_5m": (True, frozenset({"5m", "15m"})),
    "rsi_5m": (True, frozenset({"5m"})),
    "st_15m": (True, frozenset({"15m"})),
    "old": (False, frozenset({"5m"})),
}


def _file(*entries: dict[str, Any]) -> EnsembleFile:
    return EnsembleFile.model_validate({"ensembles": list(entries)})


def test_validate_members_accepts_enabled_members_sharing_a_timeframe():
    f = _file({"id": "vote", "members": ["ma_5m", "rsi_5m"], "mode": "any"})
    validate_members(f, REGISTRY, "ensemble.yaml")
    assert ensemble_timeframes(f.ensembles[0], REGISTRY) == frozenset({"5m"})


@pytest.mark.parametrize(("entry", "message"), [
    ({"id": "vote", "members": ["ma_5m", "foo"], "mode": "any"},
     "ensemble.yaml: ensembles.1.members: 'foo' is not in registry.yaml"),
    ({"id": "vote", "members": ["ma_5m", "old"], "mode": "any"},
     "ensemble.yaml: ensembles.1.members: 'old' is disabled in registry.yaml"),
    ({"id": "vote", "members": ["ma_5m", "rsi_5m", "st_15m"], "mode": "any"},
     "ensemble.yaml: ensembles.1.members: no timeframe shared by all members (ma_5m: 15m,5m; rsi_5m: 5m; st_15m: 15m)"),
    ({"id": "rsi_5m", "members": ["ma_5m", "rsi_5m"], "mode": "any"},
     "ensemble.yaml: ensembles.1.id: 'rsi_5m' is also a strategy id in registry.yaml"),
    ({"id": "ma_5m", "enabled": False, "members": ["x", "y"], "mode": "any"},
     "ensemble.yaml: ensembles.1.id: 'ma_5m' is also a strategy id in registry.yaml"),
])
def test_validate_members_errors_name_the_entry_and_the_problem(entry, message):
    f = _file({"id": "fine", "members": ["ma_5m", "st_15m"], "mode": "all"}, entry)
    with pytest.raises(ConfigError) as ei:
        validate_members(f, REGISTRY, "ensemble.yaml")
    assert str(ei.value).startswith(message), str(ei.value)


def test_validate_members_skips_the_members_of_a_disabled_ensemble():
    f = _file({"id": "later", "enabled": False, "members": ["foo", "old"], "mode": "any"})
    validate_members(f, REGISTRY, "ensemble.yaml")  # no error: only enabled ensembles' members are checked
