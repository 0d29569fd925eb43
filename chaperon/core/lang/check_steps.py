"""The rules of the session language: every action, field by field (the compiler's front end).

``check_steps`` walks one scenario part (``init``, ``run`` or ``teardown``) with a ``StepContext``
that knows what the whole scenario entry declares (``chaperon.core.loadtest.Inventory``: variables
set by some step, WebSocket connections opened, child sessions started, python steps), so a
step that refers to something no step provides is reported with its field path
(``scenarios[0].scenario.run[3].ws_send.conn``). Problems go to a ``Collector``, which gathers
them all. The master runs these rules on a submitted load test; a worker runs the same rules on
the entries of its assignment before ``emit`` turns their steps into engine ops, so ``emit``
may trust what it is given. The limits are ``limits``' (the engine's, per session).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from google.protobuf import json_format

from chaperon.core.lang.config import TemplateNames, misspelt_keys
from chaperon.core.lang.graph import ASYNC_PARTS, ScenarioGraph
from chaperon.core.lang.limits import (
    MAX_CHILDREN,
    MAX_CONNS,
    MAX_NESTING,
    MAX_REPEAT,
    MAX_RETRIES,
    MAX_SCENARIO_DEPTH,
    MAX_SIGNALS,
    MAX_SPREAD,
    MAX_UPDATE_ADD,
    MAX_VARIABLES,
)
from chaperon.core.lang.problems import (
    Collector,
    not_a_config_value,
    not_a_url,
    too_many_variables,
    unknown_name,
)
from chaperon.core.lang.templates import config_lookup, literal_text
from chaperon.core.loadtest import (
    DEFAULT_CONN,
    HTTP_METHODS,
    Inventory,
    deep_merge,
    parse_target,
    split_template,
    struct_to_dict,
    template_names,
)
from chaperon.core.text import header_value_problem
from chaperon.v1 import loadtest_pb2

BUILTINS = ("session_id", "iteration")
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_ENGINE_HEADERS = ("content-length", "transfer-encoding", "host", "connection")
_WS_HEADERS = ("host", "upgrade", "connection", "sec-websocket-key", "sec-websocket-version")
# One JSON path segment: .name, [0], ["key"] or ['key'].
_JSON_PATH_SEGMENT = re.compile(
    r"""\.([^.\[\]\s"']+)|\[(\d+)\]|\[\s*"((?:[^"\\]|\\.)*)"\s*\]|\[\s*'((?:[^'\\]|\\.)*)'\s*\]"""
)


def check_template(
    c: Collector, ctx: StepContext, path: str, text: str, *, runtime: bool = True
) -> list[str]:
    """``text`` is a well-formed template whose names all mean something; its names."""
    try:
        names = template_names(text)
    except ValueError as exc:
        c.bad(path, str(exc))
        return []
    for name in names:
        meaning = ctx.meaning(name)
        if meaning is None:
            c.bad(path, unknown_name(name))
        elif meaning != "config" and not runtime:
            c.bad(path, not_a_config_value(name))
    return names


# The engine's per-session limits: (limit, what goes over it).
_LIMITS = {
    "variables": (MAX_VARIABLES, too_many_variables()),
    "conns": (MAX_CONNS, f"more than {MAX_CONNS} WebSocket connections per session"),
    "signals": (MAX_SIGNALS, f"more than {MAX_SIGNALS} distinct signal values"),
    "children": (MAX_CHILDREN, f"more than {MAX_CHILDREN} child sessions per session"),
}


class Usage:
    """What the steps checked so far use of each per-session limit, so the step that goes
    over one is the one named (as the worker numbers them, in step order)."""

    def __init__(self) -> None:
        self.names: dict[str, set[str]] = {kind: set() for kind in _LIMITS}
        self.counts: dict[str, int] = dict.fromkeys(_LIMITS, 0)
        self.reported: set[str] = set()

    def add(self, c: Collector, kind: str, path: str, name: str = "", count: int = 1) -> None:
        """``count`` more of ``kind`` (distinct ``name``s count once) at ``path``."""
        if name:
            if name in self.names[kind]:
                return
            self.names[kind].add(name)
        self.counts[kind] += count
        limit, what = _LIMITS[kind]
        if self.counts[kind] > limit and kind not in self.reported:
            self.reported.add(kind)
            c.bad(path, what)


@dataclass(frozen=True)
class StepContext:
    """What a step is checked against: the entry's inventory and the config in force."""

    load_test: loadtest_pb2.LoadTest
    inventory: Inventory
    graph: ScenarioGraph  # the load test's scenarios by name (shape.weigh made it)
    config: dict[str, Any] = field(default_factory=dict)
    depth: int = 0
    scenario_depth: int = 0
    in_child: bool = False
    usage: Usage = field(default_factory=Usage)  # shared by the contexts of one entry

    def meaning(self, name: str) -> str | None:
        """ "variable", "builtin", "config", or None when the name means nothing."""
        if name in self.inventory.assigned:
            return "variable"
        if name in BUILTINS:
            return "builtin"
        value: Any = self.config
        for key in name.split("."):
            if not isinstance(value, dict) or key not in value:
                return "variable" if self.inventory.python else None
            value = value[key]
        return "config"


def check_entry_limits(c: Collector, p: str, ctx: StepContext) -> None:
    """The engine's per-session limits, over everything an entry's sessions run (scenarios
    run by name included), once its steps are checked: a limit no step was named for."""
    inv = ctx.inventory
    used = {
        "variables": len(inv.assigned),
        "conns": len(inv.conns),
        "signals": len(inv.signals),
        "children": len(inv.children) + inv.spread_children,
    }
    for kind, (limit, what) in _LIMITS.items():
        if used[kind] > limit and kind not in ctx.usage.reported:
            c.bad(p, what)


def check_steps(c: Collector, prefix: str, steps: Any, ctx: StepContext) -> None:
    for j, step in enumerate(steps):
        check_step(c, f"{prefix}[{j}]", step, ctx)


def check_step(c: Collector, p: str, step: loadtest_pb2.Step, ctx: StepContext) -> None:
    action = step.WhichOneof("action")
    if action is None:
        c.bad(p, "is empty: set one action such as 'http' or 'delay'")
        return
    _CHECKS[action](c, f"{p}.{action}", getattr(step, action), ctx)


def _body(c: Collector, q: str, steps: Any, ctx: StepContext, child: bool = False) -> None:
    if not steps:
        c.bad(f"{q}.steps", "needs at least one step")
        return
    if ctx.depth + 1 > MAX_NESTING:
        c.bad(
            q,
            "repeat, loop, retry_on_error, call_traced, async and cc_spread bodies nest at"
            f" most {MAX_NESTING} deep",
        )
        return
    inner = replace(ctx, depth=ctx.depth + 1, in_child=ctx.in_child or child)
    check_steps(c, f"{q}.steps", steps, inner)


def _delay(c: Collector, q: str, s: loadtest_pb2.DelayStep, ctx: StepContext) -> None:
    c.duration(f"{q}.duration", s.duration, required=True)


def _random_delay(c: Collector, q: str, s: loadtest_pb2.RandomDelayStep, ctx: StepContext) -> None:
    low = c.duration(f"{q}.min", s.min) or 0
    high = c.duration(f"{q}.max", s.max, required=True)
    if high is not None and low > high:
        c.bad(f"{q}.min", "must not be more than max")


def _repeat(c: Collector, q: str, s: loadtest_pb2.RepeatStep, ctx: StepContext) -> None:
    if not 0 <= s.count <= MAX_REPEAT:
        c.bad(f"{q}.count", f"must be between 0 and {MAX_REPEAT}")
    _body(c, q, s.steps, ctx)


def _loop(c: Collector, q: str, s: loadtest_pb2.LoopStep, ctx: StepContext) -> None:
    if c.duration(f"{q}.duration", s.duration, required=True) == 0:
        c.bad(f"{q}.duration", "must be > 0")
    _body(c, q, s.steps, ctx)


def _retry_on_error(
    c: Collector, q: str, s: loadtest_pb2.RetryOnErrorStep, ctx: StepContext
) -> None:
    if not 0 <= s.retries <= MAX_RETRIES:
        c.bad(f"{q}.retries", f"must be between 0 and {MAX_RETRIES}")
    c.duration(f"{q}.backoff", s.backoff)
    _body(c, q, s.steps, ctx)


def _call_traced(c: Collector, q: str, s: loadtest_pb2.CallTracedStep, ctx: StepContext) -> None:
    if not s.name:
        c.bad(f"{q}.name", "is required (the metric key of the group)")
    _body(c, q, s.steps, ctx)


# -- HTTP ------------------------------------------------------------------------------------


def _http(c: Collector, q: str, h: loadtest_pb2.HttpStep, ctx: StepContext) -> None:
    method = h.method.upper()
    if not h.method:
        c.bad(f"{q}.method", f"is required (one of {', '.join(HTTP_METHODS)})")
    elif method not in HTTP_METHODS:
        c.bad(
            f"{q}.method",
            f"unknown HTTP method {h.method!r} (use one of {', '.join(HTTP_METHODS)})",
        )
    target = h.WhichOneof("target")
    if target is None:
        c.bad(f"{q}.path", "set 'path' (relative to config.base_url) or 'url'")
    elif target == "path":
        _path(c, f"{q}.path", h.path, ctx)
        base_url = ctx.config.get("base_url")
        if not isinstance(base_url, str) or not base_url:
            c.bad("config.base_url", f"is required by {q}.path (e.g. 'http://127.0.0.1:8080')")
    else:
        _url(c, f"{q}.url", h.url, ("http", "https"), ctx)
    _headers(c, q, h.headers, _ENGINE_HEADERS, ctx)
    for name, value in h.query.items():
        if any(ch in name + value for ch in "\r\n\0"):
            c.bad(f"{q}.query[{name}]", "must not contain CR, LF or NUL")
        check_template(c, ctx, f"{q}.query[{name}]", value)
    payload = h.WhichOneof("payload")
    if payload == "body":
        check_template(c, ctx, f"{q}.body", h.body)
    elif payload == "json":
        _json(c, f"{q}.json", h.json, ctx)
    elif payload == "form":
        for name, value in h.form.fields.items():
            if "\0" in name + value:
                c.bad(f"{q}.form.fields[{name}]", "must not contain NUL")
            check_template(c, ctx, f"{q}.form.fields[{name}]", value)
    if h.HasField("basic_auth"):
        for part in ("username", "password"):
            text = getattr(h.basic_auth, part)
            check_template(c, ctx, f"{q}.basic_auth.{part}", text, runtime=False)
    for k, e in enumerate(h.extract):
        _extract(c, f"{q}.extract[{k}]", e, ctx)


def _path(c: Collector, path: str, text: str, ctx: StepContext) -> None:
    """A path (and query) after the base URL: spaces and non-ASCII are fine (they are
    percent-encoded when the request is rendered); control characters are refused by the
    first pass (``shape``), a fragment here."""
    if not text.startswith("/"):
        c.bad(path, f"must start with '/' (got {text!r})")
    elif "#" in _literal_text(text):
        c.bad(path, "must not contain '#' (a fragment is not sent to the server)")
    check_template(c, ctx, path, text)


def _literal_text(text: str) -> str:
    """``text`` without its placeholders (they may hold blanks: ``{{ id }}``)."""
    try:
        return "".join(p for p in split_template(text) if isinstance(p, str))
    except ValueError:
        return text


def _url(c: Collector, path: str, url: str, schemes: tuple[str, ...], ctx: StepContext) -> None:
    scheme, sep, rest = url.partition("://")
    try:
        urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed IPv6 bracket
        c.bad(path, str(exc))
        return
    if not sep or scheme not in schemes:
        c.bad(path, not_a_url(url, schemes))
        return
    netloc = rest.split("/", 1)[0].split("?", 1)[0]
    try:
        parse_target(f"http://{netloc}")
    except ValueError as exc:
        c.bad(path, str(exc))
        return
    if "#" in _literal_text(rest):
        c.bad(path, "must not contain '#' (a fragment is not sent to the server)")
    check_template(c, ctx, path, rest[len(netloc) :])


def _headers(
    c: Collector, q: str, headers: Any, reserved: tuple[str, ...], ctx: StepContext
) -> None:
    for name, value in headers.items():
        if not _TOKEN.match(name):
            c.bad(f"{q}.headers", f"bad header name {name!r}")
        elif name.lower() in reserved:
            c.bad(f"{q}.headers[{name}]", "is set by the engine")
        where = f"{q}.headers[{name}]"
        problem = header_value_problem(value)
        if problem:
            c.bad(where, problem)
        for name_ in check_template(c, ctx, where, value):
            found, config_value = config_lookup(ctx.config, name_)
            if found and ctx.meaning(name_) == "config":
                problem = header_value_problem(literal_text(config_value))
                if problem:
                    c.bad(where, f"the config value '{{{{{name_}}}}}' {problem}")


def _json(c: Collector, path: str, value: Any, ctx: StepContext) -> None:
    try:
        data = json_format.MessageToDict(value)
    except ValueError:
        c.bad(path, "must not contain NaN or infinite numbers (JSON has none)")
        return

    def strings(v: Any) -> Any:
        if isinstance(v, dict):
            for item in v.values():
                yield from strings(item)
        elif isinstance(v, list):
            for item in v:
                yield from strings(item)
        elif isinstance(v, str):
            yield v

    for text in strings(data):
        check_template(c, ctx, path, text)


def _extract(c: Collector, q: str, e: loadtest_pb2.Extract, ctx: StepContext) -> None:
    _set_var(c, f"{q}.var", e.var, ctx)
    source = e.WhichOneof("source")
    if source is None:
        c.bad(f"{q}.json_path", "set one source: json_path, regex, header, status or body")
    elif source == "json_path":
        problem = json_path_problem(e.json_path)
        if problem:
            c.bad(f"{q}.json_path", problem)
    elif source == "regex":
        problem = regex_problem(e.regex)
        if problem:
            c.bad(f"{q}.regex", problem)
    elif source == "header" and not _TOKEN.match(e.header):
        c.bad(f"{q}.header", f"bad header name {e.header!r}")


def json_path_problem(text: str) -> str | None:
    """Why ``text`` is not a JSON path the engine reads (``$.a.b[0]``, ``a["k"]``), or None."""
    s = text.strip()
    if not s:
        return "must not be empty (use '$' for the whole body)"
    if s.startswith("$"):
        s = s[1:]
    elif not s.startswith(("[", ".")):
        s = "." + s
    pos = 0
    while pos < len(s):
        m = _JSON_PATH_SEGMENT.match(s, pos)
        if m is None:
            return f'cannot read {text!r} from {s[pos:]!r} on (use e.g. $.items[0].id or a["k"])'
        pos = m.end()
    return None


def regex_problem(pattern: str) -> str | None:
    """Why ``pattern`` does not compile, or None (Python's ``re`` stands in for POSIX ERE)."""
    if not pattern:
        return "must not be empty"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # FutureWarning on POSIX classes such as [[:digit:]]
            re.compile(pattern)
    except re.error as exc:
        return f"does not compile: {exc}"
    return None


def _set_var(c: Collector, path: str, name: str, ctx: StepContext) -> None:
    """A step sets variable ``name``: a valid name, and one more slot if it is new."""
    _var_name(c, path, name)
    if name:
        ctx.usage.add(c, "variables", path, name)


def _var_name(c: Collector, path: str, name: str) -> None:
    if not name:
        c.bad(path, "is required (a session variable name)")
    elif not _VAR_NAME.match(name):
        c.bad(path, f"{name!r} is not a variable name (letters, digits, '_', '-')")


# -- WebSocket -------------------------------------------------------------------------------


def _conn(c: Collector, q: str, name: str, ctx: StepContext) -> None:
    if (name or DEFAULT_CONN) not in ctx.inventory.conns:
        c.bad(f"{q}.conn", f"no ws_connect step opens a connection named {name or DEFAULT_CONN!r}")


def _ws_connect(c: Collector, q: str, w: loadtest_pb2.WsConnectStep, ctx: StepContext) -> None:
    ctx.usage.add(c, "conns", f"{q}.conn", w.conn or DEFAULT_CONN)
    if w.WhichOneof("target") == "url":
        _url(c, f"{q}.url", w.url, ("ws", "wss", "http", "https"), ctx)
    else:
        base_url = ctx.config.get("base_url")
        if not isinstance(base_url, str) or not base_url:
            c.bad("config.base_url", f"is required by {q} (or give url)")
        if w.path:
            _path(c, f"{q}.path", w.path, ctx)
    _headers(c, q, w.headers, _WS_HEADERS, ctx)


def _ws_send(c: Collector, q: str, w: loadtest_pb2.WsSendStep, ctx: StepContext) -> None:
    _conn(c, q, w.conn, ctx)
    payload = w.WhichOneof("payload")
    if payload is None:
        c.bad(f"{q}.text", "set text, json or binary")
    elif payload == "text":
        check_template(c, ctx, f"{q}.text", w.text)
    elif payload == "json":
        _json(c, f"{q}.json", w.json, ctx)


def _ws_recv(c: Collector, q: str, w: loadtest_pb2.WsRecvStep, ctx: StepContext) -> None:
    _conn(c, q, w.conn, ctx)
    c.duration(f"{q}.timeout", w.timeout)
    if w.assign:
        _set_var(c, f"{q}.assign", w.assign, ctx)


def _ws_await_recv(c: Collector, q: str, w: loadtest_pb2.WsAwaitRecvStep, ctx: StepContext) -> None:
    _conn(c, q, w.conn, ctx)
    c.duration(f"{q}.timeout", w.timeout)
    check_template(c, ctx, f"{q}.expected", w.expected)


def _ws_close(c: Collector, q: str, w: loadtest_pb2.WsCloseStep, ctx: StepContext) -> None:
    _conn(c, q, w.conn, ctx)


# -- child sessions and signals --------------------------------------------------------------


def _child_name(c: Collector, path: str, name: str, ctx: StepContext) -> None:
    if not name:
        c.bad(path, "is required (the name of an async child session)")
    elif ctx.in_child:
        c.bad(path, "a child session has no child sessions of its own")
    elif name not in ctx.inventory.children:
        c.bad(path, f"no async step starts a child session named {name!r}")


def _cc_spread(c: Collector, q: str, s: loadtest_pb2.CcSpreadStep, ctx: StepContext) -> None:
    if ctx.in_child:
        c.bad(q, "nested child sessions are not supported")
    if not 1 <= s.rate <= MAX_SPREAD:
        c.bad(f"{q}.rate", f"must be between 1 and {MAX_SPREAD}")
        ctx.usage.reported.add("children")  # this step is named already
    else:
        ctx.usage.add(c, "children", f"{q}.rate", count=s.rate)
    c.duration(f"{q}.interval", s.interval)
    _body(c, q, s.steps, ctx, child=True)


def _async(c: Collector, q: str, a: loadtest_pb2.AsyncStep, ctx: StepContext) -> None:
    if ctx.in_child:
        c.bad(q, "nested child sessions are not supported")
    if not a.name:
        c.bad(f"{q}.name", "is required (await and signal refer to it)")
    else:
        ctx.usage.add(c, "children", f"{q}.name", a.name)
    if a.scenario and a.steps:
        c.bad(f"{q}.scenario", "give either steps or scenario, not both")
    elif a.scenario:
        found = ctx.graph.find(a.scenario)
        if found is None:
            c.bad(f"{q}.scenario", f"no scenario of this load test is named {a.scenario!r}")
        elif ctx.graph.starts_children(a.scenario, ASYNC_PARTS):
            c.bad(f"{q}.scenario", "nested child sessions are not supported (it starts some)")
    else:
        _body(c, q, a.steps, ctx, child=True)


def _await(c: Collector, q: str, a: loadtest_pb2.AwaitStep, ctx: StepContext) -> None:
    _child_name(c, f"{q}.name", a.name, ctx)
    c.duration(f"{q}.timeout", a.timeout)


def _await_all(c: Collector, q: str, a: loadtest_pb2.AwaitAllStep, ctx: StepContext) -> None:
    c.duration(f"{q}.timeout", a.timeout)


def _signal_value(c: Collector, path: str, value: str, ctx: StepContext) -> None:
    if not value:
        c.bad(path, "is required")
    else:
        ctx.usage.add(c, "signals", path, value)


def _signal(c: Collector, q: str, s: loadtest_pb2.SignalStep, ctx: StepContext) -> None:
    _child_name(c, f"{q}.to", s.to, ctx)
    _signal_value(c, f"{q}.value", s.value, ctx)


def _signal_parent(
    c: Collector, q: str, s: loadtest_pb2.SignalParentStep, ctx: StepContext
) -> None:
    _signal_value(c, f"{q}.value", s.value, ctx)


def _await_signal(c: Collector, q: str, s: loadtest_pb2.AwaitSignalStep, ctx: StepContext) -> None:
    _signal_value(c, f"{q}.value", s.value, ctx)
    c.duration(f"{q}.timeout", s.timeout)


# -- the rest ---------------------------------------------------------------------------------


def _run_scenario(c: Collector, q: str, r: loadtest_pb2.RunScenarioStep, ctx: StepContext) -> None:
    if ctx.scenario_depth + 1 > MAX_SCENARIO_DEPTH:
        c.bad(q, f"run_scenario nests at most {MAX_SCENARIO_DEPTH} deep")
        return
    config = ctx.config
    if r.HasField("config"):
        try:
            over = struct_to_dict(r.config)
        except ValueError:
            c.bad(f"{q}.config", "must not contain NaN or infinite numbers")
            over = {}
        misspelt_keys(c, f"{q}.config", over, TemplateNames(ctx.load_test))
        base = over.get("base_url")
        if base is not None:
            try:
                parse_target(base if isinstance(base, str) else "")
            except ValueError as exc:
                c.bad(f"{q}.config.base_url", str(exc))
        config = deep_merge(config, over)
    inner = replace(ctx, config=config, scenario_depth=ctx.scenario_depth + 1)
    which = r.WhichOneof("which")
    if which is None:
        c.bad(f"{q}.name", "give a scenario (inline) or the name of one")
    elif which == "name":
        found = ctx.graph.find(r.name)
        if found is None:
            c.bad(f"{q}.name", f"no scenario of this load test is named {r.name!r}")
        elif ctx.scenario_depth + 1 + ctx.graph.height(r.name) > MAX_SCENARIO_DEPTH:
            c.bad(f"{q}.name", f"run_scenario nests at most {MAX_SCENARIO_DEPTH} deep")
        elif ctx.in_child and ctx.graph.starts_children(r.name):
            c.bad(f"{q}.name", "nested child sessions are not supported (it starts some)")
    else:
        for part in ("init", "run", "teardown"):
            check_steps(c, f"{q}.scenario.{part}", getattr(r.scenario, part), inner)


def _assign(c: Collector, q: str, a: loadtest_pb2.AssignStep, ctx: StepContext) -> None:
    if not a.values:
        c.bad(f"{q}.values", "needs at least one name")
    for name, value in sorted(a.values.items()):
        _set_var(c, f"{q}.values[{name}]", name, ctx)
        check_template(c, ctx, f"{q}.values[{name}]", value)


def _update_assign(
    c: Collector, q: str, u: loadtest_pb2.UpdateAssignStep, ctx: StepContext
) -> None:
    _set_var(c, f"{q}.name", u.name, ctx)
    change = u.WhichOneof("change")
    if change is None:
        c.bad(f"{q}.add", "set add (an integer) or set (a template)")
    elif change == "add" and not -MAX_UPDATE_ADD < u.add < MAX_UPDATE_ADD:
        c.bad(f"{q}.add", f"must be between -2^62 and 2^62 (got {u.add})")
    elif change == "set":
        check_template(c, ctx, f"{q}.set", u.set)


def _delete_assign(
    c: Collector, q: str, d: loadtest_pb2.DeleteAssignStep, ctx: StepContext
) -> None:
    if not d.names:
        c.bad(f"{q}.names", "needs at least one name")
    for k, name in enumerate(d.names):
        _var_name(c, f"{q}.names[{k}]", name)


def _add_metric(c: Collector, q: str, a: loadtest_pb2.AddMetricStep, ctx: StepContext) -> None:
    if not a.key:
        c.bad(f"{q}.key", "is required (the metric key)")
    source = a.WhichOneof("source")
    if source is None:
        c.bad(f"{q}.value", "set value (a number) or var (a session variable)")
    elif source == "value" and a.value < 0:
        c.bad(f"{q}.value", "must be >= 0")
    elif source == "var" and ctx.meaning(a.var) != "variable":
        c.bad(f"{q}.var", f"no step sets a session variable named {a.var!r}")


def _abort(c: Collector, q: str, a: loadtest_pb2.AbortStep, ctx: StepContext) -> None:
    pass  # reason and metric are free text


def _python(c: Collector, q: str, s: loadtest_pb2.PythonStep, ctx: StepContext) -> None:
    module, sep, function = s.function.partition(":")
    ident = r"[A-Za-z_][A-Za-z0-9_]*"
    if not sep or not re.fullmatch(rf"{ident}(\.{ident})*", module):
        c.bad(f"{q}.function", f"{s.function!r} is not 'module:function'")
    elif not re.fullmatch(rf"{ident}(\.{ident})*", function):
        c.bad(f"{q}.function", f"{s.function!r} is not 'module:function'")


# One checker per Step action: (collector, field path of the action, its message, context).
_CHECKS: dict[str, Any] = {
    "http": _http,
    "delay": _delay,
    "random_delay": _random_delay,
    "repeat": _repeat,
    "loop": _loop,
    "ws_connect": _ws_connect,
    "ws_send": _ws_send,
    "ws_recv": _ws_recv,
    "ws_await_recv": _ws_await_recv,
    "ws_close": _ws_close,
    "cc_spread": _cc_spread,
    "async": _async,
    "await": _await,
    "await_all": _await_all,
    "signal": _signal,
    "signal_parent": _signal_parent,
    "await_signal": _await_signal,
    "run_scenario": _run_scenario,
    "assign": _assign,
    "update_assign": _update_assign,
    "delete_assign": _delete_assign,
    "retry_on_error": _retry_on_error,
    "add_metric": _add_metric,
    "call_traced": _call_traced,
    "abort": _abort,
    "python": _python,
}
