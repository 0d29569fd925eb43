"""End to end through the generated stubs: a master, two workers and nginx, all real.

The generator's own count is checked against nginx's access log (exactly), and its
histogram against the reference HdrHistogram decoding of the ``hdr`` bytes it returned.
"""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from support.loadtests import assert_hdr_matches, metric, minimal_load_test, percentile, to_proto

RPC_TIMEOUT_S = 60.0


def run_load_test(master_stub, load_test: dict):
    from chaperon.v1 import master_pb2

    request = master_pb2.SubmitLoadTestRequest(load_test=to_proto(load_test))
    return master_stub.RunLoadTest(request, timeout=RPC_TIMEOUT_S)


def assert_succeeded(run) -> None:
    from chaperon.v1 import results_pb2

    state = results_pb2.RunState.Name(run.state)
    assert run.state == results_pb2.SUCCEEDED, f"run {run.id} ended {state}: {run.error!r}"


def test_nginx_target_counts_every_request(nginx):
    """The yardstick first: nginx's access log counts each request, by status, at once."""
    for path, status in (("/", 200), ("/", 200), ("/status/404", 404), ("/status/500", 500)):
        try:
            with urllib.request.urlopen(nginx.base_url + path, timeout=5) as response:
                assert (response.status, response.read()) == (status, b"ok\n")
        except urllib.error.HTTPError as exc:
            with exc:
                assert exc.code == status

    assert nginx.wait_for_served(4) == 4
    assert nginx.requests_served(200) == 2
    assert nginx.requests_served(404) == 1


def test_duration_run_on_two_workers_matches_nginx_and_hdrh(master_stub, workers, nginx):
    from chaperon.v1 import master_pb2

    run = run_load_test(master_stub, minimal_load_test(nginx.base_url, concurrency=10))

    assert_succeeded(run)
    assert run.id
    get_root = metric(run, "GET /")
    assert get_root.count > 1000, f"only {get_root.count} requests in 2 s"
    assert get_root.errors == 0, dict(get_root.errors_by_kind)
    served = nginx.wait_for_served(get_root.count)
    assert served == get_root.count, (
        f"nginx served {served} requests, the result counts {get_root.count}"
    )

    histogram = assert_hdr_matches(get_root)
    assert get_root.min_us <= percentile(get_root, 50.0) <= get_root.max_us
    assert histogram.get_min_value() <= get_root.mean_us <= histogram.get_max_value()
    for p in (50.0, 90.0, 99.0, 99.9):
        percentile(get_root, p)  # always reported

    result = run.result
    assert result.sessions_completed == 10, result
    assert result.sessions_lost == 0
    listed = master_stub.ListWorkers(master_pb2.ListWorkersRequest(), timeout=10).workers
    assert len(listed) == len(workers)
    assert set(result.workers) == {w.worker_id for w in listed}, (
        f"workers that took part: {list(result.workers)}, registered: "
        f"{[(w.worker_id, w.address) for w in listed]}"
    )

    stored = master_stub.GetLoadTestRun(master_pb2.GetLoadTestRunRequest(id=run.id), timeout=10)
    assert stored.state == run.state
    assert metric(stored, "GET /").count == get_root.count


def test_iterations_serve_exactly_sessions_times_iterations(master_stub, workers, nginx):
    load_test = minimal_load_test(nginx.base_url, concurrency=4, duration=None, iterations=25)

    run = run_load_test(master_stub, load_test)

    assert_succeeded(run)
    get_root = metric(run, "GET /")
    assert get_root.count == 100
    assert get_root.errors == 0, dict(get_root.errors_by_kind)
    assert nginx.wait_for_served(100) == 100
    assert_hdr_matches(get_root)
    assert run.result.sessions_completed == 4


@pytest.mark.parametrize(("status", "kind"), [(404, "http_4xx"), (500, "http_5xx")])
def test_error_statuses_are_counted_by_kind(master_stub, workers, nginx, status, kind):
    path = f"/status/{status}"
    load_test = minimal_load_test(
        nginx.base_url, concurrency=2, duration=None, iterations=20, path=path
    )

    run = run_load_test(master_stub, load_test)

    # Every request failed: the run did too, and says why.
    from chaperon.v1 import results_pb2

    assert run.state == results_pb2.FAILED
    assert run.error == f"every request failed (40 errors: {kind}=40)"
    failing = metric(run, f"GET {path}")
    assert failing.count == 40
    assert failing.errors == 40
    assert {k: n for k, n in failing.errors_by_kind.items() if n} == {kind: 40}
    assert nginx.wait_for_served(40) == 40
    assert nginx.requests_served(status) == 40
