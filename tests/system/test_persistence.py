"""``kill -9`` of a real master in the middle of a run, restart on the same port and database.

DESIGN.md, "Reliability and security rules": after ``kill -9`` and restart, scheduled tests
are still scheduled, finished results are still readable, a run that was in flight is marked
interrupted with its partial metrics; workers re-register by themselves.

One scenario, played once for the module by the ``crash`` fixture, which only *records*
what it sees; each test then checks one promise against the record:

1. nginx, a master (``--db`` in the test dir, a port picked once) and one worker.
2. ``SubmitLoadTests``: a 6 s load test, then two 1 s ones (queued behind it).
3. A watcher follows the first run; right after it has been shown a request count for the
   second time, the master gets SIGKILL. The watcher keeps the highest count it saw.
4. The worker's status is polled until it is idle again; nginx's request count is then
   sampled over a window to see that the orphaned engines really stopped.
5. A new master on the same port and database; the two queued runs must then run on the
   worker that came back by itself.
6. Another SIGKILL and restart: the finished results must read the same.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from support.cluster import Service, run_worker, wait_for_workers
from support.loadtests import assert_hdr_matches, metric, minimal_load_test, to_proto
from support.restart import RestartableMaster, restartable_master
from support.servers import NginxServer, nginx_binary, start_nginx

RPC_TIMEOUT_S = 10.0
LONG_RUN_S = 6
# How long each step may take before the scenario gives up on it.
RUNNING_WITH_DELTAS_WITHIN_S = 15.0
WATCH_TIMEOUT_S = 30.0
# Progress messages showing requests before the kill (one a second; the run lasts LONG_RUN_S).
SHOWN_COUNTS_BEFORE_KILL = 2
WORKER_IDLE_WITHIN_S = 5.0
QUIET_WINDOW_S = 1.0
HEALTH_AFTER_RESTART_WITHIN_S = 15.0
QUEUED_RUNS_END_WITHIN_S = 40.0


@dataclass
class CrashRecord:
    """What the scenario saw; the tests assert on it."""

    worker_id: str = ""
    worker_address: str = ""
    run_ids: list[str] = field(default_factory=list)
    highest_shown: int = 0
    served_at_kill: int = 0
    idle_after_kill_s: float | None = None
    last_worker_status: Any = None
    served_window: tuple[int, int] = (0, 0)
    restart_health_s: float | None = None
    runs_after_restart: dict[str, Any] = field(default_factory=dict)
    workers_after_restart: list[Any] = field(default_factory=list)
    runs_after_second_restart: dict[str, Any] = field(default_factory=dict)
    served_total: int = 0
    problems: list[str] = field(default_factory=list)


def _master_stub(address: str) -> tuple[grpc.Channel, Any]:
    from chaperon.v1 import master_pb2_grpc

    channel = grpc.insecure_channel(address)
    return channel, master_pb2_grpc.MasterStub(channel)


class _Watcher(threading.Thread):
    """Follows WatchLoadTestRun until the stream ends (the master's kill ends it) and keeps
    the highest request count it was shown: what a user watching the run saw."""

    def __init__(self, address: str, run_id: str) -> None:
        super().__init__(name=f"watch-{run_id}", daemon=True)
        self.address = address
        self.run_id = run_id
        self.highest = 0
        self.counting_messages = 0
        self.message = threading.Event()  # set at every message that shows requests
        self.error: BaseException | None = None

    def run(self) -> None:
        from chaperon.v1 import master_pb2, results_pb2

        channel, stub = _master_stub(self.address)
        request = master_pb2.WatchLoadTestRunRequest(id=self.run_id)
        try:
            with channel:
                for progress in stub.WatchLoadTestRun(request, timeout=WATCH_TIMEOUT_S):
                    count = sum(m.count for m in progress.metrics)
                    self.highest = max(self.highest, count)
                    if progress.state == results_pb2.RUNNING and count > 0:
                        self.counting_messages += 1
                        self.message.set()
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE:  # the kill: expected
                self.error = exc
        except BaseException as exc:  # noqa: BLE001 - reported by the scenario
            self.error = exc


def _kill_right_after_a_shown_count(master: RestartableMaster, watcher: _Watcher) -> int:
    """Kill the master just after the watcher was shown a count (the moment a figure that
    was merged but not yet stored would be lost); return the highest count it was shown."""
    deadline = time.monotonic() + RUNNING_WITH_DELTAS_WITHIN_S
    while watcher.counting_messages < SHOWN_COUNTS_BEFORE_KILL:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not watcher.is_alive():
            raise AssertionError(
                f"{watcher.run_id} showed {watcher.counting_messages} counting progress "
                f"messages within {RUNNING_WITH_DELTAS_WITHIN_S}s ({watcher.error!r})"
            )
        watcher.message.wait(remaining)
        watcher.message.clear()
    master.kill()
    watcher.join(WATCH_TIMEOUT_S)
    assert not watcher.is_alive(), "the watch stream outlived the master"
    if watcher.error is not None:
        raise watcher.error
    return watcher.highest


def _worker_idle_within(address: str, timeout_s: float) -> tuple[float | None, Any]:
    """Seconds until the worker's GetWorkerStatus says IDLE (None if not within timeout_s)."""
    from chaperon.v1 import worker_pb2, worker_pb2_grpc

    began = time.monotonic()
    status = None
    with grpc.insecure_channel(address) as channel:
        stub = worker_pb2_grpc.WorkerStub(channel)
        while time.monotonic() - began < timeout_s:
            status = stub.GetWorkerStatus(worker_pb2.GetWorkerStatusRequest(), timeout=2)
            if status.state == worker_pb2.WORKER_IDLE:
                return time.monotonic() - began, status
            time.sleep(0.05)
    return None, status


def _wait_ended(stub: Any, run_ids: list[str], timeout_s: float) -> dict[str, Any]:
    from chaperon.v1 import master_pb2, results_pb2

    terminal = {
        results_pb2.SUCCEEDED,
        results_pb2.FAILED,
        results_pb2.CANCELLED,
        results_pb2.INTERRUPTED,
    }
    deadline = time.monotonic() + timeout_s
    while True:
        runs = {
            rid: stub.GetLoadTestRun(master_pb2.GetLoadTestRunRequest(id=rid), timeout=5)
            for rid in run_ids
        }
        if all(r.state in terminal for r in runs.values()) or time.monotonic() > deadline:
            return runs
        time.sleep(0.2)


def _read_runs(stub: Any, run_ids: list[str]) -> dict[str, Any]:
    from chaperon.v1 import master_pb2

    return {
        rid: stub.GetLoadTestRun(master_pb2.GetLoadTestRunRequest(id=rid), timeout=RPC_TIMEOUT_S)
        for rid in run_ids
    }


def _play(
    master: RestartableMaster, worker: Service, nginx: NginxServer, record: CrashRecord
) -> None:
    from chaperon.v1 import master_pb2

    listed = wait_for_workers(Service(master.process, master.port), [worker])
    record.worker_id = listed[0].worker_id
    record.worker_address = worker.address
    load_tests = [
        to_proto(
            minimal_load_test(nginx.base_url, concurrency=4, duration=f"{LONG_RUN_S}s", name="long")
        ),
        to_proto(minimal_load_test(nginx.base_url, concurrency=2, duration="1s", name="second")),
        to_proto(minimal_load_test(nginx.base_url, concurrency=2, duration="1s", name="third")),
    ]
    channel, stub = _master_stub(master.address)
    with channel:
        runs = stub.SubmitLoadTests(
            master_pb2.SubmitLoadTestsRequest(load_tests=load_tests), timeout=RPC_TIMEOUT_S
        ).runs
        record.run_ids = [r.id for r in runs]
    watcher = _Watcher(master.address, record.run_ids[0])
    watcher.start()
    record.highest_shown = _kill_right_after_a_shown_count(master, watcher)
    record.served_at_kill = nginx.requests_served()
    record.idle_after_kill_s, record.last_worker_status = _worker_idle_within(
        worker.address, WORKER_IDLE_WITHIN_S
    )
    # A measurement window, not a wait for readiness: does nginx still get requests?
    first = nginx.requests_served()
    time.sleep(QUIET_WINDOW_S)
    record.served_window = (first, nginx.requests_served())

    record.restart_health_s = master.start(ready_timeout_s=HEALTH_AFTER_RESTART_WITHIN_S)
    channel, stub = _master_stub(master.address)
    with channel:
        record.runs_after_restart = _wait_ended(stub, record.run_ids, QUEUED_RUNS_END_WITHIN_S)
        record.workers_after_restart = list(
            stub.ListWorkers(master_pb2.ListWorkersRequest(), timeout=RPC_TIMEOUT_S).workers
        )
        record.runs_after_restart = _read_runs(stub, record.run_ids)

    master.kill()
    master.start(ready_timeout_s=HEALTH_AFTER_RESTART_WITHIN_S)
    channel, stub = _master_stub(master.address)
    with channel:
        record.runs_after_second_restart = _read_runs(stub, record.run_ids)
    record.served_total = nginx.wait_for_served(0)


@pytest.fixture(scope="module")
def crash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CrashRecord]:
    if nginx_binary() is None:
        pytest.skip("nginx is not installed (/usr/sbin/nginx): apt-get install nginx-light")
    base: Path = tmp_path_factory.mktemp("persistence")
    record = CrashRecord()
    with (
        start_nginx(base / "nginx") as nginx,
        restartable_master(base / "master") as master,
        run_worker(base / "worker", master.address, threads=1) as worker,
    ):
        try:
            _play(master, worker, nginx, record)
        except Exception as exc:
            raise AssertionError(
                f"the crash scenario broke off: {exc}\n{master.describe()}\n"
                f"{worker.process.describe()}"
            ) from exc
        record.problems = [
            f"{p.name} exited with {p.returncode}"
            for p in master.incarnations[:-1]
            if p.returncode not in (-9,)
        ]
        yield record


# -- the tests ---------------------------------------------------------------------------------


def test_master_was_really_killed(crash):
    assert not crash.problems, crash.problems


def test_master_answers_health_after_restart(crash):
    assert crash.restart_health_s is not None
    assert crash.restart_health_s < HEALTH_AFTER_RESTART_WITHIN_S


def test_worker_stops_its_orphaned_assignment(crash):
    from chaperon.v1 import worker_pb2

    status = crash.last_worker_status
    assert crash.idle_after_kill_s is not None, (
        f"worker still {worker_pb2.WorkerState.Name(status.state)} with "
        f"{status.assignment_id!r} {WORKER_IDLE_WITHIN_S}s after the master died"
    )
    assert not status.assignment_id and not status.run_id
    first, last = crash.served_window
    assert last == first, (
        f"nginx served {last - first} requests in the {QUIET_WINDOW_S}s after the worker "
        "went idle: the orphaned engines are still sending"
    )


def test_in_flight_run_is_interrupted_with_partial_metrics(crash):
    from chaperon.v1 import results_pb2

    run = crash.runs_after_restart[crash.run_ids[0]]
    assert run.state == results_pb2.INTERRUPTED, (results_pb2.RunState.Name(run.state), run.error)
    assert run.error, "an interrupted run says why"
    assert run.HasField("finished_at")
    get_root = metric(run, "GET /")
    # A figure the system has shown must not shrink after a crash: the stored run holds at
    # least the highest count a watcher was shown (deltas are merged only once committed),
    # and at most what nginx served (the last interval never reached the master).
    assert crash.highest_shown > 0
    assert crash.highest_shown <= get_root.count <= crash.served_at_kill
    assert_hdr_matches(get_root)


def test_queued_runs_succeed_on_the_worker_that_came_back(crash):
    from chaperon.v1 import results_pb2

    for run_id in crash.run_ids[1:]:
        run = crash.runs_after_restart[run_id]
        assert run.state == results_pb2.SUCCEEDED, (
            run.load_test.name,
            results_pb2.RunState.Name(run.state),
            run.error,
        )
        assert list(run.result.workers) == [crash.worker_id]
        assert metric(run, "GET /").count > 0


def test_worker_is_listed_once_after_restart(crash):
    workers = [(w.worker_id, w.address) for w in crash.workers_after_restart]
    assert workers == [(crash.worker_id, crash.worker_address)]


def test_results_read_the_same_after_a_second_restart(crash):
    from chaperon.v1 import results_pb2

    for run_id in crash.run_ids:
        before = crash.runs_after_restart[run_id]
        after = crash.runs_after_second_restart[run_id]
        assert after == before, f"{run_id} ({results_pb2.RunState.Name(before.state)}) changed"


def test_no_request_was_sent_after_the_runs_ended(crash):
    counted = sum(
        m.count for run in crash.runs_after_second_restart.values() for m in run.result.metrics
    )
    # Interrupted: the last interval before the kill is lost, so nginx may have seen more.
    assert counted <= crash.served_total
