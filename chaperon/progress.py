"""The run header and the live progress line of ``run``, ``submit --wait`` and ``watch``.

Theory of operation. k6 is the model. Before the load starts, ``format_header`` says on
stderr what will run: each entry with its load model (N sessions, closed model; R per
second, open model; stages as ``a -> b/s over d``), its duration and graceful stop, the
longest the run can take, the workers and the outputs. While the run goes, the master's
``WatchLoadTestRun`` stream brings a ``RunProgress`` about every second, and
``format_progress_line`` turns one into one line: the state, a bar of elapsed over the
duration, sessions active, requests, req/s, errors %, for the open model the scheduled
rate and the drops; past the duration, how long at most and for how many requests in flight
the run still waits (the graceful stop); for a queued run, its place in the queue.

``ProgressDisplay.follow`` consumes the stream (it is the ``follow`` a caller hands the
wait for a run) and shows it by ``mode``: ``live`` (stderr is a terminal) redraws the line
in place on each message (carriage return, erase line; cut to the terminal's width);
``plain`` (``--progress`` without a terminal) prints a line every ``PLAIN_EVERY_S`` seconds
and on each change of state; ``quiet`` shows nothing. The req/s figure is the rate between
the last two messages that moved (the master's figures only change once a report is
stored), so it follows the load rather than the run's mean. Everything shown is data from
the master or the file: it goes through ``printable`` (no control character reaches the
terminal).

Pure functions and a small class writing to a given stream: no gRPC here. The wait itself
(submit, then watch, Ctrl-C) is ``chaperon.interrupt.run_to_end``, which takes
``ProgressDisplay.follow`` as its ``follow``.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TextIO

from chaperon.core.durations import DurationError
from chaperon.core.loadtest import entry_duration_ns, graceful_stop_ns, max_sessions
from chaperon.core.text import printable
from chaperon.v1 import loadtest_pb2, master_pb2, results_pb2

__all__ = [
    "PLAIN_EVERY_S",
    "ProgressDisplay",
    "display_mode",
    "format_header",
    "format_progress_line",
    "format_seconds",
    "workers_text",
]


# Without a terminal, --progress prints a line this often (and on each change of state).
PLAIN_EVERY_S = 5.0
BAR_WIDTH = 20
_ERASE_LINE = "\r\x1b[2K"


def format_seconds(seconds: float) -> str:
    """A duration as people read it: ``12s``, ``1m05s``, ``1h02m03s`` (``0.5s`` under 10s)."""
    if seconds < 0:
        seconds = 0.0
    if seconds < 10 and seconds != int(seconds):
        return f"{seconds:.1f}s"
    whole = int(seconds + 0.5) if seconds >= 10 else int(seconds)
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _rate(per_s: float) -> str:
    return f"{per_s:.0f}/s" if per_s >= 10 or per_s == int(per_s) else f"{per_s:.1f}/s"


def _entry_name(entry: loadtest_pb2.ScenarioEntry, index: int) -> str:
    if entry.session_name:
        return entry.session_name
    if entry.HasField("scenario") and entry.scenario.name:
        return entry.scenario.name
    if entry.HasField("sequence") and entry.sequence.scenarios:
        return " -> ".join(s.name or "?" for s in entry.sequence.scenarios)
    return f"scenarios[{index}]"


def _entry_line(entry: loadtest_pb2.ScenarioEntry, index: int) -> str:
    name = printable(_entry_name(entry, index))
    try:
        length_ns = entry_duration_ns(entry)
        stop = format_seconds(graceful_stop_ns(entry) / 1e9)
    except DurationError:  # the master refuses it with the field's path; say nothing here
        length_ns, stop = None, "?"
    if entry.HasField("arrival_rate"):
        rate = entry.arrival_rate
        if rate.stages:
            steps = [_rate(rate.per_second)] + [
                f"{_rate(s.target)} over {printable(s.duration)}" for s in rate.stages
            ]
            load = "stages " + " -> ".join(steps)
        else:
            load = f"{_rate(rate.per_second)} arrivals"
        load += f" (open model, up to {max_sessions(rate)} sessions)"
    else:
        load = f"{entry.concurrency} sessions (closed model)"
    if length_ns is not None:
        how_long = f"for {format_seconds(length_ns / 1e9)}, graceful stop {stop}"
    elif entry.iterations > 1:
        how_long = f"{entry.iterations} iterations each"
    else:
        how_long = "once each"
    return f"  {name}: {load} {how_long}"


def format_header(
    lt: loadtest_pb2.LoadTest,
    workers: str = "",
    outputs: Sequence[str] = (),
) -> str:
    """What will run, before it runs: the load test, each entry's load model, duration and
    graceful stop, the longest it can take, the workers (as given) and the outputs."""
    lines = [f"chaperon: load test {printable(lt.name or '(unnamed)')!r}"]
    ends = []
    for i, entry in enumerate(lt.scenarios):
        lines.append(_entry_line(entry, i))
        try:
            length_ns = entry_duration_ns(entry)
            if length_ns is not None:
                ends.append((length_ns, length_ns + graceful_stop_ns(entry)))
        except DurationError:
            pass
    if ends and len(ends) == len(lt.scenarios):
        duration = format_seconds(max(d for d, _ in ends) / 1e9)
        longest = format_seconds(max(e for _, e in ends) / 1e9)
        lines.append(f"  duration {duration}, at most {longest} with the graceful stop")
    if workers:
        lines.append(f"  workers: {workers}")
    if outputs:
        lines.append("  outputs: " + ", ".join(printable(o) for o in outputs))
    return "\n".join(lines)


def _state_name(state: int) -> str:
    try:
        return results_pb2.RunState.Name(state).lower()
    except ValueError:  # a state newer than these stubs
        return str(state)


def _bar(fraction: float, width: int = BAR_WIDTH) -> str:
    fraction = min(1.0, max(0.0, fraction))
    filled = int(fraction * width + 1e-9)
    if filled >= width:
        return "[" + "=" * width + "]"
    return "[" + "=" * filled + ">" + " " * (width - filled - 1) + "]"


def format_progress_line(progress: master_pb2.RunProgress, rate_per_s: float | None = None) -> str:
    """One progress message as one line. ``rate_per_s`` is the current req/s (default: the
    run's mean so far, requests over elapsed)."""
    state = progress.state
    if progress.HasField("run") or state not in (results_pb2.SCHEDULED, results_pb2.RUNNING):
        return f"{_state_name(state)}  {format_seconds(progress.run.result.duration_s)}"
    if state == results_pb2.SCHEDULED:
        ahead = progress.queue_position
        if ahead <= 0:
            return "queued: next to run"
        return f"queued: {ahead} run{'s' if ahead != 1 else ''} ahead"
    elapsed = progress.elapsed_s
    parts = []
    if progress.duration_s > 0:
        parts.append(
            f"running {_bar(elapsed / progress.duration_s)} "
            f"{format_seconds(elapsed)}/{format_seconds(progress.duration_s)}"
        )
    else:
        parts.append(f"running {format_seconds(elapsed)}")
    if progress.duration_s > 0 and elapsed >= progress.duration_s and progress.requests_in_flight:
        left = max(0.0, progress.stop_by_s - elapsed)
        n = progress.requests_in_flight
        parts.append(
            f"waiting up to {format_seconds(left)} for {n} request{'s' if n != 1 else ''} in flight"
        )
    parts.append(f"sessions {progress.sessions_active}")
    parts.append(f"requests {progress.requests}")
    if rate_per_s is None:
        rate_per_s = progress.requests / elapsed if elapsed > 0 else 0.0
    parts.append(f"{rate_per_s:.0f} req/s")
    errors = 100.0 * progress.errors / progress.requests if progress.requests else 0.0
    parts.append(f"errors {errors:.1f}%")
    if progress.scheduled_rate_per_s > 0 or progress.sessions_dropped:
        parts.append(f"rate {_rate(progress.scheduled_rate_per_s)}")
        parts.append(f"dropped {progress.sessions_dropped}")
    return "  ".join(parts)


def display_mode(stream: TextIO, progress_flag: bool) -> str:
    """``live`` on a terminal, ``plain`` with ``--progress`` elsewhere, else ``quiet``."""
    try:
        terminal = stream.isatty()
    except (AttributeError, ValueError):
        terminal = False
    if terminal:
        return "live"
    return "plain" if progress_flag else "quiet"


class ProgressDisplay:
    """Shows a progress stream on ``stream`` by ``mode`` (see the module docstring)."""

    def __init__(
        self,
        stream: TextIO,
        mode: str,
        clock: Callable[[], float] = time.monotonic,
        plain_every_s: float = PLAIN_EVERY_S,
    ) -> None:
        if mode not in ("live", "plain", "quiet"):
            raise ValueError(f"unknown progress mode {mode!r}")
        self._stream = stream
        self.mode = mode
        self._clock = clock
        self._plain_every_s = plain_every_s
        self._last_plain: tuple[float, int] | None = None  # (when, state) of the last line
        self._moved: tuple[float, int] | None = None  # (elapsed, requests) when they last moved
        self._rate: float | None = None
        self._drawn = False

    def rate(self, progress: master_pb2.RunProgress) -> float | None:
        """The req/s between the last two messages whose figures moved (None at first)."""
        now = (progress.elapsed_s, progress.requests)
        if self._moved is None or now[0] < self._moved[0]:
            self._moved = now
            return None
        if now[0] > self._moved[0]:
            self._rate = (now[1] - self._moved[1]) / (now[0] - self._moved[0])
            self._moved = now
        return self._rate

    def show(self, progress: master_pb2.RunProgress) -> None:
        line = printable(format_progress_line(progress, self.rate(progress)))
        if self.mode == "live":
            width = shutil.get_terminal_size((100, 24)).columns
            self._write(_ERASE_LINE + line[: max(10, width - 1)])
            self._drawn = True
        elif self.mode == "plain":
            now = self._clock()
            last = self._last_plain
            if (
                last is None
                or progress.state != last[1]
                or progress.HasField("run")
                or now - last[0] >= self._plain_every_s
            ):
                self._write(line + "\n")
                self._last_plain = (now, progress.state)

    def close(self) -> None:
        """End the live line (the report comes next, on its own lines)."""
        if self._drawn:
            self._write("\n")
            self._drawn = False

    def follow(self, messages: Iterable[master_pb2.RunProgress]) -> results_pb2.LoadTestRun | None:
        """Show each message; the final run (the last message carries it), or None."""
        final = None
        try:
            for message in messages:
                self.show(message)
                if message.HasField("run"):
                    final = message.run
        finally:
            self.close()
        return final

    def _write(self, text: str) -> None:
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):  # stderr closed: the run goes on unseen
            self.mode = "quiet"


def workers_text(workers: Sequence[master_pb2.WorkerInfo]) -> str:
    """The workers a run would get now: how many, with their engine threads."""
    usable = [w for w in workers if not w.ignored]
    threads = sum(w.capacity for w in usable)
    if not usable:
        return "none yet (the run waits for one)"
    n = len(usable)
    return (
        f"{n} worker{'s' if n != 1 else ''}, {threads} engine thread{'s' if threads != 1 else ''}"
    )
