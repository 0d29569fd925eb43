"""Servers on threads in the test process, for the engine tier (import them from
``support.servers``).

Theory of operation: each server binds a listening socket on 127.0.0.1 port 0 in its
constructor, so it is ready before the test goes on, serves from daemon or joined threads, and
stops in ``stop()``/``close()`` (the context managers and fixtures call it in a ``finally``).
:class:`HttpServer` is a keep-alive HTTP/1.1 server on one selector thread whose answer each
test picks (:class:`Reply`: data, close, reset, silence) and which counts requests and
connections and keeps each request's head as it arrived; :class:`LogServer` runs a thread
per connection, logs each request's connection and arrival time, and answers late where
asked; :class:`TlsServer` is a Python ``ssl`` server (answer, close during the handshake,
answer in plain HTTP) recording the SNI it saw; and :class:`HandshakeSpoiler` spoils the TLS
handshake (close, reset, silence). The last two share one accept loop (:class:`_Listener`).
"""

from __future__ import annotations

import selectors
import socket
import ssl
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from .certs import CertFiles
from .ports import LOOPBACK

SILENT = -1.0  # a LogServer delay: never answer
TLS_TIMEOUT_S = 5.0  # TlsServer: a connection's socket timeout


@dataclass
class Reply:
    data: bytes = b""
    close: bool = False  # close after sending
    reset: bool = False  # abort with RST instead of answering
    silent: bool = False  # never answer


def ok(body: bytes = b"ok\n", status: int = 200, extra: bytes = b"") -> Reply:
    return Reply(
        b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n%s\r\n" % (status, len(body), extra) + body
    )


Handler = Callable[[bytes, bytes, bytes], Reply]  # (method, path, body) -> Reply


class HttpServer:
    """Keep-alive HTTP/1.1 server on one selector thread; counts requests and connections."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests = 0
        self.connections = 0
        self.body_sizes: list[int] = []
        self.heads: list[bytes] = []  # each request's head as received (request line, headers)
        self._lock = threading.Lock()
        self._stop = False
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(1024)
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._listener, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._run, name="test-http-server")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            for key, _ in self._sel.select(0.02):
                if key.data is None:
                    self._accept()
                else:
                    self._readable(key.fileobj, key.data)  # type: ignore[arg-type]

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except BlockingIOError:
                return
            conn.setblocking(False)
            with self._lock:
                self.connections += 1
            self._sel.register(conn, selectors.EVENT_READ, bytearray())

    def _drop(self, conn: socket.socket, reset: bool = False) -> None:
        self._sel.unregister(conn)
        if reset:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()

    def _readable(self, conn: socket.socket, buf: bytearray) -> None:
        try:
            data = conn.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        buf += data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).split(b"\r\n")
            method, path, _ = head[0].split(b" ", 2)
            length = 0
            for line in head[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(buf) < end + 4 + length:
                return
            body = bytes(buf[end + 4 : end + 4 + length])
            del buf[: end + 4 + length]
            with self._lock:
                self.requests += 1
                self.body_sizes.append(len(body))
                self.heads.append(b"\r\n".join(head))
            reply = self.handler(method, path, body)
            if reply.silent:
                continue
            if reply.reset:
                if reply.data:  # a partial answer first
                    conn.setblocking(True)
                    conn.sendall(reply.data)
                self._drop(conn, reset=True)
                return
            conn.setblocking(True)
            conn.sendall(reply.data)
            conn.setblocking(False)
            if reply.close:
                self._drop(conn)
                return

    def stop(self) -> None:
        self._stop = True
        self._thread.join(5)
        for key in list(self._sel.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self._sel.close()


@contextmanager
def http_server(handler: Handler = lambda m, p, b: ok()) -> Iterator[HttpServer]:
    srv = HttpServer(handler)
    try:
        yield srv
    finally:
        srv.stop()


@contextmanager
def counting_server() -> Iterator[tuple[HttpServer, Counter]]:
    """An :class:`HttpServer` answering ``ok()`` that counts the requests per path."""
    paths: Counter = Counter()

    def handler(method: bytes, path: bytes, body: bytes) -> Reply:
        paths[path] += 1
        return ok()

    srv = HttpServer(handler)
    try:
        yield srv, paths
    finally:
        srv.stop()


def get(path: bytes = b"/", method: bytes = b"GET", body: bytes = b"") -> bytes:
    """The request the test servers here expect (``Host: test``, a length for a body)."""
    head = b"%s %s HTTP/1.1\r\nHost: test\r\n" % (method, path)
    if body or method == b"POST":
        head += b"Content-Length: %d\r\n" % len(body)
    return head + b"\r\n" + body


class LogServer:
    """Keep-alive HTTP/1.1 server (GET only), one thread per connection.

    ``delays`` maps a path to how long its answer takes (``SILENT``: none comes)."""

    def __init__(self, delays: dict[bytes, float] | None = None) -> None:
        self.delays = delays or {}
        self.log: list[tuple[int, bytes, float]] = []  # (connection id, path, monotonic s)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(256)
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept, name="test-log-server")
        self._acceptor.start()

    def _accept(self) -> None:
        cid = 0
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            cid += 1
            th = threading.Thread(target=self._serve, args=(conn, cid), daemon=True)
            self._threads.append(th)
            th.start()

    def _serve(self, conn: socket.socket, cid: int) -> None:
        conn.settimeout(0.05)
        buf = b""
        with conn:
            while not self._stop.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                buf += data
                while b"\r\n\r\n" in buf:
                    head, _, buf = buf.partition(b"\r\n\r\n")
                    path = head.split(b" ", 2)[1]
                    with self._lock:
                        self.log.append((cid, path, time.monotonic()))
                    delay = self.delays.get(path, 0.0)
                    if delay == SILENT:
                        continue
                    if self._stop.wait(delay):
                        return
                    try:
                        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
                    except OSError:
                        return

    def count(self, path: bytes) -> int:
        with self._lock:
            return sum(1 for _, p, _ in self.log if p == path)

    def times(self, path: bytes) -> list[float]:
        with self._lock:
            return [t for _, p, t in self.log if p == path]

    def by_connection(self) -> dict[int, list[bytes]]:
        out: dict[int, list[bytes]] = {}
        with self._lock:
            for cid, path, _ in self.log:
                out.setdefault(cid, []).append(path)
        return out

    def stop(self) -> None:
        self._stop.set()
        self._listener.close()
        self._acceptor.join(5)
        for th in self._threads:
            th.join(5)


@contextmanager
def log_server(delays: dict[bytes, float] | None = None) -> Iterator[LogServer]:
    srv = LogServer(delays)
    try:
        yield srv
    finally:
        srv.stop()


# ------------------------------------------------------------------ TLS


class _Listener:
    """A loopback listener whose thread accepts one connection at a time and hands it to
    :meth:`_handle` with a socket timeout of ``conn_timeout_s``; :meth:`close` stops it."""

    def __init__(self, name: str, conn_timeout_s: float, backlog: int | None = None) -> None:
        self.conn_timeout_s = conn_timeout_s
        self.listener = socket.create_server((LOOPBACK, 0), backlog=backlog)
        self.listener.settimeout(0.05)
        self.port: int = self.listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(self.conn_timeout_s)
                try:
                    self._handle(conn)
                except (ssl.SSLError, OSError) as exc:  # the client's failures show up here
                    self._failed(exc)

    def _handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def _failed(self, exc: Exception) -> None:
        pass

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5.0)
        self.listener.close()


class TlsServer(_Listener):
    """A loopback server in a thread. ``mode``: "tls" answers ``body`` over TLS, "handshake_close"
    reads the ClientHello and closes, "plain" answers in plain HTTP. Records the SNI it saw."""

    def __init__(
        self,
        certs: CertFiles,
        mode: str = "tls",
        body: bytes = b"ok\n",
        max_version: ssl.TLSVersion | None = None,
    ) -> None:
        self.mode = mode
        self.response = (
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
        )
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(certs.server_cert, certs.server_key)
        self.ctx.set_alpn_protocols(["http/1.1"])
        if max_version is not None:
            self.ctx.maximum_version = max_version
        self.ctx.sni_callback = self._on_sni
        self.sni: list[str | None] = []
        self.errors: list[str] = []
        super().__init__("tls-test-server", TLS_TIMEOUT_S)
        self._thread.start()

    def _on_sni(self, _sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        self.sni.append(name)

    def _failed(self, exc: Exception) -> None:
        self.errors.append(str(exc))

    def _handle(self, conn: socket.socket) -> None:
        if self.mode == "handshake_close":
            conn.recv(65536)  # the ClientHello; then close in the middle of the handshake
            return
        if self.mode == "plain":
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            return
        with self.ctx.wrap_socket(conn, server_side=True) as tls:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = tls.recv(65536)
                if not chunk:
                    return
                data += chunk
            tls.sendall(self.response)


class HandshakeSpoiler(_Listener):
    """Accepts and reads the ClientHello, then closes ("close"), resets ("reset"), or never
    accepts at all ("silent": the kernel completes the TCP handshake, nobody answers)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        super().__init__("tls-spoiler", 2.0, backlog=64)
        if mode != "silent":
            self._thread.start()

    def _handle(self, conn: socket.socket) -> None:
        conn.recv(65536)
        if self.mode == "reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
