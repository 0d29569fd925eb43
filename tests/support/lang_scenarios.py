"""The stateful load test of the language system tests, and what a run of it must count.

:func:`stateful_load_test` is one load test (the proto3 JSON form, as a dict) that uses most of
the session language against ``support.lang_server``: an ``init`` and a ``teardown`` request,
assign / update_assign / delete_assign, a login whose JSON body holds ``{{session_id}}`` and
whose answer gives three variables (json_path, regex, status), a header extraction, requests
authenticated with ``Bearer {{token}}``, the cookie jar, call_traced around a traced repeat,
retry_on_error, two named WebSocket connections (text, binary and JSON frames, ws_recv with
``assign``, ws_await_recv), two async children (one signals its parent, one waits for the
parent's signal), await, await_all, cc_spread, add_metric (a value and a variable),
run_scenario by name with a config, a random_delay and, optionally, a python step. A second
entry runs the scenario that run_scenario refers to, with its own config.

Every session of the main entry runs :data:`SPREAD` + 10 requests per iteration whose path
names its user (``u<session_id>``), so the server's per-user counts show that each session
kept its own token, cookie and variables. :func:`expected_metrics` is the arithmetic of what
the run must report; :func:`expected_server_counts` is what the server must have counted,
computed from the *reported* metric counts, so comparing both proves reported == received.
"""

from __future__ import annotations

from typing import Any

# cc_spread children per run of the main scenario.
SPREAD = 3
# Sessions of the helper entry (the scenario run_scenario also runs by name).
HELPER_SESSIONS = 2
# The config value the helper echoes: run_scenario's config over the entry's own.
LABEL_FROM_MAIN = "from-main"
LABEL_OWN = "own"
# GET /me requests per run of the main scenario (2 in the traced repeat, the retried one,
# the child's), and the variable `hits` after the repeat.
ME_PER_RUN = 4
HITS = 2
# The python module written beside the load-test file for :func:`python_module_source`.
PYTHON_MODULE = "lang_steps"
# The main entry's session_name: its metric keys read "stateful: <key>".
SESSION_NAME = "stateful"
MAIN = f"{SESSION_NAME}: "

BEARER = {"Authorization": "Bearer {{token}}"}


def http(method: str, path: str, **fields: Any) -> dict[str, Any]:
    """An ``http`` step (``fields``: headers, json, body, extract, metric, ...)."""
    return {"http": {"method": method, "path": path, **fields}}


SPREAD_GET = http("GET", "/items/spread")


def python_module_source() -> str:
    """A module for the python step: it reads a variable and sets another."""
    return (
        "def tag(session):\n"
        "    # The variables are strings; a dict returned updates them.\n"
        '    return {"tag": "py-" + session["user"]}\n'
    )


def main_scenario(python: bool) -> dict[str, Any]:
    run: list[dict[str, Any]] = [
        {"assign": {"values": {"user": "u{{session_id}}", "hits": "0", "scratch": "x"}}},
        http(
            "POST",
            "/login",
            json={"user": "u{{session_id}}", "password": "pw"},
            extract=[
                {"var": "token", "json_path": "$.token"},
                {"var": "who", "regex": '"user": *"([^"]+)"'},
                {"var": "code", "status": True},
                {"var": "maybe", "json_path": "$.absent", "optional": True},
            ],
        ),
        {
            "call_traced": {
                "name": "authed",
                "steps": [
                    {
                        "repeat": {
                            "count": 2,
                            "traced": True,
                            "metric": "me twice",
                            "steps": [
                                http("GET", "/me", headers=BEARER),
                                {"update_assign": {"name": "hits", "add": 1}},
                            ],
                        }
                    }
                ],
            }
        },
        http("GET", "/items/{{who}}", extract=[{"var": "item", "header": "X-Item"}]),
        http("GET", "/items/{{item}}-{{code}}-{{hits}}"),
        http("GET", "/cookie"),
        {"update_assign": {"name": "scratch", "set": "s-{{user}}"}},
        http("GET", "/items/{{scratch}}"),
        {"delete_assign": {"names": ["scratch"]}},
        {
            "retry_on_error": {
                "retries": 2,
                "backoff": "10ms",
                "steps": [http("GET", "/me", headers=BEARER, metric="me retried")],
            }
        },
        {"ws_connect": {"path": "/ws"}},
        {"ws_connect": {"path": "/ws/greet", "conn": "greet"}},
        {"ws_send": {"text": "hello-{{user}}"}},
        {"ws_recv": {"assign": "echoed", "timeout": "5s"}},
        {"ws_send": {"binary": "AAECAw=="}},  # 4 bytes, echoed and dropped by the await
        # One key: the text of a JSON object with more is not pinned down (see test_language).
        {"ws_send": {"json": {"who": "{{user}}"}}},
        {"ws_await_recv": {"expected": '{"who":"{{user}}"}', "timeout": "5s"}},
        {"ws_recv": {"conn": "greet", "assign": "greeting", "timeout": "5s"}},
        {"ws_send": {"conn": "greet", "text": "{{greeting}}-{{echoed}}"}},
        {"ws_await_recv": {"conn": "greet", "expected": "hello-hello-{{user}}", "timeout": "5s"}},
        {"ws_close": {}},
        {"ws_close": {"conn": "greet"}},
        {
            "async": {
                "name": "child",
                "steps": [
                    http("GET", "/items/child-{{user}}"),
                    {"signal_parent": {"value": "ready"}},
                    http("GET", "/me", headers=BEARER, metric="child me"),
                ],
            }
        },
        {"await_signal": {"value": "ready", "timeout": "5s"}},
        {
            "async": {
                "name": "waiter",
                "steps": [
                    {"await_signal": {"value": "go", "timeout": "5s"}},
                    http("GET", "/items/go"),
                ],
            }
        },
        {"signal": {"to": "waiter", "value": "go"}},
        {"await": {"name": "child", "timeout": "5s"}},
        {"await_all": {"timeout": "5s"}},
        {
            "cc_spread": {
                "rate": SPREAD,
                "interval": "30ms",
                "steps": [http("GET", "/items/spread")],
            }
        },
        {"add_metric": {"key": "custom", "value": 42}},
        {"add_metric": {"key": "hits", "var": "hits"}},
        {"run_scenario": {"name": "helper", "config": {"label": LABEL_FROM_MAIN}}},
        {"random_delay": {"min": "1ms", "max": "3ms"}},
    ]
    if python:
        run += [
            {"python": {"function": f"{PYTHON_MODULE}:tag"}},
            http("GET", "/items/{{tag}}"),
        ]
    return {
        "name": "main",
        "init": [http("GET", "/items/init")],
        "run": run,
        "teardown": [http("GET", "/items/teardown")],
    }


def stateful_load_test(
    base_url: str, *, concurrency: int, iterations: int, python: bool = False
) -> dict[str, Any]:
    """The load test (see the module docstring); ``python`` adds the python step, which
    needs :func:`python_module_source` importable as :data:`PYTHON_MODULE`."""
    helper = {"name": "helper", "run": [http("POST", "/echo", body="{{label}}")]}
    return {
        "name": "language",
        "config": {"base_url": base_url, "cookies": True, "request_timeout": "5s"},
        "timeout": "60s",
        "scenarios": [
            {
                "concurrency": concurrency,
                "iterations": iterations,
                "session_name": SESSION_NAME,
                "scenario": main_scenario(python),
            },
            {
                "concurrency": HELPER_SESSIONS,
                "iterations": 1,
                "config": {"label": LABEL_OWN},
                "scenario": helper,
            },
        ],
    }


def expected_metrics(concurrency: int, iterations: int, python: bool = False) -> dict[str, int]:
    """Every metric key the run reports, with its count: the main entry's under
    ``"stateful: "`` (its session_name), the helper entry's request as it is."""
    runs = concurrency * iterations
    counts = {
        "GET /items/init": concurrency,
        "POST /login": runs,
        "authed": runs,
        "me twice": 2 * runs,
        "GET /me": 2 * runs,
        "GET /items/{who}": runs,
        "GET /items/{item}-{code}-{hits}": runs,
        "GET /cookie": runs,
        "GET /items/{scratch}": runs,
        "me retried": runs,
        "WS connect /ws": runs,
        "WS connect /ws/greet": runs,
        "WS send default": 3 * runs,
        "WS recv default": runs,
        "WS await_recv default": runs,
        "WS recv greet": runs,
        "WS send greet": runs,
        "WS await_recv greet": runs,
        "WS close default": runs,
        "WS close greet": runs,
        "GET /items/child-{user}": runs,
        "child me": runs,
        "await_signal ready": runs,
        "await_signal go": runs,
        "GET /items/go": runs,
        "await child": runs,
        "await_all": runs,
        "GET /items/spread": SPREAD * runs,
        "custom": runs,
        "hits": runs,
        "POST /echo": runs,  # the helper scenario, run by name
    }
    if python:
        counts[f"python {PYTHON_MODULE}:tag"] = runs
        counts["GET /items/{tag}"] = runs
    return {**{MAIN + key: n for key, n in counts.items()}, "POST /echo": HELPER_SESSIONS}


def ws_bytes_of_run(user: str) -> int:
    """Payload bytes one run sends over its WebSockets: "hello-<u>", 4 binary bytes,
    '{"who":"<u>"}' and "hello-hello-<u>"."""
    return len(f"hello-{user}") + 4 + len(f'{{"who":"{user}"}}') + len(f"hello-hello-{user}")


def expected_server_counts(
    reported: dict[str, int], runs_by_user: dict[str, int], sessions: int, python: bool = False
) -> dict[str, Any]:
    """What ``lang_server`` must have counted, from the *reported* metric counts.

    ``runs_by_user``: how many runs of the main scenario each user made (each main session
    is one user: session ids are unique across the workers of a closed-model entry);
    ``sessions``: main sessions, whose teardown request is not measured.
    """
    r = {key.removeprefix(MAIN): n for key, n in reported.items() if key.startswith(MAIN)}
    helper_runs = reported["POST /echo"]  # the helper entry's own sessions
    item_keys = [
        "GET /items/init",
        "GET /items/{who}",
        "GET /items/{item}-{code}-{hits}",
        "GET /items/{scratch}",
        "GET /items/child-{user}",
        "GET /items/go",
        "GET /items/spread",
    ] + (["GET /items/{tag}"] if python else [])
    items = sum(r[k] for k in item_keys) + sessions  # + the unmeasured teardown requests
    me = r["GET /me"] + r["me retried"] + r["child me"]
    ws_connect = r["WS connect /ws"] + r["WS connect /ws/greet"]
    ws_close = r["WS close default"] + r["WS close greet"]
    echo = r["POST /echo"] + helper_runs
    items_by_id: dict[str, int] = {
        "init": r["GET /items/init"],
        "teardown": sessions,
        "go": r["GET /items/go"],
        "spread": r["GET /items/spread"],
    }
    for user, n in runs_by_user.items():
        items_by_id.update({user: n, f"{user}-200-{HITS}": n, f"s-{user}": n, f"child-{user}": n})
        if python:
            items_by_id[f"py-{user}"] = n
    return {
        "requests": r["POST /login"] + me + items + r["GET /cookie"] + echo + ws_connect,
        "login": r["POST /login"],
        "login_bad": 0,
        "me_ok": me,
        "me_unauthorized": 0,
        "items": items,
        "cookie_ok": r["GET /cookie"],
        "cookie_missing": 0,
        "echo": echo,
        "echo_bytes": r["POST /echo"] * len(LABEL_FROM_MAIN) + helper_runs * len(LABEL_OWN),
        "status_bad": 0,
        "slow": 0,
        "slow_done": 0,
        "chunked": 0,
        "counter": 0,
        "ws_connect": ws_connect,
        "ws_text": r["WS send default"] - r["WS connect /ws"] + r["WS send greet"],
        "ws_binary": r["WS connect /ws"],  # one binary frame per run on the default conn
        "ws_bytes": sum(n * ws_bytes_of_run(user) for user, n in runs_by_user.items()),
        # echoes of the 3 default sends, the greeting and the echo of the greet send
        "ws_sent": r["WS send default"] + r["WS recv greet"] + r["WS send greet"],
        "ws_close": ws_close,
        "ws_drop": 0,
        "ws_pong": 0,
        "by_route": {
            "POST /login 200": r["POST /login"],
            "GET /me 200": me,
            "GET /items/{id} 200": items,
            "GET /cookie 200": r["GET /cookie"],
            "POST /echo 200": echo,
            "GET /ws 101": r["WS connect /ws"],
            "GET /ws/greet 101": r["WS connect /ws/greet"],
        },
        "me_by_user": {user: ME_PER_RUN * n for user, n in runs_by_user.items()},
        "items_by_id": items_by_id,
        "status_by_code": {},
        "ws_by_path": {"/ws": r["WS connect /ws"], "/ws/greet": r["WS connect /ws/greet"]},
        "ws_close_codes": {"1000": ws_close} if ws_close else {},
    }


def runs_by_user(server_counts: dict[str, Any]) -> dict[str, int]:
    """Runs of the main scenario per user, as the server saw them: each run fetches
    ``/items/<user>`` (the regex-extracted name) exactly once."""
    items = server_counts["items_by_id"]
    return {user: items.get(user, 0) for user in server_counts["me_by_user"]}
