"""The session-language target server (``support.lang_server``), run as a real process.

One server per module through ``support.servers`` (counts zeroed before each test);
every endpoint is called with aiohttp's client or a plain socket and the counts the server
reports are compared with what was sent, exactly, including at concurrency 200. The process
lifecycle (``READY <port>``, exit 0 on SIGTERM with WebSockets open) has its own server.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from support.ports import LOOPBACK
from support.servers import LangServer, start_lang_server

T = TypeVar("T")
WS_TIMEOUT_S = 5.0


def run_with_session(
    body: Callable[[aiohttp.ClientSession], Awaitable[T]], *, limit: int = 100
) -> T:
    """Run ``body(session)`` in a fresh event loop; the session always closes."""

    async def main() -> T:
        connector = aiohttp.TCPConnector(limit=limit)
        jar = aiohttp.CookieJar(unsafe=True)  # cookies from an IP address host
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(
            connector=connector, cookie_jar=jar, timeout=timeout
        ) as session:
            return await body(session)

    return asyncio.run(main())


def test_login_json_and_form_give_token_and_cookie(lang_server: LangServer) -> None:
    async def body(session: aiohttp.ClientSession) -> list[Any]:
        out: list[Any] = []
        url = lang_server.url("/login")
        async with session.post(url, json={"user": "ann", "password": "pw"}) as r:
            out.append((r.status, await r.json(), r.cookies["sid"].value))
        async with session.post(url, data={"user": "bob", "password": "pw"}) as r:
            out.append((r.status, await r.json(), r.cookies["sid"].value))
        async with session.post(url, json={"password": "pw"}) as r:
            out.append(r.status)
        async with session.post(url, data=b"{not json", headers={"Content-Type": "text/x"}) as r:
            out.append(r.status)
        return out

    ann, bob, missing, garbled = run_with_session(body)
    assert ann == (200, {"token": "tok-ann", "user": "ann"}, "sid-ann")
    assert bob == (200, {"token": "tok-bob", "user": "bob"}, "sid-bob")
    assert missing == garbled == 400
    counts = lang_server.counts()
    assert (counts["login"], counts["login_bad"], counts["requests"]) == (2, 2, 4)
    assert counts["by_route"] == {"POST /login 200": 2, "POST /login 400": 2}


def test_me_checks_the_bearer_token(lang_server: LangServer) -> None:
    async def body(session: aiohttp.ClientSession) -> list[Any]:
        out: list[Any] = []
        for auth in ("Bearer tok-ann", "Bearer tok-ann", "Bearer tok-bob", "Bearer x", None):
            headers = {"Authorization": auth} if auth else {}
            async with session.get(lang_server.url("/me"), headers=headers) as r:
                out.append((r.status, await r.json()))
        return out

    replies = run_with_session(body)
    assert [status for status, _ in replies] == [200, 200, 200, 401, 401]
    assert replies[0][1] == {"user": "ann"} and replies[2][1] == {"user": "bob"}
    counts = lang_server.counts()
    assert (counts["me_ok"], counts["me_unauthorized"]) == (3, 2)
    assert counts["me_by_user"] == {"ann": 2, "bob": 1}


def test_items_and_cookie(lang_server: LangServer) -> None:
    async def body(session: aiohttp.ClientSession) -> list[Any]:
        out: list[Any] = []
        for item_id in ("7", "7", "abc"):
            async with session.get(lang_server.url(f"/items/{item_id}")) as r:
                out.append((r.status, r.headers["X-Item"], await r.json()))
        async with session.get(lang_server.url("/cookie")) as r:
            out.append(r.status)
        async with session.post(lang_server.url("/login"), json={"user": "cy"}):
            pass
        async with session.get(lang_server.url("/cookie")) as r:
            out.append((r.status, await r.json()))
        return out

    seven, _, abc, no_cookie, with_cookie = run_with_session(body)
    assert seven == (200, "7", {"id": "7", "name": "item-7"})
    assert abc == (200, "abc", {"id": "abc", "name": "item-abc"})
    assert no_cookie == 401
    assert with_cookie == (200, {"sid": "sid-cy"})
    counts = lang_server.counts()
    assert counts["items"] == 3 and counts["items_by_id"] == {"7": 2, "abc": 1}
    assert (counts["cookie_ok"], counts["cookie_missing"]) == (1, 1)


def test_echo_returns_body_and_content_type(lang_server: LangServer) -> None:
    payload = os.urandom(100_000)

    async def body(session: aiohttp.ClientSession) -> list[Any]:
        out: list[Any] = []
        for data, content_type in ((payload, "application/x-bin"), (b"hi", "text/plain")):
            headers = {"Content-Type": content_type}
            async with session.post(lang_server.url("/echo"), data=data, headers=headers) as r:
                out.append((await r.read(), r.headers["Content-Type"]))
        return out

    assert run_with_session(body) == [(payload, "application/x-bin"), (b"hi", "text/plain")]
    counts = lang_server.counts()
    assert (counts["echo"], counts["echo_bytes"]) == (2, 100_002)


def test_status_slow_counter(lang_server: LangServer) -> None:
    async def body(session: aiohttp.ClientSession) -> list[Any]:
        out: list[Any] = []
        for code in ("200", "204", "404", "503", "503", "99", "x"):
            async with session.get(lang_server.url(f"/status/{code}")) as r:
                out.append(r.status)
        start_s = time.monotonic()
        async with session.get(lang_server.url("/slow?ms=150")) as r:
            out.append((r.status, time.monotonic() - start_s))
        for _ in range(3):
            async with session.get(lang_server.url("/counter")) as r:
                out.append(await r.text())
        return out

    *statuses, (slow_status, slow_s), c1, c2, c3 = run_with_session(body)
    assert statuses == [200, 204, 404, 503, 503, 400, 400]
    assert slow_status == 200 and slow_s >= 0.15
    assert (c1, c2, c3) == ("1", "2", "3")
    counts = lang_server.counts()
    assert counts["status_by_code"] == {"200": 1, "204": 1, "404": 1, "503": 2}
    assert counts["status_bad"] == 2
    assert (counts["slow"], counts["slow_done"], counts["counter"]) == (1, 1, 3)


def test_slow_is_counted_on_arrival(lang_server: LangServer) -> None:
    async def body(session: aiohttp.ClientSession) -> None:
        with pytest.raises(asyncio.TimeoutError):
            timeout = aiohttp.ClientTimeout(total=0.1)
            async with session.get(lang_server.url("/slow?ms=2000"), timeout=timeout):
                pass

    run_with_session(body)
    counts = lang_server.counts()
    assert (counts["slow"], counts["slow_done"]) == (1, 0)


def _http_exchange(port: int, request: bytes) -> bytes:
    """Send ``request`` on a fresh connection and read until the server closes it."""
    with socket.create_connection((LOOPBACK, port), timeout=5) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_chunked_is_chunked_on_the_wire(lang_server: LangServer) -> None:
    raw = _http_exchange(
        lang_server.port, b"GET /chunked HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    head, _, wire_body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding: chunked" in head.lower()
    assert b"content-length" not in head.lower()
    decoded, rest, chunks = b"", wire_body, 0
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        decoded, rest, chunks = decoded + rest[:size], rest[size + 2 :], chunks + 1
    assert decoded == b'{"token": "chunky", "n": [1,2,3]}'
    assert chunks >= 2
    assert lang_server.counts()["chunked"] == 1


def test_unmatched_and_internal_endpoints(lang_server: LangServer) -> None:
    raw = _http_exchange(
        lang_server.port, b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert raw.startswith(b"HTTP/1.1 404")
    lang_server.counts()
    counts = lang_server.counts()  # reading the counts is not counted
    assert counts["requests"] == 1
    assert counts["by_route"] == {"GET /nowhere unmatched 404": 1}
    lang_server.reset()
    counts = lang_server.counts()
    assert counts["requests"] == 0 and counts["by_route"] == {}


def test_ws_echo_greet_push_silent(lang_server: LangServer) -> None:
    async def body(session: aiohttp.ClientSession) -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with session.ws_connect(lang_server.ws_url + "/ws") as ws:
            await ws.send_str("héllo")
            await ws.send_bytes(b"\x00\x01\x02")
            out["echo"] = [
                (await ws.receive(timeout=WS_TIMEOUT_S)).data,
                (await ws.receive(timeout=WS_TIMEOUT_S)).data,
            ]
            await ws.close(code=4000)
        async with session.ws_connect(lang_server.ws_url + "/ws/greet") as ws:
            first = await ws.receive_str(timeout=WS_TIMEOUT_S)
            await ws.send_str("again")
            out["greet"] = [first, await ws.receive_str(timeout=WS_TIMEOUT_S)]
        async with session.ws_connect(lang_server.ws_url + "/ws/push?n=3") as ws:
            pushed = [await ws.receive_str(timeout=WS_TIMEOUT_S) for _ in range(3)]
            await ws.send_str("x")
            out["push"] = [*pushed, await ws.receive_str(timeout=WS_TIMEOUT_S)]
        async with session.ws_connect(lang_server.ws_url + "/ws/silent", autoping=False) as ws:
            await ws.send_str("anyone?")
            await ws.ping(b"p")
            pong = await ws.receive(timeout=WS_TIMEOUT_S)
            out["pong"] = (pong.type, pong.data)
            with pytest.raises(asyncio.TimeoutError):
                await ws.receive(timeout=0.2)
        return out

    out = run_with_session(body)
    assert out["echo"] == ["héllo", b"\x00\x01\x02"]
    assert out["greet"] == ["hello", "again"]
    assert out["push"] == ["msg-0", "msg-1", "msg-2", "x"]
    assert out["pong"] == (aiohttp.WSMsgType.PONG, b"p")
    counts = lang_server.wait_for(lambda c: c["ws_close"] == 4)
    assert counts["ws_connect"] == 4
    assert counts["ws_by_path"] == {"/ws": 1, "/ws/greet": 1, "/ws/push": 1, "/ws/silent": 1}
    assert (counts["ws_text"], counts["ws_binary"]) == (4, 1)
    assert counts["ws_bytes"] == len("héllo".encode()) + 3 + len("again") + 1 + len("anyone?")
    assert counts["ws_sent"] == 2 + 2 + 4
    assert counts["ws_close_codes"] == {"4000": 1, "1000": 3}
    assert counts["ws_drop"] == 0
    assert counts["by_route"] == {
        "GET /ws 101": 1,
        "GET /ws/greet 101": 1,
        "GET /ws/push 101": 1,
        "GET /ws/silent 101": 1,
    }


def test_ws_dropped_without_close_frame(lang_server: LangServer) -> None:
    key = base64.b64encode(os.urandom(16))
    with socket.create_connection((LOOPBACK, lang_server.port), timeout=5) as sock:
        sock.sendall(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 101")
    counts = lang_server.wait_for(lambda c: c["ws_drop"] == 1)
    assert (counts["ws_connect"], counts["ws_close"]) == (1, 0)


def test_exact_counts_at_concurrency_200(lang_server: LangServer) -> None:
    clients, rounds = 200, 5

    async def one_client(session: aiohttp.ClientSession, i: int) -> list[int]:
        statuses = []
        user = f"u{i % 10}"
        async with session.post(lang_server.url("/login"), json={"user": user}) as r:
            token = (await r.json())["token"]
            statuses.append(r.status)
        for _ in range(rounds):
            headers = {"Authorization": f"Bearer {token}"}
            async with session.get(lang_server.url("/me"), headers=headers) as r:
                statuses.append(r.status)
            async with session.get(lang_server.url(f"/items/{i % 4}")) as r:
                statuses.append(r.status)
            async with session.get(lang_server.url("/counter")) as r:
                statuses.append(r.status)
        async with session.ws_connect(lang_server.ws_url + "/ws") as ws:
            for n in range(rounds):
                await ws.send_str(f"{i}-{n}")
                assert await ws.receive_str(timeout=WS_TIMEOUT_S) == f"{i}-{n}"
        return statuses

    async def body(session: aiohttp.ClientSession) -> list[list[int]]:
        return await asyncio.gather(*(one_client(session, i) for i in range(clients)))

    results = run_with_session(body, limit=0)  # no connection limit: 200 at once
    assert all(status == 200 for statuses in results for status in statuses)
    counts = lang_server.wait_for(lambda c: c["ws_close"] == clients)
    assert counts["login"] == clients
    assert counts["me_ok"] == counts["items"] == counts["counter"] == clients * rounds
    assert counts["me_by_user"] == {f"u{k}": clients // 10 * rounds for k in range(10)}
    assert counts["items_by_id"] == {str(k): clients // 4 * rounds for k in range(4)}
    assert counts["ws_connect"] == clients and counts["ws_drop"] == 0
    assert counts["ws_text"] == counts["ws_sent"] == clients * rounds
    assert counts["requests"] == clients * (1 + 3 * rounds + 1)
    assert counts["by_route"]["GET /ws 101"] == clients


def test_ready_line_and_clean_exit_on_sigterm(tmp_path: Path) -> None:
    async def open_ws(url: str) -> None:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(url) as ws:
                await ws.send_str("hi")
                assert await ws.receive_str(timeout=WS_TIMEOUT_S) == "hi"
                server.process.signal(signal.SIGTERM)  # with this WebSocket open
                msg = await ws.receive(timeout=WS_TIMEOUT_S)
                assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1001

    with start_lang_server(tmp_path) as server:
        assert f"READY {server.port}" in server.process.stdout_path.read_text().splitlines()
        asyncio.run(open_ws(server.ws_url + "/ws"))
        assert server.process.wait(timeout_s=10) == 0
    assert "Traceback" not in server.process.stderr_path.read_text()
