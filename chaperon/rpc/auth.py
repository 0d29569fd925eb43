"""Bearer-token authentication for the Master and Worker gRPC services.

A server built with ``TokenAuthInterceptor`` requires ``authorization: Bearer <token>`` on
every RPC except health checks and server reflection, which stay open so that load
balancers, ``grpcurl list`` and readiness probes work without a secret. Without the header
(or with another scheme) a call gets ``UNAUTHENTICATED``; with a wrong token
``PERMISSION_DENIED``. Tokens are compared in constant time (``hmac.compare_digest``) and
never logged or echoed in messages.

Two tokens can be told apart: the client token guards the control RPCs, the cluster token the
RPCs workers use to join (``RegisterWorker``, ``Heartbeat``) and the Worker service itself.
When only one is configured it serves both.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable
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

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(abort, **kwargs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(abort, **kwargs)
    if handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(abort, **kwargs)
    return grpc.unary_unary_rpc_method_handler(abort, **kwargs)


class TokenAuthInterceptor(grpc.ServerInterceptor):
    """Checks the bearer token of each call; see the module docstring."""

    def __init__(
        self,
        token: str | None,
        cluster_token: str | None = None,
        cluster_methods: Iterable[str] = CLUSTER_METHODS,
    ) -> None:
        self._token = (token or "").encode()
        self._cluster_token = (cluster_token or token or "").encode()
        self._cluster_methods = frozenset(cluster_methods)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        handler = continuation(handler_call_details)
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler
        expected = self._cluster_token if method in self._cluster_methods else self._token
        if not expected:
            return handler
        header = ""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                header = value if isinstance(value, str) else value.decode("latin-1")
                break
        scheme, _, given = header.partition(" ")
        if not header or scheme.lower() != "bearer" or not given:
            return _deny(
                handler,
                grpc.StatusCode.UNAUTHENTICATED,
                "this server requires a token: send metadata 'authorization: Bearer <token>' "
                "(chaperon: --token or CHAPERON_TOKEN)",
            )
        if not hmac.compare_digest(given.strip().encode(), expected):
            return _deny(handler, grpc.StatusCode.PERMISSION_DENIED, "the token is not valid")
        return handler
