"""The engine's TLS client layer (``_fastpath/tls.pxd``) against real servers on loopback.

``_fastpath.tls.https_request`` drives the C functions exactly as the engine does (non-blocking
socket, level-triggered readiness, retry what asked for read/write, drain rule of
``tls_read``). The server: ``support.servers.TlsServer``, a Python ``ssl`` server in a thread
(whose behaviour each test picks: answer, close during the handshake, answer in plain HTTP).
Certificates come from ``support.certs`` (a throw-away CA per module). The same client against
nginx is in ``tests/system/test_tls_nginx.py``.
"""

from __future__ import annotations

import shutil
import ssl
from pathlib import Path

import pytest
from support.certs import CertFiles, make_certs
from support.servers import TlsServer
from support.tls_client import failure, get

from _fastpath.tls import SessionSlot, TlsContext, TlsError

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"


# ------------------------------------------------------------------------------ Python server


def test_verified_get_sends_sni_and_negotiates_http11(
    tls_server: TlsServer, certs: CertFiles
) -> None:
    resp = get(TlsContext(cafile=certs.ca_cert), tls_server.port)
    assert resp.data == OK
    assert tls_server.sni == ["localhost"]
    assert resp.alpn == "http/1.1"
    assert resp.version == "TLSv1.3"
    assert not resp.resumed


def test_ip_literal_is_verified_as_ip_and_not_sent_as_sni(
    tls_server: TlsServer, certs: CertFiles
) -> None:
    resp = get(TlsContext(cafile=certs.ca_cert), tls_server.port, "127.0.0.1")
    assert resp.data == OK
    assert tls_server.sni == [None]


@pytest.mark.parametrize("method", ["cryptography", "openssl-cli"])
def test_certificates_from_either_generator_verify(method: str, tmp_path: Path) -> None:
    if method == "cryptography":
        pytest.importorskip("cryptography")
    elif shutil.which("openssl") is None:
        pytest.skip("the openssl command line is not installed")
    files = make_certs(tmp_path, prefer=method)
    assert files.method == method
    srv = TlsServer(files)
    try:
        assert get(TlsContext(cafile=files.ca_cert), srv.port).data == OK
    finally:
        srv.close()


def test_unknown_ca_fails_verification(tls_server: TlsServer) -> None:
    err = failure(TlsContext(), tls_server.port)  # system CAs only
    assert err.kind == "tls"
    assert "certificate verification failed" in err.message
    assert "unable to get local issuer certificate" in err.message


def test_insecure_skips_verification(tls_server: TlsServer) -> None:
    resp = get(TlsContext(insecure=True), tls_server.port, "wrong.example")
    assert resp.data == OK
    assert tls_server.sni == ["wrong.example"]


@pytest.mark.parametrize(
    ("name", "reason"),
    [("wrong.example", "hostname mismatch"), ("127.0.0.2", "IP address mismatch")],
)
def test_wrong_name_fails_verification(
    tls_server: TlsServer, certs: CertFiles, name: str, reason: str
) -> None:
    err = failure(TlsContext(cafile=certs.ca_cert), tls_server.port, name)
    assert err.kind == "tls"
    assert reason in err.message


def test_unreadable_ca_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TlsError, match="cannot load the CA file") as info:
        TlsContext(cafile=tmp_path / "missing.pem")
    assert info.value.kind == "tls"


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2])
def test_second_connection_resumes_the_session(certs: CertFiles, version: ssl.TLSVersion) -> None:
    srv = TlsServer(certs, max_version=version)
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
    srv = TlsServer(certs, body=body)
    try:
        resp = get(TlsContext(cafile=certs.ca_cert), srv.port, bufsize=1000)
        assert resp.data.endswith(b"\r\n\r\n" + body)
    finally:
        srv.close()


def test_server_closing_during_handshake_is_an_error(certs: CertFiles) -> None:
    srv = TlsServer(certs, mode="handshake_close")
    try:
        err = failure(TlsContext(cafile=certs.ca_cert), srv.port)
        assert err.kind in ("closed", "reset"), err
        # The client goes on working afterwards.
        srv.mode = "tls"
        assert get(TlsContext(cafile=certs.ca_cert), srv.port).data == OK
    finally:
        srv.close()


def test_plain_http_server_is_a_tls_error(certs: CertFiles) -> None:
    srv = TlsServer(certs)
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
