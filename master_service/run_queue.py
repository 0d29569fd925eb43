"""The run queue: a FIFO of SCHEDULED runs on top of the store, and every change of a run's state.

Theory of operation: the store keeps each run with its state and its submission order, so the
queue is the store's SCHEDULED runs, oldest first, and it survives a restart of the master.
``submit`` checks a load test and stores it SCHEDULED; the scheduler's runner thread takes the
oldest with ``next_scheduled`` and ``claim``s it (RUNNING) once it has workers, or fails it
(``fail_scheduled``); ``finish`` stores the final state. A SCHEDULED run is cancelled here
(``cancel_queued``); a RUNNING one is the runner's business, reached through ``running()``.
A finished run is deleted here (``delete``), by a user or by the retention; ``on_end`` is
called whenever a run reaches its final state (the retention's cue to look again).
At start, ``recover`` turns runs left RUNNING by a master that died into INTERRUPTED runs with
the partial metrics their stored deltas hold.

Every run's end is told to the master's log (``ended``: ``run run-1 SUCCEEDED in 10.2s:
12345 requests, 0 errors``; INFO when it succeeded, WARNING else, with the reason), as is a
submission; the runner tells of the start, with the workers it got.

A damaged row never stops the runner: one that does not decode is logged and stored again as
a FAILED run that says so, and a store that cannot be read is logged and tried again, with
the master's health NOT_SERVING (``chaperon.core.health``) until a read works again.

Locking: one condition, ``_cond``, guards every check-then-write of a run's state, the handle
of the running run (``_running``: set with the RUNNING state, cleared with the final one, so
whoever sees RUNNING finds the handle), and ``_closed``. Waiters (``wait``, the runner when the
queue is empty or it waits for workers) sleep on it; every change of state notifies it, and
tells the listeners registered with ``on_change`` (the master's run feeds, which wake the
streams and calls waiting on that run without polling the store). The
store has its own lock, always taken after this one. ``H`` is whatever the runner keeps per
running run; the queue only hands it back.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from typing import Generic, TypeVar

from chaperon.core.allowlist import AllowList
from chaperon.core.errors import FailedPrecondition, NotFound
from chaperon.core.health import ServiceHealth
from chaperon.core.results import totals
from chaperon.v1 import loadtest_pb2, results_pb2, worker_pb2
from master_service.aggregator import Aggregator
from master_service.store import Store, UnreadableRun
from master_service.validation import check_targets, validate_load_test

log = logging.getLogger(__name__)

TERMINAL = (
    results_pb2.SUCCEEDED,
    results_pb2.FAILED,
    results_pb2.CANCELLED,
    results_pb2.INTERRUPTED,
)

H = TypeVar("H")

# The name under which a queue that cannot be read is reported to the service's health.
QUEUE_COMPONENT = "the run queue"


class RunQueue(Generic[H]):
    def __init__(
        self,
        store: Store,
        allow: AllowList | None = None,
        health: ServiceHealth | None = None,
        on_end: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._allow = allow or AllowList()
        self._health = health or ServiceHealth()
        self._on_end = on_end
        self._cond = threading.Condition()
        self._running: H | None = None
        self._closed = False
        self._listeners: list[Callable[[str], None]] = []

    def on_change(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(run_id)`` after each change of a run's state, on the thread that
        made it and under the queue's lock: it must return at once (hand the news on)."""
        self._listeners.append(listener)

    def _changed(self, run_id: str) -> None:
        """Wake whoever waits on the condition and tell the listeners (``_cond`` held)."""
        self._cond.notify_all()
        for listener in self._listeners:
            try:
                listener(run_id)
            except Exception:  # noqa: BLE001 - a listener's fault never undoes a change
                log.exception("a run-change listener failed")

    # -- submitting and reading (RPC threads) ---------------------------------------------------

    @property
    def allowed_targets(self) -> list[str]:
        return list(self._allow.entries)

    def check(self, load_test: loadtest_pb2.LoadTest) -> None:
        """Validate fully and check the targets against the allow-list (raises)."""
        validate_load_test(load_test)
        check_targets(load_test, self._allow)

    def submit(self, load_test: loadtest_pb2.LoadTest) -> results_pb2.LoadTestRun:
        """Check the load test and queue it; the run is returned SCHEDULED."""
        self.check(load_test)
        run = results_pb2.LoadTestRun(
            id=f"run-{uuid.uuid4().hex[:12]}",
            state=results_pb2.SCHEDULED,
            load_test=load_test,
        )
        run.submitted_at.GetCurrentTime()
        with self._cond:
            self._store.put_run(run)
            self._changed(run.id)
        log.info("run %s submitted: %s", run.id, load_test.name or "(unnamed)")
        return run

    def get(self, run_id: str) -> results_pb2.LoadTestRun:
        run = self._store.get_run(run_id)
        if run is None:
            raise NotFound(f"no load test run with id {run_id!r}")
        return run

    def wait(
        self, run_id: str, still_wanted: Callable[[], bool] = lambda: True
    ) -> results_pb2.LoadTestRun:
        """Block until the run ends (or ``still_wanted`` turns false); return it."""
        while True:
            run = self.get(run_id)
            if run.state in TERMINAL or not still_wanted():
                return run
            with self._cond:
                self._cond.wait(0.5)

    def list_runs(
        self, states: list[int], after_seq: int, limit: int
    ) -> list[tuple[int, results_pb2.LoadTestRun]]:
        return self._store.list_runs(states, after_seq, limit)

    def count(self, state: int | None = None) -> int:
        return self._store.count(state)

    def runs_ahead(self, run_id: str) -> int:
        """Runs RUNNING or SCHEDULED before ``run_id`` (the queue is FIFO: they go first)."""
        return self._store.runs_ahead(run_id)

    def cancel_queued(self, run_id: str) -> results_pb2.LoadTestRun | None:
        """Cancel a SCHEDULED run and return it; None when it is RUNNING (see ``running``).

        Raises NotFound for an unknown id and FailedPrecondition for a run that has ended.
        """
        with self._cond:
            run = self.get(run_id)
            if run.state in TERMINAL:
                raise FailedPrecondition(
                    f"run {run_id} has already ended ({results_pb2.RunState.Name(run.state)})"
                )
            if run.state == results_pb2.RUNNING:
                return None
            run.state = results_pb2.CANCELLED
            run.finished_at.GetCurrentTime()
            self._store.put_run(run)
            self._changed(run_id)
            self._on_end()
            log.info("run %s CANCELLED before it started", run_id)
            return run

    def delete(self, run_id: str) -> int:
        """Delete a finished run and everything stored for it; return the state it had.

        Raises NotFound for an unknown id and FailedPrecondition for a run that is SCHEDULED
        or RUNNING (cancel it first). The state is read from the store's column, so a run
        whose stored bytes are damaged can be deleted too. Under the queue's condition: no
        run changes state meanwhile (a run that has ended never changes again).
        """
        with self._cond:
            state = self._store.run_state(run_id)
            if state is None:
                raise NotFound(f"no load test run with id {run_id!r}")
            if state not in TERMINAL:
                raise FailedPrecondition(
                    f"run {run_id} is {results_pb2.RunState.Name(state)}: only a finished run "
                    "can be deleted; cancel it first"
                )
            if not self._store.delete_run(run_id):
                raise NotFound(f"no load test run with id {run_id!r}")
            self._changed(run_id)
            return state

    def running(self) -> H | None:
        """The runner's handle of the RUNNING run, if one is."""
        with self._cond:
            return self._running

    # -- the runner's side ----------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        with self._cond:
            return self._closed

    def close(self) -> None:
        """No run is handed out or claimed any more; waiting runners wake up."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def next_scheduled(self, wait_s: float) -> results_pb2.LoadTestRun | None:
        """The oldest SCHEDULED run; None when there is none (after waiting up to ``wait_s``
        for one), when the queue is closed, or after setting a damaged row aside. Never
        raises: the runner calls it in a loop."""
        with self._cond:
            if self._closed:
                return None
            try:
                run = self._store.next_scheduled()
            except UnreadableRun as exc:
                self._fail_unreadable(exc, wait_s)
                return None
            except Exception as exc:  # noqa: BLE001 - a store error must not stop the runner
                log.exception("reading the queue failed; trying again in %gs", wait_s)
                self._health.fail(QUEUE_COMPONENT, f"cannot read the queued runs: {exc}")
                self._cond.wait(wait_s)
                return None
            self._health.ok(QUEUE_COMPONENT)
            if run is None:
                self._cond.wait(wait_s)
            return run

    def still_scheduled(self, run_id: str, wait_s: float) -> bool:
        """Whether the run is still SCHEDULED (and the queue open); if so, wait up to
        ``wait_s`` for a change first (a cancel, a worker, a submit)."""
        with self._cond:
            current = self._store.get_run(run_id)
            if self._closed or current is None or current.state != results_pb2.SCHEDULED:
                return False
            self._cond.wait(wait_s)
            return True

    def claim(self, run: results_pb2.LoadTestRun, handle: H) -> bool:
        """Mark the run RUNNING with ``handle`` as the running run's, unless it was cancelled
        meanwhile or the queue closed (then False, and nothing changes)."""
        with self._cond:
            current = self._store.get_run(run.id)
            if self._closed or current is None or current.state != results_pb2.SCHEDULED:
                return False
            run.state = results_pb2.RUNNING
            run.started_at.GetCurrentTime()
            self._store.put_run(run)
            self._running = handle
            self._changed(run.id)
            return True

    def fail_scheduled(self, run: results_pb2.LoadTestRun, error: str) -> None:
        """Fail a run that could not start, unless it was cancelled meanwhile or the queue
        closed (a closed queue leaves it SCHEDULED for the next master)."""
        with self._cond:
            current = self._store.get_run(run.id)
            if self._closed or current is None or current.state != results_pb2.SCHEDULED:
                return
            run.state = results_pb2.FAILED
            run.error = error
            run.finished_at.GetCurrentTime()
            self._store.put_run(run)
            self._changed(run.id)
            self._on_end()
        log.warning("run %s FAILED before it started: %s", run.id, error)

    def finish(self, run: results_pb2.LoadTestRun) -> None:
        """Store the run's final state; it is no longer the running run."""
        with self._cond:
            self._store.put_run(run)
            self._running = None
            self._changed(run.id)
            self._on_end()
        ended(run)

    def abandon(self, run_id: str, error: str) -> None:
        """The runner failed on this run: FAILED with ``error`` unless it already ended. Never
        raises (logs)."""
        with self._cond:
            self._running = None
            self._cond.notify_all()
            try:
                run = self._store.get_run(run_id)
                if run is not None and run.state not in TERMINAL:
                    run.state = results_pb2.FAILED
                    run.error = error
                    run.finished_at.GetCurrentTime()
                    self._store.put_run(run)
            except Exception:  # noqa: BLE001 - the runner goes on to the next run
                log.exception("could not mark run %s failed", run_id)
            self._changed(run_id)
            self._on_end()

    def _fail_unreadable(self, exc: UnreadableRun, wait_s: float) -> None:
        """Store a damaged run again as a readable FAILED run, so it leaves the queue."""
        log.error("%s; marking it failed", exc)
        failed = results_pb2.LoadTestRun(
            id=exc.run_id,
            state=results_pb2.FAILED,
            error=f"the master could not read this run back from its database: {exc}",
        )
        failed.finished_at.GetCurrentTime()
        try:
            self._store.put_run(failed)
            self._changed(exc.run_id)
        except Exception:  # noqa: BLE001 - try again later; do not spin
            log.exception("could not mark run %s failed", exc.run_id)
            self._cond.wait(wait_s)

    # -- after a restart ------------------------------------------------------------------------

    def recover(self) -> None:
        """Runs left RUNNING by a master that died become INTERRUPTED with what was stored."""
        seen: set[str] = set()
        while True:
            try:
                runs = self._store.list_runs(states=[results_pb2.RUNNING], limit=1_000_000)
                break
            except UnreadableRun as exc:
                if exc.run_id in seen:
                    raise
                seen.add(exc.run_id)
                with self._cond:
                    self._fail_unreadable(exc, 0.0)
        for _, run in runs:
            agg = Aggregator.for_load_test(run.load_test)
            for worker_id, _seq, blob in self._store.deltas(run.id):
                try:
                    agg.add_report(worker_id, worker_pb2.WorkerReport.FromString(blob), blob)
                except Exception:  # noqa: BLE001 - DecodeError or ValueError: a damaged delta
                    log.warning("run %s: a stored delta does not decode; skipped", run.id)
            run.result.CopyFrom(agg.result())
            run.state = results_pb2.INTERRUPTED
            run.error = "the master stopped while this run was in flight"
            run.finished_at.GetCurrentTime()
            self._store.put_run(run)
            log.warning("run %s INTERRUPTED: %s (its partial metrics are kept)", run.id, run.error)


def ended(run: results_pb2.LoadTestRun) -> None:
    """Tell the log how a run ended: its state, how long it ran, its requests and errors
    (``chaperon.core.results.totals``), and why, when it did not succeed."""
    took = ""
    if run.HasField("started_at") and run.HasField("finished_at"):
        seconds = (run.finished_at.ToNanoseconds() - run.started_at.ToNanoseconds()) / 1e9
        took = f" in {seconds:.1f}s"
    t = totals(run.result.metrics)
    state = results_pb2.RunState.Name(run.state)
    line = f"run {run.id} {state}{took}: {t.attempts} requests, {t.errors} errors"
    if run.state == results_pb2.SUCCEEDED:
        log.info("%s", line)
    else:
        log.warning("%s%s", line, f" ({run.error})" if run.error else "")
