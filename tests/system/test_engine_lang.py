"""The engine's stateful session language, op by op, against the real aiohttp target server
(``support.lang_server``, a subprocess that counts what it receives).

Each test builds, with the engine's ``PlanBuilder`` (``support.plans``), the ops the plan
compiler produces (documented in ``Engine``'s docstring) and compares the server's counts
with the engine's metrics. Every run is bounded (iterations or a short duration) and waited
for with a deadline.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from support.certs import make_certs
from support.plans import Step, block, plan_of, step
from support.servers import LangServer, start_lang_server

from _fastpath.engine import (
    EX_HEADER,
    EX_JSON,
    EX_REGEX,
    EX_STATUS,
    VAR_SESSION_ID,
    Engine,
    EngineOptions,
)

S = 1_000_000_000
MS = 1_000_000
Parts = list[Any]


def target(srv: LangServer) -> tuple[str, int]:
    return ("127.0.0.1", srv.port)


def head(method: str, path: Parts, extra: Parts | None = None) -> Parts:
    """Request line + Host header (+ more header parts), as the compiler splits them."""
    return [f"{method} ".encode(), *path, b" HTTP/1.1\r\nHost: 127.0.0.1\r\n", *(extra or [])]


def http(
    metric: int,
    method: str,
    path: Parts,
    *,
    extra: Parts | None = None,
    body: Parts | None = None,
    extract: list | None = None,
    cookies: bool = False,
) -> Step:
    return step(
        "http_template",
        0,
        metric,
        head(method, path, extra),
        body,
        method == "HEAD",
        cookies,
        extract or (),
    )


def engine(targets: list, keys: list[str], ops: list[Step], **options: Any) -> Engine:
    """An Engine running ``ops`` (builder steps) with ``options`` (EngineOptions')."""
    return Engine(targets, keys, plan_of(ops), EngineOptions(**options))


def ws_head(path: bytes) -> Parts:
    return [
        b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
    ]


def run(eng: Engine, timeout_s: float = 20.0) -> tuple[dict[str, tuple], dict[str, int]]:
    """Start, wait (bounded), swap, close -> ({key: (count, errors, kinds, hist)}, stats)."""
    try:
        eng.start()
        assert eng.wait(timeout_s), "engine did not finish in time"
        rows = {
            key: (count, errors, dict(kinds), hist)
            for key, hist, count, errors, kinds, _service in eng.swap()
        }
        return rows, eng.stats()
    finally:
        eng.close()


LOGIN_BODY = [b'{"user":"u', VAR_SESSION_ID, b'","password":"pw"}']
JSON_CT = [b"Content-Type: application/json\r\n"]


def test_login_extract_token_then_authenticated_requests(lang_server: LangServer) -> None:
    keys = ["POST /login", "GET /me"]
    ops = [
        http(
            0,
            "POST",
            [b"/login"],
            extra=JSON_CT,
            body=LOGIN_BODY,
            extract=[(0, EX_JSON, b"$.token", False)],
        ),
        http(1, "GET", [b"/me"], extra=[b"Authorization: Bearer ", 0, b"\r\n"]),
        http(1, "GET", [b"/me"], extra=[b"Authorization: Bearer ", 0, b"\r\n"]),
    ]
    eng = engine(
        [target(lang_server)], keys, ops, sessions=10, threads=2, iterations=3, var_names=["token"]
    )
    rows, stats = run(eng)
    counts = lang_server.counts()
    assert counts["login"] == 30 and counts["me_ok"] == 60 and counts["me_unauthorized"] == 0
    assert sorted(counts["me_by_user"]) == sorted(f"u{i}" for i in range(10))
    assert rows["POST /login"][:2] == (30, 0) and rows["GET /me"][:2] == (60, 0)
    assert stats["sessions_failed"] == 0 and stats["iterations"] == 30


def test_extract_header_regex_status_and_assigns(lang_server: LangServer) -> None:
    # vars: 0 item (header), 1 name (regex), 2 code (status), 3 n (counter), 4 copy
    ops = [
        step("assign", 3, [b"7"]),
        step("update_add", 3, 5),  # n = 12
        http(
            0,
            "GET",
            [b"/items/", 3],
            extract=[
                (0, EX_HEADER, b"x-item", False),
                (1, EX_REGEX, b'"name": *"([^"]+)"', False),
                (2, EX_STATUS, b"", False),
            ],
        ),
        step("assign", 4, [b"c-", 0, b"-", 1, b"-", 2]),
        http(0, "GET", [b"/items/", 4]),
        step("unset", 4),
    ]
    eng = engine(
        [target(lang_server)],
        ["GET /items/{id}"],
        ops,
        sessions=2,
        iterations=1,
        var_names=["item", "name", "code", "n", "copy"],
    )
    rows, stats = run(eng)
    by_id = lang_server.counts()["items_by_id"]
    assert by_id == {"12": 2, "c-12-item-12-200": 2}
    assert rows["GET /items/{id}"][:2] == (4, 0) and stats["sessions_failed"] == 0


def test_chunked_json_body_is_decoded_before_extraction(lang_server: LangServer) -> None:
    ops = [
        http(0, "GET", [b"/chunked"], extract=[(0, EX_JSON, b"$.token", False)]),
        http(0, "GET", [b"/items/", 0]),
    ]
    eng = engine([target(lang_server)], ["k"], ops, sessions=1, iterations=2, var_names=["token"])
    rows, stats = run(eng)
    assert lang_server.counts()["items_by_id"] == {"chunky": 2}
    assert stats["sessions_failed"] == 0


def test_extraction_that_finds_nothing_ends_the_session_not_the_run(
    lang_server: LangServer,
) -> None:
    keys = ["GET /items/{id}", "GET /me"]
    ops = [
        http(0, "GET", [b"/items/1"], extract=[(0, EX_JSON, b"$.missing", False)]),
        http(1, "GET", [b"/me"]),  # never reached
    ]
    good = http(0, "GET", [b"/items/1"], extract=[(1, EX_JSON, b"$.nope", True)])  # optional
    eng = engine(
        [target(lang_server)],
        keys,
        [good, *ops],
        sessions=4,
        iterations=5,
        var_names=["token", "maybe"],
    )
    rows, stats = run(eng)
    counts = lang_server.counts()
    assert counts["items"] == 8 and counts["me_ok"] + counts["me_unauthorized"] == 0
    count, errors, kinds, _ = rows["GET /items/{id}"]
    assert count == 8 and errors == 4 and kinds == {"extract": 4}
    assert stats["sessions_failed"] == 4 and stats["sessions_completed"] == 4


def test_unset_variable_in_a_template_fails_the_step(lang_server: LangServer) -> None:
    ops = [http(0, "GET", [b"/items/", 0])]
    eng = engine([target(lang_server)], ["k"], ops, sessions=3, iterations=2, var_names=["x"])
    rows, stats = run(eng)
    assert lang_server.counts()["items"] == 0
    assert rows["k"][1:3] == (3, {"extract": 3}) and stats["sessions_failed"] == 3


def test_cookie_jar_is_kept_per_session(lang_server: LangServer) -> None:
    ops = [
        http(0, "POST", [b"/login"], extra=JSON_CT, body=LOGIN_BODY, cookies=True),
        http(1, "GET", [b"/cookie"], cookies=True),
    ]
    no_jar = [http(1, "GET", [b"/cookie"])]
    eng = engine([target(lang_server)], ["login", "cookie"], ops, sessions=5, iterations=2)
    rows, _ = run(eng)
    eng = engine([target(lang_server)], ["login", "cookie"], no_jar, sessions=1, iterations=1)
    rows2, _ = run(eng)
    counts = lang_server.counts()
    assert counts["cookie_ok"] == 10 and counts["cookie_missing"] == 1
    assert rows["cookie"][:2] == (10, 0) and rows2["cookie"][:2] == (1, 1)


def test_retry_on_error_reruns_the_body_with_backoff(lang_server: LangServer) -> None:
    ops = [
        block("retry", 2, 10 * MS, body=[http(0, "GET", [b"/status/500"])]),
        http(1, "GET", [b"/items/after"]),
    ]
    eng = engine([target(lang_server)], ["fail", "after"], ops, sessions=2, iterations=1)
    t0 = time.monotonic()
    rows, stats = run(eng)
    elapsed = time.monotonic() - t0
    counts = lang_server.counts()
    assert counts["status_by_code"] == {"500": 6} and counts["items"] == 2
    assert rows["fail"][:3] == (6, 6, {"http_5xx": 6})
    assert elapsed >= 0.03  # backoff 10 ms, then 20 ms
    assert stats["sessions_failed"] == 0


def test_abort_ends_the_session_with_an_error(lang_server: LangServer) -> None:
    ops = [http(0, "GET", [b"/items/a"]), step("abort", 1), http(0, "GET", [b"/items/b"])]
    eng = engine([target(lang_server)], ["get", "abort"], ops, sessions=3, iterations=4)
    rows, stats = run(eng)
    assert lang_server.counts()["items_by_id"] == {"a": 3}
    assert rows["abort"][1:3] == (3, {"abort": 3}) and stats["sessions_failed"] == 3


def test_add_metric_from_a_value_and_a_variable(lang_server: LangServer) -> None:
    ops = [step("assign", 0, [b"250"]), step("add_metric", 0, 100, -1), step("add_metric", 0, 0, 0)]
    eng = engine([target(lang_server)], ["custom"], ops, sessions=1, iterations=2, var_names=["v"])
    rows, _ = run(eng)
    count, errors, _, hist = rows["custom"]
    assert count == 4 and errors == 0
    assert hist.min == 100 and 249 <= hist.max <= 251


def test_python_step_reads_and_sets_variables(lang_server: LangServer) -> None:
    seen: list[dict[str, str]] = []

    def set_item(variables: dict[str, str]) -> dict[str, str]:
        seen.append(dict(variables))
        return {"item": f"py-{variables['session_id']}"}

    def broken(variables: dict[str, str]) -> None:
        raise RuntimeError("boom")

    ops = [
        step("python", 0, set_item),
        http(1, "GET", [b"/items/", 0]),
        step("python", 0, broken),
        http(1, "GET", [b"/items/never"]),
    ]
    eng = engine(
        [target(lang_server)], ["python", "get"], ops, sessions=2, iterations=1, var_names=["item"]
    )
    rows, stats = run(eng)
    assert lang_server.counts()["items_by_id"] == {"py-0": 1, "py-1": 1}
    assert len(seen) == 2 and {v["iteration"] for v in seen} == {"0"}
    assert rows["python"][:3] == (2, 2, {"python": 2}) and stats["sessions_failed"] == 2


# ---------------------------------------------------------------- WebSocket


def test_websocket_echo_send_recv_await_recv_close(lang_server: LangServer) -> None:
    keys = ["WS connect /ws", "WS send", "WS recv", "WS await_recv", "WS close"]
    ops = [
        step("ws_connect", 0, 0, 0, ws_head(b"/ws")),
        step("ws_send", 0, 1, 1, [b"hello-", VAR_SESSION_ID]),
        step("ws_recv", 0, 2, 5 * S, 0),
        step("ws_send", 0, 1, 2, [b"\x00\x01binary"]),
        step("ws_send", 0, 1, 1, [b"echo:", 0]),
        step("ws_await_recv", 0, 3, 5 * S, [b"echo:", 0]),  # drops the binary echo first
        step("ws_close", 0, 4),
    ]
    eng = engine(
        [target(lang_server)],
        keys,
        ops,
        sessions=8,
        threads=2,
        iterations=3,
        var_names=["msg"],
        nconns=1,
    )
    rows, stats = run(eng)
    counts = lang_server.wait_for(lambda c: c["ws_close"] == 24)
    assert counts["ws_connect"] == 24 and counts["ws_text"] == 48 and counts["ws_binary"] == 24
    assert counts["ws_drop"] == 0
    for key, n in zip(keys, (24, 72, 24, 24, 24), strict=True):
        assert rows[key][:2] == (n, 0), key
    assert stats["sessions_failed"] == 0


def test_websocket_greeting_and_pushed_messages_are_queued(lang_server: LangServer) -> None:
    ops = [
        step("ws_connect", 0, 0, 0, ws_head(b"/ws/greet")),
        step("ws_connect", 1, 0, 0, ws_head(b"/ws/push?n=5")),
        step("ws_await_recv", 1, 1, 5 * S, [b"msg-4"]),
        step("ws_recv", 0, 1, 5 * S, 0),
        http(2, "GET", [b"/items/", 0]),
        step("ws_close", 0, 0),
        step("ws_close", 1, 0),
    ]
    eng = engine(
        [target(lang_server)],
        ["connect", "recv", "get"],
        ops,
        sessions=3,
        iterations=1,
        var_names=["greeting"],
        nconns=2,
    )
    rows, stats = run(eng)
    assert lang_server.counts()["items_by_id"] == {"hello": 3}
    assert rows["recv"][:2] == (6, 0) and stats["sessions_failed"] == 0


def test_websocket_await_recv_timeout_is_a_clear_failure(lang_server: LangServer) -> None:
    ops = [
        step("ws_connect", 0, 0, 0, ws_head(b"/ws/silent")),
        step("ws_await_recv", 0, 1, 200 * MS, [b"never"]),
        http(0, "GET", [b"/items/never"]),
    ]
    eng = engine(
        [target(lang_server)], ["connect", "await"], ops, sessions=2, iterations=1, nconns=1
    )
    t0 = time.monotonic()
    rows, stats = run(eng)
    assert 0.19 <= time.monotonic() - t0 < 5
    assert rows["await"][1:3] == (2, {"timeout": 2}) and stats["sessions_failed"] == 2
    assert lang_server.counts()["items"] == 0


def test_websocket_refused_handshake_is_a_protocol_error(lang_server: LangServer) -> None:
    ops = [step("ws_connect", 0, 0, 0, ws_head(b"/items/1"))]  # 200, not 101
    eng = engine([target(lang_server)], ["connect"], ops, sessions=2, iterations=1, nconns=1)
    rows, stats = run(eng)
    assert rows["connect"][1:3] == (2, {"protocol": 2}) and stats["sessions_failed"] == 2


# ---------------------------------------------------------------- children and signals


def test_async_children_signal_the_parent_and_are_awaited(lang_server: LangServer) -> None:
    keys = ["child get", "await_signal", "await", "parent get"]
    ops = [
        block(  # child 0: get, signal parent, get
            "spawn",
            0,
            body=[
                http(0, "GET", [b"/items/child-", VAR_SESSION_ID]),
                step("signal", -1, 0),
                http(0, "GET", [b"/slow?ms=50"]),
            ],
        ),
        step("await_signal", 0, 5 * S, 1),
        http(3, "GET", [b"/items/parent"]),
        step("await_child", 0, 5 * S, 2),
    ]
    eng = engine(
        [target(lang_server)], keys, ops, sessions=5, iterations=2, nchildren=1, nsignals=1
    )
    rows, stats = run(eng)
    counts = lang_server.counts()
    assert counts["items_by_id"] == {**{f"child-{i}": 2 for i in range(5)}, "parent": 10}
    assert counts["slow"] == 10
    assert rows["await_signal"][:2] == (10, 0) and rows["await"][:2] == (10, 0)
    assert stats["sessions_failed"] == 0


def test_signal_to_a_child_and_await_all(lang_server: LangServer) -> None:
    ops = [
        block(
            "spawn",
            0,
            body=[
                step("await_signal", 0, 5 * S, 0),  # child 0 waits for "go"
                http(1, "GET", [b"/items/go"]),
            ],
        ),
        block("spawn", 1, body=[http(1, "GET", [b"/items/other"])]),
        step("signal", 0, 0),
        step("await_all", 5 * S, -1),
    ]
    eng = engine(
        [target(lang_server)],
        ["await_signal", "get"],
        ops,
        sessions=3,
        iterations=1,
        nchildren=2,
        nsignals=1,
    )
    rows, stats = run(eng)
    assert lang_server.counts()["items_by_id"] == {"go": 3, "other": 3}
    assert stats["sessions_failed"] == 0


def test_signal_never_sent_times_out(lang_server: LangServer) -> None:
    ops = [step("await_signal", 0, 150 * MS, 0), http(1, "GET", [b"/items/never"])]
    eng = engine(
        [target(lang_server)], ["await_signal", "get"], ops, sessions=2, iterations=1, nsignals=1
    )
    rows, stats = run(eng)
    assert rows["await_signal"][1:3] == (2, {"timeout": 2}) and stats["sessions_failed"] == 2
    assert lang_server.counts()["items"] == 0


def test_cc_spread_starts_children_spread_over_the_interval(lang_server: LangServer) -> None:
    ops = [
        block("spread", 0, 5, 200 * MS, body=[http(0, "GET", [b"/items/spread"])]),
        http(1, "GET", [b"/items/after"]),
    ]
    eng = engine(
        [target(lang_server)], ["spread", "after"], ops, sessions=2, iterations=2, nchildren=5
    )
    t0 = time.monotonic()
    rows, stats = run(eng)
    assert time.monotonic() - t0 >= 0.3  # two spreads of 4 x 50 ms at least
    assert lang_server.counts()["items_by_id"] == {"spread": 20, "after": 4}
    assert stats["sessions_failed"] == 0


def test_stateful_plan_in_the_open_model(lang_server: LangServer) -> None:
    ops = [
        http(
            0,
            "POST",
            [b"/login"],
            extra=JSON_CT,
            body=LOGIN_BODY,
            extract=[(0, EX_JSON, b"$.token", False)],
        ),
        http(1, "GET", [b"/me"], extra=[b"Authorization: Bearer ", 0, b"\r\n"]),
    ]
    eng = engine(
        [target(lang_server)],
        ["login", "me"],
        ops,
        sessions=20,
        arrival_rate_per_s=100.0,
        duration_ns=S,
        var_names=["token"],
    )
    rows, stats = run(eng)
    counts = lang_server.counts()
    assert counts["login"] == counts["me_ok"] == stats["sessions_started"] >= 90
    assert counts["me_unauthorized"] == 0


@pytest.mark.parametrize(
    ("op", "match"),
    [
        (step("assign", 3, [b"x"]), "variable slot 3 out of range"),
        (block("spawn", 0, body=[step("delay", 0)]), "child 0 out of range"),
        (step("ws_send", 0, 0, 3, [b"x"]), "opcode must be 1"),
        (step("signal", -1, 0), "signal 0 out of range"),
        (step("http_template", 0, 0, None), "head: a template is a list"),
        (
            step("http_template", 0, 0, [b"x"], extract=[(0, 9, b"", False)]),
            "unknown extractor",
        ),
    ],
)
def test_bad_stateful_ops_are_refused(op: Step, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        engine([("127.0.0.1", 1)], ["k"], [op], var_names=["a"], iterations=1)


def test_bad_regex_is_refused() -> None:
    op = step(
        "http_template",
        0,
        0,
        [b"GET / HTTP/1.1\r\n"],
        no_body=True,
        extract=[(0, EX_REGEX, b"(unclosed", False)],
    )
    with pytest.raises(ValueError, match="bad regular expression"):
        engine([("127.0.0.1", 1)], ["k"], [op], var_names=["a"], iterations=1)


def test_wss_echo_over_tls(tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    keys = ["WS connect /ws", "WS send", "WS await_recv", "WS close", "GET"]
    ops = [
        step("ws_connect", 0, 0, 0, ws_head(b"/ws")),
        step("ws_send", 0, 1, 1, [b"tls-", VAR_SESSION_ID]),
        step("ws_await_recv", 0, 2, 5 * S, [b"tls-", VAR_SESSION_ID]),
        step("ws_close", 0, 3),
        http(4, "GET", [b"/items/over-tls"]),
    ]
    with start_lang_server(tmp_path, tls=certs) as srv:
        eng = engine(
            [("127.0.0.1", srv.port, True, "localhost")],
            keys,
            ops,
            sessions=4,
            iterations=3,
            nconns=1,
            tls_ca_file=str(certs.ca_cert),
        )
        rows, stats = run(eng)
        counts = srv.wait_for(lambda c: c["ws_close"] == 12)
    assert counts["ws_connect"] == 12 and counts["ws_text"] == 12 and counts["ws_drop"] == 0
    assert counts["items_by_id"] == {"over-tls": 12}
    assert all(rows[key][:2] == (12, 0) for key in keys)
    assert stats["sessions_failed"] == 0


def test_regex_sees_past_nul_bytes_in_the_body(lang_server: LangServer) -> None:
    ops = [
        http(
            0,
            "POST",
            [b"/echo"],
            body=[b"\x00\x01 id=<", VAR_SESSION_ID, b">"],
            extract=[(0, EX_REGEX, b"id=<([0-9]+)>", False)],
        ),
        http(0, "GET", [b"/items/r", 0]),
    ]
    eng = engine(
        [target(lang_server)], ["k"], ops, sessions=3, threads=2, iterations=2, var_names=["id"]
    )
    _, stats = run(eng)
    assert lang_server.counts()["items_by_id"] == {"r0": 2, "r1": 2, "r2": 2}
    assert stats["sessions_failed"] == 0


def test_plans_without_requests_and_unmeasured_requests_run(lang_server: LangServer) -> None:
    ops = [step("assign", 0, [b"5"]), step("update_add", 0, 2), step("add_metric", 0, 0, 0)]
    rows, stats = run(engine([], ["custom"], ops, sessions=2, iterations=3, var_names=["n"]))
    assert rows["custom"][0] == 6 and rows["custom"][3].max == 7  # assigned 5 + 2, each time
    plain = step("http", 0, -1, b"GET /items/unmeasured HTTP/1.1\r\nHost: x\r\n\r\n")
    rows, stats = run(engine([target(lang_server)], ["k"], [plain], sessions=2, iterations=2))
    assert lang_server.counts()["items_by_id"] == {"unmeasured": 4}
    assert "k" not in rows and stats["requests_sent"] == 0


def test_a_child_outliving_its_parent_still_runs(lang_server: LangServer) -> None:
    ops = [block("spawn", 0, body=[step("assign", 0, [b"x"]), http(0, "GET", [b"/slow?ms=300"])])]
    eng = engine(
        [target(lang_server)], ["slow"], ops, sessions=2, iterations=1, nchildren=1, var_names=["v"]
    )
    rows, _ = run(eng)
    assert rows["slow"][:2] == (2, 0) and lang_server.counts()["slow_done"] == 2


def test_assign_of_an_unset_variable_is_an_error_on_its_metric(lang_server: LangServer) -> None:
    ops = [step("assign", 1, [b"x", 0], 0), step("update_add", 0, 1, 1)]
    eng = engine(
        [], ["assign b", "update_assign a"], ops, sessions=2, iterations=1, var_names=["a", "b"]
    )
    rows, stats = run(eng)
    assert rows["assign b"][:3] == (0, 2, {"extract": 2}) and stats["sessions_failed"] == 2
    ops = [step("assign", 0, [b"not a number"], -1), step("update_add", 0, 1, 0)]
    rows, stats = run(engine([], ["update_assign a"], ops, iterations=1, var_names=["a"]))
    assert rows["update_assign a"][1:3] == (1, {"extract": 1})


def test_session_ids_are_contiguous_from_the_base(lang_server: LangServer) -> None:
    ops = [
        block("spawn", 0, body=[step("assign", 0, [b"x"])]),
        http(0, "GET", [b"/items/s", VAR_SESSION_ID]),
    ]
    eng = engine(
        [target(lang_server)],
        ["k"],
        ops,
        sessions=5,
        threads=2,
        iterations=1,
        nchildren=1,
        var_names=["v"],
        session_id_base=100,
    )
    run(eng)
    assert lang_server.counts()["items_by_id"] == {f"s{i}": 1 for i in range(100, 105)}


def test_the_engine_answers_server_pings(lang_server: LangServer) -> None:
    ops = [
        step("ws_connect", 0, 0, 0, ws_head(b"/ws/ping")),
        step("ws_await_recv", 0, 1, 5 * S, [b"pinged"]),
        step("ws_send", 0, -1, 1, [b"after"]),
        step("ws_await_recv", 0, 1, 5 * S, [b"after"]),
        step("ws_close", 0, -1),
    ]
    eng = engine(
        [target(lang_server)], ["connect", "await"], ops, sessions=3, iterations=2, nconns=1
    )
    rows, stats = run(eng)
    counts = lang_server.counts()
    assert counts["ws_pong"] == 6 and counts["ws_text"] == 6
    assert rows["await"][:2] == (12, 0) and stats["sessions_failed"] == 0
