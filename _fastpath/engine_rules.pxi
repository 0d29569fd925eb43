# Included by engine.pyx: the session rules: start delays, init -> run -> teardown, scenario timeout, the end of the run (see the module docstring).

# ------------------------------------------------------------------------------ session rules
# The slow paths of a session's life: start delay, init -> run -> teardown, scenario timeout,
# the end of the run. The per-request path only compares ``op_index`` with ``op_end`` and
# ``now`` with ``stop_ns``; everything else happens here.

cdef inline int64_t sat_add(int64_t a, int64_t b) noexcept nogil:
    """a + b for b >= 0, saturated at INT64_MAX."""
    return INT64_MAX if b > INT64_MAX - a else a + b


cdef inline uint64_t rng_next(thread_t* t) noexcept nogil:
    """xorshift64* (Vigna): cheap and good enough to spread start times."""
    cdef uint64_t x = t.rng
    x ^= x >> 12
    x ^= x << 25
    x ^= x >> 27
    t.rng = x
    return x * <uint64_t>0x2545F4914F6CDD1D


cdef inline int64_t rng_below(thread_t* t, int64_t n) noexcept nogil:
    """Uniform in [0, n), n > 0 (53 random bits scaled; exact enough for delays)."""
    cdef int64_t r = <int64_t>(<double>(rng_next(t) >> 11) * (1.0 / 9007199254740992.0) * <double>n)
    return r if r < n else n - 1


cdef inline void set_window(thread_t* t, session_t* s, int64_t start_ns) noexcept nogil:
    """A run of the scenario (re)starts: its scenario-timeout window counts from start_ns."""
    cdef config_t* cfg = t.cfg
    s.run_deadline_ns = INT64_MAX
    if cfg.scenario_timeout_ns > 0:
        s.run_deadline_ns = sat_add(start_ns, cfg.scenario_timeout_ns)
    s.stop_ns = cfg.end_ns if cfg.end_ns < s.run_deadline_ns else s.run_deadline_ns


cdef void sess_begin(thread_t* t, session_t* s, int64_t now, int64_t intended) noexcept nogil:
    """The session's first op is due (intended at ``intended``): init ops first, if any."""
    cdef config_t* cfg = t.cfg
    s.state = ST_IDLE
    s.iters = 0
    s.op_index = 0
    s.depth = 0
    if cfg.run_first > 0:
        s.phase = PH_INIT
        s.op_end = cfg.run_first
    else:
        s.phase = PH_RUN
        s.op_end = cfg.run_end
    s.fresh = cfg.open_model
    s.intended_ns = intended
    if s.x != NULL:
        sx_reset(t, s)
    set_window(t, s, intended)
    sess_run(t, s, now)


cdef void sess_start(thread_t* t, session_t* s, int64_t now, int64_t base) noexcept nogil:
    """A session starts (closed model: at the run's start; open model: at its arrival, due at
    ``base``): it waits its start delay in the heap, then begins."""
    cdef config_t* cfg = t.cfg
    cdef int64_t delay = cfg.start_delay_ns
    if cfg.start_random_delay_ns > 0:
        delay += rng_below(t, cfg.start_random_delay_ns)
    if delay > 0:
        s.state = ST_STARTING
        s.intended_ns = sat_add(base, delay)
        heap_push(t, s.intended_ns if s.intended_ns < cfg.end_ns else cfg.end_ns, s.index)
        return
    sess_begin(t, s, now, base)


cdef bint sess_finish(thread_t* t, session_t* s, int64_t now) noexcept nogil:
    """The session's last run is over (done, timed out, or stopped by the end): teardown ops
    if there are any and the session ran an op, else the end. True if the session ended."""
    cdef config_t* cfg = t.cfg
    if (cfg.run_end < cfg.nops and now < cfg.teardown_end_ns
            and (s.iters > 0 or s.op_index > 0)):
        s.phase = PH_TEARDOWN
        s.op_index = cfg.run_end
        s.op_end = cfg.nops
        s.depth = 0
        s.run_deadline_ns = cfg.teardown_end_ns
        s.stop_ns = cfg.teardown_end_ns
        s.intended_ns = now
        s.fresh = 0
        return False
    end_session(t, s)
    return True


cdef bint sess_stop(thread_t* t, session_t* s, int64_t now) noexcept nogil:
    """``now >= s.stop_ns`` and no op is in flight (between two ops, or one just abandoned):
    the scenario timeout, the end of the run, or teardown's cut-off. True if the session
    ended; False if it goes on (a new iteration or its teardown) with a valid op_index."""
    cdef config_t* cfg = t.cfg
    s.state = ST_IDLE
    if s.phase == PH_CHILD:
        child_finish(t, s, now)
        return True
    if s.phase == PH_TEARDOWN:
        end_session(t, s)       # past end_ns + request timeout: the rest is abandoned
        return True
    if now >= s.run_deadline_ns:
        # This run overran: it counts as a run (towards ``iterations``) but not a completed one.
        t.sessions_timed_out += 1
        s.iters += 1
        if cfg.open_model or (cfg.iterations > 0 and s.iters >= cfg.iterations) or now >= cfg.end_ns:
            return sess_finish(t, s, now)
        s.phase = PH_RUN
        s.op_index = cfg.run_first
        s.op_end = cfg.run_end
        s.depth = 0
        s.intended_ns = now
        set_window(t, s, now)
        return False
    return sess_finish(t, s, now)   # the end of the run


cdef bint sess_phase_end(thread_t* t, session_t* s) noexcept nogil:
    """The init or teardown ops are done (an iteration's end is inline in ``sess_run``).
    True if the session ended."""
    if s.phase == PH_INIT:
        s.phase = PH_RUN                # op_index == run_first already
        s.op_end = t.cfg.run_end
        return False
    if s.phase == PH_CHILD:
        child_finish(t, s, now_ns())
        return True
    end_session(t, s)
    return True


cdef void sess_abandon(thread_t* t, session_t* s, int64_t now) noexcept nogil:
    """The in-flight op ran past ``run_deadline_ns`` (scenario timeout, or teardown's cut-off):
    drop its connection without counting an error, and stop."""
    conn_close(&s.conn)
    if not sess_stop(t, s, now):
        sess_run(t, s, now)
