# cython: language_level=3
"""The plan an engine runs: a flat array of ``op_t``, with its templates and extractors.

Theory of operation
-------------------
``PlanBuilder`` (``engine_plan.pxi``) fills one ``op_t`` array, a typed method per op, and
the ``Engine`` takes it over (``config_t.ops``, ``engine_config.pxd``): init ops, run ops,
teardown ops. The threads only read it. Pointers
in an op (``req``, template parts, extractors, the python callable) point into memory the
``Engine`` keeps alive (its request buffer, or objects in ``Engine._keep``) until
``Engine._free``. What each field means per op kind is in ``engine.pyx``'s docstring and
``engine_state.pxi``/``engine_ws.pxi``.
"""

from libc.stdint cimport int32_t, int64_t

from _fastpath.extract cimport jp_step
from _fastpath.includes.regex cimport regex_t


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

# An op's operands by meaning: each union is one slot of the op, read as the op's kind says
# (the op_t layout, and so the hot loop's cache behaviour, is that of the former a/b/arg).
cdef union op_ref_t:        # op_t.ref: what the op works on
    int32_t var             # ASSIGN, UPDATE_ADD, UNSET: the variable; ADD_METRIC: one, or -1
    int32_t child           # ASYNC, AWAIT: the child; SIGNAL: it, or -1 (the parent); SPREAD:
                            # the first child
    int32_t conn            # WS_*: the connection
    int32_t signal          # AWAIT_SIGNAL: the signal value awaited

cdef union op_arg_t:        # op_t.arg: a second operand
    int32_t signal          # SIGNAL: the value sent
    int32_t count           # SPREAD: the children started
    int32_t opcode          # WS_SEND: 1 (text) or 2 (binary)
    int32_t var             # WS_RECV: the variable the message goes to, or -1

cdef union op_num_t:        # op_t.num: the op's number
    int64_t count           # REPEAT: iterations
    int64_t duration_ns     # LOOP: how long it loops
    int64_t span_ns         # RANDOM_DELAY: max - min
    int64_t retries         # RETRY
    int64_t delta           # UPDATE_ADD
    int64_t value           # ADD_METRIC (without a variable)
    int64_t interval_ns     # SPREAD: the children's starts are spread over it

cdef struct op_t:
    int32_t kind            # C_OP_*
    int32_t target
    int32_t metric          # -1: not measured (teardown ops): no latency, count or error
    int32_t no_body
    const char* req         # plain HTTP: the request; NULL for a templated one
    size_t req_len
    int64_t delay_ns        # DELAY; RANDOM_DELAY: the minimum; RETRY: backoff; waits: timeout
    op_num_t num
    int32_t body_end        # REPEAT/LOOP/RETRY/ASYNC/SPREAD: the body is (index, body_end)
    op_ref_t ref
    op_arg_t arg
    int32_t has_body        # templated HTTP: ``body`` is sent with a Content-Length
    int32_t cookies         # HTTP: the session's cookie jar is sent and updated
    int32_t nextract
    tmpl_t head             # templated HTTP head, ASSIGN value, WS connect head, WS payload
    tmpl_t body             # templated HTTP body; WS_AWAIT_RECV: expected message
    extract_t* extract
    void* pyfunc            # PYTHON: the callable (a borrowed reference: Engine keeps it)
