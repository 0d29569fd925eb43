"""Build: generate the gRPC stubs from protos/ and cythonize _fastpath.

Both happen at build time (``pip install .`` or ``pip install -e .``); nothing generated is
committed. The stubs are written into ``chaperon/v1/`` in the source tree (so editable installs
and the test suite see them) before the packages are collected.
"""

from __future__ import annotations

import glob
import os
import shlex
import subprocess
import sys
import sysconfig

from setuptools import Command, find_packages, setup
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


OPENSSL_LIBS = ["ssl", "crypto"]


def _uses_openssl(ext: Extension) -> bool:
    """Whether the extension's Cython sources (or its .pxd) use the OpenSSL headers."""
    for source in ext.sources:
        for path in (source, os.path.splitext(source)[0] + ".pxd"):
            try:
                with open(os.path.join(HERE, path), encoding="utf-8") as f:
                    text = f.read()
            except FileNotFoundError:
                continue
            if "includes.openssl" in text or "includes.crypto" in text or "_fastpath.tls " in text:
                return True
    return False


def require_openssl_headers() -> None:
    """Fail early and clearly when the compiler cannot see <openssl/ssl.h>."""
    cc = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
    cflags = shlex.split(os.environ.get("CPPFLAGS", "")) + shlex.split(os.environ.get("CFLAGS", ""))
    probe = "#include <openssl/ssl.h>\n#include <openssl/x509v3.h>\n"
    try:
        result = subprocess.run(
            [*cc, *cflags, "-E", "-x", "c", "-", "-o", os.devnull],
            input=probe.encode(),
            capture_output=True,
        )
        found = result.returncode == 0
        detail = result.stderr.decode(errors="replace").strip().splitlines()[:1]
    except OSError as exc:
        found, detail = False, [str(exc)]
    if not found:
        raise SystemExit(
            "setup.py: the OpenSSL development headers (openssl/ssl.h) were not found by "
            f"{' '.join(cc)}; _fastpath's TLS layer needs them. Install libssl-dev "
            "(Debian/Ubuntu: apt-get install libssl-dev) or openssl-devel (Fedora/RHEL: "
            "dnf install openssl-devel), or point CFLAGS/LDFLAGS at another OpenSSL 1.1.1+."
            + (f" (compiler said: {detail[0]})" if detail else "")
        )


def extensions() -> list:
    from Cython.Build import cythonize

    flags = ["-O3"]
    if sys.platform.startswith("linux"):
        flags.append("-D_GNU_SOURCE")
    exts = [
        Extension("_fastpath.histogram", ["_fastpath/histogram.pyx"], extra_compile_args=flags),
        Extension("_fastpath.http1", ["_fastpath/http1.pyx"], extra_compile_args=flags),
        Extension(
            "_fastpath.ws", ["_fastpath/ws.pyx"], extra_compile_args=flags, libraries=["crypto"]
        ),
        Extension("_fastpath.extract", ["_fastpath/extract.pyx"], extra_compile_args=flags),
        Extension(
            "_fastpath.engine",
            ["_fastpath/engine.pyx"],
            extra_compile_args=flags,
            # crypto: the WebSocket handshake's SHA-1 (ws.pxd)
            libraries=["pthread", "crypto"],
        ),
        Extension(
            "_fastpath.tls",
            ["_fastpath/tls.pyx"],
            extra_compile_args=flags,
            libraries=OPENSSL_LIBS,
        ),
    ]
    # Developers may rebuild one module alone: CHAPERON_EXT=histogram python setup.py build_ext -i
    only = os.environ.get("CHAPERON_EXT")
    if only:
        exts = [e for e in exts if e.name.split(".")[-1] in only.split(",")]
    # Only the TLS layer links libssl/libcrypto (modules that cimport it call it through
    # Cython's C-API table), but every module that cimports it includes the headers.
    if any(_uses_openssl(e) for e in exts):
        require_openssl_headers()
    return cythonize(
        exts,
        compiler_directives={"language_level": "3", "embedsignature": True},
        include_path=[HERE],
    )


# Stubs exist before setuptools lists the package's modules (also for `setup.py build_ext`).
generate_stubs()

setup(
    # Every package under these roots (chaperon.core.lang and the like are found by themselves).
    packages=find_packages(
        include=["chaperon", "chaperon.*", "master_service", "worker_service", "_fastpath"]
    ),
    package_data={
        "chaperon": ["py.typed", "*.pyi"],
        "chaperon.v1": ["*.pyi"],
        "_fastpath": ["*.pxd", "includes/*.pxd"],
    },
    ext_modules=extensions(),
    cmdclass={"build_py": BuildPy, "build_protos": BuildProtos},
    zip_safe=False,
)
