"""Load-test helpers shared by the client, the master's validation and the worker's compiler.

Pure functions over the protobuf messages: reading load-test files (JSON, YAML or a Python
script that builds one), the effective config of a scenario entry (entry config deep-merged
over the load test's default), target URLs, and metric keys. Nothing here does I/O on the
network.
"""

from __future__ import annotations

import json
import os
import runpy
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from google.protobuf import json_format

from chaperon.v1 import loadtest_pb2

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
METHODS_WITHOUT_BODY = ("HEAD",)


class LoadTestFileError(ValueError):
    """A load-test file that cannot be read; the message is one line for the user."""


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
    load_test: loadtest_pb2.LoadTest, entry: loadtest_pb2.ScenarioEntry
) -> dict[str, Any]:
    """The config a session of ``entry`` sees: the entry's config over the load test's."""
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
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    if parts.query or parts.fragment:
        raise ValueError(f"{url!r}: a base URL takes no query or fragment")
    return Target(parts.scheme, host, port, parts.path.rstrip("/"))


def metric_key(step: loadtest_pb2.HttpStep) -> str:
    """The metric key of an HTTP step: ``"<METHOD> <path>"`` (or the step's own ``metric``)."""
    if step.metric:
        return step.metric
    method = step.method.upper()
    if step.WhichOneof("target") == "url":
        parts = urlsplit(step.url)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        return f"{method} {path}"
    return f"{method} {step.path}"


def target_hosts(load_test: loadtest_pb2.LoadTest) -> list[tuple[str, str]]:
    """Every (field path, host) a load test sends requests to; unparseable URLs are skipped
    (validation reports them)."""
    out: list[tuple[str, str]] = []
    for i, entry in enumerate(load_test.scenarios):
        base = effective_config(load_test, entry).get("base_url")
        if isinstance(base, str) and base:
            where = (
                f"scenarios[{i}].config.base_url" if entry.HasField("config") else "config.base_url"
            )
            try:
                out.append((where, parse_target(base).host))
            except ValueError:
                pass
        scenarios = (
            [entry.scenario] if entry.HasField("scenario") else list(entry.sequence.scenarios)
        )
        for s_index, scenario in enumerate(scenarios):
            prefix = (
                f"scenarios[{i}].scenario"
                if entry.HasField("scenario")
                else (f"scenarios[{i}].sequence.scenarios[{s_index}]")
            )
            for part in ("init", "run", "teardown"):
                for j, step in enumerate(getattr(scenario, part)):
                    if (
                        step.WhichOneof("action") == "http"
                        and step.http.WhichOneof("target") == "url"
                    ):
                        host = urlsplit(step.http.url).hostname
                        if host:
                            out.append((f"{prefix}.{part}[{j}].http.url", host))
    return out


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


def load_test_from_dict(data: Any, source: str = "load test") -> loadtest_pb2.LoadTest:
    """Build a LoadTest from its proto3-JSON form (snake_case or lowerCamelCase)."""
    if not isinstance(data, dict):
        raise LoadTestFileError(
            f"{source}: expected an object with 'scenarios', got {type(data).__name__}"
        )
    if "load_test" in data and "scenarios" not in data and isinstance(data["load_test"], dict):
        data = data["load_test"]  # a SubmitLoadTestRequest body works too
    message = loadtest_pb2.LoadTest()
    try:
        json_format.ParseDict(data, message)
    except json_format.ParseError as exc:
        # protobuf's message spans lines (it lists the known fields); keep one line.
        text = " ".join(str(exc).split())
        raise LoadTestFileError(f"{source}: {text}") from None
    return message


def load_file(path: str) -> loadtest_pb2.LoadTest:
    """Read a load test from a .json, .yaml/.yml or .py file; LoadTestFileError on any problem.

    A Python file must leave a ``LoadTest`` message (or a dict of its JSON form, or an object
    with ``to_proto()``) in a module-level variable named ``load_test`` or ``LOAD_TEST``.
    """
    if not os.path.exists(path):
        raise LoadTestFileError(f"{path}: no such file")
    if os.path.isdir(path):
        raise LoadTestFileError(f"{path}: is a directory, not a load-test file")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".py":
        return _load_python(path)
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise LoadTestFileError(f"{path}: cannot read ({exc})") from None
    if ext in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise LoadTestFileError(f"{path}: not valid YAML{where}") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LoadTestFileError(
                f"{path}: not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
            ) from None
    return load_test_from_dict(data, path)


def _load_python(path: str) -> loadtest_pb2.LoadTest:
    try:
        namespace = runpy.run_path(path, run_name="__chaperon_load_test__")
    except SystemExit:
        raise LoadTestFileError(f"{path}: the script exited while building the load test") from None
    except Exception as exc:  # noqa: BLE001 - user code; report it in one line
        raise LoadTestFileError(f"{path}: {type(exc).__name__}: {exc}") from None
    for name in ("load_test", "LOAD_TEST"):
        if name in namespace:
            value = namespace[name]
            break
    else:
        raise LoadTestFileError(f"{path}: define a module-level variable 'load_test'")
    if isinstance(value, loadtest_pb2.LoadTest):
        return value
    if hasattr(value, "to_proto"):
        return value.to_proto()  # type: ignore[no-any-return]
    return load_test_from_dict(value, path)
