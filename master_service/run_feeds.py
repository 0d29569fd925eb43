"""One shared snapshot per watched run, for every stream that waits on it, on the event loop.

Theory of operation. ``WatchLoadTestRun`` streams, ``RunLoadTest`` calls and cancels that wait
for a run to end all read a run through its *feed* here. A feed keeps the run's latest
snapshot (whatever ``take(run_id)`` returns: the servicer's ``RunProgress``, the run's state
and figures so far, or the final message with the whole run once it has ended) and the time
it was taken. ``take`` blocks (a store read, the controller's lock), so it runs off the event
loop through ``offload``. A reader asks for the snapshot; one younger than ``interval_s`` is
handed out as it is, and an older one is taken again, once for all who ask meanwhile (they
await the same task). So a thousand watchers of one run cost one store read per interval,
not a thousand.

Each stream keeps its own cadence: after a message it sleeps ``interval_s`` on the event loop
(a timer, no thread held) and asks again, so streams opened at different times are served
at different times, not in one burst per second. A change of a run's state (``changed``,
called from any thread by the run queue) drops the run's snapshot and wakes its sleepers at
once: a watcher sees its run start or end without waiting out its interval, and
``RunLoadTest`` returns as soon as the final run is stored.

A feed lives while someone reads it; the last reader to leave (its stream ended, the client
went away, the server stopped) removes it. Nothing here runs in the background: a reader
that is cancelled takes its timer with it, and a take that outlives its readers ends with
the ``offload`` call it awaits. Everything runs on the one event loop passed to ``bind``
except ``take`` (on ``offload``'s threads) and ``changed`` (any thread; it hops onto the loop).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from chaperon.v1 import master_pb2, results_pb2
from master_service.run_queue import TERMINAL

log = logging.getLogger(__name__)

Take = Callable[[str], master_pb2.RunProgress]
Offload = Callable[..., Awaitable[Any]]


@dataclass(eq=False)
class _Feed:
    run_id: str
    readers: int = 0
    # Bumped by every change of the run's state; a snapshot taken under an older generation
    # is not kept, and a reader holding one does not go to sleep on it.
    generation: int = 0
    snapshot: master_pb2.RunProgress | None = None
    taken_at: float = -math.inf
    taking: asyncio.Task[master_pb2.RunProgress] | None = None
    sleepers: set[asyncio.Future[None]] = field(default_factory=set)


class RunFeeds:
    def __init__(
        self,
        take: Take,
        offload: Offload,
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._take = take
        self._offload = offload
        self._interval_s = interval_s
        self._clock = clock
        self._feeds: dict[str, _Feed] = {}
        self._readers = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The event loop the feeds live on (``changed`` hops onto it)."""
        self._loop = loop

    @property
    def watched_runs(self) -> int:
        """How many runs have a feed (someone reads them) now."""
        return len(self._feeds)

    @property
    def readers(self) -> int:
        """How many readers (streams, calls waiting for a run's end) there are now."""
        return self._readers

    # -- readers (coroutines on the loop) -------------------------------------------------------

    async def watch(self, run_id: str) -> AsyncIterator[master_pb2.RunProgress]:
        """The run's snapshots: one at once, then one per interval (sooner when its state
        changes), ending with the final one. Raises what ``take`` raises (NotFound, ...)."""
        feed = self._feeds.get(run_id)
        if feed is None:
            feed = self._feeds[run_id] = _Feed(run_id)
        feed.readers += 1
        self._readers += 1
        # The first wait is a random part of an interval, so streams opened in a burst (a
        # thousand dashboards reconnecting) are served spread over the interval ever after.
        wait_s = random.uniform(0.0, self._interval_s)
        try:
            while True:
                generation = feed.generation
                message = await self._current(feed)
                yield message
                if message.state in TERMINAL:
                    return
                await self._sleep(feed, generation, wait_s)
                wait_s = self._interval_s
        finally:
            feed.readers -= 1
            self._readers -= 1
            if feed.readers == 0 and self._feeds.get(run_id) is feed:
                del self._feeds[run_id]

    async def until_ended(self, run_id: str) -> results_pb2.LoadTestRun:
        """The run once it has ended (its final snapshot's ``run``)."""
        final = None
        async for message in self.watch(run_id):
            final = message
        assert final is not None  # watch yields at least once or raises
        return final.run

    async def _current(self, feed: _Feed) -> master_pb2.RunProgress:
        if feed.snapshot is not None and self._clock() - feed.taken_at < self._interval_s:
            return feed.snapshot
        if feed.taking is None:
            feed.taking = asyncio.ensure_future(self._take_snapshot(feed))
            feed.taking.add_done_callback(_retrieve)
        # shield: a reader that is cancelled must not cancel the take the others await.
        return await asyncio.shield(feed.taking)

    async def _take_snapshot(self, feed: _Feed) -> master_pb2.RunProgress:
        generation = feed.generation
        started = self._clock()
        try:
            snapshot: master_pb2.RunProgress = await self._offload(self._take, feed.run_id)
        finally:
            if feed.generation == generation:
                feed.taking = None
        if feed.generation == generation:
            feed.snapshot = snapshot
            feed.taken_at = started
        return snapshot

    async def _sleep(self, feed: _Feed, generation: int, wait_s: float) -> None:
        """Wait ``wait_s``, or until the run's state changes (at once if it has since
        ``generation``)."""
        if feed.generation != generation:
            return
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()
        timer = loop.call_later(wait_s, _wake, woken)
        feed.sleepers.add(woken)
        try:
            await woken
        finally:
            timer.cancel()
            feed.sleepers.discard(woken)

    # -- news of a change (any thread) ----------------------------------------------------------

    def changed(self, run_id: str) -> None:
        """The run's state changed: its readers take a new snapshot now. Any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._changed, run_id)
        except RuntimeError:  # the loop closed meanwhile: no reader is left to tell
            pass

    def _changed(self, run_id: str) -> None:
        feed = self._feeds.get(run_id)
        if feed is None:
            return
        feed.generation += 1
        feed.snapshot = None
        feed.taking = None  # a take under way still answers its readers, but is not kept
        for woken in feed.sleepers:
            _wake(woken)


def _wake(woken: asyncio.Future[None]) -> None:
    if not woken.done():
        woken.set_result(None)


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a take's error as seen: its readers may all have gone before it failed."""
    if not task.cancelled():
        task.exception()
