"""The control plane over TLS: master, worker and client with certificates the test makes.

The master and the worker serve TLS only; the worker verifies the master with ``--tls-ca``
and the master verifies the worker with its own ``--tls-ca``; the CLI and grpcurl verify the
master. A plaintext client cannot talk to a TLS master.
"""

from __future__ import annotations

import json
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path

import grpc
import pytest
from support.certs import make_certs
from support.cluster import master_argv, worker_argv
from support.loadtests import minimal_load_test
from support.ports import address, free_port
from support.procs import ManagedProcess, chaperon_command, python_env, running


def _wait_tls_health(addr: str, ca: bytes, proc: ManagedProcess, timeout_s: float = 30) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout_s
    with grpc.secure_channel(addr, grpc.ssl_channel_credentials(ca)) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            proc.check_running()
            try:
                stub.Check(health_pb2.HealthCheckRequest(), timeout=1, wait_for_ready=True)
                return
            except grpc.RpcError:
                assert time.monotonic() < deadline, proc.describe()
                time.sleep(0.1)


def test_master_worker_and_client_over_tls(tmp_path: Path, nginx, grpcurl) -> None:
    from chaperon.v1 import master_pb2, master_pb2_grpc

    certs = make_certs(tmp_path / "certs")
    ca = certs.ca_cert.read_bytes()
    tls = ["--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key)]
    master_port, worker_port = free_port(), free_port()
    master_addr = address(master_port)
    master = ManagedProcess(
        "master",
        [*master_argv(master_port, tmp_path / "m.db"), *tls, "--tls-ca", str(certs.ca_cert)],
        tmp_path,
        env=python_env(),
        cwd=tmp_path,
    )
    worker = ManagedProcess(
        "worker",
        [*worker_argv(master_addr, worker_port, 1), *tls, "--tls-ca", str(certs.ca_cert)],
        tmp_path,
        env=python_env(),
        cwd=tmp_path,
    )
    with ExitStack() as stack:
        stack.enter_context(running(master, lambda p: _wait_tls_health(master_addr, ca, p)))
        stack.enter_context(
            running(worker, lambda p: _wait_tls_health(address(worker_port), ca, p))
        )
        with grpc.secure_channel(master_addr, grpc.ssl_channel_credentials(ca)) as channel:
            stub = master_pb2_grpc.MasterStub(channel)
            deadline = time.monotonic() + 30
            while True:
                workers = stub.ListWorkers(master_pb2.ListWorkersRequest(), timeout=5).workers
                if workers:
                    break
                assert time.monotonic() < deadline, worker.describe()
                time.sleep(0.1)
            assert workers[0].tls

        # A plaintext client gets no answer from the TLS port.
        with grpc.insecure_channel(master_addr) as plain:
            with pytest.raises(grpc.RpcError) as refused:
                master_pb2_grpc.MasterStub(plain).ListWorkers(
                    master_pb2.ListWorkersRequest(), timeout=3
                )
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

        spec = tmp_path / "lt.json"
        spec.write_text(
            json.dumps(
                minimal_load_test(nginx.base_url, concurrency=2, duration=None, iterations=15)
            )
        )
        submitted = subprocess.run(
            [
                *chaperon_command(),
                "submit",
                str(spec),
                "--wait",
                "--json",
                "--master",
                master_addr,
                "--tls-ca",
                str(certs.ca_cert),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=python_env(),
        )
        assert submitted.returncode == 0, submitted.stderr + master.describe()
        run = json.loads(submitted.stdout)
        assert run["state"] == "SUCCEEDED"
        assert run["result"]["metrics"][0]["count"] == "30"
        assert nginx.wait_for_served(30) == 30

        listed = subprocess.run(
            [grpcurl, "-cacert", str(certs.ca_cert), master_addr, "list"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert "chaperon.v1.Master" in listed.stdout, listed.stderr

        missing = subprocess.run(
            [
                *chaperon_command(),
                "workers",
                "--master",
                master_addr,
                "--tls-ca",
                str(tmp_path / "nope.pem"),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            env=python_env(),
        )
        assert missing.returncode == 2
        assert "cannot read the CA certificate" in missing.stderr
        assert "Traceback" not in missing.stderr
