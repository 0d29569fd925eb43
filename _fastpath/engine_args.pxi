# Included by engine.pyx: checking and converting Engine's Python arguments (targets, ops, schedules) (see the module docstring).

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
        metric = _check_int(f"{where} metric_index", metric, -1)      # -1: not measured
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


def _plan_from_tuples(ops, init_ops, teardown_ops, int ntargets, int nmetrics, dict limits):
    """The tuple form of a plan (``Engine``'s docstring; tests and benches write it) checked
    as before, then handed to a ``PlanBuilder`` op by op."""
    phases = []
    for name, given in (("init_ops", init_ops), ("ops", ops), ("teardown_ops", teardown_ops)):
        phases.append(_check_bodies([_parse_op(i, op, ntargets, nmetrics, name, limits)
                                     for i, op in enumerate(_as_list(name, given))], name))
    if not phases[1]:
        raise ValueError("ops must not be empty")
    builder = PlanBuilder()
    if phases[0]:
        builder.init()
        _feed(builder, phases[0])
    builder.run()
    _feed(builder, phases[1])
    builder.teardown()
    _feed(builder, phases[2])
    return builder


cdef _feed(PlanBuilder b, list ops):
    """Checked op tuples -> builder calls (a block's body ends after its body_len ops)."""
    ends = []
    for i, p in enumerate(ops):
        while ends and ends[len(ends) - 1] <= i:
            ends.pop()
            b.end()
        kind = p[0]
        if kind == OP_HTTP:
            if len(p) == 6:
                ex = p[5]
                b.http_template(p[1], p[2], ex["head"], ex["body"], p[4], ex["cookies"],
                                ex["extract"])
            else:
                b.http(p[1], p[2], p[3], p[4])
        elif kind == OP_DELAY:
            b.delay(p[1])
        elif kind == OP_RANDOM_DELAY:
            b.random_delay(p[1], p[2])
        elif kind == OP_REPEAT:
            b.repeat(p[1], p[3])
            ends.append(i + 1 + p[2])
        elif kind == OP_LOOP:
            b.loop(p[1])
            ends.append(i + 1 + p[2])
        elif kind == OP_RETRY:
            b.retry(p[1], p[2])
            ends.append(i + 1 + p[3])
        elif kind == OP_ASYNC:
            b.spawn(p[1])
            ends.append(i + 1 + p[2])
        elif kind == OP_SPREAD:
            b.spread(p[1], p[2], p[3])
            ends.append(i + 1 + p[4])
        elif kind == OP_ASSIGN:
            b.assign(p[1], p[2], p[3])
        elif kind == OP_UPDATE_ADD:
            b.update_add(p[1], p[2], p[3])
        elif kind == OP_UNSET:
            b.unset(p[1])
        elif kind == OP_ADD_METRIC:
            b.add_metric(p[1], p[2], p[3])
        elif kind == OP_ABORT:
            b.abort(p[1])
        elif kind == OP_PYTHON:
            b.python(p[1], p[2])
        elif kind == OP_AWAIT:
            b.await_child(p[1], p[2], p[3])
        elif kind == OP_AWAIT_ALL:
            b.await_all(p[1], p[2])
        elif kind == OP_SIGNAL:
            b.signal(p[1], p[2])
        elif kind == OP_AWAIT_SIGNAL:
            b.await_signal(p[1], p[2], p[3])
        elif kind == OP_WS_CONNECT:
            b.ws_connect(p[1], p[2], p[3], p[4])
        elif kind == OP_WS_SEND:
            b.ws_send(p[1], p[2], p[3], p[4])
        elif kind == OP_WS_RECV:
            b.ws_recv(p[1], p[2], p[3], p[4])
        elif kind == OP_WS_AWAIT_RECV:
            b.ws_await_recv(p[1], p[2], p[3], p[4])
        else:
            b.ws_close(p[1], p[2])
    while ends:
        ends.pop()
        b.end()
