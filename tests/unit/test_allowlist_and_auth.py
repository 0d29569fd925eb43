"""The target allow-list and the bearer-token check, without a network."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from chaperon.core.allowlist import AllowList
from chaperon.core.errors import PermissionDenied
from chaperon.core.loadtest import load_test_from_dict, target_hosts
from chaperon.rpc.auth import AioTokenAuthInterceptor, TokenAuthInterceptor


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


def _call_sync(
    interceptor: TokenAuthInterceptor, method: str, metadata: list[tuple[str, str]]
) -> Any:
    real = grpc.unary_unary_rpc_method_handler(lambda req, ctx: "ok")
    handler = interceptor.intercept_service(lambda d: real, _Details(method, metadata))
    if handler is real:
        return "passed"
    ctx = _Context()
    with pytest.raises(RuntimeError):
        handler.unary_unary(None, ctx)
    return ctx.code


class _AioContext(_Context):
    async def abort(self, code: grpc.StatusCode, message: str) -> None:  # type: ignore[override]
        self.code = code
        raise RuntimeError(message)


def _call_aio(
    interceptor: AioTokenAuthInterceptor, method: str, metadata: list[tuple[str, str]]
) -> Any:
    async def ok(req: Any, ctx: Any) -> str:
        return "ok"

    real = grpc.unary_unary_rpc_method_handler(ok)

    async def continuation(details: Any) -> Any:
        return real

    async def call() -> Any:
        handler = await interceptor.intercept_service(continuation, _Details(method, metadata))
        if handler is real:
            return "passed"
        ctx = _AioContext()
        with pytest.raises(RuntimeError):
            await handler.unary_unary(None, ctx)
        return ctx.code

    return asyncio.run(call())


@pytest.mark.parametrize("kind", [TokenAuthInterceptor, AioTokenAuthInterceptor])
def test_interceptor_codes(kind: type) -> None:
    auth = kind("t1", cluster_token="c1")
    _call = _call_aio if kind is AioTokenAuthInterceptor else _call_sync
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
    assert _call(kind(None), m, []) == "passed"


class _RebindingResolver:
    """A name server that answers an allowed address first and another one afterwards (DNS
    rebinding), counting the lookups."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.lookups = 0

    def __call__(self, host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        import socket

        address = self.answers[min(self.lookups, len(self.answers) - 1)]
        self.lookups += 1
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (address, port or 0))]


def test_a_worker_connects_to_the_address_it_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    from chaperon.core import allowlist
    from chaperon.core.loadtest import parse_target
    from worker_service.backend import WorkerBackend

    resolver = _RebindingResolver("127.0.0.1", "192.0.2.7")
    monkeypatch.setattr(allowlist.socket, "getaddrinfo", resolver)
    backend = WorkerBackend(AllowList())
    target = backend.target(parse_target("http://rebind.test:8080"), "config.base_url")
    # One lookup, and the engine gets the checked literal (it never resolves the name again).
    assert target == ("127.0.0.1", 8080) and resolver.lookups == 1


def test_a_name_with_any_address_outside_the_list_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from chaperon.core import allowlist

    def two_answers(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        import socket

        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 80)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.7", 80)),
        ]

    monkeypatch.setattr(allowlist.socket, "getaddrinfo", two_answers)
    with pytest.raises(PermissionDenied, match="not in the allow-list"):
        AllowList().checked_address("split.test", 80, "config.base_url")


def test_a_name_allowed_by_name_is_resolved_only_to_connect(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from chaperon.core import allowlist

    resolver = _RebindingResolver("::1", "192.0.2.7")
    monkeypatch.setattr(allowlist.socket, "getaddrinfo", resolver)
    allow = AllowList(["api.internal"])
    allow.check_host("API.internal.")  # the master's check: by name, no lookup
    assert resolver.lookups == 0
    assert allow.checked_address("api.internal", 443) == "::1" and resolver.lookups == 1
