# Included by engine.pyx: ``EngineOptions``, how one Engine runs its plan, as one typed object.
#
# Every option of an Engine (the load model, timeouts, TLS, session rules, the stateful
# language's sizes) is a typed, read-only attribute, checked once in ``__init__`` (TypeError
# for a wrong type, ValueError for a value out of range), so ``Engine`` takes one checked
# object instead of a long list of keywords. ``replace(**changes)`` gives a checked copy
# (the worker picks the thread count of a compiled plan's options that way). The open
# model's schedule (rates per stage, ``_schedule``) is worked out here, once. See
# ``Engine``'s docstring for what each option means.

cdef class EngineOptions:
    """How an Engine runs: EngineOptions(sessions=1, threads=1, iterations=0, duration_ns=0,
    connect_timeout_ns=5e9, request_timeout_ns=30e9, arrival_rate_per_s=0.0, rate_stages=(),
    tls_ca_file=None, tls_insecure=False, scenario_timeout_ns=0, start_delay_ns=0,
    start_random_delay_ns=0, var_names=(), nchildren=0, nconns=0, nsignals=0,
    max_capture=1 MiB, session_id_base=0, first_arrival=0, graceful_stop_ns=None); all
    keyword-only, checked here."""

    cdef readonly int64_t sessions
    cdef readonly int64_t threads
    cdef readonly int64_t iterations
    cdef readonly int64_t duration_ns
    cdef readonly int64_t connect_timeout_ns
    cdef readonly int64_t request_timeout_ns
    cdef readonly double arrival_rate_per_s
    cdef readonly tuple rate_stages
    cdef readonly object tls_ca_file          # bytes (fsencoded) or None
    cdef readonly bint tls_insecure
    cdef readonly int64_t scenario_timeout_ns
    cdef readonly int64_t start_delay_ns
    cdef readonly int64_t start_random_delay_ns
    cdef readonly tuple var_names
    cdef readonly int32_t nchildren
    cdef readonly int32_t nconns
    cdef readonly int32_t nsignals
    cdef readonly int64_t max_capture
    cdef readonly int64_t session_id_base
    cdef readonly int64_t first_arrival
    cdef readonly object graceful_stop_ns     # int >= 0, or None: no cut
    cdef list _stage_rows                     # the open-model schedule (``_schedule``)

    def __init__(self, *, sessions=1, threads=1, iterations=0, duration_ns=0,
                 connect_timeout_ns=5_000_000_000, request_timeout_ns=30_000_000_000,
                 arrival_rate_per_s=0.0, rate_stages=(), tls_ca_file=None, tls_insecure=False,
                 scenario_timeout_ns=0, start_delay_ns=0, start_random_delay_ns=0,
                 var_names=(), nchildren=0, nconns=0, nsignals=0, max_capture=1 << 20,
                 session_id_base=0, first_arrival=0, graceful_stop_ns=None):
        sessions = _check_int("sessions", sessions, 1)
        if sessions > 10_000_000:
            raise ValueError(f"sessions={sessions} is unreasonably large")
        self.sessions = sessions
        self.threads = min(_check_int("threads", threads, 1), sessions)
        iterations = _check_int("iterations", iterations, 0)
        duration_ns = _check_int("duration_ns", duration_ns, 0)
        self.connect_timeout_ns = _check_int("connect_timeout_ns", connect_timeout_ns, 1)
        self.request_timeout_ns = _check_int("request_timeout_ns", request_timeout_ns, 1)
        self.scenario_timeout_ns = _check_int("scenario_timeout_ns", scenario_timeout_ns, 0)
        start_delay_ns = _check_int("start_delay_ns", start_delay_ns, 0)
        start_random_delay_ns = _check_int("start_random_delay_ns", start_random_delay_ns, 0)
        if start_delay_ns + start_random_delay_ns > _MAX_START_DELAY_NS:   # Python ints
            raise ValueError(
                f"start_delay_ns + start_random_delay_ns = "
                f"{start_delay_ns + start_random_delay_ns} is unreasonably long"
            )
        self.start_delay_ns = start_delay_ns
        self.start_random_delay_ns = start_random_delay_ns
        self._stage_rows, duration_ns, iterations = _open_schedule(
            arrival_rate_per_s, rate_stages, duration_ns, iterations)
        if not self._stage_rows and iterations == 0 and duration_ns == 0:
            raise ValueError("iterations and duration_ns are both 0: the run would never end")
        self.iterations = iterations
        self.duration_ns = duration_ns
        self.arrival_rate_per_s = _check_rate("arrival_rate_per_s", arrival_rate_per_s)
        self.rate_stages = tuple(_as_list("rate_stages", rate_stages))
        self.var_names = tuple(str(v) if isinstance(v, str) else _bad_key(i, v)
                               for i, v in enumerate(_as_list("var_names", var_names)))
        sizes = {
            "nvars": len(self.var_names),
            "nchildren": _check_int("nchildren", nchildren, 0),
            "nconns": _check_int("nconns", nconns, 0),
            "nsignals": _check_int("nsignals", nsignals, 0),
        }
        for what, limit in (("nvars", MAX_VARIABLES), ("nchildren", MAX_CHILDREN),
                            ("nconns", MAX_CONNS), ("nsignals", MAX_SIGNALS)):
            if sizes[what] > limit:
                raise ValueError(f"{what}={sizes[what]} is over the limit of {limit}")
        self.nchildren = sizes["nchildren"]
        self.nconns = sizes["nconns"]
        self.nsignals = sizes["nsignals"]
        if sessions * (1 + self.nchildren) > 10_000_000:
            raise ValueError(
                f"sessions x (1 + nchildren) = {sessions * (1 + self.nchildren)} session "
                "slots is unreasonably large")
        self.max_capture = _check_int("max_capture", max_capture, 0)
        self.session_id_base = _check_int("session_id_base", session_id_base, 0)
        self.first_arrival = _check_int("first_arrival", first_arrival, 0)
        self.graceful_stop_ns = (None if graceful_stop_ns is None
                                 else _check_int("graceful_stop_ns", graceful_stop_ns, 0))
        if self.first_arrival and not self._stage_rows:
            raise ValueError("first_arrival is for the open model (an arrival schedule)")
        if not isinstance(tls_insecure, bool):
            raise TypeError(f"tls_insecure must be a bool, not {type(tls_insecure).__name__}")
        self.tls_insecure = tls_insecure
        if tls_ca_file is not None:
            if not isinstance(tls_ca_file, (str, bytes, os.PathLike)):
                raise TypeError(
                    f"tls_ca_file must be a path (str) or None, not {type(tls_ca_file).__name__}"
                )
            tls_ca_file = os.fsencode(tls_ca_file)
            if not tls_ca_file or b"\0" in tls_ca_file:
                raise ValueError(f"tls_ca_file={tls_ca_file!r} is not a valid path")
        self.tls_ca_file = tls_ca_file

    @property
    def open_model(self) -> bool:
        return bool(self._stage_rows)

    def replace(self, **changes):
        """A copy with ``changes`` (keywords of ``__init__``), checked again."""
        fields = {name: getattr(self, name) for name in _OPTION_NAMES}
        fields.update(changes)
        return EngineOptions(**fields)

    def __repr__(self):
        return "EngineOptions(" + ", ".join(
            f"{name}={getattr(self, name)!r}" for name in _OPTION_NAMES) + ")"


_OPTION_NAMES = (
    "sessions", "threads", "iterations", "duration_ns", "connect_timeout_ns",
    "request_timeout_ns", "arrival_rate_per_s", "rate_stages", "tls_ca_file", "tls_insecure",
    "scenario_timeout_ns", "start_delay_ns", "start_random_delay_ns", "var_names", "nchildren",
    "nconns", "nsignals", "max_capture", "session_id_base", "first_arrival", "graceful_stop_ns",
)


# ------------------------------------------------------------------ the open-model schedule

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
