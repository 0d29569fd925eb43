"""Input that costs or breaks more than it should, against a real ``chaperon master``.

- A 16 MiB submission (some 700k entries) is refused within a bound, with a clear status,
  and the master goes on serving.
- A ``config`` nested to the documented depth is stored and read back by the Python client
  (get, list, ``chaperon status``); one level deeper is INVALID_ARGUMENT naming the field
  (such a run once broke run listing for every Python client, for good).
- Control characters: refused in a submitted name; and a hostile worker (a gRPC Worker
  service in this process, on loopback, registered like any worker) that reports a metric
  key, an error kind and an error full of escape sequences cannot get one raw to the
  operator's terminal through ``chaperon status``, ``status --json``, ``watch`` (its
  progress lines and the final report) or ``workers``.
- A YAML alias bomb given to ``chaperon submit`` is one line and exit 2, at once.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from support.cluster import Service, run_master
from support.fuzz import DEAD_BASE_URL, call_raw
from support.loadtests import many_entries, minimal_load_test, nested, to_proto
from support.ports import LOOPBACK, free_port
from support.procs import chaperon_command, python_env, run_chaperon

from _fastpath.histogram import Histogram
from chaperon.client import Client
from chaperon.core.lang.limits import MAX_STRUCT_DEPTH
from chaperon.rpc.status import field_violations
from chaperon.v1 import (
    loadtest_pb2,
    master_pb2,
    master_pb2_grpc,
    results_pb2,
    worker_pb2,
    worker_pb2_grpc,
)

RPC_TIMEOUT_S = 10.0
REFUSED_WITHIN_S = 3.0
RUN_TIMEOUT_S = 60.0
# A raw control character, but the line breaks and tabs our own output is made of.
RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
HOSTILE = "\x1b[2J\x1b]0;owned\x07\r\x00\x7f\x85\x9b31m"
HOSTILE_KEY = "GET /" + HOSTILE
HOSTILE_ERROR = "boom " + HOSTILE
BIG = 64 * 1024 * 1024


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A master alone (the hostile worker joins one test): a run waits 10 s for a worker."""
    with run_master(
        tmp_path_factory.mktemp("limits-master"), extra_args=["--worker-wait", "10"]
    ) as service:
        yield service


@pytest.fixture(scope="module")
def channel(master: Service) -> Iterator[grpc.Channel]:
    options = [("grpc.max_send_message_length", BIG), ("grpc.max_receive_message_length", BIG)]
    with grpc.insecure_channel(master.address, options) as channel:
        yield channel


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> Any:
    return master_pb2_grpc.MasterStub(channel)


def chaperon(*args: str, cwd: Path, timeout_s: float = 60) -> subprocess.CompletedProcess[bytes]:
    return run_chaperon(*args, cwd=cwd, timeout_s=timeout_s, text=False)


def _submit(stub: Any, lt: loadtest_pb2.LoadTest) -> results_pb2.LoadTestRun:
    return stub.SubmitLoadTest(  # type: ignore[no-any-return]
        master_pb2.SubmitLoadTestRequest(load_test=lt), timeout=RPC_TIMEOUT_S
    )


def _still_serving(stub: Any) -> None:
    info = stub.GetServerInfo(master_pb2.GetServerInfoRequest(), timeout=RPC_TIMEOUT_S)
    assert info.version


# -- weight ------------------------------------------------------------------------------------


def test_a_16_mib_submission_is_refused_within_a_bound(stub: Any) -> None:
    lt = loadtest_pb2.LoadTest.FromString(many_entries(16 * 1024 * 1024 - 64 * 1024))
    assert len(lt.scenarios) > 500_000
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        _submit(stub, lt)
    elapsed = time.monotonic() - started
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, info.value.details()
    assert "load test too large" in info.value.details()
    assert elapsed < REFUSED_WITHIN_S, f"refused after {elapsed:.1f}s"
    _still_serving(stub)


# -- Struct depth ------------------------------------------------------------------------------


def _deep_config(levels: int) -> loadtest_pb2.LoadTest:
    data = minimal_load_test(DEAD_BASE_URL, concurrency=1, duration="1s", name="deep")
    data["config"]["a"] = nested(levels - 1)  # config itself is the first level
    return to_proto(data)


def test_a_config_at_the_depth_limit_is_stored_and_read_back(
    master: Service, stub: Any, tmp_path: Path
) -> None:
    lt = _deep_config(MAX_STRUCT_DEPTH)
    run = _submit(stub, lt)
    try:
        with Client(master.address) as client:
            assert client.get(run.id).load_test == lt
            listed = {r.id: r for r in client.runs()}
            assert listed[run.id].load_test == lt
        out = chaperon("status", "--master", master.address, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        assert run.id.encode() in out.stdout
    finally:
        stub.CancelLoadTestRun(master_pb2.CancelLoadTestRunRequest(id=run.id), timeout=10)


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes([*out, n])


def test_a_config_one_level_deeper_is_refused_naming_the_field(
    master: Service, stub: Any, channel: grpc.Channel
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        _submit(stub, _deep_config(MAX_STRUCT_DEPTH + 1))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = [f for f, _ in field_violations(info.value)]
    assert fields == ["config" + ".a" * MAX_STRUCT_DEPTH]
    # Deeper than protobuf parses at all (sent as bytes: our client will not build it).
    lt = _deep_config(40).SerializeToString()
    request = b"\x0a" + _varint(len(lt)) + lt  # SubmitLoadTestRequest.load_test
    code, _ = call_raw(
        channel, "/chaperon.v1.Master/SubmitLoadTest", request, timeout_s=RPC_TIMEOUT_S
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    with Client(master.address) as client:  # and every stored run still lists and reads
        for run in client.runs():
            assert client.get(run.id).load_test == run.load_test


# -- control characters ------------------------------------------------------------------------


def test_control_characters_in_a_name_are_refused(stub: Any) -> None:
    lt = to_proto(minimal_load_test(DEAD_BASE_URL, name="smoke" + HOSTILE))
    with pytest.raises(grpc.RpcError) as info:
        _submit(stub, lt)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in field_violations(info.value)] == ["name"]


def test_a_worker_registering_with_control_characters_is_refused(stub: Any) -> None:
    request = master_pb2.RegisterWorkerRequest(
        address=f"{LOOPBACK}:9", capacity=1, labels={"zone": "eu" + HOSTILE}
    )
    with pytest.raises(grpc.RpcError) as info:
        stub.RegisterWorker(request, timeout=RPC_TIMEOUT_S)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in field_violations(info.value)] == ["labels['zone']"]


class HostileWorker(worker_pb2_grpc.WorkerServicer):
    """Answers every assignment with a report whose key, error kind and error are escape
    sequences, keeps the run going ``hold_s`` (so it can be watched), then a final report."""

    def __init__(self, hold_s: float) -> None:
        self.hold_s = hold_s
        self.cancelled = threading.Event()
        self.assigned = threading.Event()

    def _report(self, assignment_id: str, sequence: int, final: bool) -> worker_pb2.WorkerReport:
        hist = Histogram()
        hist.record(1500)
        return worker_pb2.WorkerReport(
            assignment_id=assignment_id,
            sequence=sequence,
            final=final,
            sessions_started=1,
            sessions_completed=1 if final else 0,
            elapsed_s=float(sequence),
            error=HOSTILE_ERROR if final else "",
            metrics=[
                worker_pb2.MetricDelta(
                    key=HOSTILE_KEY,
                    hdr=hist.encode_delta(),
                    count=1,
                    errors=1,
                    errors_by_kind={"kind" + HOSTILE: 1},
                )
            ],
        )

    def RunAssignment(self, request, context):  # type: ignore[no-untyped-def]
        self.assigned.set()
        yield self._report(request.assignment_id, 1, final=False)
        self.cancelled.wait(self.hold_s)
        yield self._report(request.assignment_id, 2, final=True)

    def CancelAssignment(self, request, context):  # type: ignore[no-untyped-def]
        self.cancelled.set()
        return worker_pb2.CancelAssignmentResponse(cancelled=True)

    def GetWorkerStatus(self, request, context):  # type: ignore[no-untyped-def]
        return worker_pb2.WorkerStatus(threads=1)


@pytest.fixture
def hostile_worker(stub: Any) -> Iterator[HostileWorker]:
    """The hostile worker, serving on loopback and registered (heartbeats every 0.5 s)."""
    servicer = HostileWorker(hold_s=4.0)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    worker_pb2_grpc.add_WorkerServicer_to_server(servicer, server)
    port = free_port()
    server.add_insecure_port(f"{LOOPBACK}:{port}")
    server.start()
    stop = threading.Event()
    reply = stub.RegisterWorker(
        master_pb2.RegisterWorkerRequest(address=f"{LOOPBACK}:{port}", capacity=1),
        timeout=RPC_TIMEOUT_S,
    )

    def beat() -> None:
        while not stop.wait(0.5):
            try:
                stub.Heartbeat(
                    master_pb2.HeartbeatRequest(
                        worker_id=reply.worker_id, state=worker_pb2.WORKER_IDLE
                    ),
                    timeout=5,
                )
            except grpc.RpcError:
                pass

    beats = threading.Thread(target=beat, name="hostile-heartbeats")
    beats.start()
    try:
        yield servicer
    finally:
        stop.set()
        servicer.cancelled.set()
        beats.join(10)
        server.stop(1).wait(5)


def _wait_state(stub: Any, run_id: str, states: set[int]) -> results_pb2.LoadTestRun:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        run = stub.GetLoadTestRun(master_pb2.GetLoadTestRunRequest(id=run_id), timeout=10)
        if run.state in states:
            return run  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"run {run_id} still {run.state}"
        time.sleep(0.1)


def _clean(what: str, output: bytes) -> str:
    text = output.decode("utf-8")
    match = RAW_CONTROL.search(text)
    assert match is None, f"{what}: raw {match.group()!r} in {text!r}"
    return text


def test_what_a_hostile_worker_reports_reaches_no_terminal_raw(
    master: Service, stub: Any, hostile_worker: HostileWorker, tmp_path: Path
) -> None:
    run = _submit(stub, to_proto(minimal_load_test(DEAD_BASE_URL, concurrency=1, name="h")))
    _wait_state(stub, run.id, {results_pb2.RUNNING})
    watcher = subprocess.Popen(
        [*chaperon_command(), "watch", run.id, "--master", master.address],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
        env=python_env(),
    )
    try:
        watched, watch_err = watcher.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        watcher.kill()
    final = _wait_state(stub, run.id, {results_pb2.SUCCEEDED, results_pb2.FAILED})
    # The master kept what the worker said: only the printing is at stake here.
    assert [m.key for m in final.result.metrics] == [HOSTILE_KEY]
    assert HOSTILE_ERROR in final.error

    text = _clean("watch", watched)
    _clean("watch (stderr)", watch_err)
    assert "GET /\\x1b[2J" in text and "count=" in text  # a progress line, then the report
    status = chaperon("status", run.id, "--master", master.address, cwd=tmp_path)
    text = _clean("status ID", status.stdout + status.stderr)
    assert "boom \\x1b[2J" in text and "kind\\x1b" in text
    as_json = chaperon("status", run.id, "--json", "--master", master.address, cwd=tmp_path)
    text = _clean("status --json", as_json.stdout)
    assert "\\u001b[2J" in text and "\\u0085" in text
    for args in (["status"], ["workers"]):
        out = chaperon(*args, "--master", master.address, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        _clean(" ".join(args), out.stdout + out.stderr)


# -- files -------------------------------------------------------------------------------------


def test_a_yaml_alias_bomb_is_one_line_and_exit_2(master: Service, tmp_path: Path) -> None:
    lines = ["  a0: &a0 [" + ", ".join(["lol"] * 10) + "]"]
    lines += [f"  a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 12)]
    path = tmp_path / "bomb.yaml"
    path.write_text(
        "name: bomb\nconfig:\n" + "\n".join(lines) + "\n  base_url: http://127.0.0.1:9\n"
        "scenarios: [{concurrency: 1, scenario: {name: r, run: [{http: {method: GET, "
        "path: /}}]}}]\n"
    )
    started = time.monotonic()
    out = chaperon("submit", str(path), "--master", master.address, cwd=tmp_path, timeout_s=30)
    assert time.monotonic() - started < 10
    assert out.returncode == 2
    assert out.stdout == b""
    message = out.stderr.decode()
    assert message.count("\n") == 1 and "aliases are expanded" in message, message
