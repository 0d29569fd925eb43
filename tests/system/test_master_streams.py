"""Open streams never starve a real master (issue 12, "Streams and heartbeats never starve").

The master serves on grpc's asyncio server, so an open ``WatchLoadTestRun`` stream holds no
thread. Its old thread-per-call server had 64 threads: past 64 open streams, every other call
(heartbeats included) waited for a stream to end, and workers were marked lost. Here a real
``chaperon master`` process with no available worker (``--worker-wait 600``: its runs stay
SCHEDULED, so the streams stay open) gets:

- 200 open streams, then registrations, heartbeats and ``GetServerInfo`` calls that must
  each be answered within ``CALL_DEADLINE_S``, while every stream keeps getting messages.
  A starvation check, not a timing benchmark (``bench/master_streams.py`` measures);
- clients that go away mid-stream (cancelled calls, a client process killed with SIGKILL):
  ``ServerInfo.open_streams`` comes back to zero, so nothing of theirs is left running;
- ``stop()`` (SIGTERM for the process; the call itself in this process) with streams and a
  waiting ``RunLoadTest`` open: it returns within its grace, and the calls end with a status.

The simulated workers are registered with addresses nothing listens on and are set ignored
before any run is submitted, so no run is ever assigned to them. The clients are grpc.aio, so
200 streams cost the test one thread.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from support.cluster import Service, run_master
from support.fuzz import DEAD_BASE_URL, DEAD_PORT
from support.loadtests import minimal_load_test, to_proto
from support.procs import python_env

from chaperon.v1 import master_pb2, master_pb2_grpc, results_pb2, worker_pb2

STREAMS = 200
# Each call while the streams are open must be answered within this; the old server never
# answered (every thread held by a stream) until the deadline.
CALL_DEADLINE_S = 3.0
# Opening the streams and their first messages, on a machine shared with other work.
OPEN_DEADLINE_S = 30.0
CONNECTIONS = 10
# The master's stop grace (the CLI's ``server.stop()``) and what we allow on top of it.
STOP_GRACE_S = 2.0
STOP_SLACK_S = 4.0


@pytest.fixture(scope="module")
def idle_master(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A master whose runs wait (ten minutes) for a worker that never comes."""
    with run_master(
        tmp_path_factory.mktemp("streams-master"), extra_args=["--worker-wait", "600"]
    ) as service:
        yield service


def _load_test(name: str) -> Any:
    return to_proto(minimal_load_test(DEAD_BASE_URL, concurrency=1, duration="1s", name=name))


@asynccontextmanager
async def _channels(address: str, count: int) -> AsyncIterator[list[grpc.aio.Channel]]:
    # Each its own TCP connection, as separate clients would have.
    channels = [
        grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(count)
    ]
    try:
        yield channels
    finally:
        for channel in channels:
            await channel.close(None)


async def _open_streams(channels: list[grpc.aio.Channel], run_id: str, count: int) -> list[Any]:
    """``count`` watch streams of ``run_id``, each past its first message (SCHEDULED)."""
    stubs = [master_pb2_grpc.MasterStub(c) for c in channels]
    streams = [
        stubs[i % len(stubs)].WatchLoadTestRun(master_pb2.WatchLoadTestRunRequest(id=run_id))
        for i in range(count)
    ]
    firsts = await asyncio.wait_for(asyncio.gather(*(s.read() for s in streams)), OPEN_DEADLINE_S)
    assert {m.state for m in firsts} == {results_pb2.SCHEDULED}, firsts[:3]
    return streams


async def _open_streams_now(stub: Any) -> int:
    info = await stub.GetServerInfo(master_pb2.GetServerInfoRequest(), timeout=CALL_DEADLINE_S)
    return int(info.open_streams)


async def _wait_open_streams(stub: Any, expected: int, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while True:
        now = await _open_streams_now(stub)
        if now == expected:
            return
        assert time.monotonic() < deadline, f"open_streams is {now}, not {expected}"
        await asyncio.sleep(0.1)


async def _ignored_workers(stub: Any, count: int, first_port: int) -> list[str]:
    ids = []
    for i in range(count):
        reply = await stub.RegisterWorker(
            master_pb2.RegisterWorkerRequest(address=f"127.0.0.1:{first_port + i}", capacity=1),
            timeout=CALL_DEADLINE_S,
        )
        await stub.SetWorkerIgnored(
            master_pb2.SetWorkerIgnoredRequest(worker_id=reply.worker_id, ignored=True),
            timeout=CALL_DEADLINE_S,
        )
        ids.append(reply.worker_id)
    return ids


async def _cancel_run(stub: Any, run_id: str) -> None:
    await stub.CancelLoadTestRun(
        master_pb2.CancelLoadTestRunRequest(id=run_id), timeout=CALL_DEADLINE_S
    )


def test_heartbeats_and_info_are_answered_with_200_streams_open(idle_master: Service) -> None:
    async def scenario() -> None:
        async with _channels(idle_master.address, CONNECTIONS + 1) as channels:
            control = master_pb2_grpc.MasterStub(channels[0])
            # Workers first, ignored, so the run below can never start.
            worker_ids = await _ignored_workers(control, 5, DEAD_PORT + 20000)
            run = await control.SubmitLoadTest(
                master_pb2.SubmitLoadTestRequest(load_test=_load_test("streams")),
                timeout=CALL_DEADLINE_S,
            )
            streams = await _open_streams(channels[1:], run.id, STREAMS)
            try:
                for _ in range(3):
                    for worker_id in worker_ids:
                        beat = await control.Heartbeat(
                            master_pb2.HeartbeatRequest(
                                worker_id=worker_id, state=worker_pb2.WORKER_IDLE
                            ),
                            timeout=CALL_DEADLINE_S,
                        )
                        assert beat.known
                    late = await control.RegisterWorker(
                        master_pb2.RegisterWorkerRequest(
                            address=f"127.0.0.1:{DEAD_PORT + 30000}", capacity=1
                        ),
                        timeout=CALL_DEADLINE_S,
                    )
                    await control.SetWorkerIgnored(
                        master_pb2.SetWorkerIgnoredRequest(worker_id=late.worker_id, ignored=True),
                        timeout=CALL_DEADLINE_S,
                    )
                    assert await _open_streams_now(control) == STREAMS
                    await asyncio.sleep(0.3)
                # Every stream is still served: each gets its next message.
                seconds = await asyncio.wait_for(
                    asyncio.gather(*(s.read() for s in streams)), OPEN_DEADLINE_S
                )
                assert {m.state for m in seconds} == {results_pb2.SCHEDULED}
                listed = await control.ListWorkers(
                    master_pb2.ListWorkersRequest(), timeout=CALL_DEADLINE_S
                )
                states = {w.worker_id: w.state for w in listed.workers}
                assert all(states[w] != worker_pb2.WORKER_LOST for w in worker_ids), states
            finally:
                for stream in streams:
                    stream.cancel()
                await _cancel_run(control, run.id)

    asyncio.run(scenario())


_CLIENT = textwrap.dedent(
    """
    import asyncio, sys
    import grpc
    from chaperon.v1 import master_pb2, master_pb2_grpc

    async def main(address, run_id, count):
        channel = grpc.aio.insecure_channel(address)
        stub = master_pb2_grpc.MasterStub(channel)
        streams = [
            stub.WatchLoadTestRun(master_pb2.WatchLoadTestRunRequest(id=run_id))
            for _ in range(count)
        ]
        await asyncio.gather(*(s.read() for s in streams))
        print("open", flush=True)
        await asyncio.sleep(600)  # until it is killed

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    """
)


def test_clients_that_go_away_free_their_streams(idle_master: Service, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with _channels(idle_master.address, 2) as channels:
            control = master_pb2_grpc.MasterStub(channels[0])
            run = await control.SubmitLoadTest(
                master_pb2.SubmitLoadTestRequest(load_test=_load_test("goes-away")),
                timeout=CALL_DEADLINE_S,
            )
            try:
                await _wait_open_streams(control, 0, CALL_DEADLINE_S)
                # Calls cancelled by a client that stays.
                streams = await _open_streams(channels[1:], run.id, 50)
                await _wait_open_streams(control, 50, CALL_DEADLINE_S)
                for stream in streams[:20]:
                    stream.cancel()
                await _wait_open_streams(control, 30, 5.0)
                for stream in streams[20:]:
                    stream.cancel()
                await _wait_open_streams(control, 0, 5.0)

                # A client process killed mid-stream: the master sees its connection go.
                with (tmp_path / "client.err").open("wb") as err:
                    client = subprocess.Popen(
                        [sys.executable, "-c", _CLIENT, idle_master.address, run.id, "30"],
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE,
                        stderr=err,
                        env=python_env(),
                    )
                try:
                    assert client.stdout is not None
                    line = await asyncio.wait_for(
                        asyncio.to_thread(client.stdout.readline), OPEN_DEADLINE_S
                    )
                    assert line.strip() == b"open", (tmp_path / "client.err").read_text()
                    await _wait_open_streams(control, 30, CALL_DEADLINE_S)
                finally:
                    client.send_signal(signal.SIGKILL)
                    client.wait(10)
                    if client.stdout is not None:
                        client.stdout.close()
                await _wait_open_streams(control, 0, 10.0)
            finally:
                await _cancel_run(control, run.id)

    asyncio.run(scenario())


def test_sigterm_with_streams_open_exits_within_the_grace(tmp_path: Path) -> None:
    with run_master(tmp_path / "master", extra_args=["--worker-wait", "600"]) as master:

        async def scenario() -> None:
            async with _channels(master.address, 4) as channels:
                control = master_pb2_grpc.MasterStub(channels[0])
                run = await control.SubmitLoadTest(
                    master_pb2.SubmitLoadTestRequest(load_test=_load_test("stop")),
                    timeout=CALL_DEADLINE_S,
                )
                streams = await _open_streams(channels[1:], run.id, 100)
                waiting = asyncio.ensure_future(
                    control.RunLoadTest(
                        master_pb2.SubmitLoadTestRequest(load_test=_load_test("waits"))
                    )
                )
                await _wait_open_streams(control, 101, CALL_DEADLINE_S)
                started = time.monotonic()
                master.process.signal(signal.SIGTERM)
                code = await asyncio.to_thread(
                    master.process.wait, STOP_GRACE_S + STOP_SLACK_S + 10
                )
                took_s = time.monotonic() - started
                assert code == 0, master.process.describe()
                assert took_s < STOP_GRACE_S + STOP_SLACK_S, f"stopped in {took_s:.1f}s"
                # Every call ended with a status, none hangs.
                ended = await asyncio.wait_for(
                    asyncio.gather(*(_end_of(s) for s in [*streams, waiting])), 10.0
                )
                assert set(ended) <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}

        asyncio.run(scenario())


async def _end_of(call: Any) -> grpc.StatusCode:
    try:
        if isinstance(call, asyncio.Future):
            await call
        else:
            while await call.read() is not grpc.aio.EOF:
                pass
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_stop_in_process_returns_within_its_grace_and_leaves_no_thread() -> None:
    from master_service.server import start_master

    grace_s = 1.0
    master = start_master("127.0.0.1", 0, worker_wait_s=600)
    try:

        async def scenario() -> float:
            async with _channels(master.address, 2) as channels:
                control = master_pb2_grpc.MasterStub(channels[0])
                run = await control.SubmitLoadTest(
                    master_pb2.SubmitLoadTestRequest(load_test=_load_test("in-process")),
                    timeout=CALL_DEADLINE_S,
                )
                streams = await _open_streams(channels[1:], run.id, 50)
                started = time.monotonic()
                await asyncio.to_thread(master.stop, grace_s)
                took_s = time.monotonic() - started
                ended = await asyncio.wait_for(asyncio.gather(*(_end_of(s) for s in streams)), 10.0)
                assert set(ended) <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}
                return took_s

        took_s = asyncio.run(scenario())
    finally:
        master.stop(grace_s)  # idempotent: a no-op when the scenario stopped it
    assert took_s < grace_s + STOP_SLACK_S, f"stop() took {took_s:.1f}s"
    assert master.loop.is_closed()
    # The loop's thread is joined by stop(); the executor's idle threads leave on their own.
    deadline = time.monotonic() + 5.0
    while True:
        left = [t.name for t in threading.enumerate() if t.name.startswith(("master-", "store-"))]
        if not left:
            break
        assert time.monotonic() < deadline, left
        time.sleep(0.05)
