# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The request engine: HTTP/1.1 (and HTTPS) sessions over non-blocking sockets and epoll, GIL
released.

Theory of operation
-------------------
The worker compiles a scenario into a *plan*: a flat array of ops, each an HTTP request
(pre-rendered bytes, a target and a metric index), a delay, or a control-flow op (below). ``Engine`` copies the plan into
C memory and runs sessions on ``threads`` engine threads (Python threads that spend their whole
life in ``thread_loop`` without the GIL). A session runs the ops in order. Two load models:

* **Closed** (default): ``sessions`` sessions start at once and run the ops over and over,
  until ``iterations`` are done or ``duration_ns`` has passed.
* **Open** (``arrival_rate_per_s > 0`` or ``rate_stages``): sessions *arrive* on a schedule
  counted from the start, whatever the target's speed. Arrival k is due when the cumulative
  count (the integral of the rate) reaches k: ``start + k / rate`` at a constant rate; with
  ``rate_stages`` [(duration_ns, target_rate_per_s)] the rate moves linearly from the previous
  rate (``arrival_rate_per_s`` first, which may be 0) to each target, like k6's
  ramping-arrival-rate, and the run lasts the sum of the stages. Arrival k goes to thread
  ``k % threads``, so the threads' union is the schedule. Each arriving session takes a free
  slot, runs the ops once and frees it. ``sessions`` is the number of slots (the cap on
  concurrent sessions), split over the threads; an arrival that finds its thread's slots all
  busy is dropped and counted in ``stats()["sessions_dropped"]``. A slot keeps its keep-alive
  connection for the next session that takes it. At each wake the thread starts every
  arrival already due (batched, ``ARRIVAL_BATCH`` at most); it sleeps with ``epoll_pwait2``
  (nanosecond timeout, Linux >= 5.11; ``epoll_wait`` in ms, rounded up, where it is missing)
  and a 1 us timer slack, so pacing is precise at low rates too.
  **Warm-up** (like k6's pre-allocated VUs): before the schedule, each thread connects every
  one of its slots to the first HTTP op's target (TCP, and the TLS handshake for an HTTPS
  target), ``WARM_WINDOW`` connects in flight at a time, for at most the connect timeout;
  then the last thread to finish sets the *schedule origin* (``start``'s time, ``end`` =
  origin + duration) and every thread begins. Without it every slot's first session opened
  a connection at once: at 100k arrivals/s the first ~50-100 ms went to connecting, all slots
  were busy and thousands of arrivals were dropped. The warm-up is in no latency, count or
  error: a connect that fails or is unfinished at the deadline is closed, and the session
  that takes the slot connects (and counts any failure) as it always did. ``origin_ns`` given
  to ``start`` is kept as it is (the warm-up then eats into the schedule: arrivals due during
  it start late, charged to their latency). A warmed connection the server closes while idle
  is noticed (EOF) and dropped without an error, like any kept connection.
  **Takeover** (``first_arrival``): the schedule resumes at that arrival, which is due at the
  origin; the threads take ``first_arrival + i``, ``+ threads``, ... so a survivor runs
  exactly the arrivals a lost worker's share had not reached, with their own spacing.

The end (``duration_ns``, or the stages' sum): no new arrivals; a session stops between two
ops (an op in flight completes or times out), then runs its teardown ops (below), so the run
ends within the request timeout. An open-model arrival due before the end always gets its
first op, however late it is started (but see start delays below).

Session rules (Chaperon's scenario parts and timeouts; all off by default). The plan is one op
array, ``init_ops | ops | teardown_ops``; a session walks one slice of it at a time (its
*phase*: ``op_index`` runs up to ``op_end``):

* **Start delay**: before its first op a session waits ``start_delay_ns`` plus a uniform
  random part in [0, ``start_random_delay_ns``) (xorshift64*, one generator per thread seeded
  from os.urandom), parked in the heap like a delay op. Closed model: counted from the run's
  start. Open model: from the arrival; the slot is taken while it waits, and the first op's
  intended start is arrival + delay, so the corrected latency still counts from the arrival's
  schedule (a late arrival or a late wake-up is charged to the first op) but not the delay
  itself. A session whose delayed start falls at or after the end runs nothing (no init, no
  teardown) and just ends.
* **Init ops** run once per session before its first iteration and are measured like any op.
* **Teardown ops** run once per session after its last iteration, however it ended (done,
  timed out, or stopped by the end of the run), if the session ran any op. They are *not
  measured*: no latency, no count, no error, in no metric (a key that only teardown ops use
  gets no row; a key shared with measured ops holds the measured ones only) and not in
  ``stats()``' requests_sent/responses/errors either. Each is bounded by the connect and
  request timeouts, and all teardown is cut off at end + request timeout (duration runs), so
  the run still ends within the request timeout after its end; on cancel it is abandoned.
* **Scenario timeout** (``scenario_timeout_ns``): each run of the scenario must end within it
  from its start. Closed model: each iteration, the first one together with the init ops,
  counted from the session's (delayed) start, later ones from the previous iteration's end.
  Open model: the session's init + run, from its intended start (arrival + start delay). A run
  that overruns is ended: an in-flight op is abandoned (connection closed, nothing recorded),
  a parked session is woken; it is counted in ``stats()["sessions_timed_out"]`` and as a run
  towards ``iterations`` (not in ``stats()["iterations"]``, which counts completed runs). The
  session then goes on with its next iteration, or to its teardown if that was its last (open
  model: always; the slot is freed after the teardown). Teardown is not under the timeout.

How they stay off the hot path: a session carries ``stop_ns`` (the earlier of the end and its
run deadline; in teardown, the cut-off), compared between ops where ``end_ns`` was before; the
periodic timeout scan also compares in-flight sessions with ``run_deadline_ns``; a session
parked in the heap is pushed with ``min(wake-up, stop_ns)``, so it wakes by itself to be
stopped (at most one heap entry per session, never a stale one). Phase changes and every
stop are slow-path functions (``sess_stop``, ``sess_finish``, ``sess_phase_end``).

The stateful session language (variables, templates, extraction, cookies, retry_on_error,
async children, signals, cc_spread, WebSocket, python steps) is in the included files
``engine_state.pxi`` and ``engine_ws.pxi`` (each with its own theory of operation).

The plan comes in through ``PlanBuilder`` (``engine_plan.pxi``): one typed method per op
kind, which checks its arguments and fills the next ``op_t`` (whose operands are named by
meaning: ``ref``, ``arg``, ``num``, see engine.pxd) of the array the Engine then takes over;
the engine's options are one checked ``EngineOptions`` (``engine_options.pxi``). The op kinds
are engine.pxd's ``C_OP_*`` enum, exported below as ``OP_*``, and the per-session limits are
exported as ``MAX_*`` for the compiler (``chaperon.core.lang``). The builder is the only way
a plan comes in: ``Engine(targets, metric_keys, plan, options)``.

Control flow (Chaperon's ``random_delay``, ``repeat``, ``repeat_traced``, ``loop``) stays in
the flat array. ``random_delay(min_ns, max_ns)`` adds a delay op of uniform length in
[min, max] (the thread's xorshift64*). ``repeat(count, metric_index)`` and
``loop(duration_ns)`` open a block: the ops added until its ``end()`` are its *body*, the
ops after it up to its ``body_end``. A repeat runs it ``count`` times (0: skipped); a loop
runs it while less than ``duration_ns`` has passed since the loop began, checked before
each iteration (a running one finishes). A repeat with a metric index (repeat_traced)
records each iteration's duration (from the intended start of its first op to the end of
its last) in that metric's latency (and service) histogram and count, never an error.
Bodies nest, ``MAX_DEPTH`` (8) deep, and are never empty; the builder checks the structure,
so the threads trust it. A session keeps a fixed stack of
``frame_t`` (the op, the repeats left or the loop's deadline, the iteration's start); inside a
body its ``op_end`` is the body's end, so the plain path's ``op_index >= op_end`` test also
finds a body's end, and only then does ``depth > 0`` send it to the slow path (``body_end``:
again, or pop and restore the enclosing end). Entering a body is a slow path too, behind the
``kind != OP_HTTP`` test the delay already needed: a plan without control ops pays nothing
per op. The stack is emptied whenever a phase or an iteration (re)starts. Control ops are not
ops of their own for the end of the run, the scenario timeout and cancel: the session checks
``stop_ns`` before every op, in a body as anywhere, so they cut through loops alike.

One engine thread owns a slice of the sessions, one epoll set (level-triggered), one receive
buffer shared by its sessions (responses are parsed as they arrive by the sans-IO parser of
``http1.pxd``, whose small state lives in the session), a binary min-heap of parked sessions
(delay ops), the stack of its free slots (open model) and two sets of per-metric accumulators.

Latency. Every HTTP op records, per metric key, the *latency* = completion - intended start
and (open model) the *service time* = completion - actual start (the connect, or the send on a
kept connection). The intended start of a session's first op is its arrival's due time; of a
later op, the previous op's completion plus the delays in between. So the loop's lateness in
starting a session is charged to its first op (coordinated omission corrected), and a delay
op is timed from the intended start (a late wake-up does not shift the ops after it). In the
closed model intended == actual: one histogram is recorded and ``swap`` returns a copy as the
service time (cheaper than recording twice, and the hot path stays as it was).

Connections. HTTP and WebSocket use one connection type, ``conn_t`` (``engine_conn.pxd``, code
in ``engine_conn.pxi``): non-blocking connect, TLS handshake and resumption, read, write of a
pending buffer, close, written once. A session's HTTP connection is ``session_t.conn``; the
HTTP exchange here (``sess_send_request``, ``on_readable``, ``on_connect_ready``) only sets
the request as the connection's pending write and feeds what it reads to the parser.

HTTPS. A target ``(ip, port, True, server_name)`` is reached over TLS with the client layer of
``tls.pxd`` (OpenSSL, non-blocking; ``engine_conn.pxi`` follows its rules). The session is
CONNECTING while its connection does the TCP connect and then the handshake, both under the
connect deadline; then WRITING/READING as for plain HTTP. Whatever the state, the operation
that returned TLS_WANT_x is retried when the socket is x-ready: WANT_WRITE arms EPOLLOUT,
WANT_READ disarms it (EPOLLIN is always on). Level-triggered epoll cannot see bytes OpenSSL
already decrypted (read-ahead), so a TLS read goes back to epoll only when the connection is
drained (``conn_drained``). A kept connection that turns readable while idle may carry a TLS
1.3 session ticket (kept) rather than an EOF (dropped). Each connection slot keeps the last
session its server offered (``tls_resume``, tag = target index) and offers it on its next
connect to that target, so reconnects (``Connection: close``, an idle close, a target switch)
resume instead of doing a full handshake. One ``SSL_CTX`` per thread (verification against
``tls_ca_file`` or the system's CAs, or none with ``tls_insecure``) is built at construction
when some target uses TLS. An op that connected includes the connect and the handshake in its
latency and service time. A handshake or verification failure is the error kind ``tls`` (the
text of the latest is ``Engine.tls_error``); a peer that closes or resets during the handshake
is ``closed``/``reset``. Plain targets pay one predictable branch (``tls.ssl == NULL``) in
the connection's read, write and close paths. OpenSSL allocates per connection, not per
request: 40-60 KB per TLS connection (its record buffers and state; ``bench/tls.py`` measured
56 KB of peak RSS with OpenSSL 3.0), so 10k TLS sessions need about 0.5 GB, not the ~18 MB of
10k plain ones.

Per request the hot path makes three syscalls: ``send`` (the whole request, usually), one
share of ``epoll_wait`` and ``read``. Sockets stay registered for EPOLLIN for their whole life;
EPOLLOUT is armed only while a connect or a partial write is pending, so a keep-alive request
needs no ``epoll_ctl``. Nothing is allocated per request or per arrival.

Timeouts (defaults: connect 5 s, request 30 s, from the send to the end of the response) are
not in the heap: every ``SCAN_NS`` the thread scans its sessions for an in-flight phase past
its deadline (cheap, and keeps the per-request path free of heap operations); a connect (with
its TLS handshake) that times out counts as ``timeout``, a refused one as ``connect``. The same
scan abandons in-flight ops past the scenario timeout, so that one is kept to within SCAN_NS.
``epoll`` sleeps until the next timer or arrival, capped at ``MAX_WAIT_MS`` so cancel and the
end of the run are noticed.

Failures are counted per metric key and kind (ERROR_KINDS), never raised: ``connect``
(refused/unreachable), ``timeout``, ``reset`` (RST, EPIPE), ``closed`` (EOF before the response
was complete, or an unparsable response), ``http_4xx``/``http_5xx`` (responses, also timed),
``tls`` (handshake, certificate verification or TLS protocol failure).
The connection is dropped after a failure, after ``Connection: close`` / HTTP/1.0 / a
read-until-close body, and when a kept connection reports EOF while idle (no error: the next
op reconnects). The race: if the server closes an idle connection just as the next request is
sent (before the engine saw the FIN), that op fails as ``reset`` or ``closed``; it is not
retried (the request may have reached the server).

Metrics are double-buffered ("swap, don't lock per request"): the engine thread holds its mutex
while it processes one epoll batch and records into ``stats[cur]``; ``Engine.swap`` takes the
mutex (GIL released, the first batch may be thousands of connects) between two batches, flips
``cur`` and then merges the now idle buffer into fresh Python ``Histogram`` objects and resets
it, while the engine keeps recording into the other one.

The rare fatal error of a thread (epoll failing) is kept as an errno and turned into an
exception by ``wait``. EAGAIN == EWOULDBLOCK on Linux, the only platform (epoll).
Memory comes from ``calloc`` and is freed in one place, ``Engine._free`` (``close`` and
``__dealloc__``), and so are the OpenSSL objects (each ``SSL`` before its fd is closed, the
connections' resumable sessions (``conn_free``), then the per-thread ``SSL_CTX``); threads
keep the Engine alive while they run, so it cannot be freed under them. The data layout is
declared one type per ``.pxd`` (listed in ``engine.pxd``).
File descriptors: one per session plus one per thread; ``start`` raises RLIMIT_NOFILE's soft
limit to the hard one and fails with a clear error when that is still too low.
"""

import ipaddress
import os
import socket as _pysocket
import threading
import time

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t, INT64_MAX
from libc.math cimport sqrt, isfinite
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset
from posix.unistd cimport read, close

from _fastpath.includes.epoll cimport (
    epoll_event, epoll_create1, epoll_ctl, epoll_wait, epoll_pwait2,
    EPOLLIN, EPOLLOUT, EPOLLERR, EPOLLHUP, EPOLL_CTL_ADD, EPOLL_CTL_MOD, EPOLL_CLOEXEC,
)
from _fastpath.includes.errno cimport (
    errno, EINTR, EAGAIN, EINPROGRESS, ECONNRESET, ECONNABORTED, EPIPE, ETIMEDOUT, ENOSYS, EPERM,
)
from _fastpath.includes.prctl cimport prctl, PR_SET_TIMERSLACK
from _fastpath.includes.pthread cimport (
    pthread_mutex_t, pthread_mutex_init, pthread_mutex_destroy, pthread_mutex_lock,
    pthread_mutex_unlock,
)
from _fastpath.includes.socket cimport (
    socklen_t, sockaddr, sockaddr_storage, sockaddr_in, sockaddr_in6, socket, connect, send,
    setsockopt, getsockopt, htons, AF_INET, AF_INET6, SOCK_STREAM, SOCK_NONBLOCK, SOCK_CLOEXEC,
    SOL_SOCKET, SO_ERROR, MSG_NOSIGNAL, IPPROTO_TCP, TCP_NODELAY,
)
from _fastpath.includes.time cimport timespec, clock_gettime, CLOCK_MONOTONIC
from _fastpath.histogram cimport (
    Histogram, hdr_core, hdr_core_init, hdr_core_free, hdr_core_reset, hdr_core_add,
    hdr_core_record,
)
from _fastpath.http1 cimport h1_parser, h1_init, h1_feed, h1_feed_eof, H1_DONE, H1_ERROR
from _fastpath.tls cimport (
    tls_conn, tls_resume,
    tls_ctx_new, tls_ctx_free, tls_resume_init, tls_resume_clear, tls_conn_init, tls_conn_start,
    tls_handshake, tls_read, tls_write, tls_conn_close, tls_error_text, tls_drained,
    TLS_OK, TLS_WANT_READ, TLS_WANT_WRITE, TLS_CLOSED, TLS_RESET, TLS_FAILED, TLS_ERRTEXT_SIZE,
)

from _fastpath.engine_config cimport config_t, stage_t
from _fastpath.engine_conn cimport (
    conn_t, io_t, target_t, SERVER_NAME_SIZE, CONN_CLOSED, CONN_CONNECTING, CONN_HANDSHAKING,
    CONN_OPEN, CONN_EOF, CONN_AGAIN,
)
from _fastpath.engine_metrics cimport (
    mstats_t, HIST_HIGHEST, NKINDS, K_CONNECT, K_TIMEOUT, K_RESET, K_CLOSED, K_4XX, K_5XX,
    K_TLS, K_EXTRACT, K_ABORT, K_PROTOCOL, K_PYTHON,
)
from _fastpath.engine_plan cimport (
    op_t, part_t, tmpl_t, extract_t, C_OP_HTTP, C_OP_DELAY, C_OP_RANDOM_DELAY, C_OP_REPEAT,
    C_OP_LOOP, C_OP_ASSIGN, C_OP_UPDATE_ADD, C_OP_UNSET, C_OP_RETRY, C_OP_ADD_METRIC,
    C_OP_ABORT, C_OP_PYTHON, C_OP_ASYNC, C_OP_AWAIT, C_OP_AWAIT_ALL, C_OP_SPREAD, C_OP_SIGNAL,
    C_OP_AWAIT_SIGNAL, C_OP_WS_CONNECT, C_OP_WS_SEND, C_OP_WS_RECV, C_OP_WS_AWAIT_RECV,
    C_OP_WS_CLOSE, C_VAR_SESSION_ID, C_VAR_ITERATION,
)
from _fastpath.engine_session cimport (
    session_t, frame_t, sx_t, var_t, ST_IDLE, ST_CONNECTING, ST_WRITING, ST_READING, ST_DELAY,
    ST_YIELD, ST_DONE, ST_FREE, ST_STARTING, ST_WAIT, ST_WS, PH_RUN, PH_INIT,
    PH_TEARDOWN, PH_CHILD, W_CHILD, W_ALL, W_SIGNAL, W_WS, W_SLOT, MAX_DEPTH, MAX_STEPS,
    JAR_SIZE, MAX_VAR_BYTES,
)
from _fastpath.engine_thread cimport (
    thread_t, heap_ent, MAX_EVENTS, RBUF_SIZE, MAX_WAIT_MS, ARRIVAL_BATCH, WARM_WINDOW, SCAN_NS,
    SPIN_NS, TIMER_SLACK_NS,
)
from _fastpath.engine_ws cimport (
    ws_conn_t, WS_MAX_MESSAGE, WC_CLOSED, WC_CONNECTING, WC_HS_WRITE, WC_HS_READ, WC_OPEN,
    WC_CLOSING,
)

cdef extern from *:
    """
    static inline int chaperon_load_int(const int* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline void chaperon_store_int(int* p, int v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
    static inline int chaperon_dec_int(int* p) { return __atomic_sub_fetch(p, 1, __ATOMIC_ACQ_REL); }
    """
    int chaperon_load_int(const int* p) nogil
    void chaperon_store_int(int* p, int v) nogil
    int chaperon_dec_int(int* p) nogil


# The op kinds, as the C enum of engine.pxd defines them (once): what plans are made of.
OP_HTTP = C_OP_HTTP
OP_DELAY = C_OP_DELAY
OP_RANDOM_DELAY = C_OP_RANDOM_DELAY
OP_REPEAT = C_OP_REPEAT
OP_LOOP = C_OP_LOOP
# The stateful session language (see engine_state.pxi)
OP_ASSIGN = C_OP_ASSIGN
OP_UPDATE_ADD = C_OP_UPDATE_ADD
OP_UNSET = C_OP_UNSET
OP_RETRY = C_OP_RETRY
OP_ADD_METRIC = C_OP_ADD_METRIC
OP_ABORT = C_OP_ABORT
OP_PYTHON = C_OP_PYTHON
OP_ASYNC = C_OP_ASYNC
OP_AWAIT = C_OP_AWAIT
OP_AWAIT_ALL = C_OP_AWAIT_ALL
OP_SPREAD = C_OP_SPREAD
OP_SIGNAL = C_OP_SIGNAL
OP_AWAIT_SIGNAL = C_OP_AWAIT_SIGNAL
OP_WS_CONNECT = C_OP_WS_CONNECT
OP_WS_SEND = C_OP_WS_SEND
OP_WS_RECV = C_OP_WS_RECV
OP_WS_AWAIT_RECV = C_OP_WS_AWAIT_RECV
OP_WS_CLOSE = C_OP_WS_CLOSE
# Extraction sources of an HTTP op's "extract" list
EX_JSON = 1
EX_REGEX = 2
EX_HEADER = 3
EX_STATUS = 4
EX_BODY = 5
# Built-in variables in templates (variable slots are >= 0)
VAR_SESSION_ID = C_VAR_SESSION_ID
VAR_ITERATION = C_VAR_ITERATION
_CONTROL_OPS = (OP_REPEAT, OP_LOOP)
# The engine's limits per session, defined here once; the compiler (chaperon.core.lang.limits)
# reads them, so a plan it accepts is one the engine takes.
MAX_NESTING = MAX_DEPTH     # repeat/loop/retry/async/cc_spread bodies in bodies (frames)
MAX_VARIABLES = 256
MAX_CONNS = 16              # WebSocket connections
MAX_SIGNALS = 64            # distinct signal values
MAX_CHILDREN = 256          # child session slots
MAX_UPDATE_ADD = 1 << 62    # |delta| of an integer variable's update: int64 stays far away
_MAX_START_DELAY_NS = 100 * 365 * 86400 * 1_000_000_000   # start delays: a century at most
ERROR_KINDS = ("connect", "timeout", "reset", "closed", "http_4xx", "http_5xx", "tls",
               "extract", "abort", "protocol", "python")


include "engine_conn.pxi"

# ------------------------------------------------------------------------------ nogil core

cdef inline int64_t now_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef void heap_push(thread_t* t, int64_t wake_ns, uint32_t index) noexcept nogil:
    cdef int32_t i = t.heap_len
    cdef int32_t parent
    t.heap_len += 1
    while i > 0:
        parent = (i - 1) >> 1
        if t.heap[parent].wake_ns <= wake_ns:
            break
        t.heap[i] = t.heap[parent]
        i = parent
    t.heap[i].wake_ns = wake_ns
    t.heap[i].index = index


cdef uint32_t heap_pop(thread_t* t) noexcept nogil:
    cdef uint32_t top = t.heap[0].index
    cdef heap_ent last
    cdef int32_t i = 0
    cdef int32_t child
    t.heap_len -= 1
    if t.heap_len == 0:
        return top
    last = t.heap[t.heap_len]
    while True:
        child = 2 * i + 1
        if child >= t.heap_len:
            break
        if child + 1 < t.heap_len and t.heap[child + 1].wake_ns < t.heap[child].wake_ns:
            child += 1
        if last.wake_ns <= t.heap[child].wake_ns:
            break
        t.heap[i] = t.heap[child]
        i = child
    t.heap[i] = last
    return top


cdef inline void record_error(thread_t* t, session_t* s, int32_t metric, int kind) noexcept nogil:
    cdef mstats_t* m
    s.failed = 1            # for retry_on_error (engine_state.pxi)
    if metric < 0:
        return              # a teardown op: not measured
    m = &t.rec[metric]
    m.errors += 1
    m.by_kind[kind] += 1
    t.errors += 1


cdef inline void end_session(thread_t* t, session_t* s) noexcept nogil:
    """The session is over (its iterations ran, or the run's end came between two ops)."""
    t.active -= 1
    t.sessions_completed += 1
    if s.x != NULL:
        ws_close_all(t, s)
    if t.cfg.open_model:
        # The slot, with its keep-alive connection, waits for the next arrival.
        s.state = ST_FREE
        t.free_slots[t.nfree] = s.index
        t.nfree += 1
    else:
        conn_close(&s.conn)
        s.state = ST_DONE


# ------------------------------------------------------------------------------ HTTP exchange
# An HTTP op over the session's connection: the request is the connection's pending write
# (borrowed from ``s.req``), the response goes through the sans-IO parser (``http1.pxd``).

cdef inline int http_write(thread_t* t, session_t* s) noexcept nogil:
    """Write the request: 0 fully sent (READING), 1 pending (WRITING), < 0: -1 - kind."""
    cdef int rc = conn_write(&t.io, &s.conn)
    if rc == 0:
        s.state = ST_READING
    elif rc > 0:
        s.state = ST_WRITING
    return rc


cdef inline int sess_send_request(thread_t* t, session_t* s, const op_t* op, int64_t now) noexcept nogil:
    s.deadline_ns = now + t.cfg.request_timeout_ns
    if op.metric >= 0:
        t.requests_sent += 1
    s.conn.wbuf = <const unsigned char*>s.req
    s.conn.wpos = 0
    s.conn.wlen = s.req_len
    return http_write(t, s)


include "engine_rules.pxi"


# ------------------------------------------------------------------------------ control flow
# repeat / repeat_traced / loop: a body is the ops after the REPEAT/LOOP op; while a session is
# inside one, ``op_end`` is the body's end, so the plain path's ``op_index >= op_end`` test
# also finds a body's end and only then (``depth > 0``) comes here.

cdef inline int32_t outer_end(thread_t* t, session_t* s) noexcept nogil:
    """Where the ops end once the innermost frame is popped (``depth`` already decremented)."""
    if s.depth > 0:
        return t.cfg.ops[s.frames[s.depth - 1].op].body_end
    if s.phase == PH_RUN:
        return t.cfg.run_end
    if s.phase == PH_INIT:
        return t.cfg.run_first
    if s.phase == PH_CHILD:
        return s.x.child_end
    return t.cfg.nops


cdef void record_value(thread_t* t, int32_t metric, int64_t value_us) noexcept nogil:
    """One measured value that is not a response (a traced iteration, a wait, add_metric):
    latency and service time alike; nothing for metric -1 (not measured, or teardown)."""
    cdef mstats_t* m
    if metric < 0:
        return
    m = &t.rec[metric]
    hdr_core_record(&m.hist, value_us)
    if t.cfg.open_model:
        hdr_core_record(&m.service, value_us)
    m.count += 1


cdef void body_enter(thread_t* t, session_t* s, const op_t* op, int64_t now) noexcept nogil:
    """Run a REPEAT/LOOP op (``op_index`` is its index): enter its body, or skip it."""
    cdef frame_t* f
    cdef int64_t left
    if op.kind == C_OP_REPEAT:
        if op.num.count <= 0:
            s.op_index = op.body_end
            return
        left = op.num.count - 1
    elif op.kind == C_OP_RETRY:
        left = op.num.retries   # retries left
    else:
        if op.num.duration_ns <= 0:
            s.op_index = op.body_end
            return
        left = sat_add(now, op.num.duration_ns)
    f = &s.frames[s.depth]          # depth < MAX_DEPTH: checked at construction
    s.depth += 1
    f.op = s.op_index
    f.left = left
    f.iter_start_ns = s.intended_ns
    s.op_end = op.body_end
    s.op_index += 1


cdef void body_end(thread_t* t, session_t* s, int64_t now) noexcept nogil:
    """The innermost body's iteration is over (``op_index == op_end``): record it (traced),
    then run it again or leave it."""
    cdef frame_t* f = &s.frames[s.depth - 1]
    cdef const op_t* op = &t.cfg.ops[f.op]
    cdef bint again
    record_value(t, op.metric, (now - f.iter_start_ns) // 1000)    # repeat_traced
    if op.kind == C_OP_REPEAT:
        again = f.left > 0
        if again:
            f.left -= 1
    elif op.kind == C_OP_LOOP:
        again = now < f.left    # the loop's deadline, checked before each iteration
    else:
        again = False           # RETRY: the body went through
    if again:
        s.op_index = f.op + 1
        f.iter_start_ns = s.intended_ns
        return
    s.depth -= 1                # op_index == op.body_end: go on after the body
    s.op_end = outer_end(t, s)


cdef void sess_run(thread_t* t, session_t* s, int64_t now) noexcept nogil:
    """Run the session from its current op until it waits for I/O or a timer, or ends."""
    cdef config_t* cfg = t.cfg
    cdef const op_t* op
    cdef int steps = 0
    cdef int rc
    cdef int64_t delay
    while True:
        if s.failed:
            s.failed = 0
            if s.depth > 0 and cfg.has_retry and retry_frame(t, s, now):
                return
        if s.op_index >= s.op_end:
            if s.depth > 0:
                body_end(t, s, now)     # once per body iteration: a loop's slow path
            elif s.phase == PH_RUN:
                # inline: once per iteration in the plain closed loop
                s.op_index = cfg.run_first
                s.iters += 1
                t.iterations += 1
                if cfg.open_model or (cfg.iterations > 0 and s.iters >= cfg.iterations):
                    if sess_finish(t, s, now):
                        return
                elif cfg.scenario_timeout_ns > 0:
                    set_window(t, s, now)
            elif sess_phase_end(t, s):
                return
            continue
        if now >= s.stop_ns and not s.fresh:
            if sess_stop(t, s, now):
                return
            continue
        steps += 1
        if steps > MAX_STEPS:
            s.state = ST_YIELD
            heap_push(t, now_ns() + 1, s.index)
            return
        op = &cfg.ops[s.op_index]
        if op.kind != C_OP_HTTP:
            if op.kind == C_OP_DELAY:
                delay = op.delay_ns
            elif op.kind == C_OP_RANDOM_DELAY:
                delay = op.delay_ns + rng_below(t, op.num.span_ns + 1)     # uniform in [min, max]
            elif op.kind <= C_OP_LOOP or op.kind == C_OP_RETRY:
                body_enter(t, s, op, now)   # not an op of its own: ``fresh`` stays
                continue
            else:
                s.fresh = 0
                if state_op(t, s, op, now):
                    return
                continue
            s.fresh = 0
            # Timed from the intended start, so a late wake-up does not push later ops back.
            # Woken at stop_ns at the latest, to be stopped (scenario timeout, end of the run).
            s.state = ST_DELAY
            s.intended_ns = sat_add(s.intended_ns, delay)
            heap_push(t, s.intended_ns if s.intended_ns < s.stop_ns else s.stop_ns, s.index)
            return
        s.fresh = 0
        s.op_start_ns = now
        h1_init(&s.parser, op.no_body)
        if op.req != NULL:
            s.req = op.req
            s.req_len = op.req_len
        elif http_prepare(t, s, op, now):
            return
        if s.conn.fd >= 0 and s.conn.target != op.target:
            conn_close(&s.conn)
        if s.conn.fd < 0:
            # the connect timeout covers TCP and the TLS handshake
            s.deadline_ns = now + cfg.connect_timeout_ns
            rc = conn_open(&t.io, &s.conn, op.target, &cfg.targets[op.target])
            if rc > 0:
                s.state = ST_CONNECTING
                return
            if rc < 0:
                record_error(t, s, op.metric, -1 - rc)
                conn_close(&s.conn)
                s.op_index += 1
                now = now_ns()
                s.intended_ns = now
                continue
        rc = sess_send_request(t, s, op, now)
        if rc >= 0:
            return
        record_error(t, s, op.metric, -1 - rc)
        conn_close(&s.conn)
        s.op_index += 1
        now = now_ns()
        s.intended_ns = now


cdef void fail_op(thread_t* t, session_t* s, int kind, int64_t now) noexcept nogil:
    """The in-flight op failed: count it, drop the connection, go on with the next op."""
    record_error(t, s, t.cfg.ops[s.op_index].metric, kind)
    if s.x != NULL:
        s.x.capturing = 0
    conn_close(&s.conn)
    s.state = ST_IDLE
    s.op_index += 1
    s.intended_ns = now
    sess_run(t, s, now)


cdef void complete(thread_t* t, session_t* s, int64_t now, bint reusable) noexcept nogil:
    """A response was read completely: record its latency (and service time) and go on."""
    cdef const op_t* op = &t.cfg.ops[s.op_index]
    cdef mstats_t* m
    cdef int32_t status = s.parser.status
    if op.metric >= 0:      # not a teardown op
        m = &t.rec[op.metric]
        if t.cfg.open_model:
            hdr_core_record(&m.hist, (now - s.intended_ns) // 1000)
            hdr_core_record(&m.service, (now - s.op_start_ns) // 1000)
        else:
            hdr_core_record(&m.hist, (now - s.op_start_ns) // 1000)
        m.count += 1
        t.responses += 1
        if status >= 400:
            m.errors += 1
            m.by_kind[K_5XX if status >= 500 else K_4XX] += 1
            t.errors += 1
    if status >= 400:
        s.failed = 1
    if not reusable or not s.parser.keep_alive:
        conn_close(&s.conn)
    s.state = ST_IDLE
    if (op.nextract > 0 or op.cookies) and after_response(t, s, op, status) != 0:
        sess_fail(t, s, op.metric, K_EXTRACT, now)
        return
    s.op_index += 1
    s.intended_ns = now
    sess_run(t, s, now)


cdef inline void on_eof(thread_t* t, session_t* s, int64_t now) noexcept nogil:
    """The peer closed: a response that ends at EOF is complete, anything else failed."""
    if h1_feed_eof(&s.parser) == H1_DONE:
        complete(t, s, now_ns(), False)
    else:
        fail_op(t, s, K_CLOSED, now)


cdef void on_readable(thread_t* t, session_t* s, int64_t now) noexcept nogil:
    """The response's bytes, as they come (any number of reads before epoll waits again)."""
    cdef conn_t* c = &s.conn
    cdef ssize_t n
    cdef size_t consumed
    cdef int rc
    while True:
        n = conn_read(&t.io, c, t.rbuf, RBUF_SIZE)
        if n > 0:
            rc = h1_feed(&s.parser, t.rbuf, <size_t>n, &consumed)
            if s.x != NULL and s.x.capturing:
                capture(t, s, t.rbuf, consumed)
            if rc == H1_DONE:
                # Extra bytes, a response before the request was fully sent, or a close or
                # an error kept by the TLS layer: the connection's state is unknown, so it
                # is not reused.
                complete(t, s, now_ns(), consumed == <size_t>n and s.state == ST_READING
                         and conn_quiet(c))
                return
            if rc == H1_ERROR:
                fail_op(t, s, K_CLOSED, now)
                return
            if conn_drained(c, n, RBUF_SIZE):
                break           # level-triggered epoll reports the rest
        elif n == CONN_AGAIN:
            return
        elif n == CONN_EOF:
            on_eof(t, s, now)
            return
        else:
            fail_op(t, s, <int>(-1 - n), now)
            return
    if conn_wait_in(&t.io, c) != CONN_AGAIN:
        fail_op(t, s, K_RESET, now)


cdef void on_idle_readable(thread_t* t, session_t* s) noexcept nogil:
    """A connection kept for later became readable: EOF, an error or stray bytes; drop it.
    Over TLS it may also be a post-handshake message (a TLS 1.3 session ticket, which the
    read hands to the slot's ``resume``): nothing to read then, keep the connection."""
    if conn_read(&t.io, &s.conn, t.rbuf, RBUF_SIZE) != CONN_AGAIN:
        conn_close(&s.conn)


cdef void on_connect_ready(thread_t* t, session_t* s, int64_t now) noexcept nogil:
    """An event while the connection is on its way (TCP, then TLS): once up, send."""
    cdef int rc = conn_establish(&t.io, &s.conn, &t.cfg.targets[s.conn.target])
    if rc > 0:
        return
    if rc == 0:
        rc = sess_send_request(t, s, &t.cfg.ops[s.op_index], now)
    if rc < 0:
        fail_op(t, s, -1 - rc, now)


cdef void on_event(thread_t* t, epoll_event* ev, int64_t now) noexcept nogil:
    cdef uint64_t u = ev.data.u64
    cdef uint32_t idx = <uint32_t>(u >> 32)
    cdef int fd = <int><uint32_t>u
    cdef session_t* s = &t.sessions[idx]
    cdef int32_t st
    cdef int rc
    if s.conn.fd != fd:
        if s.x != NULL and s.x.ws != NULL:
            ws_event(t, s, fd, ev.events, now)
        return              # else stale: that connection is gone
    st = s.state
    if st == ST_READING:
        on_readable(t, s, now)
    elif st == ST_CONNECTING:
        on_connect_ready(t, s, now)
    elif st == ST_WRITING:
        if ev.events & (EPOLLIN | EPOLLHUP):
            on_readable(t, s, now)
            if s.conn.fd != fd or s.state != ST_WRITING:
                return
        if conn_write_ready(&s.conn, ev.events):
            rc = http_write(t, s)
            if rc < 0:
                fail_op(t, s, -1 - rc, now)
    else:
        on_idle_readable(t, s)


cdef inline bint past_graceful_stop(thread_t* t, session_t* s, int64_t now) noexcept nogil:
    """The op in flight outlived the graceful stop after the end of the run (not teardown's:
    those have their own cut-off)."""
    return now >= t.cfg.hard_end_ns and s.phase != PH_TEARDOWN


cdef void scan_timeouts(thread_t* t, int64_t now) noexcept nogil:
    """In-flight ops past their deadline fail as ``timeout``; past the session's run deadline
    (scenario timeout, teardown's cut-off) or the graceful stop after the end of the run
    (``hard_end_ns``) they are abandoned (dropped, not counted). Parked sessions need no scan:
    they wake at their stop_ns at the latest."""
    cdef int32_t i
    cdef session_t* s
    for i in range(t.nslots):
        s = &t.sessions[i]
        if s.state == ST_CONNECTING or s.state == ST_WRITING or s.state == ST_READING:
            if now >= s.run_deadline_ns or past_graceful_stop(t, s, now):
                sess_abandon(t, s, now)
            elif now >= s.deadline_ns:
                fail_op(t, s, K_TIMEOUT, now)
        elif s.state == ST_WAIT:
            scan_wait(t, s, now)
        elif s.state == ST_WS:
            ws_scan(t, s, now)


cdef void run_timers(thread_t* t, int64_t now) noexcept nogil:
    # At most the entries present now: sessions parked again during this pass wait for the
    # next one, so a plan of zero delays cannot keep the loop from epoll (and cancel).
    cdef int32_t budget = t.heap_len
    cdef session_t* s
    while budget > 0 and t.heap_len > 0 and t.heap[0].wake_ns <= now:
        budget -= 1
        s = &t.sessions[heap_pop(t)]
        if s.state == ST_STARTING:
            # woken at its intended start, or at the end of the run if that came first
            if s.intended_ns >= t.cfg.end_ns:
                end_session(t, s)
            else:
                sess_begin(t, s, now, s.intended_ns)
            continue
        if s.state == ST_DELAY and now >= s.intended_ns:
            s.op_index += 1     # else woken early, at stop_ns: sess_run stops the session
        s.state = ST_IDLE
        sess_run(t, s, now)


include "engine_open.pxi"


cdef int thread_loop(thread_t* t) noexcept nogil:
    cdef config_t* cfg = t.cfg
    cdef int32_t i
    cdef int n
    cdef int64_t now, d, d_timer
    if cfg.open_model:
        # Warm-up, then wait for the other threads (their idle connections still served).
        warm_up(t)
        if chaperon_dec_int(&cfg.warm_pending) == 0:
            set_origin(cfg)
        while (not chaperon_load_int(&cfg.origin_ready) and not chaperon_load_int(&cfg.cancel)
               and not t.fatal_errno):
            warm_poll(t, 1000000)
    pthread_mutex_lock(&t.lock)
    t.rec = t.stats[t.cur]
    now = now_ns()
    t.next_scan_ns = now + SCAN_NS
    if cfg.open_model:
        prctl(PR_SET_TIMERSLACK, <unsigned long>TIMER_SLACK_NS, 0, 0, 0)
        if chaperon_load_int(&cfg.origin_ready) and not t.fatal_errno:
            next_arrival(t)     # else cancelled or failed: the loop below ends at once
    else:
        for i in range(t.nsessions):
            t.sessions_started += 1
            sess_start(t, &t.sessions[i], now, now)
    pthread_mutex_unlock(&t.lock)

    # Children (async, cc_spread) may outlive their parent's session: they end by themselves
    # at the latest at the stop time they inherited.
    while ((t.active > 0 or t.children > 0 or t.next_due_ns != INT64_MAX)
           and not chaperon_load_int(&cfg.cancel)):
        now = now_ns()
        d = t.next_scan_ns - now
        if now < cfg.end_ns and cfg.end_ns - now < d:   # past the end: no busy wait
            d = cfg.end_ns - now
        d_timer = t.next_due_ns - now       # INT64_MAX - now at worst: no overflow
        if t.heap_len > 0 and t.heap[0].wake_ns - now < d_timer:
            d_timer = t.heap[0].wake_ns - now
        if t.nready > 0:
            d_timer = 0
        n = wait_events(t, d_timer if d_timer < d else d, d_timer < d)
        if n < 0:
            if errno != EINTR:
                t.fatal_errno = errno
                break
            n = 0
        pthread_mutex_lock(&t.lock)
        t.rec = t.stats[t.cur]
        now = now_ns()
        for i in range(n):
            on_event(t, &t.events[i], now)
        if t.heap_len > 0:
            run_timers(t, now)
        if t.next_due_ns <= now:
            start_arrivals(t)
        if now >= t.next_scan_ns:
            scan_timeouts(t, now)
            t.next_scan_ns = now + SCAN_NS
        if t.nready > 0:
            drain_ready(t, now)
        pthread_mutex_unlock(&t.lock)

    for i in range(t.nslots):
        conn_close(&t.sessions[i].conn)
        if t.sessions[i].x != NULL:
            ws_close_all(t, &t.sessions[i])
    chaperon_store_int(&t.done, 1)
    return 0


include "engine_state.pxi"
include "engine_ws.pxi"


include "engine_plan.pxi"
include "engine_options.pxi"
include "engine_class.pxi"
include "engine_args.pxi"
