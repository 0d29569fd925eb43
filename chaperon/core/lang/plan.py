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
from chaperon.core.lang.emit import Backend, compile_entry, duration_ns
from chaperon.core.lang.keys import closed_model_entries, closed_model_keys
from chaperon.core.lang.limits import (
    DEFAULT_CONNECT_TIMEOUT_NS,
    DEFAULT_MAX_CAPTURE,
    DEFAULT_REQUEST_TIMEOUT_NS,
)
from chaperon.core.loadtest import graceful_stop_ns
from chaperon.v1 import loadtest_pb2, worker_pb2


@dataclass
class EnginePlan:
    """What one ``_fastpath.engine.Engine`` runs (one scenario entry's share): its targets,
    metric keys, the ops (already in the engine's C array) and its checked options."""

    entry_index: int
    # The share's position in the assignment (reports give each share's totals by it).
    share_index: int = 0
    # (ip, port) for http, (ip, port, True, host name) for https
    targets: list[tuple[Any, ...]] = field(default_factory=list)
    metric_keys: list[str] = field(default_factory=list)
    # The ops (init, run, teardown), already in the engine's C array.
    builder: PlanBuilder = field(default_factory=PlanBuilder)
    # How the engine runs them (the load model, timeouts, TLS, session rules, the language's
    # sizes), one thread: ``engine(threads)`` picks the worker's thread count.
    options: EngineOptions = field(default_factory=lambda: EngineOptions(iterations=1))

    @property
    def open_model(self) -> bool:
        return bool(self.options.open_model)

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

    def engine_options(self, threads: int) -> EngineOptions:
        """The options on ``threads`` threads (at least one, at most one per session)."""
        return self.options.replace(threads=max(1, threads))  # type: ignore[no-any-return]

    def engine(self, threads: int) -> Engine:
        """The Engine of this plan on ``threads`` threads (it takes the builder's ops over)."""
        return Engine(self.targets, self.metric_keys, self.builder, self.engine_options(threads))


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
    indexes = {share.entry_index for share in assignment.shares}
    open_model = any(lt.scenarios[i].HasField("arrival_rate") for i in indexes)
    if open_model:
        # The keys the closed-model entries write decide an open-model entry's keys: those
        # entries are compiled too (without the network) to find them, so check them too.
        indexes |= closed_model_entries(lt)
    check_entries(lt, indexes)
    closed = closed_model_keys(lt) if open_model else frozenset()
    for i, share in enumerate(assignment.shares):
        entry = lt.scenarios[share.entry_index]
        p = f"scenarios[{share.entry_index}]"
        plan = EnginePlan(entry_index=share.entry_index, share_index=i)
        separate = closed if entry.HasField("arrival_rate") else frozenset()
        c = compile_entry(backend, lt, share.entry_index, separate)
        config = c.config
        plan.targets, plan.metric_keys, plan.builder = c.targets, c.metric_keys, c.b
        options: dict[str, Any] = {
            "sessions": int(share.sessions),
            "var_names": c.names.var_names,
            "nchildren": c.nchildren,
            "nconns": c.nconns,
            "nsignals": c.nsignals,
            "max_capture": int(config.get("max_capture", DEFAULT_MAX_CAPTURE)),  # checked
            "session_id_base": max(0, int(share.first_session)),
            "connect_timeout_ns": _config_duration(
                config, "connect_timeout", DEFAULT_CONNECT_TIMEOUT_NS
            ),
            "request_timeout_ns": _config_duration(
                config, "request_timeout", DEFAULT_REQUEST_TIMEOUT_NS
            ),
        }
        options["graceful_stop_ns"] = graceful_stop_ns(entry)
        for name, value in (
            ("scenario_timeout_ns", entry.scenario_timeout),
            ("start_delay_ns", entry.delay),
            ("start_random_delay_ns", entry.random_delay),
        ):
            if value:
                options[name] = parse_duration_ns(value)
        if any(len(t) > 2 and t[2] for t in plan.targets):
            ca_file = config.get("tls_ca_file")
            options["tls_ca_file"] = ca_file if isinstance(ca_file, str) and ca_file else None
            options["tls_insecure"] = config.get("tls_insecure") is True
        duration = parse_duration_ns(entry.duration) if entry.duration else 0
        iterations = int(entry.iterations)
        if entry.HasField("arrival_rate"):
            fraction = share.rate_fraction
            if not 0 < fraction <= 1:
                raise InvalidArgument(
                    [(f"shares[{i}].rate_fraction", "must be in (0, 1] for an open-model entry")]
                )
            if share.first_arrival < 0:
                raise InvalidArgument([(f"shares[{i}].first_arrival", "must be >= 0")])
            rate_per_s, stages, duration = share_schedule(entry, fraction)
            offset_ns = int(assignment.schedule_offset_s * 1e9)
            if share.first_arrival > 0:
                options["first_arrival"] = int(share.first_arrival)
            elif offset_ns > 0:
                rate_per_s, stages, duration = trim_schedule(
                    rate_per_s, stages, duration, offset_ns
                )
                if duration <= 0:
                    continue  # this entry's schedule is over: nothing to take over
            options.update(arrival_rate_per_s=rate_per_s, rate_stages=stages, iterations=0)
        elif iterations == 0 and duration == 0:
            iterations = 1  # run the scenario once per session
        options.setdefault("iterations", iterations)
        options["duration_ns"] = duration
        try:
            plan.options = EngineOptions(**options)
        except (TypeError, ValueError) as exc:  # the checks above make this rare
            raise InvalidArgument([(p, str(exc))]) from None
        plans.append(plan)
    return plans


def share_schedule(
    entry: loadtest_pb2.ScenarioEntry, fraction: float
) -> tuple[float, list[tuple[int, float]], int]:
    """An open-model share's arrival schedule, as the engine takes it: (rate per second,
    stages as (duration_ns, target rate per second), duration_ns), the entry's rates times
    ``fraction``. The master counts a share's due arrivals from the same three
    (``master_service.arrivals``), so this is the one place that decides them."""
    rate = entry.arrival_rate
    stages = [(parse_duration_ns(stage.duration), stage.target * fraction) for stage in rate.stages]
    if stages:
        duration = sum(ns for ns, _ in stages)
    else:
        duration = parse_duration_ns(entry.duration) if entry.duration else 0
    return rate.per_second * fraction, stages, duration


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
