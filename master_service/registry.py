"""The worker registry: who is there, what each can take, who has gone quiet.

Workers register with an address and a capacity (engine threads) and heartbeat every
``heartbeat_interval_s``; one silent for ``lost_after_intervals`` intervals is LOST and takes
no new load (it comes back with its next heartbeat or registration), and one silent for
``forget_after_s`` is removed from the list. Registering again from
the same address reuses the worker's id, so a worker that re-registers after a master restart
or a network blip never shows up twice. What a worker registers with is shown to operators
(``chaperon workers``, reports): a control character in it is refused (INVALID_ARGUMENT).
The clock is injectable for tests.

The registry tells the master's log what happens to its workers (INFO, visible by default):
a worker that joins (``worker w-1 joined from 127.0.0.1:40001 (4 threads)``), is lost
(WARNING, ``worker w-1 lost: no heartbeat for 3s``), comes back, or is forgotten. Losing is
seen by ``sweep``, which the scheduler's runner calls about every second whatever it does.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from chaperon.core.errors import InvalidArgument, NotFound
from chaperon.core.text import control_char_problem
from chaperon.v1 import worker_pb2

log = logging.getLogger(__name__)


@dataclass
class WorkerEntry:
    worker_id: str
    address: str
    capacity: int
    labels: dict[str, str] = field(default_factory=dict)
    version: str = ""
    ignored: bool = False
    last_heartbeat: float = 0.0  # monotonic
    last_heartbeat_wall: float = 0.0
    state: int = worker_pb2.WORKER_IDLE
    current_run_id: str = ""
    tls: bool = False
    load_1m: float = 0.0
    healthy: bool = True
    sessions_active: int = 0
    said_lost: bool = False  # the log was told it is lost (and is told when it is back)


class WorkerRegistry:
    def __init__(
        self,
        heartbeat_interval_s: float = 1.0,
        lost_after_intervals: int = 3,
        clock: Callable[[], float] = time.monotonic,
        forget_after_s: float = 600.0,
    ) -> None:
        self.heartbeat_interval_s = heartbeat_interval_s
        self._lost_after_s = heartbeat_interval_s * lost_after_intervals
        self._forget_after_s = forget_after_s
        self._clock = clock
        self._lock = threading.Lock()
        self._workers: dict[str, WorkerEntry] = {}

    def register(
        self,
        address: str,
        capacity: int,
        labels: dict[str, str] | None = None,
        version: str = "",
        worker_id: str = "",
        tls: bool = False,
    ) -> str:
        _check_text(address, labels or {}, version, worker_id)
        now = self._clock()
        with self._lock:
            existing = self._workers.get(worker_id) if worker_id else None
            if existing is None:
                existing = next((w for w in self._workers.values() if w.address == address), None)
            if existing is not None:
                existing.address = address
                existing.capacity = capacity
                existing.labels = dict(labels or {})
                existing.version = version
                existing.tls = tls
                existing.last_heartbeat = now
                existing.last_heartbeat_wall = time.time()
                existing.state = worker_pb2.WORKER_IDLE
                existing.said_lost = False
                log.info(
                    "worker %s joined again from %s (%s)",
                    existing.worker_id,
                    address,
                    _threads(capacity),
                )
                return existing.worker_id
            new_id = worker_id or f"w-{uuid.uuid4().hex[:10]}"
            log.info("worker %s joined from %s (%s)", new_id, address, _threads(capacity))
            self._workers[new_id] = WorkerEntry(
                worker_id=new_id,
                address=address,
                capacity=capacity,
                labels=dict(labels or {}),
                version=version,
                tls=tls,
                last_heartbeat=now,
                last_heartbeat_wall=time.time(),
            )
            return new_id

    def heartbeat(
        self,
        worker_id: str,
        state: int,
        load_1m: float = 0.0,
        healthy: bool = True,
        sessions_active: int = 0,
    ) -> bool:
        with self._lock:
            w = self._workers.get(worker_id)
            if w is None:
                return False
            self._back(w)
            w.last_heartbeat = self._clock()
            w.last_heartbeat_wall = time.time()
            w.load_1m = load_1m
            w.healthy = healthy
            w.sessions_active = sessions_active
            if state in (worker_pb2.WORKER_IDLE, worker_pb2.WORKER_BUSY):
                w.state = state
            return True

    def touch(self, worker_id: str) -> None:
        """A report arrived from the worker: as good as a heartbeat (a busy master may be slow
        to answer heartbeats, but its report streams prove the worker alive)."""
        with self._lock:
            w = self._workers.get(worker_id)
            if w is not None:
                self._back(w)
                w.last_heartbeat = self._clock()
                w.last_heartbeat_wall = time.time()

    def _back(self, w: WorkerEntry) -> None:
        """A sign of life from ``w`` (lock held): if the log was told it is lost, say it is
        back."""
        if w.said_lost:
            w.said_lost = False
            silent_s = self._clock() - w.last_heartbeat
            log.info("worker %s is back (silent for %.0fs)", w.worker_id, silent_s)

    def sweep(self) -> None:
        """Tell the log of workers lost since the last sweep (each once), and forget the
        long-silent ones; cheap (no copies)."""
        now = self._clock()
        with self._lock:
            self._forget(now)
            for w in self._workers.values():
                silent_s = now - w.last_heartbeat
                if silent_s > self._lost_after_s and not w.said_lost:
                    w.said_lost = True
                    log.warning("worker %s lost: no heartbeat for %.0fs", w.worker_id, silent_s)

    def _forget(self, now: float) -> None:
        """Drop the workers silent for ``forget_after_s`` (lock held), saying so."""
        for worker_id in [
            w.worker_id
            for w in self._workers.values()
            if now - w.last_heartbeat > self._forget_after_s
        ]:
            silent_s = now - self._workers.pop(worker_id).last_heartbeat
            log.info("worker %s forgotten: no heartbeat for %.0fs", worker_id, silent_s)

    def set_ignored(self, worker_id: str, ignored: bool) -> WorkerEntry:
        with self._lock:
            w = self._workers.get(worker_id)
            if w is None:
                raise NotFound(f"no worker {worker_id!r} (see ListWorkers)")
            w.ignored = ignored
            return replace(w)

    def set_run(self, worker_id: str, run_id: str) -> None:
        with self._lock:
            w = self._workers.get(worker_id)
            if w is not None:
                w.current_run_id = run_id
                w.state = worker_pb2.WORKER_BUSY if run_id else worker_pb2.WORKER_IDLE

    def snapshot(self) -> list[WorkerEntry]:
        """Copies of every worker, with LOST marked from the heartbeat age."""
        return self._copies(lambda w, lost: True)

    def available(self) -> list[WorkerEntry]:
        """Workers that can take load: not ignored, not lost, healthy."""
        return self._copies(lambda w, lost: not lost and not w.ignored and w.healthy)

    def lost_ids(self) -> set[str]:
        """The ids of the LOST workers, without copying the list."""
        cutoff = self._clock() - self._lost_after_s
        with self._lock:
            return {w.worker_id for w in self._workers.values() if w.last_heartbeat < cutoff}

    def live_count(self) -> int:
        """How many workers are not LOST, without copying the list."""
        cutoff = self._clock() - self._lost_after_s
        with self._lock:
            return sum(1 for w in self._workers.values() if w.last_heartbeat >= cutoff)

    def _copies(self, keep: Callable[[WorkerEntry, bool], bool]) -> list[WorkerEntry]:
        """Copies of the workers that ``keep(worker, lost)`` keeps, sorted by id. Only those
        are copied: the lock (which heartbeats wait for) is held as briefly as it can be."""
        now = self._clock()
        with self._lock:
            # A worker silent for long (scaled down, host gone) is forgotten; it registers
            # again as new if it ever comes back.
            self._forget(now)
            out = []
            for w in self._workers.values():
                lost = now - w.last_heartbeat > self._lost_after_s
                if keep(w, lost):
                    entry = copy.copy(w)
                    if lost:
                        entry.state = worker_pb2.WORKER_LOST
                    out.append(entry)
        return sorted(out, key=lambda w: w.worker_id)


def _threads(capacity: int) -> str:
    return f"{capacity} thread" if capacity == 1 else f"{capacity} threads"


def _check_text(address: str, labels: dict[str, str], version: str, worker_id: str) -> None:
    """InvalidArgument naming each registration field that holds a control character."""
    fields = [("address", address), ("version", version), ("worker_id", worker_id)]
    for key, value in labels.items():
        fields += [(f"labels[{key!r}]", key), (f"labels[{key!r}]", value)]
    violations = []
    for name, text in fields:
        problem = control_char_problem(text)
        if problem:
            violations.append((name, problem))
    if violations:
        raise InvalidArgument(violations, "worker registration")
