"""The embedded broker's memory growth on the running stack: ``make bench`` (section ``broker_memory``)
or by hand (``python -m tests.bench.bench_broker_memory --minutes 8``).

For each producer compression (``none``, then ``lz4``) it starts the real stack
(``configs/process_supervisor.yaml``: kitesim's default universe -> zerodha_ws ->
bar services, on the fixed ports of ``make up``) in a throwaway var dir, waits
until every service is ready plus a warm-up, samples the Tansu process's RSS
every ``--interval`` seconds for ``--minutes``, stops the stack, and fits a
least-squares line: MiB per hour, and bytes per tick with the ticks that
zerodha_ws acknowledged meanwhile (``tradestack_zerodha_ws_ticks_out_total``).

It refuses to run while something listens on the stack's ports (a ``make up``
of someone else's). The machine is shared: keep ``--minutes`` small.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.harness import Section, machine_notes  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "process_supervisor.yaml"
STACK_PORTS = (15432, 19092, 18080, 18081, 9102, 9111, 9112, 9113)
COMPRESSION_ENV = "KAFKA_COMPRESSION"  # core.bus's producer setting (compression.type for every producer)
TICKS_OUT = re.compile(rb"^tradestack_zerodha_ws_ticks_out_total (\S+)$", re.M)
MIB = 2**20


@dataclass
class Run:
    """One configuration's samples."""

    compression: str
    samples: list[tuple[float, int]]  # (seconds since the first sample, RSS bytes)
    ticks: float  # ticks acknowledged between the first and the last sample
    instruments: int

    @property
    def seconds(self) -> float:
        return self.samples[-1][0] - self.samples[0][0] if len(self.samples) > 1 else 0.0

    @property
    def slope(self) -> float:
        """Least-squares RSS growth in bytes per second."""
        n = len(self.samples)
        if n < 2:
            return 0.0
        mx = sum(t for t, _ in self.samples) / n
        my = sum(r for _, r in self.samples) / n
        var = sum((t - mx) ** 2 for t, _ in self.samples)
        return sum((t - mx) * (r - my) for t, r in self.samples) / var if var else 0.0

    @property
    def mib_per_hour(self) -> float:
        return self.slope * 3600 / MIB

    @property
    def ticks_per_s(self) -> float:
        return self.ticks / self.seconds if self.seconds else 0.0

    @property
    def bytes_per_tick(self) -> float:
        return self.slope / self.ticks_per_s if self.ticks_per_s else 0.0


def _busy_ports() -> list[int]:
    busy = []
    for port in STACK_PORTS:
        with socket.socket() as s:
            s.settimeout(0.3)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                busy.append(port)
    return busy


def _ctl(env: dict[str, str], var: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator.ctl", "--var-dir", str(var), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _ticks_out() -> float:
    try:
        with urllib.request.urlopen("http://127.0.0.1:9102/metrics", timeout=5) as resp:  # noqa: S310 - loopback
            m = TICKS_OUT.search(resp.read())
    except OSError:
        return 0.0
    return float(m.group(1)) if m else 0.0


def _instruments() -> int:
    lines = (ROOT / "configs" / "tokens.csv").read_text().splitlines()
    return max(0, len([ln for ln in lines if ln.strip()]) - 1)


def measure(compression: str, minutes: float, interval: float, warmup: float) -> Run:
    """Run the stack with ``compression`` on every producer and sample the broker's RSS."""
    from core import bus

    honoured = bus.compression_type({COMPRESSION_ENV: compression}) if hasattr(bus, "compression_type") else "none"
    if honoured != compression:
        raise RuntimeError(f"core.bus does not honour {COMPRESSION_ENV}={compression} (producers use {honoured})")
    busy = _busy_ports()
    if busy:
        raise RuntimeError(f"ports {busy} are in use (a running stack?): run `make down` first")
    with tempfile.TemporaryDirectory(prefix="bench-broker-") as tmp:
        var = Path(tmp) / "var"
        env = {**os.environ, "TRADESTACK_VAR_DIR": str(var), "TRADING_MODE": "paper",
               COMPRESSION_ENV: compression}
        (var / "log").mkdir(parents=True)
        out = (var / "log" / "supervisor.out").open("wb")
        sup = subprocess.Popen([sys.executable, "-m", "orchestrator.process_supervisor", "--config", str(CONFIG)],
                               cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            ready = _ctl(env, var, "wait-ready", "--timeout", "150")
            if ready.returncode != 0:
                raise RuntimeError(f"stack not ready: {ready.stderr[-2000:]}")
            status = json.loads(_ctl(env, var, "status", "--json").stdout)
            pid = next(s["pid"] for s in status["services"] if s["name"] == "kafka")
            broker = psutil.Process(pid)
            time.sleep(warmup)
            samples: list[tuple[float, int]] = []
            t0 = time.monotonic()
            ticks0 = _ticks_out()
            while True:
                now = time.monotonic() - t0
                procs = [broker, *broker.children(recursive=True)]
                samples.append((now, sum(p.memory_info().rss for p in procs)))
                if now >= minutes * 60:
                    break
                time.sleep(max(0.0, min(interval, minutes * 60 - now)))
            ticks = _ticks_out() - ticks0
        finally:
            _ctl(env, var, "stop", "--timeout", "120")
            try:
                sup.wait(60)
            except subprocess.TimeoutExpired:
                sup.kill()
                sup.wait(10)
            out.close()
    return Run(compression, samples, ticks, _instruments())


def section(runs: list[Run], interval: float) -> Section:
    """The BENCHMARKS.md block."""
    sec = Section("broker_memory", "Broker memory: the embedded Tansu broker's RSS growth on the running stack")
    sec.lines.append(f"Machine: {machine_notes()}. Stack: `configs/process_supervisor.yaml` as `make up` runs it "
                     f"(kitesim's default universe, {runs[0].instruments} instruments, full mode -> zerodha_ws -> "
                     "bar services), fresh var dir per run; compression set with "
                     f"`{COMPRESSION_ENV}` on every producer.")
    sec.lines.append(f"RSS of the Tansu process sampled every {interval:g} s after readiness and a warm-up; "
                     "growth is the least-squares slope.")
    sec.lines.append("")
    sec.lines.append("| producer compression | sampled | ticks/s acknowledged | RSS start | RSS end "
                     "| **growth MiB/hour** | bytes per tick | MiB per 6.25 h session |")
    sec.lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        sec.lines.append(f"| {r.compression} | {r.seconds / 60:.1f} min ({len(r.samples)} samples) "
                         f"| {r.ticks_per_s:,.0f} | {r.samples[0][1] / MIB:,.0f} MiB "
                         f"| {r.samples[-1][1] / MIB:,.0f} MiB | **{r.mib_per_hour:,.0f}** "
                         f"| {r.bytes_per_tick:,.0f} | {r.mib_per_hour * 6.25:,.0f} |")
    if len(runs) == 2 and runs[1].mib_per_hour > 0:
        sec.lines.append("")
        sec.lines.append(f"{runs[0].compression} / {runs[1].compression} growth: "
                         f"{runs[0].mib_per_hour / runs[1].mib_per_hour:.1f}x. The broker keeps every batch "
                         "as produced (no retention), so growth is the day's message bytes: `make broker-reset` "
                         "before each session starts the day empty (README, Operating).")
    sec.lines.append("")
    sec.lines.append("Bytes per tick: the broker's growth on every topic (ticks, bars.*, dlq) per acknowledged tick. "
                     "Compression works per produced batch: at this rate a batch (linger.ms 5, 3 partitions) holds "
                     "only a few ticks, so lz4 saves far less here than on bulk batches of 100k ticks "
                     "(81 MB -> 14 MB, issue #8).")
    return sec


def run(quick: bool = False, minutes: float | None = None, interval: float = 10.0,
        warmup: float = 20.0, configs: tuple[str, ...] = ("none", "lz4")) -> Section:
    """``make bench`` entry: 2 minutes per configuration (1 with ``quick``)."""
    mins = minutes if minutes is not None else (1.0 if quick else 2.0)
    runs = []
    for c in configs:
        print(f"broker_memory: {c}, {mins:g} min", flush=True)
        runs.append(measure(c, mins, interval, warmup))
    return section(runs, interval)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.bench.bench_broker_memory",
                                 description="Embedded broker RSS growth on the running stack, per compression.")
    ap.add_argument("--minutes", type=float, default=2.0, help="sampling time per configuration (default 2)")
    ap.add_argument("--interval", type=float, default=10.0, help="seconds between RSS samples (default 10)")
    ap.add_argument("--warmup", type=float, default=20.0, help="seconds after readiness before sampling")
    ap.add_argument("--compression", default="none,lz4", help="comma-separated (default none,lz4)")
    ap.add_argument("--write", type=Path, help="markdown file to update (e.g. docs/BENCHMARKS.md)")
    ap.add_argument("--save", type=Path, help="also write the samples as JSON here")
    ap.add_argument("--load", type=Path, nargs="+",
                    help="render the section from JSON files of --save instead of measuring")
    args = ap.parse_args(argv)
    if args.load:
        runs = [Run(**{**r, "samples": [tuple(x) for x in r["samples"]]})
                for f in args.load for r in json.loads(f.read_text())]
    else:
        runs = [measure(c, args.minutes, args.interval, args.warmup) for c in args.compression.split(",")]
    if args.save:
        args.save.write_text(json.dumps([r.__dict__ for r in runs]))
    sec = section(runs, args.interval)
    print(sec.render())
    if args.write:
        from tests.bench.harness import write_sections

        write_sections(args.write, [sec])
    return 0


if __name__ == "__main__":
    sys.exit(main())
