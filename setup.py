"""Build: generate the gRPC stubs from protos/ and cythonize _fastpath.

Both happen at build time (``pip install .`` or ``pip install -e .``); nothing generated is
committed. The stubs are written into ``chaperon/v1/`` in the source tree (so editable installs
and the test suite see them) before the packages are collected.
"""

from __future__ import annotations

import glob
import os
import sys

from setuptools import Command, setup
from setuptools.command.build_py import build_py
from setuptools.extension import Extension

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.path.join(HERE, "protos")


def generate_stubs() -> None:
    """Run grpc_tools.protoc over protos/chaperon/v1/*.proto into the source tree."""
    from grpc_tools import protoc  # build requirement

    protos = sorted(glob.glob(os.path.join(PROTO_ROOT, "chaperon", "v1", "*.proto")))
    if not protos:
        raise SystemExit("setup.py: no .proto files under protos/chaperon/v1")
    well_known = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={HERE}",
        f"--pyi_out={HERE}",
        f"--grpc_python_out={HERE}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("setup.py: grpc_tools.protoc failed on " + " ".join(protos))


class BuildProtos(Command):
    description = "generate Python gRPC stubs from protos/"
    user_options: list = []

    def initialize_options(self) -> None:
        pass

    def finalize_options(self) -> None:
        pass

    def run(self) -> None:
        generate_stubs()


class BuildPy(build_py):
    def run(self) -> None:
        generate_stubs()
        super().run()


def extensions() -> list:
    from Cython.Build import cythonize

    flags = ["-O3"]
    if sys.platform.startswith("linux"):
        flags.append("-D_GNU_SOURCE")
    exts = [
        Extension("_fastpath.histogram", ["_fastpath/histogram.pyx"], extra_compile_args=flags),
        Extension("_fastpath.http1", ["_fastpath/http1.pyx"], extra_compile_args=flags),
        Extension(
            "_fastpath.engine",
            ["_fastpath/engine.pyx"],
            extra_compile_args=flags,
            libraries=["pthread"],
        ),
    ]
    # Developers may rebuild one module alone: CHAPERON_EXT=histogram python setup.py build_ext -i
    only = os.environ.get("CHAPERON_EXT")
    if only:
        exts = [e for e in exts if e.name.split(".")[-1] in only.split(",")]
    return cythonize(
        exts,
        compiler_directives={"language_level": "3", "embedsignature": True},
        include_path=[HERE],
    )


# Stubs exist before setuptools lists the package's modules (also for `setup.py build_ext`).
generate_stubs()

setup(
    packages=["chaperon", "chaperon.v1", "master_service", "worker_service", "_fastpath"],
    package_data={
        "chaperon": ["py.typed"],
        "chaperon.v1": ["*.pyi"],
        "_fastpath": ["*.pxd", "includes/*.pxd"],
    },
    ext_modules=extensions(),
    cmdclass={"build_py": BuildPy, "build_protos": BuildProtos},
    zip_safe=False,
)
