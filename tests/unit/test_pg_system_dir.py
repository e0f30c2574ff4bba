"""pg_system_dir.reap_clusters: a root cluster whose requested data dir has lost its parent is removed."""

from __future__ import annotations

from pathlib import Path

from orchestrator import pg_system_dir


def _cluster(root: Path, requested: Path, origin: bool = True) -> Path:
    d = pg_system_dir.cluster_dir(requested, root)
    d.mkdir(parents=True)
    (d / "PG_VERSION").write_text("18\n")
    if origin:
        pg_system_dir.record_origin(requested, root)
    return d


def test_reap_removes_only_clusters_whose_clone_or_var_dir_is_gone(tmp_path):
    root = tmp_path / "sys"
    live_var = tmp_path / "clone-a" / "var"
    live_var.mkdir(parents=True)
    kept = _cluster(root, live_var / "pg")
    gone = _cluster(root, tmp_path / "clone-b" / "var" / "pg")  # clone-b was deleted (never made here)
    unknown = _cluster(root, tmp_path / "clone-c" / "var" / "pg", origin=False)  # made before .origin files
    assert pg_system_dir.reap_clusters(root) == [gone]
    assert kept.exists() and not gone.exists() and unknown.exists()
    assert not Path(f"{gone}.origin").exists() and Path(f"{kept}.origin").read_text().strip() == str(live_var / "pg")
    assert pg_system_dir.reap_clusters(root) == []  # nothing more to do
