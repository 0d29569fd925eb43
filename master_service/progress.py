"""A run's ``RunProgress`` message: what ``WatchLoadTestRun`` streams.

Theory of operation. ``progress_message`` reads the run (a store read), and then, by its
state: an ended run gets its whole ``LoadTestRun``; a SCHEDULED one its place in the queue
(``queue_position``: the runs ahead of it); the RUNNING one its figures so far, from the
run controller's aggregator (per key: count, errors, rate, p50 and p99; for the whole run:
sessions active, started and dropped, requests and errors), and what the load test plans
(``duration_s``, ``stop_by_s``, the open model's ``scheduled_rate_per_s`` now). Past the
duration, ``requests_in_flight`` is the sessions still active: each is finishing the request
it had in flight when the duration ended (the engine starts none after it), until
``stop_by_s`` cuts them. The figures lag the workers by up to one report interval plus the
store's flush (they are shown only once stored).

It blocks (a store read, the aggregator's lock): the servicer calls it off the event loop.
"""

from __future__ import annotations

from chaperon.core.loadtest import entry_duration_ns, scheduled_rate_per_s
from chaperon.v1 import loadtest_pb2, master_pb2, results_pb2
from master_service.run_controller import stop_by_s
from master_service.run_queue import TERMINAL
from master_service.scheduler import Scheduler

__all__ = ["plan_figures", "progress_message"]


def progress_message(scheduler: Scheduler, run_id: str) -> master_pb2.RunProgress:
    """A run's ``RunProgress`` now: its state and figures so far, or, once it has ended, its
    state and the whole run. Raises NotFound for an unknown id. Blocks (a store read)."""
    run = scheduler.get(run_id)
    if run.state in TERMINAL:
        return master_pb2.RunProgress(id=run_id, state=run.state, run=run)
    msg = master_pb2.RunProgress(id=run_id, state=run.state)
    msg.duration_s, msg.stop_by_s = plan_figures(run.load_test)
    if run.state == results_pb2.SCHEDULED:
        msg.queue_position = scheduler.runs_ahead(run_id)
        return msg
    progress = scheduler.progress(run_id)
    live = scheduler.live(run_id)
    if progress is None or live is None:
        return msg
    elapsed, metrics = progress
    msg.elapsed_s = elapsed
    for key, count, errors, p50, p99 in metrics:
        msg.metrics.append(
            master_pb2.MetricProgress(
                key=key,
                count=count,
                errors=errors,
                rate_per_s=count / elapsed if elapsed > 0 else 0.0,
                p50_us=p50,
                p99_us=p99,
            )
        )
    msg.sessions_active = live.sessions_active
    msg.sessions_started = live.sessions_started
    msg.sessions_dropped = live.sessions_dropped
    msg.requests = live.requests
    msg.errors = live.errors
    if msg.duration_s > 0 and elapsed >= msg.duration_s:
        msg.requests_in_flight = live.sessions_active
    msg.scheduled_rate_per_s = scheduled_rate(run.load_test, elapsed)
    return msg


def plan_figures(lt: loadtest_pb2.LoadTest) -> tuple[float, float]:
    """(duration_s, stop_by_s) of a load test: its longest entry's duration, and the latest
    its in-flight work is cut (duration plus graceful stop); (0, 0) when some entry runs by
    iterations (its length is not known in advance)."""
    durations, stops = [], []
    for entry in lt.scenarios:
        duration_ns = entry_duration_ns(entry)
        stop = stop_by_s(entry)
        if duration_ns is None or stop is None:
            return 0.0, 0.0
        durations.append(duration_ns / 1e9)
        stops.append(stop)
    if not durations:
        return 0.0, 0.0
    return max(durations), max(stops)


def scheduled_rate(lt: loadtest_pb2.LoadTest, elapsed_s: float) -> float:
    """The arrival rate the open-model entries' schedules call for ``elapsed_s`` in."""
    total = 0.0
    for entry in lt.scenarios:
        if not entry.HasField("arrival_rate"):
            continue
        duration_ns = entry_duration_ns(entry)
        if duration_ns is not None and elapsed_s >= duration_ns / 1e9:
            continue
        total += scheduled_rate_per_s(entry.arrival_rate, elapsed_s)
    return total
