"""The engine's TLS client layer (``_fastpath/tls.pxd``) against real servers on loopback.

``_fastpath.tls.https_request`` drives the C functions exactly as the engine does (non-blocking
socket, level-triggered readiness, retry what asked for read/write, drain rule of
``tls_read``). The servers: a Python ``ssl`` server in a thread (whose behaviour each test
picks: answer, close during the handshake, answer in plain HTTP) and nginx (skipped when it is
not installed). Certificates come from ``support.certs`` (a throw-away CA per module).
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.certs import CertFiles, make_certs
from support.nginx import nginx_binary
from support.ports import LOOPBACK, free_port
from support.procs import ManagedProcess, running, wait_for_tcp

from _fastpath.tls import Response, SessionSlot, TlsContext, TlsError, https_request

REQUEST = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
TIMEOUT_S = 5.0


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return make_certs(tmp_path_factory.mktemp("certs"))


class PyServer:
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
        self.listener = socket.create_server((LOOPBACK, 0))
        self.listener.settimeout(0.05)
        self.port: int = self.listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="tls-test-server", daemon=True)
        self._thread.start()

    def _on_sni(self, _sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        self.sni.append(name)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(TIMEOUT_S)
                try:
                    self._handle(conn)
                except (ssl.SSLError, OSError) as exc:  # the client's failures show up here
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

    def close(self) -> None:
        self._stop.set()
        self._thread.join(TIMEOUT_S)
        self.listener.close()


@pytest.fixture
def server(certs: CertFiles) -> Iterator[PyServer]:
    srv = PyServer(certs)
    try:
        yield srv
    finally:
        srv.close()


def get(ctx: TlsContext, port: int, name: str = "localhost", **kw: object) -> Response:
    return https_request(ctx, LOOPBACK, port, REQUEST, server_name=name, timeout_s=TIMEOUT_S, **kw)


def failure(ctx: TlsContext, port: int, name: str = "localhost", **kw: object) -> TlsError:
    with pytest.raises(TlsError) as info:
        get(ctx, port, name, **kw)
    return info.value


# ------------------------------------------------------------------------------ Python server


def test_verified_get_sends_sni_and_negotiates_http11(server: PyServer, certs: CertFiles) -> None:
    resp = get(TlsContext(cafile=certs.ca_cert), server.port)
    assert resp.data == OK
    assert server.sni == ["localhost"]
    assert resp.alpn == "http/1.1"
    assert resp.version == "TLSv1.3"
    assert not resp.resumed


def test_ip_literal_is_verified_as_ip_and_not_sent_as_sni(
    server: PyServer, certs: CertFiles
) -> None:
    resp = get(TlsContext(cafile=certs.ca_cert), server.port, "127.0.0.1")
    assert resp.data == OK
    assert server.sni == [None]


@pytest.mark.parametrize("method", ["cryptography", "openssl-cli"])
def test_certificates_from_either_generator_verify(method: str, tmp_path: Path) -> None:
    if method == "cryptography":
        pytest.importorskip("cryptography")
    elif shutil.which("openssl") is None:
        pytest.skip("the openssl command line is not installed")
    files = make_certs(tmp_path, prefer=method)
    assert files.method == method
    srv = PyServer(files)
    try:
        assert get(TlsContext(cafile=files.ca_cert), srv.port).data == OK
    finally:
        srv.close()


def test_unknown_ca_fails_verification(server: PyServer) -> None:
    err = failure(TlsContext(), server.port)  # system CAs only
    assert err.kind == "tls"
    assert "certificate verification failed" in err.message
    assert "unable to get local issuer certificate" in err.message


def test_insecure_skips_verification(server: PyServer) -> None:
    resp = get(TlsContext(insecure=True), server.port, "wrong.example")
    assert resp.data == OK
    assert server.sni == ["wrong.example"]


@pytest.mark.parametrize(
    ("name", "reason"),
    [("wrong.example", "hostname mismatch"), ("127.0.0.2", "IP address mismatch")],
)
def test_wrong_name_fails_verification(
    server: PyServer, certs: CertFiles, name: str, reason: str
) -> None:
    err = failure(TlsContext(cafile=certs.ca_cert), server.port, name)
    assert err.kind == "tls"
    assert reason in err.message


def test_unreadable_ca_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TlsError, match="cannot load the CA file") as info:
        TlsContext(cafile=tmp_path / "missing.pem")
    assert info.value.kind == "tls"


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2])
def test_second_connection_resumes_the_session(certs: CertFiles, version: ssl.TLSVersion) -> None:
    srv = PyServer(certs, max_version=version)
    try:
        ctx = TlsContext(cafile=certs.ca_cert)
        slot = SessionSlot()
        first = get(ctx, srv.port, slot=slot, tag=7)
        assert not first.resumed
        assert slot.has_session and slot.tag == 7
        second = get(ctx, srv.port, slot=slot, tag=7)
        assert second.resumed and second.data == OK
        assert second.version == ("TLSv1.3" if version == ssl.TLSVersion.TLSv1_3 else "TLSv1.2")
        # A session is only offered to the target it came from (the tag).
        assert not get(ctx, srv.port, slot=slot, tag=8).resumed
        assert slot.tag == 8
        slot.clear()
        assert not slot.has_session
    finally:
        srv.close()


def test_large_response_through_a_small_buffer(certs: CertFiles) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB: many records, many buffer-full reads
    srv = PyServer(certs, body=body)
    try:
        resp = get(TlsContext(cafile=certs.ca_cert), srv.port, bufsize=1000)
        assert resp.data.endswith(b"\r\n\r\n" + body)
    finally:
        srv.close()


def test_server_closing_during_handshake_is_an_error(certs: CertFiles) -> None:
    srv = PyServer(certs, mode="handshake_close")
    try:
        err = failure(TlsContext(cafile=certs.ca_cert), srv.port)
        assert err.kind in ("closed", "reset"), err
        # The client goes on working afterwards.
        srv.mode = "tls"
        assert get(TlsContext(cafile=certs.ca_cert), srv.port).data == OK
    finally:
        srv.close()


def test_plain_http_server_is_a_tls_error(certs: CertFiles) -> None:
    srv = PyServer(certs)
    try:
        ctx = TlsContext(cafile=certs.ca_cert)
        slot = SessionSlot()
        get(ctx, srv.port, slot=slot)
        assert slot.has_session
        srv.mode = "plain"
        err = failure(ctx, srv.port, slot=slot)
        assert err.kind == "tls"
        assert "wrong version number" in err.message or "packet length" in err.message, err
        assert not slot.has_session  # a failure after offering a session drops it
    finally:
        srv.close()


# ------------------------------------------------------------------------------ nginx


def _nginx_config(d: Path, port: int, certs: CertFiles) -> str:
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp = "\n".join(
        f"    {n}_temp_path {d}/{n};" for n in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""\
{user}daemon off;
master_process on;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 64; }}
http {{
{temp}
    access_log off;
    server {{
        listen {LOOPBACK}:{port} ssl;
        server_name localhost;
        ssl_certificate {certs.server_cert};
        ssl_certificate_key {certs.server_key};
        ssl_protocols TLSv1.2 TLSv1.3;
        location = / {{ return 200 "ok\\n"; }}
    }}
}}
"""


@pytest.fixture(scope="module")
def nginx_tls(tmp_path_factory: pytest.TempPathFactory, certs: CertFiles) -> Iterator[int]:
    binary = nginx_binary()
    if binary is None:
        pytest.skip("nginx is not installed (set CHAPERON_TEST_NGINX or install nginx)")
    build = subprocess.run([binary, "-V"], capture_output=True, text=True, check=False)
    if "--with-http_ssl_module" not in build.stderr + build.stdout:
        pytest.skip(f"{binary} was built without the SSL module (--with-http_ssl_module)")
    d = tmp_path_factory.mktemp("nginx-tls")
    port = free_port()
    conf = d / "nginx.conf"
    conf.write_text(_nginx_config(d, port, certs))
    argv = [binary, "-p", f"{d}/", "-c", str(conf), "-e", str(d / "error.log")]
    proc = ManagedProcess("nginx", argv, d, extra_logs=[d / "error.log"])

    def ready(p: ManagedProcess) -> None:
        wait_for_tcp(LOOPBACK, port, 15.0, process=p)
        p.check_running()

    with running(proc, ready):
        yield port


def test_nginx_verified_get_and_resumption(nginx_tls: int, certs: CertFiles) -> None:
    ctx = TlsContext(cafile=certs.ca_cert)
    slot = SessionSlot()
    first = get(ctx, nginx_tls, slot=slot)
    assert first.data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert first.data.endswith(b"\r\n\r\nok\n")
    assert first.alpn == "http/1.1"
    assert not first.resumed
    second = get(ctx, nginx_tls, slot=slot)
    assert second.resumed
    assert second.data.endswith(b"\r\n\r\nok\n")


def test_nginx_rejects_unverified_and_wrong_name(nginx_tls: int, certs: CertFiles) -> None:
    assert failure(TlsContext(), nginx_tls).kind == "tls"
    err = failure(TlsContext(cafile=certs.ca_cert), nginx_tls, "wrong.example")
    assert err.kind == "tls" and "hostname mismatch" in err.message
    assert get(TlsContext(insecure=True), nginx_tls, "wrong.example").data.endswith(b"ok\n")
