"""What the master needs from a worker transport, and the two ways talking to a worker fails.

The scheduler sends a worker its ``Assignment`` and reads back the stream of reports through
a ``WorkerTransport``; ``master_service.worker_client.GrpcWorkerTransport`` is the real one,
and tests swap in fakes. A transport reports failure with one of two domain errors, never
with a transport's status code, so the scheduler and the run controller decide on meaning
alone:

- ``AssignmentRefused``: the worker answered and said no (a step it cannot run, a target
  outside its allow-list, busy, over a limit). It is not lost: the run fails with its reason.
- ``WorkerLost``: anything else (unreachable, connection reset, the stream broke mid-run).
  Its share of the run is lost, or moved to the other workers where the model allows.

Raised from ``run_assignment`` or while iterating the stream it returned, and from
``cancel_assignment``. The classes derive from the core's errors so that, should one ever
reach a servicer, it maps to a sensible status (FAILED_PRECONDITION, UNAVAILABLE).

Threads: a transport is called from the scheduler's runner thread and from every
assignment's stream-reading thread at once; implementations must be thread-safe. A stream is
read by one thread, and ``cancel`` may be called on it from any thread, at any time, more
than once, also after it ended.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from chaperon.core.errors import FailedPrecondition, Unavailable
from chaperon.v1 import worker_pb2


class AssignmentRefused(FailedPrecondition):
    """The worker answered and refused the assignment; ``message`` says why (its words)."""


class WorkerLost(Unavailable):
    """The worker could not be reached, or its stream broke; ``message`` says how."""


class Cancellable(Protocol):
    def cancel(self) -> None:
        """Stop the stream; a thread reading it gets the end (or WorkerLost) soon after."""


class AssignmentStream(Cancellable, Protocol):
    """A worker's reports for one assignment, as they come; ends after the final report."""

    def __iter__(self) -> Iterator[worker_pb2.WorkerReport]: ...


class WorkerTransport(Protocol):
    def run_assignment(self, address: str, assignment: worker_pb2.Assignment) -> AssignmentStream:
        """Send the worker at ``address`` its assignment; its reports come on the stream."""
        ...

    def cancel_assignment(self, address: str, assignment_id: str) -> None:
        """Ask the worker to stop an assignment early (it then sends its final report)."""
        ...
