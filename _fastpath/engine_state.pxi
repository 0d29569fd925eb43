# Included by engine.pyx: the stateful session language at run time (GIL released, except
# the python step).
#
# Theory of operation
# -------------------
# A plan that uses any of it gives every session slot an ``sx_t`` (engine_session.pxd):
# variables, a render buffer, a capture buffer, a cookie jar, WebSocket connections, received
# signals and the parent/child links. Plain plans have none, and their ops take none of these
# paths: the per-op cost for them is one ``op.req != NULL`` test and one ``s.failed`` test.
#
# * **Templates** (``tmpl_t``) are literal bytes and variable slots, split at plan time;
#   ``render`` appends one to the session's ``wbuf``. A templated HTTP op renders its head,
#   the cookie jar, then its body, and writes the Content-Length it measured; the session's
#   connection then writes ``s.req`` (its borrowed pending write) as it writes a plain op's
#   bytes. An unset variable fails the op (``extract``).
# * **Extraction and cookies**: an op that extracts (or keeps cookies) has its response bytes
#   appended to ``cap`` as the parser consumes them (up to ``max_capture``); when the
#   response is complete ``after_response`` stores Set-Cookie values in the jar and runs
#   the extractors (extract.pxd: JSON path, regex, header, status, body; chunked bodies are
#   decoded in place first).
# * **Failures**: ``record_error`` marks the session (``failed``); the next pass of
#   ``sess_run`` looks for a retry_on_error frame with retries left (innermost first) and
#   reruns its body after the backoff. A *fatal* failure (extraction, abort, a python error,
#   the timeout of a wait) also ends the session when no retry takes it (``sess_fail``):
#   counted in ``sessions_failed``; its teardown still runs.
# * **Children** (async, cc_spread): each session owns ``nchildren`` slots after the
#   thread's sessions, started with a copy of its variables at the op after ASYNC (their
#   phase is PH_CHILD, their ops end at the body's end), parked in the heap for their first
#   op (cc_spread: at i * interval / count). They inherit the parent's stop time, so they
#   end by themselves; a slot still busy when its ASYNC runs again is waited for first.
# * **Waits** (await, await_all, await_signal, ws_recv ...) put the session in ST_WAIT with a
#   deadline. Who satisfies the wait (a child that ends, a signal) pushes the waiter on the
#   thread's ready stack (once: ``queued``); ``drain_ready`` re-checks and resumes it. The
#   periodic scan ends waits at their deadline (a fatal ``timeout``) or at the session's
#   stop time (a stop, not an error), as it does for in-flight ops.

from libc.stdio cimport snprintf
from libc.stdlib cimport realloc, malloc, strtoll
from libc.string cimport memchr, memmove

from _fastpath.extract cimport (
    json_path_find, json_unescape, find_head_end, find_header, is_chunked, dechunk,
    regex_find_n, cookie_jar_update,
)


cdef const char* EMPTY = ""


cdef bint all_optional(const op_t* op) noexcept nogil:
    cdef int32_t i
    for i in range(op.nextract):
        if not op.extract[i].optional:
            return False
    return True


cdef int buf_reserve(char** buf, size_t* cap, size_t need) noexcept nogil:
    """Room for ``need`` bytes and a NUL in a malloc'd buffer: 0, or -1 out of memory."""
    cdef size_t n
    cdef char* p
    if need + 1 <= cap[0]:
        return 0
    n = cap[0] * 2 if cap[0] * 2 > need + 1 else need + 1
    if n < 256:
        n = 256
    p = <char*>realloc(buf[0], n)
    if p == NULL:
        return -1
    buf[0] = p
    cap[0] = n
    return 0


cdef int var_set(session_t* s, int32_t slot, const char* data, size_t n) noexcept nogil:
    """0, or -1 (too big, or out of memory: the variable is left as it was)."""
    cdef var_t* v = &s.x.vars[slot]
    cdef size_t cap = <size_t>v.cap
    if n > MAX_VAR_BYTES:
        return -1
    if buf_reserve(&v.data, &cap, n) != 0:
        return -1
    v.cap = <int64_t>cap
    memmove(v.data, data, n)
    v.data[n] = 0
    v.len = <int64_t>n
    return 0


cdef void sx_reset(thread_t* t, session_t* s) noexcept nogil:
    """A new session begins in this slot: no variables, signals or cookies yet."""
    cdef int32_t i
    for i in range(t.cfg.nvars):
        s.x.vars[i].len = -1
    for i in range(t.cfg.nsignals):
        s.x.sigs[i] = 0
    s.x.jar_len = 0
    s.x.capturing = 0
    s.failed = 0


cdef inline bint breaks_head(const char* data, int64_t n) noexcept nogil:
    """Whether a value would end a header line (CR, LF) or be cut at NUL in a request head."""
    return (memchr(data, 13, <size_t>n) != NULL or memchr(data, 10, <size_t>n) != NULL
            or memchr(data, 0, <size_t>n) != NULL)


cdef int render(thread_t* t, session_t* s, const tmpl_t* tp, size_t* pos,
                bint head=False) noexcept nogil:
    """Append the template to ``wbuf`` at ``pos``: 0, -1 (an unset variable, or in a request
    ``head`` a value with CR, LF or NUL: a value the target sent must not add header lines or
    requests of its own), -2 (memory)."""
    cdef int32_t i
    cdef const part_t* part
    cdef const char* src
    cdef size_t n
    cdef char num[32]
    cdef var_t* v
    for i in range(tp.nparts):
        part = &tp.parts[i]
        if part.data != NULL:
            src = part.data
            n = <size_t>part.len
        elif part.var >= 0:
            v = &s.x.vars[part.var]
            if v.len < 0 or (head and breaks_head(v.data, v.len)):
                return -1
            src = v.data
            n = <size_t>v.len
        else:
            n = <size_t>snprintf(num, sizeof(num), "%lld", <long long>(
                s.x.session_id if part.var == C_VAR_SESSION_ID else s.iters))
            src = num
        if buf_reserve(&s.x.wbuf, &s.x.wcap, pos[0] + n) != 0:
            return -2
        memcpy(s.x.wbuf + pos[0], src, n)
        pos[0] += n
    return 0


cdef int append_bytes(session_t* s, size_t* pos, const char* src, size_t n) noexcept nogil:
    if buf_reserve(&s.x.wbuf, &s.x.wcap, pos[0] + n) != 0:
        return -2
    memcpy(s.x.wbuf + pos[0], src, n)
    pos[0] += n
    return 0


cdef int render_request(thread_t* t, session_t* s, const op_t* op) noexcept nogil:
    """A templated HTTP op's request into ``wbuf`` (``s.req``): 0, -1 unset variable, -2."""
    cdef size_t pos = 0
    cdef size_t body_at, body_len
    cdef char cl[64]
    cdef size_t cl_len
    cdef int rc = render(t, s, &op.head, &pos, True)
    if rc != 0:
        return rc
    if op.cookies and s.x.jar_len > 0:
        if (append_bytes(s, &pos, "Cookie: ", 8) != 0
                or append_bytes(s, &pos, s.x.jar, s.x.jar_len) != 0
                or append_bytes(s, &pos, "\r\n", 2) != 0):
            return -2
    if op.has_body:
        body_at = pos
        rc = render(t, s, &op.body, &pos)
        if rc != 0:
            return rc
        body_len = pos - body_at
        cl_len = <size_t>snprintf(cl, sizeof(cl), "Content-Length: %zu\r\n\r\n", body_len)
        if buf_reserve(&s.x.wbuf, &s.x.wcap, pos + cl_len) != 0:
            return -2
        memmove(s.x.wbuf + body_at + cl_len, s.x.wbuf + body_at, body_len)
        memcpy(s.x.wbuf + body_at, cl, cl_len)
        pos += cl_len
    elif append_bytes(s, &pos, "\r\n", 2) != 0:
        return -2
    s.req = s.x.wbuf
    s.req_len = pos
    return 0


cdef inline void capture(thread_t* t, session_t* s, const unsigned char* data, size_t n) noexcept nogil:
    """Keep response bytes for extraction (up to max_capture; NUL-terminated)."""
    cdef size_t keep = n
    if s.x.cap_len + keep > t.cfg.max_capture:
        keep = t.cfg.max_capture - s.x.cap_len if t.cfg.max_capture > s.x.cap_len else 0
        s.x.capture_over = 1
    if keep == 0:
        return
    if buf_reserve(&s.x.cap, &s.x.cap_size, s.x.cap_len + keep) != 0:
        s.x.capture_over = 1
        return
    memcpy(s.x.cap + s.x.cap_len, data, keep)
    s.x.cap_len += keep
    s.x.cap[s.x.cap_len] = 0


cdef int extract_one(thread_t* t, session_t* s, const extract_t* ex, const char* head,
                     size_t head_len, char* body, size_t body_len, int status) noexcept nogil:
    """Run one extractor: 0 stored, -1 nothing found."""
    cdef const char* v
    cdef size_t vlen, nxt, start
    cdef int is_string = 0
    cdef char num[16]
    cdef var_t* var
    cdef size_t cap
    if ex.kind == 4:        # EX_STATUS
        vlen = <size_t>snprintf(num, sizeof(num), "%d", status)
        return var_set(s, ex.var, num, vlen)
    if ex.kind == 3:        # EX_HEADER
        if find_header(head, head_len, ex.name, ex.name_len, 0, &v, &vlen, &nxt) != 0:
            return -1
        return var_set(s, ex.var, v, vlen)
    if ex.kind == 5:        # EX_BODY
        return var_set(s, ex.var, body, body_len)
    if ex.kind == 2:        # EX_REGEX (NUL bytes in the body are ordinary characters)
        if regex_find_n(ex.re[t.tid], body, body_len, &start, &vlen) != 0:
            return -1
        return var_set(s, ex.var, body + start, vlen)
    # EX_JSON
    if json_path_find(body, body_len, ex.steps, ex.nsteps, &v, &vlen, &is_string) != 0:
        return -1
    if not is_string:
        return var_set(s, ex.var, v, vlen)
    if vlen > MAX_VAR_BYTES:
        return -1
    var = &s.x.vars[ex.var]
    cap = <size_t>var.cap
    if buf_reserve(&var.data, &cap, vlen) != 0:
        return -1
    var.cap = <int64_t>cap
    var.len = <int64_t>json_unescape(v, vlen, var.data)
    var.data[var.len] = 0
    return 0


cdef int after_response(thread_t* t, session_t* s, const op_t* op, int status) noexcept nogil:
    """The captured response is complete: cookies into the jar, then the extractors.
    0, or -1 when a required extraction found nothing."""
    cdef size_t head_len = 0
    cdef size_t body_len = 0
    cdef size_t off = 0
    cdef size_t nxt
    cdef const char* v
    cdef size_t vlen
    cdef ssize_t n
    cdef char* body
    cdef int32_t i
    s.x.capturing = 0
    if s.x.cap == NULL or find_head_end(s.x.cap, s.x.cap_len, &head_len) != 0:
        head_len = s.x.cap_len
    if op.cookies:
        if s.x.jar == NULL:
            s.x.jar = <char*>malloc(JAR_SIZE)
        if s.x.jar != NULL:
            while find_header(s.x.cap, head_len, "set-cookie", 10, off, &v, &vlen, &nxt) == 0:
                cookie_jar_update(s.x.jar, &s.x.jar_len, JAR_SIZE, v, vlen)
                off = nxt
    if op.nextract == 0:
        return 0
    if s.x.cap == NULL:
        return -1 if not all_optional(op) else 0     # nothing was captured (out of memory)
    body = s.x.cap + head_len
    body_len = s.x.cap_len - head_len
    if body_len > 0 and is_chunked(s.x.cap, head_len):
        n = dechunk(body, body_len)
        if n >= 0:
            body_len = <size_t>n
            body[body_len] = 0
    for i in range(op.nextract):
        if (extract_one(t, s, &op.extract[i], s.x.cap, head_len, body, body_len, status) != 0
                and not op.extract[i].optional):
            return -1
    return 0


# ------------------------------------------------------------------------------ failures

cdef bint retry_frame(thread_t* t, session_t* s, int64_t now) noexcept nogil:
    """An error was recorded inside retry_on_error: rerun the innermost body that has retries
    left, after its backoff (doubled per retry). True if the session is parked for it."""
    cdef int32_t d = s.depth
    cdef frame_t* f
    cdef const op_t* op
    cdef int64_t attempt, backoff
    while d > 0:
        f = &s.frames[d - 1]
        op = &t.cfg.ops[f.op]
        if op.kind == C_OP_RETRY and f.left > 0:
            attempt = op.num.retries - f.left
            f.left -= 1
            s.depth = d
            s.op_end = op.body_end
            s.op_index = f.op       # the delay's wake-up steps to the body's first op
            backoff = op.delay_ns << (attempt if attempt < 20 else 20)
            s.state = ST_DELAY
            s.intended_ns = sat_add(now, backoff)
            heap_push(t, s.intended_ns if s.intended_ns < s.stop_ns else s.stop_ns, s.index)
            return True
        d -= 1
    return False


cdef void sess_end_now(thread_t* t, session_t* s, int64_t now) noexcept nogil:
    """The session ends before its time (a fatal failure): its teardown, if it has one."""
    conn_close(&s.conn)
    s.depth = 0
    if s.phase == PH_CHILD:
        child_finish(t, s, now)
        return
    if s.phase == PH_TEARDOWN:
        end_session(t, s)
        return
    s.iters += 1
    s.state = ST_IDLE
    if not sess_finish(t, s, now):
        sess_run(t, s, now)


cdef void sess_fail(thread_t* t, session_t* s, int32_t metric, int kind, int64_t now) noexcept nogil:
    """A fatal failure of the current op (no op in flight): count it; rerun an enclosing
    retry_on_error body if one has retries left, else end the session."""
    record_error(t, s, metric, kind)
    s.failed = 0
    if s.depth > 0 and t.cfg.has_retry and retry_frame(t, s, now):
        return
    if s.phase != PH_CHILD and s.phase != PH_TEARDOWN:
        t.sessions_failed += 1
    sess_end_now(t, s, now)


# ------------------------------------------------------------------------------ children, waits

cdef inline void wake(thread_t* t, session_t* s) noexcept nogil:
    if not s.x.queued:
        s.x.queued = 1
        t.ready[t.nready] = s.index
        t.nready += 1


cdef bint children_running(thread_t* t, session_t* s) noexcept nogil:
    cdef int32_t i
    for i in range(s.x.spread_first, s.x.spread_first + s.x.spread_count):
        if t.sessions[s.x.child_base + i].x.running:
            return True
    return False


cdef void child_start(thread_t* t, session_t* p, int32_t c, int32_t first, int32_t end,
                      int64_t start_ns) noexcept nogil:
    """Start child ``c`` of ``p`` at op ``first`` (body end ``end``) at ``start_ns``, with a
    copy of the parent's variables; parked in the heap until then."""
    cdef session_t* ch = &t.sessions[p.x.child_base + c]
    cdef int32_t i
    sx_reset(t, ch)
    for i in range(t.cfg.nvars):
        if p.x.vars[i].len >= 0 and var_set(ch, i, p.x.vars[i].data, <size_t>p.x.vars[i].len) != 0:
            ch.x.vars[i].len = -1
    if p.x.jar_len > 0 and ch.x.jar == NULL:
        ch.x.jar = <char*>malloc(JAR_SIZE)
    if p.x.jar_len > 0 and ch.x.jar != NULL:
        memcpy(ch.x.jar, p.x.jar, p.x.jar_len)
        ch.x.jar_len = p.x.jar_len
    if not ch.x.running:
        t.children += 1
    ch.x.running = 1
    ch.x.child_end = end
    ch.x.session_id = p.x.session_id
    ch.phase = PH_CHILD
    ch.op_index = first - 1     # the wake-up of the delay steps to ``first``
    ch.op_end = end
    ch.depth = 0
    ch.iters = p.iters
    ch.fresh = 0
    ch.stop_ns = p.stop_ns
    ch.run_deadline_ns = p.run_deadline_ns
    ch.state = ST_DELAY
    ch.intended_ns = start_ns
    heap_push(t, start_ns if start_ns < ch.stop_ns else ch.stop_ns, ch.index)


cdef void child_finish(thread_t* t, session_t* ch, int64_t now) noexcept nogil:
    """A child's body is over (or it stopped, or failed): free the slot, tell the parent."""
    cdef session_t* p = &t.sessions[ch.x.parent]
    conn_close(&ch.conn)
    ws_close_all(t, ch)
    if ch.x.running:
        t.children -= 1
    ch.x.running = 0
    ch.state = ST_DONE
    ch.depth = 0
    if p.state == ST_WAIT and (p.x.wait_kind == W_CHILD or p.x.wait_kind == W_SLOT):
        wake(t, p)


cdef void wait_for(thread_t* t, session_t* s, int32_t kind, int32_t arg, int64_t timeout_ns,
                   int64_t now) noexcept nogil:
    """Park the session in ST_WAIT (the scan ends it at its deadline or stop time)."""
    s.state = ST_WAIT
    s.x.wait_kind = kind
    s.x.wait_arg = arg
    s.deadline_ns = sat_add(now, timeout_ns) if timeout_ns > 0 else INT64_MAX


cdef bint wait_done(thread_t* t, session_t* s) noexcept nogil:
    cdef int32_t k = s.x.wait_kind
    if k == W_CHILD or k == W_SLOT:
        return not children_running(t, s)
    if k == W_SIGNAL:
        return s.x.sigs[s.x.wait_arg] > 0
    return ws_wait_done(t, s)


cdef inline void record_wait(thread_t* t, session_t* s, const op_t* op, int64_t now) noexcept nogil:
    """A measured wait (await, await_signal, a WebSocket op ...): its time from the op's start."""
    record_value(t, op.metric, (now - s.op_start_ns) // 1000)


cdef void wait_resume(thread_t* t, session_t* s, int64_t now) noexcept nogil:
    """The wait is satisfied: finish the op and go on."""
    cdef const op_t* op = &t.cfg.ops[s.op_index]
    cdef int32_t k = s.x.wait_kind
    s.state = ST_IDLE
    if k == W_SLOT:
        sess_run(t, s, now)     # the op that waited for its slots runs again
        return
    if k == W_SIGNAL:
        s.x.sigs[s.x.wait_arg] -= 1
    record_wait(t, s, op, now)
    s.op_index = op.body_end if op.kind == C_OP_SPREAD else s.op_index + 1
    s.intended_ns = now
    sess_run(t, s, now)


cdef void drain_ready(thread_t* t, int64_t now) noexcept nogil:
    """Resume the sessions other sessions woke (those pushed meanwhile wait for next time)."""
    cdef int32_t budget = t.nready
    cdef session_t* s
    while budget > 0 and t.nready > 0:
        budget -= 1
        t.nready -= 1
        s = &t.sessions[t.ready[t.nready]]
        s.x.queued = 0
        if s.state == ST_WAIT and wait_done(t, s):
            wait_resume(t, s, now)


cdef void scan_wait(thread_t* t, session_t* s, int64_t now) noexcept nogil:
    """The periodic scan, for a session in ST_WAIT: stopped at its stop time, failed at its
    deadline."""
    if now >= s.stop_ns:
        if not sess_stop(t, s, now):
            sess_run(t, s, now)
    elif now >= s.deadline_ns:
        s.state = ST_IDLE
        sess_fail(t, s, t.cfg.ops[s.op_index].metric, K_TIMEOUT, now)


# ------------------------------------------------------------------------------ the ops

cdef int var_int(session_t* s, int32_t slot, int64_t* out) noexcept nogil:
    """A variable's value as a decimal integer: 0, or -1 (unset, or not a number)."""
    cdef var_t* v = &s.x.vars[slot]
    cdef char* end
    if v.len <= 0:
        return -1
    out[0] = strtoll(v.data, &end, 10)
    return 0 if end == v.data + v.len else -1


cdef void signal_to(thread_t* t, session_t* to, int32_t sig) noexcept nogil:
    to.x.sigs[sig] += 1
    if to.state == ST_WAIT and to.x.wait_kind == W_SIGNAL and to.x.wait_arg == sig:
        wake(t, to)


cdef int python_step(thread_t* t, session_t* s, const op_t* op) noexcept nogil:
    """Call the python step's function with the GIL: 0, or -1 if it raised."""
    cdef int rc
    with gil:
        rc = _call_python(t, s, op)
    return rc


cdef int state_op(thread_t* t, session_t* s, const op_t* op, int64_t now) noexcept nogil:
    """Run a stateful op (not HTTP, not a delay, not a block): 0 go on with ``op_index``
    (already moved), 1 the session waits or ended (return from ``sess_run``)."""
    cdef int32_t k = op.kind
    cdef size_t pos = 0
    cdef int64_t value, i
    cdef int rc
    cdef session_t* p
    cdef char num[32]
    s.op_start_ns = now
    if k == C_OP_ASSIGN:
        rc = render(t, s, &op.head, &pos)
        if rc != 0 or var_set(s, op.ref.var, s.x.wbuf if pos > 0 else EMPTY, pos) != 0:
            sess_fail(t, s, op.metric, K_EXTRACT, now)
            return 1
    elif k == C_OP_UPDATE_ADD:
        if s.x.vars[op.ref.var].len < 0:
            value = 0
        elif var_int(s, op.ref.var, &value) != 0:
            sess_fail(t, s, op.metric, K_EXTRACT, now)
            return 1
        value += op.num.delta
        var_set(s, op.ref.var, num, <size_t>snprintf(num, sizeof(num), "%lld", <long long>value))
    elif k == C_OP_UNSET:
        s.x.vars[op.ref.var].len = -1
    elif k == C_OP_ADD_METRIC:
        value = op.num.value
        if op.ref.var >= 0 and var_int(s, op.ref.var, &value) != 0:
            sess_fail(t, s, op.metric, K_EXTRACT, now)
            return 1
        record_value(t, op.metric, value if value > 0 else 0)
    elif k == C_OP_ABORT:
        sess_fail(t, s, op.metric, K_ABORT, now)
        return 1
    elif k == C_OP_PYTHON:
        if python_step(t, s, op) != 0:
            sess_fail(t, s, op.metric, K_PYTHON, now)
            return 1
        record_wait(t, s, op, now_ns())
    elif k == C_OP_ASYNC:
        if s.x.child_base < 0:
            s.op_index = op.body_end        # a child cannot start children (compiler rule)
            return 0
        s.x.spread_first = op.ref.child
        s.x.spread_count = 1
        if children_running(t, s):
            wait_for(t, s, W_SLOT, 0, 0, now)
            return 1
        child_start(t, s, op.ref.child, s.op_index + 1, op.body_end, now)
        s.op_index = op.body_end
        s.intended_ns = now
        return 0
    elif k == C_OP_SPREAD:
        if s.x.child_base < 0:
            s.op_index = op.body_end
            return 0
        s.x.spread_first = op.ref.child
        s.x.spread_count = op.arg.count
        if children_running(t, s):
            wait_for(t, s, W_SLOT, 0, 0, now)
            return 1
        for i in range(op.arg.count):
            child_start(t, s, op.ref.child + <int32_t>i, s.op_index + 1, op.body_end,
                        now + op.num.interval_ns * i // op.arg.count)
        wait_for(t, s, W_CHILD, 0, 0, now)
        return 1
    elif k == C_OP_AWAIT or k == C_OP_AWAIT_ALL:
        if s.x.child_base < 0:
            s.op_index += 1
            return 0
        if k == C_OP_AWAIT:
            s.x.spread_first = op.ref.child
            s.x.spread_count = 1
        else:
            s.x.spread_first = 0
            s.x.spread_count = t.cfg.nchildren
        if children_running(t, s):
            wait_for(t, s, W_CHILD, 0, op.delay_ns, now)
            return 1
        record_wait(t, s, op, now)
    elif k == C_OP_SIGNAL:
        if op.ref.child < 0:
            if s.x.parent >= 0:
                signal_to(t, &t.sessions[s.x.parent], op.arg.signal)
        elif s.x.child_base >= 0:
            p = &t.sessions[s.x.child_base + op.ref.child]
            if p.x.running:
                signal_to(t, p, op.arg.signal)
    elif k == C_OP_AWAIT_SIGNAL:
        if s.x.sigs[op.ref.signal] <= 0:
            wait_for(t, s, W_SIGNAL, op.ref.signal, op.delay_ns, now)
            return 1
        s.x.sigs[op.ref.signal] -= 1
        record_wait(t, s, op, now)
    else:
        return ws_op(t, s, op, now)
    s.op_index += 1
    return 0


cdef bint http_prepare(thread_t* t, session_t* s, const op_t* op, int64_t now) noexcept nogil:
    """A templated HTTP op starts: render its request and start capturing if it extracts or
    keeps cookies. True if rendering failed (the session was ended, or retried)."""
    if render_request(t, s, op) != 0:
        sess_fail(t, s, op.metric, K_EXTRACT, now)
        return True
    s.x.capturing = op.nextract > 0 or op.cookies
    s.x.cap_len = 0
    s.x.capture_over = 0
    return False


cdef void sx_free(config_t* cfg, sx_t* x) noexcept nogil:
    """Release a slot's stateful memory (Engine._free, after the threads ended)."""
    cdef int32_t i
    if x.vars != NULL:
        for i in range(cfg.nvars):
            free(x.vars[i].data)
        free(x.vars)
        x.vars = NULL
    free(x.wbuf)
    free(x.cap)
    free(x.jar)
    free(x.sigs)
    x.wbuf = x.cap = x.jar = NULL
    x.sigs = NULL
    ws_free(cfg, x)


cdef int _call_python(thread_t* t, session_t* s, const op_t* op) noexcept:
    """The python step (GIL held): fn(variables) -> dict of new values or None. 0, or -1."""
    cdef int32_t i
    cdef var_t* v
    cdef bytes value
    fn, names, slots, logged = <object>op.pyfunc
    try:
        variables = {}
        for i in range(t.cfg.nvars):
            v = &s.x.vars[i]
            if v.len >= 0:
                variables[names[i]] = v.data[:v.len].decode("utf-8", "surrogateescape")
        variables["session_id"] = str(s.x.session_id)
        variables["iteration"] = str(s.iters)
        result = fn(variables)
        if result is None:
            return 0
        for name, new in result.items():
            i = slots.get(name, -1)
            if i < 0:
                continue
            if new is None:
                s.x.vars[i].len = -1
                continue
            value = new if isinstance(new, bytes) else str(new).encode("utf-8", "surrogateescape")
            if var_set(s, i, value, len(value)) != 0:
                return -1
        return 0
    except BaseException:
        if not logged[0]:       # the first failure of each python step, with its traceback
            logged[0] = True
            import logging
            logging.getLogger("chaperon.engine").exception(
                "python step %s raised (counted as 'python' errors; only the first is logged)",
                getattr(fn, "__qualname__", fn))
        return -1
