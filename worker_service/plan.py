"""The worker's side of the plan compiler: compile an assignment with this worker's backend.

The compiler is ``chaperon.core.lang`` (the master checks load tests with the same rules);
this module gives it the worker's ``Backend`` (allow-list, DNS, python steps) and says how
many engine threads a worker runs by default.
"""

from __future__ import annotations

import os

from _fastpath.engine import (  # noqa: F401 - re-exported: the op kinds of the plans
    OP_ABORT,
    OP_ADD_METRIC,
    OP_ASSIGN,
    OP_ASYNC,
    OP_AWAIT,
    OP_AWAIT_ALL,
    OP_AWAIT_SIGNAL,
    OP_DELAY,
    OP_HTTP,
    OP_LOOP,
    OP_PYTHON,
    OP_RANDOM_DELAY,
    OP_REPEAT,
    OP_RETRY,
    OP_SIGNAL,
    OP_SPREAD,
    OP_UNSET,
    OP_UPDATE_ADD,
    OP_WS_AWAIT_RECV,
    OP_WS_CLOSE,
    OP_WS_CONNECT,
    OP_WS_RECV,
    OP_WS_SEND,
)
from chaperon.core.allowlist import AllowList
from chaperon.core.lang.plan import EnginePlan, trim_schedule  # noqa: F401 - re-exported
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
