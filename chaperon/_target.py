"""A small HTTP/1.1 target for the embedded default (``chaperon demo``) and examples.

An asyncio protocol that answers every request with ``200 ok``, with keep-alive, so the demo
needs no server of the user's. ``/status/NNN`` answers with that status and ``/delay/MS``
after that many milliseconds. Listens on loopback only. Run it alone with
``python -m chaperon._target --port 8080``; it prints ``listening on 127.0.0.1:PORT``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

_REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "Bad Request",
    404: "Not Found",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class _Http(asyncio.Protocol):
    def __init__(self) -> None:
        self._buf = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._buf += data
        while True:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > 65536:
                    self._reply(431, b"", close=True)
                return
            head = self._buf[:end].decode("latin-1")
            lines = head.split("\r\n")
            length = 0
            close = False
            for line in lines[1:]:
                name, _, value = line.partition(":")
                lname = name.strip().lower()
                if lname == "content-length":
                    try:
                        length = int(value.strip())
                    except ValueError:
                        self._reply(400, b"bad content-length\n", close=True)
                        return
                elif lname == "connection" and value.strip().lower() == "close":
                    close = True
            if len(self._buf) < end + 4 + length:
                return
            self._buf = self._buf[end + 4 + length :]
            parts = lines[0].split(" ")
            path = parts[1] if len(parts) > 1 else "/"
            self._route(parts[0], path, close)
            if close:
                return

    def _route(self, method: str, path: str, close: bool) -> None:
        if path.startswith("/status/"):
            try:
                code = int(path[len("/status/") :].split("?")[0])
            except ValueError:
                code = 400
            self._reply(code, b"", close)
        elif path.startswith("/delay/"):
            try:
                ms = float(path[len("/delay/") :].split("?")[0])
            except ValueError:
                ms = 0.0
            loop = asyncio.get_running_loop()
            loop.call_later(ms / 1000.0, self._reply, 200, b"ok\n", close)
        else:
            self._reply(200, b"" if method == "HEAD" else b"ok\n", close)

    def _reply(self, code: int, body: bytes, close: bool) -> None:
        t = self._transport
        if t is None or t.is_closing():
            return
        head = (
            f"HTTP/1.1 {code} {_REASONS.get(code, 'Status')}\r\n"
            f"Content-Length: {len(body)}\r\nContent-Type: text/plain\r\n"
            + ("Connection: close\r\n" if close else "")
            + "\r\n"
        )
        t.write(head.encode("ascii") + body)
        if close:
            t.close()


async def _serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Http, host, port, reuse_address=True)
    bound = server.sockets[0].getsockname()[1]
    print(f"listening on {host}:{bound}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="a tiny local HTTP target (loopback only)")
    parser.add_argument("--host", default="127.0.0.1", choices=["127.0.0.1", "::1", "localhost"])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        asyncio.run(_serve(args.host, args.port))
    except OSError as exc:
        print(f"cannot listen: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
