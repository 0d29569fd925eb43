# Included by engine.pyx: the open model's arrival schedule and its warm-up (see the module
# docstring). The warm-up opens each slot's HTTP connection with ``conn_open`` and steps it
# with ``conn_establish`` (``engine_conn.pxi``), as an HTTP op would, and keeps it idle.

# ------------------------------------------------------------------------------ open model

cdef int64_t arrival_offset_ns(const config_t* cfg, int64_t k, int32_t* stage) noexcept nogil:
    """When arrival ``k`` is due, in ns from the start; -1 past the schedule's end.

    Inverts the cumulative count N(t) (the integral of the piecewise-linear rate): within a
    stage N = n0 + r0*tau + a*tau**2 with a = (r1 - r0) / (2 * dur), so
    tau = 2n / (r0 + sqrt(r0**2 + 4an)), a form without cancellation for ramps up and down.
    ``stage`` is the caller's cursor: k only grows, so stages are only ever skipped forward.
    """
    cdef double kd = <double>k
    cdef double n, a, disc, tau
    cdef const stage_t* st
    cdef int64_t off
    cdef int32_t i = stage[0]
    while i < cfg.nstages and kd >= cfg.stages[i].n1:
        i += 1
    stage[0] = i
    if i >= cfg.nstages:
        return -1
    st = &cfg.stages[i]
    n = kd - st.n0
    if n <= 0.0:
        tau = 0.0
    elif st.r1 == st.r0:
        tau = n / st.r0
    else:
        a = (st.r1 - st.r0) / (2.0 * <double>st.dur_ns)
        disc = st.r0 * st.r0 + 4.0 * a * n
        if disc < 0.0:
            disc = 0.0
        tau = 2.0 * n / (st.r0 + sqrt(disc))
    off = st.start_ns + <int64_t>(tau + 0.5)
    if off >= cfg.total_ns:
        return -1           # due at the very end (rounding at the boundary): not in the run
    return off


cdef inline void next_arrival(thread_t* t) noexcept nogil:
    cdef int64_t off = arrival_offset_ns(t.cfg, t.next_k, &t.stage)
    t.next_due_ns = INT64_MAX if off < 0 else t.cfg.start_ns + off


cdef void start_arrivals(thread_t* t) noexcept nogil:
    """Start every arrival already due (at most ARRIVAL_BATCH), each in a free slot or dropped.

    The session's first op is intended to start at the arrival's due time, whenever it
    really starts: the lateness of the loop is charged to that op's latency."""
    cdef int32_t budget = ARRIVAL_BATCH
    cdef int64_t now = now_ns()
    cdef int64_t due
    cdef session_t* s
    while t.next_due_ns <= now and budget > 0:
        budget -= 1
        due = t.next_due_ns
        t.next_k += t.cfg.nthreads
        next_arrival(t)
        if t.nfree == 0:
            t.sessions_dropped += 1
            continue
        t.nfree -= 1
        s = &t.sessions[t.free_slots[t.nfree]]
        t.active += 1
        t.sessions_started += 1
        if s.x != NULL:
            s.x.session_id = t.cfg.session_id_base + t.next_k - t.cfg.nthreads  # the arrival's
        sess_start(t, s, now, due)
        now = now_ns()


cdef int wait_events(thread_t* t, int64_t d, bint precise) noexcept nogil:
    """epoll for at most ``d`` ns. A wait shorter than SPIN_NS is a poll. When the wake-up is
    for an arrival or a delay (``precise``): epoll_pwait2 (ns timeout) where the kernel has
    it; otherwise (and as the fallback) epoll_wait, whose ms timeout is rounded up (never
    early) and which is a little cheaper per call for the busy closed loop."""
    cdef timespec ts
    cdef int n
    if d < SPIN_NS:
        d = 0
    elif d > <int64_t>MAX_WAIT_MS * 1000000:
        d = <int64_t>MAX_WAIT_MS * 1000000
    if precise and d > 0 and t.use_pwait2:
        ts.tv_sec = <long>(d // 1000000000)
        ts.tv_nsec = <long>(d % 1000000000)
        n = epoll_pwait2(t.io.epfd, t.events, MAX_EVENTS, &ts)
        if n >= 0 or (errno != ENOSYS and errno != EPERM):
            return n
        t.use_pwait2 = 0    # old kernel, or a seccomp filter that does not know it
    return epoll_wait(t.io.epfd, t.events, MAX_EVENTS, <int>((d + 999999) // 1000000))


# ------------------------------------------------------------------------------ warm-up

cdef void warm_done(thread_t* t, session_t* s, bint ok) noexcept nogil:
    """A slot's warm-up connect (and handshake) ended: keep the connection, idle, or drop it
    (the session that takes the slot connects again and counts any failure then)."""
    if ok and s.conn.epout and conn_set_out(&t.io, &s.conn, False) != 0:
        ok = False
    if not ok:
        conn_close(&s.conn)
    s.state = ST_FREE
    t.warming -= 1


cdef void warm_event(thread_t* t, epoll_event* ev) noexcept nogil:
    cdef uint64_t u = ev.data.u64
    cdef session_t* s = &t.sessions[<uint32_t>(u >> 32)]
    cdef int rc
    if s.conn.fd != <int><uint32_t>u:
        return
    if s.state == ST_CONNECTING:
        rc = conn_establish(&t.io, &s.conn, &t.cfg.targets[s.conn.target])
        if rc <= 0:             # else still on its way
            warm_done(t, s, rc == 0)
    else:
        on_idle_readable(t, s)      # a warmed connection: EOF (dropped) or a TLS ticket (kept)


cdef int warm_poll(thread_t* t, int64_t d) noexcept nogil:
    """One epoll round of the warm-up (at most ``d`` ns, rounded up to ms). -1: fatal."""
    cdef int n, i
    if d > <int64_t>MAX_WAIT_MS * 1000000:
        d = <int64_t>MAX_WAIT_MS * 1000000
    n = epoll_wait(t.io.epfd, t.events, MAX_EVENTS, <int>((d + 999999) // 1000000))
    if n < 0:
        if errno == EINTR:
            return 0
        t.fatal_errno = errno
        return -1
    pthread_mutex_lock(&t.lock)
    for i in range(n):
        warm_event(t, &t.events[i])
    pthread_mutex_unlock(&t.lock)
    return 0


cdef int warm_up(thread_t* t) noexcept nogil:
    """Open model, before the schedule: connect every slot of this thread to the first op's
    target (TCP, then TLS for an HTTPS target), WARM_WINDOW at a time, within the connect
    timeout. Failed or unfinished connects are dropped, not counted. -1: fatal."""
    cdef config_t* cfg = t.cfg
    cdef const op_t* op
    cdef session_t* s
    cdef int32_t i, next_slot = 0
    cdef int64_t deadline, now
    cdef int rc
    if cfg.warm_op < 0:
        return 0
    op = &cfg.ops[cfg.warm_op]
    deadline = sat_add(now_ns(), cfg.connect_timeout_ns)
    while not chaperon_load_int(&cfg.cancel):
        pthread_mutex_lock(&t.lock)
        while next_slot < t.nsessions and t.warming < WARM_WINDOW:
            s = &t.sessions[next_slot]
            next_slot += 1
            rc = conn_open(&t.io, &s.conn, op.target, &cfg.targets[op.target])
            if rc < 0:
                conn_close(&s.conn)
                continue
            t.warming += 1
            s.state = ST_CONNECTING
            if rc == 0:
                warm_done(t, s, True)
        pthread_mutex_unlock(&t.lock)
        if t.warming == 0 and next_slot >= t.nsessions:
            break
        now = now_ns()
        if now >= deadline:
            break
        if warm_poll(t, deadline - now) < 0:
            break
    # past the deadline (or cancelled): what is still in flight is dropped
    for i in range(t.nsessions):
        s = &t.sessions[i]
        if s.state == ST_CONNECTING:
            conn_close(&s.conn)
            s.state = ST_FREE
    t.warming = 0
    return -1 if t.fatal_errno else 0


cdef void set_origin(config_t* cfg) noexcept nogil:
    """The last thread out of the warm-up: the schedule (and the run) count from now, or from
    the origin given to ``start``. A schedule that resumes at ``first_arrival`` (a takeover)
    is placed so that this arrival is due at the origin: its zero lies that far back."""
    cdef int64_t origin = cfg.origin_req if cfg.origin_fixed else now_ns()
    cdef int64_t skipped = 0
    cdef int32_t cursor = 0
    if cfg.first_arrival > 0:
        skipped = arrival_offset_ns(cfg, cfg.first_arrival, &cursor)
        if skipped < 0:
            skipped = cfg.total_ns      # the schedule is over before it: nothing is due
    cfg.start_ns = origin - skipped
    cfg.end_ns = sat_add(cfg.start_ns, cfg.total_ns)
    cfg.teardown_end_ns = sat_add(cfg.end_ns, cfg.request_timeout_ns)
    cfg.hard_end_ns = sat_add(cfg.end_ns, cfg.graceful_stop_ns)
    chaperon_store_int(&cfg.origin_ready, 1)
