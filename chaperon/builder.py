"""A Python builder for load tests, in Chaperon's pipe style, producing the same protobuf.

    from chaperon import LoadTest, Scenario

    browse = (
        Scenario("browse")
        .get("/")
        .delay("100ms")
        .post("/login", json={"user": "u", "password": "p"}, metric="login")
    )
    load_test = (
        LoadTest("smoke", base_url="http://127.0.0.1:8080")
        .add(browse, concurrency=50, duration="5s")
        .add(browse, arrival_rate=200, duration="10s")
        .threshold("GET /", "p99", 250)
    )

Each method returns a new object (like Chaperon's ``session |> get("/")``), so a scenario can
be shared and extended without surprises. ``to_proto()`` gives the ``chaperon.v1.LoadTest``
message that ``Client.run`` takes; ``chaperon run script.py`` runs a script that leaves one in
a module-level ``load_test``. The builder checks nothing the master checks: the master's
validation answers with the field path of whatever is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from google.protobuf import json_format

from chaperon.v1 import loadtest_pb2


@dataclass(frozen=True)
class Scenario:
    """A named list of steps; ``get``/``post``/... and ``delay`` append one."""

    name: str
    steps: tuple[dict[str, Any], ...] = ()

    def _step(self, step: dict[str, Any]) -> Scenario:
        return replace(self, steps=(*self.steps, step))

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        query: dict[str, str] | None = None,
        body: str | None = None,
        json: Any = None,
        form: dict[str, str] | None = None,
        metric: str | None = None,
    ) -> Scenario:
        """An HTTP request; ``path`` relative to ``base_url``, or an absolute http(s) URL."""
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
        self, count: int, body: Scenario, *, traced: bool = False, metric: str | None = None
    ) -> Scenario:
        """Run ``body``'s steps ``count`` times; ``traced`` records each iteration's
        duration under ``metric`` (default "repeat"), like Chaperon's repeat_traced."""
        step: dict[str, Any] = {"count": count, "steps": [dict(s) for s in body.steps]}
        if traced:
            step["traced"] = True
        if metric:
            step["metric"] = metric
        return self._step({"repeat": step})

    def repeat_traced(self, count: int, body: Scenario, metric: str | None = None) -> Scenario:
        return self.repeat(count, body, traced=True, metric=metric)

    def loop(self, duration: str, body: Scenario) -> Scenario:
        """Run ``body``'s steps again and again for ``duration``."""
        return self._step({"loop": {"duration": duration, "steps": [dict(s) for s in body.steps]}})

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "run": [dict(s) for s in self.steps]}


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
        scenario: Scenario,
        *,
        concurrency: int | None = None,
        duration: str | None = None,
        iterations: int | None = None,
        arrival_rate: float | None = None,
        stages: list[tuple[str, float]] | None = None,
        max_sessions: int | None = None,
        config: dict[str, Any] | None = None,
        session_name: str | None = None,
    ) -> LoadTest:
        """Run ``scenario``: ``concurrency`` sessions (closed model) or ``arrival_rate``
        sessions per second, optionally ramped by ``stages`` of (duration, target rate)."""
        entry: dict[str, Any] = {"scenario": scenario.to_dict()}
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
        if session_name:
            entry["session_name"] = session_name
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
