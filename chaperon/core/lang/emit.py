"""Steps -> engine ops: the compiler's back end (``plan.compile_assignment`` drives it).

One ``StepCompiler`` compiles one scenario entry whose steps ``check_steps`` has accepted, so
it does not check them again. Each step calls the typed methods of the engine's plan builder
(``_fastpath.engine.PlanBuilder``, ``self.b``), which fills the engine's op array; a step with
a body (repeat, loop, retry_on_error, call_traced, async, cc_spread) opens its block, compiles
the body and ends the block: the array stays flat. ``run_scenario`` inlines the
other scenario's init, run and teardown steps with its config merged over the current one
(``self.config`` and ``self.base`` change while they compile).

Numbering happens here: targets (through the ``Backend``, which resolves them), metric keys
(filtered by ``config.metrics_filter``), variables (``templates.Names``), WebSocket connections
and child sessions (found beforehand by ``chaperon.core.loadtest.Inventory``, so a step may
refer to one defined later in the array), and signal values (interned as met). What only a
worker can do is its ``Backend``'s: resolve a host and match the allow-list, load a python
step's function (or refuse python steps).

HTTP requests with no runtime part, no extraction and no cookie jar are rendered once to
their exact bytes (the engine's fast path); the others become a head and a body template
(``render``).
"""

from __future__ import annotations

from collections.abc import Callable
from fnmatch import fnmatchcase
from typing import Any, Protocol

from google.protobuf import json_format

from _fastpath.engine import (
    PlanBuilder,
)
from chaperon.core.durations import DurationError, parse_duration_ns
from chaperon.core.errors import InvalidArgument
from chaperon.core.lang.limits import DEFAULT_REQUEST_TIMEOUT_NS
from chaperon.core.lang.render import http_op, ws_connect_op
from chaperon.core.lang.templates import Names, invalid, join
from chaperon.core.loadtest import (
    DEFAULT_CONN,
    Inventory,
    Target,
    deep_merge,
    effective_config,
    entry_scenarios,
    parse_target,
    scenario_index,
    struct_to_dict,
)
from chaperon.v1 import loadtest_pb2

# Appended to an open-model entry's metric key that a closed-model entry also writes.
OPEN_MODEL_SUFFIX = " (open model)"


class Backend(Protocol):
    """What the compiler asks of the process that will run the plan (a worker)."""

    def target(self, target: Target, field_path: str) -> tuple[Any, ...]:
        """The engine's address of ``target``: ``(ip, port)``, or ``(ip, port, True, host)``
        for https; raises PermissionDenied / InvalidArgument naming ``field_path``."""
        ...

    def python_function(self, spec: str, field_path: str) -> Callable[..., Any]:
        """The function of a python step (``module:function``), or PermissionDenied."""
        ...


def duration_ns(text: str, field_path: str, default_ns: int = 0) -> int:
    """``text`` parsed (``default_ns`` when empty); InvalidArgument naming the field."""
    if not text:
        return default_ns
    try:
        return parse_duration_ns(text)
    except DurationError as exc:
        raise InvalidArgument([(field_path, str(exc))]) from None


def _base_target(config: dict[str, Any], field_path: str) -> Target | None:
    base = config.get("base_url")
    if not isinstance(base, str) or not base:
        return None
    try:
        return parse_target(base)
    except ValueError as exc:
        raise invalid(field_path, str(exc)) from None


class StepCompiler:
    """Compiles the steps of one scenario entry into ``plan`` (see the module docstring)."""

    def __init__(
        self,
        backend: Backend,
        config: dict[str, Any],
        load_test: loadtest_pb2.LoadTest,
        inventory: Inventory,
    ) -> None:
        self.backend = backend
        self.lt = load_test
        self.scenarios = scenario_index(load_test)
        self.names = Names(inventory)
        # The plan's tables: targets and metric keys (ops hold their indexes).
        self.targets: list[tuple[Any, ...]] = []
        self.metric_keys: list[str] = []
        self.b = PlanBuilder()  # the plan's ops, filled by typed calls
        self.config = config
        self.base = _base_target(config, "config.base_url")
        self._targets: dict[tuple[Any, ...], int] = {}
        self._keys: dict[str, int] = {}
        self._children = {name: i for i, name in enumerate(inventory.children)}
        self._nchildren = len(inventory.children)
        self._conns = {name: i for i, name in enumerate(inventory.conns)}
        self._signals: dict[str, int] = {}
        self._filter: list[str] | None = config.get("metrics_filter")  # checked: globs
        # Named sessions (ScenarioEntry.session_name) report under "<name>: <key>".
        self.key_prefix = ""
        # An open-model entry's keys that a closed-model entry also writes: they get
        # OPEN_MODEL_SUFFIX, so corrected and uncorrected latencies never share a histogram.
        self.closed_model_keys: frozenset[str] = frozenset()
        self._timed: set[str] = set()  # keys some step of which measures a duration

    # -- numbering -------------------------------------------------------------------------

    @property
    def nchildren(self) -> int:
        """Child session slots per session (async names, then cc_spread calls)."""
        return self._nchildren

    @property
    def nconns(self) -> int:
        return len(self._conns)

    @property
    def nsignals(self) -> int:
        return len(self._signals)

    def target_index(self, target: Target, field_path: str) -> int:
        key = self.backend.target(target, field_path)
        if key not in self._targets:
            self._targets[key] = len(self.targets)
            self.targets.append(key)
        return self._targets[key]

    def key_index(self, key: str, timed: bool = True) -> int:
        """The metric number of ``key``, or -1 (not measured) when the filter drops it.

        ``timed=False``: the step measures no duration (``untimed_keys``)."""
        if self._filter is not None and not any(fnmatchcase(key, g) for g in self._filter):
            return -1
        key = self.key_prefix + key
        if key in self.closed_model_keys:
            key += OPEN_MODEL_SUFFIX
        if key not in self._keys:
            self._keys[key] = len(self.metric_keys)
            self.metric_keys.append(key)
        if timed:
            self._timed.add(key)
        return self._keys[key]

    @property
    def untimed_keys(self) -> list[str]:
        """The keys whose every step measures no duration (``ws_send``, ``assign``,
        ``update_assign``, ``abort``), in the order of ``metric_keys``."""
        return [k for k in self.metric_keys if k not in self._timed]

    def _conn(self, name: str) -> int:
        return self._conns[name or DEFAULT_CONN]  # checked: some ws_connect opens it

    def _intern(self, value: str) -> int:
        """The number of a signal value (interned: each distinct value gets the next)."""
        if value not in self._signals:
            self._signals[value] = len(self._signals)
        return self._signals[value]

    def _child(self, name: str) -> int:
        return self._children[name]  # checked: some async step starts it

    def _timeout(self, text: str, field_path: str) -> int:
        """A receive/await timeout: the step's, else config.request_timeout."""
        default = DEFAULT_REQUEST_TIMEOUT_NS
        configured = self.config.get("request_timeout")
        if isinstance(configured, str) and configured:
            default = duration_ns(configured, "config.request_timeout", default)
        return duration_ns(text, field_path, default)

    @property
    def strip_query(self) -> bool:
        return self.config.get("metrics_strip_query") is True

    # -- steps -----------------------------------------------------------------------------

    def steps(self, steps: Any, prefix: str) -> None:
        """Compile ``steps`` (field path ``prefix[j]``) onto the builder."""
        for j, step in enumerate(steps):
            self.step(step, f"{prefix}[{j}]")

    def _body(self, steps: Any, prefix: str) -> None:
        """A block's body, then the block's end (nesting and emptiness: checked)."""
        before = len(self.b)
        self.steps(steps, prefix)
        if len(self.b) == before:
            # Steps that emit nothing (an empty inlined scenario): the engine wants at least
            # one op in a body; a zero delay does nothing.
            self.b.delay(0)
        self.b.end()

    def step(self, step: loadtest_pb2.Step, p: str) -> None:
        action = step.WhichOneof("action")  # checked: one is set
        getattr(self, f"_{action}")(step, p, f"{p}.{action}")

    def _http(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        http_op(self, self.b, step.http, q)

    def _delay(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        self.b.delay(duration_ns(step.delay.duration, f"{q}.duration"))

    def _random_delay(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        rd = step.random_delay
        low = duration_ns(rd.min, f"{q}.min")
        self.b.random_delay(low, duration_ns(rd.max, f"{q}.max"))

    def _repeat(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        metric = -1
        if step.repeat.traced:
            metric = self.key_index(step.repeat.metric or step.name or "repeat")
        self.b.repeat(int(step.repeat.count), metric)
        self._body(step.repeat.steps, f"{q}.steps")

    def _loop(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        self.b.loop(duration_ns(step.loop.duration, f"{q}.duration"))
        self._body(step.loop.steps, f"{q}.steps")

    def _retry_on_error(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        r = step.retry_on_error
        self.b.retry(int(r.retries), duration_ns(r.backoff, f"{q}.backoff"))
        self._body(r.steps, f"{q}.steps")

    def _call_traced(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        self.b.repeat(1, self.key_index(step.call_traced.name))
        self._body(step.call_traced.steps, f"{q}.steps")

    # -- child sessions and signals --------------------------------------------------------

    def _async(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        a = getattr(step, "async")
        self.b.spawn(self._children[a.name])
        scenario = self.scenarios.get(a.scenario) if a.scenario else None
        if scenario is not None:
            self._body(scenario.run, f"{q}(scenario={a.scenario}).run")
        else:
            self._body(a.steps, f"{q}.steps")

    def _cc_spread(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        s = step.cc_spread
        interval = duration_ns(s.interval, f"{q}.interval")
        first = self._nchildren
        self._nchildren += s.rate
        self.b.spread(first, int(s.rate), interval)
        self._body(s.steps, f"{q}.steps")

    def _await(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        a = getattr(step, "await")
        child = self._child(a.name)
        timeout = duration_ns(a.timeout, f"{q}.timeout")
        self.b.await_child(child, timeout, self.key_index(f"await {a.name}"))

    def _await_all(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        timeout = duration_ns(step.await_all.timeout, f"{q}.timeout")
        self.b.await_all(timeout, self.key_index("await_all"))

    def _signal(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        self.b.signal(self._child(step.signal.to), self._intern(step.signal.value))

    def _signal_parent(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        self.b.signal(-1, self._intern(step.signal_parent.value))

    def _await_signal(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        a = step.await_signal
        signal = self._intern(a.value)
        timeout = self._timeout(a.timeout, f"{q}.timeout")
        self.b.await_signal(signal, timeout, self.key_index(f"await_signal {a.value}"))

    # -- WebSocket -------------------------------------------------------------------------

    def _ws_connect(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        ws_connect_op(self, self.b, step.ws_connect, self._conn(step.ws_connect.conn), q)

    def _ws_send(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        w = step.ws_send
        conn = self._conn(w.conn)
        kind = w.WhichOneof("payload")
        if kind == "text":
            opcode, parts = 1, self.names.render(w.text, f"{q}.text", self.config)
        elif kind == "json":
            value = json_format.MessageToDict(w.json)
            opcode, parts = 1, self.names.render_json(value, f"{q}.json", self.config)
        else:  # binary (a payload: checked)
            opcode, parts = 2, join([bytes(w.binary)])
        metric = self.key_index(w.metric or f"WS send {w.conn or DEFAULT_CONN}", timed=False)
        self.b.ws_send(conn, metric, opcode, parts)

    def _ws_recv(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        w = step.ws_recv
        conn = self._conn(w.conn)
        timeout = self._timeout(w.timeout, f"{q}.timeout")
        var = self.names.slot(w.assign, f"{q}.assign") if w.assign else -1
        metric = self.key_index(w.metric or f"WS recv {w.conn or DEFAULT_CONN}")
        self.b.ws_recv(conn, metric, timeout, var)

    def _ws_await_recv(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        w = step.ws_await_recv
        conn = self._conn(w.conn)
        timeout = self._timeout(w.timeout, f"{q}.timeout")
        expected = self.names.render(w.expected, f"{q}.expected", self.config)
        metric = self.key_index(w.metric or f"WS await_recv {w.conn or DEFAULT_CONN}")
        self.b.ws_await_recv(conn, metric, timeout, expected)

    def _ws_close(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        w = step.ws_close
        conn = self._conn(w.conn)
        self.b.ws_close(conn, self.key_index(w.metric or f"WS close {w.conn or DEFAULT_CONN}"))

    # -- variables, metrics, the rest ------------------------------------------------------

    def _assign(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        for name in sorted(step.assign.values):
            where = f"{q}.values[{name}]"
            slot = self.names.slot(name, where)
            parts = self.names.render(step.assign.values[name], where, self.config)
            # Its metric only ever counts errors (a template's variable was unset).
            self.b.assign(slot, parts, self.key_index(f"assign {name}", timed=False))

    def _update_assign(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        u = step.update_assign
        slot = self.names.slot(u.name, f"{q}.name")
        if u.WhichOneof("change") == "add":
            metric = self.key_index(f"update_assign {u.name}", timed=False)  # errors only
            self.b.update_add(slot, int(u.add), metric)
        else:  # set (a change: checked)
            parts = self.names.render(u.set, f"{q}.set", self.config)
            self.b.assign(slot, parts, self.key_index(f"update_assign {u.name}", timed=False))

    def _delete_assign(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        for k, name in enumerate(step.delete_assign.names):
            self.b.unset(self.names.slot(name, f"{q}.names[{k}]"))

    def _add_metric(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        a = step.add_metric  # key, source, value >= 0, var set by a step: checked
        if a.WhichOneof("source") == "value":
            self.b.add_metric(self.key_index(a.key), int(a.value), -1)
        else:
            slot = self.names.slot(a.var, f"{q}.var")
            self.b.add_metric(self.key_index(a.key), 0, slot)

    def _abort(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        # The reason shows in the report, where the error is counted.
        a = step.abort
        key = a.metric or (f"abort: {a.reason}" if a.reason else "abort")
        self.b.abort(self.key_index(key, timed=False))

    def _python(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        spec = step.python.function
        fn = self.backend.python_function(spec, f"{q}.function")
        self.b.python(self.key_index(step.python.metric or f"python {spec}"), fn)

    def _run_scenario(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        rs = step.run_scenario
        # A scenario, found, no deeper than MAX_SCENARIO_DEPTH, a finite config: checked.
        scenario, prefix = rs.scenario, f"{q}.scenario"
        if rs.WhichOneof("which") == "name":
            found = self.scenarios.get(rs.name)
            assert found is not None
            scenario, prefix = found, f"{q}(name={rs.name})"
        saved = self.config, self.base
        if rs.HasField("config"):
            over = struct_to_dict(rs.config)
            self.config = deep_merge(self.config, over)
            self.base = _base_target(self.config, f"{q}.config.base_url")
        try:
            for part in ("init", "run", "teardown"):
                self.steps(getattr(scenario, part), f"{prefix}.{part}")
        finally:
            self.config, self.base = saved


def compile_entry(
    backend: Backend,
    lt: loadtest_pb2.LoadTest,
    index: int,
    closed_model_keys: frozenset[str] = frozenset(),
) -> StepCompiler:
    """Compile the steps of entry ``index`` (checked): its scenario's init, run and teardown,
    or a sequence's. The returned compiler holds the ops, targets and metric keys.

    ``closed_model_keys``, for an open-model entry: the keys the load test's closed-model
    entries write (``keys.closed_model_keys``); the entry's own keys among them are kept
    apart with ``OPEN_MODEL_SUFFIX``."""
    entry = lt.scenarios[index]
    p = f"scenarios[{index}]"
    scenarios = entry_scenarios(entry)
    inventory = Inventory.of(
        (getattr(s, part) for s in scenarios for part in ("init", "run", "teardown")), lt
    )
    c = StepCompiler(backend, effective_config(lt, entry), lt, inventory)
    if entry.session_name:
        c.key_prefix = f"{entry.session_name}: "
    c.closed_model_keys = closed_model_keys
    c.b.init()
    if entry.HasField("scenario"):
        c.steps(entry.scenario.init, f"{p}.scenario.init")
        c.b.run()
        c.steps(entry.scenario.run, f"{p}.scenario.run")
        c.b.teardown()
        c.steps(entry.scenario.teardown, f"{p}.scenario.teardown")
    else:
        # A sequence: each scenario's init and run, in order, are the run; the teardowns run
        # after, in the same order. Variables carry over from one to the next.
        for k, scenario in enumerate(scenarios):
            q = f"{p}.sequence.scenarios[{k}]"
            c.b.run()
            c.steps(scenario.init, f"{q}.init")
            c.steps(scenario.run, f"{q}.run")
        for k, scenario in enumerate(scenarios):
            q = f"{p}.sequence.scenarios[{k}]"
            c.b.teardown()
            c.steps(scenario.teardown, f"{q}.teardown")
    return c
