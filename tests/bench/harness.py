"""Benchmark harness: embedded broker/Postgres contexts, timing, machine notes, BENCHMARKS.md sections.

Each benchmark module exposes ``run(quick: bool) -> Section``; ``run_all``
writes every section between markers in ``docs/BENCHMARKS.md`` so a partial
run keeps the other sections.
"""

from __future__ import annotations

import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import tansu_broker


@dataclass
class Section:
    """One benchmark's result block."""

    key: str
    title: str
    lines: list[str] = field(default_factory=list)

    def render(self) -> str:
        body = "\n".join(self.lines)
        return f"<!-- bench:{self.key}:start -->\n### {self.title}\n\n{body}\n<!-- bench:{self.key}:end -->\n"


def machine_notes() -> str:
    """One line describing the machine the figures came from."""
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{time.strftime('%Y-%m-%d')}, {cpu}, {os.cpu_count()} cores, {mem_gb:.0f} GiB, "
            f"Python {platform.python_version()}, {platform.system()} {platform.release()}")


def median_of(runs: int, fn: Callable[[], float]) -> tuple[float, list[float]]:
    """Run ``fn`` (returning a rate) ``runs`` times; the median and all values."""
    values = [fn() for _ in range(runs)]
    return statistics.median(values), values


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}"


def embedded_broker() -> AbstractContextManager[str]:
    """A throwaway Tansu broker on a free port; yields bootstrap servers."""
    return tansu_broker()


def write_sections(path: Path, sections: list[Section]) -> None:
    """Insert or replace each section's block in ``path``."""
    text = path.read_text() if path.exists() else "# Benchmarks\n\nRun `make bench` to regenerate.\n\n"
    for s in sections:
        block = s.render()
        pattern = re.compile(rf"<!-- bench:{re.escape(s.key)}:start -->.*?<!-- bench:{re.escape(s.key)}:end -->\n",
                             re.S)
        if pattern.search(text):
            text = pattern.sub(lambda _m, b=block: b, text)
        else:
            text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text)
