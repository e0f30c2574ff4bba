"""Where archives go: a local directory or an S3(-compatible) bucket, behind one small interface.

Both stores publish an object atomically (local: write to a staging file,
fsync, ``os.replace``; S3: a PUT or a completed multipart upload is atomic),
so a crash never leaves a half-written object under a final key.

S3 credentials come from the environment only (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, optional ``AWS_SESSION_TOKEN``; the project's env
files count as environment), never from ``~/.aws`` or instance metadata, and
are never logged. The endpoint is ``--endpoint-url`` or ``AWS_ENDPOINT_URL_S3``
/ ``AWS_ENDPOINT_URL`` (MinIO, Ceph, moto, ...); region ``AWS_REGION`` /
``AWS_DEFAULT_REGION`` (default ``us-east-1``). Stores that reject boto3's
default CRC32 request checksums can set ``AWS_REQUEST_CHECKSUM_CALCULATION=when_required``.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import pyarrow.parquet as pq

from compute.sinks.archive_plan import ArchiveError, LocalDest, ObjectStat, S3Dest
from core.errors import ConfigError

CHUNK = 1 << 20
PARQUET_CONTENT_TYPE = "application/vnd.apache.parquet"


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


class ObjectStore(Protocol):
    """The operations the archiver needs from a destination."""

    location: str

    def url(self, key: str) -> str:
        """Human-readable address of ``key`` (for log lines)."""
        ...

    @contextmanager
    def staging(self) -> Iterator[Path]:
        """A scratch directory for files about to be published."""
        ...

    def clean_staging(self) -> None:
        """Remove scratch files a killed run left behind (call while holding the location lock)."""
        ...

    def put_file(self, key: str, path: Path, sha256: str, rows: int) -> None:
        """Publish ``path`` under ``key`` atomically (replacing any previous object)."""
        ...

    def stat(self, key: str) -> ObjectStat | None:
        """Size and SHA-256 of ``key``, or None if it does not exist (cheap: no full read on S3)."""
        ...

    def footer_rows(self, key: str) -> int:
        """Row count from the object's parquet footer (reads only the tail)."""
        ...

    def read_back(self, key: str) -> ObjectStat | None:
        """Size and SHA-256 computed over the object's bytes as stored (a full read), None if missing."""
        ...


class LocalStore:
    """Archive under a local directory (default ``var/archive``)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.location = str(self.root)

    def url(self, key: str) -> str:
        """The object's filesystem path."""
        return str(self.root / key)

    @contextmanager
    def staging(self) -> Iterator[Path]:
        """A hidden scratch dir inside the root, on the same filesystem so publishing is a rename."""
        base = self.root / ".staging"
        base.mkdir(parents=True, exist_ok=True)
        d = Path(tempfile.mkdtemp(prefix="run-", dir=base))
        try:
            yield d
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def clean_staging(self) -> None:
        """Drop ``.staging`` leftovers of a killed run (never visible under a final key)."""
        shutil.rmtree(self.root / ".staging", ignore_errors=True)

    def put_file(self, key: str, path: Path, sha256: str, rows: int) -> None:
        """fsync, rename into place, fsync the directory: durable before the ledger says so."""
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(path, target)
        fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def stat(self, key: str) -> ObjectStat | None:
        """Size and a freshly computed SHA-256 (local reads are cheap)."""
        target = self.root / key
        if not target.is_file():
            return None
        return ObjectStat(target.stat().st_size, sha256_file(target))

    def footer_rows(self, key: str) -> int:
        """Row count from the parquet footer."""
        try:
            return int(pq.read_metadata(self.root / key).num_rows)
        except (OSError, ValueError) as exc:
            raise ArchiveError(f"{self.url(key)}: cannot read parquet footer: {exc}") from None

    def read_back(self, key: str) -> ObjectStat | None:
        """Same as :meth:`stat` (which already reads the whole file)."""
        return self.stat(key)


class _S3RangeFile(io.RawIOBase):
    """A read-only, seekable view of one S3 object that fetches only the ranges read.

    Lets pyarrow read a parquet footer with one or two ranged GETs instead of
    downloading the whole object.
    """

    def __init__(self, client: Any, bucket: str, key: str, size: int) -> None:
        super().__init__()
        self._client, self._bucket, self._key, self._size = client, bucket, key, size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), self._size - self._pos)
        if want <= 0:
            return 0
        rng = f"bytes={self._pos}-{self._pos + want - 1}"
        body = self._client.get_object(Bucket=self._bucket, Key=self._key, Range=rng)["Body"].read()
        n = len(body)
        buffer[:n] = body
        self._pos += n
        return n


def _client_error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _one_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


class S3Store:
    """Archive into ``s3://bucket/prefix`` through boto3."""

    def __init__(self, client: Any, dest: S3Dest) -> None:
        self.client = client
        self.dest = dest
        self.location = dest.location

    def url(self, key: str) -> str:
        """``s3://bucket/prefix/key``."""
        return f"s3://{self.dest.bucket}/{self.dest.full_key(key)}"

    @contextmanager
    def staging(self) -> Iterator[Path]:
        """A temporary local directory (removed afterwards)."""
        with tempfile.TemporaryDirectory(prefix="tradestack-archive-") as d:
            yield Path(d)

    def clean_staging(self) -> None:
        """Nothing to do: S3 staging lives in a TemporaryDirectory (an aborted multipart upload is
        not visible; a bucket lifecycle rule should expire incomplete uploads)."""

    def put_file(self, key: str, path: Path, sha256: str, rows: int) -> None:
        """Upload (multipart above 8 MiB); our SHA-256 and row count ride along as object metadata."""
        extra = {"Metadata": {"sha256": sha256, "rows": str(rows)}, "ContentType": PARQUET_CONTENT_TYPE}
        try:
            self.client.upload_file(str(path), self.dest.bucket, self.dest.full_key(key), ExtraArgs=extra)
        except Exception as exc:  # noqa: BLE001 - boto3/s3transfer raise many types; report one line
            raise ArchiveError(f"upload {self.url(key)} failed: {_one_line(exc)}") from None

    def stat(self, key: str) -> ObjectStat | None:
        """HEAD: size plus the SHA-256 we stored in the object's metadata."""
        try:
            head = self.client.head_object(Bucket=self.dest.bucket, Key=self.dest.full_key(key))
        except Exception as exc:  # noqa: BLE001
            if _client_error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise ArchiveError(f"HEAD {self.url(key)} failed: {_one_line(exc)}") from None
        meta = {k.lower(): v for k, v in (head.get("Metadata") or {}).items()}
        return ObjectStat(int(head["ContentLength"]), meta.get("sha256"))

    def footer_rows(self, key: str) -> int:
        """Row count from the parquet footer, read with ranged GETs."""
        stat = self.stat(key)
        if stat is None:
            raise ArchiveError(f"{self.url(key)}: object missing")
        try:
            reader = _S3RangeFile(self.client, self.dest.bucket, self.dest.full_key(key), stat.size)
            return int(pq.read_metadata(reader).num_rows)
        except ArchiveError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise ArchiveError(f"{self.url(key)}: cannot read parquet footer: {_one_line(exc)}") from None

    def read_back(self, key: str) -> ObjectStat | None:
        """Stream the whole object, counting and hashing its bytes (used before deleting database rows)."""
        try:
            obj = self.client.get_object(Bucket=self.dest.bucket, Key=self.dest.full_key(key))
        except Exception as exc:  # noqa: BLE001
            if _client_error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise ArchiveError(f"GET {self.url(key)} failed: {_one_line(exc)}") from None
        h = hashlib.sha256()
        size = 0
        try:
            for chunk in obj["Body"].iter_chunks(CHUNK):
                h.update(chunk)
                size += len(chunk)
        except Exception as exc:  # noqa: BLE001
            raise ArchiveError(f"GET {self.url(key)} failed mid-stream: {_one_line(exc)}") from None
        return ObjectStat(size, h.hexdigest())

    def check_bucket(self) -> None:
        """Fail early, in one line, when the bucket is missing or the credentials are refused."""
        try:
            self.client.head_bucket(Bucket=self.dest.bucket)
        except Exception as exc:  # noqa: BLE001
            code = _client_error_code(exc)
            if code in ("404", "NoSuchBucket", "NotFound"):
                raise ConfigError(f"--dest: bucket {self.dest.bucket!r} does not exist") from None
            if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise ConfigError(f"--dest: access to bucket {self.dest.bucket!r} denied ({code}); "
                                  "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY") from None
            raise ArchiveError(f"bucket {self.dest.bucket!r} not reachable: {_one_line(exc)}") from None


def s3_client_from_env(env: Mapping[str, str], endpoint_url: str | None = None) -> Any:
    """A boto3 S3 client built only from ``env`` (never ``~/.aws``); ConfigError if keys are missing."""
    import boto3
    from botocore.config import Config

    key_id = env.get("AWS_ACCESS_KEY_ID", "")
    secret = env.get("AWS_SECRET_ACCESS_KEY", "")
    if not key_id or not secret:
        raise ConfigError("S3 destination needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                          "in the environment")
    endpoint = endpoint_url or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None
    if endpoint and not endpoint.startswith(("http://", "https://")):
        raise ConfigError(f"--endpoint-url: expected http(s)://host[:port], got {endpoint!r}")
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
    session = boto3.session.Session(aws_access_key_id=key_id, aws_secret_access_key=secret,
                                    aws_session_token=env.get("AWS_SESSION_TOKEN") or None,
                                    region_name=region)
    config = Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=5, read_timeout=60)
    return session.client("s3", endpoint_url=endpoint, config=config)


def make_store(dest: LocalDest | S3Dest, env: Mapping[str, str], endpoint_url: str | None = None,
               client: Any = None) -> LocalStore | S3Store:
    """The store for a parsed ``--dest`` (``client`` injects a ready boto3 client, e.g. in tests)."""
    if isinstance(dest, LocalDest):
        if endpoint_url:
            raise ConfigError("--endpoint-url only applies to an s3:// destination")
        return LocalStore(Path(dest.path))
    return S3Store(client if client is not None else s3_client_from_env(env, endpoint_url), dest)
