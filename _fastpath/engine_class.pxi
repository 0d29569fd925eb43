# Included by engine.pyx: the Engine class, the Python face of the engine (see the module docstring).

# ------------------------------------------------------------------------------ Python API

def _check_int(name, value, int64_t minimum=0):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if value > INT64_MAX:
        raise ValueError(f"{name} is too large: {value}")
    return value


cdef class Engine:
    """HTTP/1.1 (and WebSocket) load generator, closed or open model; see the module docstring.

    Engine(targets, metric_keys, plan: PlanBuilder, options: EngineOptions)

    targets      [(ip literal, port)] (HTTP) or [(ip literal, port, tls, server_name)]:
                 with ``tls`` true, HTTPS to ``server_name`` (a host name, sent as SNI, or an
                 IP literal; None or "" = the target's IP), verified against it. ops index
                 them.
    metric_keys  [str]; ops index them (-1: not measured).
    plan         a ``PlanBuilder`` (engine_plan.pxi) holding the init, run and teardown ops;
                 the Engine checks its indexes against the above and ``options``, then takes
                 its op array over (a builder serves one Engine).
    options      an ``EngineOptions`` (engine_options.pxi), checked when it was made.

    The plan's ops, by builder method (``describe()`` shows them as tuples):
    http(target, metric, request_bytes, no_body)  a pre-rendered request.
    delay(delay_ns), random_delay(min_ns, max_ns)  (uniform in [min, max]).
    repeat(count, metric or -1), loop(duration_ns) ... end(): a block, whose body is the ops
                 added until its ``end()`` (nested 8 deep at most); see the module docstring.
    init() / run() / teardown(): the phase of the ops that follow (a plan starts in run).

    EngineOptions' keywords:
    sessions     closed model: concurrent sessions; open model: session slots (the cap on
                 concurrent sessions), both split evenly over the threads.
    threads      engine threads (at most ``sessions``).
    iterations   closed model: runs of the ops per session (0: until duration_ns); must be
                 0 (or 1) in the open model, where every arrival runs the ops once.
    duration_ns  closed model: 0 or the run's length; open model: the schedule's length
                 (required without stages; with stages 0 or their sum).
    arrival_rate_per_s  > 0 selects the open model: sessions started per second (or the
                 starting rate of ``rate_stages``).
    rate_stages  [(duration_ns, target_rate_per_s)]: a linear ramp per stage (open model).
    tls_ca_file  PEM bundle of the CAs TLS targets are verified with (None: the system's).
    tls_insecure no certificate verification at all (the CA file is then not loaded).
                 Both matter only when some target uses TLS; a CA file OpenSSL cannot load
                 is a ValueError here, with OpenSSL's reason.
    scenario_timeout_ns  0 (none), or the time each run of the scenario may take (closed
                 model: an iteration, the first one with the init ops; open model: init +
                 run, from arrival + start delay). Overruns are ended and counted in
                 ``stats()["sessions_timed_out"]``; their in-flight op is not an error.
    graceful_stop_ns  None (no cut), or how long ops in flight at the end of the duration may
                 finish; past it they are abandoned (dropped, not counted, not errors) and their
                 sessions end (teardown ops keep their own cut-off, end + request timeout).
    start_delay_ns, start_random_delay_ns  each session waits start_delay_ns + uniform
                 [0, start_random_delay_ns) before its first op (open model: after its
                 arrival; its latency counts from arrival + delay).
    The init ops run once per session before the first iteration, measured; the teardown
    ops once per session after the last iteration (also after a timed-out one, or the end
    of the duration: cut off at end + request timeout), NOT measured: their metric indices
    are validated, nothing is recorded for them. Skipped for a session that never ran an
    op; abandoned on cancel.

    The stateful language (``engine_state.pxi``, ``engine_ws.pxi``; plans that use none of
    it pay nothing for it). A *template* is a list of ``bytes`` (literal) and ``int`` (a
    variable slot >= 0, or VAR_SESSION_ID / VAR_ITERATION). Builder methods:
                 http_template(target, metric, head template (request line and header
                 lines, no blank line, no Content-Length), body template or None (then no
                 Content-Length), no_body, cookies, extract [(var, EX_JSON | EX_REGEX |
                 EX_HEADER | EX_STATUS | EX_BODY, expr bytes, optional)])
                 assign(var, template, metric) update_add(var, delta, metric) unset(var)
                 (the metric of an assign only counts its errors)
                 retry(retries, backoff_ns) ... end()  add_metric(metric, value, var or -1)
                 abort(metric)  python(metric, fn(dict) -> dict | None)
                 spawn(child) ... end() (async)  await_child(child, timeout_ns, metric)
                 await_all(timeout_ns, metric)  spread(first_child, count, interval_ns)
                 ... end()  signal(child or -1 (the parent), signal)
                 await_signal(signal, timeout_ns, metric)
                 ws_connect(conn, target, metric, head template)  ws_send(conn, metric,
                 opcode 1|2, template)  ws_recv(conn, metric, timeout_ns, var or -1)
                 ws_await_recv(conn, metric, timeout_ns, expected template)
                 ws_close(conn, metric). A timeout of 0 waits without one.
    var_names    (an option) the variables' names (slot = index; the python step sees them
                 by name).
    nchildren, nconns, nsignals  child slots, WebSocket connections and signal values per
                 session (at most 256, 16 and 64).
    max_capture  bytes of a response kept for extraction (and of queued WebSocket messages
                 per connection); default 1 MiB.
    session_id_base  closed model: sessions are numbered from it (VAR_SESSION_ID), across
                 the threads; open model: each arrival is numbered base + its index.
    first_arrival  open model: the schedule resumes at this arrival (a takeover of a lost
                 worker's share): arrivals before it are not this engine's, and arrival
                 ``first_arrival`` is due at the origin, the later ones at their own distance
                 from it. ``origin_ns`` is then the (past) time arrival 0 would have been due.
    Extraction failures, unset variables, abort, python errors and the timeouts of waits
    are fatal to the session (after any retry_on_error): counted as errors of kind
    extract, abort, python, timeout (or protocol/closed/connect for WebSockets) and in
    ``stats()["sessions_failed"]``; the session's teardown still runs.

    ``stats()``: sessions_started, sessions_completed (ended, timed out or not),
    sessions_dropped, sessions_timed_out, sessions_failed, requests_sent, responses and
    errors (measured ops only), iterations (completed runs of ``ops``).
    """

    def __cinit__(self):
        memset(&self.cfg, 0, sizeof(config_t))
        self.reqbuf = NULL
        self.sessions = NULL
        self.threads = NULL
        self.nthreads = 0
        self.py_threads = []

    def __init__(self, targets, metric_keys, PlanBuilder plan not None,
                 EngineOptions options not None):
        if self.initialized:
            raise RuntimeError("Engine is already initialized")
        addrs = [_parse_target(i, t) for i, t in enumerate(_as_list("targets", targets))]
        keys = [str(k) if isinstance(k, str) else _bad_key(i, k)
                for i, k in enumerate(_as_list("metric_keys", metric_keys))]
        var_names = list(options.var_names)
        limits = {"nvars": len(var_names), "nchildren": options.nchildren,
                  "nconns": options.nconns, "nsignals": options.nsignals}
        self._session_id_base = options.session_id_base
        plan._check_against(len(addrs), len(keys), limits["nvars"], limits["nchildren"],
                            limits["nconns"], limits["nsignals"])
        if plan.run_first < 0 or (plan.run_end if plan.run_end >= 0 else plan.nops) == plan.run_first:
            raise ValueError("ops must not be empty")
        stateful = plan.stateful
        self.var_names = var_names
        self._keep = []
        self.cfg.nvars = limits["nvars"]
        self.cfg.nchildren = limits["nchildren"]
        self.cfg.nconns = limits["nconns"]
        self.cfg.nsignals = limits["nsignals"]
        self.cfg.max_capture = options.max_capture
        self.cfg.session_id_base = self._session_id_base
        self.cfg.first_arrival = options.first_arrival
        self.cfg.stateful = 1 if stateful or self.cfg.nvars or self.cfg.nchildren else 0
        self.cfg.has_retry = plan.has_retry
        self.keys = keys
        self.duration_ns = options.duration_ns
        self._allocate(addrs, plan, options.sessions, options.threads, options.iterations,
                       options.connect_timeout_ns, options.request_timeout_ns,
                       options._stage_rows, options.tls_ca_file, options.tls_insecure)
        self.cfg.scenario_timeout_ns = options.scenario_timeout_ns
        self.cfg.start_delay_ns = options.start_delay_ns
        self.cfg.start_random_delay_ns = options.start_random_delay_ns
        self.cfg.graceful_stop_ns = (INT64_MAX if options.graceful_stop_ns is None
                                     else options.graceful_stop_ns)
        self.initialized = True

    cdef _allocate(self, list addrs, object builder, int32_t nsessions, int32_t nthreads,
                   int64_t iterations, int64_t connect_timeout_ns, int64_t request_timeout_ns,
                   list stages, object tls_ca_file, bint tls_insecure):
        cdef int32_t i, j, k, per, extra, first
        cdef char errbuf[TLS_ERRTEXT_SIZE]
        cdef const char* ca_path = NULL
        cdef bint any_tls = False
        cdef size_t total = 0
        cdef size_t off = 0
        cdef thread_t* t
        cdef bytes req
        cdef sockaddr_in* sin
        cdef sockaddr_in6* sin6
        cdef const unsigned char* packed
        cdef config_t* cfg = &self.cfg
        cdef op_t* o
        cdef PlanBuilder plan = builder
        plan._finish(self._keep, self.var_names, nthreads)
        cfg.ops = plan._take(&cfg.nops, &cfg.run_first, &cfg.run_end)    # ours to free now
        cfg.nmetrics = len(self.keys)
        cfg.iterations = iterations
        cfg.connect_timeout_ns = connect_timeout_ns
        cfg.request_timeout_ns = request_timeout_ns
        cfg.end_ns = INT64_MAX
        cfg.teardown_end_ns = INT64_MAX
        cfg.hard_end_ns = INT64_MAX
        cfg.nthreads = nthreads
        cfg.open_model = 1 if stages else 0
        cfg.warm_op = -1
        for i in range(cfg.run_end):
            if cfg.ops[i].kind == C_OP_HTTP:
                cfg.warm_op = i
                break
        cfg.total_ns = self.duration_ns if stages else 0
        if stages:
            cfg.stages = <stage_t*>calloc(len(stages), sizeof(stage_t))
            if cfg.stages == NULL:
                raise MemoryError()
            cfg.nstages = len(stages)
            for i, (start_ns, dur_ns, r0, r1, n0, n1) in enumerate(stages):
                cfg.stages[i].start_ns = start_ns
                cfg.stages[i].dur_ns = dur_ns
                cfg.stages[i].r0 = r0
                cfg.stages[i].r1 = r1
                cfg.stages[i].n0 = n0
                cfg.stages[i].n1 = n1

        cfg.targets = <target_t*>calloc(len(addrs) + 1, sizeof(target_t))  # may be empty
        for i in range(cfg.nops):
            if cfg.ops[i].req != NULL:
                total += cfg.ops[i].req_len
        self.reqbuf = <char*>calloc(total + 1, 1)
        # Each session is followed (per thread) by its child slots, if the plan has children.
        nslots = nsessions * (1 + cfg.nchildren)
        self.sessions = <session_t*>calloc(nslots, sizeof(session_t))
        self.threads = <thread_t*>calloc(nthreads, sizeof(thread_t))
        # fds must read -1 before anything can fail: _free closes what is >= 0
        if self.sessions != NULL:
            self.nsessions = nslots
            for i in range(nslots):
                conn_init(&self.sessions[i].conn, 0)    # owner: set with the index below
        if self.threads != NULL:
            self.nthreads = nthreads
            for i in range(nthreads):
                self.threads[i].io.epfd = -1
        if (cfg.targets == NULL or cfg.ops == NULL or self.reqbuf == NULL
                or self.sessions == NULL or self.threads == NULL):
            raise MemoryError()
        if cfg.stateful:
            self._allocate_state(nslots)

        for i, (family, packed_addr, port, scope_id, tls, name) in enumerate(addrs):
            if tls:
                any_tls = True
                cfg.targets[i].tls = 1
                memcpy(cfg.targets[i].server_name, PyBytes_AS_STRING(name), len(name) + 1)
            packed = packed_addr
            if family == 4:
                sin = <sockaddr_in*>&cfg.targets[i].addr
                sin.sin_family = AF_INET
                sin.sin_port = htons(port)
                memcpy(&sin.sin_addr, packed, 4)
                cfg.targets[i].addrlen = sizeof(sockaddr_in)
                cfg.targets[i].family = AF_INET
            else:
                sin6 = <sockaddr_in6*>&cfg.targets[i].addr
                sin6.sin6_family = AF_INET6
                sin6.sin6_port = htons(port)
                memcpy(&sin6.sin6_addr, packed, 16)
                sin6.sin6_scope_id = scope_id
                cfg.targets[i].addrlen = sizeof(sockaddr_in6)
                cfg.targets[i].family = AF_INET6

        # Plain requests side by side in one buffer (as the hot loop has always read them).
        for i in range(cfg.nops):
            o = &cfg.ops[i]
            if o.req != NULL:
                memcpy(self.reqbuf + off, o.req, o.req_len)
                o.req = self.reqbuf + off
                off += o.req_len
            if i >= cfg.run_end:
                o.metric = -1       # teardown: not measured

        per = nsessions // nthreads
        extra = nsessions % nthreads
        first = 0
        roots = 0       # sessions (not children) of the threads before this one
        for i in range(nthreads):
            t = &self.threads[i]
            t.cfg = cfg
            t.sessions = self.sessions + first
            t.nsessions = per + (1 if i < extra else 0)
            t.nslots = t.nsessions * (1 + cfg.nchildren)
            t.tid = i
            t.active = 0 if cfg.open_model else t.nsessions
            t.use_pwait2 = 1
            t.rng = int.from_bytes(os.urandom(8), "little") | 1   # xorshift needs a state != 0
            t.next_k = cfg.first_arrival + i
            t.next_due_ns = INT64_MAX
            for j in range(t.nslots):
                t.sessions[j].index = j
                t.sessions[j].conn.owner = j        # the epoll tag of its connections
                if cfg.stateful and cfg.nconns > 0:
                    for k in range(cfg.nconns):
                        (<ws_conn_t*>t.sessions[j].x.ws)[k].conn.owner = j
                if j >= t.nsessions:
                    t.sessions[j].state = ST_DONE       # a child slot, not started
                if cfg.stateful:
                    if j < t.nsessions:
                        t.sessions[j].x.parent = -1
                        t.sessions[j].x.child_base = t.nsessions + j * cfg.nchildren
                        t.sessions[j].x.session_id = self._session_id_base + roots + j
                    else:
                        t.sessions[j].x.parent = (j - t.nsessions) // cfg.nchildren
                        t.sessions[j].x.child_base = -1
            if cfg.stateful:
                t.ready = <uint32_t*>calloc(t.nslots + 1, sizeof(uint32_t))
                if t.ready == NULL:
                    raise MemoryError()
            first += t.nslots
            roots += t.nsessions
            if cfg.open_model:
                # every slot free; popped from the top, so slot 0 serves the first arrival
                t.free_slots = <uint32_t*>calloc(t.nsessions, sizeof(uint32_t))
                if t.free_slots == NULL:
                    raise MemoryError()
                for j in range(t.nsessions):
                    t.sessions[j].state = ST_FREE
                    t.free_slots[j] = t.nsessions - 1 - j
                t.nfree = t.nsessions
            if pthread_mutex_init(&t.lock, NULL) != 0:
                raise MemoryError()
            t.lock_ok = 1
            t.heap = <heap_ent*>calloc(t.nslots + 1, sizeof(heap_ent))
            t.rbuf = <unsigned char*>calloc(RBUF_SIZE, 1)
            t.events = <epoll_event*>calloc(MAX_EVENTS, sizeof(epoll_event))
            t.stats[0] = <mstats_t*>calloc(cfg.nmetrics + 1, sizeof(mstats_t))
            t.stats[1] = <mstats_t*>calloc(cfg.nmetrics + 1, sizeof(mstats_t))
            if (t.heap == NULL or t.rbuf == NULL or t.events == NULL or t.stats[0] == NULL
                    or t.stats[1] == NULL):
                raise MemoryError()
            for j in range(cfg.nmetrics):
                if (hdr_core_init(&t.stats[0][j].hist, 1, HIST_HIGHEST, 3) != 0
                        or hdr_core_init(&t.stats[1][j].hist, 1, HIST_HIGHEST, 3) != 0):
                    raise MemoryError()
                if cfg.open_model and (
                        hdr_core_init(&t.stats[0][j].service, 1, HIST_HIGHEST, 3) != 0
                        or hdr_core_init(&t.stats[1][j].service, 1, HIST_HIGHEST, 3) != 0):
                    raise MemoryError()

        # One SSL_CTX per thread (no lock shared between threads), only if some target is HTTPS.
        if any_tls:
            if tls_ca_file is not None and not tls_insecure:
                ca_path = tls_ca_file
            for i in range(nthreads):
                self.threads[i].io.ssl_ctx = tls_ctx_new(ca_path, tls_insecure, errbuf, sizeof(errbuf))
                if self.threads[i].io.ssl_ctx == NULL:
                    where = "" if ca_path == NULL else f"tls_ca_file={os.fsdecode(tls_ca_file)!r}: "
                    raise ValueError(where + errbuf.decode(errors="replace"))

    cdef _allocate_state(self, int32_t nslots):
        """An ``sx_t`` per slot: variables (unset), signal counters; buffers come later."""
        cdef int32_t i, j
        cdef sx_t* x
        self.sx = <sx_t*>calloc(nslots, sizeof(sx_t))
        if self.sx == NULL:
            raise MemoryError()
        for i in range(nslots):
            x = &self.sx[i]
            self.sessions[i].x = x
            x.vars = <var_t*>calloc(self.cfg.nvars + 1, sizeof(var_t))
            x.sigs = <int32_t*>calloc(self.cfg.nsignals + 1, sizeof(int32_t))
            if x.vars == NULL or x.sigs == NULL:
                raise MemoryError()
            for j in range(self.cfg.nvars):
                x.vars[j].len = -1
            if self.cfg.nconns > 0 and ws_alloc(&self.cfg, x) != 0:
                raise MemoryError()

    cdef void _free(self) noexcept:
        """The one place engine memory is released (threads must have ended)."""
        cdef int32_t i, j, b
        cdef thread_t* t
        if self.threads != NULL:
            for i in range(self.nthreads):
                t = &self.threads[i]
                if t.io.epfd >= 0:
                    close(t.io.epfd)
                if t.lock_ok:
                    pthread_mutex_destroy(&t.lock)
                for b in range(2):
                    if t.stats[b] != NULL:
                        for j in range(self.cfg.nmetrics):
                            hdr_core_free(&t.stats[b][j].hist)
                            hdr_core_free(&t.stats[b][j].service)
                        free(t.stats[b])
                free(t.heap)
                free(t.ready)
                free(t.free_slots)
                free(t.rbuf)
                free(t.events)
        if self.sessions != NULL:
            for i in range(self.nsessions):
                conn_free(&self.sessions[i].conn)   # the SSL and the resumable session
                if self.sessions[i].x != NULL:
                    sx_free(&self.cfg, self.sessions[i].x)
            free(self.sessions)
            self.sessions = NULL
        free(self.sx)
        self.sx = NULL
        if self.threads != NULL:
            for i in range(self.nthreads):
                tls_ctx_free(self.threads[i].io.ssl_ctx)   # after every SSL made from it
            free(self.threads)
            self.threads = NULL
        free(self.cfg.ops)
        self.cfg.ops = NULL
        free(self.cfg.targets)
        self.cfg.targets = NULL
        free(self.cfg.stages)
        self.cfg.stages = NULL
        free(self.reqbuf)
        self.reqbuf = NULL

    def __dealloc__(self):
        self._free()

    def start(self, origin_ns=None) -> None:
        """Start the engine threads and return at once.

        ``origin_ns`` (``time.monotonic_ns()``'s clock, CLOCK_MONOTONIC) is the time the run
        and its arrival schedule count from; default now (closed model) or the end of the
        warm-up (open model: the threads connect every slot first; see the module docstring
        and ``Engine.origin_ns``). It may lie in the past (e.g. one origin shared by several
        engines): arrivals already due start at once, late, and their lateness is in their
        latency (in the open model that includes the warm-up)."""
        cdef int32_t i
        cdef int64_t now
        self._check_open()
        if self.started:
            raise RuntimeError("Engine.start() called twice")
        if origin_ns is not None:
            origin_ns = _check_int("origin_ns", origin_ns, 0)
            if origin_ns > now_ns():
                raise ValueError(f"origin_ns={origin_ns} is in the future (now is {now_ns()})")
        _raise_nofile_limit(self.nsessions + self.nthreads + 64)
        for i in range(self.nthreads):
            if self.threads[i].io.epfd < 0:    # a failed start() may be retried
                self.threads[i].io.epfd = epoll_create1(EPOLL_CLOEXEC)
            if self.threads[i].io.epfd < 0:
                raise OSError(errno, "epoll_create1 failed")
        if self.cfg.open_model:
            # the threads warm up first; the last one sets the origin and the end (set_origin)
            self.cfg.origin_fixed = origin_ns is not None
            self.cfg.origin_req = 0 if origin_ns is None else origin_ns
            self.cfg.warm_pending = self.nthreads
            self.cfg.origin_ready = 0
        else:
            now = now_ns() if origin_ns is None else origin_ns
            self.cfg.start_ns = now
            if self.duration_ns > 0:
                self.cfg.end_ns = now + self.duration_ns if self.duration_ns < INT64_MAX - now else INT64_MAX
                self.cfg.teardown_end_ns = sat_add(self.cfg.end_ns, self.cfg.request_timeout_ns)
                self.cfg.hard_end_ns = sat_add(self.cfg.end_ns, self.cfg.graceful_stop_ns)
            self.cfg.origin_ready = 1
        self.started = True
        self.py_threads = [
            threading.Thread(target=self._run_thread, args=(i,), name=f"chaperon-engine-{i}", daemon=True)
            for i in range(self.nthreads)
        ]
        for th in self.py_threads:
            th.start()

    @property
    def origin_ns(self):
        """The time (CLOCK_MONOTONIC ns) the run and its schedule count from, or None before it
        is set: at ``start`` in the closed model; in the open model after the warm-up (or the
        ``origin_ns`` given to ``start``)."""
        if not self.started or self.threads == NULL or not chaperon_load_int(&self.cfg.origin_ready):
            return self._final_origin_ns
        return self.cfg.start_ns

    def _run_thread(self, int32_t i) -> None:
        cdef thread_t* t = &self.threads[i]
        with nogil:
            thread_loop(t)

    def cancel(self) -> None:
        """Ask every thread to stop now (in-flight requests are abandoned); returns at once."""
        if self.threads != NULL:
            chaperon_store_int(&self.cfg.cancel, 1)

    def wait(self, timeout_s=None) -> bool:
        """Block (GIL released) until every thread has ended, or timeout_s; True if all ended."""
        if not self.started:
            raise RuntimeError("Engine.wait() before start()")
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for th in self.py_threads:
            if deadline is None:
                th.join()
            else:
                th.join(max(0.0, deadline - time.monotonic()))
        if not all(not th.is_alive() for th in self.py_threads):
            return False
        self._raise_fatal()
        return True

    cdef _raise_fatal(self):
        cdef int32_t i
        if self.threads == NULL:
            return
        for i in range(self.nthreads):
            if self.threads[i].fatal_errno:
                raise OSError(self.threads[i].fatal_errno, f"engine thread {i}: epoll_wait failed")

    @property
    def done(self) -> bool:
        return self.started and all(not th.is_alive() for th in self.py_threads)

    def stats(self) -> dict:
        """Counters summed over threads (a racy but consistent-enough snapshot)."""
        cdef int32_t i
        cdef thread_t* t
        if self.threads == NULL:
            return dict(self.final_stats) if self.final_stats is not None else _zero_stats()
        out = _zero_stats()
        for i in range(self.nthreads):
            t = &self.threads[i]
            out["sessions_started"] += t.sessions_started
            out["sessions_completed"] += t.sessions_completed
            out["requests_sent"] += t.requests_sent
            out["responses"] += t.responses
            out["iterations"] += t.iterations
            out["errors"] += t.errors
            out["sessions_dropped"] += t.sessions_dropped
            out["sessions_timed_out"] += t.sessions_timed_out
            out["sessions_failed"] += t.sessions_failed
        return out

    @property
    def tls_error(self):
        """The text of the latest TLS failure (handshake, verification ...) in any thread, or
        None: why ops were counted as ``tls`` (or as closed/reset during a handshake)."""
        cdef int32_t i
        cdef thread_t* t
        cdef char text[TLS_ERRTEXT_SIZE]
        if self.threads == NULL:
            return self._final_tls_error
        for i in range(self.nthreads):
            t = &self.threads[i]
            if not t.lock_ok:
                continue
            with nogil:
                pthread_mutex_lock(&t.lock)
                memcpy(text, t.io.tls_error, TLS_ERRTEXT_SIZE)
                pthread_mutex_unlock(&t.lock)
            text[TLS_ERRTEXT_SIZE - 1] = 0
            if text[0] != 0:
                return text.decode(errors="replace")
        return None

    def swap(self) -> list:
        """The metrics since the previous swap, merged over threads:
        [(key, latency Histogram, count, errors, {kind: n} for kinds with n > 0,
        service-time Histogram)], idle keys left out. Latency is corrected (from the intended
        start); the service time is from the actual start. In the closed model they are equal
        (the second is a copy)."""
        cdef int32_t i, j, k, nthreads
        cdef thread_t* t
        cdef thread_t* threads
        cdef mstats_t* m
        cdef Histogram hist, service
        cdef int64_t count, errors
        cdef int64_t by_kind[NKINDS]
        if self.threads == NULL:
            return []
        # Flip every thread's buffer; each waits at most for the batch it is processing (the
        # first batch may be 10k connects), so wait without the GIL.
        threads = self.threads
        nthreads = self.nthreads
        with nogil:
            for i in range(nthreads):
                t = &threads[i]
                pthread_mutex_lock(&t.lock)
                t.cur ^= 1
                pthread_mutex_unlock(&t.lock)
        out = []
        for j in range(self.cfg.nmetrics):
            count = 0
            errors = 0
            memset(by_kind, 0, sizeof(by_kind))
            hist = None
            service = None
            for i in range(self.nthreads):
                t = &self.threads[i]
                m = &t.stats[t.cur ^ 1][j]
                if m.count == 0 and m.errors == 0:
                    continue
                if m.hist.total_count > 0:
                    if hist is None:
                        hist = Histogram()
                    hdr_core_add(&hist.core, &m.hist)
                    hdr_core_reset(&m.hist)
                if m.service.total_count > 0:
                    if service is None:
                        service = Histogram()
                    hdr_core_add(&service.core, &m.service)
                    hdr_core_reset(&m.service)
                count += m.count
                errors += m.errors
                for k in range(NKINDS):
                    by_kind[k] += m.by_kind[k]
                m.count = 0
                m.errors = 0
                memset(m.by_kind, 0, sizeof(m.by_kind))
            if count == 0 and errors == 0:
                continue
            if hist is None:
                hist = Histogram()
            if service is None:
                service = Histogram() if self.cfg.open_model else hist.copy()
            out.append((self.keys[j], hist, count, errors,
                        {ERROR_KINDS[k]: by_kind[k] for k in range(NKINDS) if by_kind[k]},
                        service))
        return out

    def close(self) -> None:
        """Cancel and join the threads if running, then free everything. Idempotent."""
        if self.closed:
            return
        if self.started:
            self.cancel()
            for th in self.py_threads:
                th.join()
        if self.threads != NULL:
            self.final_stats = self.stats()
            self._final_tls_error = self.tls_error
            self._final_origin_ns = self.origin_ns
        self._free()
        self.closed = True

    cdef _check_open(self):
        if self.closed:
            raise RuntimeError("Engine is closed")
        if not self.initialized:
            raise RuntimeError("Engine.__init__ was not called")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
