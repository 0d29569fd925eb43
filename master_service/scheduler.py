"""The scheduler: one load test at a time, FIFO, spread over the workers; the threads of it.

Theory of operation. Three pieces, each in its own module, are put to work here:

- ``RunQueue`` (``run_queue``): the SCHEDULED runs in the store, oldest first, and every
  change of a run's state (submit, cancel of a queued run, claim, final state, recovery).
- ``RunController`` (``run_controller``): one per running run; a state machine that takes
  events (a stream opened, a report stored, a refusal, a stream's end, a silent worker, a
  cancel, the deadline), answers with actions, and decides the final state.
- the splitter (``splitter``), used by the controller: who gets which sessions.
- ``Retention`` (``retention``): deletes the finished runs the retention policy drops, on its
  own thread (``chaperon-retention``), woken by the queue whenever a run ends.

Threads. The *runner* (``chaperon-scheduler``, started by ``start``) takes the oldest run,
waits (bounded) for an available worker, claims the run and builds its controller and a
``_RunDriver``. The driver starts one *stream thread* per assignment (``assignment-<id>``),
which sends the assignment through the ``WorkerTransport``, stores each report, and once the
store's batch has committed hands it to the controller (which merges it: a figure a watcher
saw is in the database and survives a crash of the master); the stream's end, or the
transport's ``AssignmentRefused`` / ``WorkerLost``, becomes the stream's last event. Meanwhile
the runner feeds the controller the deadline and the workers whose heartbeats stopped, until
every stream is over; then it asks the controller for the final run and stores it. The
master's RPCs call ``submit``, ``request_cancel``, ``progress`` and the queries from its
executor's threads (``wait`` and ``cancel`` block until a run ends: for callers that can
afford a thread); whoever must learn of a run's end at once registers ``on_run_change``.

Actions are carried out by whichever thread got them from the controller, outside its lock:
starting a stream thread, ``cancel_assignment`` on a worker, cancelling a stream (after a
grace, on a timer thread). Locks: the queue's condition (run states, the running run's
driver), each controller's own lock (its run's state), and the driver's ``_threads_lock``
(its list of stream threads, read only as a safety net: the runner gives up waiting if every
stream thread has died without ending its stream).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout

from chaperon.core.allowlist import AllowList
from chaperon.core.errors import ChaperonError
from chaperon.core.health import ServiceHealth
from chaperon.v1 import loadtest_pb2, results_pb2, worker_pb2
from master_service.aggregator import LiveTotals
from master_service.registry import WorkerEntry, WorkerRegistry
from master_service.retention import Retention, RetentionPolicy
from master_service.run_controller import (
    Action,
    CancelAssignment,
    CancelRequested,
    CancelStream,
    DeadlinePassed,
    Event,
    Refused,
    ReportStored,
    RunController,
    StartAssignment,
    StopReason,
    StreamEnded,
    StreamOpened,
    WorkerSilent,
)
from master_service.run_queue import TERMINAL, RunQueue
from master_service.store import Store
from master_service.transport import AssignmentRefused, WorkerTransport

log = logging.getLogger(__name__)

# How long a worker's report may wait for the store's batched commit before its stream fails.
STORE_COMMIT_TIMEOUT_S = 30.0
# How often the runner looks at the deadline and the registry while a run is in flight.
POLL_S = 0.2


class Scheduler:
    def __init__(
        self,
        store: Store,
        registry: WorkerRegistry,
        transport: WorkerTransport,
        report_interval_s: float = 1.0,
        worker_wait_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        allow: AllowList | None = None,
        health: ServiceHealth | None = None,
        retention: RetentionPolicy | None = None,
        retention_interval_s: float = 300.0,
    ) -> None:
        self._health = health or ServiceHealth()
        self._retention = Retention(
            store,
            retention or RetentionPolicy(),
            lambda run_id: self._queue.delete(run_id),
            TERMINAL,
            retention_interval_s,
        )
        self._queue: RunQueue[_RunDriver] = RunQueue(
            store, allow, self._health, on_end=self._retention.poke
        )
        self._store = store
        self._registry = registry
        self._transport = transport
        self._report_interval_s = report_interval_s
        self._worker_wait_s = worker_wait_s
        self._clock = clock
        self._thread: threading.Thread | None = None
        self._queue.recover()

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="chaperon-scheduler", daemon=True)
        self._thread.start()
        self._retention.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop taking runs; a run in flight ends INTERRUPTED (its streams are cancelled)."""
        self._retention.stop(timeout_s)
        self._queue.close()
        driver = self._queue.running()
        if driver is not None:
            driver.feed(CancelRequested(StopReason.MASTER_STOP))
        if self._thread is not None:
            self._thread.join(timeout_s)

    # -- queries and commands (RPC threads) -----------------------------------------------------

    @property
    def allowed_targets(self) -> list[str]:
        return self._queue.allowed_targets

    def check(self, load_test: loadtest_pb2.LoadTest) -> None:
        """Validate fully and check the targets against the allow-list (raises)."""
        self._queue.check(load_test)

    def submit(self, load_test: loadtest_pb2.LoadTest) -> results_pb2.LoadTestRun:
        return self._queue.submit(load_test)

    def get(self, run_id: str) -> results_pb2.LoadTestRun:
        return self._queue.get(run_id)

    def wait(
        self, run_id: str, still_wanted: Callable[[], bool] = lambda: True
    ) -> results_pb2.LoadTestRun:
        """Block until the run ends (or ``still_wanted`` turns false); return it."""
        return self._queue.wait(run_id, still_wanted)

    def cancel(self, run_id: str) -> results_pb2.LoadTestRun:
        """Cancel a scheduled run at once, or a running one (returns when it has ended)."""
        run = self.request_cancel(run_id)
        return run if run is not None else self._queue.wait(run_id)

    def request_cancel(self, run_id: str) -> results_pb2.LoadTestRun | None:
        """Cancel a scheduled run and return it; for a running one, ask its driver to stop
        it and return None (it ends within the streams' grace: wait for that elsewhere).
        NotFound for an unknown id, FailedPrecondition for a run that has ended."""
        run = self._queue.cancel_queued(run_id)
        if run is not None:
            return run
        driver = self._queue.running()
        if driver is not None and driver.run_id == run_id:
            driver.feed(CancelRequested(StopReason.CANCEL))
            return None
        return self._queue.get(run_id)  # it ended meanwhile

    def delete(self, run_id: str) -> int:
        """Delete a finished run and what is stored for it; the state it had (raises
        NotFound, or FailedPrecondition for a SCHEDULED or RUNNING run)."""
        state = self._queue.delete(run_id)
        try:
            self._store.reclaim_space()
        except Exception:  # noqa: BLE001 - the run is deleted; the next delete tries again
            log.exception("giving back the space of run %s failed", run_id)
        return state

    @property
    def retention(self) -> RetentionPolicy:
        return self._retention.policy

    def on_run_change(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(run_id)`` after each change of a run's state (see
        ``RunQueue.on_change``: from any thread, and it must return at once)."""
        self._queue.on_change(listener)

    def list_runs(
        self, states: list[int], after_seq: int, limit: int
    ) -> list[tuple[int, results_pb2.LoadTestRun]]:
        return self._queue.list_runs(states, after_seq, limit)

    def runs_total(self) -> int:
        return self._queue.count()

    def queue_length(self) -> int:
        return self._queue.count(results_pb2.SCHEDULED)

    def running_run_id(self) -> str:
        driver = self._queue.running()
        return driver.run_id if driver is not None else ""

    def progress(
        self, run_id: str
    ) -> tuple[float, list[tuple[str, int, int, float, float]]] | None:
        """Elapsed seconds and per-key figures of the running run so far (None if it is not)."""
        driver = self._queue.running()
        if driver is None or driver.run_id != run_id:
            return None
        return driver.controller.progress()

    def live(self, run_id: str) -> LiveTotals | None:
        """The running run's totals so far (None if it is not running)."""
        driver = self._queue.running()
        if driver is None or driver.run_id != run_id:
            return None
        return driver.controller.live()

    def runs_ahead(self, run_id: str) -> int:
        """How many runs are ahead of a SCHEDULED one (running, or queued before it)."""
        return self._queue.runs_ahead(run_id)

    # -- the runner -----------------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            while not self._queue.closed:
                self._registry.sweep()  # lost workers are told to the log, idle or not
                run = self._queue.next_scheduled(wait_s=1.0)
                if run is None:
                    continue
                try:
                    self._execute(run)
                except Exception as exc:  # noqa: BLE001 - one bad run must not stop the queue
                    log.exception("run %s failed", run.id)
                    self._queue.abandon(run.id, f"internal error: {type(exc).__name__}: {exc}")
        except BaseException as exc:
            # Nothing above raises by design; if something does, say so where it is seen.
            self._health.fail("the runner", f"stopped: {type(exc).__name__}: {exc}")
            raise

    def _wait_for_workers(self, run_id: str) -> list[WorkerEntry]:
        deadline = self._clock() + self._worker_wait_s
        while True:
            self._registry.sweep()
            workers = self._registry.available()
            if workers or self._clock() >= deadline:
                return workers
            if not self._queue.still_scheduled(run_id, wait_s=POLL_S):
                return []

    def _execute(self, run: results_pb2.LoadTestRun) -> None:
        workers = self._wait_for_workers(run.id)
        if not workers:
            self._queue.fail_scheduled(
                run,
                f"no worker available after {self._worker_wait_s:g}s "
                "(start one with: chaperon worker --master HOST:PORT)",
            )
            return
        controller = RunController(
            run, workers, report_interval_s=self._report_interval_s, clock=self._clock
        )
        driver = _RunDriver(controller, self._transport, self._registry, self._store, self._clock)
        if not self._queue.claim(run, driver):
            return  # cancelled while it waited for workers, or the master is stopping
        for worker_id in controller.worker_ids:
            self._registry.set_run(worker_id, run.id)
        count = len(controller.worker_ids)
        log.info(
            "run %s started: %s on %d worker%s",
            run.id,
            run.load_test.name or "(unnamed)",
            count,
            "" if count == 1 else "s",
        )
        try:
            driver.run()
        finally:
            for worker_id in controller.worker_ids:
                self._registry.set_run(worker_id, "")
        self._queue.finish(controller.finish())


class _RunDriver:
    """The I/O around one run's controller: its stream threads and the actions it asks for.

    ``feed`` may be called from any thread; ``run`` is the runner's.
    """

    def __init__(
        self,
        controller: RunController,
        transport: WorkerTransport,
        registry: WorkerRegistry,
        store: Store,
        clock: Callable[[], float],
    ) -> None:
        self.controller = controller
        self.run_id = controller.run_id
        self._transport = transport
        self._registry = registry
        self._store = store
        self._clock = clock
        self._threads_lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def feed(self, event: Event) -> None:
        """Hand the controller an event and carry out what it answers."""
        self._apply(self.controller.handle(event))

    def run(self) -> None:
        """Start the assignments; until every stream is over, feed the controller the
        deadline and the workers whose heartbeats stopped."""
        controller = self.controller
        self._apply(controller.start())
        while not controller.wait_ended(POLL_S):
            self._registry.sweep()
            if self._clock() > controller.deadline_s:
                self.feed(DeadlinePassed())
            silent = self._registry.lost_ids()
            for worker_id in controller.worker_ids:
                if worker_id in silent:
                    self.feed(WorkerSilent(worker_id))
            with self._threads_lock:
                alive = any(t.is_alive() for t in self._threads)
            if not alive and not controller.wait_ended(0):
                log.error("run %s: every stream thread died before its stream ended", self.run_id)
                return

    def _apply(self, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case StartAssignment(worker=worker, assignment=assignment):
                    thread = threading.Thread(
                        target=self._read_stream,
                        args=(worker, assignment),
                        name=f"assignment-{assignment.assignment_id}",
                        daemon=True,
                    )
                    with self._threads_lock:
                        self._threads.append(thread)
                    thread.start()
                case CancelAssignment(address=address, assignment_id=assignment_id):
                    try:
                        self._transport.cancel_assignment(address, assignment_id)
                    except Exception:  # noqa: BLE001 - cancelling the stream still ends it
                        log.info("cancel of %s on %s failed", assignment_id, address)
                case CancelStream(stream=stream, after_s=after_s):
                    if after_s > 0:
                        threading.Timer(after_s, stream.cancel).start()
                    else:
                        stream.cancel()

    def _read_stream(self, worker: WorkerEntry, assignment: worker_pb2.Assignment) -> None:
        """A stream thread: the assignment's stream, turned into the controller's events."""
        assignment_id = assignment.assignment_id
        last: Event
        try:
            stream = self._transport.run_assignment(worker.address, assignment)
            self.feed(StreamOpened(assignment_id, stream))
            for report in stream:
                self._registry.touch(worker.worker_id)
                blob = report.SerializeToString()  # stored, and what the aggregator merges
                stored = self._store.add_delta(
                    self.run_id, worker.worker_id, report.sequence, blob, assignment_id
                )
                try:
                    stored.result(timeout=STORE_COMMIT_TIMEOUT_S)
                except FutureTimeout:
                    raise RuntimeError(
                        f"the master's database did not store a report within "
                        f"{STORE_COMMIT_TIMEOUT_S:g}s"
                    ) from None
                self.feed(ReportStored(assignment_id, report, blob))
        except AssignmentRefused as exc:
            last = Refused(assignment_id, exc.message)
        except Exception as exc:  # noqa: BLE001 - lost, broken or failed: the controller decides
            last = StreamEnded(
                assignment_id, exc.message if isinstance(exc, ChaperonError) else str(exc)
            )
        else:
            last = StreamEnded(assignment_id)
        try:
            self.feed(last)
        except Exception:  # noqa: BLE001 - the runner's safety net ends the run
            log.exception("run %s: the end of %s was not taken", self.run_id, assignment_id)
