# cython: language_level=3
"""Data layout of the request engine (``engine.pyx``): plan, schedule, sessions, threads, metrics.

Everything here is plain C memory owned by ``Engine`` and freed in ``Engine._free``; so are
the OpenSSL objects it points to (one ``SSL_CTX`` per thread, one ``SSL`` per TLS connection,
one resumable ``SSL_SESSION`` per session slot: see ``tls.pxd`` for who frees what).
"""

from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t

from _fastpath.histogram cimport hdr_core
from _fastpath.http1 cimport h1_parser
from _fastpath.includes.epoll cimport epoll_event
from _fastpath.includes.pthread cimport pthread_mutex_t
from _fastpath.includes.socket cimport sockaddr_storage, socklen_t
from _fastpath.includes.openssl cimport SSL_CTX
from _fastpath.tls cimport tls_conn, tls_resume, TLS_ERRTEXT_SIZE
from _fastpath.extract cimport jp_step
from _fastpath.includes.regex cimport regex_t


cdef enum:
    K_CONNECT = 0
    K_TIMEOUT = 1
    K_RESET = 2
    K_CLOSED = 3        # EOF before the response was complete (or an unparsable response)
    K_4XX = 4
    K_5XX = 5
    K_TLS = 6           # handshake, certificate verification or TLS protocol failure
    K_EXTRACT = 7       # an extraction found nothing, or a template used an unset variable
    K_ABORT = 8         # an abort step
    K_PROTOCOL = 9      # WebSocket handshake or framing violation
    K_PYTHON = 10       # a python step raised
    NKINDS = 11

cdef enum:
    ST_IDLE = 0
    ST_CONNECTING = 1
    ST_WRITING = 2
    ST_READING = 3
    ST_DELAY = 4        # parked in the heap by a delay op
    ST_YIELD = 5        # parked in the heap to let the loop breathe (many ops failed at once)
    ST_DONE = 6
    ST_FREE = 7         # open model: an unused slot (it may keep a keep-alive connection)
    ST_HANDSHAKING = 8  # TLS handshake after the TCP connect (under the connect deadline)
    ST_STARTING = 9     # parked in the heap by the session's start delay (no op run yet)
    ST_WAIT = 10        # waiting for a child, a signal or a WebSocket message (scanned: deadline_ns)
    ST_WS = 11          # a WebSocket connect, send or close in flight (scanned: deadline_ns)

# Which ops a session is running (``op_end`` is the end of that phase's slice of ``ops``).
cdef enum:
    PH_RUN = 0          # the scenario's ops, over and over (closed model) or once (open model)
    PH_INIT = 1         # init ops, once before the first iteration (measured)
    PH_TEARDOWN = 2     # teardown ops, once after the last iteration (not measured)
    PH_CHILD = 3        # a child session (async, cc_spread): its body, once

cdef enum:
    C_OP_HTTP = 1
    C_OP_DELAY = 2
    C_OP_RANDOM_DELAY = 3
    C_OP_REPEAT = 4
    C_OP_LOOP = 5
    C_OP_ASSIGN = 6
    C_OP_UPDATE_ADD = 7
    C_OP_UNSET = 8
    C_OP_RETRY = 9
    C_OP_ADD_METRIC = 10
    C_OP_ABORT = 11
    C_OP_PYTHON = 12
    C_OP_ASYNC = 13
    C_OP_AWAIT = 14
    C_OP_AWAIT_ALL = 15
    C_OP_SPREAD = 16
    C_OP_SIGNAL = 17
    C_OP_AWAIT_SIGNAL = 18
    C_OP_WS_CONNECT = 19
    C_OP_WS_SEND = 20
    C_OP_WS_RECV = 21
    C_OP_WS_AWAIT_RECV = 22
    C_OP_WS_CLOSE = 23
    C_VAR_SESSION_ID = -1
    C_VAR_ITERATION = -2
    W_CHILD = 1         # ST_WAIT: for child ``wait_arg`` to end
    W_ALL = 2           # for every child to end
    W_SIGNAL = 3        # for signal ``wait_arg``
    W_WS = 4            # for a message on connection ``wait_arg`` (ws_recv, ws_await_recv)
    W_SLOT = 5          # for child ``wait_arg`` to end before it is started again
    MAX_DEPTH = 8       # nesting of repeat/loop bodies (frames per session)
    MAX_EVENTS = 512
    RBUF_SIZE = 65536
    SERVER_NAME_SIZE = 256  # a DNS name is at most 253 characters
    MAX_WAIT_MS = 50
    MAX_STEPS = 32      # ops one session may run synchronously before it yields
    ARRIVAL_BATCH = 4096  # arrivals one wake may start before I/O gets its turn again
    WARM_WINDOW = 256   # open model warm-up: connects (and handshakes) in flight per thread
    JAR_SIZE = 4096     # cookie jar (the Cookie header's value) per session
    MAX_VAR_BYTES = 1048576  # a variable's value at most

cdef extern from *:
    """
    #define CHAPERON_SCAN_NS 10000000LL
    #define CHAPERON_HIST_HIGHEST 3600000000LL
    #define CHAPERON_SPIN_NS 10000LL
    #define CHAPERON_TIMER_SLACK_NS 1000L
    """
    const int64_t SCAN_NS "CHAPERON_SCAN_NS"
    const int64_t HIST_HIGHEST "CHAPERON_HIST_HIGHEST"
    # a timer due sooner than this is treated as due (a sleep that short costs more than it saves)
    const int64_t SPIN_NS "CHAPERON_SPIN_NS"
    # timer slack of an open-model engine thread (the kernel's default is 50 us)
    const long TIMER_SLACK_NS "CHAPERON_TIMER_SLACK_NS"


# A template: literal bytes and variables, in order (``engine_state.pxi``).
cdef struct part_t:
    const char* data        # a literal; NULL: the variable ``var``
    int64_t len
    int32_t var             # slot >= 0, or C_VAR_SESSION_ID / C_VAR_ITERATION

cdef struct tmpl_t:
    part_t* parts
    int32_t nparts

cdef struct extract_t:
    int32_t var
    int32_t kind            # EX_* (engine.pyx)
    int32_t optional
    int32_t nsteps          # JSON path
    jp_step* steps
    regex_t** re            # regex: one compiled copy per thread (glibc's regexec locks
                            # each regex_t), owned by Engine._keep
    const char* name        # header name
    size_t name_len

cdef struct op_t:
    int32_t kind
    int32_t target
    int32_t metric          # -1: not measured (teardown ops): no latency, count or error
    int32_t no_body
    const char* req         # plain HTTP: the request; NULL for a templated one
    size_t req_len
    int64_t delay_ns        # DELAY; RANDOM_DELAY: the minimum; RETRY: backoff; waits: timeout
    int64_t arg             # REPEAT: count; LOOP: duration_ns; RANDOM_DELAY: max - min; ...
    int32_t body_end        # REPEAT/LOOP/RETRY/ASYNC/SPREAD: the body is (index, body_end)
    int32_t a               # variable slot, child, connection, signal or opcode (per kind)
    int32_t b
    int32_t has_body        # templated HTTP: ``body`` is sent with a Content-Length
    int32_t cookies         # HTTP: the session's cookie jar is sent and updated
    int32_t nextract
    tmpl_t head             # templated HTTP head, ASSIGN value, WS connect head, WS payload
    tmpl_t body             # templated HTTP body; WS_AWAIT_RECV: expected message
    extract_t* extract
    void* pyfunc            # PYTHON: the callable (a borrowed reference: Engine keeps it)

cdef struct target_t:
    sockaddr_storage addr
    socklen_t addrlen
    int family
    int32_t tls                         # HTTPS: a TLS handshake follows the TCP connect
    char server_name[SERVER_NAME_SIZE]  # TLS: SNI (host names only) and the verified identity

cdef struct mstats_t:
    hdr_core hist           # latency: completion - intended start (== service in the closed model)
    hdr_core service        # open model only: completion - actual start (counts NULL otherwise)
    int64_t count
    int64_t errors
    int64_t by_kind[NKINDS]

# One stage of the arrival schedule: the rate goes linearly from r0 to r1 (per ns) over dur_ns;
# n0 arrivals are due before it starts, n1 before it ends (the integral of the rate).
cdef struct stage_t:
    int64_t start_ns        # offset from the engine start
    int64_t dur_ns
    double r0
    double r1
    double n0
    double n1

cdef struct config_t:
    op_t* ops               # init ops, then the run ops, then the teardown ops
    int32_t nops            # all of them
    int32_t run_first       # = the number of init ops
    int32_t run_end         # the teardown ops are [run_end, nops)
    int32_t nmetrics
    target_t* targets
    int64_t iterations
    int64_t start_ns
    int64_t end_ns
    int64_t connect_timeout_ns
    int64_t request_timeout_ns
    int32_t open_model
    int32_t nthreads        # arrival k goes to thread k % nthreads
    stage_t* stages
    int32_t nstages
    int64_t total_ns        # open model: length of the schedule
    int64_t scenario_timeout_ns     # 0: none
    int64_t start_delay_ns
    int64_t start_random_delay_ns
    int64_t teardown_end_ns # end_ns + request_timeout_ns (saturated): the cut-off of teardowns
    int cancel
    # Open model warm-up: the threads connect their slots, then the last one to finish sets
    # start_ns/end_ns/teardown_end_ns and publishes them with ``origin_ready`` (release).
    int32_t warm_op         # the first HTTP op of init + run (its target is warmed), -1: none
    int32_t origin_fixed    # start(origin_ns) was given one: start_ns = origin_req
    int64_t origin_req
    int warm_pending        # threads still warming up (atomic)
    int origin_ready        # start_ns and the end are set (atomic; always 1 in the closed model)
    # The stateful language (engine_state.pxi); all 0 for plain plans (no ``sx_t`` then).
    int32_t stateful        # sessions carry an ``sx_t``
    int32_t nvars
    int32_t nchildren       # child slots per session
    int32_t nconns          # WebSocket connections per session
    int32_t nsignals
    int32_t has_retry       # some op is a RETRY: errors look for a retry frame
    size_t max_capture      # bytes of a response kept for extraction
    int64_t session_id_base # the first session's (or arrival's) number

# A running repeat/loop body (``session_t.frames``). ``op`` is the REPEAT/LOOP op's index: the
# body is [op + 1, ops[op].body_end).
cdef struct frame_t:
    int64_t left            # REPEAT: iterations still to run after this one; LOOP: its deadline
    int64_t iter_start_ns   # start of the current iteration (traced repeat)
    int32_t op

cdef struct session_t:
    int fd
    int32_t state
    int32_t op_index
    int32_t target          # target of the open connection, -1 without one
    int32_t epout           # EPOLLOUT is armed
    uint32_t index          # within its thread
    int32_t fresh           # open model: arrived, first op not started (exempt from stop_ns)
    int32_t phase           # PH_*
    int32_t op_end          # end of the current phase's ops, or of the innermost body
    int32_t depth           # frames in use (0: not inside a repeat/loop body)
    int64_t iters
    int64_t stop_ns         # between two ops, stop (slow path) from then on: the earlier of
                            # end_ns and run_deadline_ns (teardown: teardown_end_ns)
    int64_t run_deadline_ns # scenario timeout of the current run (INT64_MAX: none); in
                            # teardown, teardown_end_ns. In-flight ops past it are abandoned.
    int64_t op_start_ns     # actual start of the current op (connect or send)
    int64_t intended_ns     # intended start of the current op (arrival, or previous completion + delays)
    int64_t deadline_ns     # of the in-flight phase (connect or request)
    size_t wpos
    h1_parser parser
    # TLS (unused by plain targets: ``tls.ssl`` stays NULL). The session array never moves,
    # as tls.pxd requires while an SSL lives.
    tls_conn tls
    tls_resume resume       # the last session the server offered, tag = target index
    frame_t frames[MAX_DEPTH]
    const char* req         # the request being written: op.req, or rendered into x.wbuf
    size_t req_len
    int32_t failed          # an error was recorded since the last op began (retry_on_error)
    sx_t* x                 # NULL for plain plans

cdef struct var_t:
    char* data              # malloc'd, grown by realloc; freed in Engine._free
    int64_t len             # -1: unset
    int64_t cap

# The stateful part of a session (only when ``config_t.stateful``): variables, the buffer a
# templated request or frame is rendered into, the captured response, the cookie jar,
# WebSocket connections, received signals and the parent/child links. Owned by Engine.
cdef struct sx_t:
    var_t* vars
    char* wbuf
    size_t wcap
    char* cap               # the response being captured (extraction, cookies), NUL-terminated
    size_t cap_len
    size_t cap_size
    int32_t capturing
    int32_t capture_over    # more than max_capture arrived: the rest was not kept
    char* jar               # Cookie header value, JAR_SIZE bytes
    size_t jar_len
    void* ws                # ws_conn_t[nconns] (engine_ws.pxi)
    int32_t* sigs           # received, not yet awaited, per signal value
    int32_t parent          # the parent's index in the thread (children), -1 for a session
    int32_t child_base      # index of child 0 in the thread (sessions), -1 for children
    int32_t child_end       # children: the end of their body
    int32_t running         # children: started and not ended
    int32_t wait_kind       # ST_WAIT: W_*
    int32_t wait_arg
    int32_t queued          # on the thread's ready stack
    int32_t spread_first    # waiting for a cc_spread: its children [first, first + count)
    int32_t spread_count
    int64_t session_id      # unique within the engine

# A session has at most one heap entry, exactly while it is DELAY, YIELD or STARTING; only the
# entry's wake-up moves it on (it wakes early, at its stop_ns, to be stopped), so no entry is
# ever stale and the heap never holds more than ``nsessions`` entries.
cdef struct heap_ent:
    int64_t wake_ns
    uint32_t index

cdef struct thread_t:
    config_t* cfg
    session_t* sessions
    int32_t nsessions       # sessions (closed) or slots (open); children follow them
    int32_t nslots          # nsessions * (1 + nchildren)
    int32_t tid             # the thread's number (0 .. nthreads - 1)
    uint32_t* ready         # stack of sessions woken by another one (child end, signal)
    int32_t children        # child sessions running
    int32_t nready
    int32_t active
    int epfd
    int32_t cur             # stats[cur] is recorded into; flipped by swap under ``lock``
    mstats_t* stats[2]
    mstats_t* rec
    pthread_mutex_t lock
    int lock_ok
    heap_ent* heap
    int32_t heap_len
    unsigned char* rbuf
    epoll_event* events
    int use_pwait2          # epoll_pwait2 (ns timeout) works; cleared on ENOSYS
    int64_t next_scan_ns
    uint64_t rng            # xorshift64* state of the start delays (never 0)
    uint32_t* free_slots    # open model: stack of free session indices
    int32_t nfree
    int32_t stage           # stage of the next arrival
    int64_t next_k          # global index of this thread's next arrival
    int64_t next_due_ns     # its due time (absolute), INT64_MAX when the schedule is over
    int64_t sessions_dropped
    int64_t sessions_timed_out
    int64_t sessions_failed
    int64_t sessions_started
    int64_t sessions_completed
    int64_t requests_sent
    int64_t responses
    int64_t iterations
    int64_t errors
    int32_t warming         # open model warm-up: slots whose connect/handshake is in flight
    int fatal_errno
    int done
    SSL_CTX* ssl_ctx        # NULL when no target uses TLS
    char tls_error[TLS_ERRTEXT_SIZE]    # text of the latest TLS failure (diagnostics)


cdef class Engine:
    cdef config_t cfg
    cdef char* reqbuf
    cdef session_t* sessions
    cdef int32_t nsessions
    cdef thread_t* threads
    cdef int32_t nthreads
    cdef int64_t duration_ns
    cdef bint initialized
    cdef bint started
    cdef bint closed
    cdef list keys
    cdef list py_threads
    cdef dict final_stats
    cdef object _final_tls_error
    cdef object _final_origin_ns
    cdef sx_t* sx
    cdef int64_t _session_id_base
    cdef list var_names
    cdef list _keep             # Python objects ops point into (templates, regexes, callables)

    cdef _allocate(self, list addrs, list plan, int32_t ninit, int32_t nteardown,
                   int32_t nsessions, int32_t nthreads,
                   int64_t iterations, int64_t connect_timeout_ns, int64_t request_timeout_ns,
                   list stages, object tls_ca_file, bint tls_insecure)
    cdef _allocate_state(self, int32_t nslots)
    cdef void _free(self) noexcept
    cdef _raise_fatal(self)
    cdef _check_open(self)
