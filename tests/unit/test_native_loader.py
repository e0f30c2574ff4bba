"""compute.native_tick_stream.load_native: only the confluent-kafka wheel's librdkafka, checked; else the python engine.

The mismatch path runs for real in a child process: a tiny shared library whose
``rd_kafka_version()`` reports another version is compiled here and selected with the
loader's test seam (``TRADESTACK_LIBRDKAFKA``); the loader must refuse it before it can
provide symbols to the extension, ``--engine auto`` must pick the python engine with one
log line, and ``--engine native`` must stop with exit code 2.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import confluent_kafka
import pytest

from compute import native_tick_stream
from compute.native_tick_stream import VENDORED_RDKAFKA_H_VERSION, NativeUnavailable, check_librdkafka

ROOT = Path(__file__).resolve().parents[2]
HEADER = ROOT / "compute" / "native" / "include" / "librdkafka" / "rdkafka.h"


def test_vendored_header_version_is_the_recorded_constant():
    m = re.search(r"^#define RD_KAFKA_VERSION\s+(0x[0-9a-fA-F]+)", HEADER.read_text(), re.M)
    assert m is not None
    assert int(m.group(1), 16) == VENDORED_RDKAFKA_H_VERSION


def test_wheel_librdkafka_matches_confluent_kafka_and_the_header():
    path = native_tick_stream.wheel_librdkafka()
    assert path.is_absolute() and path.parent.name == "confluent_kafka.libs"
    assert check_librdkafka(path) == confluent_kafka.libversion()[1]
    assert native_tick_stream.header_compatible(confluent_kafka.libversion()[1])


def test_header_compatibility_rule():
    assert native_tick_stream.header_compatible(VENDORED_RDKAFKA_H_VERSION)
    assert native_tick_stream.header_compatible(0x020C01FF)
    assert not native_tick_stream.header_compatible(0x020001FF)  # older than the header
    assert not native_tick_stream.header_compatible(0x030000FF)  # another major
    assert native_tick_stream.version_str(0x020C01FF) == "2.12.1"


def test_relative_or_missing_library_is_refused(tmp_path):
    with pytest.raises(NativeUnavailable, match="absolute"):
        check_librdkafka(Path("librdkafka.so.1"))
    with pytest.raises(NativeUnavailable, match="cannot load"):
        check_librdkafka(tmp_path / "nope.so")


@pytest.fixture(scope="module")
def fake_librdkafka(tmp_path_factory) -> Path:
    """A shared library exporting ``rd_kafka_version()`` = 1.9.0 (and nothing else of librdkafka)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    d = tmp_path_factory.mktemp("fake_rdkafka")
    src = d / "fake.c"
    src.write_text('int rd_kafka_version(void) { return 0x010900ff; }\n'
                   'const char *rd_kafka_version_str(void) { return "1.9.0"; }\n')
    lib = d / "librdkafka.so.1"
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    return lib


def _child(code: str, lib: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, native_tick_stream.LIBRDKAFKA_ENV: str(lib)}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)


def test_other_librdkafka_version_is_refused(fake_librdkafka):
    with pytest.raises(NativeUnavailable, match=r"is 1\.9\.0 .*confluent-kafka uses"):
        check_librdkafka(fake_librdkafka)


def test_mismatch_makes_auto_run_the_python_engine_with_one_log_line(fake_librdkafka):
    r = _child("import logging, sys; logging.basicConfig(stream=sys.stderr)\n"
               "from compute.bar_builder_1s import resolve_engine\n"
               "print(resolve_engine('auto'))\n"
               "import compute.native_tick_stream as n\n"
               "print(n.native_available())", fake_librdkafka)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["python", "False"]
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1
    assert "native unavailable, using python" in lines[0] and "1.9.0" in lines[0]


def test_mismatch_with_engine_native_is_exit_2(fake_librdkafka):
    r = _child("import sys\nfrom compute.bar_builder_1s import main\nsys.exit(main(['--engine', 'native']))",
               fake_librdkafka)
    assert r.returncode == 2
    assert "--engine native:" in r.stderr and "1.9.0" in r.stderr
