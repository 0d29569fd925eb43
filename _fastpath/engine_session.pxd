# cython: language_level=3
"""A session slot of an engine thread: ``session_t``, its repeat/loop frames (``frame_t``) and
its stateful part (``sx_t``, ``var_t``).

Theory of operation
-------------------
Sessions live in one calloc'ed array per ``Engine`` (each thread owns a contiguous slice; a
session's children follow the thread's sessions), which never moves while the threads run:
the TLS layer needs a connection's ``tls_conn`` to stay put while its ``SSL`` lives. A session
has one HTTP connection (``conn``, ``engine_conn.pxd``), kept alive from op to op while its
target stays the same, and its WebSocket connections in ``sx_t.ws``. ``state`` says what
the session waits for (``ST_*``); ``phase`` which slice of the ops it walks (``PH_*``); the
life of a session is in ``engine.pyx``'s docstring and ``engine_rules.pxi``. The stateful part
(``sx_t``, only when ``config_t.stateful``) is the language's: ``engine_state.pxi``. Every
buffer here is malloc'ed lazily by the engine thread and freed in ``Engine._free``
(``sx_free``), never per request.
"""

from libc.stdint cimport int32_t, int64_t, uint32_t

from _fastpath.http1 cimport h1_parser
from _fastpath.engine_conn cimport conn_t


cdef enum:
    ST_IDLE = 0
    ST_CONNECTING = 1   # the HTTP connection is on its way (TCP, then TLS: ``conn.state``)
    ST_WRITING = 2
    ST_READING = 3
    ST_DELAY = 4        # parked in the heap by a delay op
    ST_YIELD = 5        # parked in the heap to let the loop breathe (many ops failed at once)
    ST_DONE = 6
    ST_FREE = 7         # open model: an unused slot (it may keep a keep-alive connection)
                        # (8 was HANDSHAKING: now conn.state's; CONNECTING covers it)
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
    W_CHILD = 1         # ST_WAIT: for child ``wait_arg`` to end
    W_ALL = 2           # for every child to end
    W_SIGNAL = 3        # for signal ``wait_arg``
    W_WS = 4            # for a message on connection ``wait_arg`` (ws_recv, ws_await_recv)
    W_SLOT = 5          # for child ``wait_arg`` to end before it is started again
    MAX_DEPTH = 8       # nesting of repeat/loop bodies (frames per session)
    MAX_STEPS = 32      # ops one session may run synchronously before it yields
    JAR_SIZE = 4096     # cookie jar (the Cookie header's value) per session
    MAX_VAR_BYTES = 1048576  # a variable's value at most


# A running repeat/loop body (``session_t.frames``). ``op`` is the REPEAT/LOOP op's index: the
# body is [op + 1, ops[op].body_end).
cdef struct frame_t:
    int64_t left            # REPEAT: iterations still to run after this one; LOOP: its deadline
    int64_t iter_start_ns   # start of the current iteration (traced repeat)
    int32_t op

cdef struct session_t:
    conn_t conn             # the HTTP connection (kept alive between ops)
    int32_t state
    int32_t op_index
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
    h1_parser parser
    frame_t frames[MAX_DEPTH]
    const char* req         # the current op's request: op.req, or rendered into x.wbuf;
                            # the connection's pending write borrows it
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
