"""A local HTTP + WebSocket target that counts exactly what it receives.

The target of the session-language system tests and of its benchmark: every endpoint
does one small, predictable thing (log in, check a token or a cookie, echo, answer a status,
push WebSocket messages) and bumps counters, so a test can compare what the generator says
it sent with what this server saw.

Run it as ``python -m tests.support.lang_server --port P [--host 127.0.0.1]``; it prints
``READY <port>`` once it listens (``--port 0`` lets the kernel pick and prints the port it
got) and exits with code 0 on SIGTERM or SIGINT, closing open WebSockets with 1001.
``support.servers.start_lang_server()`` starts it for tests.

Theory of operation: one aiohttp application in one process and one event loop. Counters
live in one plain dict (:class:`Counts`) incremented by handlers between two ``await``\\ s,
so no increment can interleave with another and the counts are exact at any concurrency.
Nothing is logged per request (``access_log=None``). ``GET /__counts`` returns the dict as
JSON and ``POST /__reset`` zeroes it; neither is counted.

What is counted (every key is always present, maps start empty; map keys are strings):

- ``requests``: every HTTP request except ``/__counts`` and ``/__reset``, when it arrives.
- ``by_route``: ``"<METHOD> <route> <status>"`` -> n, e.g. ``"GET /items/{id} 200"``,
  ``"GET /nope unmatched 404"``; recorded when the handler finishes (for a WebSocket, when
  the connection ends, with status 101).
- ``login`` / ``login_bad``: ``POST /login`` with a user (200, token and ``sid`` cookie) /
  without one or with an unreadable body (400).
- ``me_ok`` / ``me_unauthorized``: ``GET /me`` with ``Authorization: Bearer tok-<user>`` /
  without it; ``me_by_user``: user -> n for the accepted ones.
- ``items`` and ``items_by_id`` (id -> n): ``GET /items/{id}``.
- ``cookie_ok`` / ``cookie_missing``: ``GET /cookie`` with / without the ``sid`` cookie.
- ``echo`` and ``echo_bytes`` (total request body bytes): ``POST /echo``.
- ``status_by_code`` (code -> n) and ``status_bad`` (not an integer in 200..599):
  ``GET /status/{code}``.
- ``slow``: ``GET /slow?ms=N``, counted on arrival, before the sleep; ``slow_done`` when
  it answers.
- ``chunked``: ``GET /chunked``.
- ``counter``: ``GET /counter``, whose body is this count after the increment.
- WebSocket, on all of ``/ws``, ``/ws/greet``, ``/ws/silent`` and ``/ws/push``:
  ``ws_connect`` (handshakes accepted) and ``ws_by_path`` (path -> n); ``ws_text`` and
  ``ws_binary`` (messages received) and ``ws_bytes`` (their payload bytes); ``ws_sent``
  (messages this server sent: greetings, pushes, echoes); ``ws_close`` (close frames
  received from the client) and ``ws_close_codes`` (their code -> n); ``ws_drop``
  (connections that ended without a close frame from the client). Pings are answered by
  aiohttp and not counted.
- ``ws_pong``: ``GET /ws/ping`` pings the client right after the handshake and sends
  "pinged" (then echoes text) only once the matching pong came back.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import ssl
import sys
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

LOOPBACK = "127.0.0.1"
# Large enough for echo and WebSocket benchmarks with big bodies.
MAX_BODY_BYTES = 64 * 1024 * 1024
# A burst of 200+ connections must not overflow the accept queue (SYN retries cost 1 s).
LISTEN_BACKLOG = 4096
# On SIGTERM, how long in-flight handlers (a /slow sleep) may take before they are cut.
SHUTDOWN_TIMEOUT_S = 1.0
# How long a close we start waits for the client's close frame.
WS_CLOSE_TIMEOUT_S = 1.0
MAX_SLOW_MS = 60_000
MAX_PUSH = 1_000_000

_SCALARS = (
    "requests",
    "login",
    "login_bad",
    "me_ok",
    "me_unauthorized",
    "items",
    "cookie_ok",
    "cookie_missing",
    "echo",
    "echo_bytes",
    "status_bad",
    "slow",
    "slow_done",
    "chunked",
    "counter",
    "ws_connect",
    "ws_text",
    "ws_binary",
    "ws_bytes",
    "ws_sent",
    "ws_close",
    "ws_drop",
    "ws_pong",
)
_MAPS = (
    "by_route",
    "me_by_user",
    "items_by_id",
    "status_by_code",
    "ws_by_path",
    "ws_close_codes",
)
COUNT_KEYS = _SCALARS + _MAPS


class Counts:
    """The counters: one dict of ints and of ``str -> int`` maps, touched by one loop only."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.reset()

    def reset(self) -> None:
        self.values = {key: 0 for key in _SCALARS}
        self.values.update({key: {} for key in _MAPS})

    def add(self, key: str, n: int = 1) -> int:
        self.values[key] += n
        value: int = self.values[key]
        return value

    def add_to(self, key: str, sub: str | int) -> None:
        table: dict[str, int] = self.values[key]
        name = str(sub)
        table[name] = table.get(name, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        return {
            key: dict(value) if isinstance(value, dict) else value
            for key, value in self.values.items()
        }


COUNTS = web.AppKey("counts", Counts)
WEBSOCKETS = web.AppKey("websockets", weakref.WeakSet[web.WebSocketResponse])

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _counts(request: web.Request) -> Counts:
    return request.app[COUNTS]


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(payload), content_type="application/json")


@web.middleware
async def _count_requests(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Count every request on arrival and its route and status when the handler is done."""
    if request.path.startswith("/__"):
        return await handler(request)
    counts = _counts(request)
    counts.add("requests")
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else f"{request.path} unmatched"
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        counts.add_to("by_route", f"{request.method} {route} {exc.status}")
        raise
    except asyncio.CancelledError:
        raise
    except Exception:
        counts.add_to("by_route", f"{request.method} {route} 500")
        raise
    counts.add_to("by_route", f"{request.method} {route} {response.status}")
    return response


async def _read_login(request: web.Request) -> dict[str, Any] | None:
    """The login fields from a JSON or a form body; None when the body is unreadable."""
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.post()
        return {key: form[key] for key in form if isinstance(form[key], str)}
    body = await request.read()
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


async def login(request: web.Request) -> web.Response:
    fields = await _read_login(request)
    user = None if fields is None else fields.get("user")
    if not isinstance(user, str) or not user:
        _counts(request).add("login_bad")
        return _json({"error": "user is required"}, status=400)
    _counts(request).add("login")
    response = _json({"token": f"tok-{user}", "user": user})
    response.set_cookie("sid", f"sid-{user}", path="/")
    return response


async def me(request: web.Request) -> web.Response:
    counts = _counts(request)
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    user = token[len("tok-") :] if token.startswith("tok-") else ""
    if scheme != "Bearer" or not user:
        counts.add("me_unauthorized")
        return _json({"error": "unauthorized"}, status=401)
    counts.add("me_ok")
    counts.add_to("me_by_user", user)
    return _json({"user": user})


async def item(request: web.Request) -> web.Response:
    item_id = request.match_info["id"]
    counts = _counts(request)
    counts.add("items")
    counts.add_to("items_by_id", item_id)
    response = _json({"id": item_id, "name": f"item-{item_id}"})
    response.headers["X-Item"] = item_id
    return response


async def cookie(request: web.Request) -> web.Response:
    sid = request.cookies.get("sid")
    if sid is None:
        _counts(request).add("cookie_missing")
        return _json({"error": "no sid cookie"}, status=401)
    _counts(request).add("cookie_ok")
    return _json({"sid": sid})


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    counts = _counts(request)
    counts.add("echo")
    counts.add("echo_bytes", len(body))
    content_type = request.headers.get("Content-Type", "application/octet-stream")
    return web.Response(body=body, headers={"Content-Type": content_type})


async def status(request: web.Request) -> web.Response:
    raw = request.match_info["code"]
    code = int(raw) if raw.isdigit() else 0
    counts = _counts(request)
    if not 200 <= code <= 599:
        counts.add("status_bad")
        return _json({"error": f"not a status code: {raw}"}, status=400)
    counts.add_to("status_by_code", code)
    if code in (204, 304):  # no body allowed
        return web.Response(status=code)
    return web.Response(status=code, text=f"{code}\n")


def _int_query(request: web.Request, name: str, default: int, maximum: int) -> int:
    raw = request.query.get(name, "")
    return min(int(raw), maximum) if raw.isdigit() else default


async def slow(request: web.Request) -> web.Response:
    counts = _counts(request)
    counts.add("slow")
    delay_ms = _int_query(request, "ms", 0, MAX_SLOW_MS)
    await asyncio.sleep(delay_ms / 1000)
    counts.add("slow_done")
    return web.Response(text=f"slept {delay_ms} ms\n")


async def chunked(request: web.Request) -> web.StreamResponse:
    _counts(request).add("chunked")
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    # Two chunks split inside the document: a client must join them before parsing.
    await response.write(b'{"token": "chu')
    await response.write(b'nky", "n": [1,2,3]}')
    await response.write_eof()
    return response


async def counter(request: web.Request) -> web.Response:
    return web.Response(text=str(_counts(request).add("counter")))


async def _websocket(request: web.Request, greeting: list[str], echo: bool) -> web.StreamResponse:
    """Accept, send ``greeting``, then count (and echo, if ``echo``) until the end."""
    counts = _counts(request)
    ws = web.WebSocketResponse(
        timeout=WS_CLOSE_TIMEOUT_S, compress=False, max_msg_size=MAX_BODY_BYTES
    )
    await ws.prepare(request)
    counts.add("ws_connect")
    counts.add_to("ws_by_path", request.path)
    request.app[WEBSOCKETS].add(ws)
    close_code: int | None = None
    try:
        for text in greeting:
            await ws.send_str(text)
            counts.add("ws_sent")
        while True:
            msg = await ws.receive()
            if msg.type == WSMsgType.TEXT:
                counts.add("ws_text")
                counts.add("ws_bytes", len(msg.data.encode()))
                if echo:
                    await ws.send_str(msg.data)
                    counts.add("ws_sent")
            elif msg.type == WSMsgType.BINARY:
                counts.add("ws_binary")
                counts.add("ws_bytes", len(msg.data))
                if echo:
                    await ws.send_bytes(msg.data)
                    counts.add("ws_sent")
            elif msg.type == WSMsgType.CLOSE:
                # A close frame from the client; autoclose has already answered it.
                close_code = int(msg.data)
                break
            else:  # CLOSING (our own shutdown), CLOSED or ERROR: no close frame came
                break
    except ConnectionError:
        pass
    finally:
        if close_code is None:
            counts.add("ws_drop")
        else:
            counts.add("ws_close")
            counts.add_to("ws_close_codes", close_code)
    return ws


async def ws_echo(request: web.Request) -> web.StreamResponse:
    return await _websocket(request, [], echo=True)


async def ws_greet(request: web.Request) -> web.StreamResponse:
    return await _websocket(request, ["hello"], echo=True)


async def ws_silent(request: web.Request) -> web.StreamResponse:
    return await _websocket(request, [], echo=False)


async def ws_ping(request: web.Request) -> web.StreamResponse:
    """Ping the client first; only once its pong (with the same payload) is back, send
    "pinged" and echo like ``/ws``: a client that does not answer pings never gets it."""
    counts = _counts(request)
    ws = web.WebSocketResponse(timeout=WS_CLOSE_TIMEOUT_S, compress=False, autoping=False)
    await ws.prepare(request)
    counts.add("ws_connect")
    counts.add_to("ws_by_path", request.path)
    request.app[WEBSOCKETS].add(ws)
    try:
        await ws.ping(b"are you there")
        msg = await ws.receive()
        if msg.type != WSMsgType.PONG or msg.data != b"are you there":
            counts.add("ws_drop")
            await ws.close()
            return ws
        counts.add("ws_pong")
        await ws.send_str("pinged")
        counts.add("ws_sent")
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                counts.add("ws_text")
                await ws.send_str(msg.data)
                counts.add("ws_sent")
    except ConnectionError:
        pass
    return ws


async def ws_push(request: web.Request) -> web.StreamResponse:
    n = _int_query(request, "n", 0, MAX_PUSH)
    return await _websocket(request, [f"msg-{i}" for i in range(n)], echo=True)


async def get_counts(request: web.Request) -> web.Response:
    return _json(_counts(request).snapshot())


async def reset_counts(request: web.Request) -> web.Response:
    _counts(request).reset()
    return _json({"reset": True})


async def _close_websockets(app: web.Application) -> None:
    open_sockets = app[WEBSOCKETS]
    # All at once: each close waits (up to WS_CLOSE_TIMEOUT_S) for the client's answer.
    await asyncio.gather(
        *(
            ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
            for ws in list(open_sockets)
        ),
        return_exceptions=True,
    )


def create_app() -> web.Application:
    """The application with fresh counts (``app[COUNTS]``)."""
    app = web.Application(middlewares=[_count_requests], client_max_size=MAX_BODY_BYTES)
    app[COUNTS] = Counts()
    app[WEBSOCKETS] = weakref.WeakSet[web.WebSocketResponse]()
    app.on_shutdown.append(_close_websockets)
    app.add_routes(
        [
            web.post("/login", login),
            web.get("/me", me),
            web.get("/items/{id}", item),
            web.get("/cookie", cookie),
            web.post("/echo", echo),
            web.get("/status/{code}", status),
            web.get("/slow", slow),
            web.get("/chunked", chunked),
            web.get("/counter", counter),
            web.get("/ws", ws_echo),
            web.get("/ws/greet", ws_greet),
            web.get("/ws/silent", ws_silent),
            web.get("/ws/push", ws_push),
            web.get("/ws/ping", ws_ping),
            web.get("/__counts", get_counts),
            web.post("/__reset", reset_counts),
        ]
    )
    return app


async def serve(host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> None:
    """Listen on ``host:port`` (HTTPS and wss with ``ssl_context``), print ``READY <port>``,
    serve until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    runner = web.AppRunner(create_app(), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(
            runner,
            host,
            port,
            backlog=LISTEN_BACKLOG,
            shutdown_timeout=SHUTDOWN_TIMEOUT_S,
            reuse_address=True,
            ssl_context=ssl_context,
        )
        await site.start()
        bound_port = runner.addresses[0][1]
        print(f"READY {bound_port}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()
        # The loop restores the default actions when it closes; a second SIGTERM in the
        # last moments of the exit (a test fixture stopping us again) must not kill us.
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
            signal.signal(signum, signal.SIG_IGN)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True, help="0: any free port")
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--tls-cert", help="serve HTTPS/wss with this certificate (PEM)")
    parser.add_argument("--tls-key", help="... and this private key (PEM)")
    args = parser.parse_args(argv)
    context = None
    if args.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert, args.tls_key)
    asyncio.run(serve(args.host, args.port, context))
    return 0


if __name__ == "__main__":
    sys.exit(main())
