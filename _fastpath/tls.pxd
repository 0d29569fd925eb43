# cython: language_level=3
"""Non-blocking TLS client layer for the engine: C-level API (implemented in ``tls.pyx``).

Theory of operation
-------------------
The engine owns the TCP socket (non-blocking, level-triggered epoll, EPOLLIN always armed);
this layer puts an OpenSSL client on top of it and never waits. Every call does what it can
and returns at once, with a code the engine turns into an epoll interest or an error kind:

    TLS_OK          handshake done (``tls_handshake``)
    n > 0           bytes moved (``tls_read`` / ``tls_write``)
    TLS_WANT_READ   would block until the socket is readable  (disarm EPOLLOUT, wait EPOLLIN)
    TLS_WANT_WRITE  would block until the socket is writable  (arm EPOLLOUT)
    TLS_CLOSED      the peer closed (close_notify or EOF)      -> like ``read() == 0``
    TLS_RESET       socket error; ``c.sys_errno`` has errno     -> "reset" (or "timeout")
    TLS_FAILED      protocol or certificate failure            -> error kind "tls"

Either direction may need the other (a write can need a read and vice versa), so the engine
retries *the operation that returned WANT_x* when the socket becomes x-ready, whatever the
session's state. Retry ``tls_write`` with the same bytes (``wpos`` unchanged; the buffer may
move: ACCEPT_MOVING_WRITE_BUFFER). Partial writes are on, so ``tls_write`` behaves like
``send``: it returns what it wrote (a record or more) and the engine loops on ``wpos``.

Level-triggered epoll and OpenSSL's own buffer: with read-ahead on, OpenSSL may hold bytes the
kernel no longer reports as readable. ``tls_read`` therefore keeps reading while OpenSSL has
anything buffered and the caller's buffer has room, and returns fewer than ``n`` bytes only
when OpenSSL holds nothing more. If a failure (or EOF) comes after some bytes, it returns the
bytes and keeps the failure in ``c.pending`` for the next call. So: the connection is drained
(safe to go back to ``epoll_wait``) when ``tls_read`` returned a WANT code, or ``0 < got < n``
with ``tls_drained(c)``; otherwise call ``tls_read`` again.

Engine connection states (``engine_conn.pxd``, the one connection type of HTTP and
WebSocket): CONNECTING (TCP) -> HANDSHAKING (``tls_conn_start`` once, then ``tls_handshake``
on every event until TLS_OK) -> OPEN, where ``conn_write``/``conn_read`` call
``tls_write``/``tls_read`` in place of ``send``/``read``. A keep-alive connection that turns
readable while idle: ``tls_read`` into the thread buffer; WANT_READ means a post-handshake
message (a TLS 1.3 session ticket) was consumed, keep it; anything else, close it.

Resumption: a ``tls_resume`` slot (per session slot, or per target per thread) keeps the last
session the server offered; ``tls_conn_start`` offers it when its ``tag`` (the target index)
matches, so a session is never offered to another host. New sessions arrive through a
callback during ``tls_handshake`` (TLS 1.2) or ``tls_read`` (TLS 1.3 tickets); the callback
finds the slot through the ``tls_conn`` pointer, so a ``tls_conn`` must not move while its
``SSL`` lives (it sits in the calloc'ed session array: fine).

Ownership (each object is freed in exactly one function):
  * ``SSL_CTX``: ``tls_ctx_new`` -> ``tls_ctx_free``. One per engine thread is best (no lock
    shared between threads); built before the loop starts, freed after every connection.
  * ``SSL``: ``tls_conn_start`` -> ``tls_conn_close`` (idempotent; also on a failed start).
    Call it before ``close(fd)``: OpenSSL never closes the fd. A connection closed after a
    completed handshake and no TLS failure keeps its session resumable (quiet shutdown, no
    close_notify sent: no extra syscall).
  * ``SSL_SESSION``: owned by its ``tls_resume`` slot; replaced and released only in
    ``tls_resume_store`` (``tls_resume_clear`` = store NULL). Clear slots after their
    connections are closed. A TLS failure on a connection that offered the slot's session
    clears it, so the next attempt is a full handshake.
Nothing is allocated per request; OpenSSL allocates per connection (``SSL_new``).

A ``tls_conn`` and a ``tls_resume`` start zeroed (calloc) or ``tls_*_init``'ed, and belong
to one engine thread. The ``tag`` must identify everything the session was
verified for (target host and port, CA/insecure choice): the index of the target in the
plan does, as long as one thread uses one ``SSL_CTX``.

All functions are ``noexcept nogil`` and touch no Python object. The error text of the last
failure (``tls_error_text``) is built on demand from codes kept in ``tls_conn``: slow path
only. OpenSSL's error queue is per thread and is cleared before every call.
"""

from libc.stdint cimport int32_t

from _fastpath.includes.openssl cimport SSL, SSL_CTX, SSL_SESSION


cdef enum:
    TLS_OK = 0
    TLS_WANT_READ = -1
    TLS_WANT_WRITE = -2
    TLS_CLOSED = -3
    TLS_RESET = -4
    TLS_FAILED = -5

cdef enum:
    TLS_ERRTEXT_SIZE = 256      # enough for any message of tls_error_text / tls_ctx_new
    TLSF_USABLE = 1             # handshake completed and no TLS failure since
    TLSF_FAILED = 2             # a TLS_FAILED was returned
    TLSF_OFFERED = 4            # the slot's session was offered in this handshake


cdef struct tls_resume:
    SSL_SESSION* session        # owned reference, or NULL
    int32_t tag                 # which target ``session`` belongs to; -1 with no session

cdef struct tls_conn:
    SSL* ssl                    # owned; NULL while no TLS connection exists
    tls_resume* resume          # borrowed; where new sessions go (NULL: no resumption)
    int32_t tag
    int32_t flags               # TLSF_*
    int32_t pending             # failure seen after bytes were returned; next tls_read returns it
    int sys_errno               # errno of the last TLS_RESET
    long verify_result          # X509 verify result of the last TLS_FAILED (X509_V_OK if none)
    unsigned long err           # first OpenSSL error code of the last failure (0 if none)


cdef SSL_CTX* tls_ctx_new(const char* ca_file, bint insecure, char* errbuf,
                          size_t errlen) noexcept nogil
cdef void tls_ctx_free(SSL_CTX* ctx) noexcept nogil

cdef void tls_resume_init(tls_resume* r) noexcept nogil
cdef void tls_resume_store(tls_resume* r, SSL_SESSION* session, int32_t tag) noexcept nogil
cdef void tls_resume_clear(tls_resume* r) noexcept nogil

cdef void tls_conn_init(tls_conn* c) noexcept nogil
cdef int tls_conn_start(tls_conn* c, SSL_CTX* ctx, int fd, const char* host,
                        tls_resume* resume, int32_t tag) noexcept nogil
cdef int tls_handshake(tls_conn* c) noexcept nogil
cdef ssize_t tls_read(tls_conn* c, void* buf, size_t n) noexcept nogil
cdef ssize_t tls_write(tls_conn* c, const void* buf, size_t n) noexcept nogil
cdef void tls_conn_close(tls_conn* c) noexcept nogil
cdef bint tls_session_reused(const tls_conn* c) noexcept nogil
cdef size_t tls_error_text(const tls_conn* c, int rc, char* buf, size_t n) noexcept nogil


cdef inline bint tls_drained(const tls_conn* c) noexcept nogil:
    """After ``0 < tls_read(...) < n``: nothing is left inside OpenSSL, epoll may wait."""
    return c.pending == 0
