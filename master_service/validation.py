"""Full validation of a submitted LoadTest, before anything is stored or queued.

Every problem is collected (not only the first) as a (field path, description) pair, so one
``INVALID_ARGUMENT`` answer lists all of them in a ``google.rpc.BadRequest``. Paths use proto
field names with indexes: ``scenarios[0].scenario.run[1].http.method``. Limits that protect the
cluster (sessions, steps, durations) answer ``RESOURCE_EXHAUSTED``; parts of the language the
engine does not run yet answer ``UNIMPLEMENTED`` naming the field.
"""

from __future__ import annotations

import math
import re
from typing import Any

from chaperon.allowlist import AllowList
from chaperon.durations import DurationError, parse_duration_ns
from chaperon.loadtest import (
    HTTP_METHODS,
    effective_config,
    parse_target,
    struct_to_dict,
    target_hosts,
)
from chaperon.status import InvalidArgument, ResourceExhausted, Unimplemented
from chaperon.v1 import loadtest_pb2

MAX_SESSIONS_PER_ENTRY = 1_000_000
MAX_ENTRIES = 100
MAX_STEPS = 10_000
MAX_ITERATIONS = 1_000_000_000
MAX_RATE_PER_S = 10_000_000.0
MAX_STAGES = 1_000
MAX_REPEAT = 1_000_000
MAX_NESTING = 8
MAX_NAME_LEN = 200
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_CONFIG_DURATIONS = ("connect_timeout", "request_timeout")


class _Collector:
    def __init__(self) -> None:
        self.violations: list[tuple[str, str]] = []
        self.too_big: list[str] = []
        self.unimplemented: list[str] = []

    def bad(self, path: str, what: str) -> None:
        self.violations.append((path, what))

    def duration(self, path: str, text: str, *, required: bool = False) -> int | None:
        if not text:
            if required:
                self.bad(path, "is required")
            return None
        try:
            return parse_duration_ns(text)
        except DurationError as exc:
            self.bad(path, str(exc))
            return None


def validate_load_test(lt: loadtest_pb2.LoadTest) -> None:
    """Raise InvalidArgument / ResourceExhausted / Unimplemented if ``lt`` cannot run."""
    c = _Collector()
    if len(lt.name) > MAX_NAME_LEN:
        c.bad("name", f"is longer than {MAX_NAME_LEN} characters")
    if lt.timeout:
        c.duration("timeout", lt.timeout)
    _check_config(
        c, "config", _config_dict(c, "config", lt.config) if lt.HasField("config") else {}
    )
    if not lt.scenarios:
        c.bad("scenarios", "needs at least one scenario entry")
    if len(lt.scenarios) > MAX_ENTRIES:
        c.too_big.append(f"scenarios: more than {MAX_ENTRIES} entries")
    for i, entry in enumerate(lt.scenarios):
        _check_entry(c, lt, i, entry)
    for i, th in enumerate(lt.thresholds):
        _check_threshold(c, f"thresholds[{i}]", th)
    if c.violations:
        raise InvalidArgument(c.violations, "load test")
    if c.too_big:
        raise ResourceExhausted("load test too large: " + "; ".join(c.too_big))
    if c.unimplemented:
        raise Unimplemented("not supported yet: " + "; ".join(c.unimplemented))


def check_targets(lt: loadtest_pb2.LoadTest, allow: AllowList) -> None:
    """Raise PermissionDenied naming the first target host outside the allow-list."""
    seen: set[str] = set()
    for where, host in target_hosts(lt):
        if host not in seen:
            seen.add(host)
            allow.check_host(host, where)


def _config_dict(c: _Collector, path: str, struct: Any) -> dict[str, Any]:
    try:
        return struct_to_dict(struct)
    except ValueError:  # protobuf refuses NaN and infinity in a Struct's JSON form
        c.bad(path, "must not contain NaN or infinite numbers")
        return {}


def _check_config(c: _Collector, path: str, cfg: dict[str, Any]) -> None:
    if "base_url" in cfg:
        if not isinstance(cfg["base_url"], str):
            c.bad(f"{path}.base_url", "must be a string URL")
        else:
            try:
                parse_target(cfg["base_url"])
            except ValueError as exc:
                c.bad(f"{path}.base_url", str(exc))
    if "tls_insecure" in cfg and not isinstance(cfg["tls_insecure"], bool):
        c.bad(f"{path}.tls_insecure", "must be true or false")
    if "tls_ca_file" in cfg and not isinstance(cfg["tls_ca_file"], str):
        c.bad(f"{path}.tls_ca_file", "must be the path of a PEM file on the workers")
    for key in _CONFIG_DURATIONS:
        if key in cfg:
            if not isinstance(cfg[key], str):
                c.bad(f"{path}.{key}", "must be a duration string such as '5s'")
            else:
                c.duration(f"{path}.{key}", cfg[key])


def _check_entry(
    c: _Collector, lt: loadtest_pb2.LoadTest, i: int, e: loadtest_pb2.ScenarioEntry
) -> None:
    p = f"scenarios[{i}]"
    spec = e.WhichOneof("spec")
    if spec is None:
        c.bad(f"{p}.scenario", "is required (an inline scenario)")
    elif spec == "sequence":
        c.unimplemented.append(f"{p}.sequence (scenario sequences)")
    if e.HasField("config"):
        _check_config(c, f"{p}.config", _config_dict(c, f"{p}.config", e.config))
    open_model = e.HasField("arrival_rate")
    if open_model:
        _check_arrival_rate(c, p, e)
    elif e.concurrency <= 0:
        c.bad(f"{p}.concurrency", f"must be > 0 (got {e.concurrency})")
    elif e.concurrency > MAX_SESSIONS_PER_ENTRY:
        c.too_big.append(f"{p}.concurrency: more than {MAX_SESSIONS_PER_ENTRY} sessions")
    duration_ns = c.duration(
        f"{p}.duration",
        e.duration,
        required=open_model and not e.arrival_rate.stages,
    )
    if duration_ns == 0:
        c.bad(f"{p}.duration", "must be > 0 when given")
    if e.iterations < 0:
        c.bad(f"{p}.iterations", f"must be >= 0 (got {e.iterations})")
    elif e.iterations > MAX_ITERATIONS:
        c.too_big.append(f"{p}.iterations: more than {MAX_ITERATIONS}")
    for name in ("scenario_timeout", "delay", "random_delay"):
        value = getattr(e, name)
        if value:
            c.duration(f"{p}.{name}", value)
    if len(e.session_name) > MAX_NAME_LEN:
        c.bad(f"{p}.session_name", f"is longer than {MAX_NAME_LEN} characters")
    if spec == "scenario":
        try:
            cfg = effective_config(lt, e)
        except ValueError:  # NaN/infinity, reported above
            cfg = {}
        _check_scenario(c, f"{p}.scenario", e.scenario, cfg)


def _check_arrival_rate(c: _Collector, p: str, e: loadtest_pb2.ScenarioEntry) -> None:
    ar = e.arrival_rate
    q = f"{p}.arrival_rate"
    if e.concurrency != 0:
        c.bad(f"{p}.concurrency", "is for the closed model; with arrival_rate use max_sessions")
    if e.iterations != 0:
        c.bad(f"{p}.iterations", "is for the closed model; each arriving session runs once")
    if not math.isfinite(ar.per_second) or ar.per_second < 0:
        c.bad(f"{q}.per_second", f"must be >= 0 (got {ar.per_second})")
    elif ar.per_second == 0 and not ar.stages:
        c.bad(f"{q}.per_second", "must be > 0 (or give stages)")
    if ar.stages and e.duration:
        c.bad(f"{p}.duration", "give either duration or arrival_rate.stages, not both")
    for k, stage in enumerate(ar.stages):
        ns = c.duration(f"{q}.stages[{k}].duration", stage.duration, required=True)
        if ns == 0:
            c.bad(f"{q}.stages[{k}].duration", "must be > 0")
        if not math.isfinite(stage.target) or stage.target < 0:
            c.bad(f"{q}.stages[{k}].target", f"must be >= 0 (got {stage.target})")
    if len(ar.stages) > MAX_STAGES:
        c.too_big.append(f"{q}.stages: more than {MAX_STAGES}")
    peak = max([ar.per_second, *(s.target for s in ar.stages)])
    if math.isfinite(peak) and peak > MAX_RATE_PER_S:
        c.too_big.append(f"{q}: more than {MAX_RATE_PER_S:g} sessions/s")
    if ar.max_sessions < 0:
        c.bad(f"{q}.max_sessions", f"must be >= 0 (got {ar.max_sessions})")
    elif ar.max_sessions > MAX_SESSIONS_PER_ENTRY:
        c.too_big.append(f"{q}.max_sessions: more than {MAX_SESSIONS_PER_ENTRY}")


def _check_scenario(c: _Collector, p: str, s: loadtest_pb2.Scenario, cfg: dict[str, Any]) -> None:
    if not s.run:
        c.bad(f"{p}.run", "needs at least one step")
    total = len(s.init) + len(s.run) + len(s.teardown)
    if total > MAX_STEPS:
        c.too_big.append(f"{p}: more than {MAX_STEPS} steps")
        return
    base_url = cfg.get("base_url")
    for part in ("init", "run", "teardown"):
        for j, step in enumerate(getattr(s, part)):
            _check_step(c, f"{p}.{part}[{j}]", step, base_url)


def _check_step(
    c: _Collector, p: str, step: loadtest_pb2.Step, base_url: Any, depth: int = 0
) -> None:
    action = step.WhichOneof("action")
    if action is None:
        c.bad(p, "is empty: set one action such as 'http' or 'delay'")
    elif action == "delay":
        c.duration(f"{p}.delay.duration", step.delay.duration, required=True)
    elif action == "http":
        _check_http(c, f"{p}.http", step.http, base_url)
    elif action == "random_delay":
        low = c.duration(f"{p}.random_delay.min", step.random_delay.min) or 0
        high = c.duration(f"{p}.random_delay.max", step.random_delay.max, required=True)
        if high is not None and low > high:
            c.bad(f"{p}.random_delay.min", "must not be more than max")
    elif action in ("repeat", "loop"):
        body = step.repeat if action == "repeat" else step.loop
        q = f"{p}.{action}"
        if action == "repeat":
            if not 0 <= step.repeat.count <= MAX_REPEAT:
                c.bad(f"{q}.count", f"must be between 0 and {MAX_REPEAT}")
        else:
            ns = c.duration(f"{q}.duration", step.loop.duration, required=True)
            if ns == 0:
                c.bad(f"{q}.duration", "must be > 0")
        if not body.steps:
            c.bad(f"{q}.steps", "needs at least one step")
        if depth + 1 >= MAX_NESTING:
            c.bad(q, f"repeat and loop nest at most {MAX_NESTING} deep")
            return
        for k, inner in enumerate(body.steps):
            _check_step(c, f"{q}.steps[{k}]", inner, base_url, depth + 1)


def _check_http(c: _Collector, p: str, h: loadtest_pb2.HttpStep, base_url: Any) -> None:
    method = h.method.upper()
    if not h.method:
        c.bad(f"{p}.method", f"is required (one of {', '.join(HTTP_METHODS)})")
    elif method not in HTTP_METHODS:
        c.bad(
            f"{p}.method",
            f"unknown HTTP method {h.method!r} (use one of {', '.join(HTTP_METHODS)})",
        )
    target = h.WhichOneof("target")
    if target is None:
        c.bad(f"{p}.path", "set 'path' (relative to config.base_url) or 'url'")
    elif target == "path":
        if not h.path.startswith("/"):
            c.bad(f"{p}.path", f"must start with '/' (got {h.path!r})")
        elif any(ch in h.path for ch in "\r\n\t #") or any(ord(ch) < 0x21 for ch in h.path):
            c.bad(f"{p}.path", "must not contain spaces, control characters or '#'")
        if not isinstance(base_url, str) or not base_url:
            c.bad("config.base_url", f"is required by {p}.path (e.g. 'http://127.0.0.1:8080')")
    else:
        try:
            parse_target(h.url.split("?", 1)[0])
        except ValueError as exc:
            c.bad(f"{p}.url", str(exc))
    for name, value in h.headers.items():
        if not _TOKEN.match(name):
            c.bad(f"{p}.headers", f"bad header name {name!r}")
        elif name.lower() in ("content-length", "transfer-encoding", "host", "connection"):
            c.bad(f"{p}.headers[{name}]", "is set by the engine")
        if any(ch in value for ch in "\r\n\0"):
            c.bad(f"{p}.headers[{name}]", "must not contain CR, LF or NUL")
    for name, value in h.query.items():
        if any(ch in name + value for ch in "\r\n\0"):
            c.bad(f"{p}.query[{name}]", "must not contain CR, LF or NUL")
    if h.WhichOneof("payload") == "json":
        try:
            struct_to_dict(h.json)
        except ValueError:
            c.bad(f"{p}.json", "must not contain NaN or infinite numbers (JSON has none)")
    if h.WhichOneof("payload") == "form":
        for name, value in h.form.fields.items():
            if any(ch in name + value for ch in "\0"):
                c.bad(f"{p}.form.fields[{name}]", "must not contain NUL")


_STATS = ("min", "mean", "max", "p50", "p90", "p95", "p99", "p99.9", "errors", "error_rate")


def _check_threshold(c: _Collector, p: str, th: loadtest_pb2.Threshold) -> None:
    if not th.metric:
        c.bad(f"{p}.metric", "is required (a metric key such as 'GET /')")
    if th.stat not in _STATS:
        c.bad(f"{p}.stat", f"unknown stat {th.stat!r} (use one of {', '.join(_STATS)})")
