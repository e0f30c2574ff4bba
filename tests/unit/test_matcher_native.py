"""The matcher's C++ unit tests (matcher_cpp/tests/test_matcher.cpp), built and run under pytest.

Built with AddressSanitizer and UndefinedBehaviorSanitizer when the compiler has them (gcc and clang
on Debian do), so a memory error in the book fails the suite, not just a wrong event.
"""

from __future__ import annotations

import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [ROOT / "matcher_cpp/tests/test_matcher.cpp", ROOT / "matcher_cpp/src/matcher.cpp"]


def _compiler() -> str | None:
    cxx = (sysconfig.get_config_var("CXX") or "").split()
    for cand in ([cxx[0]] if cxx else []) + ["c++", "g++", "clang++"]:
        if shutil.which(cand):
            return cand
    return None


def test_cpp_unit_tests_pass(tmp_path: Path) -> None:
    cxx = _compiler()
    if cxx is None:
        pytest.skip("no C++ compiler on PATH (make setup needs one to build the extensions)")
    exe = tmp_path / "test_matcher"
    base = [cxx, "-std=c++17", "-O1", "-g", "-Wall", "-Wextra", "-Werror", f"-I{ROOT / 'matcher_cpp/src'}",
            *map(str, SOURCES), "-o", str(exe)]
    build = subprocess.run([*base[:1], "-fsanitize=address,undefined", "-fno-sanitize-recover=all", *base[1:]],
                           capture_output=True, text=True)
    if build.returncode != 0 and "sanitize" in build.stderr:
        build = subprocess.run(base, capture_output=True, text=True)  # a toolchain without the sanitizer runtimes
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120,
                         env={"ASAN_OPTIONS": "detect_leaks=1", "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[-1] == "0 of 15 failed", run.stdout
    assert sum(line.startswith("ok ") for line in lines) == 15
