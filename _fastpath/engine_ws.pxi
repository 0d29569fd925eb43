# Included by engine.pyx: a session's WebSocket connections (ws_connect, ws_send, ws_recv,
# ws_await_recv, ws_close), over the sans-IO codec of ws.pxd.
#
# Theory of operation
# -------------------
# A session of a plan with ``nconns`` > 0 owns that many ``ws_conn_t`` (its ``sx_t.ws``,
# ``engine_ws.pxd``), each a ``conn_t`` (``engine_conn.pxd``: connect, TLS, read, write and
# close are the same code as the HTTP connection's) beside the session's HTTP connection,
# registered in the thread's epoll set with the same ``index << 32 | fd`` tag: an event whose
# fd is not the session's HTTP fd is looked up among its WebSocket fds (``ws_event``).
#
# A connection moves CONNECTING (``conn_open``/``conn_establish``: TCP, then TLS for wss) ->
# HS_WRITE (the upgrade request, with a fresh random Sec-WebSocket-Key) -> HS_READ
# (``ws_handshake_feed`` checks the 101 and the accept) -> OPEN -> CLOSING (our close frame
# sent, the server's awaited) -> CLOSED. Bytes to send (the request, frames, pongs, the close
# frame) are appended to the connection's ``out`` buffer, which the ``conn_t`` borrows as its
# pending write: sent at once, the rest when the socket is ready (``conn_write``). Whatever
# the session is doing, a readable connection is read and decoded at once: data messages are
# queued in the connection's ``inbox`` (up to ``max_capture`` bytes; beyond it new messages
# are dropped), pings are answered, a close frame from the server is answered and the socket
# closed.
#
# The ops: connect, send and close are in flight in state ST_WS (the periodic scan fails
# them at their deadline: the connect timeout for a connect, the request timeout for the
# others); recv and await_recv take a queued message or wait in ST_WAIT (W_WS) until one
# arrives or their timeout passes. Every WebSocket failure (refused, handshake rejected,
# protocol violation, closed by the server while needed, timeout) is fatal to the session:
# the ops after it depend on the connection. A session's connections are closed (a close
# frame sent if possible) when it ends.

from libc.string cimport memcmp

from _fastpath.ws cimport (
    ws_decoder, ws_handshake, ws_decoder_init, ws_decoder_free, ws_message_done, ws_decode,
    ws_frame_header, ws_mask, ws_key_encode, ws_accept_for, ws_handshake_init,
    ws_handshake_feed, WS_EV_NONE, WS_EV_TEXT, WS_EV_BINARY, WS_EV_PING, WS_EV_PONG,
    WS_EV_CLOSE, WS_EV_ERROR, WS_EV_NOMEM, WS_OP_TEXT, WS_OP_BINARY, WS_OP_CLOSE, WS_OP_PONG,
    WS_ACCEPT_LEN, WS_MAX_HEADER,
)

cdef inline ws_conn_t* ws_conn(session_t* s, int32_t i) noexcept nogil:
    return &(<ws_conn_t*>s.x.ws)[i]


cdef int ws_alloc(config_t* cfg, sx_t* x) noexcept nogil:
    cdef int32_t i
    cdef ws_conn_t* c
    x.ws = calloc(cfg.nconns, sizeof(ws_conn_t))
    if x.ws == NULL:
        return -1
    for i in range(cfg.nconns):
        c = &(<ws_conn_t*>x.ws)[i]
        conn_init(&c.conn, 0)       # owner: set with the session's index (Engine._allocate)
        ws_decoder_init(&c.dec, WS_MAX_MESSAGE)   # a bigger message breaks the protocol
    return 0


cdef void ws_free(config_t* cfg, sx_t* x) noexcept nogil:
    cdef int32_t i
    cdef ws_conn_t* c
    if x.ws == NULL:
        return
    for i in range(cfg.nconns):
        c = &(<ws_conn_t*>x.ws)[i]
        ws_drop(c)
        conn_free(&c.conn)
        ws_decoder_free(&c.dec)
        free(c.hs)
        free(c.inbox)
        free(c.out)
    free(x.ws)
    x.ws = NULL


cdef void ws_drop(ws_conn_t* c) noexcept nogil:
    """Close the socket at once; the connection is reusable by a later ws_connect."""
    cdef size_t limit
    conn_close(&c.conn)         # also forgets what ``out`` still held
    free(c.hs)
    c.hs = NULL
    c.state = WC_CLOSED
    c.in_head = c.in_len = 0
    limit = c.dec.limit     # a fresh decoder for the next connection
    ws_decoder_free(&c.dec)
    ws_decoder_init(&c.dec, limit)


cdef int out_append(ws_conn_t* c, const unsigned char* data, size_t n) noexcept nogil:
    """Bytes onto ``out``, the connection's pending write (``conn.wbuf`` is moved with it if
    it grows: the TLS layer accepts a moving write buffer with the same bytes)."""
    cdef size_t cap = c.out_cap
    if c.conn.wpos == c.conn.wlen:
        c.conn.wpos = c.conn.wlen = 0
    if buf_reserve(<char**>&c.out, &cap, c.conn.wlen + n) != 0:
        return -1
    c.out_cap = cap
    memcpy(c.out + c.conn.wlen, data, n)
    c.conn.wbuf = c.out
    c.conn.wlen += n
    return 0


cdef int frame_append(thread_t* t, ws_conn_t* c, int opcode, const unsigned char* payload,
                      size_t n) noexcept nogil:
    """A masked client frame onto ``out``: 0, or -1 out of memory."""
    cdef unsigned char hdr[WS_MAX_HEADER]
    cdef uint32_t key = <uint32_t>(rng_next(t) >> 32)
    cdef size_t h = ws_frame_header(hdr, opcode, n, key)
    cdef size_t at
    if out_append(c, hdr, h) != 0:
        return -1
    at = c.conn.wlen
    if n > 0:
        if out_append(c, payload, n) != 0:
            return -1
        ws_mask(c.out + at, n, key, 0)
    return 0


cdef inline int ws_flush(thread_t* t, ws_conn_t* c) noexcept nogil:
    """Send what ``out`` holds: 0 all sent, 1 the rest waits for the socket, -1 - kind."""
    return conn_write(&t.io, &c.conn)


cdef int inbox_push(config_t* cfg, ws_conn_t* c, const unsigned char* data, size_t n) noexcept nogil:
    cdef size_t cap = c.in_cap
    cdef uint32_t len32 = <uint32_t>n
    if c.in_len - c.in_head + n + 4 > cfg.max_capture + 4:
        return 0                # full: the message is dropped
    if c.in_head > 0 and c.in_head == c.in_len:
        c.in_head = c.in_len = 0
    elif c.in_head > 65536 and c.in_head * 2 > c.in_len:
        memmove(c.inbox, c.inbox + c.in_head, c.in_len - c.in_head)
        c.in_len -= c.in_head
        c.in_head = 0
    if buf_reserve(<char**>&c.inbox, &cap, c.in_len + 4 + n) != 0:
        return -1
    c.in_cap = cap
    memcpy(c.inbox + c.in_len, &len32, 4)
    if n > 0:
        memcpy(c.inbox + c.in_len + 4, data, n)
    c.in_len += 4 + n
    return 0


cdef bint inbox_pop(ws_conn_t* c, const unsigned char** data, size_t* n) noexcept nogil:
    """The oldest queued message (valid until the next push), or False."""
    cdef uint32_t len32
    if c.in_head >= c.in_len:
        return False
    memcpy(&len32, c.inbox + c.in_head, 4)
    data[0] = c.inbox + c.in_head + 4
    n[0] = len32
    c.in_head += 4 + len32
    return True


cdef void ws_close_all(thread_t* t, session_t* s) noexcept nogil:
    """The session ends: a close frame where one can go out at once, then every socket."""
    cdef int32_t i
    cdef ws_conn_t* c
    cdef unsigned char code[2]
    if s.x.ws == NULL:
        return
    code[0] = 0x03          # 1000, normal closure
    code[1] = 0xE8
    for i in range(t.cfg.nconns):
        c = ws_conn(s, i)
        if c.conn.fd >= 0 and c.state == WC_OPEN and c.conn.wpos == c.conn.wlen:
            if frame_append(t, c, WS_OP_CLOSE, code, 2) == 0:
                conn_write_once(&c.conn)
        ws_drop(c)
        c.broken = 0


# ------------------------------------------------------------------------------ the ops

cdef bint ws_take(thread_t* t, session_t* s, const op_t* op) noexcept nogil:
    """recv: take the next message (into its variable); await_recv: drop messages until one
    equals the expected one (rendered in ``wbuf`` at the op's start). True if taken."""
    cdef ws_conn_t* c = ws_conn(s, op.ref.conn)
    cdef const unsigned char* data
    cdef size_t n
    while inbox_pop(c, &data, &n):
        if op.kind == C_OP_WS_RECV:
            if op.arg.var >= 0:
                var_set(s, op.arg.var, <const char*>data, n)
            return True
        if n == s.req_len and (n == 0 or memcmp(data, s.x.wbuf, n) == 0):
            return True
    return False


cdef bint ws_wait_done(thread_t* t, session_t* s) noexcept nogil:
    return ws_take(t, s, &t.cfg.ops[s.op_index])


cdef void ws_fail(thread_t* t, session_t* s, ws_conn_t* c, int kind, int64_t now) noexcept nogil:
    """The op in flight on (or waiting for) ``c`` failed: fatal to the session."""
    ws_drop(c)
    s.state = ST_IDLE
    sess_fail(t, s, t.cfg.ops[s.op_index].metric, kind, now)


cdef void ws_op_done(thread_t* t, session_t* s, int64_t now) noexcept nogil:
    """The WebSocket op (or the wait) the session was in is done: record it, go on."""
    s.state = ST_IDLE
    record_wait(t, s, &t.cfg.ops[s.op_index], now)
    s.op_index += 1
    s.intended_ns = now
    sess_run(t, s, now)


cdef int ws_connect_op(thread_t* t, session_t* s, const op_t* op, ws_conn_t* c,
                       int64_t now) noexcept nogil:
    cdef unsigned char raw[16]
    cdef char key[32]
    cdef char accept[WS_ACCEPT_LEN + 1]
    cdef uint64_t r
    cdef size_t pos = 0
    cdef int rc
    ws_drop(c)          # a connection still open under this name is replaced
    c.broken = 0
    if render(t, s, &op.head, &pos, True) != 0:
        sess_fail(t, s, op.metric, K_EXTRACT, now)
        return 1
    r = rng_next(t)
    memcpy(raw, &r, 8)
    r = rng_next(t)
    memcpy(raw + 8, &r, 8)
    ws_key_encode(raw, key)
    if ws_accept_for(key, 24, accept) != 0:
        sess_fail(t, s, op.metric, K_PROTOCOL, now)
        return 1
    c.hs = <ws_handshake*>malloc(sizeof(ws_handshake))
    if (c.hs == NULL or out_append(c, <unsigned char*>s.x.wbuf, pos) != 0
            or out_append(c, <const unsigned char*>"Sec-WebSocket-Key: ", 19) != 0
            or out_append(c, <unsigned char*>key, 24) != 0
            or out_append(c, <const unsigned char*>"\r\n\r\n", 4) != 0):
        ws_fail(t, s, c, K_PROTOCOL, now)
        return 1
    ws_handshake_init(c.hs, accept)
    s.state = ST_WS
    s.deadline_ns = now + t.cfg.connect_timeout_ns     # TCP and the TLS handshake (wss)
    c.state = WC_CONNECTING
    rc = conn_open(&t.io, &c.conn, op.target, &t.cfg.targets[op.target])
    if rc < 0:
        ws_fail(t, s, c, -1 - rc, now)
        return 1
    if rc > 0:
        return 1
    return ws_handshake_write(t, s, c, now)


cdef int ws_handshake_write(thread_t* t, session_t* s, ws_conn_t* c, int64_t now) noexcept nogil:
    cdef int rc
    c.state = WC_HS_WRITE
    rc = ws_flush(t, c)
    if rc < 0:
        ws_fail(t, s, c, -1 - rc, now)
        return 1
    if rc == 0:
        c.state = WC_HS_READ
    return 1


cdef int ws_op(thread_t* t, session_t* s, const op_t* op, int64_t now) noexcept nogil:
    """The WebSocket ops (``state_op``'s contract: 0 go on, 1 waiting or ended)."""
    cdef ws_conn_t* c = ws_conn(s, op.ref.conn)
    cdef size_t pos = 0
    cdef int rc
    cdef unsigned char code[2]
    if op.kind == C_OP_WS_CONNECT:
        return ws_connect_op(t, s, op, c, now)
    if op.kind == C_OP_WS_CLOSE:
        if c.state != WC_OPEN:
            ws_drop(c)
            c.broken = 0
            s.op_index += 1
            return 0
        code[0] = 0x03
        code[1] = 0xE8
        if frame_append(t, c, WS_OP_CLOSE, code, 2) != 0:
            ws_fail(t, s, c, K_PROTOCOL, now)
            return 1
        c.state = WC_CLOSING
        s.state = ST_WS
        s.deadline_ns = now + t.cfg.request_timeout_ns
        rc = ws_flush(t, c)
        if rc < 0:
            ws_fail(t, s, c, -1 - rc, now)
        return 1
    if c.state != WC_OPEN:
        sess_fail(t, s, op.metric, K_CLOSED, now)
        return 1
    if op.kind == C_OP_WS_SEND:
        if render(t, s, &op.head, &pos) != 0:
            sess_fail(t, s, op.metric, K_EXTRACT, now)
            return 1
        if frame_append(t, c, op.arg.opcode, <unsigned char*>s.x.wbuf, pos) != 0:
            ws_fail(t, s, c, K_PROTOCOL, now)
            return 1
        rc = ws_flush(t, c)
        if rc < 0:
            ws_fail(t, s, c, -1 - rc, now)
            return 1
        if rc > 0:
            s.state = ST_WS
            s.deadline_ns = now + t.cfg.request_timeout_ns
            return 1
        record_wait(t, s, op, now)
        s.op_index += 1
        return 0
    # RECV / AWAIT_RECV
    if op.kind == C_OP_WS_AWAIT_RECV:
        if render(t, s, &op.body, &pos) != 0:
            sess_fail(t, s, op.metric, K_EXTRACT, now)
            return 1
        s.req_len = pos         # the expected message is wbuf[0:pos]
    if ws_take(t, s, op):
        record_wait(t, s, op, now)
        s.op_index += 1
        return 0
    wait_for(t, s, W_WS, op.ref.conn, op.delay_ns, now)
    return 1


# ------------------------------------------------------------------------------ events

cdef int ws_read(thread_t* t, session_t* s, ws_conn_t* c) noexcept nogil:
    """Read and decode what the socket holds: 0 fine, 1 closed (by the server's close frame
    or EOF), -1 - kind broken. Messages go to the inbox, pings are answered."""
    cdef ssize_t n
    cdef size_t off, used
    cdef int ev, rc
    while c.conn.fd >= 0:
        n = conn_read(&t.io, &c.conn, t.rbuf, RBUF_SIZE)
        if n == CONN_EOF:
            return 1
        if n == CONN_AGAIN:
            return 0
        if n < 0:
            return <int>n       # -1 - kind
        off = 0
        if c.state == WC_HS_READ:
            rc = ws_handshake_feed(c.hs, t.rbuf, <size_t>n, &used)
            if rc < 0:
                return -1 - K_PROTOCOL
            if rc == 0:
                continue
            free(c.hs)
            c.hs = NULL
            c.state = WC_OPEN
            off = used
        while off < <size_t>n:
            ev = ws_decode(&c.dec, t.rbuf + off, <size_t>n - off, &used)
            off += used
            if ev == WS_EV_NONE:
                break
            if ev == WS_EV_TEXT or ev == WS_EV_BINARY:
                if inbox_push(t.cfg, c, c.dec.msg.data, c.dec.msg.len) != 0:
                    return -1 - K_PROTOCOL
                ws_message_done(&c.dec)
            elif ev == WS_EV_PING:
                if frame_append(t, c, WS_OP_PONG, c.dec.ctl, c.dec.ctl_len) != 0:
                    return -1 - K_PROTOCOL
                rc = ws_flush(t, c)
                if rc < 0:
                    return rc
            elif ev == WS_EV_CLOSE:
                if c.state == WC_OPEN:
                    c.conn.wpos = c.conn.wlen = 0   # answer it (best effort), then close
                    if frame_append(t, c, WS_OP_CLOSE, c.dec.ctl, 2 if c.dec.ctl_len >= 2 else 0) == 0:
                        conn_write_once(&c.conn)
                return 1
            elif ev == WS_EV_ERROR or ev == WS_EV_NOMEM:
                return -1 - K_PROTOCOL
        if conn_drained(&c.conn, n, RBUF_SIZE):
            n = conn_wait_in(&t.io, &c.conn)
            return 0 if n == CONN_AGAIN else <int>n
    return 0


cdef void ws_event(thread_t* t, session_t* s, int fd, uint32_t events, int64_t now) noexcept nogil:
    """An event on one of the session's WebSocket sockets."""
    cdef int32_t i
    cdef ws_conn_t* c = NULL
    cdef const op_t* op
    cdef int rc
    cdef bint mine
    for i in range(t.cfg.nconns):
        if ws_conn(s, i).conn.fd == fd:
            c = ws_conn(s, i)
            break
    if c == NULL:
        return              # stale
    op = &t.cfg.ops[s.op_index] if s.op_index < t.cfg.nops else NULL
    # ``mine``: the session's current op is in flight on, or waits for, this connection
    mine = (op != NULL and (s.state == ST_WS or (s.state == ST_WAIT and s.x.wait_kind == W_WS))
            and op.kind >= C_OP_WS_CONNECT and op.ref.conn == i)
    if c.state == WC_CONNECTING:
        rc = conn_establish(&t.io, &c.conn, &t.cfg.targets[c.conn.target])
        if rc < 0:
            if mine:
                ws_fail(t, s, c, -1 - rc, now)
            else:
                ws_drop(c)
        elif rc == 0:
            ws_handshake_write(t, s, c, now)
        return
    if conn_write_ready(&c.conn, events):
        rc = ws_flush(t, c)
        if rc < 0:
            if mine:
                ws_fail(t, s, c, -1 - rc, now)
            else:
                ws_drop(c)
                c.broken = 1
            return
        if rc == 0:
            if c.state == WC_HS_WRITE:
                c.state = WC_HS_READ
            elif mine and s.state == ST_WS and op.kind == C_OP_WS_SEND:
                ws_op_done(t, s, now)
                return
    if not (events & (EPOLLIN | EPOLLHUP | EPOLLERR)):
        return
    rc = ws_read(t, s, c)
    if rc != 0:
        if mine and s.state == ST_WS and op.kind == C_OP_WS_CLOSE and rc == 1:
            ws_drop(c)          # the close handshake is over
            ws_op_done(t, s, now)
            return
        if mine and (rc < 0 or s.state == ST_WS or not ws_take(t, s, op)):
            ws_fail(t, s, c, K_CLOSED if rc == 1 else -1 - rc, now)
            return
        ws_drop(c)
        c.broken = 1
        if mine:                # a message it waited for came just before the close
            ws_op_done(t, s, now)
        return
    if not mine:
        return
    if s.state == ST_WS and op.kind == C_OP_WS_CONNECT and c.state == WC_OPEN:
        ws_op_done(t, s, now)
    elif s.state == ST_WAIT and ws_take(t, s, op):
        ws_op_done(t, s, now)


cdef void ws_scan(thread_t* t, session_t* s, int64_t now) noexcept nogil:
    """The periodic scan, for a WebSocket op in flight (ST_WS)."""
    cdef const op_t* op = &t.cfg.ops[s.op_index]
    if now >= s.run_deadline_ns or past_graceful_stop(t, s, now):
        ws_drop(ws_conn(s, op.ref.conn))
        sess_abandon(t, s, now)
    elif now >= s.deadline_ns:
        ws_fail(t, s, ws_conn(s, op.ref.conn), K_TIMEOUT, now)
