# Included by engine.pyx (boundscheck and wraparound are off: no negative indexes here):
# ``PlanBuilder``, the typed boundary through which a plan enters the
# engine.
#
# Theory of operation
# -------------------
# The compiler (``chaperon.core.lang.emit``) calls one typed method per op, in order: after
# ``init()`` the init ops, after ``run()`` the run ops (a plan starts with them), after
# ``teardown()`` the teardown ops. Each method
# checks its arguments (TypeError for a wrong type, ValueError for a value out of range; never
# a crash) and fills the next ``op_t`` of a growing C array at once. A block (repeat, loop,
# retry, async, spread) is opened by its method and closed by ``end()``, which sets its
# ``body_end``; blocks nest at most MAX_NESTING deep and a body is never empty. What only the
# engine knows (the number of targets, metric keys, variables, children, connections and
# signals) is checked by ``Engine`` when it takes the plan (``_check_against``), naming the
# op; what needs the engine's threads (a regex compiled per thread) or its variable names (a
# python step) is finished then too (``_finish``). An Engine takes the array over (one
# builder, one Engine). ``describe()`` gives the ops back as tuples, for tests and debugging.
#
# Memory: the op array is ``realloc``'d here and freed by the Engine that takes it (or here,
# if none does). Templates, extractors, JSON paths and regexes live in memory owned by small
# Python objects (``_CMem``, ``extract.JsonPath``, ``extract.Regex``) that the builder makes
# and ``Engine._keep`` keeps, with the bytes objects their literals point into, so they
# outlive every engine thread (threads keep the Engine alive) and are freed with it.

from _fastpath.extract cimport JsonPath, Regex
from _fastpath.includes.regex cimport regex_t

cdef int32_t _PH_INIT = 0
cdef int32_t _PH_RUN = 1
cdef int32_t _PH_TEARDOWN = 2
_PHASE_NAMES = ("init_ops", "ops", "teardown_ops")
_INT32_MAX = 2147483647


cdef class _CMem:
    """A calloc'd block, freed when the last reference goes (after the engine threads)."""
    cdef void* ptr

    def __cinit__(self, size_t size):
        self.ptr = calloc(size if size > 0 else 1, 1)
        if self.ptr == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self.ptr)


def _index(what, value, int64_t minimum=0):
    """An int32 index (or count) >= ``minimum``: TypeError/ValueError otherwise."""
    value = _check_int(what, value, minimum)
    if value > _INT32_MAX:
        raise ValueError(f"{what} is too large: {value}")
    return value


cdef class PlanBuilder:
    """The op array of one Engine, filled by typed methods (see the theory of operation)."""

    cdef op_t* ops
    cdef int32_t nops
    cdef int32_t cap
    cdef int32_t phase
    cdef int32_t run_first
    cdef int32_t run_end
    cdef list keep              # bytes the ops point into, templates' memory
    cdef list open_blocks       # indexes of the blocks not ended yet, innermost last
    cdef dict extracts          # op index -> [(var, kind, expr, optional)]
    cdef dict functions         # op index -> python step's function
    cdef list tmpl_vars         # op index -> highest variable slot its templates use (-3: none)
    cdef list described         # the ops as tuples, per phase (describe())
    cdef bint taken
    cdef int32_t max_tmpl_var   # highest variable slot any op uses (-3: none)
    cdef int32_t max_tmpl_op    # the op that uses it
    cdef readonly bint stateful
    cdef readonly bint has_retry

    def __cinit__(self):
        self.ops = NULL
        self.nops = 0
        self.cap = 0
        self.phase = _PH_RUN       # init() first for init ops
        self.run_first = 0
        self.run_end = -1
        self.keep = []
        self.open_blocks = []
        self.extracts = {}
        self.functions = {}
        self.tmpl_vars = []
        self.described = [[], [], []]
        self.max_tmpl_var = -3
        self.max_tmpl_op = -1

    def __dealloc__(self):
        free(self.ops)      # NULL once an Engine took it

    # -------------------------------------------------------------- phases and blocks

    def init(self):
        """The ops that follow are the init ops (run once per session, first); only before
        any op. Without it the plan starts with its run ops."""
        if self.nops or self.phase != _PH_RUN:
            raise ValueError("init() comes before any op")
        self.phase = _PH_INIT
        self.run_first = -1

    def run(self):
        """The ops that follow are the run ops (those before were the init ops)."""
        self._phase_to(_PH_RUN)

    def teardown(self):
        """The ops that follow are the teardown ops (run once, not measured)."""
        self._phase_to(_PH_TEARDOWN)

    def end(self):
        """Close the innermost block: its body is the ops since it was opened."""
        if not self.open_blocks:
            raise ValueError("end() without an open block")
        i = self.open_blocks[len(self.open_blocks) - 1]
        if self.nops == i + 1:
            raise ValueError(f"{self._where(i)}: the block's body is empty")
        self.open_blocks.pop()
        self.ops[i].body_end = self.nops
        prefix, suffix = self.described[self.phase][self._local(i)]
        self.described[self.phase][self._local(i)] = prefix + (self.nops - i - 1,) + suffix

    def __len__(self):
        return self.nops

    def describe(self, phase="ops"):
        """The ops of ``phase`` ("init_ops", "ops" or "teardown_ops") as tuples (a read-only
        view for tests and debugging): the op kind (``OP_*``), then the method's arguments
        as checked; a block's body length follows its own arguments."""
        return list(self.described[_PHASE_NAMES.index(phase)])

    # -------------------------------------------------------------- the ops

    def http(self, target, metric, bytes request not None, no_body=False):
        """A plain HTTP request: ``request`` is sent as it is (pre-rendered)."""
        target = _index("target_index", target)
        metric = _index("metric_index", metric, -1)
        if not request:
            raise ValueError("request_bytes is empty")
        cdef op_t* o = self._add(C_OP_HTTP, (OP_HTTP, target, metric, request, bool(no_body)))
        self.keep.append(request)
        o.target = target
        o.metric = metric
        o.no_body = 1 if no_body else 0
        o.req = PyBytes_AS_STRING(request)
        o.req_len = PyBytes_GET_SIZE(request)

    def http_template(self, target, metric, head, body=None, no_body=False, cookies=False,
                      extract=()):
        """A templated HTTP request: ``head`` (request line and header lines, no blank line,
        no Content-Length), ``body`` (None: no Content-Length), the cookie jar, and
        extractors [(var, EX_*, expr bytes, optional)]."""
        target = _index("target_index", target)
        metric = _index("metric_index", metric, -1)
        head = _check_template("head", head)
        body = None if body is None else _check_template("body", body)
        checked = []
        for ex in _as_list("extract", extract):
            if not isinstance(ex, tuple) or len(ex) != 4:
                raise ValueError("an extractor is (var_slot, EX_KIND, expr_bytes, optional)")
            slot, kind, expr, optional = ex
            slot = _index("an extractor's variable slot", slot)
            if kind not in (EX_JSON, EX_REGEX, EX_HEADER, EX_STATUS, EX_BODY):
                raise ValueError(f"unknown extractor kind {kind!r}")
            if not isinstance(expr, bytes):
                raise TypeError("an extractor's expression must be bytes")
            if kind in (EX_JSON, EX_REGEX, EX_HEADER) and not expr:
                raise ValueError("an extractor's expression is empty")
            checked.append((slot, kind, expr, bool(optional)))
        extras = {"head": head, "body": body}       # described as the compiler wrote it
        if cookies:
            extras["cookies"] = True
        if checked:
            extras["extract"] = checked
        cdef op_t* o = self._add(C_OP_HTTP, (OP_HTTP, target, metric, None, bool(no_body), extras))
        o.target = target
        o.metric = metric
        o.no_body = 1 if no_body else 0
        o.req = NULL
        self._tmpl(&o.head, head)
        if body is not None:
            o.has_body = 1
            self._tmpl(&o.body, body)
        o.cookies = 1 if cookies else 0
        if checked:
            self.extracts[self.nops - 1] = checked
            self._uses_var(max(slot for slot, _, _, _ in checked))
        self.stateful = True

    def delay(self, delay_ns):
        cdef op_t* o = self._add(C_OP_DELAY, None)
        o.delay_ns = _check_int("delay_ns", delay_ns, 0)
        self._said((OP_DELAY, o.delay_ns))

    def random_delay(self, min_ns, max_ns):
        lo = _check_int("min_ns", min_ns, 0)
        hi = _check_int("max_ns", max_ns, 0)
        if hi < lo:
            raise ValueError(f"max_ns {hi} < min_ns {lo}")
        if hi > _MAX_START_DELAY_NS:
            raise ValueError(f"max_ns {hi} is unreasonably long")
        cdef op_t* o = self._add(C_OP_RANDOM_DELAY, (OP_RANDOM_DELAY, lo, hi))
        o.delay_ns = lo
        o.num.span_ns = hi - lo

    def repeat(self, count, metric=-1):
        """Open a repeat block (``count`` runs of its body; a metric: repeat_traced)."""
        count = _check_int("count", count, 0)
        metric = _index("metric_index", metric, -1)
        cdef op_t* o = self._block(C_OP_REPEAT, (OP_REPEAT, count), (metric,))
        o.num.count = count
        o.metric = metric

    def loop(self, duration_ns):
        """Open a loop block: its body runs while less than ``duration_ns`` has passed."""
        duration_ns = _check_int("duration_ns", duration_ns, 0)
        cdef op_t* o = self._block(C_OP_LOOP, (OP_LOOP, duration_ns))
        o.num.duration_ns = duration_ns

    def retry(self, retries, backoff_ns):
        """Open a retry_on_error block."""
        retries = _check_int("retries", retries, 0)
        backoff_ns = _check_int("backoff_ns", backoff_ns, 0)
        cdef op_t* o = self._block(C_OP_RETRY, (OP_RETRY, retries, backoff_ns))
        o.num.retries = retries
        o.delay_ns = backoff_ns
        self.has_retry = True
        self.stateful = True

    def spawn(self, child):
        """Open an async block: its body is child ``child``'s session."""
        child = _index("child", child)
        cdef op_t* o = self._block(C_OP_ASYNC, (OP_ASYNC, child))
        o.ref.child = child
        self.stateful = True

    def spread(self, first_child, count, interval_ns):
        """Open a cc_spread block: children first_child .. + count - 1 run its body."""
        first_child = _index("child", first_child)
        count = _index("count", count, 1)
        interval_ns = _check_int("interval_ns", interval_ns, 0)
        cdef op_t* o = self._block(C_OP_SPREAD, (OP_SPREAD, first_child, count, interval_ns))
        o.ref.child = first_child
        o.arg.count = count
        o.num.interval_ns = interval_ns
        self.stateful = True

    def assign(self, var, value, metric=-1):
        var = _index("variable slot", var)
        metric = _index("metric_index", metric, -1)
        value = _check_template("value", value)
        cdef op_t* o = self._add(C_OP_ASSIGN, (OP_ASSIGN, var, value, metric))
        o.ref.var = var
        o.metric = metric
        self._tmpl(&o.head, value)
        self._uses_var(var)

    def update_add(self, var, delta, metric=-1):
        var = _index("variable slot", var)
        delta = _check_int("delta", delta, -MAX_UPDATE_ADD)
        if delta > MAX_UPDATE_ADD:
            raise ValueError(f"delta {delta} is out of range")
        metric = _index("metric_index", metric, -1)
        cdef op_t* o = self._add(C_OP_UPDATE_ADD, (OP_UPDATE_ADD, var, delta, metric))
        o.ref.var = var
        o.num.delta = delta
        o.metric = metric
        self._uses_var(var)

    def unset(self, var):
        var = _index("variable slot", var)
        cdef op_t* o = self._add(C_OP_UNSET, (OP_UNSET, var))
        o.ref.var = var
        self._uses_var(var)

    def add_metric(self, metric, value=0, var=-1):
        """Record ``value`` (or variable ``var``'s integer value) in ``metric``."""
        metric = _index("metric_index", metric, -1)
        value = _check_int("value", value, 0)
        var = _index("variable slot", var, -1)
        cdef op_t* o = self._add(C_OP_ADD_METRIC, (OP_ADD_METRIC, metric, value, var))
        o.metric = metric
        o.num.value = value
        o.ref.var = var
        self._uses_var(var)

    def abort(self, metric):
        metric = _index("metric_index", metric, -1)
        cdef op_t* o = self._add(C_OP_ABORT, (OP_ABORT, metric))
        o.metric = metric

    def python(self, metric, function):
        """A python step: ``function(variables) -> dict | None``, with the GIL."""
        metric = _index("metric_index", metric, -1)
        if not callable(function):
            raise TypeError("the python step's function is not callable")
        cdef op_t* o = self._add(C_OP_PYTHON, (OP_PYTHON, metric, function))
        o.metric = metric
        self.functions[self.nops - 1] = function

    def await_child(self, child, timeout_ns, metric=-1):
        child = _index("child", child)
        timeout_ns = _check_int("timeout_ns", timeout_ns, 0)
        metric = _index("metric_index", metric, -1)
        cdef op_t* o = self._add(C_OP_AWAIT, (OP_AWAIT, child, timeout_ns, metric))
        o.ref.child = child
        o.delay_ns = timeout_ns
        o.metric = metric

    def await_all(self, timeout_ns, metric=-1):
        timeout_ns = _check_int("timeout_ns", timeout_ns, 0)
        metric = _index("metric_index", metric, -1)
        cdef op_t* o = self._add(C_OP_AWAIT_ALL, (OP_AWAIT_ALL, timeout_ns, metric))
        o.delay_ns = timeout_ns
        o.metric = metric

    def signal(self, child, signal):
        """Send ``signal`` to child ``child`` (-1: to the parent)."""
        child = _index("child", child, -1)
        signal = _index("signal", signal)
        cdef op_t* o = self._add(C_OP_SIGNAL, (OP_SIGNAL, child, signal))
        o.ref.child = child
        o.arg.signal = signal

    def await_signal(self, signal, timeout_ns, metric=-1):
        signal = _index("signal", signal)
        timeout_ns = _check_int("timeout_ns", timeout_ns, 0)
        metric = _index("metric_index", metric, -1)
        cdef op_t* o = self._add(C_OP_AWAIT_SIGNAL, (OP_AWAIT_SIGNAL, signal, timeout_ns, metric))
        o.ref.signal = signal
        o.delay_ns = timeout_ns
        o.metric = metric

    def ws_connect(self, conn, target, metric, head):
        conn = _index("connection", conn)
        target = _index("target_index", target)
        metric = _index("metric_index", metric, -1)
        head = _check_template("head", head)
        cdef op_t* o = self._add(C_OP_WS_CONNECT, (OP_WS_CONNECT, conn, target, metric, head))
        o.ref.conn = conn
        o.target = target
        o.metric = metric
        self._tmpl(&o.head, head)

    def ws_send(self, conn, metric, opcode, payload):
        conn = _index("connection", conn)
        metric = _index("metric_index", metric, -1)
        if isinstance(opcode, bool) or opcode not in (1, 2):
            raise ValueError("opcode must be 1 (text) or 2 (binary)")
        payload = _check_template("payload", payload)
        cdef op_t* o = self._add(C_OP_WS_SEND, (OP_WS_SEND, conn, metric, opcode, payload))
        o.ref.conn = conn
        o.metric = metric
        o.arg.opcode = opcode
        self._tmpl(&o.head, payload)

    def ws_recv(self, conn, metric, timeout_ns, var=-1):
        conn = _index("connection", conn)
        metric = _index("metric_index", metric, -1)
        timeout_ns = _check_int("timeout_ns", timeout_ns, 0)
        var = _index("variable slot", var, -1)
        cdef op_t* o = self._add(C_OP_WS_RECV, (OP_WS_RECV, conn, metric, timeout_ns, var))
        o.ref.conn = conn
        o.metric = metric
        o.delay_ns = timeout_ns
        o.arg.var = var
        self._uses_var(var)

    def ws_await_recv(self, conn, metric, timeout_ns, expected):
        conn = _index("connection", conn)
        metric = _index("metric_index", metric, -1)
        timeout_ns = _check_int("timeout_ns", timeout_ns, 0)
        expected = _check_template("expected", expected)
        cdef op_t* o = self._add(C_OP_WS_AWAIT_RECV,
                                 (OP_WS_AWAIT_RECV, conn, metric, timeout_ns, expected))
        o.ref.conn = conn
        o.metric = metric
        o.delay_ns = timeout_ns
        self._tmpl(&o.body, expected)

    def ws_close(self, conn, metric):
        conn = _index("connection", conn)
        metric = _index("metric_index", metric, -1)
        cdef op_t* o = self._add(C_OP_WS_CLOSE, (OP_WS_CLOSE, conn, metric))
        o.ref.conn = conn
        o.metric = metric

    # -------------------------------------------------------------- inside

    cdef _phase_to(self, int32_t phase):
        if self.open_blocks:
            raise ValueError(f"{self._where(self.open_blocks[len(self.open_blocks) - 1])}: its block is not ended")
        if phase == self.phase:
            return
        if phase < self.phase:
            raise ValueError(f"the plan is already past {_PHASE_NAMES[phase]}")
        if phase == _PH_RUN or self.run_first < 0:
            self.run_first = self.nops
        if phase == _PH_TEARDOWN:
            self.run_end = self.nops
        self.phase = phase

    cdef int32_t _start(self, int32_t phase):
        if phase == _PH_INIT:
            return 0
        if phase == _PH_RUN:
            return self.run_first
        return self.run_end

    cdef int32_t _local(self, int32_t i):
        return i - self._start(self.phase)

    def _where(self, int32_t i):
        cdef int32_t phase = self.phase
        while phase > 0 and i < self._start(phase):
            phase -= 1
        return f"{_PHASE_NAMES[phase]}[{i - self._start(phase)}]"

    cdef op_t* _add(self, int32_t kind, object described) except NULL:
        cdef op_t* grown
        cdef int32_t cap
        if self.taken:
            raise RuntimeError("an Engine has taken this plan already")
        if self.nops == self.cap:
            cap = 16 if self.cap == 0 else self.cap * 2
            grown = <op_t*>realloc(self.ops, cap * sizeof(op_t))
            if grown == NULL:
                raise MemoryError()
            self.ops = grown
            self.cap = cap
        cdef op_t* o = &self.ops[self.nops]
        memset(o, 0, sizeof(op_t))
        o.kind = kind
        o.metric = -1
        o.body_end = -1
        self.nops += 1
        self.tmpl_vars.append(-3)
        if described is not None:
            self.described[self.phase].append(described)
        if kind != C_OP_HTTP and kind > C_OP_LOOP:
            self.stateful = True
        return o

    cdef _said(self, object described):
        self.described[self.phase].append(described)

    cdef op_t* _block(self, int32_t kind, tuple prefix, tuple suffix=()) except NULL:
        if len(self.open_blocks) >= MAX_NESTING:
            raise ValueError(f"blocks nested deeper than {MAX_NESTING}")
        cdef op_t* o = self._add(kind, (prefix, suffix))
        self.open_blocks.append(self.nops - 1)
        return o

    cdef _uses_var(self, int32_t var):
        if var > self.max_tmpl_var:
            self.max_tmpl_var = var
            self.max_tmpl_op = self.nops - 1

    cdef int _tmpl(self, tmpl_t* out, list parts) except -1:
        cdef _CMem mem = _CMem(sizeof(part_t) * (len(parts) + 1))
        cdef part_t* arr = <part_t*>mem.ptr
        cdef int32_t i
        self.keep.append(mem)
        for i, part in enumerate(parts):
            if isinstance(part, bytes):
                self.keep.append(part)
                arr[i].data = PyBytes_AS_STRING(part)
                arr[i].len = PyBytes_GET_SIZE(part)
                arr[i].var = 0
            else:
                arr[i].data = NULL
                arr[i].var = part
                self._uses_var(part)
        out.parts = arr
        out.nparts = len(parts)
        return 0

    def _check_against(self, int32_t ntargets, int32_t nmetrics, int32_t nvars,
                       int32_t nchildren, int32_t nconns, int32_t nsignals):
        """Every index of the plan within what the engine has; ValueError naming the op."""
        cdef int32_t i
        cdef op_t* o
        if self.taken:
            raise RuntimeError("an Engine has taken this plan already")
        if self.open_blocks:
            raise ValueError(f"{self._where(self.open_blocks[len(self.open_blocks) - 1])}: its block is not ended")
        if self.max_tmpl_var >= nvars:
            raise ValueError(f"{self._where(self.max_tmpl_op)}: variable slot "
                             f"{self.max_tmpl_var} out of range (have {nvars})")
        for i in range(self.nops):
            o = &self.ops[i]
            where = self._where(i)
            if o.metric >= nmetrics:
                raise ValueError(f"{where}: metric_index {o.metric} out of range "
                                 f"(have {nmetrics} metric keys)")
            if o.kind == C_OP_HTTP or o.kind == C_OP_WS_CONNECT:
                if o.target >= ntargets:
                    raise ValueError(f"{where}: target_index {o.target} out of range "
                                     f"(have {ntargets} targets)")
            if o.kind >= C_OP_WS_CONNECT and o.ref.conn >= nconns:
                raise ValueError(f"{where}: connection {o.ref.conn} out of range (have {nconns})")
            if (o.kind == C_OP_ASYNC or o.kind == C_OP_AWAIT or o.kind == C_OP_SIGNAL) \
                    and o.ref.child >= nchildren:
                raise ValueError(f"{where}: child {o.ref.child} out of range (have {nchildren})")
            if o.kind == C_OP_SPREAD and o.ref.child + o.arg.count > nchildren:
                raise ValueError(f"{where}: children {o.ref.child}.."
                                 f"{o.ref.child + o.arg.count - 1} out of range")
            if o.kind == C_OP_SIGNAL and o.arg.signal >= nsignals:
                raise ValueError(f"{where}: signal {o.arg.signal} out of range (have {nsignals})")
            if o.kind == C_OP_AWAIT_SIGNAL and o.ref.signal >= nsignals:
                raise ValueError(f"{where}: signal {o.ref.signal} out of range (have {nsignals})")

    cdef int _finish(self, list keep, list var_names, int32_t nthreads) except -1:
        """What needs the engine: extractors (a regex per thread), python steps' calls."""
        cdef _CMem mem
        cdef extract_t* arr
        cdef JsonPath jp
        cdef Regex rx
        cdef _CMem res_mem
        cdef int32_t i, j, k
        cdef op_t* o
        if self.taken:
            raise RuntimeError("an Engine has taken this plan already")
        for i, extract in self.extracts.items():
            o = &self.ops[i]
            mem = _CMem(sizeof(extract_t) * (len(extract) + 1))
            arr = <extract_t*>mem.ptr
            keep.append(mem)
            for k, (slot, kind, expr, optional) in enumerate(extract):
                arr[k].var = slot
                arr[k].kind = kind
                arr[k].optional = optional
                if kind == EX_JSON:
                    jp = JsonPath(expr.decode("utf-8"))
                    keep.append(jp)
                    arr[k].steps = jp.steps
                    arr[k].nsteps = jp.nsteps
                elif kind == EX_REGEX:
                    res_mem = _CMem(sizeof(regex_t*) * nthreads)
                    keep.append(res_mem)
                    arr[k].re = <regex_t**>res_mem.ptr
                    for j in range(nthreads):
                        rx = Regex(expr)
                        keep.append(rx)
                        arr[k].re[j] = &rx.re
                elif kind == EX_HEADER:
                    keep.append(expr)
                    arr[k].name = PyBytes_AS_STRING(expr)
                    arr[k].name_len = len(expr)
            o.extract = arr
            o.nextract = len(extract)
        slots = {name: i for i, name in enumerate(var_names)}
        for i, function in self.functions.items():
            # (function, names, slot of each name, [traceback logged yet])
            call = (function, var_names, slots, [False])
            keep.append(call)
            self.ops[i].pyfunc = <void*>call
        keep.extend(self.keep)
        return 0

    cdef op_t* _take(self, int32_t* nops, int32_t* run_first, int32_t* run_end) except? NULL:
        """Hand the op array over to an Engine (which frees it); the builder is spent."""
        if self.taken:
            raise RuntimeError("an Engine has taken this plan already")
        cdef op_t* ops = self.ops
        nops[0] = self.nops
        run_first[0] = self.run_first if self.run_first >= 0 else 0
        run_end[0] = self.run_end if self.run_end >= 0 else self.nops
        self.ops = NULL
        self.taken = True
        return ops


def _check_template(what, parts):
    """A template: a list of bytes (literal) and ints (a variable slot, or VAR_*)."""
    if not isinstance(parts, (list, tuple)):
        raise TypeError(f"{what}: a template is a list of bytes and variable slots")
    out = []
    for part in parts:
        if isinstance(part, (bytes, bytearray, memoryview)):
            if len(part):
                out.append(bytes(part))
        elif isinstance(part, int) and not isinstance(part, bool):
            if not VAR_ITERATION <= part <= _INT32_MAX:
                raise ValueError(f"{what}: variable slot {part} out of range")
            out.append(part)
        else:
            raise TypeError(f"{what}: template part {part!r} is neither bytes nor a slot")
    return out
