"""Checking a whole LoadTest: the compiler's front end as the master runs it, and the worker.

Every problem is collected (not only the first) as a (field path, description) pair, so one
``INVALID_ARGUMENT`` answer lists all of them in a ``google.rpc.BadRequest``. Paths use proto
field names with indexes: ``scenarios[0].scenario.run[1].http.method``. Limits that protect the
cluster (sessions, steps, durations) answer ``RESOURCE_EXHAUSTED``; parts of the language the
engine does not run (none today) would answer ``UNIMPLEMENTED`` naming the field. The steps
themselves are checked by ``check_steps``. No DNS here: target hosts are only parsed (the
allow-list is matched on their names or literals by ``check_targets``); workers resolve them.

Before any rule, ``shape.weigh`` refuses a load test that weighs too much (bytes, counts,
steps once scenarios run by name are inlined) or holds what nobody downstream can read (a
Struct nested too deep, control characters in names), with work bounded by the limits: what
a submission costs the master is bounded by them, not by what fits in a message.

``check_load_test`` is the master's check of a submission. ``check_entries`` is the part a
worker runs on the entries of its assignment (their config and steps, not the load shape the
master already split into shares), before ``plan.compile_assignment`` builds the engine plans.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from chaperon.core.allowlist import AllowList
from chaperon.core.lang.check_steps import StepContext, check_entry_limits, check_steps
from chaperon.core.lang.config import TemplateNames, misspelt_keys
from chaperon.core.lang.graph import ScenarioGraph
from chaperon.core.lang.limits import (
    MAX_ITERATIONS,
    MAX_MAX_CAPTURE,
    MAX_NAME_LEN,
    MAX_RATE_PER_S,
    MAX_SESSIONS_PER_ENTRY,
    MAX_STAGES,
)
from chaperon.core.lang.problems import Collector
from chaperon.core.lang.shape import weigh
from chaperon.core.loadtest import (
    Inventory,
    deep_merge,
    entry_scenarios,
    max_sessions,
    parse_target,
    struct_to_dict,
    target_hosts,
)
from chaperon.v1 import loadtest_pb2

_CONFIG_DURATIONS = ("connect_timeout", "request_timeout")


def check_load_test(lt: loadtest_pb2.LoadTest) -> None:
    """Raise InvalidArgument / ResourceExhausted / Unimplemented if ``lt`` cannot run."""
    graph = weigh(lt)
    c = Collector()
    if len(lt.name) > MAX_NAME_LEN:
        c.bad("name", f"is longer than {MAX_NAME_LEN} characters")
    if lt.timeout:
        c.duration("timeout", lt.timeout)
    read = TemplateNames(lt)
    base = _config_dict(c, "config", lt.config) if lt.HasField("config") else {}
    _check_config(c, "config", base, read)
    if not lt.scenarios:
        c.bad("scenarios", "needs at least one scenario entry")
    for i, entry in enumerate(lt.scenarios):
        _check_entry(c, lt, graph, base, read, i, entry)
    for i, th in enumerate(lt.thresholds):
        _check_threshold(c, f"thresholds[{i}]", th)
    c.raise_if_any("load test")


def check_entries(lt: loadtest_pb2.LoadTest, indexes: Iterable[int]) -> None:
    """A worker's check of the entries it runs: config and steps, as the master checks them."""
    graph = weigh(lt)
    c = Collector()
    read = TemplateNames(lt)
    base = _config_dict(c, "config", lt.config) if lt.HasField("config") else {}
    _check_config(c, "config", base, read)
    for i in sorted(set(indexes)):
        _check_entry(c, lt, graph, base, read, i, lt.scenarios[i], shape=False)
    c.raise_if_any("load test")


def check_targets(lt: loadtest_pb2.LoadTest, allow: AllowList) -> None:
    """Raise PermissionDenied naming the first target host outside the allow-list."""
    seen: set[str] = set()
    for where, host in target_hosts(lt):
        if host not in seen:
            seen.add(host)
            allow.check_host(host, where)


def _config_dict(c: Collector, path: str, struct: Any) -> dict[str, Any]:
    try:
        return struct_to_dict(struct)
    except ValueError:  # protobuf refuses NaN and infinity in a Struct's JSON form
        c.bad(path, "must not contain NaN or infinite numbers")
        return {}


def _check_config(c: Collector, path: str, cfg: dict[str, Any], read: TemplateNames) -> None:
    misspelt_keys(c, path, cfg, read)
    if "base_url" in cfg:
        if not isinstance(cfg["base_url"], str):
            c.bad(f"{path}.base_url", "must be a string URL")
        else:
            try:
                parse_target(cfg["base_url"])
            except ValueError as exc:
                c.bad(f"{path}.base_url", str(exc))
    if "tls_ca_file" in cfg and not isinstance(cfg["tls_ca_file"], str):
        c.bad(f"{path}.tls_ca_file", "must be the path of a PEM file on the workers")
    for key in ("tls_insecure", "cookies", "metrics_strip_query"):
        if key in cfg and not isinstance(cfg[key], bool):
            c.bad(f"{path}.{key}", "must be true or false")
    if "metrics_filter" in cfg:
        globs = cfg["metrics_filter"]
        if not isinstance(globs, list) or not all(isinstance(g, str) and g for g in globs):
            c.bad(f"{path}.metrics_filter", "must be a list of glob patterns such as 'GET /api/*'")
    if "max_capture" in cfg:
        value = cfg["max_capture"]
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or value != int(value)
            or not 0 < value <= MAX_MAX_CAPTURE
        ):
            c.bad(f"{path}.max_capture", f"must be a number of bytes from 1 to {MAX_MAX_CAPTURE}")
    for key in _CONFIG_DURATIONS:
        if key in cfg:
            if not isinstance(cfg[key], str):
                c.bad(f"{path}.{key}", "must be a duration string such as '5s'")
            else:
                c.duration(f"{path}.{key}", cfg[key])


def _check_entry(
    c: Collector,
    lt: loadtest_pb2.LoadTest,
    graph: ScenarioGraph,
    base: dict[str, Any],
    read: TemplateNames,
    i: int,
    e: loadtest_pb2.ScenarioEntry,
    *,
    shape: bool = True,
) -> None:
    """Entry ``i``; ``shape=False`` leaves out its load shape (a worker's shares carry it)."""
    p = f"scenarios[{i}]"
    spec = e.WhichOneof("spec")
    if spec is None:
        c.bad(f"{p}.scenario", "is required (an inline scenario)")
    over: dict[str, Any] = {}
    if e.HasField("config"):
        over = _config_dict(c, f"{p}.config", e.config)
        _check_config(c, f"{p}.config", over, read)
    if shape:
        _check_entry_shape(c, p, e)
    for name in ("scenario_timeout", "delay", "random_delay", "graceful_stop"):
        value = getattr(e, name)
        if value:
            c.duration(f"{p}.{name}", value)
    if len(e.session_name) > MAX_NAME_LEN:
        c.bad(f"{p}.session_name", f"is longer than {MAX_NAME_LEN} characters")
    if spec is not None:
        _check_scenarios(c, lt, graph, deep_merge(base, over), p, e)


def _check_entry_shape(c: Collector, p: str, e: loadtest_pb2.ScenarioEntry) -> None:
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


def _check_arrival_rate(c: Collector, p: str, e: loadtest_pb2.ScenarioEntry) -> None:
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


def _check_scenarios(
    c: Collector,
    lt: loadtest_pb2.LoadTest,
    graph: ScenarioGraph,
    cfg: dict[str, Any],
    p: str,
    e: Any,
) -> None:
    """The steps of entry ``e``, with the config in force for its sessions (``cfg``)."""
    scenarios = entry_scenarios(e)
    if e.HasField("scenario"):
        prefixes = [f"{p}.scenario"]
        if not e.scenario.run:
            c.bad(f"{p}.scenario.run", "needs at least one step")
    else:
        prefixes = [f"{p}.sequence.scenarios[{k}]" for k in range(len(scenarios))]
        if not scenarios:
            c.bad(f"{p}.sequence.scenarios", "needs at least one scenario")
        elif not any(s.init or s.run for s in scenarios):
            c.bad(f"{p}.sequence.scenarios[0].run", "the sequence needs at least one step")
    parts = [getattr(s, part) for s in scenarios for part in ("init", "run", "teardown")]
    inventory = Inventory.of(parts, lt, graph.by_name)
    # Every session carries its child slots (async names + cc_spread rates), in memory.
    sessions = e.concurrency
    if e.HasField("arrival_rate"):
        try:
            sessions = max_sessions(e.arrival_rate)
        except (ValueError, OverflowError):  # a NaN or infinite rate: reported above
            sessions = 0
    children = len(inventory.children) + inventory.spread_children
    slots = max(sessions, 0) * (1 + children)
    if children and slots > MAX_SESSIONS_PER_ENTRY:
        c.too_big.append(
            f"{p}: {sessions} sessions x (1 + {children} child sessions) is more "
            f"than {MAX_SESSIONS_PER_ENTRY} session slots"
        )
    ctx = StepContext(lt, inventory, graph, cfg)
    for prefix, scenario in zip(prefixes, scenarios, strict=True):
        for part in ("init", "run", "teardown"):
            check_steps(c, f"{prefix}.{part}", getattr(scenario, part), ctx)
    check_entry_limits(c, p, ctx)


_STATS = ("min", "mean", "max", "p50", "p90", "p95", "p99", "p99.9", "errors", "error_rate")


def _check_threshold(c: Collector, p: str, th: loadtest_pb2.Threshold) -> None:
    if not th.metric:
        c.bad(f"{p}.metric", "is required (a metric key such as 'GET /')")
    if th.stat not in _STATS:
        c.bad(f"{p}.stat", f"unknown stat {th.stat!r} (use one of {', '.join(_STATS)})")
