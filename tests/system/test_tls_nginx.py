"""The engine's TLS client layer (``_fastpath/tls.pxd``) against nginx on loopback.

``_fastpath.tls.https_request`` drives the C functions as the engine does (see
``tests/engine/test_tls.py`` for the same client against Python servers). One nginx per module
with an HTTPS listener and a certificate from a throw-away CA; skipped when nginx or its SSL
module is missing.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.certs import CertFiles
from support.servers import skip_without_tls_nginx, start_nginx
from support.tls_client import failure, get

from _fastpath.tls import SessionSlot, TlsContext


@pytest.fixture(scope="module")
def nginx_tls(tmp_path_factory: pytest.TempPathFactory, certs: CertFiles) -> Iterator[int]:
    """The HTTPS port of the module's nginx."""
    skip_without_tls_nginx()
    with start_nginx(
        tmp_path_factory.mktemp("nginx-tls"),
        access_log=False,
        tls_cert=certs.server_cert,
        tls_key=certs.server_key,
    ) as server:
        assert server.tls_port is not None
        yield server.tls_port


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
