"""The compiler's driver: an assignment's shares -> one ``EnginePlan`` per share.

Everything that can be decided before the first request is decided here: the entry's steps
are checked (``check.check_entries``, the master's rules), then compiled (``emit``): target
hosts resolved to addresses (by the worker's ``Backend``), each HTTP request rendered once to
its exact bytes (request line, headers, body) or split into literal bytes and variable slots,
metric keys, variables, connections, child sessions and signals numbered. The engine then only
copies bytes to sockets and records latencies; it never sees a Python object per request
(python steps aside). This module holds the result (``EnginePlan``) and the per-entry rules
(init, run, teardown, sequences, timing, the open model and its takeover offset).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from _fastpath.engine import Engine, EngineOptions, PlanBuilder
from chaperon.core.durations import parse_duration_ns
from chaperon.core.errors import InvalidArgument
from chaperon.core.lang.check import check_entries
from chaperon.core.lang.emit import Backend, StepCompiler, duration_ns
from chaperon.core.lang.limits import (
    DEFAULT_CONNECT_TIMEOUT_NS,
    DEFAULT_MAX_CAPTURE,
    DEFAULT_REQUEST_TIMEOUT_NS,
)
from chaperon.core.loadtest import Inventory, effective_config, entry_scenarios
from chaperon.v1 import worker_pb2

# What an Engine runs (the rest of ``EnginePlan.engine_kwargs`` is its ``EngineOptions``).
_PLAN_ARGS = ("targets", "metric_keys", "ops", "init_ops", "teardown_ops")


@dataclass
class EnginePlan:
    """Arguments for one ``_fastpath.engine.Engine`` (one scenario entry's share)."""

    entry_index: int
    # (ip, port) for http, (ip, port, True, host name) for https
    targets: list[tuple[Any, ...]] = field(default_factory=list)
    metric_keys: list[str] = field(default_factory=list)
    # The ops (init, run, teardown), already in the engine's C array.
    builder: PlanBuilder = field(default_factory=PlanBuilder)
    sessions: int = 0
    iterations: int = 0
    duration_ns: int = 0
    connect_timeout_ns: int = DEFAULT_CONNECT_TIMEOUT_NS
    request_timeout_ns: int = DEFAULT_REQUEST_TIMEOUT_NS
    # Open model: sessions per second (this worker's share) and the ramp stages
    # [(duration_ns, target_per_s)]; ``sessions`` is then the number of session slots.
    arrival_rate_per_s: float = 0.0
    rate_stages: list[tuple[int, float]] = field(default_factory=list)
    # HTTPS: a PEM CA bundle on the worker (None: the system's), or no verification at all.
    tls_ca_file: str | None = None
    tls_insecure: bool = False
    # Per-session rules (init ops once before, teardown ops once after, not measured, are in
    # the builder): a limit on each run of the scenario, and an initial delay (fixed + uniform
    # random part).
    scenario_timeout_ns: int = 0
    start_delay_ns: int = 0
    start_random_delay_ns: int = 0
    # The session language: variable slots (index = slot), child-session slots, WebSocket
    # connections and distinct signal values per session, response bytes kept for extraction.
    var_names: list[str] = field(default_factory=list)
    nchildren: int = 0
    nconns: int = 0
    nsignals: int = 0
    max_capture: int = DEFAULT_MAX_CAPTURE
    # Closed model: the entry-wide number of the first session ({{session_id}}).
    session_id_base: int = 0

    @property
    def open_model(self) -> bool:
        return self.arrival_rate_per_s > 0 or bool(self.rate_stages)

    @property
    def ops(self) -> list[tuple[Any, ...]]:
        """The run ops, as tuples (``PlanBuilder.describe``: for tests and debugging)."""
        return self.builder.describe("ops")  # type: ignore[no-any-return]

    @property
    def init_ops(self) -> list[tuple[Any, ...]]:
        return self.builder.describe("init_ops")  # type: ignore[no-any-return]

    @property
    def teardown_ops(self) -> list[tuple[Any, ...]]:
        return self.builder.describe("teardown_ops")  # type: ignore[no-any-return]

    def engine(self, threads: int) -> Engine:
        """The Engine of this plan on ``threads`` threads (it takes the builder's ops over)."""
        return Engine(self.targets, self.metric_keys, self.builder, self.engine_options(threads))

    def engine_options(self, threads: int) -> EngineOptions:
        """The engine's options for this plan on ``threads`` threads (checked by the engine)."""
        kwargs = self.engine_kwargs(threads)
        return EngineOptions(**{k: v for k, v in kwargs.items() if k not in _PLAN_ARGS})

    def engine_kwargs(self, threads: int) -> dict[str, Any]:
        """``Engine``'s keyword form (the plan as tuples, ``_PLAN_ARGS``, and the options that
        differ from the engine's defaults): what ``engine`` passes, readable in tests."""
        extra: dict[str, Any] = {}
        if self.open_model:
            extra = {"arrival_rate_per_s": self.arrival_rate_per_s, "rate_stages": self.rate_stages}
        if any(len(t) > 2 and t[2] for t in self.targets):
            extra["tls_ca_file"] = self.tls_ca_file
            extra["tls_insecure"] = self.tls_insecure
        # Only what is used, so plain plans keep the engine's plain path.
        for name in ("init_ops", "teardown_ops"):
            if getattr(self, name):
                extra[name] = getattr(self, name)
        for name in (
            "scenario_timeout_ns",
            "start_delay_ns",
            "start_random_delay_ns",
            "nchildren",
            "nconns",
            "nsignals",
            "session_id_base",
        ):
            if getattr(self, name):
                extra[name] = getattr(self, name)
        if self.var_names:
            extra["var_names"] = list(self.var_names)
        if self.max_capture != DEFAULT_MAX_CAPTURE:
            extra["max_capture"] = self.max_capture
        return {
            **extra,
            "targets": self.targets,
            "metric_keys": self.metric_keys,
            "ops": self.ops,
            "sessions": self.sessions,
            "threads": max(1, min(threads, self.sessions)),
            "iterations": self.iterations,
            "duration_ns": self.duration_ns,
            "connect_timeout_ns": self.connect_timeout_ns,
            "request_timeout_ns": self.request_timeout_ns,
        }


def _config_duration(config: dict[str, Any], name: str, default_ns: int) -> int:
    value = config.get(name)
    if isinstance(value, str) and value:
        return duration_ns(value, f"config.{name}", default_ns)
    return default_ns


def compile_assignment(assignment: worker_pb2.Assignment, backend: Backend) -> list[EnginePlan]:
    """One EnginePlan per share; raises InvalidArgument / ResourceExhausted naming the field
    (the master's rules, on the entries of the shares), and whatever ``backend`` raises
    (PermissionDenied for a target outside the allow-list or a refused python step)."""
    lt = assignment.load_test
    plans = []
    if not assignment.shares:
        raise InvalidArgument([("shares", "the assignment has no share of any scenario")])
    for i, share in enumerate(assignment.shares):
        if not 0 <= share.entry_index < len(lt.scenarios):
            raise InvalidArgument([(f"shares[{i}].entry_index", "out of range")])
        if share.sessions <= 0:
            raise InvalidArgument([(f"shares[{i}].sessions", "must be > 0")])
    check_entries(lt, (share.entry_index for share in assignment.shares))
    for i, share in enumerate(assignment.shares):
        entry = lt.scenarios[share.entry_index]
        p = f"scenarios[{share.entry_index}]"
        plan = EnginePlan(entry_index=share.entry_index)
        scenarios = entry_scenarios(entry)
        inventory = Inventory.of(
            (getattr(s, part) for s in scenarios for part in ("init", "run", "teardown")), lt
        )
        config = effective_config(lt, entry)
        c = StepCompiler(backend, config, lt, inventory)
        if entry.session_name:
            c.key_prefix = f"{entry.session_name}: "
        c.b.init()
        if entry.HasField("scenario"):
            c.steps(entry.scenario.init, f"{p}.scenario.init")
            c.b.run()
            c.steps(entry.scenario.run, f"{p}.scenario.run")
            c.b.teardown()
            c.steps(entry.scenario.teardown, f"{p}.scenario.teardown")
        else:
            # A sequence: each scenario's init and run, in order, are the run; the teardowns
            # run after, in the same order. Variables carry over from one to the next.
            for k, scenario in enumerate(scenarios):
                q = f"{p}.sequence.scenarios[{k}]"
                c.b.run()
                c.steps(scenario.init, f"{q}.init")
                c.steps(scenario.run, f"{q}.run")
            for k, scenario in enumerate(scenarios):
                q = f"{p}.sequence.scenarios[{k}]"
                c.b.teardown()
                c.steps(scenario.teardown, f"{q}.teardown")
        plan.targets, plan.metric_keys, plan.builder = c.targets, c.metric_keys, c.b
        plan.var_names = list(c.names.var_names)
        plan.nchildren, plan.nconns, plan.nsignals = c.nchildren, c.nconns, c.nsignals
        plan.max_capture = int(config.get("max_capture", DEFAULT_MAX_CAPTURE))  # checked
        plan.session_id_base = max(0, int(share.first_session))
        if entry.scenario_timeout:
            plan.scenario_timeout_ns = parse_duration_ns(entry.scenario_timeout)
        if entry.delay:
            plan.start_delay_ns = parse_duration_ns(entry.delay)
        if entry.random_delay:
            plan.start_random_delay_ns = parse_duration_ns(entry.random_delay)
        plan.sessions = int(share.sessions)
        plan.duration_ns = parse_duration_ns(entry.duration) if entry.duration else 0
        plan.iterations = int(entry.iterations)
        if entry.HasField("arrival_rate"):
            fraction = share.rate_fraction
            if not 0 < fraction <= 1:
                raise InvalidArgument(
                    [(f"shares[{i}].rate_fraction", "must be in (0, 1] for an open-model entry")]
                )
            rate = entry.arrival_rate
            plan.arrival_rate_per_s = rate.per_second * fraction
            plan.rate_stages = [
                (parse_duration_ns(stage.duration), stage.target * fraction)
                for stage in rate.stages
            ]
            if plan.rate_stages:
                plan.duration_ns = sum(ns for ns, _ in plan.rate_stages)
            offset_ns = int(assignment.schedule_offset_s * 1e9)
            if offset_ns > 0:
                plan.arrival_rate_per_s, plan.rate_stages, plan.duration_ns = trim_schedule(
                    plan.arrival_rate_per_s, plan.rate_stages, plan.duration_ns, offset_ns
                )
                if plan.duration_ns <= 0:
                    continue  # this entry's schedule is over: nothing to take over
            plan.iterations = 0
        elif plan.iterations == 0 and plan.duration_ns == 0:
            plan.iterations = 1  # run the scenario once per session
        plan.connect_timeout_ns = _config_duration(
            config, "connect_timeout", DEFAULT_CONNECT_TIMEOUT_NS
        )
        plan.request_timeout_ns = _config_duration(
            config, "request_timeout", DEFAULT_REQUEST_TIMEOUT_NS
        )
        plan.tls_insecure = config.get("tls_insecure") is True
        ca_file = config.get("tls_ca_file")
        plan.tls_ca_file = ca_file if isinstance(ca_file, str) and ca_file else None
        plans.append(plan)
    return plans


def trim_schedule(
    rate_per_s: float, stages: list[tuple[int, float]], duration_ns: int, offset_ns: int
) -> tuple[float, list[tuple[int, float]], int]:
    """The rest of an arrival schedule from ``offset_ns`` on: (start rate, stages, duration).

    Without stages the rate is constant and only the duration shrinks. With stages, those
    already over are dropped and the current one is cut, starting at the rate it had reached.
    """
    if not stages:
        return rate_per_s, [], max(0, duration_ns - offset_ns)
    start = rate_per_s
    rest: list[tuple[int, float]] = []
    elapsed = 0
    for ns, target in stages:
        if elapsed + ns <= offset_ns:
            start = target
        elif elapsed >= offset_ns:
            rest.append((ns, target))
        else:
            done = (offset_ns - elapsed) / ns
            start = start + (target - start) * done
            rest.append((elapsed + ns - offset_ns, target))
        elapsed += ns
    return start, rest, sum(ns for ns, _ in rest)
