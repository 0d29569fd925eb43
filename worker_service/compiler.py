"""Steps -> engine ops: the body of the plan compiler (``plan.compile_assignment`` drives it).

One ``StepCompiler`` compiles one scenario entry. Each step appends op tuples (the forms of
the engine contract, see ``_fastpath.engine``) to ``self.out``; a step with a body (repeat,
loop, retry_on_error, call_traced, async, cc_spread) compiles the body into a list of its own
first, then appends its op with the body's length, then the body: the array stays flat.
``run_scenario`` inlines the other scenario's init, run and teardown steps with its config
merged over the current one (``self.config`` and ``self.base`` change while they compile).

Numbering happens here: targets (resolved to addresses, checked against the allow-list),
metric keys (filtered by ``config.metrics_filter``), variables (``lang.Names``), WebSocket
connections and child sessions (found beforehand by ``chaperon.core.loadtest.Inventory``, so a step
may refer to one defined later in the array), and signal values (interned as met). A python
step's function is imported here, on the worker, and only when it allows python steps.

HTTP requests with no runtime part, no extraction and no cookie jar are rendered once to
their exact bytes (the engine's fast path); the others become a head and a body template.
"""

from __future__ import annotations

import socket
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

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
from chaperon.core.allowlist import AllowList
from chaperon.core.durations import DurationError, parse_duration_ns
from chaperon.core.errors import InvalidArgument, PermissionDenied
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
from worker_service.lang import (
    MAX_CHILDREN,
    MAX_CONNS,
    MAX_DEPTH,
    MAX_SCENARIO_DEPTH,
    MAX_SIGNALS,
    Names,
    import_function,
    invalid,
    join,
)
from worker_service.render import http_op, ws_connect_op

if TYPE_CHECKING:
    from worker_service.plan import EnginePlan

DEFAULT_REQUEST_TIMEOUT_NS = 30_000_000_000
MAX_SPREAD = 256
MAX_ADD = 1 << 62  # the engine's integer variables stay well inside int64
Op = tuple[Any, ...]


def resolve(host: str, port: int) -> str:
    """An IP literal for ``host`` (first address getaddrinfo gives, IPv4 preferred)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    infos.sort(key=lambda info: 0 if info[0] == socket.AF_INET else 1)
    return str(infos[0][4][0])


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
        plan: EnginePlan,
        config: dict[str, Any],
        allow: AllowList,
        load_test: loadtest_pb2.LoadTest,
        inventory: Inventory,
        allow_python: bool = False,
    ) -> None:
        self.plan = plan
        self.allow = allow
        self.lt = load_test
        self.allow_python = allow_python
        self.names = Names(inventory)
        self.out: list[Op] = []
        self.config = config
        self.base = _base_target(config, "config.base_url")
        self._targets: dict[tuple[Any, ...], int] = {}
        self._keys: dict[str, int] = {}
        self._children = {name: i for i, name in enumerate(inventory.children)}
        self._nchildren = len(inventory.children)
        self._conns = {name: i for i, name in enumerate(inventory.conns)}
        self._signals: dict[str, int] = {}
        self._depth = 0
        self._scenario_depth = 0
        self._in_child = False
        filt = config.get("metrics_filter")
        if filt is not None and (
            not isinstance(filt, list) or not all(isinstance(g, str) for g in filt)
        ):
            raise invalid("config.metrics_filter", "must be a list of glob patterns")
        self._filter: list[str] | None = filt
        # Named sessions (ScenarioEntry.session_name) report under "<name>: <key>".
        self.key_prefix = ""

    # -- numbering -------------------------------------------------------------------------

    def finish(self) -> None:
        """Copy the numbering into the plan."""
        self.plan.var_names = list(self.names.var_names)
        self.plan.nchildren = self._nchildren
        self.plan.nconns = len(self._conns)
        self.plan.nsignals = len(self._signals)

    def target_index(self, target: Target, field_path: str) -> int:
        self.allow.check_host(target.host, field_path)
        try:
            ip = resolve(target.host, target.port)
        except OSError as exc:
            raise invalid(field_path, f"cannot resolve host {target.host!r}: {exc}") from None
        key: tuple[Any, ...] = (ip, target.port)
        if target.scheme == "https":
            # Verified against the name in the URL (SNI too, unless it is an IP literal).
            key = (ip, target.port, True, target.host)
        if key not in self._targets:
            self._targets[key] = len(self.plan.targets)
            self.plan.targets.append(key)
        return self._targets[key]

    def key_index(self, key: str) -> int:
        """The metric number of ``key``, or -1 (not measured) when the filter drops it."""
        if self._filter is not None and not any(fnmatchcase(key, g) for g in self._filter):
            return -1
        key = self.key_prefix + key
        if key not in self._keys:
            self._keys[key] = len(self.plan.metric_keys)
            self.plan.metric_keys.append(key)
        return self._keys[key]

    def _conn(self, name: str, field_path: str) -> int:
        name = name or DEFAULT_CONN
        if name not in self._conns:
            raise invalid(field_path, f"no ws_connect step opens a connection named {name!r}")
        index = self._conns[name]
        if index >= MAX_CONNS:
            raise invalid(field_path, f"more than {MAX_CONNS} WebSocket connections per session")
        return index

    def _intern(self, value: str, field_path: str) -> int:
        """The number of a signal value (interned: each distinct value gets the next)."""
        if not value:
            raise invalid(field_path, "is required")
        if value not in self._signals:
            if len(self._signals) >= MAX_SIGNALS:
                raise invalid(field_path, f"more than {MAX_SIGNALS} distinct signal values")
            self._signals[value] = len(self._signals)
        return self._signals[value]

    def _no_nested_child(self, field_path: str) -> None:
        if self._in_child:
            raise invalid(field_path, "nested child sessions are not supported")

    def _child(self, name: str, field_path: str) -> int:
        if not name:
            raise invalid(field_path, "is required")
        if self._in_child:
            raise invalid(field_path, "a child session has no child sessions of its own")
        if name not in self._children:
            raise invalid(field_path, f"no async step starts a child session named {name!r}")
        return self._children[name]

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

    def _body(self, steps: Any, prefix: str, q: str, child: bool = False) -> list[Op]:
        """A step's body, one level deeper (the engine nests bodies MAX_DEPTH deep)."""
        if self._depth + 1 > MAX_DEPTH:
            raise invalid(
                q,
                f"repeat, loop, retry_on_error, call_traced, async and cc_spread bodies nest"
                f" at most {MAX_DEPTH} deep",
            )
        if not steps:
            raise invalid(f"{q}.steps", "needs at least one step")
        self._depth += 1
        was_child, self._in_child = self._in_child, self._in_child or child
        try:
            body = self.steps(steps, prefix)
        finally:
            self._depth -= 1
            self._in_child = was_child
        # A body of steps that emit nothing (an empty inlined scenario): the engine wants at
        # least one op in a body; a zero delay does nothing.
        return body or [(OP_DELAY, 0)]

    def step(self, step: loadtest_pb2.Step, p: str) -> None:
        action = step.WhichOneof("action")
        if action is None:
            raise invalid(p, "is empty: set one action such as 'http' or 'delay'")
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
        body = self._body(step.repeat.steps, f"{q}.steps", q)
        metric = -1
        if step.repeat.traced:
            metric = self.key_index(step.repeat.metric or step.name or "repeat")
        self.out += [(OP_REPEAT, int(step.repeat.count), len(body), metric), *body]

    def _loop(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        ns = duration_ns(step.loop.duration, f"{q}.duration")
        body = self._body(step.loop.steps, f"{q}.steps", q)
        self.out += [(OP_LOOP, ns, len(body)), *body]

    def _retry_on_error(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        r = step.retry_on_error
        if r.retries < 0:
            raise invalid(f"{q}.retries", "must be >= 0")
        backoff = duration_ns(r.backoff, f"{q}.backoff")
        body = self._body(r.steps, f"{q}.steps", q)
        self.out += [(OP_RETRY, int(r.retries), backoff, len(body)), *body]

    def _call_traced(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        name = step.call_traced.name
        if not name:
            raise invalid(f"{q}.name", "is required (the metric key of the group)")
        body = self._body(step.call_traced.steps, f"{q}.steps", q)
        self.out += [(OP_REPEAT, 1, len(body), self.key_index(name)), *body]

    # -- child sessions and signals --------------------------------------------------------

    def _async(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        a = getattr(step, "async")
        self._no_nested_child(q)
        if not a.name:
            raise invalid(f"{q}.name", "is required")
        child = self._children[a.name]
        if child >= MAX_CHILDREN:
            raise invalid(f"{q}.name", f"more than {MAX_CHILDREN} child sessions per session")
        if a.scenario and a.steps:
            raise invalid(f"{q}.scenario", "give either steps or scenario, not both")
        if a.scenario:
            scenario = find_scenario(self.lt, a.scenario)
            if scenario is None:
                raise invalid(
                    f"{q}.scenario", f"no scenario of this load test is named {a.scenario!r}"
                )
            body = self._body(scenario.run, f"{q}(scenario={a.scenario}).run", q, child=True)
        elif a.steps:
            body = self._body(a.steps, f"{q}.steps", q, child=True)
        else:
            raise invalid(f"{q}.steps", "give the child's steps (or a scenario name)")
        self.out += [(OP_ASYNC, child, len(body)), *body]

    def _cc_spread(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        s = step.cc_spread
        self._no_nested_child(q)
        if not 1 <= s.rate <= MAX_SPREAD:
            raise invalid(f"{q}.rate", f"must be between 1 and {MAX_SPREAD}")
        if self._nchildren + s.rate > MAX_CHILDREN:
            raise invalid(f"{q}.rate", f"more than {MAX_CHILDREN} child sessions per session")
        interval = duration_ns(s.interval, f"{q}.interval")
        first = self._nchildren
        self._nchildren += s.rate
        body = self._body(s.steps, f"{q}.steps", q, child=True)
        self.out += [(OP_SPREAD, first, int(s.rate), interval, len(body)), *body]

    def _await(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        a = getattr(step, "await")
        child = self._child(a.name, f"{q}.name")
        timeout = duration_ns(a.timeout, f"{q}.timeout")
        self.out.append((OP_AWAIT, child, timeout, self.key_index(f"await {a.name}")))

    def _await_all(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        timeout = duration_ns(step.await_all.timeout, f"{q}.timeout")
        self.out.append((OP_AWAIT_ALL, timeout, self.key_index("await_all")))

    def _signal(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        child = self._child(step.signal.to, f"{q}.to")
        self.out.append((OP_SIGNAL, child, self._intern(step.signal.value, f"{q}.value")))

    def _signal_parent(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        value = step.signal_parent.value
        self.out.append((OP_SIGNAL, -1, self._intern(value, f"{q}.value")))

    def _await_signal(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        a = step.await_signal
        signal = self._intern(a.value, f"{q}.value")
        timeout = self._timeout(a.timeout, f"{q}.timeout")
        self.out.append(
            (OP_AWAIT_SIGNAL, signal, timeout, self.key_index(f"await_signal {a.value}"))
        )

    # -- WebSocket -------------------------------------------------------------------------

    def _ws_connect(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        conn = self._conn(step.ws_connect.conn, f"{q}.conn")
        self.out.append(ws_connect_op(self, step.ws_connect, conn, q))

    def _ws_send(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        w = step.ws_send
        conn = self._conn(w.conn, f"{q}.conn")
        kind = w.WhichOneof("payload")
        if kind == "text":
            opcode, parts = 1, self.names.render(w.text, f"{q}.text", self.config)
        elif kind == "json":
            value = json_format.MessageToDict(w.json)
            opcode, parts = 1, self.names.render_json(value, f"{q}.json", self.config)
        elif kind == "binary":
            opcode, parts = 2, join([bytes(w.binary)])
        else:
            raise invalid(f"{q}.text", "set text, json or binary")
        metric = self.key_index(w.metric or f"WS send {w.conn or DEFAULT_CONN}")
        self.out.append((OP_WS_SEND, conn, metric, opcode, parts))

    def _ws_recv(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        w = step.ws_recv
        conn = self._conn(w.conn, f"{q}.conn")
        timeout = self._timeout(w.timeout, f"{q}.timeout")
        var = self.names.slot(w.assign, f"{q}.assign") if w.assign else -1
        metric = self.key_index(w.metric or f"WS recv {w.conn or DEFAULT_CONN}")
        self.out.append((OP_WS_RECV, conn, metric, timeout, var))

    def _ws_await_recv(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        w = step.ws_await_recv
        conn = self._conn(w.conn, f"{q}.conn")
        timeout = self._timeout(w.timeout, f"{q}.timeout")
        expected = self.names.render(w.expected, f"{q}.expected", self.config)
        metric = self.key_index(w.metric or f"WS await_recv {w.conn or DEFAULT_CONN}")
        self.out.append((OP_WS_AWAIT_RECV, conn, metric, timeout, expected))

    def _ws_close(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        w = step.ws_close
        conn = self._conn(w.conn, f"{q}.conn")
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
        if not u.name:
            raise invalid(f"{q}.name", "is required")
        slot = self.names.slot(u.name, f"{q}.name")
        change = u.WhichOneof("change")
        if change == "add":
            if not -MAX_ADD < u.add < MAX_ADD:
                raise invalid(f"{q}.add", f"must be between -2^62 and 2^62 (got {u.add})")
            metric = self.key_index(f"update_assign {u.name}")  # errors only: not an integer
            self.out.append((OP_UPDATE_ADD, slot, int(u.add), metric))
        elif change == "set":
            parts = self.names.render(u.set, f"{q}.set", self.config)
            self.out.append((OP_ASSIGN, slot, parts, self.key_index(f"update_assign {u.name}")))
        else:
            raise invalid(f"{q}.add", "set add (an integer) or set (a template)")

    def _delete_assign(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        for k, name in enumerate(step.delete_assign.names):
            if not name:
                raise invalid(f"{q}.names[{k}]", "must not be empty")
            self.out.append((OP_UNSET, self.names.slot(name, f"{q}.names[{k}]")))

    def _add_metric(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        a = step.add_metric
        if not a.key:
            raise invalid(f"{q}.key", "is required (the metric key)")
        source = a.WhichOneof("source")
        if source == "value":
            if a.value < 0:
                raise invalid(f"{q}.value", "must be >= 0")
            self.out.append((OP_ADD_METRIC, self.key_index(a.key), int(a.value), -1))
        elif source == "var":
            if not self.names.is_variable(a.var):
                raise invalid(f"{q}.var", f"no step sets a session variable named {a.var!r}")
            slot = self.names.slot(a.var, f"{q}.var")
            self.out.append((OP_ADD_METRIC, self.key_index(a.key), 0, slot))
        else:
            raise invalid(f"{q}.value", "set value (a number) or var (a session variable)")

    def _abort(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        # The reason shows in the report, where the error is counted.
        a = step.abort
        key = a.metric or (f"abort: {a.reason}" if a.reason else "abort")
        self.out.append((OP_ABORT, self.key_index(key)))

    def _python(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        spec = step.python.function
        if not self.allow_python:
            raise PermissionDenied(
                f"{q}.function: this worker does not run python steps; start it with"
                " --allow-python-steps (chaperon run allows them)"
            )
        fn = import_function(spec, f"{q}.function")
        self.out.append((OP_PYTHON, self.key_index(step.python.metric or f"python {spec}"), fn))

    def _run_scenario(self, step: loadtest_pb2.Step, p: str, q: str) -> None:
        rs = step.run_scenario
        which = rs.WhichOneof("which")
        if which == "scenario":
            scenario, prefix = rs.scenario, f"{q}.scenario"
        elif which == "name":
            found = find_scenario(self.lt, rs.name)
            if found is None:
                raise invalid(f"{q}.name", f"no scenario of this load test is named {rs.name!r}")
            scenario, prefix = found, f"{q}(name={rs.name})"
        else:
            raise invalid(f"{q}.name", "give a scenario (inline) or the name of one")
        if self._scenario_depth + 1 > MAX_SCENARIO_DEPTH:
            raise invalid(q, f"run_scenario nests at most {MAX_SCENARIO_DEPTH} deep")
        saved = self.config, self.base
        if rs.HasField("config"):
            try:
                over = struct_to_dict(rs.config)
            except ValueError:
                raise invalid(f"{q}.config", "must not contain NaN or infinite numbers") from None
            self.config = deep_merge(self.config, over)
            self.base = _base_target(self.config, f"{q}.config.base_url")
        self._scenario_depth += 1
        try:
            for part in ("init", "run", "teardown"):
                self.steps(getattr(scenario, part), f"{prefix}.{part}", self.out)
        finally:
            self._scenario_depth -= 1
            self.config, self.base = saved
