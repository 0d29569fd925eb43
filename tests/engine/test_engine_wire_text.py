"""Non-ASCII on the wire: the bytes a compiled plan sends, seen by a real server on 127.0.0.1.

A load test is compiled by the worker's compiler (``worker_service.plan``) and run by the
engine against ``support.servers.HttpServer``, which keeps each request's head exactly as it
arrived. Paths and queries (literal text, the base URL's path, config values put in them) are
UTF-8, percent-encoded per RFC 3986, in plain and in templated requests alike; header values
are their UTF-8 bytes, unchanged; a tab in a header value stays a tab.
"""

from __future__ import annotations

from typing import Any

from support.servers import HttpServer, http_server

from chaperon.core.loadtest import load_test_from_dict
from chaperon.v1 import worker_pb2
from worker_service.plan import compile_assignment

TIMEOUT_S = 10.0


def _run(server: HttpServer, run: list[dict[str, Any]], config: dict[str, Any]) -> list[bytes]:
    """Compile ``run`` for one session, run it once, return the heads the server received."""
    lt = load_test_from_dict(
        {
            "name": "wire",
            "config": config,
            "scenarios": [{"concurrency": 1, "scenario": {"name": "s", "run": run}}],
        }
    )
    assignment = worker_pb2.Assignment(
        assignment_id="a", load_test=lt, shares=[worker_pb2.EntryShare(entry_index=0, sessions=1)]
    )
    (plan,) = compile_assignment(assignment)
    engine = plan.engine(1)
    try:
        engine.start()
        assert engine.wait(TIMEOUT_S), "the engine did not finish in time"
        stats = engine.stats()
    finally:
        engine.close()
    assert server.requests == len(run), stats
    return server.heads


def test_paths_and_headers_go_out_as_utf8_percent_encoded_where_rfc_3986_says() -> None:
    with http_server() as server:
        base = f"http://127.0.0.1:{server.port}/b\u00e4se"
        heads = _run(
            server,
            [
                {
                    "http": {
                        "method": "GET",
                        "path": "/caf\u00e9 menu/{{who}}?q=cr\u00e8me br\u00fbl\u00e9e"
                        "&x=%41&p=100%",
                        "query": {"name": "\u00e9 \u00fc"},
                        "headers": {"X-Name": "J\u00fcrgen \u20ac", "X-Tab": "a\tb"},
                    }
                },
                {
                    "http": {
                        "method": "GET",
                        "url": f"http://127.0.0.1:{server.port}/\u00fc?\u00fc=1",
                    }
                },
                # A variable in the path: the engine renders it (a template, not bytes).
                {"http": {"method": "GET", "path": "/v/{{session_id}}/\u00e4 {{who}}"}},
            ],
            {"base_url": base, "who": "J\u00fcrgen Z"},
        )
    lines = [head.split(b"\r\n") for head in heads]
    assert lines[0][0] == (
        b"GET /b%C3%A4se/caf%C3%A9%20menu/J%C3%BCrgen%20Z"
        b"?q=cr%C3%A8me%20br%C3%BBl%C3%A9e&x=%41&p=100%25&name=%C3%A9+%C3%BC HTTP/1.1"
    )
    assert "J\u00fcrgen \u20ac".encode() == b"J\xc3\xbcrgen \xe2\x82\xac"
    assert b"X-Name: J\xc3\xbcrgen \xe2\x82\xac" in lines[0]
    assert b"X-Tab: a\tb" in lines[0]
    assert lines[1][0] == b"GET /%C3%BC?%C3%BC=1 HTTP/1.1"
    assert lines[2][0] == b"GET /b%C3%A4se/v/0/%C3%A4%20J%C3%BCrgen%20Z HTTP/1.1"
    for head in heads:
        assert all(byte < 0x80 for byte in head.split(b"\r\n")[0]), head


def test_a_value_the_target_sent_cannot_add_lines_to_a_request_head() -> None:
    """A response puts CR LF in a value that the next request's header (or path) uses: the
    engine refuses to render it into the head (error kind ``extract``) and the server never
    sees a header line, or a request, that the value would have injected. In a body the same
    value is sent as it is."""
    from support.threaded_servers import ok

    evil = b"a\r\nX-Injected: yes\r\n\r\nGET /smuggled HTTP/1.1"

    def handler(method: bytes, path: bytes, body: bytes):  # type: ignore[no-untyped-def]
        return ok(b"token=" + evil + b";")

    with http_server(handler) as server:
        lt = load_test_from_dict(
            {
                "name": "inject",
                "config": {"base_url": f"http://127.0.0.1:{server.port}"},
                "scenarios": [
                    {
                        "concurrency": 1,
                        "scenario": {
                            "name": "s",
                            "run": [
                                {
                                    "http": {
                                        "method": "GET",
                                        "path": "/token",
                                        "extract": [{"var": "tok", "regex": "token=([^;]*);"}],
                                    }
                                },
                                {
                                    "http": {
                                        "method": "POST",
                                        "path": "/body",
                                        "body": "{{tok}}",
                                    }
                                },
                                {
                                    "http": {
                                        "method": "GET",
                                        "path": "/header",
                                        "headers": {"X-Token": "{{tok}}"},
                                    }
                                },
                            ],
                        },
                    }
                ],
            }
        )
        assignment = worker_pb2.Assignment(
            assignment_id="a",
            load_test=lt,
            shares=[worker_pb2.EntryShare(entry_index=0, sessions=1)],
        )
        (plan,) = compile_assignment(assignment)
        engine = plan.engine(1)
        try:
            engine.start()
            assert engine.wait(TIMEOUT_S), "the engine did not finish in time"
            rows = {row[0]: row for row in engine.swap()}
        finally:
            engine.close()
        heads = list(server.heads)
    assert [h.split(b"\r\n")[0] for h in heads] == [
        b"GET /token HTTP/1.1",
        b"POST /body HTTP/1.1",
    ]
    assert not any(b"X-Injected" in h or b"smuggled" in h for h in heads)
    _, _, count, errors, kinds, _ = rows["GET /header"]
    assert (count, errors, kinds) == (0, 1, {"extract": 1})
    assert rows["POST /body"][2:5] == (1, 0, {})  # in a body, the value is data
