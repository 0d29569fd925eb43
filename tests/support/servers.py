"""Every server the tests run against, started from one place; and their pytest fixtures.

Theory of operation: a test asks for a server by fixture (registered once, in
``tests/conftest.py``) or enters one of the context managers below; each picks a free loopback
port, is ready before it returns (a listening socket, or a poll of the port with a deadline)
and is stopped in a ``finally``. Two kinds, matching two test tiers (``support.tiers``):

- **In the test process** (the ``engine`` tier), defined in ``support.threaded_servers`` and
  exported here: :class:`HttpServer` (keep-alive HTTP/1.1, each test picks the answer: a
  :class:`Reply`), :class:`LogServer` (logs arrivals, answers late where asked),
  :class:`TlsServer` (Python ``ssl``) and :class:`HandshakeSpoiler` (spoils TLS handshakes).
- **Separate processes** (the ``system`` tier, refused elsewhere by
  :func:`support.tiers.require_system`): nginx (:func:`start_nginx`, the usual config of
  ``support.nginx``; :func:`tls_nginx`, plain and HTTPS listeners for the engine's TLS tests;
  :func:`nginx_in_namespace`, in a network namespace), the session-language target
  (:func:`start_lang_server`, ``support.lang_server``), and two scripted servers:
  :func:`stalling_server` (stalls every answer for one second, for coordinated omission) and
  :func:`https_script_server` (HTTPS with a request counter).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from . import tiers
from .certs import CertFiles, make_certs
from .lang_fixture import LangServer
from .lang_fixture import start_lang_server as _start_lang_server
from .netns import Host, wait_for_tcp_in
from .nginx import (
    TEMP_DIRS,
    NginxServer,
    Tuning,
    has_ssl_module,
    nginx_binary,
    nginx_server,
    render_config,
    run_nginx,
)
from .ports import LOOPBACK, free_port
from .procs import ManagedProcess
from .threaded_servers import (
    SILENT,
    HandshakeSpoiler,
    HttpServer,
    LogServer,
    Reply,
    TlsServer,
    counting_server,
    get,
    http_server,
    log_server,
    ok,
)

__all__ = [
    "SILENT",
    "HandshakeSpoiler",
    "HttpServer",
    "LangServer",
    "LogServer",
    "NginxServer",
    "Ports",
    "Reply",
    "TlsNginx",
    "TlsServer",
    "Tuning",
    "counting_server",
    "free_port",
    "get",
    "http_server",
    "https_script_server",
    "log_server",
    "nginx_in_namespace",
    "nginx_binary",
    "ok",
    "skip_without_tls_nginx",
    "stalling_server",
    "start_lang_server",
    "start_nginx",
    "tls_nginx",
]


def _free_ipv6_port() -> int | None:
    """A free port on ::1, or None when the machine has no IPv6 loopback."""
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
            port: int = s.getsockname()[1]
            return port
    except OSError:
        return None


@dataclass
class Ports:
    plain: int  # HTTP
    tls: int  # HTTPS, TLS 1.2 and 1.3
    tls12: int  # HTTPS, TLS 1.2 only
    tls6: int | None  # HTTPS on [::1], when the machine has IPv6 loopback


class TlsNginx:
    """The module's nginx; ``mark()`` then ``served(mark, n)`` returns the new log lines."""

    def __init__(self, directory: Path, ports: Ports) -> None:
        self.log = directory / "access.log"
        self.ports = ports

    def _lines(self) -> list[list[str]]:
        try:
            return [line.split() for line in self.log.read_text().splitlines()]
        except FileNotFoundError:
            return []

    def mark(self) -> int:
        """The log's length once it has settled (an earlier test's last request may still be
        logged just after that test saw its response)."""
        return len(self.served(0, 0, timeout_s=2.0))

    def served(
        self, mark: int, expected: int, timeout_s: float = 5.0, port: int | None = None
    ) -> list[list[str]]:
        """Lines logged since ``mark`` (for ``port`` only, if given): polled until there are
        ``expected`` and the log has held still for 0.1 s (nginx logs just after it
        answers), or the deadline."""
        deadline = time.monotonic() + timeout_s
        lines = self._lines()[mark:]
        stable_since = time.monotonic()
        while True:
            now = time.monotonic()
            mine = [ln for ln in lines if port is None or ln[0] == str(port)]
            if (len(mine) >= expected and now - stable_since >= 0.1) or now >= deadline:
                return mine
            time.sleep(0.02)
            latest = self._lines()[mark:]
            if len(latest) != len(lines):
                lines, stable_since = latest, time.monotonic()


def _tls_nginx_config(d: Path, ports: Ports, certs: CertFiles) -> str:
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp = "\n".join(
        f"    {n}_temp_path {d}/{n};" for n in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    tls = f"""
        ssl_certificate {certs.server_cert};
        ssl_certificate_key {certs.server_key};
        location = / {{ return 200 "ok\\n"; }}
        location = /big.bin {{ root {d}; }}"""
    v6 = (
        f"""
    server {{
        listen [::1]:{ports.tls6} ssl;
        ssl_protocols TLSv1.2 TLSv1.3;{tls}
    }}"""
        if ports.tls6
        else ""
    )
    return f"""\
{user}daemon off;
master_process on;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
{temp}
    log_format t '$server_port $status $ssl_session_reused $connection $request_uri';
    access_log {d}/access.log t;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    server {{
        listen {LOOPBACK}:{ports.plain};
        location = / {{ return 200 "ok\\n"; }}
    }}
    server {{
        listen {LOOPBACK}:{ports.tls} ssl;
        ssl_protocols TLSv1.2 TLSv1.3;{tls}
    }}
    server {{
        listen {LOOPBACK}:{ports.tls12} ssl;
        ssl_protocols TLSv1.2;{tls}
    }}{v6}
}}
"""


# ------------------------------------------------------------------ separate processes


@contextmanager
def start_nginx(directory: Path, **options: object) -> Iterator[NginxServer]:
    """nginx with ``support.nginx``'s config (``/`` and ``/status/<code>``); ``options`` as
    :func:`support.nginx.nginx_server` takes them (``access_log``, ``tuning``, ``tls_cert``)."""
    tiers.require_system("nginx")
    with nginx_server(directory, **options) as server:  # type: ignore[arg-type]
        yield server


@contextmanager
def tls_nginx(directory: Path, certs: CertFiles, big_size: int) -> Iterator[TlsNginx]:
    """nginx serving plain HTTP and HTTPS on the ports of :class:`Ports` (``/`` and, over
    HTTPS, ``/big.bin`` of ``big_size`` bytes), logging port, status, resumption and
    connection serial per request."""
    tiers.require_system("nginx")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "big.bin").write_bytes(
        bytes(range(256)) * (big_size // 256) + b"x" * (big_size % 256)
    )
    v4: list[int] = []
    for _ in range(100):  # the kernel may hand the same free port out twice
        if len(v4) == 3:
            break
        port = free_port()
        if port not in v4:
            v4.append(port)
    ports = Ports(*v4, _free_ipv6_port())
    listeners = [(LOOPBACK, p) for p in (ports.plain, ports.tls, ports.tls12)]
    if ports.tls6:
        listeners.append(("::1", ports.tls6))
    with run_nginx(directory, _tls_nginx_config(directory, ports, certs), listeners):
        yield TlsNginx(directory, ports)


@contextmanager
def nginx_in_namespace(
    host: Host, directory: Path, client: Host, port: int, tuning: Tuning | None = None
) -> Iterator[NginxServer]:
    """nginx in ``host``'s network namespace on its address and ``port``, ready as seen from
    ``client``'s; its access log also names who asked (``support.netns``)."""
    tiers.require_system("nginx")
    directory.mkdir(parents=True, exist_ok=True)
    for name in TEMP_DIRS:
        (directory / name).mkdir(exist_ok=True)
    conf = render_config(directory, port, tuning=tuning)
    listen = f"listen {LOOPBACK}:{port};"
    log_format = "log_format short '$status $request_method $request_uri';"
    assert listen in conf and log_format in conf, "support.nginx's config changed shape"
    # Listen on the target's own address, and log who asked (after the status, which
    # NginxServer.requests_served(status) reads first).
    conf = conf.replace(listen, f"listen {host.address}:{port};").replace(
        log_format, "log_format short '$status $request_method $request_uri $remote_addr';"
    )

    def ready(proc: ManagedProcess) -> None:
        wait_for_tcp_in(client, host.address, port, processes=[proc])

    with run_nginx(directory, conf, [], wrap=host.argv, ready=ready) as proc:
        yield NginxServer(directory, port, proc)


@contextmanager
def start_lang_server(
    log_dir: Path | None = None, *, tls: CertFiles | None = None
) -> Iterator[LangServer]:
    """The session-language target (``support.lang_server``) as a process; HTTPS and wss
    with ``tls``. See ``support.lang_fixture``."""
    tiers.require_system("the session-language target server")
    with _start_lang_server(log_dir, tls=tls) as server:
        yield server


def _port_from_stdout(argv: list[str], what: str, nice: int = 0) -> Iterator[int]:
    """Run a scripted server that prints its port once listening; yield it; kill the server.

    ``nice`` < 0 asks the kernel to schedule the server ahead of the machine's other work
    (best effort: only where this process may raise priorities, as root in CI).
    """
    tiers.require_system(what)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    if nice:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, proc.pid, nice)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the port, once listening (EOF if the server died)
        assert line.strip().isdigit(), f"the {what} did not start"
        yield int(line)
    finally:
        proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


# The nice value of a target whose own speed must not depend on the machine's load.
PRIORITY_TARGET_NICE = -10

# An asyncio process on 127.0.0.1: answers at once, except that every request it receives
# between 2 s and 3 s after its first request is held until 3 s. It is written against the
# Protocol API, not streams, and releases what it held from one timer in one loop: a
# coroutine per held request cost tens of microseconds each to wake, so answering the 1000
# held requests took long enough to delay the requests that arrived just after the stall.
_STALLING_SERVER = r"""
import asyncio, sys, time

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
first = None
held = []  # transports owed one response each, in arrival order
released = False

def release_all():
    global held, released
    released = True
    owed, held = held, []
    for transport in owed:
        if not transport.is_closing():
            transport.write(RESPONSE)

class Handler(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buffer = b""

    def data_received(self, data):
        global first
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            self.buffer = self.buffer[end + 4:]
            now = time.monotonic()
            if first is None:
                first = now
                asyncio.get_running_loop().call_at(first + 3.0, release_all)
            if first + 2.0 <= now and not released:
                held.append(self.transport)
            else:
                self.transport.write(RESPONSE)

async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Handler, "127.0.0.1", 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()

asyncio.run(main())
"""


@contextmanager
def stalling_server() -> Iterator[int]:
    """The stalling server above, as a process; yields its port.

    The tests measure the engine's view of this server's latency, so the server must answer
    at once outside its stall even when the machine is busy: a one-threaded Python server
    starved of CPU by other work (a loaded CI box) answered the 1000 requests after the stall
    100-250 ms late and made the corrected p80 the machine's figure, not the engine's. It runs
    at a raised priority where that is allowed.
    """
    yield from _port_from_stdout(
        [sys.executable, "-c", _STALLING_SERVER], "stalling server", nice=PRIORITY_TARGET_NICE
    )


# Python's ssl and http.server (keep-alive HTTP/1.1): ``/count`` answers how many requests it
# has served, every other path ``ok``.
_HTTPS_SCRIPT_SERVER = r"""
import http.server, ssl, sys, threading

count = 0
lock = threading.Lock()

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        global count
        with lock:
            count += 1
        body = str(count).encode() if self.path == "/count" else b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

cert, key = sys.argv[1], sys.argv[2]
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


@contextmanager
def https_script_server(cert: Path, key: Path) -> Iterator[int]:
    """The HTTPS server above, as a process with ``cert`` and ``key``; yields its port."""
    argv = [sys.executable, "-c", _HTTPS_SCRIPT_SERVER, str(cert), str(key)]
    yield from _port_from_stdout(argv, "HTTPS server")


# ------------------------------------------------------------------ fixtures (tests/conftest.py)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    """A throw-away CA and a server certificate for localhost, 127.0.0.1 and ::1."""
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[NginxServer]:
    """A fresh nginx for this test (``.port``, ``.base_url``, ``.requests_served()``)."""
    if nginx_binary() is None:
        pytest.skip("nginx is not installed (/usr/sbin/nginx): apt-get install nginx-light")
    with start_nginx(tmp_path / "nginx") as server:
        yield server


def skip_without_tls_nginx() -> None:
    """Skip the test when nginx or its SSL module is missing."""
    if nginx_binary() is None:
        pytest.skip("nginx is not installed (set CHAPERON_TEST_NGINX or install nginx)")
    if not has_ssl_module():
        pytest.skip(f"{nginx_binary()} was built without the SSL module (--with-http_ssl_module)")


@pytest.fixture
def tls_server(certs: CertFiles) -> Iterator[TlsServer]:
    """A :class:`TlsServer` answering ``ok`` over TLS with the module's certificate."""
    srv = TlsServer(certs)
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture
def spoiler(request: pytest.FixtureRequest) -> Iterator[HandshakeSpoiler]:
    """A :class:`HandshakeSpoiler` in the mode given by indirect parametrization."""
    srv = HandshakeSpoiler(request.param)
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture(scope="module")
def lang_server_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LangServer]:
    """One ``lang_server`` process for the module."""
    with start_lang_server(tmp_path_factory.mktemp("lang_server")) as server:
        yield server


@pytest.fixture
def lang_server(lang_server_process: LangServer) -> LangServer:
    """The module's ``lang_server`` with every count zeroed for this test."""
    lang_server_process.reset()
    return lang_server_process
