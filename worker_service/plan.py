"""The plan compiler: scenario steps (protobuf) -> the engine's flat op arrays.

Everything that can be decided before the first request is decided here: target hosts are
resolved to addresses, each HTTP request is rendered once to its exact bytes (request line,
headers, body), metric keys are numbered. The engine then only copies bytes to sockets and
records latencies; it never sees a Python object per request.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

from google.protobuf import json_format

from _fastpath.engine import OP_DELAY, OP_HTTP, OP_LOOP, OP_RANDOM_DELAY, OP_REPEAT
from chaperon._version import __version__
from chaperon.allowlist import AllowList
from chaperon.durations import parse_duration_ns
from chaperon.loadtest import (
    METHODS_WITHOUT_BODY,
    Target,
    effective_config,
    metric_key,
    parse_target,
)
from chaperon.status import InvalidArgument, Unimplemented
from chaperon.v1 import loadtest_pb2, worker_pb2

DEFAULT_CONNECT_TIMEOUT_NS = 5_000_000_000
DEFAULT_REQUEST_TIMEOUT_NS = 30_000_000_000
USER_AGENT = f"chaperon/{__version__}"


@dataclass
class EnginePlan:
    """Arguments for one ``_fastpath.engine.Engine`` (one scenario entry's share)."""

    entry_index: int
    # (ip, port) for http, (ip, port, True, host name) for https
    targets: list[tuple[Any, ...]] = field(default_factory=list)
    metric_keys: list[str] = field(default_factory=list)
    ops: list[tuple[Any, ...]] = field(default_factory=list)
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
    # Per-session rules: init ops once before, teardown ops once after (not measured), a limit
    # on each run of the scenario, and an initial delay (fixed + uniform random part).
    init_ops: list[tuple[Any, ...]] = field(default_factory=list)
    teardown_ops: list[tuple[Any, ...]] = field(default_factory=list)
    scenario_timeout_ns: int = 0
    start_delay_ns: int = 0
    start_random_delay_ns: int = 0

    @property
    def open_model(self) -> bool:
        return self.arrival_rate_per_s > 0 or bool(self.rate_stages)

    def engine_kwargs(self, threads: int) -> dict[str, Any]:
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
        for name in ("scenario_timeout_ns", "start_delay_ns", "start_random_delay_ns"):
            if getattr(self, name):
                extra[name] = getattr(self, name)
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


def resolve(host: str, port: int) -> str:
    """An IP literal for ``host`` (first address getaddrinfo gives, IPv4 preferred)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    infos.sort(key=lambda info: 0 if info[0] == socket.AF_INET else 1)
    return str(infos[0][4][0])


class _Compiler:
    def __init__(self, entry_index: int, config: dict[str, Any], allow: AllowList) -> None:
        self.allow = allow
        self.out: list[tuple[Any, ...]] = []
        self.plan = EnginePlan(entry_index=entry_index)
        self.path = f"scenarios[{entry_index}]"
        self.config = config
        self._targets: dict[tuple[Any, ...], int] = {}
        self._keys: dict[str, int] = {}
        base = config.get("base_url")
        self.base: Target | None = parse_target(base) if isinstance(base, str) and base else None

    def target_index(self, target: Target, field_path: str) -> int:
        self.allow.check_host(target.host, field_path)
        try:
            ip = resolve(target.host, target.port)
        except OSError as exc:
            raise InvalidArgument(
                [(field_path, f"cannot resolve host {target.host!r}: {exc}")]
            ) from None
        key: tuple[Any, ...] = (ip, target.port)
        if target.scheme == "https":
            # Verified against the name in the URL (SNI too, unless it is an IP literal).
            key = (ip, target.port, True, target.host)
        if key not in self._targets:
            self._targets[key] = len(self.plan.targets)
            self.plan.targets.append(key)
        return self._targets[key]

    def key_index(self, key: str) -> int:
        if key not in self._keys:
            self._keys[key] = len(self.plan.metric_keys)
            self.plan.metric_keys.append(key)
        return self._keys[key]

    def step(self, step: loadtest_pb2.Step, p: str) -> None:
        action = step.WhichOneof("action")
        if action == "http":
            self.http(step.http, f"{p}.http")
        elif action == "delay":
            self.out.append((OP_DELAY, parse_duration_ns(step.delay.duration)))
        elif action == "random_delay":
            low = step.random_delay.min
            self.out.append(
                (
                    OP_RANDOM_DELAY,
                    parse_duration_ns(low) if low else 0,
                    parse_duration_ns(step.random_delay.max),
                )
            )
        elif action in ("repeat", "loop"):
            # A block op followed by its body, flattened: (kind, ..., body_len, ...).
            outer = self.out
            body: list[tuple[Any, ...]] = []
            self.out = body
            block = step.repeat if action == "repeat" else step.loop
            for k, inner in enumerate(block.steps):
                self.step(inner, f"{p}.{action}.steps[{k}]")
            self.out = outer
            if action == "repeat":
                metric = -1
                if step.repeat.traced:
                    metric = self.key_index(step.repeat.metric or step.name or "repeat")
                outer.append((OP_REPEAT, int(step.repeat.count), len(body), metric))
            else:
                outer.append((OP_LOOP, parse_duration_ns(step.loop.duration), len(body)))
            outer.extend(body)
        else:
            raise Unimplemented(f"{p}: step {action!r} is not supported by this worker")

    def http(self, h: loadtest_pb2.HttpStep, p: str) -> None:
        method = h.method.upper()
        if h.WhichOneof("target") == "url":
            parts = urlsplit(h.url)
            target = parse_target(f"{parts.scheme}://{parts.netloc}")
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            field_path = f"{p}.url"
        else:
            if self.base is None:
                raise InvalidArgument([("config.base_url", f"is required by {p}.path")])
            target = self.base
            path = self.base.base_path + h.path
            field_path = "config.base_url"
        if h.query:
            path += ("&" if "?" in path else "?") + urlencode(sorted(h.query.items()))
        body, content_type = _body(h)
        headers = {"Host": target.host_header, "User-Agent": USER_AGENT}
        if content_type:
            headers["Content-Type"] = content_type
        headers.update(h.headers)
        lines = [f"{method} {path} HTTP/1.1"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + body
        self.out.append(
            (
                OP_HTTP,
                self.target_index(target, field_path),
                self.key_index(metric_key(h)),
                request,
                method in METHODS_WITHOUT_BODY,
            )
        )


def _body(h: loadtest_pb2.HttpStep) -> tuple[bytes, str]:
    kind = h.WhichOneof("payload")
    if kind == "body":
        return h.body.encode("utf-8"), ""
    if kind == "json":
        value = json_format.MessageToDict(h.json)
        return json.dumps(value, separators=(",", ":")).encode("utf-8"), "application/json"
    if kind == "form":
        return urlencode(sorted(h.form.fields.items())).encode("ascii"), (
            "application/x-www-form-urlencoded"
        )
    return b"", ""


def _config_duration(config: dict[str, Any], name: str, default_ns: int) -> int:
    value = config.get(name)
    return parse_duration_ns(value) if isinstance(value, str) and value else default_ns


def compile_assignment(
    assignment: worker_pb2.Assignment, allow: AllowList | None = None
) -> list[EnginePlan]:
    """One EnginePlan per share; raises InvalidArgument/Unimplemented naming the field, and
    PermissionDenied for a target outside ``allow`` (default: loopback only)."""
    allow = allow or AllowList()
    lt = assignment.load_test
    plans = []
    if not assignment.shares:
        raise InvalidArgument([("shares", "the assignment has no share of any scenario")])
    for i, share in enumerate(assignment.shares):
        if not 0 <= share.entry_index < len(lt.scenarios):
            raise InvalidArgument([(f"shares[{i}].entry_index", "out of range")])
        if share.sessions <= 0:
            raise InvalidArgument([(f"shares[{i}].sessions", "must be > 0")])
        entry = lt.scenarios[share.entry_index]
        if entry.WhichOneof("spec") != "scenario":
            raise Unimplemented(f"scenarios[{share.entry_index}]: only inline scenarios run yet")
        c = _Compiler(share.entry_index, effective_config(lt, entry), allow)
        plan = c.plan
        for part, out in (
            ("init", plan.init_ops),
            ("run", plan.ops),
            ("teardown", plan.teardown_ops),
        ):
            c.out = out
            for j, step in enumerate(getattr(entry.scenario, part)):
                c.step(step, f"scenarios[{share.entry_index}].scenario.{part}[{j}]")
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
            c.config, "connect_timeout", DEFAULT_CONNECT_TIMEOUT_NS
        )
        plan.request_timeout_ns = _config_duration(
            c.config, "request_timeout", DEFAULT_REQUEST_TIMEOUT_NS
        )
        plan.tls_insecure = c.config.get("tls_insecure") is True
        ca_file = c.config.get("tls_ca_file")
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


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
