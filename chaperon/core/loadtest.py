"""Load-test helpers shared by the client, the master's validation and the worker's compiler.

Pure functions over the protobuf messages: a load test from its JSON form (the files are read
by ``files``), the effective config of a scenario entry (entry config deep-merged
over the load test's default), target URLs, ``{{name}}`` templates (their syntax only: what a
name means is the worker's business), walking nested steps, and metric keys. Nothing here does
I/O on the network.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from google.protobuf import json_format

from chaperon.core.durations import parse_duration_ns
from chaperon.core.jsonform import form_problems
from chaperon.core.text import printable
from chaperon.v1 import loadtest_pb2

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
METHODS_WITHOUT_BODY = ("HEAD",)


class LoadTestFileError(ValueError):
    """A load-test file that cannot be read; the message is one line for the user.

    ``problems`` has a line for each problem (the file, the line, the field, what to fix) when
    several were found; the message is the first, with how many more there are.
    """

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        self.problems = list(problems) or [message]
        more = len(self.problems) - 1
        super().__init__(f"{message} (and {more} more)" if more > 0 else message)


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Return ``over`` merged into a copy of ``base``; nested dicts merge, the rest replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def struct_to_dict(struct: Any) -> dict[str, Any]:
    return json_format.MessageToDict(struct) if struct is not None else {}


def effective_config(
    load_test: loadtest_pb2.LoadTest,
    entry: loadtest_pb2.ScenarioEntry,
    base: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The config a session of ``entry`` sees: the entry's config over the load test's
    (``base``, when the caller has it already as a dict)."""
    if base is None:
        base = struct_to_dict(load_test.config) if load_test.HasField("config") else {}
    over = struct_to_dict(entry.config) if entry.HasField("config") else {}
    return deep_merge(base, over)


@dataclass(frozen=True)
class Target:
    """Where an HTTP step goes: scheme, host (as written), port, and the path prefix."""

    scheme: str
    host: str
    port: int
    base_path: str

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


# A DNS label once IDNA-encoded: letters, digits, '-' (not at either end) and '_' (used by
# internal names), 1 to 63 characters.
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")


def _check_host(url: str, host: str) -> None:
    """ValueError unless ``host`` is an IP literal or a host name DNS can be asked for, so a
    host that could only fail when the run starts is refused when the load test is checked."""
    if "%" in host:
        try:
            scoped = ipaddress.ip_address(host)
        except ValueError:
            scoped = None
        if not isinstance(scoped, ipaddress.IPv6Address) or scoped.scope_id is None:
            raise ValueError(f"{url!r}: a zone id ('%...') is only for an IPv6 address")
        return
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    if host.endswith("."):
        raise ValueError(f"{url!r}: write the host without its trailing dot")
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError(f"{url!r}: {host!r} is not a valid host name ({exc})") from None
    if len(ascii_host) > 253 or not all(_LABEL.match(label) for label in ascii_host.split(".")):
        raise ValueError(f"{url!r}: {host!r} is not a valid host name")


def parse_target(url: str) -> Target:
    """Parse an absolute http(s) URL into a Target; ValueError with a clear reason otherwise."""
    if not isinstance(url, str) or not url:
        raise ValueError("must be an absolute URL such as 'http://127.0.0.1:8080'")
    if any(c in url for c in "\r\n\t "):
        raise ValueError(f"{url!r} contains whitespace")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    try:
        host = parts.hostname
        port = parts.port
    except ValueError as exc:  # a port out of range or not a number
        raise ValueError(f"{url!r} has a bad port ({exc})") from None
    if not host:
        raise ValueError(f"{url!r} has no host")
    _check_host(url, host)
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    if parts.query or parts.fragment:
        raise ValueError(f"{url!r}: a base URL takes no query or fragment")
    return Target(parts.scheme, host, port, parts.path.rstrip("/"))


# ``{{ name }}``: blanks inside the braces are allowed; names are identifiers, dotted for
# nested config keys (``{{auth.user}}``).
_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$")


@dataclass(frozen=True)
class Placeholder:
    """A ``{{name}}`` in a template."""

    name: str


def split_template(text: str) -> list[str | Placeholder]:
    """``"/users/{{ id }}/x"`` -> ``["/users/", Placeholder("id"), "/x"]`` (no empty strings).

    ValueError for a ``{{`` that is never closed or a name that is not an identifier. A lone
    ``}}`` is literal text (JSON bodies are full of them).
    """
    if "{{" not in text:  # most text: no placeholder, nothing to look for
        return [text] if text else []
    out: list[str | Placeholder] = []
    pos = 0
    for match in _PLACEHOLDER.finditer(text):
        _literal(out, text[pos : match.start()])
        name = match.group(1)
        if not name:
            raise ValueError("empty placeholder '{{}}'")
        if not _NAME.match(name):
            raise ValueError(
                f"bad name {name!r} in '{match.group(0)}' (letters, digits, '_', '-', "
                "dots between parts)"
            )
        out.append(Placeholder(name))
        pos = match.end()
    _literal(out, text[pos:])
    return out


def _literal(out: list[str | Placeholder], text: str) -> None:
    if "{{" in text:
        raise ValueError("unbalanced '{{' (a placeholder is '{{name}}')")
    if text:
        out.append(text)


def template_names(text: str) -> list[str]:
    """The placeholder names in ``text`` (ValueError if it is not a well-formed template)."""
    return [p.name for p in split_template(text) if isinstance(p, Placeholder)]


def placeholder_names(text: str) -> list[str]:
    """The names in ``text``'s placeholders, well-formed or not (never raises)."""
    return [m.group(1) for m in _PLACEHOLDER.finditer(text) if m.group(1)]


def display_template(text: str) -> str:
    """How a template shows in a metric key: ``/users/{{ id }}`` -> ``/users/{id}``."""
    try:
        parts = split_template(text)
    except ValueError:
        return text
    return "".join(p if isinstance(p, str) else "{" + p.name + "}" for p in parts)


def metric_key(step: loadtest_pb2.HttpStep, strip_query: bool = False) -> str:
    """The metric key of an HTTP step: ``"<METHOD> <path>"`` (or the step's own ``metric``).

    Placeholders show as ``{name}``; ``strip_query`` (config ``metrics_strip_query``) leaves
    the query string out.
    """
    if step.metric:
        return step.metric
    method = step.method.upper()
    if step.WhichOneof("target") == "url":
        parts = urlsplit(step.url)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
    else:
        path = step.path
    path = display_template(path)
    if strip_query:
        path = path.split("?", 1)[0]
    return f"{method} {path}"


def ws_metric_path(step: loadtest_pb2.WsConnectStep, strip_query: bool = False) -> str:
    """The path part of a ws_connect step's metric key ``"WS connect <path>"``."""
    if step.WhichOneof("target") == "url":
        parts = urlsplit(step.url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    else:
        path = step.path or "/"
    path = display_template(path)
    return path.split("?", 1)[0] if strip_query else path


# The connection of a WebSocket step that names none.
DEFAULT_CONN = "default"
# The fields of a Step that hold a body of steps (its action's ``steps``).
BODY_ACTIONS = ("repeat", "loop", "cc_spread", "async", "retry_on_error", "call_traced")


def find_scenario(load_test: loadtest_pb2.LoadTest, name: str) -> loadtest_pb2.Scenario | None:
    """The first scenario of the load test named ``name`` (inline or in a sequence)."""
    for entry in load_test.scenarios:
        if entry.HasField("scenario"):
            if entry.scenario.name == name:
                return entry.scenario
        else:
            for scenario in entry.sequence.scenarios:
                if scenario.name == name:
                    return scenario
    return None


ScenarioIndex = dict[str, loadtest_pb2.Scenario]


def scenario_index(load_test: loadtest_pb2.LoadTest) -> ScenarioIndex:
    """Every scenario name of the load test -> its first scenario (``find_scenario`` of each
    name, from one pass)."""
    index: ScenarioIndex = {}
    for entry in load_test.scenarios:
        for scenario in entry_scenarios(entry):
            if scenario.name:
                index.setdefault(scenario.name, scenario)
    return index


def entry_scenarios(entry: loadtest_pb2.ScenarioEntry) -> list[loadtest_pb2.Scenario]:
    """The scenario of an entry, or the scenarios of its sequence, in order."""
    if entry.HasField("scenario"):
        return [entry.scenario]
    return list(entry.sequence.scenarios)


def walk_steps(
    steps: Any,
    load_test: loadtest_pb2.LoadTest,
    _seen: frozenset[str] = frozenset(),
    index: ScenarioIndex | None = None,
) -> Iterator[loadtest_pb2.Step]:
    """Every step of ``steps`` and, depth first, of the bodies and scenarios they run
    (``run_scenario`` inline or by name, ``async`` by scenario name; a name already being
    walked is not walked again, so a recursive reference ends). ``index`` is the load
    test's ``scenario_index``, when the caller has it. As many steps as the scenarios
    expand to: the compiler's first pass (``lang.shape``) bounds that before anyone walks."""
    if index is None:
        index = scenario_index(load_test)
    for step in steps:
        yield step
        action = step.WhichOneof("action")
        if action in BODY_ACTIONS:
            yield from walk_steps(getattr(step, action).steps, load_test, _seen, index)
        if action == "async" and getattr(step, "async").scenario:
            name = getattr(step, "async").scenario
            yield from _walk_named(name, ("run",), load_test, _seen, index)
        elif action == "run_scenario":
            rs = step.run_scenario
            if rs.WhichOneof("which") == "scenario":
                for part in ("init", "run", "teardown"):
                    yield from walk_steps(getattr(rs.scenario, part), load_test, _seen, index)
            elif rs.WhichOneof("which") == "name":
                parts = ("init", "run", "teardown")
                yield from _walk_named(rs.name, parts, load_test, _seen, index)


def _walk_named(
    name: str,
    parts: tuple[str, ...],
    load_test: loadtest_pb2.LoadTest,
    seen: frozenset[str],
    index: ScenarioIndex,
) -> Iterator[loadtest_pb2.Step]:
    scenario = index.get(name)
    if scenario is None or name in seen:
        return
    for part in parts:
        yield from walk_steps(getattr(scenario, part), load_test, seen | {name}, index)


@dataclass
class Inventory:
    """What the steps of a plan declare (walked with ``walk_steps``): the names some step
    sets (session variables), whether a python step may set others, the WebSocket
    connections opened, the child sessions started by name, signal values."""

    assigned: set[str] = field(default_factory=set)
    python: bool = False
    conns: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    signals: list[str] = field(default_factory=list)
    spread_children: int = 0

    @classmethod
    def of(
        cls,
        step_lists: Iterable[Any],
        load_test: loadtest_pb2.LoadTest,
        index: ScenarioIndex | None = None,
    ) -> Inventory:
        inv = cls()
        if index is None:
            index = scenario_index(load_test)
        for steps in step_lists:
            for step in walk_steps(steps, load_test, index=index):
                inv._see(step)
        return inv

    def _see(self, step: loadtest_pb2.Step) -> None:
        action = step.WhichOneof("action")
        if action == "assign":
            self.assigned.update(step.assign.values)
        elif action == "update_assign" and step.update_assign.name:
            self.assigned.add(step.update_assign.name)
        elif action == "http":
            self.assigned.update(e.var for e in step.http.extract if e.var)
        elif action == "ws_recv" and step.ws_recv.assign:
            self.assigned.add(step.ws_recv.assign)
        elif action == "python":
            self.python = True
        elif action == "ws_connect":
            conn = step.ws_connect.conn or DEFAULT_CONN
            if conn not in self.conns:
                self.conns.append(conn)
        elif action == "async":
            name = getattr(step, "async").name
            if name and name not in self.children:
                self.children.append(name)
        elif action == "cc_spread":
            self.spread_children += max(0, step.cc_spread.rate)
        elif action in ("signal", "signal_parent", "await_signal"):
            value = getattr(step, action).value
            if value and value not in self.signals:
                self.signals.append(value)


def iter_steps(steps: Any, prefix: str) -> Iterator[tuple[str, loadtest_pb2.Step]]:
    """(field path, step) for every step of ``steps`` and of the bodies written inside them
    (not of scenarios referred to by name: those are walked where they are defined)."""
    for j, step in enumerate(steps):
        p = f"{prefix}[{j}]"
        yield p, step
        action = step.WhichOneof("action")
        if action in BODY_ACTIONS:
            yield from iter_steps(getattr(step, action).steps, f"{p}.{action}.steps")
        elif action == "run_scenario" and step.run_scenario.WhichOneof("which") == "scenario":
            for part in ("init", "run", "teardown"):
                yield from iter_steps(
                    getattr(step.run_scenario.scenario, part), f"{p}.run_scenario.scenario.{part}"
                )


def target_hosts(load_test: loadtest_pb2.LoadTest) -> list[tuple[str, str]]:
    """Every (field path, host) a load test sends requests to; unparseable URLs are skipped
    (validation reports them)."""
    out: list[tuple[str, str]] = []
    try:
        config = struct_to_dict(load_test.config) if load_test.HasField("config") else {}
    except ValueError:  # NaN or infinity: refused by validation
        config = {}
    for i, entry in enumerate(load_test.scenarios):
        try:
            base = effective_config(load_test, entry, config).get("base_url")
        except ValueError:
            base = None
        if isinstance(base, str) and base:
            where = (
                f"scenarios[{i}].config.base_url" if entry.HasField("config") else "config.base_url"
            )
            try:
                out.append((where, parse_target(base).host))
            except ValueError:
                pass
        for s_index, scenario in enumerate(entry_scenarios(entry)):
            prefix = (
                f"scenarios[{i}].scenario"
                if entry.HasField("scenario")
                else f"scenarios[{i}].sequence.scenarios[{s_index}]"
            )
            for part in ("init", "run", "teardown"):
                for path, step in iter_steps(getattr(scenario, part), f"{prefix}.{part}"):
                    out.extend(_step_hosts(path, step))
    return out


def _step_hosts(path: str, step: loadtest_pb2.Step) -> list[tuple[str, str]]:
    action = step.WhichOneof("action")
    url = ""
    if action == "http" and step.http.WhichOneof("target") == "url":
        url, path = step.http.url, f"{path}.http.url"
    elif action == "ws_connect" and step.ws_connect.WhichOneof("target") == "url":
        url, path = step.ws_connect.url, f"{path}.ws_connect.url"
    elif action == "run_scenario" and step.run_scenario.HasField("config"):
        try:
            base = struct_to_dict(step.run_scenario.config).get("base_url")
        except ValueError:
            base = None
        if isinstance(base, str):
            url, path = base, f"{path}.run_scenario.config.base_url"
    if not url:
        return []
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return []
    return [(path, host)] if host else []


# Default cap on an open-model entry's concurrent sessions: this many seconds of the peak rate.
DEFAULT_MAX_SESSIONS_SECONDS = 2.0
DEFAULT_MAX_SESSIONS_MIN = 100
DEFAULT_MAX_SESSIONS_MAX = 20_000


def peak_rate_per_s(rate: loadtest_pb2.ArrivalRate) -> float:
    """The highest arrival rate an ArrivalRate reaches (its start or a stage's target)."""
    return max([rate.per_second, *(stage.target for stage in rate.stages)])


def max_sessions(rate: loadtest_pb2.ArrivalRate) -> int:
    """The entry's cap on concurrent sessions: the given one, or twice the peak rate."""
    if rate.max_sessions > 0:
        return int(rate.max_sessions)
    guess = int(peak_rate_per_s(rate) * DEFAULT_MAX_SESSIONS_SECONDS + 0.999)
    return max(DEFAULT_MAX_SESSIONS_MIN, min(DEFAULT_MAX_SESSIONS_MAX, guess))


def unwrap_request(data: Any) -> tuple[Any, tuple[str, ...]]:
    """The load test of a file's value and its path in it: a SubmitLoadTestRequest body
    (``{"load_test": {...}}``) works as a file too."""
    if (
        isinstance(data, dict)
        and "load_test" in data
        and "scenarios" not in data
        and isinstance(data["load_test"], dict)
    ):
        return data["load_test"], ("load_test",)
    return data, ()


def load_test_from_dict(
    data: Any,
    source: str = "load test",
    line_of: Callable[[tuple[str | int, ...]], int | None] | None = None,
) -> loadtest_pb2.LoadTest:
    """Build a LoadTest from its proto3-JSON form (snake_case or lowerCamelCase).

    What the form gets wrong is said as what to fix (``jsonform``): a line per problem, with
    the line in the file that ``line_of`` finds for the keys as written, when it is given.
    """
    if not isinstance(data, dict):
        raise LoadTestFileError(
            f"{source}: expected an object with 'scenarios', got {type(data).__name__}"
        )
    data, prefix = unwrap_request(data)
    message = loadtest_pb2.LoadTest()
    try:
        json_format.ParseDict(data, message)
    except Exception as exc:  # noqa: BLE001 - ParseError, and what no JSON holds: a lone
        # surrogate in a key (SystemError from upb), a set or a date from YAML tags
        problems = form_problems(data, loadtest_pb2.LoadTest.DESCRIPTOR)
        if not problems:  # the rules of jsonform missed one: still no parser text
            text = " ".join(f"{type(exc).__name__}: {exc}".split())
            raise LoadTestFileError(
                f"{source}: not a load test in its JSON form ({printable(text)})"
            ) from None
        lines = []
        for problem in problems:
            line = line_of((*prefix, *problem.where)) if line_of is not None else None
            lines.append(f"{source}: line {line}: {problem}" if line else f"{source}: {problem}")
        raise LoadTestFileError(lines[0], lines) from None
    return message


# As k6's gracefulStop: how long requests in flight at the end of an entry's duration may finish.
DEFAULT_GRACEFUL_STOP_NS = 30_000_000_000


def entry_duration_ns(entry: loadtest_pb2.ScenarioEntry) -> int | None:
    """How long the entry's load lasts (its duration, or its stages' sum); None when it runs by
    iterations (its length is not known in advance). The entry must have been checked."""
    if entry.HasField("arrival_rate") and entry.arrival_rate.stages:
        return sum(parse_duration_ns(s.duration) for s in entry.arrival_rate.stages)
    if entry.duration:
        return parse_duration_ns(entry.duration)
    return None


def graceful_stop_ns(entry: loadtest_pb2.ScenarioEntry) -> int:
    """The entry's graceful stop (``DEFAULT_GRACEFUL_STOP_NS`` when not given)."""
    return (
        parse_duration_ns(entry.graceful_stop) if entry.graceful_stop else DEFAULT_GRACEFUL_STOP_NS
    )


def scheduled_rate_per_s(rate: loadtest_pb2.ArrivalRate, elapsed_s: float) -> float:
    """The arrival rate an open-model schedule calls for ``elapsed_s`` after its start (stages
    ramp linearly from the rate reached before them; 0 once the stages are over)."""
    if not rate.stages:
        return rate.per_second
    start, at = rate.per_second, 0.0
    for stage in rate.stages:
        length = parse_duration_ns(stage.duration) / 1e9
        if elapsed_s < at + length:
            return start + (stage.target - start) * (elapsed_s - at) / length
        start, at = stage.target, at + length
    return 0.0
