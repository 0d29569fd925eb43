# cython: language_level=3
"""Non-blocking TLS client layer: the C functions declared in ``tls.pxd``, and a test driver.

The theory of operation, the return codes and who frees what are in ``tls.pxd`` (the engine
reads that file). This module holds the implementation (``cdef ... noexcept nogil``, exported
to the engine through Cython's C-API table, so only this extension links libssl/libcrypto)
and, below it, a small Python-visible wrapper for the tests: ``TlsContext`` (an ``SSL_CTX``),
``SessionSlot`` (a ``tls_resume``) and ``https_request``, which drives the C functions on a
non-blocking socket with ``poll`` exactly as the engine drives them with epoll
(level-triggered, retry the operation that asked for read or write, drain rule of
``tls_read``). The wrapper is not used by the engine.
"""

import errno as _errno
import select
import socket as _pysocket
import time

from libc.errno cimport errno, ETIMEDOUT
from libc.limits cimport INT_MAX
from libc.stdint cimport int32_t
from libc.stdio cimport snprintf
from libc.string cimport strerror

from _fastpath.includes.openssl cimport (
    SSL, SSL_CTX, SSL_SESSION, TLS_client_method, SSL_CTX_new, SSL_CTX_free,
    SSL_CTX_set_options, SSL_CTX_set_mode, SSL_CTX_set_read_ahead, SSL_CTX_set_session_cache_mode,
    SSL_CTX_sess_set_new_cb, SSL_CTX_set_verify, SSL_CTX_load_verify_locations,
    SSL_CTX_set_default_verify_paths, SSL_CTX_set_alpn_protos, SSL_new, SSL_free, SSL_set_fd,
    SSL_set_connect_state, SSL_set_tlsext_host_name, SSL_set1_host, SSL_set_hostflags,
    SSL_get0_param, SSL_set_app_data, SSL_get_app_data, SSL_set_session, SSL_session_reused,
    SSL_do_handshake, SSL_read, SSL_write, SSL_has_pending, SSL_get_error, SSL_set_shutdown,
    SSL_get_verify_result, SSL_get0_alpn_selected, SSL_get_version, SSL_SESSION_free,
    SSL_SESSION_is_resumable, ERR_get_error, ERR_clear_error, ERR_error_string_n,
    X509_verify_cert_error_string, X509_VERIFY_PARAM_set1_ip_asc,
    SSL_VERIFY_NONE, SSL_VERIFY_PEER, SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE,
    SSL_ERROR_SYSCALL, SSL_ERROR_ZERO_RETURN, SSL_SESS_CACHE_CLIENT,
    SSL_SESS_CACHE_NO_INTERNAL_STORE, SSL_SENT_SHUTDOWN, SSL_RECEIVED_SHUTDOWN,
    SSL_OP_NO_RENEGOTIATION, SSL_OP_IGNORE_UNEXPECTED_EOF, SSL_MODE_ENABLE_PARTIAL_WRITE,
    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER, X509_V_OK, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS,
)
from _fastpath.tls cimport (
    tls_conn, tls_resume, TLS_OK, TLS_WANT_READ, TLS_WANT_WRITE, TLS_CLOSED, TLS_RESET,
    TLS_FAILED, TLS_ERRTEXT_SIZE, TLSF_USABLE, TLSF_FAILED, TLSF_OFFERED, tls_drained,
)


# ALPN wire format: length-prefixed protocol names.
cdef const unsigned char* ALPN_HTTP11 = b"\x08http/1.1"
cdef unsigned int ALPN_HTTP11_LEN = 9

# ------------------------------------------------------------------------------ context

cdef void _ctx_error(const char* what, char* errbuf, size_t errlen) noexcept nogil:
    cdef char detail[TLS_ERRTEXT_SIZE]
    cdef unsigned long e = ERR_get_error()
    detail[0] = 0
    if e != 0:
        ERR_error_string_n(e, detail, sizeof(detail))
    ERR_clear_error()
    if errbuf != NULL and errlen > 0:
        snprintf(errbuf, errlen, b"%s%s%s", what, b": " if e != 0 else b"", detail)


cdef int _on_new_session(SSL* ssl, SSL_SESSION* session) noexcept nogil:
    """OpenSSL hands us a new resumable session (with one reference for us if we return 1)."""
    cdef tls_conn* c = <tls_conn*>SSL_get_app_data(ssl)
    if c == NULL or c.resume == NULL or c.resume.session == session:
        return 0            # not kept: OpenSSL drops the reference it took for us
    tls_resume_store(c.resume, session, c.tag)
    return 1


cdef SSL_CTX* tls_ctx_new(const char* ca_file, bint insecure, char* errbuf,
                          size_t errlen) noexcept nogil:
    """A client context, or NULL with the reason in ``errbuf``. Free with ``tls_ctx_free``."""
    cdef SSL_CTX* ctx
    ERR_clear_error()
    ctx = SSL_CTX_new(TLS_client_method())
    if ctx == NULL:
        _ctx_error(b"SSL_CTX_new failed", errbuf, errlen)
        return NULL
    # No renegotiation: then a write never needs a read in TLS 1.2. EOF without close_notify
    # is a clean close (HTTP frames its own messages; read-until-close bodies need it).
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF)
    # SSL_MODE_AUTO_RETRY stays on (the default): without it SSL_read could return WANT_READ
    # after a session ticket while application data sits in OpenSSL's buffer, which
    # level-triggered epoll would never report.
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER)
    SSL_CTX_set_read_ahead(ctx, 1)      # one recv per buffer, not two per record
    if insecure:
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL)
    else:
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL)
        if ca_file != NULL and ca_file[0] != 0:
            if SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1:
                _ctx_error(b"cannot load the CA file", errbuf, errlen)
                SSL_CTX_free(ctx)
                return NULL
        elif SSL_CTX_set_default_verify_paths(ctx) != 1:
            _ctx_error(b"cannot load the system CA certificates", errbuf, errlen)
            SSL_CTX_free(ctx)
            return NULL
    if SSL_CTX_set_alpn_protos(ctx, ALPN_HTTP11, ALPN_HTTP11_LEN) != 0:   # 0 is success here
        _ctx_error(b"cannot set ALPN", errbuf, errlen)
        SSL_CTX_free(ctx)
        return NULL
    # Client-side caching only through our callback: no shared, locked internal store.
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE)
    SSL_CTX_sess_set_new_cb(ctx, _on_new_session)
    if errbuf != NULL and errlen > 0:
        errbuf[0] = 0
    return ctx


cdef void tls_ctx_free(SSL_CTX* ctx) noexcept nogil:
    if ctx != NULL:
        SSL_CTX_free(ctx)

# ------------------------------------------------------------------------------ resumption

cdef void tls_resume_init(tls_resume* r) noexcept nogil:
    r.session = NULL
    r.tag = -1


cdef void tls_resume_store(tls_resume* r, SSL_SESSION* session, int32_t tag) noexcept nogil:
    """Take ``session`` (one reference, may be NULL) into the slot, releasing the old one."""
    if r.session != NULL:
        SSL_SESSION_free(r.session)
    r.session = session
    r.tag = tag if session != NULL else -1


cdef void tls_resume_clear(tls_resume* r) noexcept nogil:
    tls_resume_store(r, NULL, -1)

# ------------------------------------------------------------------------------ connection

cdef void tls_conn_init(tls_conn* c) noexcept nogil:
    c.ssl = NULL
    c.resume = NULL
    c.tag = -1
    c.flags = 0
    c.pending = 0
    c.sys_errno = 0
    c.verify_result = X509_V_OK
    c.err = 0


cdef int tls_conn_start(tls_conn* c, SSL_CTX* ctx, int fd, const char* host,
                        tls_resume* resume, int32_t tag) noexcept nogil:
    """Attach a client ``SSL`` to the connected socket ``fd``: TLS_OK or TLS_FAILED.

    ``host`` (the target's name, no brackets around IPv6) is sent as SNI and verified against
    the certificate; an IP literal is verified as an IP address and not sent as SNI. The
    handshake itself starts with the first ``tls_handshake``.
    """
    cdef SSL* ssl
    tls_conn_close(c)
    tls_conn_init(c)
    c.resume = resume
    c.tag = tag
    ERR_clear_error()
    ssl = SSL_new(ctx)
    if ssl == NULL:
        c.err = ERR_get_error()
        ERR_clear_error()
        c.flags = TLSF_FAILED
        return TLS_FAILED
    c.ssl = ssl
    SSL_set_app_data(ssl, c)
    SSL_set_connect_state(ssl)
    if SSL_set_fd(ssl, fd) != 1:
        return _start_failed(c)
    if host != NULL and host[0] != 0:
        # set1_ip_asc accepts exactly the IP literals: for them no SNI (RFC 6066 forbids it).
        if X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) != 1:
            ERR_clear_error()
            SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS)
            if SSL_set_tlsext_host_name(ssl, host) != 1 or SSL_set1_host(ssl, host) != 1:
                return _start_failed(c)
    if resume != NULL and resume.session != NULL and resume.tag == tag:
        if SSL_SESSION_is_resumable(resume.session) and SSL_set_session(ssl, resume.session) == 1:
            c.flags |= TLSF_OFFERED
        else:
            tls_resume_clear(resume)
    return TLS_OK


cdef int _start_failed(tls_conn* c) noexcept nogil:
    c.err = ERR_get_error()
    ERR_clear_error()
    c.flags = TLSF_FAILED
    tls_conn_close(c)
    return TLS_FAILED


cdef int _fail(tls_conn* c, int ret, int saved_errno) noexcept nogil:
    """Map a non-positive OpenSSL return to a TLS_* code, keeping what the message needs."""
    cdef int e = SSL_get_error(c.ssl, ret)
    if e == SSL_ERROR_WANT_READ:
        return TLS_WANT_READ
    if e == SSL_ERROR_WANT_WRITE:
        return TLS_WANT_WRITE
    if e == SSL_ERROR_ZERO_RETURN:
        return TLS_CLOSED
    c.err = ERR_get_error()
    ERR_clear_error()
    if e == SSL_ERROR_SYSCALL and c.err == 0:
        if saved_errno == 0:
            return TLS_CLOSED           # EOF (1.1.1 reports it this way)
        c.sys_errno = saved_errno
        return TLS_RESET
    c.verify_result = SSL_get_verify_result(c.ssl)
    c.flags = (c.flags & ~TLSF_USABLE) | TLSF_FAILED
    return TLS_FAILED


cdef int tls_handshake(tls_conn* c) noexcept nogil:
    """One step of the handshake: TLS_OK (done), TLS_WANT_READ/WRITE, or a failure."""
    cdef int ret
    if c.ssl == NULL:
        return TLS_FAILED
    ERR_clear_error()
    errno = 0
    ret = SSL_do_handshake(c.ssl)
    if ret == 1:
        c.flags |= TLSF_USABLE
        return TLS_OK
    return _fail(c, ret, errno)


cdef ssize_t tls_read(tls_conn* c, void* buf, size_t n) noexcept nogil:
    """Up to ``n`` decrypted bytes (> 0) or a TLS_* code; see the drain rule in ``tls.pxd``."""
    cdef size_t got = 0
    cdef size_t room
    cdef int ret, rc
    if c.pending != 0:
        rc = c.pending
        c.pending = 0
        return rc
    if c.ssl == NULL:
        return TLS_FAILED
    ERR_clear_error()
    while got < n:
        room = n - got
        errno = 0
        ret = SSL_read(c.ssl, <char*>buf + got, <int>(room if room < <size_t>INT_MAX else INT_MAX))
        if ret > 0:
            got += <size_t>ret
            if not SSL_has_pending(c.ssl):
                break
            continue
        rc = _fail(c, ret, errno)
        if got == 0:
            return rc
        if rc != TLS_WANT_READ:
            c.pending = rc
        break
    return <ssize_t>got


cdef ssize_t tls_write(tls_conn* c, const void* buf, size_t n) noexcept nogil:
    """Write some of ``buf`` (returns > 0, at least one record) or a TLS_* code."""
    cdef int ret
    if c.ssl == NULL:
        return TLS_FAILED
    if n == 0:
        return 0
    ERR_clear_error()
    errno = 0
    ret = SSL_write(c.ssl, buf, <int>(n if n < <size_t>INT_MAX else INT_MAX))
    if ret > 0:
        return ret
    return _fail(c, ret, errno)


cdef void tls_conn_close(tls_conn* c) noexcept nogil:
    """Free the ``SSL`` (the one place it is freed); the fd stays open for the caller."""
    if c.ssl == NULL:
        return
    if c.flags & TLSF_USABLE:
        # Mark the shutdown done without sending close_notify: OpenSSL then keeps the
        # session resumable (SSL_free invalidates sessions of connections not shut down).
        SSL_set_shutdown(c.ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN)
    elif (c.flags & TLSF_FAILED) and (c.flags & TLSF_OFFERED) and c.resume != NULL \
            and c.resume.tag == c.tag:
        tls_resume_clear(c.resume)
    SSL_set_app_data(c.ssl, NULL)
    SSL_free(c.ssl)
    c.ssl = NULL
    c.flags &= ~(TLSF_USABLE | TLSF_OFFERED)
    c.pending = 0


cdef bint tls_session_reused(const tls_conn* c) noexcept nogil:
    return c.ssl != NULL and SSL_session_reused(c.ssl) == 1


cdef size_t tls_error_text(const tls_conn* c, int rc, char* buf, size_t n) noexcept nogil:
    """A message for the failure ``rc`` last returned on ``c`` (slow path)."""
    cdef char detail[TLS_ERRTEXT_SIZE]
    cdef int k
    if buf == NULL or n == 0:
        return 0
    if rc == TLS_FAILED:
        if c.verify_result != X509_V_OK:
            k = snprintf(buf, n, b"TLS certificate verification failed: %s",
                         X509_verify_cert_error_string(c.verify_result))
        elif c.err != 0:
            ERR_error_string_n(c.err, detail, sizeof(detail))
            k = snprintf(buf, n, b"TLS failure: %s", detail)
        else:
            k = snprintf(buf, n, b"TLS failure")
    elif rc == TLS_RESET:
        k = snprintf(buf, n, b"connection error during TLS: %s (errno %d)",
                     strerror(c.sys_errno), c.sys_errno)
    elif rc == TLS_CLOSED:
        k = snprintf(buf, n, b"the peer closed the connection during TLS")
    elif rc == TLS_WANT_READ or rc == TLS_WANT_WRITE:
        k = snprintf(buf, n, b"TLS operation would block")
    else:
        k = snprintf(buf, n, b"no TLS error")
    if k < 0:
        buf[0] = 0
        return 0
    return <size_t>k if <size_t>k < n else n - 1

# ------------------------------------------------------------------------------ test wrapper

class TlsError(Exception):
    """A failed TLS request; ``kind`` is the engine's error kind
    ("tls", "closed", "reset", "timeout", "connect")."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


cdef class TlsContext:
    """An ``SSL_CTX`` built by ``tls_ctx_new``; freed by ``close`` or when collected."""

    cdef SSL_CTX* ctx

    def __cinit__(self, cafile=None, bint insecure=False):
        cdef char err[TLS_ERRTEXT_SIZE]
        cdef bytes path = None if cafile is None else str(cafile).encode()
        cdef const char* cpath = NULL
        if path is not None:
            cpath = path
        with nogil:
            self.ctx = tls_ctx_new(cpath, insecure, err, sizeof(err))
        if self.ctx == NULL:
            raise TlsError("tls", err.decode(errors="replace"))

    def close(self) -> None:
        tls_ctx_free(self.ctx)
        self.ctx = NULL

    def __dealloc__(self):
        tls_ctx_free(self.ctx)


cdef class SessionSlot:
    """A ``tls_resume`` slot: the session kept between connections to one target."""

    cdef tls_resume r

    def __cinit__(self):
        tls_resume_init(&self.r)

    @property
    def has_session(self) -> bool:
        return self.r.session != NULL

    @property
    def tag(self) -> int:
        return self.r.tag

    def clear(self) -> None:
        tls_resume_clear(&self.r)

    def __dealloc__(self):
        tls_resume_clear(&self.r)


class Response:
    """What ``https_request`` read, and facts about the TLS connection that carried it."""

    def __init__(self, data: bytes, resumed: bool, alpn, version: str) -> None:
        self.data = data
        self.resumed = resumed
        self.alpn = alpn
        self.version = version


def _wait(sock, int want, double deadline) -> None:
    poller = select.poll()
    poller.register(sock, select.POLLIN if want == TLS_WANT_READ else select.POLLOUT)
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TlsError("timeout", "no progress before the deadline")
    poller.poll(remaining * 1000.0)


cdef object _error(const tls_conn* c, int rc):
    cdef char text[TLS_ERRTEXT_SIZE]
    tls_error_text(c, rc, text, sizeof(text))
    if rc == TLS_FAILED:
        kind = "tls"
    elif rc == TLS_CLOSED:
        kind = "closed"
    elif c.sys_errno == ETIMEDOUT:
        kind = "timeout"
    else:
        kind = "reset"
    return TlsError(kind, text.decode(errors="replace"))


def https_request(TlsContext ctx not None, str host, int port, bytes request, *,
                  str server_name=None, SessionSlot slot=None, int tag=0,
                  double timeout_s=5.0, Py_ssize_t bufsize=65536) -> Response:
    """Connect to ``host:port``, do the TLS handshake for ``server_name`` (default ``host``),
    send ``request`` and read until the peer closes. Raises ``TlsError`` with the error kind.

    The loop is the engine's: one C call per readiness event, ``poll`` for the interest the
    call returned (level-triggered), and back to ``poll`` after a read only when
    ``tls_read`` says nothing is buffered inside OpenSSL.
    """
    cdef tls_conn c
    cdef tls_resume* resume = NULL if slot is None else &slot.r
    cdef bytes name = (host if server_name is None else server_name).encode("ascii")
    cdef const char* cname = name
    cdef const char* req = request
    cdef size_t req_len = len(request)
    cdef size_t wpos = 0
    cdef ssize_t n
    cdef int rc, fd
    cdef bytearray buf = bytearray(bufsize)
    cdef unsigned char[::1] view = buf
    cdef unsigned char* bufp = &view[0]
    cdef size_t cap = <size_t>bufsize
    cdef const unsigned char* alpn_p = NULL
    cdef unsigned int alpn_len = 0
    if ctx.ctx == NULL:
        raise ValueError("the TlsContext is closed")
    deadline = time.monotonic() + timeout_s
    tls_conn_init(&c)
    chunks = []
    sock = _pysocket.socket(_pysocket.AF_INET6 if ":" in host else _pysocket.AF_INET,
                            _pysocket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        err = sock.connect_ex((host, port))
        if err == _errno.EINPROGRESS:
            _wait(sock, TLS_WANT_WRITE, deadline)
            err = sock.getsockopt(_pysocket.SOL_SOCKET, _pysocket.SO_ERROR)
        if err != 0:
            raise TlsError("connect", _errno.errorcode.get(err, str(err)))
        fd = sock.fileno()
        with nogil:
            rc = tls_conn_start(&c, ctx.ctx, fd, cname, resume, tag)
        if rc != TLS_OK:
            raise _error(&c, rc)
        while True:                                     # HANDSHAKING
            with nogil:
                rc = tls_handshake(&c)
            if rc == TLS_OK:
                break
            if rc == TLS_WANT_READ or rc == TLS_WANT_WRITE:
                _wait(sock, rc, deadline)
                continue
            raise _error(&c, rc)
        while wpos < req_len:                           # WRITING
            with nogil:
                n = tls_write(&c, req + wpos, req_len - wpos)
            if n > 0:
                wpos += <size_t>n
            elif n == TLS_WANT_READ or n == TLS_WANT_WRITE:
                _wait(sock, <int>n, deadline)
            else:
                raise _error(&c, <int>n)
        while True:                                     # READING (until the peer closes)
            with nogil:
                n = tls_read(&c, bufp, cap)
            if n > 0:
                chunks.append(bytes(buf[:n]))
                if <size_t>n < cap and tls_drained(&c):
                    _wait(sock, TLS_WANT_READ, deadline)
            elif n == TLS_CLOSED:
                break
            elif n == TLS_WANT_READ or n == TLS_WANT_WRITE:
                _wait(sock, <int>n, deadline)
            else:
                raise _error(&c, <int>n)
        SSL_get0_alpn_selected(c.ssl, &alpn_p, &alpn_len)
        alpn = None if alpn_len == 0 else (<const char*>alpn_p)[:alpn_len].decode("ascii")
        return Response(b"".join(chunks), tls_session_reused(&c), alpn,
                        SSL_get_version(c.ssl).decode("ascii"))
    finally:
        with nogil:
            tls_conn_close(&c)
        sock.close()
