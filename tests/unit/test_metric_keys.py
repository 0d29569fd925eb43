"""A load test's metric keys before any request (``chaperon.core.lang.metric_keys``): the
order of the steps, the keys that measure no duration, and open-model keys kept apart from
closed-model ones, the same on the master (a dry compile) and on a worker (its plans)."""

from __future__ import annotations

from typing import Any

from chaperon.core.lang import OPEN_MODEL_SUFFIX, check_load_test, metric_keys
from chaperon.core.loadtest import load_test_from_dict
from chaperon.v1 import loadtest_pb2, worker_pb2
from worker_service.plan import compile_assignment

BASE = "http://127.0.0.1:8080"


def get(path: str, **more: Any) -> dict[str, Any]:
    return {"http": {"method": "GET", "path": path, **more}}


def closed(run: list[dict[str, Any]], **entry: Any) -> dict[str, Any]:
    return {"concurrency": 2, "iterations": 1, "scenario": {"run": run}, **entry}


def open_model(run: list[dict[str, Any]], **entry: Any) -> dict[str, Any]:
    entry = {"arrival_rate": {"per_second": 10}, "duration": "1s", **entry}
    return {"scenario": {"run": run}, **entry}


def checked(*entries: dict[str, Any], **config: Any) -> loadtest_pb2.LoadTest:
    lt = load_test_from_dict(
        {"name": "keys", "config": {"base_url": BASE, **config}, "scenarios": list(entries)}
    )
    check_load_test(lt)
    return lt


def worker_keys(lt: loadtest_pb2.LoadTest, index: int) -> list[str]:
    """The keys a worker's plan for entry ``index`` reports under."""
    entry = lt.scenarios[index]
    share = worker_pb2.EntryShare(
        entry_index=index,
        sessions=entry.concurrency or 1,
        rate_fraction=1.0 if entry.HasField("arrival_rate") else 0.0,
    )
    assignment = worker_pb2.Assignment(assignment_id="a", load_test=lt, shares=[share])
    (plan,) = compile_assignment(assignment)
    return list(plan.metric_keys)


def test_keys_come_in_the_order_of_the_steps_not_by_name() -> None:
    lt = checked(
        {
            "concurrency": 1,
            "scenario": {
                "init": [get("/z-login")],
                "run": [get("/b"), {"call_traced": {"name": "a group", "steps": [get("/a")]}}],
                "teardown": [get("/0-logout")],
            },
        },
        closed([get("/b"), get("/c")]),
    )
    assert metric_keys(lt).order == (
        "GET /z-login",
        "GET /b",
        "a group",
        "GET /a",
        "GET /0-logout",
        "GET /c",
    )


def test_session_names_filters_and_a_sequence() -> None:
    lt = checked(
        closed([get("/x"), get("/skipped")], session_name="buyer"),
        {
            "concurrency": 1,
            "sequence": {"scenarios": [{"run": [get("/one")]}, {"run": [get("/two")]}]},
        },
        metrics_filter=["GET /x", "GET /one", "GET /two"],
    )
    assert metric_keys(lt).order == ("buyer: GET /x", "GET /one", "GET /two")


def test_steps_that_measure_no_duration() -> None:
    lt = checked(
        closed(
            [
                {"assign": {"values": {"token": "t"}}},
                {"update_assign": {"name": "n", "add": 1}},
                {"ws_connect": {"path": "/ws"}},
                {"ws_send": {"text": "hi"}},
                {"ws_recv": {"timeout": "1s"}},
                {"ws_send": {"text": "again", "metric": "shared"}},
                {"ws_recv": {"timeout": "1s", "metric": "shared"}},
                {"abort": {"reason": "done"}},
            ]
        )
    )
    keys = metric_keys(lt)
    assert keys.untimed == {"assign token", "update_assign n", "WS send default", "abort: done"}
    # A key some step of which measures a duration has latencies to show.
    assert "shared" in keys.order and "WS recv default" in keys.order


def test_a_key_of_both_models_is_kept_apart_on_the_worker_and_in_the_order() -> None:
    browse = [get("/"), get("/open-only")]
    lt = checked(closed([get("/"), get("/closed-only")]), open_model(browse))
    separated = "GET /" + OPEN_MODEL_SUFFIX
    assert worker_keys(lt, 0) == ["GET /", "GET /closed-only"]
    assert worker_keys(lt, 1) == [separated, "GET /open-only"]
    assert metric_keys(lt).order == ("GET /", "GET /closed-only", separated, "GET /open-only")


def test_open_model_keys_keep_their_names_when_nothing_clashes() -> None:
    lt = checked(open_model([get("/")]), closed([get("/other")], session_name="closed"))
    assert worker_keys(lt, 0) == ["GET /"]
    assert metric_keys(lt).order == ("GET /", "closed: GET /other")


def test_the_dry_compile_needs_no_network_and_imports_no_python() -> None:
    # A host that does not resolve and a module that does not exist: neither is looked at.
    lt = checked(
        closed(
            [
                {"http": {"method": "GET", "url": "https://no-such-host.invalid/x"}},
                {"python": {"function": "no_such_module_here:fn"}},
            ]
        )
    )
    assert metric_keys(lt).order == ("GET /x", "python no_such_module_here:fn")
