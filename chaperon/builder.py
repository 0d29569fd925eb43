"""A Python builder for load tests, in Chaperon's pipe style, producing the same protobuf.

    from chaperon import LoadTest, Scenario

    login = (
        Scenario("login")
        .post("/login", json={"user": "u", "password": "p"})
        .extract(token="$.token")
        .get("/me", headers={"Authorization": "Bearer {{token}}"})
        .ws_connect("/ws")
        .ws_send("hello {{session_id}}")
        .ws_await_recv("hello {{session_id}}", timeout="2s")
        .ws_close()
    )
    load_test = (
        LoadTest("smoke", base_url="http://127.0.0.1:8080")
        .add(login, concurrency=50, duration="5s")
        .add(login, arrival_rate=200, duration="10s")
        .threshold("GET /me", "p99", 250)
    )

Each method returns a new object (like Chaperon's ``session |> get("/")``), so a scenario can
be shared and extended without surprises. Steps that hold other steps (``repeat``, ``loop``,
``retry_on_error``, ``call_traced``, ``async_``, ``cc_spread``) take them as a ``Scenario``
(its run steps; the name does not matter: ``Scenario().get("/")``) or a list of steps.
Text arguments marked *template* may hold ``{{name}}`` placeholders: a session variable, the
built-ins ``session_id`` and ``iteration``, or a config key. ``to_proto()`` gives the
``chaperon.v1.LoadTest`` message that ``Client.run`` takes; ``chaperon run script.py`` runs a
script that leaves one in a module-level ``load_test``. The builder checks little: the
master's validation answers with the field path of whatever is wrong.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Union

from google.protobuf import json_format
from google.protobuf.message import Message

from chaperon.v1 import loadtest_pb2

# What a step that holds steps accepts: a Scenario (its run steps), or a list of steps
# (Scenarios, step dicts in the proto3 JSON form, or Step messages).
Steps = Union["Scenario", Iterable[Union["Scenario", Mapping[str, Any], loadtest_pb2.Step]]]


def _message_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _steps(body: Steps) -> list[dict[str, Any]]:
    if isinstance(body, Scenario):
        return [dict(s) for s in body.steps]
    out: list[dict[str, Any]] = []
    for item in body:
        if isinstance(item, Scenario):
            out += [dict(s) for s in item.steps]
        elif isinstance(item, Message):
            out.append(_message_dict(item))
        else:
            out.append(dict(item))
    return out


def _extract(var: str, optional: bool, **source: Any) -> loadtest_pb2.Extract:
    return loadtest_pb2.Extract(var=var, optional=optional, **source)


def json_path(var: str, path: str, *, optional: bool = False) -> loadtest_pb2.Extract:
    """Store the value at ``path`` of a JSON response (``$.token``, ``$.items[0].id``) in the
    session variable ``var``; strings unquoted, other values as JSON text."""
    return _extract(var, optional, json_path=path)


def regex(var: str, pattern: str, *, optional: bool = False) -> loadtest_pb2.Extract:
    """Store the first match of ``pattern`` (POSIX extended) in the body: its first group
    if it has one, else the whole match."""
    return _extract(var, optional, regex=pattern)


def header(var: str, name: str, *, optional: bool = False) -> loadtest_pb2.Extract:
    """Store the first value of response header ``name`` (case-insensitive)."""
    return _extract(var, optional, header=name)


def status_code(var: str) -> loadtest_pb2.Extract:
    """Store the response's status code (e.g. ``"200"``)."""
    return _extract(var, False, status=True)


def response_body(var: str, *, optional: bool = False) -> loadtest_pb2.Extract:
    """Store the whole response body (up to config ``max_capture`` bytes)."""
    return _extract(var, optional, body=True)


def _set(out: dict[str, Any], **values: Any) -> dict[str, Any]:
    """``out`` with the values that are not None (empty strings and zeros are kept out too
    where proto3 would drop them anyway)."""
    for key, value in values.items():
        if value is not None and value != "":
            out[key] = value
    return out


@dataclass(frozen=True)
class Scenario:
    """A named list of steps (the ``run`` part), with optional ``init`` and ``teardown``
    steps; every method appends one step and returns a new Scenario."""

    name: str = ""
    steps: tuple[dict[str, Any], ...] = ()
    init_steps: tuple[dict[str, Any], ...] = ()
    teardown_steps: tuple[dict[str, Any], ...] = ()

    def _step(self, step: dict[str, Any]) -> Scenario:
        return replace(self, steps=(*self.steps, step))

    # -- parts ----------------------------------------------------------------------------

    def init(self, steps: Steps) -> Scenario:
        """Add steps run once per session before the first iteration (measured)."""
        return replace(self, init_steps=(*self.init_steps, *_steps(steps)))

    def teardown(self, steps: Steps) -> Scenario:
        """Add steps run once per session at its end (not measured)."""
        return replace(self, teardown_steps=(*self.teardown_steps, *_steps(steps)))

    # -- HTTP -----------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, Any] | None = None,
        body: str | None = None,
        json: Any = None,
        form: Mapping[str, Any] | None = None,
        auth: tuple[str, str] | None = None,
        extract: Iterable[loadtest_pb2.Extract] | None = None,
        metric: str | None = None,
    ) -> Scenario:
        """An HTTP request; ``path`` (template) relative to ``base_url``, or an absolute
        http(s) URL. Header, query and form values, the raw ``body`` and the strings of
        ``json`` are templates; ``auth`` is (user, password) for basic auth; ``extract``
        takes values from the response (``json_path``, ``regex``, ``header``,
        ``status_code``, ``response_body``)."""
        http: dict[str, Any] = {"method": method.upper()}
        http["url" if "://" in path else "path"] = path
        if headers:
            http["headers"] = dict(headers)
        if query:
            http["query"] = {k: str(v) for k, v in query.items()}
        given = [k for k, v in (("body", body), ("json", json), ("form", form)) if v is not None]
        if len(given) > 1:
            raise ValueError(f"give one of body, json or form, not {' and '.join(given)}")
        if body is not None:
            http["body"] = body
        if json is not None:
            http["json"] = json
        if form is not None:
            http["form"] = {"fields": {k: str(v) for k, v in form.items()}}
        if auth is not None:
            user, password = auth
            http["basic_auth"] = {"username": user, "password": password}
        if extract:
            http["extract"] = [_message_dict(e) for e in extract]
        if metric:
            http["metric"] = metric
        return self._step({"http": http})

    def get(self, path: str, **options: Any) -> Scenario:
        return self.request("GET", path, **options)

    def post(self, path: str, **options: Any) -> Scenario:
        return self.request("POST", path, **options)

    def put(self, path: str, **options: Any) -> Scenario:
        return self.request("PUT", path, **options)

    def patch(self, path: str, **options: Any) -> Scenario:
        return self.request("PATCH", path, **options)

    def delete(self, path: str, **options: Any) -> Scenario:
        return self.request("DELETE", path, **options)

    def extract(self, *specs: loadtest_pb2.Extract, **json_paths: str) -> Scenario:
        """Add extractions to the previous step, which must be an HTTP request:
        ``.post("/login", ...).extract(token="$.token")`` stores a JSON path's value;
        ``specs`` are ``json_path(...)``, ``regex(...)``, ``header(...)``, ...."""
        if not self.steps or "http" not in self.steps[-1]:
            raise ValueError("extract() follows an HTTP request (get, post, ...)")
        last = self.steps[-1]
        http = dict(last["http"])
        found = [*specs, *(json_path(var, path) for var, path in json_paths.items())]
        http["extract"] = [*http.get("extract", []), *(_message_dict(e) for e in found)]
        return replace(self, steps=(*self.steps[:-1], {**last, "http": http}))

    # -- timing and control flow ----------------------------------------------------------

    def delay(self, duration: str) -> Scenario:
        """Wait, e.g. ``delay("250ms")``."""
        return self._step({"delay": {"duration": duration}})

    def random_delay(self, max_duration: str, min_duration: str | None = None) -> Scenario:
        """Wait a uniform random time up to ``max_duration`` (from ``min_duration``)."""
        step: dict[str, Any] = {"max": max_duration}
        if min_duration is not None:
            step["min"] = min_duration
        return self._step({"random_delay": step})

    def repeat(
        self, count: int, body: Steps, *, traced: bool = False, metric: str | None = None
    ) -> Scenario:
        """Run ``body``'s steps ``count`` times; ``traced`` records each iteration's
        duration under ``metric`` (default "repeat"), like Chaperon's repeat_traced."""
        step: dict[str, Any] = {"count": count, "steps": _steps(body)}
        if traced:
            step["traced"] = True
        if metric:
            step["metric"] = metric
        return self._step({"repeat": step})

    def repeat_traced(self, count: int, body: Steps, metric: str | None = None) -> Scenario:
        return self.repeat(count, body, traced=True, metric=metric)

    def loop(self, duration: str, body: Steps) -> Scenario:
        """Run ``body``'s steps again and again for ``duration``."""
        return self._step({"loop": {"duration": duration, "steps": _steps(body)}})

    def retry_on_error(self, retries: int, backoff: str | None, steps: Steps) -> Scenario:
        """Run ``steps``; when one fails (4xx/5xx included), run them again from the first
        after ``backoff`` (doubled each time), up to ``retries`` more times."""
        step = _set({"retries": retries, "steps": _steps(steps)}, backoff=backoff)
        return self._step({"retry_on_error": step})

    def call_traced(self, name: str, steps: Steps) -> Scenario:
        """Time ``steps`` as one group under metric ``name``."""
        return self._step({"call_traced": {"name": name, "steps": _steps(steps)}})

    def run_scenario(
        self, scenario: Scenario | str, config: Mapping[str, Any] | None = None
    ) -> Scenario:
        """Run another scenario's init, run and teardown steps here (a Scenario, or the name
        of one in this load test), with ``config`` deep-merged over the session's."""
        step: dict[str, Any] = (
            {"name": scenario} if isinstance(scenario, str) else {"scenario": scenario.to_dict()}
        )
        if config:
            step["config"] = dict(config)
        return self._step({"run_scenario": step})

    def abort(self, reason: str = "", *, metric: str | None = None) -> Scenario:
        """End the session: an ``abort`` error on metric "abort" (or ``metric``)."""
        return self._step({"abort": _set({}, reason=reason, metric=metric)})

    def python(self, function: str, *, metric: str | None = None) -> Scenario:
        """Call ``"module:function"`` with the session's variables (a dict of str); a dict it
        returns updates them. Runs only on workers started with --allow-python-steps."""
        return self._step({"python": _set({"function": function}, metric=metric)})

    # -- session variables and metrics ----------------------------------------------------

    def assign(self, values: Mapping[str, Any] | None = None, /, **more: Any) -> Scenario:
        """Set session variables: ``assign(user="u{{session_id}}")`` (values are templates;
        non-strings are converted with ``str``)."""
        merged = {**(values or {}), **more}
        return self._step({"assign": {"values": {k: str(v) for k, v in merged.items()}}})

    def update_assign(
        self, name: str, *, add: int | None = None, set: str | None = None
    ) -> Scenario:
        """Add ``add`` to the integer in variable ``name`` (unset counts as 0), or ``set`` it
        to a template."""
        if (add is None) == (set is None):
            raise ValueError("give one of add or set")
        step: dict[str, Any] = {"name": name}
        if add is not None:
            step["add"] = add
        else:
            step["set"] = set
        return self._step({"update_assign": step})

    def delete_assign(self, *names: str) -> Scenario:
        """Unset session variables."""
        return self._step({"delete_assign": {"names": list(names)}})

    def add_metric(self, key: str, value: int | None = None, *, var: str | None = None) -> Scenario:
        """Record ``value`` (or the number in session variable ``var``) under metric ``key``
        (as if it were microseconds)."""
        if (value is None) == (var is None):
            raise ValueError("give one of value or var")
        source = {"value": value} if value is not None else {"var": var}
        return self._step({"add_metric": {"key": key, **source}})

    # -- WebSocket ------------------------------------------------------------------------

    def ws_connect(
        self,
        path: str,
        *,
        conn: str | None = None,
        headers: Mapping[str, str] | None = None,
        metric: str | None = None,
    ) -> Scenario:
        """Open a WebSocket on connection ``conn`` (default "default"): ``path`` (template)
        relative to ``base_url``, or an absolute ws:// URL."""
        step = _set({"url" if "://" in path else "path": path}, conn=conn, metric=metric)
        if headers:
            step["headers"] = dict(headers)
        return self._step({"ws_connect": step})

    def ws_send(
        self,
        text: str | bytes | None = None,
        *,
        json: Any = None,
        conn: str | None = None,
        metric: str | None = None,
    ) -> Scenario:
        """Send a text frame (``text``, a template), a binary one (``text`` as bytes) or a
        text frame holding ``json`` (its strings are templates)."""
        if (text is None) == (json is None):
            raise ValueError("give one of text (str or bytes) or json")
        step: dict[str, Any]
        if isinstance(text, bytes):
            step = {"binary": base64.b64encode(text).decode("ascii")}
        elif text is not None:
            step = {"text": text}
        else:
            step = {"json": json}
        return self._step({"ws_send": _set(step, conn=conn, metric=metric)})

    def ws_recv(
        self,
        *,
        conn: str | None = None,
        timeout: str | None = None,
        assign: str | None = None,
        metric: str | None = None,
    ) -> Scenario:
        """Wait for the next message (``timeout`` default: config request_timeout); store
        its payload in variable ``assign``."""
        step = _set({}, conn=conn, timeout=timeout, assign=assign, metric=metric)
        return self._step({"ws_recv": step})

    def ws_await_recv(
        self,
        expected: str,
        *,
        conn: str | None = None,
        timeout: str | None = None,
        metric: str | None = None,
    ) -> Scenario:
        """Wait for a message equal to ``expected`` (template), dropping others."""
        step = _set({"expected": expected}, conn=conn, timeout=timeout, metric=metric)
        return self._step({"ws_await_recv": step})

    def ws_close(self, *, conn: str | None = None, metric: str | None = None) -> Scenario:
        """Close connection ``conn`` with the close handshake."""
        return self._step({"ws_close": _set({}, conn=conn, metric=metric)})

    # -- child sessions and signals -------------------------------------------------------

    def async_(self, name: str, steps: Steps | str) -> Scenario:
        """Start ``steps`` (or the run steps of the scenario of this load test named by a
        string) as child session ``name``; the session goes on at once. (Chaperon's
        ``async``, a Python keyword.)"""
        body = {"scenario": steps} if isinstance(steps, str) else {"steps": _steps(steps)}
        return self._step({"async": {"name": name, **body}})

    def await_(self, name: str, *, timeout: str | None = None) -> Scenario:
        """Wait until child session ``name`` has ended (no timeout by default)."""
        return self._step({"await": _set({"name": name}, timeout=timeout)})

    def await_all(self, *, timeout: str | None = None) -> Scenario:
        """Wait until every child session has ended."""
        return self._step({"await_all": _set({}, timeout=timeout)})

    def cc_spread(self, rate: int, interval: str, steps: Steps) -> Scenario:
        """Run ``steps`` ``rate`` times (up to 256) as child sessions whose starts are spread
        evenly over ``interval``, and wait for them all."""
        step = {"rate": rate, "interval": interval, "steps": _steps(steps)}
        return self._step({"cc_spread": step})

    def signal(self, to: str, value: str) -> Scenario:
        """Send ``value`` to child session ``to``."""
        return self._step({"signal": {"to": to, "value": value}})

    def signal_parent(self, value: str) -> Scenario:
        """Send ``value`` to the parent session."""
        return self._step({"signal_parent": {"value": value}})

    def await_signal(self, value: str, *, timeout: str | None = None) -> Scenario:
        """Wait for signal ``value`` (default timeout: config request_timeout)."""
        return self._step({"await_signal": _set({"value": value}, timeout=timeout)})

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "run": [dict(s) for s in self.steps]}
        if self.init_steps:
            out["init"] = [dict(s) for s in self.init_steps]
        if self.teardown_steps:
            out["teardown"] = [dict(s) for s in self.teardown_steps]
        return out


@dataclass(frozen=True)
class LoadTest:
    """A load test: a default config and scenario entries run at the same time."""

    name: str
    base_url: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    entries: tuple[dict[str, Any], ...] = ()
    thresholds: tuple[dict[str, Any], ...] = ()
    timeout: str | None = None
    tag: str | None = None

    def add(
        self,
        scenario: Scenario | Sequence[Scenario] | None = None,
        *,
        sequence: Sequence[Scenario] | None = None,
        concurrency: int | None = None,
        duration: str | None = None,
        iterations: int | None = None,
        arrival_rate: float | None = None,
        stages: list[tuple[str, float]] | None = None,
        max_sessions: int | None = None,
        config: Mapping[str, Any] | None = None,
        session_name: str | None = None,
        scenario_timeout: str | None = None,
        delay: str | None = None,
        random_delay: str | None = None,
        graceful_stop: str | None = None,
    ) -> LoadTest:
        """Run ``scenario`` (or a ``sequence`` of scenarios, one after the other in each
        session, variables carried over; a list as ``scenario`` is a sequence too):
        ``concurrency`` sessions (closed model) or ``arrival_rate`` sessions per second,
        optionally ramped by ``stages`` of (duration, target rate). ``config`` is
        deep-merged over the load test's; ``delay``/``random_delay`` hold each session's
        start back; ``scenario_timeout`` limits each run of the scenario; ``graceful_stop``
        (default 30s) is how long requests in flight at the end of ``duration`` may finish."""
        if scenario is not None and not isinstance(scenario, Scenario):
            if sequence is not None:
                raise ValueError("give scenario or sequence, not both")
            scenario, sequence = None, scenario
        if (scenario is None) == (sequence is None):
            raise ValueError("give one of scenario or sequence")
        entry: dict[str, Any] = (
            {"scenario": scenario.to_dict()}
            if scenario is not None
            else {"sequence": {"scenarios": [s.to_dict() for s in sequence or ()]}}
        )
        if concurrency is not None:
            entry["concurrency"] = concurrency
        if arrival_rate is not None or stages:
            rate: dict[str, Any] = {"per_second": arrival_rate or 0}
            if stages:
                rate["stages"] = [{"duration": d, "target": t} for d, t in stages]
            if max_sessions is not None:
                rate["max_sessions"] = max_sessions
            entry["arrival_rate"] = rate
        if duration is not None:
            entry["duration"] = duration
        if iterations is not None:
            entry["iterations"] = iterations
        if config:
            entry["config"] = dict(config)
        _set(
            entry,
            session_name=session_name,
            scenario_timeout=scenario_timeout,
            delay=delay,
            random_delay=random_delay,
            graceful_stop=graceful_stop,
        )
        return replace(self, entries=(*self.entries, entry))

    def threshold(self, metric: str, stat: str, max_value: float) -> LoadTest:
        """Fail the run when ``stat`` of ``metric`` exceeds ``max_value`` (latencies in ms)."""
        return replace(
            self, thresholds=(*self.thresholds, {"metric": metric, "stat": stat, "max": max_value})
        )

    def to_dict(self) -> dict[str, Any]:
        config = dict(self.config)
        if self.base_url is not None:
            config["base_url"] = self.base_url
        out: dict[str, Any] = {"name": self.name, "scenarios": [dict(e) for e in self.entries]}
        if config:
            out["config"] = config
        if self.thresholds:
            out["thresholds"] = [dict(t) for t in self.thresholds]
        if self.timeout:
            out["timeout"] = self.timeout
        if self.tag:
            out["tag"] = self.tag
        return out

    def to_proto(self) -> loadtest_pb2.LoadTest:
        return json_format.ParseDict(self.to_dict(), loadtest_pb2.LoadTest())
