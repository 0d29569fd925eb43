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

Control flow (Chaperon's ``random_delay``, ``repeat``, ``repeat_traced``, ``loop``) stays in
the flat array. ``(OP_RANDOM_DELAY, min_ns, max_ns)`` is a delay op of uniform length in
[min, max] (the thread's xorshift64*). ``(OP_REPEAT, count, body_len, metric_index)`` and
``(OP_LOOP, duration_ns, body_len)`` own the ``body_len`` ops after them (their *body*): a
repeat runs it ``count`` times (0: skipped); a loop runs it while less than ``duration_ns``
has passed since the loop began, checked before each iteration (a running one finishes). A
repeat with a metric index (repeat_traced) records each iteration's duration (from the
intended start of its first op to the end of its last) in that metric's latency (and service)
histogram and count, never an error. Bodies nest, ``MAX_DEPTH`` (8) deep; the structure is
checked at construction, so the threads trust it. A session keeps a fixed stack of
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

HTTPS. A target ``(ip, port, True, server_name)`` is reached over TLS with the client layer of
``tls.pxd`` (OpenSSL, non-blocking; this module only follows its rules). After the TCP connect
the session is HANDSHAKING (``tls_conn_start``, then ``tls_handshake`` on every event until it
is done), still under the connect deadline; then WRITING/READING as for plain HTTP with
``tls_write``/``tls_read`` in place of ``send``/``read``. Whatever the state, the operation
that returned TLS_WANT_x is retried when the socket is x-ready: WANT_WRITE arms EPOLLOUT,
WANT_READ disarms it (EPOLLIN is always on). Level-triggered epoll cannot see bytes OpenSSL
already decrypted (read-ahead), so a TLS read goes back to epoll only when ``tls_read`` says
the connection is drained. A kept connection that turns readable while idle may carry a TLS
1.3 session ticket (kept) rather than an EOF (dropped). Each session slot keeps the last
session its server offered (``tls_resume``, tag = target index) and offers it on its next
connect to that target, so reconnects (``Connection: close``, an idle close, a target switch)
resume instead of doing a full handshake. One ``SSL_CTX`` per thread (verification against
``tls_ca_file`` or the system's CAs, or none with ``tls_insecure``) is built at construction
when some target uses TLS. An op that connected includes the connect and the handshake in its
latency and service time. A handshake or verification failure is the error kind ``tls`` (the
text of the latest is ``Engine.tls_error``); a peer that closes or resets during the handshake
is ``closed``/``reset``. Plain targets pay one predictable branch (``tls.ssl == NULL``) in
the read, write and close paths. OpenSSL allocates per connection, not per request: 40-60 KB
per TLS connection (its record buffers and state; ``bench/tls.py`` measured 56 KB of peak RSS
with OpenSSL 3.0), so 10k TLS sessions need about 0.5 GB, not the ~18 MB of 10k plain ones.

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
slots' sessions, then the per-thread ``SSL_CTX``); threads keep the Engine alive while they
run, so it cannot be freed under them.
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
    tls_ctx_new, tls_ctx_free, tls_resume_init, tls_resume_clear, tls_conn_init, tls_conn_start,
    tls_handshake, tls_read, tls_write, tls_conn_close, tls_error_text, tls_drained,
    TLS_OK, TLS_WANT_READ, TLS_WANT_WRITE, TLS_CLOSED, TLS_RESET, TLS_FAILED, TLS_ERRTEXT_SIZE,
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


OP_HTTP = 1
OP_DELAY = 2
OP_RANDOM_DELAY = 3
OP_REPEAT = 4
OP_LOOP = 5
# The stateful session language (see engine_state.pxi)
OP_ASSIGN = 6
OP_UPDATE_ADD = 7
OP_UNSET = 8
OP_RETRY = 9
OP_ADD_METRIC = 10
OP_ABORT = 11
OP_PYTHON = 12
OP_ASYNC = 13
OP_AWAIT = 14
OP_AWAIT_ALL = 15
OP_SPREAD = 16
OP_SIGNAL = 17
OP_AWAIT_SIGNAL = 18
OP_WS_CONNECT = 19
OP_WS_SEND = 20
OP_WS_RECV = 21
OP_WS_AWAIT_RECV = 22
OP_WS_CLOSE = 23
# Extraction sources of an HTTP op's "extract" list
EX_JSON = 1
EX_REGEX = 2
EX_HEADER = 3
EX_STATUS = 4
EX_BODY = 5
# Built-in variables in templates (variable slots are >= 0)
VAR_SESSION_ID = -1
VAR_ITERATION = -2
_CONTROL_OPS = (OP_REPEAT, OP_LOOP)
_MAX_START_DELAY_NS = 100 * 365 * 86400 * 1_000_000_000   # start delays: a century at most
ERROR_KINDS = ("connect", "timeout", "reset", "closed", "http_4xx", "http_5xx", "tls",
               "extract", "abort", "protocol", "python")

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


cdef inline int errno_kind(int e) noexcept nogil:
    if e == ETIMEDOUT:
        return K_TIMEOUT
    return K_RESET


cdef inline void close_conn(session_t* s) noexcept nogil:
    if s.fd >= 0:
        if s.tls.ssl != NULL:
            tls_conn_close(&s.tls)  # before close(fd); keeps a healthy session resumable
        close(s.fd)         # also removes it from the epoll set
        s.fd = -1
    s.target = -1
    s.epout = 0


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
        close_conn(s)
        s.state = ST_DONE


cdef inline int set_events(thread_t* t, session_t* s, bint want_out) noexcept nogil:
    cdef epoll_event ev
    ev.events = EPOLLIN | (EPOLLOUT if want_out else 0)
    ev.data.u64 = ((<uint64_t>s.index) << 32) | <uint32_t>s.fd
    s.epout = want_out
    return epoll_ctl(t.epfd, EPOLL_CTL_MOD, s.fd, &ev)


cdef int tcp_open(thread_t* t, const target_t* tg, uint32_t index, int* fd_out) noexcept nogil:
    """A non-blocking connect, registered for session ``index``: 0 connected, 1 in progress
    (EPOLLOUT armed), -1 failed. The HTTP connection and the WebSocket ones use it."""
    cdef int one = 1
    cdef int fd, rc
    cdef epoll_event ev
    fd = socket(tg.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)
    if fd < 0:
        return -1
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one))
    rc = connect(fd, <sockaddr*>&tg.addr, tg.addrlen)
    if rc != 0 and errno != EINPROGRESS and errno != EINTR:
        close(fd)
        return -1
    ev.events = EPOLLIN | (EPOLLOUT if rc != 0 else 0)
    ev.data.u64 = ((<uint64_t>index) << 32) | <uint32_t>fd
    if epoll_ctl(t.epfd, EPOLL_CTL_ADD, fd, &ev) != 0:
        close(fd)
        return -1
    fd_out[0] = fd
    return 1 if rc != 0 else 0


cdef int sess_connect(thread_t* t, session_t* s, const op_t* op) noexcept nogil:
    """0: connected, 1: in progress (EPOLLOUT armed), -1: failed."""
    cdef int fd = -1
    cdef int rc = tcp_open(t, &t.cfg.targets[op.target], s.index, &fd)
    if rc < 0:
        return -1
    s.fd = fd
    s.target = op.target
    s.epout = rc != 0
    return rc


cdef int tls_kind(thread_t* t, session_t* s, int rc) noexcept nogil:
    """The error kind of a TLS failure code (slow path; keeps the text for ``tls_error``)."""
    tls_error_text(&s.tls, rc, t.tls_error, TLS_ERRTEXT_SIZE)
    if rc == TLS_CLOSED:
        return K_CLOSED
    if rc == TLS_RESET:
        return errno_kind(s.tls.sys_errno)
    return K_TLS


cdef inline int want_events(thread_t* t, session_t* s, ssize_t want) noexcept nogil:
    """Arm EPOLLOUT for TLS_WANT_WRITE, disarm it for TLS_WANT_READ (EPOLLIN is always on)."""
    cdef bint out = want == TLS_WANT_WRITE
    if s.epout != out:
        return set_events(t, s, out)
    return 0


cdef int sess_write_tls(thread_t* t, session_t* s, const op_t* op) noexcept nogil:
    """``sess_write`` over TLS: retried with the same bytes whatever it waited for."""
    cdef ssize_t n
    while s.wpos < s.req_len:
        n = tls_write(&s.tls, s.req + s.wpos, s.req_len - s.wpos)
        if n > 0:
            s.wpos += <size_t>n
            continue
        if n == TLS_WANT_WRITE or n == TLS_WANT_READ:
            s.state = ST_WRITING
            if want_events(t, s, n) != 0:
                return -1 - K_RESET
            return 1
        return -1 - tls_kind(t, s, <int>n)
    s.state = ST_READING
    if s.epout and set_events(t, s, False) != 0:
        return -1 - K_RESET
    return 0


cdef int sess_write(thread_t* t, session_t* s, const op_t* op) noexcept nogil:
    """0: request fully sent (READING), 1: pending (WRITING, EPOLLOUT armed), <0: -1 - kind."""
    cdef ssize_t n
    if s.tls.ssl != NULL:
        return sess_write_tls(t, s, op)
    while s.wpos < s.req_len:
        n = send(s.fd, s.req + s.wpos, s.req_len - s.wpos, MSG_NOSIGNAL)
        if n >= 0:
            s.wpos += <size_t>n
            continue
        if errno == EINTR:
            continue
        if errno == EAGAIN:
            s.state = ST_WRITING
            if not s.epout and set_events(t, s, True) != 0:
                return -1 - K_RESET
            return 1
        return -1 - errno_kind(errno)
    s.state = ST_READING
    if s.epout and set_events(t, s, False) != 0:
        return -1 - K_RESET
    return 0


cdef int sess_handshake(thread_t* t, session_t* s) noexcept nogil:
    """One handshake step: 0 done, 1 waiting (HANDSHAKING, interest set), <0: -1 - kind."""
    cdef int rc = tls_handshake(&s.tls)
    if rc == TLS_OK:
        return 0
    if rc == TLS_WANT_READ or rc == TLS_WANT_WRITE:
        s.state = ST_HANDSHAKING
        if want_events(t, s, rc) != 0:
            return -1 - K_RESET
        return 1
    return -1 - tls_kind(t, s, rc)


cdef int sess_start_tls(thread_t* t, session_t* s) noexcept nogil:
    """TCP is connected to a TLS target: attach an SSL (offering the slot's session if it
    came from this target) and take the first handshake step. As ``sess_handshake``."""
    cdef int rc = tls_conn_start(&s.tls, t.ssl_ctx, s.fd, t.cfg.targets[s.target].server_name,
                                 &s.resume, s.target)
    if rc != TLS_OK:
        return -1 - tls_kind(t, s, rc)
    return sess_handshake(t, s)


cdef inline int sess_send_request(thread_t* t, session_t* s, const op_t* op, int64_t now) noexcept nogil:
    s.wpos = 0
    s.deadline_ns = now + t.cfg.request_timeout_ns
    if op.metric >= 0:
        t.requests_sent += 1
    return sess_write(t, s, op)


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
    close_conn(s)
    if not sess_stop(t, s, now):
        sess_run(t, s, now)


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


cdef void body_enter(thread_t* t, session_t* s, const op_t* op, int64_t now) noexcept nogil:
    """Run a REPEAT/LOOP op (``op_index`` is its index): enter its body, or skip it."""
    cdef frame_t* f
    cdef int64_t left
    if op.kind == C_OP_REPEAT:
        if op.arg <= 0:
            s.op_index = op.body_end
            return
        left = op.arg - 1
    elif op.kind == C_OP_RETRY:
        left = op.arg           # retries left
    else:
        if op.arg <= 0:
            s.op_index = op.body_end
            return
        left = sat_add(now, op.arg)
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
    cdef mstats_t* m
    cdef bint again
    if op.metric >= 0:          # repeat_traced (never in teardown: not measured)
        m = &t.rec[op.metric]
        hdr_core_record(&m.hist, (now - f.iter_start_ns) // 1000)
        if t.cfg.open_model:
            hdr_core_record(&m.service, (now - f.iter_start_ns) // 1000)
        m.count += 1
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
                delay = op.delay_ns + rng_below(t, op.arg + 1)     # uniform in [min, max]
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
        if s.fd >= 0 and s.target != op.target:
            close_conn(s)
        if s.fd < 0:
            rc = sess_connect(t, s, op)
            if rc > 0:
                s.state = ST_CONNECTING
                s.deadline_ns = now + cfg.connect_timeout_ns
                return
            if rc < 0:
                record_error(t, s, op.metric, K_CONNECT)
                s.op_index += 1
                now = now_ns()
                s.intended_ns = now
                continue
            if cfg.targets[op.target].tls:
                s.deadline_ns = now + cfg.connect_timeout_ns
                rc = sess_start_tls(t, s)
                if rc > 0:
                    return
                if rc < 0:
                    record_error(t, s, op.metric, -1 - rc)
                    close_conn(s)
                    s.op_index += 1
                    now = now_ns()
                    s.intended_ns = now
                    continue
        rc = sess_send_request(t, s, op, now)
        if rc >= 0:
            return
        record_error(t, s, op.metric, -1 - rc)
        close_conn(s)
        s.op_index += 1
        now = now_ns()
        s.intended_ns = now


cdef void fail_op(thread_t* t, session_t* s, int kind, int64_t now) noexcept nogil:
    """The in-flight op failed: count it, drop the connection, go on with the next op."""
    record_error(t, s, t.cfg.ops[s.op_index].metric, kind)
    if s.x != NULL:
        s.x.capturing = 0
    close_conn(s)
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
        close_conn(s)
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


cdef void on_readable_tls(thread_t* t, session_t* s, int64_t now) noexcept nogil:
    """``on_readable`` over TLS. Level-triggered epoll cannot see bytes OpenSSL already holds
    (read-ahead), so go back to epoll only when tls.pxd's drain rule says so."""
    cdef ssize_t n
    cdef size_t consumed
    cdef int rc
    while True:
        n = tls_read(&s.tls, t.rbuf, RBUF_SIZE)
        if n > 0:
            rc = h1_feed(&s.parser, t.rbuf, <size_t>n, &consumed)
            if s.x != NULL and s.x.capturing:
                capture(t, s, t.rbuf, consumed)
            if rc == H1_DONE:
                # Reusable only if nothing followed the response (not even a close or an
                # error kept for the next call).
                complete(t, s, now_ns(), consumed == <size_t>n and s.state == ST_READING
                         and tls_drained(&s.tls))
                return
            if rc == H1_ERROR:
                fail_op(t, s, K_CLOSED, now)
                return
            if n < RBUF_SIZE and tls_drained(&s.tls):
                break
        elif n == TLS_CLOSED:
            on_eof(t, s, now)
            return
        elif n == TLS_WANT_READ:
            break
        elif n == TLS_WANT_WRITE:
            # Rare (a TLS 1.3 key update to answer): wait for EPOLLOUT; in READING any event
            # retries the read, and a WRITING session retries its write anyway.
            if not s.epout and set_events(t, s, True) != 0:
                fail_op(t, s, K_RESET, now)
            return
        else:
            fail_op(t, s, tls_kind(t, s, <int>n), now)
            return
    if s.epout and s.state == ST_READING and set_events(t, s, False) != 0:
        fail_op(t, s, K_RESET, now)


cdef void on_readable(thread_t* t, session_t* s, int64_t now) noexcept nogil:
    cdef ssize_t n
    cdef size_t consumed
    cdef int rc
    if s.tls.ssl != NULL:
        on_readable_tls(t, s, now)
        return
    while True:
        n = read(s.fd, t.rbuf, RBUF_SIZE)
        if n > 0:
            rc = h1_feed(&s.parser, t.rbuf, <size_t>n, &consumed)
            if s.x != NULL and s.x.capturing:
                capture(t, s, t.rbuf, consumed)
            if rc == H1_DONE:
                # Extra bytes, or a response before the request was fully sent: the
                # connection's state is unknown, so it is not reused.
                complete(t, s, now_ns(), consumed == <size_t>n and s.state == ST_READING)
                return
            if rc == H1_ERROR:
                fail_op(t, s, K_CLOSED, now)
                return
            if n < RBUF_SIZE:
                return          # drained; level-triggered epoll reports the rest
        elif n == 0:
            on_eof(t, s, now)
            return
        elif errno == EINTR:
            continue
        elif errno == EAGAIN:
            return
        else:
            fail_op(t, s, errno_kind(errno), now)
            return


cdef void on_idle_readable(thread_t* t, session_t* s) noexcept nogil:
    """A connection kept for later became readable: EOF, an error or stray bytes; drop it.
    Over TLS it may also be a post-handshake message (a TLS 1.3 session ticket, which the
    read hands to the slot): WANT_READ means just that, keep the connection."""
    cdef ssize_t n
    if s.tls.ssl != NULL:
        if tls_read(&s.tls, t.rbuf, RBUF_SIZE) != TLS_WANT_READ:
            close_conn(s)
        return
    n = read(s.fd, t.rbuf, RBUF_SIZE)
    if n < 0 and (errno == EAGAIN or errno == EINTR):
        return
    close_conn(s)


cdef void on_connect_ready(thread_t* t, session_t* s, int64_t now) noexcept nogil:
    cdef int err = 0
    cdef socklen_t len_ = sizeof(err)
    cdef int rc
    if getsockopt(s.fd, SOL_SOCKET, SO_ERROR, &err, &len_) != 0:
        err = errno
    if err != 0:
        fail_op(t, s, K_TIMEOUT if err == ETIMEDOUT else K_CONNECT, now)
        return
    if t.cfg.targets[s.target].tls:
        rc = sess_start_tls(t, s)          # the connect deadline still runs
        if rc > 0:
            return
        if rc < 0:
            fail_op(t, s, -1 - rc, now)
            return
    rc = sess_send_request(t, s, &t.cfg.ops[s.op_index], now)
    if rc < 0:
        fail_op(t, s, -1 - rc, now)


cdef void on_handshake_ready(thread_t* t, session_t* s, int64_t now) noexcept nogil:
    cdef int rc = sess_handshake(t, s)
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
    if s.fd != fd:
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
            if s.fd != fd or s.state != ST_WRITING:
                return
        # TLS retries the write whatever the event: it may have waited for a read
        if ev.events & (EPOLLOUT | EPOLLERR) or s.tls.ssl != NULL:
            rc = sess_write(t, s, &t.cfg.ops[s.op_index])
            if rc < 0:
                fail_op(t, s, -1 - rc, now)
    elif st == ST_HANDSHAKING:
        on_handshake_ready(t, s, now)
    else:
        on_idle_readable(t, s)


cdef void scan_timeouts(thread_t* t, int64_t now) noexcept nogil:
    """In-flight ops past their deadline fail as ``timeout``; past the session's run deadline
    (scenario timeout, teardown's cut-off) they are abandoned. Parked sessions need no scan:
    they wake at their stop_ns at the latest."""
    cdef int32_t i
    cdef session_t* s
    for i in range(t.nslots):
        s = &t.sessions[i]
        if (s.state == ST_CONNECTING or s.state == ST_WRITING or s.state == ST_READING
                or s.state == ST_HANDSHAKING):
            if now >= s.run_deadline_ns:
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
            s.x.session_id = t.next_k - t.cfg.nthreads     # the arrival's number
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
        n = epoll_pwait2(t.epfd, t.events, MAX_EVENTS, &ts)
        if n >= 0 or (errno != ENOSYS and errno != EPERM):
            return n
        t.use_pwait2 = 0    # old kernel, or a seccomp filter that does not know it
    return epoll_wait(t.epfd, t.events, MAX_EVENTS, <int>((d + 999999) // 1000000))


# ------------------------------------------------------------------------------ warm-up

cdef void warm_done(thread_t* t, session_t* s, bint ok) noexcept nogil:
    """A slot's warm-up connect (and handshake) ended: keep the connection, idle, or drop it
    (the session that takes the slot connects again and counts any failure then)."""
    if ok and s.epout and set_events(t, s, False) != 0:
        ok = False
    if not ok:
        close_conn(s)
    s.state = ST_FREE
    t.warming -= 1


cdef inline void warm_tls(thread_t* t, session_t* s, int rc) noexcept nogil:
    """After ``sess_start_tls``/``sess_handshake``: > 0 waiting (HANDSHAKING), else done."""
    if rc <= 0:
        warm_done(t, s, rc == 0)


cdef void warm_event(thread_t* t, epoll_event* ev) noexcept nogil:
    cdef uint64_t u = ev.data.u64
    cdef session_t* s = &t.sessions[<uint32_t>(u >> 32)]
    cdef int err = 0
    cdef socklen_t len_ = sizeof(err)
    if s.fd != <int><uint32_t>u:
        return
    if s.state == ST_CONNECTING:
        if getsockopt(s.fd, SOL_SOCKET, SO_ERROR, &err, &len_) != 0 or err != 0:
            warm_done(t, s, False)
        elif t.cfg.targets[s.target].tls:
            warm_tls(t, s, sess_start_tls(t, s))
        else:
            warm_done(t, s, True)
    elif s.state == ST_HANDSHAKING:
        warm_tls(t, s, sess_handshake(t, s))
    else:
        on_idle_readable(t, s)      # a warmed connection: EOF (dropped) or a TLS ticket (kept)


cdef int warm_poll(thread_t* t, int64_t d) noexcept nogil:
    """One epoll round of the warm-up (at most ``d`` ns, rounded up to ms). -1: fatal."""
    cdef int n, i
    if d > <int64_t>MAX_WAIT_MS * 1000000:
        d = <int64_t>MAX_WAIT_MS * 1000000
    n = epoll_wait(t.epfd, t.events, MAX_EVENTS, <int>((d + 999999) // 1000000))
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
            rc = sess_connect(t, s, op)
            if rc < 0:
                continue
            t.warming += 1
            s.state = ST_CONNECTING
            if rc == 0:
                if cfg.targets[op.target].tls:
                    warm_tls(t, s, sess_start_tls(t, s))
                else:
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
        if s.state == ST_CONNECTING or s.state == ST_HANDSHAKING:
            close_conn(s)
            s.state = ST_FREE
    t.warming = 0
    return -1 if t.fatal_errno else 0


cdef void set_origin(config_t* cfg) noexcept nogil:
    """The last thread out of the warm-up: the schedule (and the run) count from now, or from
    the origin given to ``start``."""
    cdef int64_t origin = cfg.origin_req if cfg.origin_fixed else now_ns()
    cfg.start_ns = origin
    cfg.end_ns = sat_add(origin, cfg.total_ns)
    cfg.teardown_end_ns = sat_add(cfg.end_ns, cfg.request_timeout_ns)
    chaperon_store_int(&cfg.origin_ready, 1)


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

    while (t.active > 0 or t.next_due_ns != INT64_MAX) and not chaperon_load_int(&cfg.cancel):
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
        close_conn(&t.sessions[i])
        if t.sessions[i].x != NULL:
            ws_close_all(t, &t.sessions[i])
    chaperon_store_int(&t.done, 1)
    return 0


include "engine_state.pxi"
include "engine_ws.pxi"
include "engine_build.pxi"


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
    """HTTP/1.1 load generator, closed or open model; see the module docstring.

    Engine(targets, metric_keys, ops, sessions=1, threads=1, iterations=0, duration_ns=0,
           connect_timeout_ns=5e9, request_timeout_ns=30e9,
           arrival_rate_per_s=0.0, rate_stages=[], tls_ca_file=None, tls_insecure=False,
           scenario_timeout_ns=0, start_delay_ns=0, start_random_delay_ns=0,
           init_ops=[], teardown_ops=[])

    targets      [(ip literal, port)] (HTTP) or [(ip literal, port, tls, server_name)]:
                 with ``tls`` true, HTTPS to ``server_name`` (a host name, sent as SNI, or an
                 IP literal; None or "" = the target's IP), verified against it. ops index
                 them.
    metric_keys  [str]; ops index them.
    ops          [(OP_HTTP, target_index, metric_index, request_bytes, no_body)
                  | (OP_DELAY, delay_ns) | (OP_RANDOM_DELAY, min_ns, max_ns)
                  | (OP_REPEAT, count, body_len, metric_index or -1)
                  | (OP_LOOP, duration_ns, body_len)]: a repeat/loop's body is the
                 ``body_len`` ops after it (nested 8 deep at most); see the module docstring.
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
    start_delay_ns, start_random_delay_ns  each session waits start_delay_ns + uniform
                 [0, start_random_delay_ns) before its first op (open model: after its
                 arrival; its latency counts from arrival + delay).
    init_ops     ops (as ``ops``) run once per session before the first iteration, measured.
    teardown_ops ops run once per session after the last iteration (also after a timed-out
                 one, or the end of the duration: cut off at end + request timeout), NOT
                 measured: their metric indices are validated, nothing is recorded for them.
                 Skipped for a session that never ran an op; abandoned on cancel.

    ``stats()``: sessions_started, sessions_completed (ended, timed out or not),
    sessions_dropped, sessions_timed_out, requests_sent, responses and errors (measured ops
    only), iterations (completed runs of ``ops``).
    """

    def __cinit__(self):
        memset(&self.cfg, 0, sizeof(config_t))
        self.reqbuf = NULL
        self.sessions = NULL
        self.threads = NULL
        self.nthreads = 0
        self.py_threads = []

    def __init__(self, targets, metric_keys, ops, sessions=1, threads=1, iterations=0,
                 duration_ns=0, connect_timeout_ns=5_000_000_000,
                 request_timeout_ns=30_000_000_000, arrival_rate_per_s=0.0, rate_stages=(),
                 tls_ca_file=None, tls_insecure=False, scenario_timeout_ns=0, start_delay_ns=0,
                 start_random_delay_ns=0, init_ops=(), teardown_ops=(), var_names=(),
                 nchildren=0, nconns=0, nsignals=0, max_capture=1 << 20):
        if self.initialized:
            raise RuntimeError("Engine is already initialized")
        sessions = _check_int("sessions", sessions, 1)
        threads = _check_int("threads", threads, 1)
        iterations = _check_int("iterations", iterations, 0)
        duration_ns = _check_int("duration_ns", duration_ns, 0)
        connect_timeout_ns = _check_int("connect_timeout_ns", connect_timeout_ns, 1)
        request_timeout_ns = _check_int("request_timeout_ns", request_timeout_ns, 1)
        scenario_timeout_ns = _check_int("scenario_timeout_ns", scenario_timeout_ns, 0)
        start_delay_ns = _check_int("start_delay_ns", start_delay_ns, 0)
        start_random_delay_ns = _check_int("start_random_delay_ns", start_random_delay_ns, 0)
        if start_delay_ns + start_random_delay_ns > _MAX_START_DELAY_NS:
            raise ValueError(
                f"start_delay_ns + start_random_delay_ns = "
                f"{start_delay_ns + start_random_delay_ns} is unreasonably long"
            )
        stages, duration_ns, iterations = _open_schedule(
            arrival_rate_per_s, rate_stages, duration_ns, iterations)
        if not stages and iterations == 0 and duration_ns == 0:
            raise ValueError("iterations and duration_ns are both 0: the run would never end")
        if sessions > 10_000_000:
            raise ValueError(f"sessions={sessions} is unreasonably large")
        threads = min(threads, sessions)
        addrs = [_parse_target(i, t) for i, t in enumerate(_as_list("targets", targets))]
        if not addrs:
            raise ValueError("targets must not be empty")
        keys = [str(k) if isinstance(k, str) else _bad_key(i, k)
                for i, k in enumerate(_as_list("metric_keys", metric_keys))]
        var_names = [str(v) if isinstance(v, str) else _bad_key(i, v)
                     for i, v in enumerate(_as_list("var_names", var_names))]
        limits = {
            "nvars": len(var_names),
            "nchildren": _check_int("nchildren", nchildren, 0),
            "nconns": _check_int("nconns", nconns, 0),
            "nsignals": _check_int("nsignals", nsignals, 0),
        }
        for what, limit in (("nvars", _MAX_VARS), ("nchildren", _MAX_CHILDREN),
                            ("nconns", _MAX_CONNS), ("nsignals", _MAX_SIGNALS)):
            if limits[what] > limit:
                raise ValueError(f"{what}={limits[what]} is over the limit of {limit}")
        max_capture = _check_int("max_capture", max_capture, 0)
        plan = _check_bodies([_parse_op(i, op, len(addrs), len(keys), "ops", limits)
                              for i, op in enumerate(_as_list("ops", ops))])
        if not plan:
            raise ValueError("ops must not be empty")
        init = _check_bodies([_parse_op(i, op, len(addrs), len(keys), "init_ops", limits)
                              for i, op in enumerate(_as_list("init_ops", init_ops))], "init_ops")
        teardown = _check_bodies([_parse_op(i, op, len(addrs), len(keys), "teardown_ops", limits)
                                  for i, op in enumerate(_as_list("teardown_ops", teardown_ops))],
                                 "teardown_ops")
        stateful = any(p[0] in _STATE_KINDS or len(p) == 6 for p in init + plan + teardown)
        self.var_names = var_names
        self._keep = []
        self.cfg.nvars = limits["nvars"]
        self.cfg.nchildren = limits["nchildren"]
        self.cfg.nconns = limits["nconns"]
        self.cfg.nsignals = limits["nsignals"]
        self.cfg.max_capture = max_capture
        self.cfg.stateful = 1 if stateful or self.cfg.nvars or self.cfg.nchildren else 0
        self.cfg.has_retry = any(p[0] == OP_RETRY for p in init + plan + teardown)
        if not isinstance(tls_insecure, bool):
            raise TypeError(f"tls_insecure must be a bool, not {type(tls_insecure).__name__}")
        if tls_ca_file is not None:
            if not isinstance(tls_ca_file, (str, os.PathLike)):
                raise TypeError(
                    f"tls_ca_file must be a path (str) or None, not {type(tls_ca_file).__name__}"
                )
            tls_ca_file = os.fsencode(tls_ca_file)
            if not tls_ca_file or b"\0" in tls_ca_file:
                raise ValueError(f"tls_ca_file={tls_ca_file!r} is not a valid path")
        self.keys = keys
        self.duration_ns = duration_ns
        self._allocate(addrs, init + plan + teardown, len(init), len(teardown), sessions,
                       threads, iterations, connect_timeout_ns, request_timeout_ns, stages,
                       tls_ca_file, tls_insecure)
        self.cfg.scenario_timeout_ns = scenario_timeout_ns
        self.cfg.start_delay_ns = start_delay_ns
        self.cfg.start_random_delay_ns = start_random_delay_ns
        self.initialized = True

    cdef _allocate(self, list addrs, list plan, int32_t ninit, int32_t nteardown,
                   int32_t nsessions, int32_t nthreads,
                   int64_t iterations, int64_t connect_timeout_ns, int64_t request_timeout_ns,
                   list stages, object tls_ca_file, bint tls_insecure):
        cdef int32_t i, j, per, extra, first
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
        cfg.nops = len(plan)
        cfg.run_first = ninit
        cfg.run_end = cfg.nops - nteardown
        cfg.nmetrics = len(self.keys)
        cfg.iterations = iterations
        cfg.connect_timeout_ns = connect_timeout_ns
        cfg.request_timeout_ns = request_timeout_ns
        cfg.end_ns = INT64_MAX
        cfg.teardown_end_ns = INT64_MAX
        cfg.nthreads = nthreads
        cfg.open_model = 1 if stages else 0
        cfg.warm_op = -1
        for i in range(cfg.run_end):
            if plan[i][0] == OP_HTTP:
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

        cfg.targets = <target_t*>calloc(len(addrs), sizeof(target_t))
        cfg.ops = <op_t*>calloc(cfg.nops, sizeof(op_t))
        for p in plan:
            if p[0] == OP_HTTP and p[3] is not None:
                total += len(p[3])
        self.reqbuf = <char*>calloc(total + 1, 1)
        # Each session is followed (per thread) by its child slots, if the plan has children.
        nslots = nsessions * (1 + cfg.nchildren)
        self.sessions = <session_t*>calloc(nslots, sizeof(session_t))
        self.threads = <thread_t*>calloc(nthreads, sizeof(thread_t))
        # fds must read -1 before anything can fail: _free closes what is >= 0
        if self.sessions != NULL:
            self.nsessions = nslots
            for i in range(nslots):
                self.sessions[i].fd = -1
                self.sessions[i].target = -1
                tls_conn_init(&self.sessions[i].tls)
                tls_resume_init(&self.sessions[i].resume)
        if self.threads != NULL:
            self.nthreads = nthreads
            for i in range(nthreads):
                self.threads[i].epfd = -1
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

        builder = _Builder(self._keep, self.var_names)
        for i, p in enumerate(plan):
            if len(p) == 6 or p[0] in _STATE_KINDS:
                builder.fill(&cfg.ops[i], p)
                body_len = _body_len(p)
                if body_len is not None:
                    cfg.ops[i].body_end = i + 1 + body_len
                if i >= cfg.run_end:
                    cfg.ops[i].metric = -1      # teardown: not measured
            elif p[0] == OP_HTTP:
                req = p[3]
                cfg.ops[i].kind = C_OP_HTTP
                cfg.ops[i].target = p[1]
                cfg.ops[i].metric = p[2] if i < cfg.run_end else -1   # teardown: not measured
                cfg.ops[i].no_body = p[4]
                memcpy(self.reqbuf + off, PyBytes_AS_STRING(req), len(req))
                cfg.ops[i].req = self.reqbuf + off
                cfg.ops[i].req_len = len(req)
                off += len(req)
            elif p[0] == OP_DELAY:
                cfg.ops[i].kind = C_OP_DELAY
                cfg.ops[i].delay_ns = p[1]
            elif p[0] == OP_RANDOM_DELAY:
                cfg.ops[i].kind = C_OP_RANDOM_DELAY
                cfg.ops[i].delay_ns = p[1]
                cfg.ops[i].arg = p[2] - p[1]
            else:   # REPEAT / LOOP: body_len is relative, body_end absolute in the plan
                cfg.ops[i].kind = C_OP_REPEAT if p[0] == OP_REPEAT else C_OP_LOOP
                cfg.ops[i].arg = p[1]
                cfg.ops[i].body_end = i + 1 + p[2]
                cfg.ops[i].metric = -1
                if p[0] == OP_REPEAT and i < cfg.run_end:   # teardown: not measured
                    cfg.ops[i].metric = p[3]

        per = nsessions // nthreads
        extra = nsessions % nthreads
        first = 0
        for i in range(nthreads):
            t = &self.threads[i]
            t.cfg = cfg
            t.sessions = self.sessions + first
            t.nsessions = per + (1 if i < extra else 0)
            t.nslots = t.nsessions * (1 + cfg.nchildren)
            t.active = 0 if cfg.open_model else t.nsessions
            t.use_pwait2 = 1
            t.rng = int.from_bytes(os.urandom(8), "little") | 1   # xorshift needs a state != 0
            t.next_k = i
            t.next_due_ns = INT64_MAX
            for j in range(t.nslots):
                t.sessions[j].index = j
                if j >= t.nsessions:
                    t.sessions[j].state = ST_DONE       # a child slot, not started
                if cfg.stateful:
                    if j < t.nsessions:
                        t.sessions[j].x.parent = -1
                        t.sessions[j].x.child_base = t.nsessions + j * cfg.nchildren
                        t.sessions[j].x.session_id = first + j
                    else:
                        t.sessions[j].x.parent = (j - t.nsessions) // cfg.nchildren
                        t.sessions[j].x.child_base = -1
            if cfg.stateful:
                t.ready = <uint32_t*>calloc(t.nslots + 1, sizeof(uint32_t))
                if t.ready == NULL:
                    raise MemoryError()
            first += t.nslots
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
                self.threads[i].ssl_ctx = tls_ctx_new(ca_path, tls_insecure, errbuf, sizeof(errbuf))
                if self.threads[i].ssl_ctx == NULL:
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
                if t.epfd >= 0:
                    close(t.epfd)
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
                close_conn(&self.sessions[i])       # frees the SSL, if any
                tls_resume_clear(&self.sessions[i].resume)
                if self.sessions[i].x != NULL:
                    sx_free(&self.cfg, self.sessions[i].x)
            free(self.sessions)
            self.sessions = NULL
        free(self.sx)
        self.sx = NULL
        if self.threads != NULL:
            for i in range(self.nthreads):
                tls_ctx_free(self.threads[i].ssl_ctx)   # after every SSL made from it
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
            if self.threads[i].epfd < 0:    # a failed start() may be retried
                self.threads[i].epfd = epoll_create1(EPOLL_CLOEXEC)
            if self.threads[i].epfd < 0:
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
                memcpy(text, t.tls_error, TLS_ERRTEXT_SIZE)
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


def _zero_stats() -> dict:
    return dict.fromkeys(
        ("sessions_started", "sessions_completed", "sessions_dropped", "sessions_timed_out",
         "sessions_failed", "requests_sent", "responses", "iterations", "errors"), 0
    )


def _check_rate(name, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    value = float(value)
    if not isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    if value > 1e9:
        raise ValueError(f"{name}={value} is unreasonably large (more than one per ns)")
    return value


def _parse_stage(i, stage):
    if not isinstance(stage, (tuple, list)) or len(stage) != 2:
        raise TypeError(f"rate_stages[{i}] must be a (duration_ns, target_rate_per_s) tuple, "
                        f"got {stage!r}")
    return (_check_int(f"rate_stages[{i}] duration_ns", stage[0], 0),
            _check_rate(f"rate_stages[{i}] target_rate_per_s", stage[1]))


def _open_schedule(arrival_rate_per_s, rate_stages, duration_ns, iterations):
    """Validate the open-model arguments -> (stage rows or [] for the closed model,
    duration_ns, iterations)."""
    rate = _check_rate("arrival_rate_per_s", arrival_rate_per_s)
    stages = [_parse_stage(i, st) for i, st in enumerate(_as_list("rate_stages", rate_stages))]
    if rate == 0 and not stages:
        return [], duration_ns, iterations
    if iterations > 1:
        raise ValueError(
            f"iterations={iterations}: in the open model every arrival runs the ops once "
            "(leave iterations 0)"
        )
    if stages:
        total = sum(d for d, _ in stages)
        if total == 0:
            raise ValueError("rate_stages last 0 ns in all: the run would be empty")
        if duration_ns not in (0, total):
            raise ValueError(
                f"duration_ns={duration_ns} but rate_stages last {total} ns: with stages "
                "the run lasts their sum (pass 0 or that sum)"
            )
        duration_ns = total
    elif duration_ns == 0:
        raise ValueError("the open model (arrival_rate_per_s > 0) needs duration_ns > 0")
    if duration_ns > 100 * 365 * 86400 * 1_000_000_000:
        raise ValueError(f"duration_ns={duration_ns} is unreasonably long")
    return _schedule(rate, stages, duration_ns), duration_ns, 0


def _arrival_offsets_ns(arrival_rate_per_s, rate_stages=(), duration_ns=0, limit=1_000_000):
    """The due times (ns from the start) of the first ``limit`` arrivals of a schedule, as the
    engine computes them; with the thread split, thread i takes arrivals i, i + n, ... For
    tests and for planning; not used by the engine itself."""
    cdef config_t cfg
    cdef int32_t cursor = 0
    cdef int64_t k, off
    rows, duration_ns, _ = _open_schedule(arrival_rate_per_s, rate_stages, duration_ns, 0)
    if not rows:
        raise ValueError("arrival_rate_per_s or rate_stages must describe an open-model schedule")
    memset(&cfg, 0, sizeof(config_t))
    cfg.stages = <stage_t*>calloc(len(rows), sizeof(stage_t))
    if cfg.stages == NULL:
        raise MemoryError()
    try:
        cfg.nstages = len(rows)
        cfg.total_ns = duration_ns
        for i, (start_ns, dur_ns, r0, r1, n0, n1) in enumerate(rows):
            cfg.stages[i].start_ns = start_ns
            cfg.stages[i].dur_ns = dur_ns
            cfg.stages[i].r0 = r0
            cfg.stages[i].r1 = r1
            cfg.stages[i].n0 = n0
            cfg.stages[i].n1 = n1
        out = []
        for k in range(_check_int("limit", limit, 0)):
            off = arrival_offset_ns(&cfg, k, &cursor)
            if off < 0:
                break
            out.append(off)
        return out
    finally:
        free(cfg.stages)


def _schedule(double rate, list stages, int64_t duration_ns) -> list:
    """The arrival schedule as stage_t rows (start_ns, dur_ns, r0, r1, n0, n1), rates per ns."""
    if not stages:
        stages = [(duration_ns, rate)]
    rows = []
    start = 0
    n = 0.0
    prev = rate / 1e9
    for dur, target in stages:
        r1 = target / 1e9
        n1 = n + dur * (prev + r1) / 2.0
        rows.append((start, dur, prev, r1, n, n1))
        start += dur
        n = n1
        prev = r1
    return rows


def _as_list(name, value) -> list:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise TypeError(f"{name} must be a list, not {type(value).__name__}")
    return list(value)


def _bad_key(i, k):
    raise TypeError(f"metric_keys[{i}] must be a str, not {type(k).__name__}")


def _parse_target(i, target):
    """(host literal, port[, tls, server_name]) -> (4 or 6, packed address, port, scope id,
    tls, server name as ASCII bytes or None)."""
    if not isinstance(target, (tuple, list)) or len(target) not in (2, 4):
        raise TypeError(
            f"targets[{i}] must be a (host, port) or (host, port, tls, server_name) tuple, "
            f"got {target!r}"
        )
    host, port = target[0], target[1]
    if not isinstance(host, str):
        raise TypeError(f"targets[{i}]: host must be a str, not {type(host).__name__}")
    port = _check_int(f"targets[{i}] port", port, 1)
    if port > 65535:
        raise ValueError(f"targets[{i}]: port {port} is out of range 1..65535")
    literal = host[1:len(host) - 1] if host.startswith("[") and host.endswith("]") else host
    try:
        ip = ipaddress.ip_address(literal)
    except ValueError:
        raise ValueError(
            f"targets[{i}]: {host!r} is not an IPv4 or IPv6 literal (resolve host names first)"
        ) from None
    scope_id = 0
    if ip.version == 6 and ip.scope_id:
        scope_id = int(ip.scope_id) if ip.scope_id.isdigit() else _pysocket.if_nametoindex(ip.scope_id)
    tls = False
    name = None
    if len(target) == 4:
        tls = target[2]
        if not isinstance(tls, bool):
            raise TypeError(f"targets[{i}]: tls must be a bool, not {type(tls).__name__}")
        if tls:
            name = _server_name(i, target[3], str(ip).split("%")[0])
    return (ip.version, ip.packed, port, scope_id, tls, name)


def _server_name(i, server_name, ip_text) -> bytes:
    """The name a TLS target is verified against (and sent as SNI when it is a host name):
    ``server_name``, or the target's IP literal when it is None or empty."""
    if server_name is None or server_name == "":
        server_name = ip_text
    if not isinstance(server_name, str):
        raise TypeError(
            f"targets[{i}]: server_name must be a str, not {type(server_name).__name__}"
        )
    if server_name.startswith("[") and server_name.endswith("]"):
        server_name = server_name[1:len(server_name) - 1]      # tls.pxd: no brackets
    try:
        name = server_name.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(
            f"targets[{i}]: server_name {server_name!r} is not ASCII (pass its IDNA form, "
            "xn--...)"
        ) from None
    if len(name) >= SERVER_NAME_SIZE or b"\0" in name or b"/" in name or b" " in name:
        raise ValueError(f"targets[{i}]: {server_name!r} is not a valid server name")
    return name


def _parse_op(i, op, int ntargets, int nmetrics, str name="ops", dict limits=None):
    where = f"{name}[{i}]"
    if not isinstance(op, tuple) or not op:
        raise TypeError(f"{where} must be a tuple, got {op!r}")
    kind = op[0]
    limits = limits or {"nvars": 0, "nchildren": 0, "nconns": 0, "nsignals": 0}
    if kind in _STATE_KINDS and not isinstance(kind, bool):
        return _parse_state_op(where, op, ntargets, nmetrics, limits)
    if kind == OP_HTTP and not isinstance(kind, bool) and len(op) == 6:
        target = _check_index(where, "target_index", op[1], ntargets)
        metric = _check_index(where, "metric_index", op[2], nmetrics, -1)
        if op[3] is not None:
            raise ValueError(f"{where}: a stateful HTTP op has request_bytes None (its 'head')")
        return (OP_HTTP, target, metric, None, 1 if op[4] else 0,
                _parse_http_extras(where, op[5], limits["nvars"]))
    if kind == OP_HTTP and not isinstance(kind, bool):
        if len(op) != 5:
            raise ValueError(
                f"{where}: an HTTP op is (OP_HTTP, target_index, metric_index, request_bytes, no_body)"
            )
        _, target, metric, request, no_body = op
        target = _check_int(f"{where} target_index", target, 0)
        if target >= ntargets:
            raise ValueError(f"{where}: target_index {target} out of range (have {ntargets} targets)")
        metric = _check_int(f"{where} metric_index", metric, 0)
        if metric >= nmetrics:
            raise ValueError(f"{where}: metric_index {metric} out of range (have {nmetrics} metric keys)")
        if isinstance(request, (bytearray, memoryview)):
            request = bytes(request)
        if not isinstance(request, bytes):
            raise TypeError(f"{where}: request_bytes must be bytes, not {type(request).__name__}")
        if not request:
            raise ValueError(f"{where}: request_bytes is empty")
        return (OP_HTTP, target, metric, request, 1 if no_body else 0)
    if isinstance(kind, bool):
        kind = None
    if kind == OP_DELAY:
        if len(op) != 2:
            raise ValueError(f"{where}: a delay op is (OP_DELAY, delay_ns)")
        return (OP_DELAY, _check_int(f"{where} delay_ns", op[1], 0))
    if kind == OP_RANDOM_DELAY:
        if len(op) != 3:
            raise ValueError(f"{where}: a random delay op is (OP_RANDOM_DELAY, min_ns, max_ns)")
        lo = _check_int(f"{where} min_ns", op[1], 0)
        hi = _check_int(f"{where} max_ns", op[2], 0)
        if hi < lo:
            raise ValueError(f"{where}: max_ns {hi} < min_ns {lo}")
        if hi > _MAX_START_DELAY_NS:
            raise ValueError(f"{where}: max_ns {hi} is unreasonably long")
        return (OP_RANDOM_DELAY, lo, hi)
    if kind == OP_REPEAT:
        if len(op) != 4:
            raise ValueError(
                f"{where}: a repeat op is (OP_REPEAT, count, body_len, metric_index or -1)")
        count = _check_int(f"{where} count", op[1], 0)
        body_len = _check_int(f"{where} body_len", op[2], 1)
        metric = _check_int(f"{where} metric_index", op[3], -1)
        if metric >= nmetrics:
            raise ValueError(f"{where}: metric_index {metric} out of range (have {nmetrics} metric keys)")
        return (OP_REPEAT, count, body_len, metric)
    if kind == OP_LOOP:
        if len(op) != 3:
            raise ValueError(f"{where}: a loop op is (OP_LOOP, duration_ns, body_len)")
        return (OP_LOOP, _check_int(f"{where} duration_ns", op[1], 0),
                _check_int(f"{where} body_len", op[2], 1))
    raise ValueError(
        f"{where}: unknown op kind {op[0]!r} (expected OP_HTTP, OP_DELAY, OP_RANDOM_DELAY, "
        "OP_REPEAT, OP_LOOP or one of the stateful ops OP_ASSIGN .. OP_WS_CLOSE)"
    )


def _check_bodies(list ops, str name="ops"):
    """Repeat/loop bodies must fit inside the list and inside their enclosing body, nested
    at most MAX_DEPTH deep."""
    ends = []       # ends of the enclosing bodies, innermost last
    for i, op in enumerate(ops):
        while ends and ends[len(ends) - 1] <= i:
            ends.pop()
        body_len = _body_len(op)
        if body_len is None:
            continue
        end = i + 1 + body_len
        if end > len(ops):
            raise ValueError(
                f"{name}[{i}]: body_len {body_len} runs past the end of {name} ({len(ops)} ops)")
        if ends and end > ends[len(ends) - 1]:
            raise ValueError(
                f"{name}[{i}]: body_len {body_len} runs past the end of the enclosing body "
                f"(which ends before {name}[{ends[len(ends) - 1]}])")
        ends.append(end)
        if len(ends) > MAX_DEPTH:
            raise ValueError(f"{name}[{i}]: blocks nested deeper than {MAX_DEPTH}")
    return ops


def _raise_nofile_limit(int64_t needed):
    """Raise RLIMIT_NOFILE's soft limit to the hard one; fail clearly if still too low."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    elif hard == resource.RLIM_INFINITY and soft != resource.RLIM_INFINITY and soft < needed:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
            soft = needed
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise RuntimeError(
            f"the sessions need about {needed} file descriptors but RLIMIT_NOFILE allows {soft}; "
            f"raise the hard limit (ulimit -Hn) or run fewer sessions per worker"
        )
