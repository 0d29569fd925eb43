"""A Chaperon master and its workers as real ``chaperon`` processes on loopback.

Theory of operation: each process gets a free port, runs from its own directory (so any
file it writes by default stays in the test's temp dir) and is ready when its gRPC health
service answers SERVING. Workers are ready when, in addition, the master's ``ListWorkers``
shows them: tests never submit before the cluster is complete.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc

from .ports import LOOPBACK, address, free_port
from .procs import (
    ManagedProcess,
    ProcessNotReady,
    chaperon_command,
    python_env,
    running,
    wait_for_health,
)

READY_TIMEOUT_S = 30.0


@dataclass
class Service:
    """A running ``chaperon master`` or ``chaperon worker``."""

    process: ManagedProcess
    port: int

    @property
    def address(self) -> str:
        return address(self.port)


def master_argv(port: int, db_path: Path) -> list[str]:
    return [
        *chaperon_command(),
        "master",
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "--db",
        str(db_path),
    ]


def worker_argv(master_address: str, port: int, threads: int) -> list[str]:
    return [
        *chaperon_command(),
        "worker",
        "--master",
        master_address,
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "--threads",
        str(threads),
    ]


@contextmanager
def run_master(
    directory: Path, *, name: str = "master", extra_args: Sequence[str] = ()
) -> Iterator[Service]:
    """A ``chaperon master`` with its database in ``directory``; stopped on exit."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    process = ManagedProcess(
        name,
        [*master_argv(port, directory / "master.db"), *extra_args],
        directory,
        env=python_env(),
        cwd=directory,
    )

    def ready(proc: ManagedProcess) -> None:
        wait_for_health(address(port), READY_TIMEOUT_S, process=proc)

    with running(process, ready) as proc:
        yield Service(proc, port)


@contextmanager
def run_worker(
    directory: Path,
    master_address: str,
    *,
    name: str = "worker",
    threads: int = 1,
    extra_args: Sequence[str] = (),
) -> Iterator[Service]:
    """A ``chaperon worker`` registered with ``master_address``; stopped on exit."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    process = ManagedProcess(
        name,
        [*worker_argv(master_address, port, threads), *extra_args],
        directory,
        env=python_env(),
        cwd=directory,
    )

    def ready(proc: ManagedProcess) -> None:
        wait_for_health(address(port), READY_TIMEOUT_S, process=proc)

    with running(process, ready) as proc:
        yield Service(proc, port)


def list_workers(master_address: str, timeout_s: float = 5.0) -> list:
    """The master's ``ListWorkers`` (a list of ``WorkerInfo``)."""
    from chaperon.v1 import master_pb2, master_pb2_grpc

    with grpc.insecure_channel(master_address) as channel:
        stub = master_pb2_grpc.MasterStub(channel)
        reply = stub.ListWorkers(master_pb2.ListWorkersRequest(), timeout=timeout_s)
        return list(reply.workers)


def wait_for_workers(
    master: Service,
    workers: list[Service],
    timeout_s: float = READY_TIMEOUT_S,
) -> list:
    """Poll ``ListWorkers`` until every one of ``workers`` is listed; return the list."""
    deadline = time.monotonic() + timeout_s
    listed: list = []
    while True:
        master.process.check_running()
        for worker in workers:
            worker.process.check_running()
        try:
            listed = list_workers(master.address)
        except grpc.RpcError as exc:
            listed_note = f"ListWorkers failed: {exc.code()}: {exc.details()}"
        else:
            listed_note = f"listed: {[(w.worker_id, w.address) for w in listed]}"
            if len(listed) >= len(workers):
                return listed
        if time.monotonic() >= deadline:
            logs = "\n".join(s.process.describe() for s in [master, *workers])
            raise ProcessNotReady(
                f"master {master.address} did not list {len(workers)} workers within "
                f"{timeout_s}s ({listed_note})\n{logs}"
            )
        time.sleep(0.1)


@contextmanager
def run_cluster(
    directory: Path, *, workers: int = 2, threads: int = 1
) -> Iterator[tuple[Service, list[Service]]]:
    """A master and ``workers`` registered workers, all stopped on exit (workers first)."""
    with ExitStack() as stack:
        master = stack.enter_context(run_master(directory / "master"))
        started = [
            stack.enter_context(
                run_worker(
                    directory / f"worker{i}", master.address, name=f"worker{i}", threads=threads
                )
            )
            for i in range(workers)
        ]
        wait_for_workers(master, started)
        yield master, started
