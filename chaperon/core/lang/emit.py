"""Steps -> engine ops: the compiler's back end (``plan.compile_assignment`` drives it).

One ``StepCompiler`` compiles one scenario entry whose steps ``check_steps`` has accepted, so
it does not check them again. Each step appends op tuples (the forms of the engine contract,
see ``_fastpath.engine``) to ``self.out``; a step with a body (repeat, loop, retry_on_error,
call_traced, async, cc_spread) compiles the body into a list of its own first, then appends its
op with the body's length, then the body: the array stays flat. ``run_scenario`` inlines the
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
    OP_ABORT,
    OP_ADD_METRIC,
    OP_ASSIGN,
    OP_ASYNC,
    OP_AWAIT,
    OP_AWAIT_ALL,
    OP_AWAIT_SIGNAL,
    OP_DELAY,
    OP_LOOP,
    OP_PYTHON,
    OP_RANDOM_DELAY,
    OP_REPEAT,
    OP_RETRY,
    OP_SIGNAL,
    OP_SPREAD,
    OP_UNSET,
    OP_UPDATE_ADD,
    OP_WS_AWAIT_RECV,
    OP_WS_CLOSE,
    OP_WS_RECV,
    OP_WS_SEND,
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
    find_scenario,
    parse_target,
    struct_to_dict,
)
from chaperon.v1 import loadtest_pb2

Op = tuple[Any, ...]


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
        self.names = Names(inventory)
        # The plan's tables: targets and metric keys (ops hold their indexes).
        self.targets: list[tuple[Any, ...]] = []
        self.metric_keys: list[str] = []
        self.out: list[Op] = []
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

    def key_index(self, key: str) -> int:
        """The metric number of ``key``, or -1 (not measured) when the filter drops it."""
        if self._filter is not None and not any(fnmatchcase(key, g) for g in self._filter):
            return -1
        key = self.key_prefix + key
        if key not in self._keys:
            self._keys[key] = len(self.metric_keys)
            self.metric_keys.append(key)
        return self._keys[key]

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

    def steps(self, steps: Any, prefix: str, out: list[Op] | None = None) -> list[Op]:
        """Compile ``steps`` (field path ``prefix[j]``) onto ``out`` (default: a new list)."""
        outer = self.out
        self.out = [] if out is None else out
        try:
            for j, step in enumerate(steps):
                self.step(step, f"{prefix}[{j}]")
            return self.out
        finally:
            self.out = outer

    def _body(self, steps: Any, prefix: str) -> list[Op]:
        """A step's body (nesting and emptiness: checked)."""
        body = self.steps(steps, prefix)
        # A body of steps that emit nothing (an empty inlined scenario): the engine wants at
        # least one op in a body; a zero delay does nothing.
        return body or [(OP_DELAY, 0)]

    def step(self, step: loadtest_pb2.Step, p: str) -> None:
        action = step.WhichOneof("action")  # checked: one is set
        getattr(self, f"_{action}")(step, p, f"{p}.{action}")

    def _http(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        self.out.append(http_op(self, step.http, q))

    def _delay(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        self.out.append((OP_DELAY, duration_ns(step.delay.duration, f"{q}.duration")))

    def _random_delay(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        rd = step.random_delay
        low = duration_ns(rd.min, f"{q}.min")
        self.out.append((OP_RANDOM_DELAY, low, duration_ns(rd.max, f"{q}.max")))

    def _repeat(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        body = self._body(step.repeat.steps, f"{q}.steps")
        metric = -1
        if step.repeat.traced:
            metric = self.key_index(step.repeat.metric or step.name or "repeat")
        self.out += [(OP_REPEAT, int(step.repeat.count), len(body), metric), *body]

    def _loop(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        ns = duration_ns(step.loop.duration, f"{q}.duration")
        body = self._body(step.loop.steps, f"{q}.steps")
        self.out += [(OP_LOOP, ns, len(body)), *body]

    def _retry_on_error(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        r = step.retry_on_error
        backoff = duration_ns(r.backoff, f"{q}.backoff")
        body = self._body(r.steps, f"{q}.steps")
        self.out += [(OP_RETRY, int(r.retries), backoff, len(body)), *body]

    def _call_traced(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        name = step.call_traced.name
        body = self._body(step.call_traced.steps, f"{q}.steps")
        self.out += [(OP_REPEAT, 1, len(body), self.key_index(name)), *body]

    # -- child sessions and signals --------------------------------------------------------

    def _async(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        a = getattr(step, "async")
        child = self._children[a.name]
        scenario = find_scenario(self.lt, a.scenario) if a.scenario else None
        if scenario is not None:
            body = self._body(scenario.run, f"{q}(scenario={a.scenario}).run")
        else:
            body = self._body(a.steps, f"{q}.steps")
        self.out += [(OP_ASYNC, child, len(body)), *body]

    def _cc_spread(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        s = step.cc_spread
        interval = duration_ns(s.interval, f"{q}.interval")
        first = self._nchildren
        self._nchildren += s.rate
        body = self._body(s.steps, f"{q}.steps")
        self.out += [(OP_SPREAD, first, int(s.rate), interval, len(body)), *body]

    def _await(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        a = getattr(step, "await")
        child = self._child(a.name)
        timeout = duration_ns(a.timeout, f"{q}.timeout")
        self.out.append((OP_AWAIT, child, timeout, self.key_index(f"await {a.name}")))

    def _await_all(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        timeout = duration_ns(step.await_all.timeout, f"{q}.timeout")
        self.out.append((OP_AWAIT_ALL, timeout, self.key_index("await_all")))

    def _signal(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        child = self._child(step.signal.to)
        self.out.append((OP_SIGNAL, child, self._intern(step.signal.value)))

    def _signal_parent(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        value = step.signal_parent.value
        self.out.append((OP_SIGNAL, -1, self._intern(value)))

    def _await_signal(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        a = step.await_signal
        signal = self._intern(a.value)
        timeout = self._timeout(a.timeout, f"{q}.timeout")
        self.out.append(
            (OP_AWAIT_SIGNAL, signal, timeout, self.key_index(f"await_signal {a.value}"))
        )

    # -- WebSocket -------------------------------------------------------------------------

    def _ws_connect(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        conn = self._conn(step.ws_connect.conn)
        self.out.append(ws_connect_op(self, step.ws_connect, conn, q))

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
        metric = self.key_index(w.metric or f"WS send {w.conn or DEFAULT_CONN}")
        self.out.append((OP_WS_SEND, conn, metric, opcode, parts))

    def _ws_recv(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        w = step.ws_recv
        conn = self._conn(w.conn)
        timeout = self._timeout(w.timeout, f"{q}.timeout")
        var = self.names.slot(w.assign, f"{q}.assign") if w.assign else -1
        metric = self.key_index(w.metric or f"WS recv {w.conn or DEFAULT_CONN}")
        self.out.append((OP_WS_RECV, conn, metric, timeout, var))

    def _ws_await_recv(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        w = step.ws_await_recv
        conn = self._conn(w.conn)
        timeout = self._timeout(w.timeout, f"{q}.timeout")
        expected = self.names.render(w.expected, f"{q}.expected", self.config)
        metric = self.key_index(w.metric or f"WS await_recv {w.conn or DEFAULT_CONN}")
        self.out.append((OP_WS_AWAIT_RECV, conn, metric, timeout, expected))

    def _ws_close(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        w = step.ws_close
        conn = self._conn(w.conn)
        metric = self.key_index(w.metric or f"WS close {w.conn or DEFAULT_CONN}")
        self.out.append((OP_WS_CLOSE, conn, metric))

    # -- variables, metrics, the rest ------------------------------------------------------

    def _assign(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        for name in sorted(step.assign.values):
            where = f"{q}.values[{name}]"
            slot = self.names.slot(name, where)
            parts = self.names.render(step.assign.values[name], where, self.config)
            # Its metric only ever counts errors (a template's variable was unset).
            self.out.append((OP_ASSIGN, slot, parts, self.key_index(f"assign {name}")))

    def _update_assign(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        u = step.update_assign
        slot = self.names.slot(u.name, f"{q}.name")
        change = u.WhichOneof("change")
        if change == "add":
            metric = self.key_index(f"update_assign {u.name}")  # errors only: not an integer
            self.out.append((OP_UPDATE_ADD, slot, int(u.add), metric))
        else:  # set (a change: checked)
            parts = self.names.render(u.set, f"{q}.set", self.config)
            self.out.append((OP_ASSIGN, slot, parts, self.key_index(f"update_assign {u.name}")))

    def _delete_assign(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        for k, name in enumerate(step.delete_assign.names):
            self.out.append((OP_UNSET, self.names.slot(name, f"{q}.names[{k}]")))

    def _add_metric(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        a = step.add_metric  # key, source, value >= 0, var set by a step: checked
        if a.WhichOneof("source") == "value":
            self.out.append((OP_ADD_METRIC, self.key_index(a.key), int(a.value), -1))
        else:
            slot = self.names.slot(a.var, f"{q}.var")
            self.out.append((OP_ADD_METRIC, self.key_index(a.key), 0, slot))

    def _abort(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        # The reason shows in the report, where the error is counted.
        a = step.abort
        key = a.metric or (f"abort: {a.reason}" if a.reason else "abort")
        self.out.append((OP_ABORT, self.key_index(key)))

    def _python(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        spec = step.python.function
        fn = self.backend.python_function(spec, f"{q}.function")
        self.out.append((OP_PYTHON, self.key_index(step.python.metric or f"python {spec}"), fn))

    def _run_scenario(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        rs = step.run_scenario
        # A scenario, found, no deeper than MAX_SCENARIO_DEPTH, a finite config: checked.
        scenario, prefix = rs.scenario, f"{q}.scenario"
        if rs.WhichOneof("which") == "name":
            found = find_scenario(self.lt, rs.name)
            assert found is not None
            scenario, prefix = found, f"{q}(name={rs.name})"
        saved = self.config, self.base
        if rs.HasField("config"):
            over = struct_to_dict(rs.config)
            self.config = deep_merge(self.config, over)
            self.base = _base_target(self.config, f"{q}.config.base_url")
        try:
            for part in ("init", "run", "teardown"):
                self.steps(getattr(scenario, part), f"{prefix}.{part}", self.out)
        finally:
            self.config, self.base = saved
