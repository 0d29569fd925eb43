# cython: language_level=3
"""The engine's one connection type, ``conn_t``, used by HTTP and WebSocket alike; its target
(``target_t``) and the per-thread I/O context it runs in (``io_t``). The code is
``engine_conn.pxi``.

Theory of operation
-------------------
A ``conn_t`` is a non-blocking TCP socket, registered in its thread's epoll set (``io_t``) for
EPOLLIN for its whole life, with an optional TLS client on top (``tls.pxd``), and one pending
write. It knows nothing of sessions or ops: its users (the HTTP exchange of ``engine.pyx``,
the WebSocket connections of ``engine_ws.pxi``, the open model's warm-up) drive it and put the
bytes it reads through their sans-IO codec (``http1.pxd``, ``ws.pxd``).

States (``state``)::

    CLOSED --conn_open--> CONNECTING --(TCP up)--> HANDSHAKING (TLS target) --> OPEN
                              \\________________(plain target)________________/
    any state --conn_close--> CLOSED

``conn_open`` returns 0 when it got to OPEN at once, 1 while it is on the way (the user calls
``conn_establish`` on each of the socket's events until that returns 0), or ``-1 - kind``
(``engine_metrics.pxd``: ``connect``, ``timeout``, ``tls``, ``closed``, ``reset``) on failure,
as every function here does. The caller keeps the deadline (the connect timeout covers TCP
and TLS) and closes the connection after a failure; nothing here records or counts.

Epoll interest: EPOLLIN always; EPOLLOUT (``epout``) only while the connect, a write, or the
TLS layer waits for the socket to be writable; the epoll tag is ``owner << 32 | fd`` (owner:
the session slot's index in its thread), so a stale event (an fd reused) is recognised.
Whatever the state, the operation that would block is the one retried on the next event:
``conn_write_ready`` says whether an event should retry the pending write (over TLS any event
may: the write may have waited for a read).

Buffers and ownership. The connection owns its fd (closed by ``conn_close``), its ``SSL``
(``tls_conn``: freed by ``conn_close``, before ``close(fd)``) and the resumable
``SSL_SESSION`` of its ``resume`` slot (freed by ``conn_free``, once, when the engine's memory
is released). It owns no byte buffer: the pending write ``wbuf[wpos:wlen]`` is *borrowed*
from whoever produced the bytes (the plan's request buffer or the session's render buffer
for HTTP, the WebSocket connection's ``out`` buffer) and must stay valid, unchanged before
``wpos``, until ``conn_write`` has sent it all; ``conn_close`` forgets it. Reads go into the
caller's buffer (the thread's ``rbuf``), parsed by the caller before the next read.

Partial writes and EAGAIN: ``conn_write`` sends what the socket takes, advances ``wpos`` and
returns 1 (EPOLLOUT armed, or for TLS the interest OpenSSL asked for) until all is written,
then 0 with EPOLLOUT disarmed. Reads: ``conn_read`` returns bytes, ``CONN_EOF``, or
``CONN_AGAIN`` (nothing more now; interest set); after ``n`` bytes, ``conn_drained`` says
whether epoll may wait (fewer bytes than asked and nothing held inside OpenSSL), else the
caller reads again, and ``conn_wait_in`` then drops an EPOLLOUT only a read had asked for.
"""

from libc.stdint cimport int32_t, uint32_t

from _fastpath.includes.openssl cimport SSL_CTX
from _fastpath.includes.socket cimport sockaddr_storage, socklen_t
from _fastpath.tls cimport tls_conn, tls_resume, TLS_ERRTEXT_SIZE


cdef enum:
    SERVER_NAME_SIZE = 256  # a DNS name is at most 253 characters

cdef enum:
    CONN_CLOSED = 0
    CONN_CONNECTING = 1     # TCP connect in flight (EPOLLOUT armed)
    CONN_HANDSHAKING = 2    # TLS handshake in flight (interest as OpenSSL asked)
    CONN_OPEN = 3

# conn_read's results besides n > 0 bytes and -1 - kind (kinds are 0 .. NKINDS - 1)
cdef enum:
    CONN_EOF = 0
    CONN_AGAIN = -100


cdef struct target_t:
    sockaddr_storage addr
    socklen_t addrlen
    int family
    int32_t tls                         # HTTPS: a TLS handshake follows the TCP connect
    char server_name[SERVER_NAME_SIZE]  # TLS: SNI (host names only) and the verified identity

# What the connections of one engine thread share (part of ``thread_t``).
cdef struct io_t:
    int epfd                            # the thread's epoll set
    SSL_CTX* ssl_ctx                    # NULL when no target uses TLS
    char tls_error[TLS_ERRTEXT_SIZE]    # text of the latest TLS failure (diagnostics)

cdef struct conn_t:
    int fd                  # -1 when CLOSED
    int32_t state           # CONN_*
    int32_t target          # index of the target it is connected to, -1 without one
    int32_t epout           # EPOLLOUT is armed
    uint32_t owner          # epoll tag: the owning session slot's index in its thread
    const unsigned char* wbuf   # pending write wbuf[wpos:wlen], borrowed (see above)
    size_t wpos
    size_t wlen
    # TLS (unused by plain targets: ``tls.ssl`` stays NULL). A conn_t never moves while an
    # SSL lives (tls.pxd): it sits in the calloc'ed session or WebSocket connection arrays.
    tls_conn tls
    tls_resume resume       # the last session this connection's server offered, tag = target
