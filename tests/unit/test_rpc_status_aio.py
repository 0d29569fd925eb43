"""The asyncio side of ``chaperon.rpc.status``, without a network: domain errors become
statuses in coroutines and async generators, and undecodable request bytes become
INVALID_ARGUMENT whatever kind of behaviour the handler has (the server looks at that kind to
decide how to run it, so the wrapper must keep it)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_status import rpc_status

from chaperon.core.errors import InvalidArgument, NotFound
from chaperon.rpc.status import AioDecodeErrorInterceptor, aio_grpc_errors, aio_grpc_stream_errors
from chaperon.v1 import master_pb2


class _Aborted(Exception):
    pass


class _Context:
    """What the servicer sees of a grpc.aio context: ``abort`` records and raises."""

    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None
        self.details = ""
        self.trailing: Any = None

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing: Any = None) -> None:
        self.code, self.details, self.trailing = code, details, trailing
        raise _Aborted(details)

    def abort_sync(self, code: grpc.StatusCode, details: str = "") -> None:
        self.code, self.details = code, details
        raise _Aborted(details)


class _Details:
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata: list[tuple[str, str]] = []


class _Servicer:
    @aio_grpc_errors
    async def Unary(self, request: Any, context: Any) -> Any:
        if request == "missing":
            raise NotFound("no such run")
        if request == "bad":
            raise InvalidArgument([("id", "is required")])
        if request == "bug":
            raise KeyError("oops")
        return "ok"

    @aio_grpc_stream_errors
    async def Stream(self, request: Any, context: Any) -> AsyncIterator[str]:
        yield "first"
        if request == "missing":
            raise NotFound("gone meanwhile")
        yield "second"


def test_domain_errors_become_statuses_in_coroutines() -> None:
    async def scenario() -> None:
        servicer = _Servicer()
        assert await servicer.Unary("fine", _Context()) == "ok"
        for request, code in [
            ("missing", grpc.StatusCode.NOT_FOUND),
            ("bad", grpc.StatusCode.INVALID_ARGUMENT),
            ("bug", grpc.StatusCode.INTERNAL),
        ]:
            ctx = _Context()
            with pytest.raises(_Aborted):
                await servicer.Unary(request, ctx)
            assert ctx.code == code, request
        # The field violations travel in the trailing metadata, as from a thread-pool server.
        ctx = _Context()
        with pytest.raises(_Aborted):
            await servicer.Unary("bad", ctx)
        keys = [k for k, _ in ctx.trailing]
        assert rpc_status.GRPC_DETAILS_METADATA_KEY in keys

    asyncio.run(scenario())


def test_domain_errors_become_statuses_in_async_generators() -> None:
    async def scenario() -> None:
        assert inspect.isasyncgenfunction(_Servicer.Stream)
        got = [m async for m in _Servicer().Stream("fine", _Context())]
        assert got == ["first", "second"]
        ctx = _Context()
        got = []
        with pytest.raises(_Aborted):
            async for m in _Servicer().Stream("missing", ctx):
                got.append(m)
        assert got == ["first"] and ctx.code == grpc.StatusCode.NOT_FOUND

    asyncio.run(scenario())


async def _intercept(behaviour: Any, streaming: bool) -> Any:
    make = (
        grpc.unary_stream_rpc_method_handler if streaming else grpc.unary_unary_rpc_method_handler
    )
    real = make(
        behaviour,
        request_deserializer=master_pb2.GetLoadTestRunRequest.FromString,
        response_serializer=master_pb2.ServerInfo.SerializeToString,
    )

    async def continuation(details: Any) -> Any:
        return real

    details = _Details("/chaperon.v1.Master/X")
    interceptor = AioDecodeErrorInterceptor()
    wrapped = await interceptor.intercept_service(continuation, details)
    # Cached: the same handler in, the same wrapper out.
    assert await interceptor.intercept_service(continuation, details) is wrapped
    return wrapped


def test_undecodable_bytes_are_invalid_argument_for_every_kind_of_behaviour() -> None:
    async def coroutine(request: Any, context: Any) -> str:
        return request.id

    async def generator(request: Any, context: Any) -> AsyncIterator[str]:
        yield request.id

    def plain(request: Any, context: Any) -> str:
        return str(request.id)

    good = master_pb2.GetLoadTestRunRequest(id="run-1").SerializeToString()
    garbage = b"\xff\xff\xff"

    async def scenario() -> None:
        handler = await _intercept(coroutine, streaming=False)
        assert inspect.iscoroutinefunction(handler.unary_unary)
        request = handler.request_deserializer(good)
        assert await handler.unary_unary(request, _Context()) == "run-1"
        ctx = _Context()
        with pytest.raises(_Aborted):
            await handler.unary_unary(handler.request_deserializer(garbage), ctx)
        assert ctx.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "GetLoadTestRunRequest" in ctx.details

        handler = await _intercept(generator, streaming=True)
        assert inspect.isasyncgenfunction(handler.unary_stream)
        got = [m async for m in handler.unary_stream(handler.request_deserializer(good), None)]
        assert got == ["run-1"]
        ctx = _Context()
        with pytest.raises(_Aborted):
            async for _ in handler.unary_stream(handler.request_deserializer(garbage), ctx):
                pass
        assert ctx.code == grpc.StatusCode.INVALID_ARGUMENT

        handler = await _intercept(plain, streaming=False)
        assert not inspect.iscoroutinefunction(handler.unary_unary)
        assert handler.unary_unary(handler.request_deserializer(good), None) == "run-1"
        ctx = _Context()
        ctx.abort = ctx.abort_sync  # type: ignore[method-assign]
        with pytest.raises(_Aborted):
            handler.unary_unary(handler.request_deserializer(garbage), ctx)
        assert ctx.code == grpc.StatusCode.INVALID_ARGUMENT

    asyncio.run(scenario())
