"""Every session of a run accounted for: what each share of each assignment ran, and lost.

Theory of operation. The run controller keeps one ``Part`` per share of every assignment it
sends (first assignments and takeovers alike) and notes in it the totals the worker reports
for that share (``WorkerReport.shares``). When a worker is lost (its stream broke, its
heartbeats stopped) or stops (SIGTERM: its last report says so), each part it had not
finished is *cut*:

- closed model: the share's sessions that did not complete are lost (never started, or cut
  short); they cannot move, their state died with the worker;
- open model: the part's arrivals end where the survivors take over. That point is the first
  arrival not yet due on the part's schedule (``Schedule`` mirrors the engine's arithmetic,
  see ``arrivals``) where the worker stopped, when it said so (its last report gives the
  point its schedule had reached), else at the time of the loss, read from the master's
  clock: the part's schedule never runs ahead of it, since the worker started it after the
  master sent it. The arrivals before that point that the worker did not report started or
  dropped are lost (those a killed worker started after its last report included); the rest
  of the share goes to the survivors, who carry on from that very arrival
  (``Share.first_arrival``), or is lost too when there is none.

``tally`` adds it all up at the end. For an open-model part, ``due`` is the arrivals its
schedule made due while it was this part's: from its first arrival to where it was cut, to
the end of the schedule when it ran to its end, or what it processed when the run was
stopped early (a cancel, the deadline, the master stopping). Every one of them is either
reported (started or dropped) or lost, so ``started + dropped + lost == due`` for every part,
and over the run's parts ``due`` is the whole schedule of every open-model entry (exactly,
when a lost share moved to a single survivor; when it was split over several, each piece is a
schedule of its own, whose rounding may differ by one arrival per piece).

Pure: no threads, no clock of its own; the controller calls it under its lock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from chaperon.v1 import loadtest_pb2, worker_pb2
from master_service.arrivals import Schedule
from master_service.splitter import Share, split_takeover


@dataclass
class Part:
    """One share of one assignment, and what its worker reported of it."""

    share: Share
    schedule: Schedule | None  # the open model's arrival schedule; None: closed model
    made_s: float = 0.0  # run time (s) its assignment was made
    started: int = 0
    completed: int = 0
    dropped: int = 0
    stopped_ns: int | None = None  # open model: where its schedule was when its worker stopped
    end_arrival: int | None = None  # open model, once cut: its arrivals were [first, end)
    untaken: int = 0  # open model, once cut: arrivals after end_arrival no survivor took

    @classmethod
    def of(cls, share: Share, load_test: loadtest_pb2.LoadTest, made_s: float = 0.0) -> Part:
        schedule = None
        if share.open_model:
            entry = load_test.scenarios[share.entry_index]
            schedule = Schedule.of_share(entry, share.rate_fraction)
        return cls(share, schedule, made_s)

    def note(self, started: int, completed: int, dropped: int) -> None:
        """A report's totals (cumulative: the largest seen is the latest)."""
        self.started = max(self.started, started)
        self.completed = max(self.completed, completed)
        self.dropped = max(self.dropped, dropped)

    @property
    def processed(self) -> int:
        """Arrivals the worker reported started or dropped."""
        return self.started + self.dropped

    def schedule_ns(self, at_s: float) -> float:
        """Where this part's schedule stands, at the latest, at run time ``at_s``: its worker
        started it (with its first arrival due) no earlier than the master made it."""
        assert self.schedule is not None
        first = self.share.first_arrival
        base_ns = self.schedule.offset_ns(first) if first else 0
        return base_ns + max(0.0, at_s - self.made_s) * 1e9

    def cut(self, at_s: float) -> int:
        """The part's worker is gone at run time ``at_s``: fix where its arrivals end (open
        model) and return how many of them are left for the survivors (0: none, or closed)."""
        if self.schedule is None or self.end_arrival is not None:
            return 0
        total = self.schedule.total
        first = self.share.first_arrival
        reached = self.schedule_ns(at_s) if self.stopped_ns is None else self.stopped_ns
        due = self.schedule.due_before(reached)
        self.end_arrival = min(total, max(first, due, first + self.processed))
        return total - self.end_arrival

    def not_run(self) -> tuple[int, int, int]:
        """For a cut part, now: (closed sessions not started, sessions cut short, arrivals
        lost so far)."""
        if self.schedule is None:
            not_started = max(0, self.share.sessions - self.started)
            return not_started, max(0, self.started - self.completed), 0
        cut_short = max(0, self.started - self.completed)
        window = (self.end_arrival or self.share.first_arrival) - self.share.first_arrival
        return 0, cut_short, max(0, window - self.processed) + self.untaken


def takeover_pieces(
    part: Part, load_test: loadtest_pb2.LoadTest, capacities: Sequence[int]
) -> list[Share | None]:
    """The rest of a cut open-model part, one piece per survivor of ``capacities`` (None for
    a survivor that gets none), each resuming at the arrival the part had not reached."""
    assert part.schedule is not None and part.end_arrival is not None
    end = part.end_arrival
    if end >= part.schedule.total:
        return [None for _ in capacities]
    resume_ns = part.schedule.offset_ns(end)  # when the first arrival left over is due
    entry = load_test.scenarios[part.share.entry_index]
    out: list[Share | None] = []
    for given in split_takeover([part.share], capacities):
        if not given:
            out.append(None)
            continue
        piece = given[0]
        if piece.rate_fraction == part.share.rate_fraction:
            first = end  # the same schedule: carry on from the very arrival
        else:
            schedule = Schedule.of_share(entry, piece.rate_fraction)
            first = schedule.due_before(resume_ns)
            if first >= schedule.total:
                out.append(None)
                continue
        out.append(dataclasses.replace(piece, first_arrival=first))
    return out


def note_report(parts: Sequence[Part], report: worker_pb2.WorkerReport) -> None:
    """Note a report's per-share totals in the parts of its assignment (a report without
    them, from an older worker, is taken whole when the assignment has one share)."""
    if report.shares:
        for progress in report.shares:
            if 0 <= progress.share_index < len(parts):
                part = parts[progress.share_index]
                part.note(
                    progress.sessions_started,
                    progress.sessions_completed,
                    progress.sessions_dropped,
                )
                if report.stopped_reason:
                    part.stopped_ns = progress.schedule_ns
    elif len(parts) == 1:
        parts[0].note(report.sessions_started, report.sessions_completed, report.sessions_dropped)


@dataclass
class Tally:
    """The run's accounting, summed over its parts."""

    sessions_lost: int = 0  # closed sessions lost + arrivals lost
    arrivals_due: int = 0
    arrivals_lost: int = 0
    unfinished: int = 0  # sessions started and not completed on workers not lost


def tally(parts: Iterable[tuple[Part, bool, bool]], stopped_early: bool) -> Tally:
    """Sum ``(part, cut, done)`` over the run: ``cut`` when its worker was lost or stopped,
    ``done`` when its assignment ended with a final report of a share run to its end.
    ``stopped_early``: the run was cancelled, timed out or interrupted."""
    out = Tally()
    for part, cut, done in parts:
        if part.schedule is None:
            if cut:
                out.sessions_lost += max(0, part.share.sessions - part.completed)
            else:
                out.unfinished += max(0, part.started - part.completed)
            continue
        first = part.share.first_arrival
        if cut and part.end_arrival is not None:
            due = max(part.end_arrival - first, part.processed) + part.untaken
        else:
            if not cut:
                out.unfinished += max(0, part.started - part.completed)
            whole = part.schedule.total - first
            due = max(whole, part.processed) if done and not stopped_early else part.processed
        out.arrivals_due += due
        out.arrivals_lost += due - part.processed
    out.sessions_lost += out.arrivals_lost
    return out
