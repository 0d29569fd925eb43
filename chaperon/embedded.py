"""The composition root of ``chaperon run`` and ``chaperon demo``: a master and one worker
in this process, on loopback.

It is the one place that builds both services together; the CLI and tests use it. The
master's database lives in a temporary directory unless a path is given, and the worker is
allowed to run ``python`` steps (everything runs on the user's own machine).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator

from master_service.server import start_master
from worker_service.server import start_worker

LOOPBACK = "127.0.0.1"
REGISTER_WITHIN_S = 15.0
STOP_GRACE_S = 0.5


class EmbeddedClusterError(RuntimeError):
    """The embedded master and worker could not be brought up."""


@contextlib.contextmanager
def embedded_cluster(threads: int, db_path: str | None = None) -> Iterator[str]:
    """A master and one worker in this process on loopback; yields the master's address.

    ``threads`` is the worker's engine threads (0: one per core).
    """
    with tempfile.TemporaryDirectory(prefix="chaperon-") as tmp:
        master = start_master(LOOPBACK, 0, db_path or os.path.join(tmp, "chaperon.db"))
        worker = None
        try:
            worker = start_worker(master.address, LOOPBACK, 0, threads, allow_python=True)
            assert worker.membership is not None
            if not worker.membership.registered.wait(REGISTER_WITHIN_S):
                raise EmbeddedClusterError(
                    "the embedded worker could not register with the embedded master"
                )
            yield master.address
        finally:
            if worker is not None:
                worker.stop(STOP_GRACE_S)
            master.stop(STOP_GRACE_S)
