"""Build the native extensions (pybind11); everything else about the distribution lives in pyproject.toml.

- ``compute._native``: the tick fast path of the 1 s bar builder. It links no librdkafka at build
  time: ``compute.native_tick_stream`` loads the copy bundled in the confluent-kafka wheel with
  RTLD_GLOBAL before importing it (see that module).
- ``matcher_cpp._matcher``: the price-time order book (``import matcher_cpp``).
"""

from glob import glob

from pybind11.setup_helpers import Pybind11Extension
from setuptools import setup

native = Pybind11Extension(
    "compute._native",
    sorted(glob("compute/native/*.cpp")),
    depends=sorted(glob("compute/native/*.hpp")),
    include_dirs=["compute/native", "compute/native/include"],
    cxx_std=17,
    extra_compile_args=["-O3", "-fvisibility=hidden"],
)

matcher = Pybind11Extension(
    "matcher_cpp._matcher",
    sorted(glob("matcher_cpp/src/*.cpp")),
    depends=sorted(glob("matcher_cpp/src/*.hpp")),
    include_dirs=["matcher_cpp/src"],
    cxx_std=17,
    extra_compile_args=["-O3", "-fvisibility=hidden"],
)

setup(ext_modules=[native, matcher])
