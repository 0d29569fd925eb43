"""Bearer-token authentication for the Master and Worker gRPC services.

A server built with ``TokenAuthInterceptor`` requires ``authorization: Bearer <token>`` on
every RPC except health checks and server reflection, which stay open so that load
balancers, ``grpcurl list`` and readiness probes work without a secret. Without the header
(or with another scheme) a call gets ``UNAUTHENTICATED``; with a wrong token
``PERMISSION_DENIED``. Tokens are compared in constant time (``hmac.compare_digest``) and
never logged or echoed in messages.

Two tokens can be told apart: the client token guards the control RPCs, the cluster token the
RPCs workers use to join (``RegisterWorker``, ``Heartbeat``) and the Worker service itself.
When only one is configured it serves both. ``TokenAuthInterceptor`` is for a thread-pool
server, ``AioTokenAuthInterceptor`` for a ``grpc.aio`` one; both make the same decision.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import grpc

OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
CLUSTER_METHODS = frozenset({"/chaperon.v1.Master/RegisterWorker", "/chaperon.v1.Master/Heartbeat"})


def bearer_metadata(token: str | None) -> list[tuple[str, str]]:
    """Call metadata carrying ``token`` (empty when there is none)."""
    return [("authorization", f"Bearer {token}")] if token else []


def _deny(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> Any:
    def abort(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(code, message)

    return _handler_like(handler, abort)


def _deny_async(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> Any:
    async def abort(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message)

    return _handler_like(handler, abort)


def _handler_like(handler: grpc.RpcMethodHandler, behaviour: Callable[..., Any]) -> Any:
    """A handler of the same kind and (de)serializers as ``handler`` that runs ``behaviour``."""
    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(behaviour, **kwargs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(behaviour, **kwargs)
    if handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(behaviour, **kwargs)
    return grpc.unary_unary_rpc_method_handler(behaviour, **kwargs)


class _TokenCheck:
    """The decision, shared by the thread-pool and the asyncio interceptors: whether a call
    passes, or with which status and message it is refused."""

    def __init__(
        self,
        token: str | None,
        cluster_token: str | None = None,
        cluster_methods: Iterable[str] = CLUSTER_METHODS,
    ) -> None:
        self._token = (token or "").encode()
        self._cluster_token = (cluster_token or token or "").encode()
        self._cluster_methods = frozenset(cluster_methods)

    def _refusal(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> tuple[grpc.StatusCode, str] | None:
        method = handler_call_details.method
        if method.startswith(OPEN_PREFIXES):
            return None
        expected = self._cluster_token if method in self._cluster_methods else self._token
        if not expected:
            return None
        header = ""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                header = value if isinstance(value, str) else value.decode("latin-1")
                break
        scheme, _, given = header.partition(" ")
        if not header or scheme.lower() != "bearer" or not given:
            return (
                grpc.StatusCode.UNAUTHENTICATED,
                "this server requires a token: send metadata 'authorization: Bearer <token>' "
                "(chaperon: --token or CHAPERON_TOKEN)",
            )
        if not hmac.compare_digest(given.strip().encode(), expected):
            return grpc.StatusCode.PERMISSION_DENIED, "the token is not valid"
        return None


class TokenAuthInterceptor(_TokenCheck, grpc.ServerInterceptor):
    """Checks the bearer token of each call (a thread-pool server); see the module docstring."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return handler
        refusal = self._refusal(handler_call_details)
        return handler if refusal is None else _deny(handler, *refusal)


class AioTokenAuthInterceptor(_TokenCheck, grpc.aio.ServerInterceptor):
    """The same check for a ``grpc.aio`` server (the refusal is a coroutine)."""

    async def intercept_service(  # type: ignore[override]
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        refusal = self._refusal(handler_call_details)
        return handler if refusal is None else _deny_async(handler, *refusal)
