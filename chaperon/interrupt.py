"""Ctrl-C during a run: the first keeps what the run measured, the second quits at once.

Theory of operation. ``GracefulInterrupt`` owns SIGINT for as long as a command that waits
for a run (``chaperon run``, ``submit --wait``) is in its ``with`` block. It moves through
three stages:

- *idle*, before a run is attached: there is nothing to keep yet, so SIGINT raises
  ``KeyboardInterrupt`` as Python's own handler does (``main`` exits 130);
- *running*, once ``attach`` gave it a way to stop the run: the first SIGINT says on stderr
  what happens and calls that stop (``Client.cancel``) on a thread of its own, since a signal
  handler must return at once and the cancel returns only when the run has ended. The master
  keeps the partial metrics of a cancelled run; the command's wait for the final run goes on
  as usual and gets the CANCELLED run with them, prints the report, writes the outputs, and
  exits 130 (``requested`` tells it so);
- after the first SIGINT, or once the run has ended (``finished``): a SIGINT ends the process
  at once, exit 130, without a traceback and without waiting for any thread
  (``os._exit``; stdout and stderr are flushed first).

Python runs signal handlers in the main thread between bytecodes; gRPC's blocking calls wake
up every fraction of a second for them (``grpc._common.wait``), so the handler runs while the
main thread waits for the run. Outside the main thread (a library caller on a thread of its
own) nothing is installed: Ctrl-C behaves as it did.

``run_to_end`` is the wait itself: submit, attach the cancel, follow the run's progress
stream (``WatchLoadTestRun``) to its final run. What is shown while following is the
caller's ``follow`` (default: nothing).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from types import FrameType, TracebackType

import grpc

from chaperon.client import Client
from chaperon.v1 import loadtest_pb2, master_pb2, results_pb2

__all__ = ["EXIT_INTERRUPTED", "STOPPING", "GracefulInterrupt", "final_of", "run_to_end"]

log = logging.getLogger(__name__)

EXIT_INTERRUPTED = 130
STOPPING = (
    "chaperon: stopping: cancelling the run and keeping what it measured; "
    "Ctrl-C again to quit at once"
)
QUIT = "chaperon: interrupted again: quitting at once"
# How long the command waits for the cancel call to return once the final run is in hand
# (the cancel returns when the run has ended, so about when the final run arrives).
CANCEL_JOIN_S = 5.0

# A progress stream that ends without the final run is followed again this many times.
FOLLOW_AGAIN = 3
_GOING = (results_pb2.SCHEDULED, results_pb2.RUNNING)

Follow = Callable[[Iterable[master_pb2.RunProgress]], "results_pb2.LoadTestRun | None"]


def _say(text: str) -> None:
    try:
        print(text, file=sys.stderr, flush=True)
    except (OSError, ValueError):  # stderr closed: nothing else to tell
        pass


def _quit_now() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(EXIT_INTERRUPTED)


class GracefulInterrupt:
    """SIGINT for a command that waits for a run; see the module docstring."""

    def __init__(self, message: str = STOPPING) -> None:
        self.message = message
        self.requested = threading.Event()
        self._lock = threading.Lock()
        self._stop: Callable[[], object] | None = None
        self._stopper: threading.Thread | None = None
        self._finished = False
        self._previous: object = None
        self._installed = False

    def __enter__(self) -> GracefulInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
            self._installed = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)  # type: ignore[arg-type]
            self._installed = False

    def attach(self, stop: Callable[[], object]) -> None:
        """The run has started: ``stop`` (called once, on a thread) ends it keeping its
        metrics. A SIGINT that came before is acted on now."""
        with self._lock:
            self._stop = stop
            go = self.requested.is_set()
        if go:
            self._start_stopping()

    def finished(self) -> None:
        """The final run is in hand: from now on a SIGINT quits at once."""
        with self._lock:
            self._finished = True
        if self._stopper is not None:
            self._stopper.join(CANCEL_JOIN_S)

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        with self._lock:
            again = self.requested.is_set() or self._finished
            idle = self._stop is None
            if not again and not idle:
                self.requested.set()
        if again:
            _say(QUIT)
            _quit_now()
        if idle:
            raise KeyboardInterrupt
        _say(self.message)
        self._start_stopping()

    def _start_stopping(self) -> None:
        stop = self._stop
        assert stop is not None

        def call() -> None:
            try:
                stop()
            except grpc.RpcError as exc:  # e.g. the run ended meanwhile: its result is kept
                log.debug("cancelling the run: %s", exc)
            except ValueError as exc:  # the channel closed: the command is over
                log.debug("cancelling the run: %s", exc)

        self._stopper = threading.Thread(target=call, name="chaperon-cancel", daemon=True)
        self._stopper.start()


def final_of(progress: Iterable[master_pb2.RunProgress]) -> results_pb2.LoadTestRun | None:
    """The final run of a progress stream (its last message carries it), showing nothing."""
    final = None
    for message in progress:
        if message.HasField("run"):
            final = message.run
    return final


def run_to_end(
    client: Client,
    load_test: loadtest_pb2.LoadTest,
    interrupt: GracefulInterrupt,
    follow: Follow = final_of,
) -> results_pb2.LoadTestRun:
    """Submit ``load_test``, follow it to its end with ``follow``, return the final run.

    A first Ctrl-C (``interrupt``) cancels the run; the run returned is then the cancelled
    one with the metrics measured until the cancel. Submission errors (``grpc.RpcError``)
    propagate; a progress stream that ends without the final run is followed again, then
    the run is read with ``GetLoadTestRun``."""
    submitted = client.submit(load_test)
    run_id = submitted.id
    interrupt.attach(lambda: client.cancel(run_id))
    run = follow(client.watch(run_id))
    for _ in range(FOLLOW_AGAIN):
        if run is not None and run.state not in _GOING:
            break
        # The stream ended early (a proxy's idle timeout, a reset): follow it again.
        run = follow(client.watch(run_id))
    if run is None or run.state in _GOING:
        run = client.get(run_id)
    interrupt.finished()
    return run
