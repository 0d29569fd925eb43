"""The target allow-list and the bearer-token check, without a network."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from chaperon.core.allowlist import AllowList
from chaperon.core.errors import PermissionDenied
from chaperon.core.loadtest import load_test_from_dict, target_hosts
from chaperon.rpc.auth import TokenAuthInterceptor


def test_default_is_loopback_only() -> None:
    allow = AllowList()
    for host in ("127.0.0.1", "127.9.8.7", "::1", "[::1]", "localhost", "LOCALHOST."):
        allow.check_host(host)
    for host in ("10.0.0.1", "192.0.2.1", "::2", "0.0.0.0"):
        with pytest.raises(PermissionDenied, match="not in the allow-list"):
            allow.check_host(host)


def test_entries_replace_the_default() -> None:
    allow = AllowList(["10.1.0.0/16", "api.internal", "2001:db8::/32"])
    allow.check_host("10.1.200.3")
    allow.check_host("API.internal")
    allow.check_host("2001:db8::5")
    with pytest.raises(PermissionDenied) as info:
        allow.check_host("127.0.0.1", "config.base_url")
    assert "'127.0.0.1' (config.base_url)" in str(info.value)


def test_unresolvable_names_are_refused() -> None:
    with pytest.raises(PermissionDenied):
        AllowList().check_host("no-such-host.invalid")


@pytest.mark.parametrize("entry", ["", "a b", "10.0.0.0/33x"])
def test_bad_entries_raise(entry: str) -> None:
    with pytest.raises(ValueError):
        AllowList([entry])


def test_target_hosts_lists_base_urls_and_step_urls() -> None:
    lt = load_test_from_dict(
        {
            "config": {"base_url": "http://127.0.0.1:1"},
            "scenarios": [
                {
                    "concurrency": 1,
                    "scenario": {
                        "run": [
                            {"http": {"method": "GET", "path": "/"}},
                            {"http": {"method": "GET", "url": "http://10.0.0.9/x"}},
                        ]
                    },
                },
                {
                    "concurrency": 1,
                    "config": {"base_url": "http://[::1]:2"},
                    "scenario": {"run": [{"http": {"method": "GET", "path": "/"}}]},
                },
            ],
        }
    )
    assert target_hosts(lt) == [
        ("config.base_url", "127.0.0.1"),
        ("scenarios[0].scenario.run[1].http.url", "10.0.0.9"),
        ("scenarios[1].config.base_url", "::1"),
    ]


class _Details:
    def __init__(self, method: str, metadata: list[tuple[str, str]]) -> None:
        self.method = method
        self.invocation_metadata = metadata


class _Context:
    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None

    def abort(self, code: grpc.StatusCode, message: str) -> None:
        self.code = code
        raise RuntimeError(message)


def _call(interceptor: TokenAuthInterceptor, method: str, metadata: list[tuple[str, str]]) -> Any:
    real = grpc.unary_unary_rpc_method_handler(lambda req, ctx: "ok")
    handler = interceptor.intercept_service(lambda d: real, _Details(method, metadata))
    if handler is real:
        return "passed"
    ctx = _Context()
    with pytest.raises(RuntimeError):
        handler.unary_unary(None, ctx)
    return ctx.code


def test_interceptor_codes() -> None:
    auth = TokenAuthInterceptor("t1", cluster_token="c1")
    m = "/chaperon.v1.Master/ListWorkers"
    assert _call(auth, m, []) == grpc.StatusCode.UNAUTHENTICATED
    assert _call(auth, m, [("authorization", "Basic t1")]) == grpc.StatusCode.UNAUTHENTICATED
    assert _call(auth, m, [("authorization", "Bearer nope")]) == grpc.StatusCode.PERMISSION_DENIED
    assert _call(auth, m, [("authorization", "Bearer t1")]) == "passed"
    register = "/chaperon.v1.Master/RegisterWorker"
    assert _call(auth, register, [("authorization", "Bearer t1")]) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    assert _call(auth, register, [("authorization", "Bearer c1")]) == "passed"
    assert _call(auth, "/grpc.health.v1.Health/Check", []) == "passed"
    assert _call(auth, "/grpc.reflection.v1alpha.ServerReflection/X", []) == "passed"
    assert _call(TokenAuthInterceptor(None), m, []) == "passed"
