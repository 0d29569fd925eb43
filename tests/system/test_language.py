"""The session language end to end, through real processes, against a server that counts.

One stateful load test (``support.lang_scenarios``: login with a token, authenticated
requests, cookies, variables, WebSocket echo on two connections, async children with
signals, cc_spread, run_scenario, add_metric, a python step ...) run three ways: by
``chaperon run FILE`` at concurrency 100, by a master with two workers, and by ``grpcurl``
with the load test as JSON; then a builder script run by ``chaperon run script.py``. Each
time every count the target server (``support.lang_server``) received is compared, exactly,
with the counts the run reported, and the run must be SUCCEEDED with no error anywhere.
Last, a JSON payload must be the same text whichever process renders it.

The failure paths (a step that fails ends its session, the run goes on) are in
``test_language_failures.py``.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from support.lang_runs import (
    assert_succeeded,
    chaperon_run,
    describe,
    errors_by_key,
    reported_counts,
    run_on,
    write_load_test,
)
from support.lang_scenarios import (
    HELPER_SESSIONS,
    HITS,
    MAIN,
    PYTHON_MODULE,
    expected_metrics,
    expected_server_counts,
    http,
    python_module_source,
    runs_by_user,
    stateful_load_test,
)
from support.loadtests import metric, to_proto
from support.servers import LangServer

GRPCURL_TIMEOUT_S = 60


def server_counts_settled(server: LangServer, reported: dict[str, int]) -> dict[str, Any]:
    """The server's counts once the last ones have landed: ``by_route`` and ``ws_close`` are
    counted a moment after the client has its answer (the handler's end, the close frame)."""
    ws_closes = sum(n for key, n in reported.items() if "WS close " in key)
    return server.wait_for(
        lambda c: (
            c["ws_close"] + c["ws_drop"] >= ws_closes
            and sum(c["by_route"].values()) >= c["requests"]
        )
    )


def assert_add_metric_values(run: Any) -> None:
    """add_metric records its number as the value (a value of 42, the variable `hits`)."""
    custom, hits = metric(run, MAIN + "custom"), metric(run, MAIN + "hits")
    assert (custom.min_us, custom.max_us) == (42, 42)
    assert (hits.min_us, hits.max_us) == (HITS, HITS)


def assert_sessions(run: Any, main_sessions: int) -> None:
    result = run.result
    sessions = main_sessions + HELPER_SESSIONS  # child sessions are not sessions of the run
    assert (result.sessions_started, result.sessions_completed) == (sessions, sessions)
    assert result.sessions_failed == 0
    assert (result.sessions_timed_out, result.sessions_lost, result.sessions_dropped) == (0, 0, 0)


def test_most_of_the_language_at_concurrency_100_counts_match_the_server(
    lang_server: LangServer, tmp_path: Path
) -> None:
    # A python module beside the load test: `chaperon run` puts the file's folder on sys.path.
    (tmp_path / f"{PYTHON_MODULE}.py").write_text(python_module_source())
    load_test = stateful_load_test(lang_server.base_url, concurrency=100, iterations=2, python=True)
    path = write_load_test(tmp_path / "stateful.yaml", load_test)

    run = chaperon_run(path)

    assert_succeeded(run)
    reported = reported_counts(run)
    assert reported == expected_metrics(100, 2, python=True), errors_by_key(run)
    assert errors_by_key(run) == {}
    assert_sessions(run, 100)
    assert_add_metric_values(run)
    counts = server_counts_settled(lang_server, reported)
    users = runs_by_user(counts)
    # One user per session (its own token, cookie and variables), two runs each.
    assert len(users) == 100 and set(users.values()) == {2}, users
    assert counts == expected_server_counts(reported, users, sessions=100, python=True)


def test_the_same_language_on_two_workers_counts_match_across_workers(
    master_stub: Any, workers: Any, lang_server: LangServer
) -> None:
    load_test = stateful_load_test(lang_server.base_url, concurrency=100, iterations=2)

    run = run_on(master_stub, load_test)

    assert_succeeded(run)
    assert len(run.result.workers) == 2, list(run.result.workers)
    reported = reported_counts(run)
    assert reported == expected_metrics(100, 2), errors_by_key(run)
    assert errors_by_key(run) == {}
    assert_sessions(run, 100)
    assert_add_metric_values(run)
    counts = server_counts_settled(lang_server, reported)
    users = runs_by_user(counts)
    # session_id numbers the entry's sessions across the workers: 100 users, 2 runs each.
    assert users == {f"u{i}": 2 for i in range(100)}, users
    assert counts == expected_server_counts(reported, users, sessions=100)


def test_grpcurl_runs_the_language_as_json(
    grpcurl: str, master: Any, workers: Any, lang_server: LangServer
) -> None:
    """What a client in any language does: the canonical proto3 JSON (lowerCamelCase), sent
    through server reflection, no stubs and no .proto file."""
    from google.protobuf import json_format

    from chaperon.v1 import results_pb2

    load_test = stateful_load_test(lang_server.base_url, concurrency=10, iterations=1)
    request = {"loadTest": json_format.MessageToDict(to_proto(load_test))}

    done = subprocess.run(
        [
            grpcurl,
            "-plaintext",
            "-max-time",
            str(GRPCURL_TIMEOUT_S),
            "-d",
            json.dumps(request),
            master.address,
            "chaperon.v1.Master/RunLoadTest",
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=GRPCURL_TIMEOUT_S + 15,
    )

    assert done.returncode == 0, describe(done)
    run = json_format.Parse(done.stdout, results_pb2.LoadTestRun())
    assert_succeeded(run)
    reported = reported_counts(run)
    assert reported == expected_metrics(10, 1), errors_by_key(run)
    assert errors_by_key(run) == {}
    assert_sessions(run, 10)
    counts = server_counts_settled(lang_server, reported)
    users = runs_by_user(counts)
    assert sum(users.values()) == 10, users
    assert counts == expected_server_counts(reported, users, sessions=10)


BUILDER_SCRIPT = """\
from chaperon import LoadTest, Scenario, header, json_path, regex, status_code

BASE_URL = {base_url!r}
BEARER = {{"Authorization": "Bearer {{{{token}}}}"}}

child = (
    Scenario()
    .get("/items/child-{{{{user}}}}")
    .signal_parent("ready")
    .get("/me", headers=BEARER, metric="child me")
)
poll = Scenario().get("/counter").delay("5ms")
flow = (
    Scenario("flow")
    .assign(user="b{{{{session_id}}}}", n=0)
    .post("/login", form={{"user": "{{{{user}}}}", "password": "pw"}})
    .extract(json_path("token", "$.token"), regex("who", '"user": *"([^"]+)"'))
    .extract(status_code("code"))
    .get("/me", headers=BEARER)
    .get("/items/{{{{who}}}}", extract=[header("item", "X-Item")])
    .get("/cookie")
    .get("/slow", query={{"ms": 1}})
    .ws_connect("/ws")
    .ws_send("echo-{{{{item}}}}-{{{{code}}}}")
    .ws_await_recv("echo-{{{{item}}}}-{{{{code}}}}", timeout="5s")
    .ws_close()
    .async_("child", child)
    .await_signal("ready", timeout="5s")
    .await_("child", timeout="5s")
    .cc_spread(2, "20ms", Scenario().get("/items/spread"))
    .loop("30ms", poll)
    .update_assign("n", add=3)
    .add_metric("n", var="n")
)
load_test = (
    LoadTest("builder", base_url=BASE_URL, config={{"cookies": True}})
    .add(flow, concurrency=5, iterations=2)
)
"""


def test_builder_script_runs_a_stateful_scenario(lang_server: LangServer, tmp_path: Path) -> None:
    script = tmp_path / "stateful_script.py"
    script.write_text(BUILDER_SCRIPT.format(base_url=lang_server.base_url))

    run = chaperon_run(script)

    assert_succeeded(run)
    runs = 10
    reported = reported_counts(run)
    polls = reported.get("GET /counter", 0)  # the loop runs for 30 ms: at least once a run
    assert polls >= runs, reported
    assert reported == {
        "POST /login": runs,
        "GET /me": runs,
        "GET /items/{who}": runs,
        "GET /cookie": runs,
        "GET /slow": runs,
        "WS connect /ws": runs,
        "WS send default": runs,
        "WS await_recv default": runs,
        "WS close default": runs,
        "GET /items/child-{user}": runs,
        "child me": runs,
        "await_signal ready": runs,
        "await child": runs,
        "GET /items/spread": 2 * runs,
        "GET /counter": polls,
        "n": runs,
    }
    assert errors_by_key(run) == {}
    assert (run.result.sessions_completed, run.result.sessions_failed) == (5, 0)
    n = metric(run, "n")
    assert (n.min_us, n.max_us) == (3, 3)
    counts = lang_server.wait_for(
        lambda c: c["ws_close"] == runs and sum(c["by_route"].values()) == c["requests"]
    )
    users = list(counts["me_by_user"])
    assert len(users) == 5 and all(u.startswith("b") for u in users), users
    items_by_id: dict[str, int] = {"spread": 2 * runs}
    for user in users:
        items_by_id.update({user: 2, f"child-{user}": 2})
    items = 4 * runs
    assert counts == {
        "requests": runs * 6 + items + polls,
        "login": runs,  # a form body this time
        "login_bad": 0,
        "me_ok": 2 * runs,
        "me_unauthorized": 0,
        "items": items,
        "cookie_ok": runs,
        "cookie_missing": 0,
        "echo": 0,
        "echo_bytes": 0,
        "status_bad": 0,
        "slow": runs,
        "slow_done": runs,
        "chunked": 0,
        "counter": polls,
        "ws_connect": runs,
        "ws_text": runs,
        "ws_binary": 0,
        "ws_bytes": sum(2 * len(f"echo-{user}-200") for user in users),
        "ws_sent": runs,
        "ws_close": runs,
        "ws_drop": 0,
        "ws_pong": 0,
        "by_route": {
            "POST /login 200": runs,
            "GET /me 200": 2 * runs,
            "GET /items/{id} 200": items,
            "GET /cookie 200": runs,
            "GET /slow 200": runs,
            "GET /counter 200": polls,
            "GET /ws 101": runs,
        },
        "me_by_user": {user: 4 for user in users},
        "items_by_id": items_by_id,
        "status_by_code": {},
        "ws_by_path": {"/ws": runs},
        "ws_close_codes": {"1000": runs},
    }


# Processes with different hash seeds: protobuf (upb) iterates a map's fields in an order
# that changes from one process to another, as it does between workers.
HASH_SEEDS = ("1", "2", "3")


def test_a_json_payload_is_the_same_text_in_every_process(
    lang_server: LangServer, tmp_path: Path
) -> None:
    """A JSON object in a step travels as a protobuf Struct, a map with no order. Whatever
    order the compiler writes the keys in, every process (every worker) must write the same
    text for the same step, or a ws_await_recv of it passes on one worker and times out on
    another. The server sees the text: /echo sends it back and a regex takes its first key;
    with eight keys, processes that write them in map order rarely agree on the first."""
    payload = {key: 1 for key in "abcdefgh"}
    first_key = '^\\{"([a-z]+)"'
    run_steps = [
        http(
            "POST",
            "/echo",
            json=payload,
            extract=[{"var": "first", "regex": first_key}, {"var": "a", "regex": '"a":([^,}]+)'}],
        ),
        http("GET", "/items/http-{{first}}-{{a}}"),
        {"ws_connect": {"path": "/ws"}},
        {"ws_send": {"json": payload}},
        {"ws_recv": {"assign": "echoed", "timeout": "5s"}},
        {"ws_close": {}},
        http("POST", "/echo", body="{{echoed}}", extract=[{"var": "ws_first", "regex": first_key}]),
        http("GET", "/items/ws-{{ws_first}}"),
    ]
    load_test = {
        "name": "json-text",
        "config": {"base_url": lang_server.base_url},
        "scenarios": [{"concurrency": 1, "iterations": 1, "scenario": {"run": run_steps}}],
    }
    path = write_load_test(tmp_path / "json_text.json", load_test)

    for seed in HASH_SEEDS:
        run = chaperon_run(path, env={"PYTHONHASHSEED": seed})
        assert_succeeded(run)
        assert errors_by_key(run) == {}

    by_id = lang_server.counts()["items_by_id"]
    # Every run wrote the same first key, over HTTP and WebSocket alike; integral numbers
    # are written without ".0".
    runs = len(HASH_SEEDS)
    assert len(by_id) == 2 and set(by_id.values()) == {runs}, by_id
    [http_id] = [k for k in by_id if k.startswith("http-")]
    first, value = http_id.removeprefix("http-").split("-")
    assert value == "1" and f"ws-{first}" in by_id, by_id
