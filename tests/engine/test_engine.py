"""The request engine (``_fastpath.engine``) against small HTTP/1.1 servers on 127.0.0.1.

Each test starts its own server (one selector thread, keep-alive, behaviour chosen per test)
and stops it in a ``finally``; every wait is bounded. Each failure kind is provoked by a real
misbehaving server on loopback: a full accept queue (connect timeout), silence (request
timeout), RST, EOF mid-body, idle close, ``Connection: close``, 4xx/5xx. The servers come
from ``support.servers``; the 10k-session memory test, which needs nginx, is in
``tests/system/test_engine_memory.py``.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import time

import pytest
from support.plans import get_plan
from support.servers import Reply, free_port, get, ok
from support.servers import http_server as server

from _fastpath.engine import ERROR_KINDS, Engine, EngineOptions, PlanBuilder
from _fastpath.histogram import Histogram


def make(port: int, plan: PlanBuilder, keys: list[str] | None = None, **options) -> Engine:
    options.setdefault("sessions", 2)
    return Engine([("127.0.0.1", port)], keys or ["GET /"], plan, EngineOptions(**options))


def run(
    engine: Engine, timeout_s: float = 10.0
) -> dict[str, tuple[Histogram, int, int, dict[str, int]]]:
    """Start, wait (bounded), take the final swap and close.

    -> {key: (hist, count, errors, kinds)}"""
    try:
        engine.start()
        assert engine.wait(timeout_s), "engine did not finish in time"
        assert engine.done
        out = {}
        for k, h, c, e, kinds, service in engine.swap():
            # closed model: the service time is the latency
            assert service.total_count == h.total_count == c
            assert service.percentiles([0, 50, 100]) == h.percentiles([0, 50, 100])
            out[k] = (h, c, e, kinds)
        return out
    finally:
        engine.close()


# ---------------------------------------------------------------- runs


def test_exact_iterations_server_count_equals_engine_count() -> None:
    with server() as srv:
        eng = make(srv.port, get_plan(get()), sessions=10, iterations=20)
        res = run(eng)
        hist, count, errors, kinds = res["GET /"]
        assert count == 200 and errors == 0 and kinds == {}
        assert hist.total_count == 200
        assert srv.requests == 200
        assert srv.connections == 10  # keep-alive: one connection per session
        st = eng.stats()
        assert st == {
            "sessions_started": 10,
            "sessions_completed": 10,
            "sessions_dropped": 0,
            "sessions_timed_out": 0,
            "sessions_failed": 0,
            "requests_sent": 200,
            "responses": 200,
            "iterations": 200,
            "errors": 0,
        }


def test_duration_stops_the_run_and_counts_match() -> None:
    with server() as srv:
        eng = make(srv.port, get_plan(get()), sessions=4, duration_ns=300_000_000)
        t0 = time.monotonic()
        res = run(eng)
        elapsed = time.monotonic() - t0
        assert 0.25 < elapsed < 2.0
        count = res["GET /"][1]
        assert count > 50
        assert srv.requests == count == eng.stats()["responses"]
        assert eng.stats()["sessions_completed"] == 4


def test_chunked_and_content_length_responses() -> None:
    def handler(method: bytes, path: bytes, body: bytes) -> Reply:
        if path == b"/chunked":
            return Reply(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"4;ext=1\r\nabcd\r\n10\r\n" + b"x" * 16 + b"\r\n0\r\nTrailer: t\r\n\r\n"
            )
        return ok(b"y" * 5000)

    with server(handler) as srv:
        ops = get_plan(get(b"/cl"), get(b"/chunked"))
        res = run(make(srv.port, ops, ["GET /cl", "GET /chunked"], sessions=3, iterations=7))
        assert res["GET /cl"][1:3] == (21, 0)
        assert res["GET /chunked"][1:3] == (21, 0)
        assert srv.requests == 42 and srv.connections == 3


def test_head_request_has_no_body() -> None:
    with server(lambda m, p, b: Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")) as srv:
        res = run(
            make(srv.port, get_plan(get(method=b"HEAD"), no_body=True), sessions=2, iterations=5)
        )
        assert res["GET /"][1:3] == (10, 0)
        assert srv.connections == 2


def test_4xx_and_5xx_are_responses_and_errors() -> None:
    def handler(method: bytes, path: bytes, body: bytes) -> Reply:
        return ok(status=404) if path == b"/missing" else ok(status=500)

    with server(handler) as srv:
        ops = get_plan(get(b"/missing"), get(b"/boom"))
        res = run(make(srv.port, ops, ["a", "b"], sessions=2, iterations=3))
        assert res["a"][1:] == (6, 6, {"http_4xx": 6})
        assert res["b"][1:] == (6, 6, {"http_5xx": 6})
        assert res["a"][0].total_count == 6


def test_connect_refused_counts_connect_errors() -> None:
    eng = make(free_port(), get_plan(get()), sessions=2, iterations=3)
    res = run(eng)
    hist, count, errors, kinds = res["GET /"]
    assert (count, errors, kinds) == (0, 6, {"connect": 6})
    assert eng.stats()["errors"] == 6


def test_server_that_never_answers_times_out() -> None:
    with server(lambda m, p, b: Reply(silent=True)) as srv:
        eng = make(
            srv.port,
            get_plan(get()),
            sessions=2,
            iterations=2,
            request_timeout_ns=150_000_000,
        )
        t0 = time.monotonic()
        res = run(eng)
        assert res["GET /"][1:] == (0, 4, {"timeout": 4})
        assert 0.25 < time.monotonic() - t0 < 3.0
        assert srv.connections == 4  # a timed-out connection is not reused


def test_server_reset_counts_reset() -> None:
    with server(lambda m, p, b: Reply(reset=True)) as srv:
        res = run(make(srv.port, get_plan(get()), sessions=2, iterations=3))
        _, count, errors, kinds = res["GET /"]
        assert count == 0 and errors == 6
        assert kinds == {"reset": 6}


def test_reset_mid_response_counts_reset() -> None:
    def handler(method: bytes, path: bytes, body: bytes) -> Reply:
        return Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial", reset=True)

    with server(handler) as srv:
        res = run(make(srv.port, get_plan(get()), sessions=1, iterations=3))
        assert res["GET /"][1:] == (0, 3, {"reset": 3})
        assert srv.connections == 3


def test_connect_timeout_when_the_accept_queue_is_full() -> None:
    # listen(0) and never accept: once one connection is queued, Linux drops further SYNs,
    # so a connect neither completes nor fails. It times out as kind "timeout".
    listener = socket.socket()
    filler = socket.socket()
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        filler.setblocking(False)
        filler.connect_ex(listener.getsockname())
        _, writable, _ = select.select([], [filler], [], 2.0)
        assert writable, "the filler connection was not queued"
        eng = make(
            listener.getsockname()[1],
            get_plan(get()),
            sessions=2,
            iterations=2,
            connect_timeout_ns=150_000_000,
        )
        t0 = time.monotonic()
        res = run(eng)
        elapsed = time.monotonic() - t0
        assert res["GET /"][1:] == (0, 4, {"timeout": 4})
        assert 0.29 < elapsed < 3.0  # two timeouts in a row per session
    finally:
        filler.close()
        listener.close()


def test_eof_before_complete_counts_closed() -> None:
    def handler(method: bytes, path: bytes, body: bytes) -> Reply:
        return Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial", close=True)

    with server(handler) as srv:
        res = run(make(srv.port, get_plan(get()), sessions=1, iterations=3))
        assert res["GET /"][1:] == (0, 3, {"closed": 3})


def test_connection_close_reconnects() -> None:
    with server(lambda m, p, b: ok(extra=b"Connection: close\r\n")) as srv:
        res = run(make(srv.port, get_plan(get()), sessions=2, iterations=5))
        assert res["GET /"][1:3] == (10, 0)
        assert srv.requests == 10 and srv.connections == 10


def test_http10_and_read_until_close() -> None:
    def handler(method: bytes, path: bytes, body: bytes) -> Reply:
        return Reply(b"HTTP/1.0 200 OK\r\n\r\nbody until close", close=True)

    with server(handler) as srv:
        res = run(make(srv.port, get_plan(get()), sessions=2, iterations=4))
        assert res["GET /"][1:3] == (8, 0)
        assert srv.connections == 8


def test_eof_on_idle_connection_reconnects_without_error() -> None:
    # The server closes after each response without saying so; the engine notices the EOF
    # while the session sleeps and reconnects for the next request.
    with server(lambda m, p, b: Reply(ok().data, close=True)) as srv:
        ops = get_plan(get(), delay_ns=30_000_000)
        res = run(make(srv.port, ops, sessions=2, iterations=3))
        assert res["GET /"][1:3] == (6, 0)
        assert srv.connections == 6


def test_delay_ops_timing() -> None:
    with server() as srv:
        ops = get_plan(get(), delay_ns=100_000_000)
        eng = make(srv.port, ops, sessions=3, iterations=3)
        t0 = time.monotonic()
        res = run(eng)
        elapsed = time.monotonic() - t0
        assert 0.29 < elapsed < 1.5
        assert res["GET /"][1] == 9


def test_latency_includes_server_delay() -> None:
    def handler(method: bytes, path: bytes, body: bytes) -> Reply:
        time.sleep(0.02)
        return ok()

    with server(handler) as srv:
        res = run(make(srv.port, get_plan(get()), sessions=1, iterations=3))
        hist = res["GET /"][0]
        assert hist.total_count == 3
        if hasattr(hist, "min"):  # the Histogram API is growing in parallel
            assert hist.min >= 15_000


def test_several_threads_add_up() -> None:
    with server() as srv:
        eng = make(srv.port, get_plan(get()), sessions=8, threads=3, iterations=25)
        res = run(eng)
        assert res["GET /"][1] == 200 == srv.requests
        st = eng.stats()
        assert st["sessions_completed"] == 8 and st["iterations"] == 200


def test_more_threads_than_sessions() -> None:
    with server() as srv:
        res = run(make(srv.port, get_plan(get()), sessions=2, threads=4, iterations=5))
        assert res["GET /"][1] == 10


def test_swap_deltas_add_up_to_totals() -> None:
    with server() as srv:
        eng = make(
            srv.port,
            get_plan(get(), delay_ns=1_000_000),
            sessions=4,
            threads=2,
            duration_ns=500_000_000,
        )
        total = hist_total = errors = 0
        nonempty = 0
        try:
            eng.start()
            deadline = time.monotonic() + 10
            while not eng.done and time.monotonic() < deadline:
                time.sleep(0.05)
                for key, hist, count, err, _, _ in eng.swap():
                    assert key == "GET /"
                    total += count
                    hist_total += hist.total_count
                    errors += err
                    nonempty += 1
            assert eng.wait(5)
            for _, hist, count, err, _, _ in eng.swap():
                errors += err
                total += count
                hist_total += hist.total_count
            assert eng.swap() == []
        finally:
            eng.close()
        assert nonempty >= 3
        assert errors == 0
        assert total == hist_total == srv.requests == eng.stats()["responses"]


def test_cancel_stops_within_a_second() -> None:
    with server(lambda m, p, b: Reply(silent=True)) as srv:
        eng = make(srv.port, get_plan(get()), sessions=5, duration_ns=60_000_000_000)
        try:
            eng.start()
            deadline = time.monotonic() + 5
            while srv.requests < 5 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert not eng.wait(0.05)
            t0 = time.monotonic()
            eng.cancel()
            assert eng.wait(1.0)
            assert time.monotonic() - t0 < 1.0
            assert eng.done
        finally:
            eng.close()


def test_post_body_larger_than_socket_buffer() -> None:
    body = b"p" * (16 << 20)

    with server(lambda m, p, b: ok(b"%d" % len(b))) as srv:
        ops = get_plan(get(b"/upload", b"POST", body), get())
        res = run(make(srv.port, ops, ["POST /upload", "GET /"], sessions=2, iterations=2), 30)
        assert res["POST /upload"][1:3] == (4, 0)
        assert res["GET /"][1:3] == (4, 0)
        assert srv.body_sizes.count(len(body)) == 4


def test_two_targets_reconnect_on_switch() -> None:
    with server() as a, server() as b:
        plan = PlanBuilder()
        plan.http(0, 0, get())
        plan.http(1, 1, get())
        eng = Engine(
            [("127.0.0.1", a.port), ("::ffff:127.0.0.1", b.port)],
            ["a", "b"],
            plan,
            EngineOptions(sessions=1, iterations=3),
        )
        res = run(eng)
        assert res["a"][1] == res["b"][1] == 3
        assert a.connections == b.connections == 3


# ---------------------------------------------------------------- API


def test_error_kinds_constant() -> None:
    assert ERROR_KINDS == (
        "connect",
        "timeout",
        "reset",
        "closed",
        "http_4xx",
        "http_5xx",
        "tls",
        "extract",
        "abort",
        "protocol",
        "python",
    )


REQUEST = b"GET / HTTP/1.1\r\n\r\n"


def _plain(plan: PlanBuilder) -> None:
    plan.http(0, 0, REQUEST)


def _build(
    targets: list = [("127.0.0.1", 80)],  # noqa: B006 - never mutated
    metric_keys: list = ["k"],  # noqa: B006
    fill=_plain,
    **options,
) -> Engine:
    plan = PlanBuilder()
    fill(plan)
    return Engine(targets, metric_keys, plan, EngineOptions(**{"iterations": 1, **options}))


@pytest.mark.parametrize(
    ("change", "exc", "match"),
    [
        ({"iterations": 0, "duration_ns": 0}, ValueError, "never end"),
        ({"sessions": 0}, ValueError, "sessions"),
        ({"sessions": 1.5}, TypeError, "sessions"),
        ({"threads": 0}, ValueError, "threads"),
        ({"iterations": -1}, ValueError, "iterations"),
        ({"duration_ns": True}, TypeError, "duration_ns"),
        ({"request_timeout_ns": 0}, ValueError, "request_timeout_ns"),
        ({"targets": []}, ValueError, "targets"),
        ({"targets": [("localhost", 80)]}, ValueError, "literal"),
        ({"targets": [("127.0.0.1", 70000)]}, ValueError, "port"),
        ({"targets": ["127.0.0.1:80"]}, TypeError, "targets"),
        ({"metric_keys": [1]}, TypeError, "metric_keys"),
        ({"fill": lambda b: None}, ValueError, "ops must not be empty"),
        ({"fill": lambda b: b.http(1, 0, b"x")}, ValueError, "target_index"),
        ({"fill": lambda b: b.http(0, 3, b"x")}, ValueError, "metric_index"),
        ({"fill": lambda b: b.http(0, 0, "GET /")}, TypeError, "request"),
        ({"fill": lambda b: b.http(0, 0, b"")}, ValueError, "empty"),
        ({"fill": lambda b: b.http(0, 0)}, TypeError, "positional arguments"),
        ({"fill": lambda b: b.delay(-5)}, ValueError, "delay_ns"),
        ({"fill": lambda b: b.delay()}, TypeError, "positional argument"),
    ],
)
def test_constructor_validation(change: dict, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        _build(**change)


def test_ipv6_literal_in_brackets_is_accepted() -> None:
    _build(targets=[("[::1]", 8080)]).close()


def _delay_plan(delay_ns: int) -> PlanBuilder:
    plan = PlanBuilder()
    plan.delay(delay_ns)
    return plan


def test_lifecycle() -> None:
    eng = make(free_port(), _delay_plan(1_000_000), sessions=1, iterations=2)
    assert not eng.done
    with pytest.raises(RuntimeError):
        eng.wait(0)
    eng.start()
    with pytest.raises(RuntimeError):
        eng.start()
    assert eng.wait(5)
    assert eng.swap() == []  # delays only: nothing measured
    assert eng.stats()["iterations"] == 2
    eng.close()
    eng.close()
    assert eng.stats()["iterations"] == 2  # kept after close
    assert eng.swap() == []
    with pytest.raises(RuntimeError):
        eng.start()


def test_close_while_running_cancels() -> None:
    with server() as srv:
        eng = make(srv.port, get_plan(get()), sessions=2, duration_ns=30_000_000_000)
        eng.start()
        time.sleep(0.05)
        t0 = time.monotonic()
        eng.close()
        assert time.monotonic() - t0 < 1.0
        assert eng.done


# ---------------------------------------------------------------- limits and scale

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_too_low_file_limit_fails_clearly() -> None:
    code = """
import resource
resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))
from _fastpath.engine import Engine, EngineOptions, PlanBuilder
plan = PlanBuilder()
plan.http(0, 0, b"GET / HTTP/1.1\\r\\n\\r\\n")
eng = Engine([("127.0.0.1", 9)], ["k"], plan, EngineOptions(sessions=1000, iterations=1))
try:
    eng.start()
except RuntimeError as exc:
    print("ERROR", exc)
finally:
    eng.close()
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    assert "RLIMIT_NOFILE allows 128" in out.stdout and "ulimit -Hn" in out.stdout
