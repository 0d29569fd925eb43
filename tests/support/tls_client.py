"""One HTTPS request through the engine's TLS layer, for the tests of ``_fastpath/tls.pxd``.

``_fastpath.tls.https_request`` drives the C functions exactly as the engine does; these
wrappers send one ``GET /`` (``Connection: close``) to a loopback port and return the response,
or the :class:`TlsError` it failed with.
"""

from __future__ import annotations

import pytest

from _fastpath.tls import Response, TlsContext, TlsError, https_request

from .ports import LOOPBACK

REQUEST = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
TIMEOUT_S = 5.0


def get(ctx: TlsContext, port: int, name: str = "localhost", **kw: object) -> Response:
    """``GET /`` over TLS to ``port``, verifying (or sending as SNI) ``name``."""
    return https_request(ctx, LOOPBACK, port, REQUEST, server_name=name, timeout_s=TIMEOUT_S, **kw)


def failure(ctx: TlsContext, port: int, name: str = "localhost", **kw: object) -> TlsError:
    """The :class:`TlsError` that ``get`` raises (the test fails if it does not)."""
    with pytest.raises(TlsError) as info:
        get(ctx, port, name, **kw)
    return info.value
