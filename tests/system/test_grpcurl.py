"""The real ``grpcurl`` binary against a master and one worker: reflection and proto3 JSON.

This is how a user without our stubs drives the cluster, so everything goes through
server reflection (no .proto files given to grpcurl) and the JSON mapping.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest
from support.cluster import Service, run_worker, wait_for_workers
from support.loadtests import assert_hdr_matches, decode_hdr, metric, minimal_load_test

GRPCURL_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def one_worker(master: Service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with run_worker(tmp_path_factory.mktemp("worker"), master.address) as worker:
        wait_for_workers(master, [worker])
        yield worker


def grpcurl_run(grpcurl: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``grpcurl -plaintext -max-time T ARGS...``."""
    return subprocess.run(
        [grpcurl, "-plaintext", "-max-time", str(int(GRPCURL_TIMEOUT_S)), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=GRPCURL_TIMEOUT_S + 15,
    )


def output(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"


def test_master_lists_its_services(grpcurl, master):
    done = grpcurl_run(grpcurl, master.address, "list")

    assert done.returncode == 0, output(done)
    services = done.stdout.split()
    assert "chaperon.v1.Master" in services, output(done)
    assert "grpc.health.v1.Health" in services, output(done)


def test_worker_lists_its_services(grpcurl, one_worker):
    done = grpcurl_run(grpcurl, one_worker.address, "list")

    assert done.returncode == 0, output(done)
    services = done.stdout.split()
    assert "chaperon.v1.Worker" in services, output(done)
    assert "grpc.health.v1.Health" in services, output(done)


def test_run_load_test_as_json(grpcurl, master, one_worker, nginx):
    from google.protobuf import json_format

    from chaperon.v1 import results_pb2

    request = {"load_test": minimal_load_test(nginx.base_url, concurrency=10, duration="2s")}

    done = grpcurl_run(
        grpcurl, "-d", json.dumps(request), master.address, "chaperon.v1.Master/RunLoadTest"
    )

    assert done.returncode == 0, output(done)
    assert '"state": "SUCCEEDED"' in done.stdout, output(done)
    run = json_format.Parse(done.stdout, results_pb2.LoadTestRun())
    get_root = metric(run, "GET /")
    assert get_root.count > 1000
    assert get_root.errors == 0, dict(get_root.errors_by_kind)
    assert nginx.wait_for_served(get_root.count) == get_root.count
    assert_hdr_matches(get_root)

    # The JSON text itself: hdr is the base64 of the HdrHistogram V2 compressed encoding,
    # which the reference library reads as is.
    raw = json.loads(done.stdout)
    [raw_metric] = [m for m in raw["result"]["metrics"] if m["key"] == "GET /"]
    from hdrh.histogram import HdrHistogram

    assert HdrHistogram.decode(raw_metric["hdr"].encode()).get_total_count() == get_root.count
    assert decode_hdr(get_root.hdr).get_total_count() == int(raw_metric["count"])


def test_unknown_run_is_not_found(grpcurl, master):
    done = grpcurl_run(
        grpcurl,
        "-d",
        '{"id": "no-such-run"}',
        master.address,
        "chaperon.v1.Master/GetLoadTestRun",
    )

    assert done.returncode != 0, output(done)
    assert "NotFound" in done.stderr, output(done)


def test_zero_concurrency_is_invalid_argument(grpcurl, master, nginx):
    request = {"load_test": minimal_load_test(nginx.base_url, concurrency=0, duration="2s")}

    done = grpcurl_run(
        grpcurl, "-d", json.dumps(request), master.address, "chaperon.v1.Master/SubmitLoadTest"
    )

    assert done.returncode != 0, output(done)
    assert "InvalidArgument" in done.stderr, output(done)
    assert "scenarios[0].concurrency" in done.stderr, output(done)
    assert nginx.requests_served() == 0
