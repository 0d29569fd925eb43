# Included by engine.pyx: the connection (``conn_t``, ``engine_conn.pxd``), written once for
# HTTP and WebSocket: non-blocking connect, TLS handshake and resumption (``tls.pxd``), read,
# write of the pending bytes, close. Its theory of operation is in ``engine_conn.pxd``.
#
# Every function is ``noexcept nogil`` and touches only the connection, its ``io_t`` and its
# target; results are 0 / 1 / ``-1 - kind`` (or bytes, CONN_EOF, CONN_AGAIN for reads). The
# plain-TCP read and write are inline (the hot path: one ``tls.ssl == NULL`` test added to the
# syscall); TLS has its own functions beside them.

cdef inline int errno_kind(int e) noexcept nogil:
    if e == ETIMEDOUT:
        return K_TIMEOUT
    return K_RESET


cdef int tls_kind(io_t* io, tls_conn* c, int rc) noexcept nogil:
    """The error kind of a TLS failure code (slow path; keeps the text for ``tls_error``)."""
    tls_error_text(c, rc, io.tls_error, TLS_ERRTEXT_SIZE)
    if rc == TLS_CLOSED:
        return K_CLOSED
    if rc == TLS_RESET:
        return errno_kind(c.sys_errno)
    return K_TLS


cdef void conn_init(conn_t* c, uint32_t owner) noexcept nogil:
    """A fresh, CLOSED connection (its memory zeroed or not)."""
    c.fd = -1
    c.state = CONN_CLOSED
    c.target = -1
    c.epout = 0
    c.owner = owner
    c.wbuf = NULL
    c.wpos = 0
    c.wlen = 0
    tls_conn_init(&c.tls)
    tls_resume_init(&c.resume)


cdef inline void conn_close(conn_t* c) noexcept nogil:
    """Close at once (idempotent). A healthy TLS session stays resumable in ``resume``."""
    if c.fd >= 0:
        if c.tls.ssl != NULL:
            tls_conn_close(&c.tls)  # before close(fd)
        close(c.fd)             # also removes it from the epoll set
        c.fd = -1
    c.state = CONN_CLOSED
    c.target = -1
    c.epout = 0
    c.wpos = 0
    c.wlen = 0


cdef void conn_free(conn_t* c) noexcept nogil:
    """The one place a connection's resources go for good (Engine._free, after the threads)."""
    conn_close(c)
    tls_resume_clear(&c.resume)


cdef inline int conn_set_out(io_t* io, conn_t* c, bint want) noexcept nogil:
    """EPOLLIN, and EPOLLOUT if ``want``: 0, or -1 (epoll_ctl failed)."""
    cdef epoll_event ev
    if c.epout == want:
        return 0
    c.epout = want
    ev.events = EPOLLIN | (EPOLLOUT if want else 0)
    ev.data.u64 = ((<uint64_t>c.owner) << 32) | <uint32_t>c.fd
    return epoll_ctl(io.epfd, EPOLL_CTL_MOD, c.fd, &ev)


# ------------------------------------------------------------------------------ connect

cdef int conn_handshake(io_t* io, conn_t* c) noexcept nogil:
    """One TLS handshake step: 0 done (OPEN), 1 waiting (interest set), < 0: -1 - kind."""
    cdef int rc = tls_handshake(&c.tls)
    if rc == TLS_OK:
        c.state = CONN_OPEN
        return 0
    if rc == TLS_WANT_READ or rc == TLS_WANT_WRITE:
        if conn_set_out(io, c, rc == TLS_WANT_WRITE) != 0:
            return -1 - K_RESET
        return 1
    return -1 - tls_kind(io, &c.tls, rc)


cdef int conn_connected(io_t* io, conn_t* c, const target_t* tg) noexcept nogil:
    """TCP is up: OPEN for a plain target; for a TLS one, attach an SSL (offering the slot's
    session if it came from this target) and take the first handshake step."""
    cdef int rc
    if not tg.tls:
        c.state = CONN_OPEN
        return 0
    rc = tls_conn_start(&c.tls, io.ssl_ctx, c.fd, tg.server_name, &c.resume, c.target)
    if rc != TLS_OK:
        return -1 - tls_kind(io, &c.tls, rc)
    c.state = CONN_HANDSHAKING
    return conn_handshake(io, c)


cdef int conn_open(io_t* io, conn_t* c, int32_t target, const target_t* tg) noexcept nogil:
    """Connect the (CLOSED) connection to ``target`` (``tg``): 0 OPEN at once, 1 on the way
    (CONNECTING or HANDSHAKING: call ``conn_establish`` on its events), < 0: -1 - kind.
    A pending write set before (a WebSocket upgrade request) is kept for ``conn_write``."""
    cdef int one = 1
    cdef int fd, rc
    cdef epoll_event ev
    fd = socket(tg.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)
    if fd < 0:
        return -1 - K_CONNECT
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one))
    rc = connect(fd, <sockaddr*>&tg.addr, tg.addrlen)
    if rc != 0 and errno != EINPROGRESS and errno != EINTR:
        close(fd)
        return -1 - K_CONNECT
    ev.events = EPOLLIN | (EPOLLOUT if rc != 0 else 0)
    ev.data.u64 = ((<uint64_t>c.owner) << 32) | <uint32_t>fd
    if epoll_ctl(io.epfd, EPOLL_CTL_ADD, fd, &ev) != 0:
        close(fd)
        return -1 - K_CONNECT
    c.fd = fd
    c.target = target
    if rc != 0:
        c.state = CONN_CONNECTING
        c.epout = 1
        return 1
    c.epout = 0
    return conn_connected(io, c, tg)


cdef int conn_establish(io_t* io, conn_t* c, const target_t* tg) noexcept nogil:
    """An event on a connection on its way (CONNECTING or HANDSHAKING): the next step, with
    ``conn_open``'s results. A refused connect is ``connect``, a TCP timeout ``timeout``."""
    cdef int err = 0
    cdef socklen_t len_ = sizeof(err)
    if c.state == CONN_CONNECTING:
        if getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len_) != 0:
            err = errno
        if err != 0:
            return -1 - (K_TIMEOUT if err == ETIMEDOUT else K_CONNECT)
        return conn_connected(io, c, tg)
    return conn_handshake(io, c)


# ------------------------------------------------------------------------------ write

cdef int conn_write_tls(io_t* io, conn_t* c) noexcept nogil:
    """``conn_write`` over TLS: retried with the same bytes whatever it waited for."""
    cdef ssize_t n
    while c.wpos < c.wlen:
        n = tls_write(&c.tls, c.wbuf + c.wpos, c.wlen - c.wpos)
        if n > 0:
            c.wpos += <size_t>n
            continue
        if n == TLS_WANT_WRITE or n == TLS_WANT_READ:
            if conn_set_out(io, c, n == TLS_WANT_WRITE) != 0:
                return -1 - K_RESET
            return 1
        return -1 - tls_kind(io, &c.tls, <int>n)
    c.wpos = 0
    c.wlen = 0
    if c.epout and conn_set_out(io, c, False) != 0:
        return -1 - K_RESET
    return 0


cdef inline int conn_write(io_t* io, conn_t* c) noexcept nogil:
    """Send the pending bytes: 0 all sent (nothing pending, EPOLLOUT disarmed), 1 the rest
    waits for the socket (interest set), < 0: -1 - kind (``reset``, ``timeout``, ``tls`` ...)."""
    cdef ssize_t n
    if c.tls.ssl != NULL:
        return conn_write_tls(io, c)
    while c.wpos < c.wlen:
        n = send(c.fd, c.wbuf + c.wpos, c.wlen - c.wpos, MSG_NOSIGNAL)
        if n >= 0:
            c.wpos += <size_t>n
            continue
        if errno == EINTR:
            continue
        if errno == EAGAIN:
            if not c.epout and conn_set_out(io, c, True) != 0:
                return -1 - K_RESET
            return 1
        return -1 - errno_kind(errno)
    c.wpos = 0
    c.wlen = 0
    if c.epout and conn_set_out(io, c, False) != 0:
        return -1 - K_RESET
    return 0


cdef inline bint conn_write_ready(const conn_t* c, uint32_t events) noexcept nogil:
    """Whether this event should retry the pending write: the socket is writable (or failed),
    or, over TLS, any event (the write may have waited for a read)."""
    return c.wpos < c.wlen and ((events & (EPOLLOUT | EPOLLERR)) != 0 or c.tls.ssl != NULL)


cdef void conn_write_once(conn_t* c) noexcept nogil:
    """Best effort, never waits, the result ignored: a close frame on the way out."""
    if c.wpos >= c.wlen:
        return
    if c.tls.ssl != NULL:
        tls_write(&c.tls, c.wbuf + c.wpos, c.wlen - c.wpos)
    else:
        send(c.fd, c.wbuf + c.wpos, c.wlen - c.wpos, MSG_NOSIGNAL)


# ------------------------------------------------------------------------------ read

cdef inline ssize_t conn_wait_in(io_t* io, conn_t* c) noexcept nogil:
    """The reader goes back to epoll: EPOLLOUT stays armed only for a pending write (a read
    that wanted the socket writable is over). CONN_AGAIN, or -1 - K_RESET."""
    if c.epout and c.wpos >= c.wlen and c.state == CONN_OPEN:
        if conn_set_out(io, c, False) != 0:
            return -1 - K_RESET
    return CONN_AGAIN


cdef ssize_t conn_read_tls(io_t* io, conn_t* c, unsigned char* buf, size_t size) noexcept nogil:
    """``conn_read`` over TLS (tls.pxd's drain rule: see ``conn_drained``)."""
    cdef ssize_t n = tls_read(&c.tls, buf, size)
    if n > 0:
        return n
    if n == TLS_CLOSED:
        return CONN_EOF
    if n == TLS_WANT_READ:
        return conn_wait_in(io, c)
    if n == TLS_WANT_WRITE:
        # Rare (a TLS 1.3 key update to answer): wait for EPOLLOUT; the next event reads again.
        if not c.epout and conn_set_out(io, c, True) != 0:
            return -1 - K_RESET
        return CONN_AGAIN
    return -1 - tls_kind(io, &c.tls, <int>n)


cdef inline ssize_t conn_read(io_t* io, conn_t* c, unsigned char* buf, size_t size) noexcept nogil:
    """Read what the connection has, never waiting: n > 0 bytes into ``buf`` (then see
    ``conn_drained``), CONN_EOF (the peer closed), CONN_AGAIN (nothing now: back to epoll,
    interest set), or -1 - kind."""
    cdef ssize_t n
    if c.tls.ssl != NULL:
        return conn_read_tls(io, c, buf, size)
    while True:
        n = read(c.fd, buf, size)
        if n >= 0:
            return n            # CONN_EOF == 0
        if errno == EINTR:
            continue
        if errno == EAGAIN:
            return CONN_AGAIN   # a plain read never arms EPOLLOUT: nothing to undo
        return -1 - errno_kind(errno)


cdef inline bint conn_quiet(const conn_t* c) noexcept nogil:
    """Nothing (a close, an error) is held in the TLS layer for the next read."""
    return c.tls.ssl == NULL or tls_drained(&c.tls)


cdef inline bint conn_drained(const conn_t* c, ssize_t n, size_t size) noexcept nogil:
    """After ``conn_read`` returned ``n`` bytes of ``size``: True if epoll may wait now (the
    caller then calls ``conn_wait_in``), False if the caller must read again first
    (level-triggered epoll cannot see bytes OpenSSL already holds)."""
    return <size_t>n < size and conn_quiet(c)
