"""Bad input to a real master: a clear INVALID_ARGUMENT naming the field, and no harm done.

No workers are needed: validation happens before anything is queued. The field path is
looked for in the status message and, when the master attaches one, in the
``google.rpc.BadRequest`` carried in the ``grpc-status-details-bin`` trailer.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from support.loadtests import minimal_load_test, to_proto
from support.procs import wait_for_health

RPC_TIMEOUT_S = 10.0
TARGET = "http://127.0.0.1:8080"

# The minimal load test of API.md, verbatim.
API_MD_MINIMAL = """
{
  "name": "smoke",
  "config": {"base_url": "http://127.0.0.1:8080"},
  "scenarios": [
    {"concurrency": 50, "duration": "5s",
     "scenario": {"name": "root", "run": [{"http": {"method": "GET", "path": "/"}}]}}
  ]
}
"""


def _no_scenarios(lt: dict[str, Any]) -> None:
    lt["scenarios"] = []


def _concurrency(n: int) -> Callable[[dict[str, Any]], None]:
    def change(lt: dict[str, Any]) -> None:
        lt["scenarios"][0]["concurrency"] = n

    return change


def _base_url(lt: dict[str, Any]) -> None:
    lt["config"]["base_url"] = "not a url"


def _method(lt: dict[str, Any]) -> None:
    lt["scenarios"][0]["scenario"]["run"][0]["http"]["method"] = "FETCH"


def _duration(lt: dict[str, Any]) -> None:
    lt["scenarios"][0]["duration"] = "five seconds"


BAD_INPUTS = [
    pytest.param(_no_scenarios, "scenarios", id="no-scenarios"),
    pytest.param(_concurrency(0), "scenarios[0].concurrency", id="zero-concurrency"),
    pytest.param(_concurrency(-3), "scenarios[0].concurrency", id="negative-concurrency"),
    pytest.param(_base_url, "config.base_url", id="bad-base-url"),
    pytest.param(_method, "scenarios[0].scenario.run[0].http.method", id="unknown-method"),
    pytest.param(_duration, "scenarios[0].duration", id="bad-duration"),
]


def bad_load_test(change: Callable[[dict[str, Any]], None]) -> Any:
    load_test = copy.deepcopy(minimal_load_test(TARGET, concurrency=5, duration="2s"))
    change(load_test)
    return to_proto(load_test)


def field_violations(error: grpc.RpcError) -> list[str] | None:
    """Fields named by a ``google.rpc.BadRequest`` in the error's status details, if any."""
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if status is None:
        return None
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    fields = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            fields.extend(v.field for v in bad_request.field_violations)
    return fields


def assert_invalid_argument(error: grpc.RpcError, field: str) -> None:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    assert field in (error.details() or ""), f"message does not name {field!r}: {error.details()!r}"
    fields = field_violations(error)
    if fields:
        assert any(field in f for f in fields), f"BadRequest names {fields}, not {field!r}"


@pytest.mark.parametrize(("change", "field"), BAD_INPUTS)
def test_submit_rejects_bad_input_naming_the_field(master_stub, change, field):
    from chaperon.v1 import master_pb2

    request = master_pb2.SubmitLoadTestRequest(load_test=bad_load_test(change))

    with pytest.raises(grpc.RpcError) as caught:
        master_stub.SubmitLoadTest(request, timeout=RPC_TIMEOUT_S)

    assert_invalid_argument(caught.value, field)


@pytest.mark.parametrize(
    ("change", "field"), [p for p in BAD_INPUTS if p.id in ("zero-concurrency", "unknown-method")]
)
def test_run_rejects_bad_input_at_once(master_stub, change, field):
    from chaperon.v1 import master_pb2

    request = master_pb2.SubmitLoadTestRequest(load_test=bad_load_test(change))

    with pytest.raises(grpc.RpcError) as caught:
        master_stub.RunLoadTest(request, timeout=RPC_TIMEOUT_S)

    assert_invalid_argument(caught.value, field)


def test_unknown_run_id_is_not_found(master_stub):
    from chaperon.v1 import master_pb2

    with pytest.raises(grpc.RpcError) as caught:
        master_stub.GetLoadTestRun(
            master_pb2.GetLoadTestRunRequest(id="no-such-run"), timeout=RPC_TIMEOUT_S
        )

    assert caught.value.code() == grpc.StatusCode.NOT_FOUND, caught.value.details()


def test_rejected_input_is_not_stored(master_stub):
    from chaperon.v1 import master_pb2

    runs = master_stub.ListLoadTestRuns(
        master_pb2.ListLoadTestRunsRequest(), timeout=RPC_TIMEOUT_S
    ).runs

    assert list(runs) == []


def test_minimal_load_test_of_api_md_is_accepted(master_stub):
    from google.protobuf import json_format

    from chaperon.v1 import loadtest_pb2, master_pb2, results_pb2

    load_test = json_format.Parse(API_MD_MINIMAL, loadtest_pb2.LoadTest())

    run = master_stub.SubmitLoadTest(
        master_pb2.SubmitLoadTestRequest(load_test=load_test), timeout=RPC_TIMEOUT_S
    )

    assert run.id
    assert run.state in (results_pb2.SCHEDULED, results_pb2.RUNNING), run
    stored = master_stub.GetLoadTestRun(
        master_pb2.GetLoadTestRunRequest(id=run.id), timeout=RPC_TIMEOUT_S
    )
    assert stored.id == run.id
    assert stored.load_test.name == "smoke"
    assert len(stored.load_test.scenarios) == 1
    # No worker will take it: cancel it rather than leave it queued.
    cancelled = master_stub.CancelLoadTestRun(
        master_pb2.CancelLoadTestRunRequest(id=run.id), timeout=RPC_TIMEOUT_S
    )
    assert cancelled.state == results_pb2.CANCELLED


def test_master_still_healthy_after_bad_input(master, master_stub):
    from chaperon.v1 import master_pb2

    wait_for_health(master.address, timeout_s=5.0, process=master.process)
    info = master_stub.GetServerInfo(master_pb2.GetServerInfoRequest(), timeout=RPC_TIMEOUT_S)
    assert info.version
    assert master.process.is_running()
