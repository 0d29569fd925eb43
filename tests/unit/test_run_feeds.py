"""The master's run feeds (``master_service/run_feeds.py``) on an event loop, with a fake take.

One snapshot per run per interval whoever reads it; a change of state wakes the readers at
once; the final snapshot ends every reader; a reader that leaves takes nothing with it (its
feed goes with the last reader); a take that fails reaches every reader waiting for it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from chaperon.core.errors import NotFound
from chaperon.v1 import master_pb2, results_pb2
from master_service.run_feeds import RunFeeds


class _Runs:
    """The fake take: each run's state, counted takes, and a gate to make takes slow."""

    def __init__(self) -> None:
        self.states: dict[str, int] = {}
        self.takes = 0
        self.gate: asyncio.Event | None = None

    def take(self, run_id: str) -> master_pb2.RunProgress:
        self.takes += 1
        if run_id not in self.states:
            raise NotFound(f"no load test run with id {run_id!r}")
        state = self.states[run_id]
        message = master_pb2.RunProgress(id=run_id, state=state)  # type: ignore[arg-type]
        if state == results_pb2.SUCCEEDED:
            message.run.id = run_id
            message.run.state = state  # type: ignore[assignment]
        return message

    async def offload(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.gate is not None:
            await self.gate.wait()
        return fn(*args)


def _feeds(runs: _Runs, interval_s: float) -> RunFeeds:
    feeds = RunFeeds(runs.take, runs.offload, interval_s)
    feeds.bind(asyncio.get_running_loop())
    return feeds


async def _read(feeds: RunFeeds, run_id: str, count: int) -> list[master_pb2.RunProgress]:
    out = []
    async for message in feeds.watch(run_id):
        out.append(message)
        if len(out) == count:
            break
    return out


def test_readers_of_one_run_share_one_take_per_interval() -> None:
    async def scenario() -> None:
        runs = _Runs()
        runs.states["r"] = results_pb2.SCHEDULED
        feeds = _feeds(runs, 0.3)
        got = await asyncio.wait_for(
            asyncio.gather(*(_read(feeds, "r", 2) for _ in range(100))), 5.0
        )
        assert all(len(messages) == 2 for messages in got)
        # The first messages share one take; the second ones come within one interval of
        # it, from that snapshot or at most one more.
        assert runs.takes <= 3, runs.takes
        assert feeds.readers == 0 and feeds.watched_runs == 0

    asyncio.run(scenario())


def test_a_change_of_state_wakes_the_readers_at_once() -> None:
    async def scenario() -> None:
        runs = _Runs()
        runs.states["r"] = results_pb2.SCHEDULED
        feeds = _feeds(runs, 30.0)
        stream = feeds.watch("r")
        first = await stream.__anext__()
        assert first.state == results_pb2.SCHEDULED
        runs.states["r"] = results_pb2.RUNNING
        # From another thread, as the run queue tells it.
        threading.Thread(target=feeds.changed, args=("r",)).start()
        second = await asyncio.wait_for(stream.__anext__(), 5.0)
        assert second.state == results_pb2.RUNNING
        await stream.aclose()
        assert feeds.readers == 0

    asyncio.run(scenario())


def test_the_final_snapshot_ends_every_reader() -> None:
    async def scenario() -> None:
        runs = _Runs()
        runs.states["r"] = results_pb2.RUNNING
        feeds = _feeds(runs, 30.0)
        waiters = [asyncio.ensure_future(feeds.until_ended("r")) for _ in range(10)]
        watched = asyncio.ensure_future(_read(feeds, "r", 100))
        await asyncio.sleep(0.05)
        assert feeds.readers == 11
        runs.states["r"] = results_pb2.SUCCEEDED
        feeds.changed("r")
        ended = await asyncio.wait_for(asyncio.gather(*waiters), 5.0)
        assert {run.state for run in ended} == {results_pb2.SUCCEEDED}
        messages = await asyncio.wait_for(watched, 5.0)
        assert [m.state for m in messages] == [results_pb2.RUNNING, results_pb2.SUCCEEDED]
        assert feeds.readers == 0 and feeds.watched_runs == 0

    asyncio.run(scenario())


def test_a_reader_that_leaves_takes_nothing_with_it() -> None:
    async def scenario() -> None:
        runs = _Runs()
        runs.states["r"] = results_pb2.SCHEDULED
        feeds = _feeds(runs, 30.0)
        readers = [asyncio.ensure_future(_read(feeds, "r", 100)) for _ in range(5)]
        await asyncio.sleep(0.05)
        assert feeds.readers == 5
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        assert feeds.readers == 0 and feeds.watched_runs == 0
        # Nothing is left on the loop but this coroutine's own task.
        assert asyncio.all_tasks() == {asyncio.current_task()}

    asyncio.run(scenario())


def test_a_cancelled_reader_does_not_cancel_the_take_others_wait_for() -> None:
    async def scenario() -> None:
        runs = _Runs()
        runs.states["r"] = results_pb2.SCHEDULED
        runs.gate = asyncio.Event()
        feeds = _feeds(runs, 30.0)
        leaving = asyncio.ensure_future(_read(feeds, "r", 1))
        staying = asyncio.ensure_future(_read(feeds, "r", 1))
        await asyncio.sleep(0.05)
        leaving.cancel()
        await asyncio.gather(leaving, return_exceptions=True)
        runs.gate.set()
        got = await asyncio.wait_for(staying, 5.0)
        assert got[0].state == results_pb2.SCHEDULED
        assert runs.takes == 1

    asyncio.run(scenario())


def test_a_failed_take_reaches_every_reader_and_is_tried_again_later() -> None:
    async def scenario() -> None:
        runs = _Runs()
        feeds = _feeds(runs, 30.0)
        results = await asyncio.gather(
            *(_read(feeds, "missing", 1) for _ in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, NotFound) for r in results), results
        assert runs.takes == 1
        assert feeds.readers == 0 and feeds.watched_runs == 0
        runs.states["missing"] = results_pb2.SCHEDULED
        assert (await _read(feeds, "missing", 1))[0].state == results_pb2.SCHEDULED

    asyncio.run(scenario())


def test_changed_after_the_loop_closed_is_ignored() -> None:
    runs = _Runs()
    loop = asyncio.new_event_loop()
    feeds = RunFeeds(runs.take, runs.offload, 1.0)
    feeds.bind(loop)
    loop.close()
    feeds.changed("r")  # the master stopped: nobody is left to tell


def test_each_reader_keeps_its_own_cadence() -> None:
    interval_s = 0.05

    async def scenario() -> None:
        runs = _Runs()
        runs.states["r"] = results_pb2.SCHEDULED
        feeds = _feeds(runs, interval_s)
        loop = asyncio.get_running_loop()
        started = loop.time()
        messages = await asyncio.wait_for(_read(feeds, "r", 6), 5.0)
        took_s = loop.time() - started
        assert len(messages) == 6
        # The first at once, then one per interval (the first wait a random part of one).
        assert 4 * interval_s <= took_s < 5 * interval_s + 1.0, took_s

    asyncio.run(scenario())
