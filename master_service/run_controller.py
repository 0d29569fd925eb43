"""One run in flight: a state machine fed by events, which decides the run's final state.

Theory of operation. The scheduler builds one ``RunController`` per run it starts, with the
workers it found. The controller splits the load test over them (``splitter``), and from then
on only reacts: the threads around it turn what they see into *events* and hand them to
``handle``, which updates the run's state and returns *actions* (start an assignment, cancel
one, cancel a stream) for the caller to carry out. It does no I/O and starts no thread, so
its decisions are tested by feeding it events (``tests/unit/test_run_controller.py``).

Events, and what they do while the run is RUNNING:

- ``StreamOpened``: the transport opened an assignment's stream (kept, to cancel it later).
- ``ReportStored``: a worker's report, already committed to the store, is merged into the
  run's aggregator (and so shown to watchers); its error is kept, its ``final`` and its
  per-share totals noted. A report with ``stopped_reason`` is a worker that stopped (SIGTERM)
  before its share was done: it is lost as below, with the reason.
- ``Refused``: the worker answered and refused its assignment: its reason becomes an error
  of the run; the worker is not lost.
- ``StreamEnded``: the assignment's stream is over. After the final report, that is the end
  of that worker's part. Without it, the worker is lost: its error is kept, an event says
  when and what it did not run, its closed sessions that did not complete are lost, and its
  open-model share is cut where the run is, the arrivals due until then and not reported
  are lost and the rest moves to the survivors (``accounting``). A takeover assignment that
  ends early is cut the same way, its worker is not lost for it.
- ``WorkerSilent``: the registry saw no heartbeat for too long: the worker is lost as above,
  and its stream cancelled at once rather than when TCP notices.
- ``CancelRequested`` (a user, or the master stopping) and ``DeadlinePassed`` (the run's
  timeout): every assignment is cancelled, each stream after a grace for its final report.

Phases: RUNNING -> DRAINING (cancel, master stop or deadline: nothing more is moved or counted
lost; the streams are ending) -> ENDED (every assignment's stream is over; from RUNNING
directly when the run just completes) -> FINISHED (``finish`` decided the final state, in
``final_state``: INTERRUPTED if the master stopped, CANCELLED if a user cancelled in time,
FAILED on timeout, errors without metrics, every worker lost, sessions or arrivals lost (a
worker lost or stopped before its share was done), nothing sent or every request failed, or
failed thresholds, else SUCCEEDED). By phase:

    event            RUNNING                              DRAINING            ENDED
    StreamOpened     keep the stream                      cut it at once      -
    ReportStored     merge; note its error and final;     merge; note         -
                     stopped: lose the worker
    Refused          an error (unless final or lost)      nothing             -
    StreamEnded      no final: lose the worker (takeover  nothing             -
                     assignment: cut it)
    WorkerSilent     lose the worker, cut its stream      nothing             nothing
    CancelRequested  -> DRAINING; cancel everything       cancel everything   noted; cancel
    DeadlinePassed   -> DRAINING; an error; cancel all    the same, once      nothing

(ENDED is reached from RUNNING or DRAINING by the last stream's end; FINISHED ignores all.)

Locking: one lock (``_cond``, a condition on it) guards every field; each event is handled
whole under it, so events from many threads are seen one at a time. The one thing done
outside it is merging a report (the hot path): the aggregator has its own lock, and a slow
merge must not hold up a cancel. ``wait_ended`` sleeps on the condition until ENDED.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from chaperon.core import results
from chaperon.core.durations import parse_duration_ns
from chaperon.core.loadtest import entry_duration_ns, graceful_stop_ns
from chaperon.v1 import loadtest_pb2, results_pb2, worker_pb2
from master_service.accounting import Part, note_report, takeover_pieces, tally
from master_service.aggregator import Aggregator, LiveTotals, evaluate_thresholds
from master_service.registry import WorkerEntry
from master_service.splitter import Share, demands, split, to_entry_share
from master_service.transport import Cancellable

# When a load test sets no timeout: its longest duration plus this grace, or this alone.
DEFAULT_TIMEOUT_GRACE_S = 60.0
DEFAULT_TIMEOUT_NO_DURATION_S = 3600.0
# After a cancel, how long a worker has to send its final report before its stream is cut.
FINAL_REPORT_GRACE_S = 2.0

INTERRUPTED_BY_MASTER = "the master was stopped while this run was in flight"


class Phase(enum.Enum):
    RUNNING = "running"
    DRAINING = "draining"
    ENDED = "ended"
    FINISHED = "finished"


class StopReason(enum.Enum):
    CANCEL = "cancel"  # a user cancelled the run
    MASTER_STOP = "master_stop"  # the master is shutting down


# -- events: what the threads around the controller saw ---------------------------------------


@dataclass(frozen=True)
class StreamOpened:
    assignment_id: str
    stream: Cancellable


@dataclass(frozen=True)
class ReportStored:
    assignment_id: str
    report: worker_pb2.WorkerReport
    serialized: bytes | None = None  # the report's wire form, when the caller has it


@dataclass(frozen=True)
class Refused:
    assignment_id: str
    reason: str


@dataclass(frozen=True)
class StreamEnded:
    assignment_id: str
    error: str | None = None  # None: it ended cleanly; else how it broke


@dataclass(frozen=True)
class WorkerSilent:
    worker_id: str


@dataclass(frozen=True)
class CancelRequested:
    reason: StopReason = StopReason.CANCEL


@dataclass(frozen=True)
class DeadlinePassed:
    pass


Event = (
    StreamOpened
    | ReportStored
    | Refused
    | StreamEnded
    | WorkerSilent
    | CancelRequested
    | DeadlinePassed
)


# -- actions: what the caller is asked to do ---------------------------------------------------


@dataclass(frozen=True)
class StartAssignment:
    """Send ``assignment`` to ``worker`` and read its stream (feeding the events back)."""

    worker: WorkerEntry
    assignment: worker_pb2.Assignment


@dataclass(frozen=True)
class CancelAssignment:
    """Ask the worker at ``address`` to stop the assignment (best effort)."""

    address: str
    assignment_id: str


@dataclass(frozen=True)
class CancelStream:
    """Cancel a stream, at once or after ``after_s`` (a grace for the final report)."""

    stream: Cancellable
    after_s: float = 0.0


Action = StartAssignment | CancelAssignment | CancelStream


# -- the bookkeeping ----------------------------------------------------------------------------


class _Stage(enum.Enum):
    SENT = "sent"  # StartAssignment returned; no stream yet
    STREAMING = "streaming"
    OVER = "over"  # the stream ended (or was refused, or never started)


@dataclass
class _Worker:
    entry: WorkerEntry
    main_id: str  # its first assignment's id (a survivor may also get takeovers)
    lost: bool = False
    assignment_ids: list[str] = field(default_factory=list)  # main first, then takeovers


@dataclass
class _Assignment:
    assignment_id: str
    worker: _Worker
    takeover: bool
    parts: list[Part]  # one per share, in the order of the assignment's shares
    stage: _Stage = _Stage.SENT
    stream: Cancellable | None = None
    final: bool = False  # its final report arrived
    done: bool = False  # ... and said the share ran to its end (not stopped)
    cut: bool = False  # its worker was lost or stopped before it was done


@dataclass
class _Flags:
    """Why the run stopped early, if it did (more than one may hold)."""

    cancelled: bool = False
    master_stopping: bool = False
    timed_out: bool = False


@dataclass
class _Log:
    """What the run's error and events will say, in the order it happened."""

    errors: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)  # worker ids, in the order they were lost


class RunController:
    """The state of one running load test; see the module docstring."""

    def __init__(
        self,
        run: results_pb2.LoadTestRun,
        workers: Sequence[WorkerEntry],
        *,
        report_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.run_id = run.id
        self.timeout_s = run_timeout_s(run.load_test)
        self._run = run
        self._report_interval_s = report_interval_s
        self._clock = clock
        self._started_s = clock()
        self.deadline_s = self._started_s + self.timeout_s
        self._aggregator = Aggregator.for_load_test(run.load_test)
        self._cond = threading.Condition()
        self._phase = Phase.RUNNING
        self._flags = _Flags()
        self._log = _Log()
        self._workers: dict[str, _Worker] = {}
        self._assignments: dict[str, _Assignment] = {}  # first assignments, then takeovers
        self._takeovers = 0
        self._first_shares: dict[str, list[Share]] = {}
        per_worker = split(demands(run.load_test), [w.capacity for w in workers])
        for entry, shares in zip(workers, per_worker, strict=True):
            if shares:
                worker = _Worker(entry, f"{run.id}/{entry.worker_id}")
                self._workers[entry.worker_id] = worker
                self._add_assignment(worker.main_id, worker, shares, takeover=False)
                self._first_shares[worker.main_id] = shares
        self._check_ended()

    # -- what the runner reads ------------------------------------------------------------------

    @property
    def worker_ids(self) -> list[str]:
        """The workers that got a share, in the order they were given (fixed at creation)."""
        return list(self._workers)

    @property
    def phase(self) -> Phase:
        with self._cond:
            return self._phase

    def wait_ended(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for every stream to be over; True once they are."""
        with self._cond:
            return self._cond.wait_for(
                lambda: self._phase in (Phase.ENDED, Phase.FINISHED), timeout_s
            )

    def progress(self) -> tuple[float, list[tuple[str, int, int, float, float]]]:
        """Elapsed seconds and (key, count, errors, p50_us, p99_us) of what was merged."""
        return self._aggregator.elapsed_s(), self._aggregator.progress()

    def live(self) -> LiveTotals:
        """The run's totals so far (sessions, requests, errors) of what was merged."""
        return self._aggregator.live()

    # -- the state machine ----------------------------------------------------------------------

    def start(self) -> list[Action]:
        """The first assignments to send (none if the run was stopped before it started)."""
        with self._cond:
            if self._phase is not Phase.RUNNING:
                for a in self._assignments.values():
                    a.stage = _Stage.OVER
                self._check_ended()
                return []
            return [
                StartAssignment(w.entry, self._assignment(w.main_id, self._first_shares[w.main_id]))
                for w in self._workers.values()
            ]

    def handle(self, event: Event) -> list[Action]:
        """Take one event in; return what the caller must do.

        ``ReportStored`` raises ValueError if the report's histograms do not decode (nothing
        of it is merged): for the caller, the stream has broken.
        """
        if isinstance(event, ReportStored):
            return self._on_report(event)
        with self._cond:
            if self._phase is Phase.FINISHED:
                return []
            actions: list[Action]
            match event:
                case StreamOpened():
                    actions = self._on_opened(event)
                case Refused():
                    actions = self._on_refused(event)
                case StreamEnded():
                    actions = self._on_ended(event)
                case WorkerSilent():
                    actions = self._on_silent(event)
                case CancelRequested():
                    actions = self._on_cancel(event)
                case DeadlinePassed():
                    actions = self._on_deadline()
            self._check_ended()
            return actions

    def _on_report(self, event: ReportStored) -> list[Action]:
        with self._cond:
            a = self._assignments[event.assignment_id]
        report = event.report
        self._aggregator.add_report(a.worker.entry.worker_id, report, event.serialized)
        with self._cond:
            worker_id = a.worker.entry.worker_id
            if report.error:
                self._log.errors.append(f"worker {worker_id}: {report.error}")
            note_report(a.parts, report)
            a.final = a.final or report.final
            a.done = a.done or (report.final and not report.stopped_reason)
            if not report.stopped_reason or self._phase is not Phase.RUNNING:
                return []
            reason = report.stopped_reason
            if a.worker.lost:
                # Its first stopped report lost it; a takeover's comes after: cut it too.
                return self._cut([a], a.worker, f"worker {worker_id} stopped ({reason})")
            return self._lose(
                a.worker, f"worker {worker_id} stopped ({reason})", f"stopped ({reason})"
            )

    def _on_opened(self, event: StreamOpened) -> list[Action]:
        a = self._assignments[event.assignment_id]
        a.stream = event.stream
        if a.stage is _Stage.SENT:
            a.stage = _Stage.STREAMING
        if self._phase is not Phase.RUNNING:
            return [CancelStream(event.stream)]
        return []

    def _ended_early(self, a: _Assignment) -> bool:
        """Whether an assignment's end is a failure to account for: no final report, while
        the run was not being stopped, from a worker not already lost."""
        return not a.final and self._phase is Phase.RUNNING and not a.worker.lost

    def _on_refused(self, event: Refused) -> list[Action]:
        a = self._assignments[event.assignment_id]
        if a.stage is _Stage.OVER:
            return []
        a.stage = _Stage.OVER
        if self._ended_early(a):
            # Not lost: it answered, and said why (the run fails with that reason).
            worker_id = a.worker.entry.worker_id
            self._log.errors.append(f"worker {worker_id} refused the assignment: {event.reason}")
        return []

    def _on_ended(self, event: StreamEnded) -> list[Action]:
        a = self._assignments[event.assignment_id]
        if a.stage is _Stage.OVER:
            return []
        a.stage = _Stage.OVER
        if not self._ended_early(a):
            return []
        entry = a.worker.entry
        why = f"worker {entry.worker_id} ({entry.address}): {event.error}"
        if event.error is None:
            why = ""
        if a.takeover:
            # Its worker's first assignment may still be running: only this one is cut.
            self._log.errors.append(why or f"takeover {a.assignment_id} ended early")
            return self._cut([a], a.worker, f"takeover {a.assignment_id} ended early")
        return self._lose(a.worker, why)

    def _on_silent(self, event: WorkerSilent) -> list[Action]:
        worker = self._workers.get(event.worker_id)
        if worker is None or self._assignments[worker.main_id].stage is _Stage.OVER:
            return []
        return self._lose(worker, f"worker {event.worker_id} stopped sending heartbeats")

    def _on_cancel(self, event: CancelRequested) -> list[Action]:
        if event.reason is StopReason.MASTER_STOP:
            self._flags.master_stopping = True
        else:
            self._flags.cancelled = True
        return self._stop_everything()

    def _on_deadline(self) -> list[Action]:
        if self._flags.timed_out or self._phase is Phase.ENDED:
            return []
        self._flags.timed_out = True
        self._log.errors.append(f"the run passed its timeout ({self.timeout_s:g}s) and was stopped")
        return self._stop_everything()

    def _stop_everything(self) -> list[Action]:
        """Cancel every assignment; cut each stream after a grace for its final report."""
        if self._phase is Phase.RUNNING:
            self._phase = Phase.DRAINING
        actions: list[Action] = [
            CancelAssignment(a.worker.entry.address, a.assignment_id)
            for a in self._assignments.values()
        ]
        actions.extend(
            CancelStream(a.stream, FINAL_REPORT_GRACE_S)
            for a in self._assignments.values()
            if a.stream is not None
        )
        return actions

    def _lose(self, worker: _Worker, why: str, how: str = "lost") -> list[Action]:
        """Mark a worker lost (or stopped: ``how``) for this run, once, and cut every
        assignment of it that was not done."""
        if worker.lost or self._phase is not Phase.RUNNING:
            return []
        worker.lost = True
        self._log.lost.append(worker.entry.worker_id)
        if why:
            self._log.errors.append(why)
        pending = [self._assignments[i] for i in worker.assignment_ids]
        return self._cut(
            [a for a in pending if not a.done], worker, f"worker {worker.entry.worker_id} {how}"
        )

    def _cut(self, cut: list[_Assignment], worker: _Worker, who: str) -> list[Action]:
        """End ``cut`` (assignments of ``worker``) where the run is now: cut their streams,
        fix what their shares ran (``Part.cut``) and give the survivors takeover assignments
        for the rest of their open-model shares. One event says what was not run."""
        cut = [a for a in cut if not a.cut]
        if not cut or self._phase is not Phase.RUNNING:
            return []
        elapsed_s = self._clock() - self._started_s
        actions: list[Action] = []
        left: list[Part] = []
        for a in cut:
            a.cut = True
            if a.stream is not None and a.stage is not _Stage.OVER:
                actions.append(CancelStream(a.stream))
            left.extend(part for part in a.parts if part.cut(elapsed_s) > 0)
        survivors = [
            w
            for w in self._workers.values()
            if w is not worker
            and not w.lost
            and self._assignments[w.main_id].stage is not _Stage.OVER
        ]
        moved: list[str] = []
        per_survivor: list[list[Share]] = [[] for _ in survivors]
        for part in left:
            if not survivors:
                assert part.schedule is not None and part.end_arrival is not None
                part.untaken = part.schedule.total - part.end_arrival
                continue
            pieces = takeover_pieces(
                part, self._run.load_test, [w.entry.capacity for w in survivors]
            )
            for given, piece in zip(per_survivor, pieces, strict=True):
                if piece is not None:
                    given.append(piece)
        for survivor, given in zip(survivors, per_survivor, strict=True):
            if not given:
                continue
            self._takeovers += 1
            assignment_id = f"{self.run_id}/{survivor.entry.worker_id}/takeover-{self._takeovers}"
            self._add_assignment(assignment_id, survivor, given, takeover=True, made_s=elapsed_s)
            actions.append(StartAssignment(survivor.entry, self._assignment(assignment_id, given)))
            moved.append(survivor.entry.worker_id)
        self._log.events.append(self._cut_event(who, elapsed_s, cut, left, moved))
        return actions

    @staticmethod
    def _cut_event(
        who: str, elapsed_s: float, cut: list[_Assignment], left: list[Part], moved: list[str]
    ) -> str:
        """E.g. "worker w0 stopped (SIGTERM) at 3.2s: 10 sessions not run (0 not started,
        10 cut short)", with what became of its arrival rate in the open model."""
        parts = [part for a in cut for part in a.parts]
        closed = [p.not_run() for p in parts if p.schedule is None]
        opened = [p.not_run() for p in parts if p.schedule is not None]
        said = []
        if closed:
            not_started = sum(n for n, _, _ in closed)
            cut_short = sum(c for _, c, _ in closed)
            said.append(
                f"{not_started + cut_short} sessions not run "
                f"({not_started} not started, {cut_short} cut short)"
            )
        if opened:
            said.append(f"{sum(a for _, _, a in opened)} arrivals lost")
            if moved:
                said.append(f"its share of the arrival rate moved to {', '.join(moved)}")
            elif left:
                said.append("no survivor to take its arrival rate")
        return f"{who} at {elapsed_s:.1f}s: " + "; ".join(said)

    def _add_assignment(
        self,
        assignment_id: str,
        worker: _Worker,
        shares: list[Share],
        *,
        takeover: bool,
        made_s: float = 0.0,
    ) -> None:
        parts = [Part.of(share, self._run.load_test, made_s) for share in shares]
        self._assignments[assignment_id] = _Assignment(assignment_id, worker, takeover, parts)
        worker.assignment_ids.append(assignment_id)

    def _assignment(self, assignment_id: str, shares: list[Share]) -> worker_pb2.Assignment:
        return worker_pb2.Assignment(
            run_id=self.run_id,
            assignment_id=assignment_id,
            load_test=self._run.load_test,
            shares=[to_entry_share(s) for s in shares],
            report_interval_s=self._report_interval_s,
        )

    def _check_ended(self) -> None:
        if self._phase in (Phase.RUNNING, Phase.DRAINING) and all(
            a.stage is _Stage.OVER for a in self._assignments.values()
        ):
            self._phase = Phase.ENDED
            self._cond.notify_all()

    # -- the end --------------------------------------------------------------------------------

    def finish(self) -> results_pb2.LoadTestRun:
        """Compute the result from the merged histograms, decide the final state, return the
        run with both. Called once, when every stream is over."""
        with self._cond:
            run = self._run
            lost = sorted(set(self._log.lost))
            result = self._aggregator.result(lost_workers=lost)
            result.events.extend(self._log.events)
            flags = self._flags
            counted = tally(
                ((part, a.cut, a.done) for a in self._assignments.values() for part in a.parts),
                stopped_early=flags.cancelled or flags.timed_out or flags.master_stopping,
            )
            result.sessions_lost = counted.sessions_lost
            result.arrivals_due = counted.arrivals_due
            result.arrivals_lost = counted.arrivals_lost
            if self._flags.timed_out:
                result.sessions_timed_out += counted.unfinished
            run.result.CopyFrom(result)
            passed = evaluate_thresholds(run.result, list(run.load_test.thresholds))
            state, why = final_state(
                master_stopping=self._flags.master_stopping,
                cancelled=self._flags.cancelled,
                timed_out=self._flags.timed_out,
                errors=bool(self._log.errors),
                metrics=bool(result.metrics),
                every_worker_lost=bool(lost) and len(lost) == len(self._workers),
                thresholds_passed=passed,
                sessions_lost=counted.sessions_lost,
                requests_failed=results.requests_failed(run.result),
            )
            run.state = state
            run.error = "; ".join([*self._log.errors, why] if why else self._log.errors)
            run.finished_at.GetCurrentTime()
            self._phase = Phase.FINISHED
            self._cond.notify_all()
            return run


def final_state(
    *,
    master_stopping: bool,
    cancelled: bool,
    timed_out: bool,
    errors: bool,
    metrics: bool,
    every_worker_lost: bool,
    thresholds_passed: bool,
    sessions_lost: int = 0,
    requests_failed: str = "",
) -> tuple[results_pb2.RunState, str]:
    """A finished run's state, and the reason to add to its error when the state needs one.

    The first rule that holds wins: the master stopping beats everything (the run did not
    end, it was interrupted); a user's cancel beats failures, unless the timeout came first.
    A run that lost sessions or arrivals (a worker lost or stopped before its share was
    done) did not run what was asked: it fails, whatever the metrics of the rest say.
    ``requests_failed`` (``chaperon.core.results.requests_failed``) says why a run that sent
    nothing, or whose every request failed, is FAILED.
    """
    if master_stopping:
        return results_pb2.INTERRUPTED, INTERRUPTED_BY_MASTER
    if cancelled and not timed_out:
        return results_pb2.CANCELLED, ""
    if timed_out or (errors and not metrics):
        return results_pb2.FAILED, ""
    if every_worker_lost:
        return results_pb2.FAILED, ""
    if sessions_lost:
        return results_pb2.FAILED, (
            f"{sessions_lost} sessions lost with lost or stopped workers (see the events)"
        )
    if requests_failed:
        return results_pb2.FAILED, requests_failed
    if not thresholds_passed:
        return results_pb2.FAILED, "thresholds failed"
    return results_pb2.SUCCEEDED, ""


def run_timeout_s(lt: loadtest_pb2.LoadTest) -> float:
    """The run's timeout: the load test's own, else its longest entry (its duration and its
    graceful stop) plus a grace."""
    if lt.timeout:
        return parse_duration_ns(lt.timeout) / 1e9
    ends = [stop_by_s(e) for e in lt.scenarios]
    if ends and all(d is not None for d in ends):
        return max(d for d in ends if d is not None) + DEFAULT_TIMEOUT_GRACE_S
    return DEFAULT_TIMEOUT_NO_DURATION_S


def stop_by_s(entry: loadtest_pb2.ScenarioEntry) -> float | None:
    """When the entry's in-flight work is cut at the latest, from the run's start: its duration
    plus its graceful stop (None when it runs by iterations)."""
    duration_ns = entry_duration_ns(entry)
    if duration_ns is None:
        return None
    return (duration_ns + graceful_stop_ns(entry)) / 1e9
