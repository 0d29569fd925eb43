"""Authentication and the target allow-list, with real processes on loopback.

With ``--token`` every Master RPC but health and reflection needs ``authorization: Bearer``;
a worker without the cluster token cannot join. The allow-list refuses load tests aimed at
hosts outside it (no worker is registered where a refused test is submitted, so nothing
could be sent even if the check failed).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import grpc
import pytest
from support.cluster import run_master, run_worker
from support.loadtests import metric, minimal_load_test, to_proto

TOKEN = "s3cret-token-for-tests"


def _stub(address: str):  # -> (channel, MasterStub)
    from chaperon.v1 import master_pb2_grpc

    channel = grpc.insecure_channel(address)
    return channel, master_pb2_grpc.MasterStub(channel)


def _auth(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def test_token_guards_every_control_rpc_but_not_health(tmp_path: Path, nginx, grpcurl) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from chaperon.v1 import master_pb2

    with run_master(tmp_path / "m", extra_args=["--token", TOKEN]) as master:
        channel, stub = _stub(master.address)
        with channel:
            request = master_pb2.ListWorkersRequest()
            with pytest.raises(grpc.RpcError) as missing:
                stub.ListWorkers(request, timeout=5)
            assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "Bearer" in missing.value.details()
            for metadata in (_auth("wrong"), [("authorization", "Basic abc")]):
                with pytest.raises(grpc.RpcError) as wrong:
                    stub.ListWorkers(request, timeout=5, metadata=metadata)
                assert wrong.value.code() in (
                    grpc.StatusCode.PERMISSION_DENIED,
                    grpc.StatusCode.UNAUTHENTICATED,
                )
            with pytest.raises(grpc.RpcError) as wrong:
                stub.GetServerInfo(
                    master_pb2.GetServerInfoRequest(), timeout=5, metadata=_auth("wrong")
                )
            assert wrong.value.code() == grpc.StatusCode.PERMISSION_DENIED
            with pytest.raises(grpc.RpcError) as submit:
                stub.SubmitLoadTest(
                    master_pb2.SubmitLoadTestRequest(
                        load_test=to_proto(minimal_load_test(nginx.base_url))
                    ),
                    timeout=5,
                )
            assert submit.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert stub.ListWorkers(request, timeout=5, metadata=_auth(TOKEN)).workers == []
            health = health_pb2_grpc.HealthStub(channel)
            reply = health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            assert nginx.requests_served() == 0
        # Reflection stays open too: grpcurl lists the services without a token.
        listed = subprocess.run(
            [grpcurl, "-plaintext", master.address, "list"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert "chaperon.v1.Master" in listed.stdout, listed.stderr
        log = master.process.stderr_path.read_text() + master.process.stdout_path.read_text()
        assert TOKEN not in log


def test_worker_needs_the_cluster_token_and_the_run_uses_it(tmp_path: Path, nginx) -> None:
    from chaperon.v1 import master_pb2, results_pb2

    with run_master(tmp_path / "m", extra_args=["--token", TOKEN]) as master:
        channel, stub = _stub(master.address)
        with channel:
            with run_worker(tmp_path / "intruder", master.address) as intruder:
                deadline = time.monotonic() + 3
                while time.monotonic() < deadline:
                    listed = stub.ListWorkers(
                        master_pb2.ListWorkersRequest(), timeout=5, metadata=_auth(TOKEN)
                    ).workers
                    assert list(listed) == [], "a worker without the token joined"
                    time.sleep(0.2)
                assert "refused" in intruder.process.stderr_path.read_text()
            with run_worker(tmp_path / "w", master.address, extra_args=["--token", TOKEN]):
                deadline = time.monotonic() + 20
                while not stub.ListWorkers(
                    master_pb2.ListWorkersRequest(), timeout=5, metadata=_auth(TOKEN)
                ).workers:
                    assert time.monotonic() < deadline, "the worker with the token never joined"
                    time.sleep(0.1)
                load_test = minimal_load_test(
                    nginx.base_url, concurrency=2, duration=None, iterations=10
                )
                run = stub.RunLoadTest(
                    master_pb2.SubmitLoadTestRequest(load_test=to_proto(load_test)),
                    timeout=60,
                    metadata=_auth(TOKEN),
                )
                assert run.state == results_pb2.SUCCEEDED, run.error
                assert metric(run, "GET /").count == 20
                assert nginx.wait_for_served(20) == 20


def test_allow_list_refuses_other_hosts_naming_them(tmp_path: Path) -> None:
    from chaperon.v1 import master_pb2

    with run_master(tmp_path / "m") as master:
        channel, stub = _stub(master.address)
        with channel:
            for base_url in ("http://192.0.2.10:80", "http://10.255.255.1:8080"):
                with pytest.raises(grpc.RpcError) as denied:
                    stub.SubmitLoadTest(
                        master_pb2.SubmitLoadTestRequest(
                            load_test=to_proto(minimal_load_test(base_url))
                        ),
                        timeout=10,
                    )
                assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
                host = base_url.split("//")[1].split(":")[0]
                assert host in denied.value.details()
            # An absolute URL in a step is checked as well.
            load_test = minimal_load_test("http://127.0.0.1:9")
            load_test["scenarios"][0]["scenario"]["run"].append(
                {"http": {"method": "GET", "url": "http://198.51.100.7/x"}}
            )
            with pytest.raises(grpc.RpcError) as denied:
                stub.SubmitLoadTest(
                    master_pb2.SubmitLoadTestRequest(load_test=to_proto(load_test)), timeout=10
                )
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "198.51.100.7" in denied.value.details()
            runs = stub.ListLoadTestRuns(master_pb2.ListLoadTestRunsRequest(), timeout=5).runs
            assert list(runs) == []  # nothing refused was stored


def test_allow_target_replaces_the_default(tmp_path: Path) -> None:
    from chaperon.v1 import master_pb2

    with run_master(tmp_path / "m", extra_args=["--allow-target", "127.0.0.2/32"]) as master:
        channel, stub = _stub(master.address)
        with channel:
            with pytest.raises(grpc.RpcError) as denied:
                stub.SubmitLoadTest(
                    master_pb2.SubmitLoadTestRequest(
                        load_test=to_proto(minimal_load_test("http://127.0.0.1:9"))
                    ),
                    timeout=10,
                )
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
            run = stub.SubmitLoadTest(
                master_pb2.SubmitLoadTestRequest(
                    load_test=to_proto(minimal_load_test("http://127.0.0.2:9"))
                ),
                timeout=10,
            )
            stub.CancelLoadTestRun(master_pb2.CancelLoadTestRunRequest(id=run.id), timeout=10)


def test_worker_checks_its_own_allow_list(tmp_path: Path, nginx) -> None:
    from chaperon.v1 import master_pb2, results_pb2

    with run_master(tmp_path / "m") as master:
        channel, stub = _stub(master.address)
        with (
            channel,
            run_worker(
                tmp_path / "w", master.address, extra_args=["--allow-target", "127.0.0.2/32"]
            ),
        ):
            deadline = time.monotonic() + 20
            while not stub.ListWorkers(master_pb2.ListWorkersRequest(), timeout=5).workers:
                assert time.monotonic() < deadline
                time.sleep(0.1)
            run = stub.RunLoadTest(
                master_pb2.SubmitLoadTestRequest(
                    load_test=to_proto(minimal_load_test(nginx.base_url, duration="1s"))
                ),
                timeout=60,
            )
            assert run.state == results_pb2.FAILED
            assert "allow-list" in run.error
            assert nginx.requests_served() == 0
