"""A small Python client over the generated Master stubs.

    from chaperon import Client, load_file
    with Client("127.0.0.1:50051") as client:
        run = client.run(load_file("smoke.json"))
        print(run.state, run.result.metrics[0].percentiles)

Every method returns the protobuf messages of ``chaperon.v1``; failures raise
``grpc.RpcError`` with the master's status and message (``chaperon.rpc.status.field_violations``
lists the bad fields of an ``INVALID_ARGUMENT``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from types import TracebackType

import grpc

from chaperon.rpc.auth import bearer_metadata
from chaperon.rpc.channels import (
    make_channel,
    message_size_options,
    read_ca,
    with_default_port,
)
from chaperon.v1 import (
    loadtest_pb2,
    master_pb2,
    master_pb2_grpc,
    results_pb2,
)

_OPTIONS = message_size_options(64 * 1024 * 1024, 16 * 1024 * 1024)


class Client:
    def __init__(self, address: str, token: str | None = None, tls_ca: str | None = None) -> None:
        """``address`` is HOST[:PORT] (port 50051 when only HOST is given; ValueError when it
        is not an address); ``token`` defaults to $CHAPERON_TOKEN; ``tls_ca`` (a PEM file)
        turns TLS on."""
        address = with_default_port(address)
        self.address = address
        token = token if token is not None else os.environ.get("CHAPERON_TOKEN")
        self._metadata = bearer_metadata(token)
        self._channel = make_channel(address, tls_ca is not None, read_ca(tls_ca), _OPTIONS)
        self._stub = master_pb2_grpc.MasterStub(self._channel)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        grpc.channel_ready_future(self._channel).result(timeout=timeout_s)

    def run(
        self, load_test: loadtest_pb2.LoadTest, timeout_s: float | None = None
    ) -> results_pb2.LoadTestRun:
        """Submit and wait for the end; returns the final run with its result."""
        return self._stub.RunLoadTest(  # type: ignore[no-any-return]
            master_pb2.SubmitLoadTestRequest(load_test=load_test),
            timeout=timeout_s,
            metadata=self._metadata,
        )

    def submit(self, load_test: loadtest_pb2.LoadTest) -> results_pb2.LoadTestRun:
        return self._stub.SubmitLoadTest(  # type: ignore[no-any-return]
            master_pb2.SubmitLoadTestRequest(load_test=load_test), metadata=self._metadata
        )

    def get(self, run_id: str) -> results_pb2.LoadTestRun:
        return self._stub.GetLoadTestRun(  # type: ignore[no-any-return]
            master_pb2.GetLoadTestRunRequest(id=run_id), metadata=self._metadata
        )

    def runs(
        self, states: Iterable[int] = (), page_size: int = 0
    ) -> Iterator[results_pb2.LoadTestRun]:
        token = ""
        while True:
            resp = self._stub.ListLoadTestRuns(
                master_pb2.ListLoadTestRunsRequest(
                    states=list(states),  # type: ignore[arg-type]
                    page_size=page_size,
                    page_token=token,
                ),
                metadata=self._metadata,
            )
            yield from resp.runs
            token = resp.next_page_token
            if not token:
                return

    def watch(self, run_id: str) -> Iterator[master_pb2.RunProgress]:
        return self._stub.WatchLoadTestRun(  # type: ignore[no-any-return]
            master_pb2.WatchLoadTestRunRequest(id=run_id), metadata=self._metadata
        )

    def cancel(self, run_id: str) -> results_pb2.LoadTestRun:
        return self._stub.CancelLoadTestRun(  # type: ignore[no-any-return]
            master_pb2.CancelLoadTestRunRequest(id=run_id), metadata=self._metadata
        )

    def delete_run(self, run_id: str) -> master_pb2.DeleteLoadTestRunResponse:
        """Delete a finished run and everything the master stored for it (its result and
        per-interval reports); the response says which state it had. ``NOT_FOUND`` for an
        unknown id, ``FAILED_PRECONDITION`` for a SCHEDULED or RUNNING run (cancel it first)."""
        return self._stub.DeleteLoadTestRun(  # type: ignore[no-any-return]
            master_pb2.DeleteLoadTestRunRequest(id=run_id), metadata=self._metadata
        )

    def workers(self) -> list[master_pb2.WorkerInfo]:
        resp = self._stub.ListWorkers(master_pb2.ListWorkersRequest(), metadata=self._metadata)
        return list(resp.workers)

    def server_info(self) -> master_pb2.ServerInfo:
        return self._stub.GetServerInfo(  # type: ignore[no-any-return]
            master_pb2.GetServerInfoRequest(), metadata=self._metadata
        )
