"""Build the native extension ``compute._native`` (pybind11): the tick fast path of the 1 s bar builder.

Everything else about the distribution lives in pyproject.toml. The extension links no
librdkafka at build time: ``compute.native_tick_stream`` loads the copy bundled in the
confluent-kafka wheel with RTLD_GLOBAL before importing it (see that module).
"""

from glob import glob

from pybind11.setup_helpers import Pybind11Extension
from setuptools import setup

ext = Pybind11Extension(
    "compute._native",
    sorted(glob("compute/native/*.cpp")),
    depends=sorted(glob("compute/native/*.hpp")),
    include_dirs=["compute/native", "compute/native/include"],
    cxx_std=17,
    extra_compile_args=["-O3", "-fvisibility=hidden"],
)

setup(ext_modules=[ext])
