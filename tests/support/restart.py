"""A ``chaperon master`` that a test can SIGKILL and start again on the same port and database.

Theory of operation: the port is picked once and the database file lives in the test's
directory, so every incarnation of the master serves the same address from the same store
(workers keep dialing the address they were given). Each incarnation is its own
:class:`~support.procs.ManagedProcess` with its own logs (``master-1.err``, ``master-2.err``,
...). :meth:`RestartableMaster.kill` sends SIGKILL (no shutdown code runs, as after a crash)
and waits until the port can be bound again before anything restarts on it.
"""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from .cluster import READY_TIMEOUT_S, master_argv
from .ports import LOOPBACK, address, free_port
from .procs import ManagedProcess, ProcessNotReady, python_env, wait_for_health


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """True if a listening socket could bind ``host:port`` now (SO_REUSEADDR, as gRPC does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def wait_port_free(port: int, timeout_s: float = 10.0, host: str = LOOPBACK) -> None:
    deadline = time.monotonic() + timeout_s
    while not port_is_free(port, host):
        if time.monotonic() >= deadline:
            raise ProcessNotReady(f"{host}:{port} still in use {timeout_s}s after the kill")
        time.sleep(0.05)


class RestartableMaster:
    """One master address and database, served by successive processes."""

    def __init__(self, directory: Path, extra_args: Sequence[str] = ()) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.db_path = self.directory / "master.db"
        self.extra_args = list(extra_args)
        self.incarnations: list[ManagedProcess] = []

    @property
    def address(self) -> str:
        return address(self.port)

    @property
    def process(self) -> ManagedProcess:
        assert self.incarnations, "the master was never started"
        return self.incarnations[-1]

    def start(self, ready_timeout_s: float = READY_TIMEOUT_S) -> float:
        """Start a new incarnation; return the seconds it took to answer health SERVING."""
        if self.incarnations and self.process.is_running():
            raise RuntimeError("the previous master is still running")
        proc = ManagedProcess(
            f"master-{len(self.incarnations) + 1}",
            [*master_argv(self.port, self.db_path), *self.extra_args],
            self.directory,
            env=python_env(),
            cwd=self.directory,
        )
        self.incarnations.append(proc)
        began = time.monotonic()
        proc.start()
        try:
            wait_for_health(self.address, ready_timeout_s, process=proc)
        except BaseException:
            proc.stop()
            raise
        return time.monotonic() - began

    def kill(self, port_timeout_s: float = 10.0) -> None:
        """SIGKILL the running master (no shutdown code runs), then wait for its port."""
        proc = self.process
        proc.signal(signal.SIGKILL)
        proc.wait(10.0)
        wait_port_free(self.port, port_timeout_s)

    def stop(self) -> None:
        for proc in self.incarnations:
            proc.stop()

    def describe(self) -> str:
        return "\n".join(p.describe() for p in self.incarnations)


@contextmanager
def restartable_master(
    directory: Path, extra_args: Sequence[str] = ()
) -> Iterator[RestartableMaster]:
    """A started :class:`RestartableMaster`; every incarnation is stopped on exit."""
    master = RestartableMaster(directory, extra_args)
    try:
        master.start()
        yield master
    finally:
        master.stop()
