"""The worker's side of the plan compiler: compile an assignment with this worker's backend.

The compiler is ``chaperon.core.lang`` (the master checks load tests with the same rules);
this module gives it the worker's ``Backend`` (allow-list, DNS, python steps) and says how
many engine threads a worker runs by default.
"""

from __future__ import annotations

import os

from chaperon.core.allowlist import AllowList
from chaperon.core.lang.plan import EnginePlan
from chaperon.core.lang.plan import compile_assignment as _compile
from chaperon.v1 import worker_pb2
from worker_service.backend import WorkerBackend


def compile_assignment(
    assignment: worker_pb2.Assignment,
    allow: AllowList | None = None,
    *,
    allow_python: bool = False,
) -> list[EnginePlan]:
    """One EnginePlan per share; raises InvalidArgument/ResourceExhausted naming the field,
    and PermissionDenied for a target outside ``allow`` (default: loopback only) or for a
    python step when ``allow_python`` is off (the worker's --allow-python-steps)."""
    return _compile(assignment, WorkerBackend(allow or AllowList(), allow_python))


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
