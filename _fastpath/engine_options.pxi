# Included by engine.pyx: ``EngineOptions``, how one Engine runs its plan, as one typed object.
#
# Every option of an Engine (the load model, timeouts, TLS, session rules, the stateful
# language's sizes) is a typed, read-only attribute, checked once in ``__init__`` (TypeError
# for a wrong type, ValueError for a value out of range), so ``Engine`` takes one checked
# object instead of a long list of keywords. ``Engine(targets, metric_keys, ops, **kw)``
# still builds one from ``kw``, for tests and benches. See ``Engine``'s docstring for what
# each option means.

cdef class EngineOptions:
    """How an Engine runs: EngineOptions(sessions=1, threads=1, iterations=0, duration_ns=0,
    connect_timeout_ns=5e9, request_timeout_ns=30e9, arrival_rate_per_s=0.0, rate_stages=(),
    tls_ca_file=None, tls_insecure=False, scenario_timeout_ns=0, start_delay_ns=0,
    start_random_delay_ns=0, var_names=(), nchildren=0, nconns=0, nsignals=0,
    max_capture=1 MiB, session_id_base=0); all keyword-only, checked here."""

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
    cdef list _stage_rows                     # the open-model schedule (``_schedule``)

    def __init__(self, *, sessions=1, threads=1, iterations=0, duration_ns=0,
                 connect_timeout_ns=5_000_000_000, request_timeout_ns=30_000_000_000,
                 arrival_rate_per_s=0.0, rate_stages=(), tls_ca_file=None, tls_insecure=False,
                 scenario_timeout_ns=0, start_delay_ns=0, start_random_delay_ns=0,
                 var_names=(), nchildren=0, nconns=0, nsignals=0, max_capture=1 << 20,
                 session_id_base=0):
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
        if not isinstance(tls_insecure, bool):
            raise TypeError(f"tls_insecure must be a bool, not {type(tls_insecure).__name__}")
        self.tls_insecure = tls_insecure
        if tls_ca_file is not None:
            if not isinstance(tls_ca_file, (str, os.PathLike)):
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
