# Included by engine.pyx: checking the stateful language's op tuples (the tuple form of a
# plan, see ``engine_args._plan_from_tuples``), and the python step's call.
#
# Templates, extractors, JSON paths and regexes live in memory owned by small Python objects
# (``_CMem``, ``extract.JsonPath``, ``extract.Regex``) that ``PlanBuilder`` (engine_plan.pxi)
# makes and ``Engine._keep`` keeps with the bytes objects their literals point into, so they
# outlive every engine thread (threads keep the Engine alive) and are freed with them.

from libc.stdlib cimport calloc, free

from _fastpath.extract cimport JsonPath, Regex
from _fastpath.includes.regex cimport regex_t

_STATE_BLOCKS = {OP_REPEAT: 2, OP_LOOP: 2, OP_RETRY: 3, OP_ASYNC: 2, OP_SPREAD: 4}
_STATE_KINDS = frozenset(range(OP_ASSIGN, OP_WS_CLOSE + 1))


cdef class _CMem:
    """A calloc'd block, freed when the last reference goes (after the engine threads)."""
    cdef void* ptr

    def __cinit__(self, size_t size):
        self.ptr = calloc(size if size > 0 else 1, 1)
        if self.ptr == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self.ptr)


def _body_len(op):
    """The body length of a block op (repeat, loop, retry, async, spread), else None."""
    pos = _STATE_BLOCKS.get(op[0])
    return None if pos is None else op[pos]


def _check_parts(where, parts, int nvars):
    if not isinstance(parts, (list, tuple)):
        raise TypeError(f"{where}: a template is a list of bytes and variable slots")
    out = []
    for part in parts:
        if isinstance(part, (bytes, bytearray, memoryview)):
            if len(part):
                out.append(bytes(part))
        elif isinstance(part, int) and not isinstance(part, bool):
            if not VAR_ITERATION <= part < nvars:
                raise ValueError(f"{where}: variable slot {part} out of range (have {nvars})")
            out.append(part)
        else:
            raise TypeError(f"{where}: template part {part!r} is neither bytes nor a slot")
    return out


def _check_index(where, what, value, int limit, int minimum=0):
    value = _check_int(f"{where} {what}", value, minimum)
    if value >= limit:
        raise ValueError(f"{where}: {what} {value} out of range (have {limit})")
    return value


def _parse_state_op(where, op, int ntargets, int nmetrics, dict limits):
    """Check a stateful op's tuple (see /docs and the Engine docstring); return it normalized."""
    kind = op[0]
    nvars = limits["nvars"]
    arity = {OP_ASSIGN: 3, OP_UPDATE_ADD: 3, OP_UNSET: 2, OP_RETRY: 4, OP_ADD_METRIC: 4,
             OP_ABORT: 2, OP_PYTHON: 3, OP_ASYNC: 3, OP_AWAIT: 4, OP_AWAIT_ALL: 3,
             OP_SPREAD: 5, OP_SIGNAL: 3, OP_AWAIT_SIGNAL: 4, OP_WS_CONNECT: 5, OP_WS_SEND: 5,
             OP_WS_RECV: 5, OP_WS_AWAIT_RECV: 5, OP_WS_CLOSE: 3}[kind]
    if kind in (OP_ASSIGN, OP_UPDATE_ADD) and len(op) == 4:
        arity = 4           # with the metric that counts its errors
    if len(op) != arity:
        raise ValueError(f"{where}: op kind {kind} takes {arity} fields, got {len(op)}")

    def metric(value):
        return _check_index(where, "metric_index", value, nmetrics, -1)

    def var(value, minimum=0):
        return _check_index(where, "variable slot", value, nvars, minimum)

    def child(value, minimum=0):
        return _check_index(where, "child", value, limits["nchildren"], minimum)

    def conn(value):
        return _check_index(where, "connection", value, limits["nconns"])

    def ns(value):
        return _check_int(f"{where} duration_ns", value, 0)

    if kind == OP_ASSIGN:
        return (kind, var(op[1]), _check_parts(where, op[2], nvars),
                metric(op[3] if len(op) == 4 else -1))
    if kind == OP_UPDATE_ADD:
        return (kind, var(op[1]), _check_int(f"{where} delta", op[2], -MAX_UPDATE_ADD),
                metric(op[3] if len(op) == 4 else -1))
    if kind == OP_UNSET:
        return (kind, var(op[1]))
    if kind == OP_RETRY:
        return (kind, _check_int(f"{where} retries", op[1], 0), ns(op[2]),
                _check_int(f"{where} body_len", op[3], 1))
    if kind == OP_ADD_METRIC:
        return (kind, metric(op[1]), _check_int(f"{where} value", op[2], 0), var(op[3], -1))
    if kind == OP_ABORT:
        return (kind, metric(op[1]))
    if kind == OP_PYTHON:
        if not callable(op[2]):
            raise TypeError(f"{where}: the python step's function is not callable")
        return (kind, metric(op[1]), op[2])
    if kind == OP_ASYNC:
        return (kind, child(op[1]), _check_int(f"{where} body_len", op[2], 1))
    if kind == OP_AWAIT:
        return (kind, child(op[1]), ns(op[2]), metric(op[3]))
    if kind == OP_AWAIT_ALL:
        return (kind, ns(op[1]), metric(op[2]))
    if kind == OP_SPREAD:
        first = child(op[1])
        count = _check_int(f"{where} count", op[2], 1)
        if first + count > limits["nchildren"]:
            raise ValueError(f"{where}: children {first}..{first + count - 1} out of range")
        return (kind, first, count, ns(op[3]), _check_int(f"{where} body_len", op[4], 1))
    if kind == OP_SIGNAL:
        return (kind, child(op[1], -1),
                _check_index(where, "signal", op[2], limits["nsignals"]))
    if kind == OP_AWAIT_SIGNAL:
        return (kind, _check_index(where, "signal", op[1], limits["nsignals"]), ns(op[2]),
                metric(op[3]))
    if kind == OP_WS_CONNECT:
        return (kind, conn(op[1]), _check_index(where, "target_index", op[2], ntargets),
                metric(op[3]), _check_parts(where, op[4], nvars))
    if kind == OP_WS_SEND:
        if op[3] not in (1, 2):
            raise ValueError(f"{where}: opcode must be 1 (text) or 2 (binary)")
        return (kind, conn(op[1]), metric(op[2]), op[3], _check_parts(where, op[4], nvars))
    if kind == OP_WS_RECV:
        return (kind, conn(op[1]), metric(op[2]), ns(op[3]), var(op[4], -1))
    if kind == OP_WS_AWAIT_RECV:
        return (kind, conn(op[1]), metric(op[2]), ns(op[3]), _check_parts(where, op[4], nvars))
    return (kind, conn(op[1]), metric(op[2]))      # OP_WS_CLOSE


def _parse_http_extras(where, extras, int nvars):
    if not isinstance(extras, dict):
        raise TypeError(f"{where}: the HTTP op's extras must be a dict")
    unknown = set(extras) - {"head", "body", "cookies", "extract"}
    if unknown:
        raise ValueError(f"{where}: unknown HTTP extras {sorted(unknown)}")
    if "head" not in extras:
        raise ValueError(f"{where}: a stateful HTTP op needs a 'head' template")
    out = {"head": _check_parts(where, extras["head"], nvars),
           "body": None if extras.get("body") is None else _check_parts(where, extras["body"], nvars),
           "cookies": bool(extras.get("cookies", False)), "extract": []}
    for ex in extras.get("extract") or ():
        if not isinstance(ex, tuple) or len(ex) != 4:
            raise ValueError(f"{where}: an extractor is (var_slot, EX_KIND, expr_bytes, optional)")
        slot, kind, expr, optional = ex
        slot = _check_index(where, "variable slot", slot, nvars)
        if kind not in (EX_JSON, EX_REGEX, EX_HEADER, EX_STATUS, EX_BODY):
            raise ValueError(f"{where}: unknown extractor kind {kind!r}")
        if not isinstance(expr, bytes):
            raise TypeError(f"{where}: an extractor's expression must be bytes")
        if kind in (EX_JSON, EX_REGEX, EX_HEADER) and not expr:
            raise ValueError(f"{where}: an extractor's expression is empty")
        out["extract"].append((slot, kind, expr, bool(optional)))
    return out


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
