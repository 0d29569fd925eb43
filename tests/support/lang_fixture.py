"""Start ``support.lang_server`` as a real process for tests and read its counts.

Theory of operation: :func:`start_lang_server` picks a free loopback port, starts
``python -m tests.support.lang_server --port P`` from the repository root through
:class:`support.procs.ManagedProcess` (own process group, output in ``lang_server.out`` /
``.err``), and is ready when the process has printed ``READY P`` and a TCP connection to
the port succeeds, both polled against one deadline and failing at once, with the log tail,
if the process exits first (another process took the port, say). Its ``finally`` always
stops the process (SIGTERM, then SIGKILL of the group).

The yielded :class:`LangServer` reads and zeroes the counters over HTTP with the standard
library (``GET /__counts``, ``POST /__reset``), so sync tests need no event loop. The server
counts a request when it receives it; a few counts land a moment after the client has its
answer (``by_route``, ``ws_close``), so compare those with :meth:`LangServer.wait_for`.

Tests start it through ``support.servers`` (``start_lang_server``, and the fixtures
``lang_server_process``, one process per module, and ``lang_server``, the same process with
its counts zeroed before each test).
"""

from __future__ import annotations

import json
import ssl
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .certs import CertFiles
from .ports import LOOPBACK, free_port
from .procs import REPO_ROOT, ManagedProcess, ProcessNotReady, python_env, running, wait_for_tcp

READY_TIMEOUT_S = 20.0
_HTTP_TIMEOUT_S = 10.0
# Between two polls: a poll interval, not a wait for readiness.
_POLL_INTERVAL_S = 0.02


class LangServer:
    """A running ``lang_server``: where to aim, and what it has counted so far."""

    def __init__(
        self, process: ManagedProcess, port: int, host: str = LOOPBACK, ca_file: Path | None = None
    ) -> None:
        self.process = process
        self.port = port
        self.host = host
        # HTTPS/wss: the CA that signed the server's certificate (None: plain HTTP/ws)
        self.ca_file = ca_file
        self._context = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:P`` (``https://`` with TLS), no trailing slash."""
        return f"{'https' if self.ca_file else 'http'}://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """``ws://127.0.0.1:P`` (``wss://``), no trailing slash: append ``/ws``, ..."""
        return f"{'wss' if self.ca_file else 'ws'}://{self.host}:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def counts(self) -> dict[str, Any]:
        """Everything counted since the start or the last :meth:`reset`."""
        with urllib.request.urlopen(
            self.url("/__counts"), timeout=_HTTP_TIMEOUT_S, context=self._context
        ) as reply:
            counts: dict[str, Any] = json.load(reply)
            return counts

    def reset(self) -> None:
        """Zero every count (maps become empty)."""
        request = urllib.request.Request(self.url("/__reset"), data=b"", method="POST")
        with urllib.request.urlopen(
            request, timeout=_HTTP_TIMEOUT_S, context=self._context
        ) as reply:
            reply.read()

    def wait_for(
        self, condition: Callable[[dict[str, Any]], bool], timeout_s: float = 5.0
    ) -> dict[str, Any]:
        """Poll :meth:`counts` until ``condition(counts)`` holds; return them.

        Raises ``AssertionError`` with the last counts when the deadline passes first.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            counts = self.counts()
            if condition(counts):
                return counts
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"counts did not reach the condition in {timeout_s}s: {counts}"
                )
            time.sleep(_POLL_INTERVAL_S)


def _wait_for_ready_line(process: ManagedProcess, port: int, deadline: float) -> None:
    expected = f"READY {port}"
    while True:
        process.check_running()
        try:
            lines = process.stdout_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            lines = []
        if expected in lines:
            return
        if time.monotonic() >= deadline:
            raise ProcessNotReady(f"no '{expected}' from lang_server\n{process.describe()}")
        time.sleep(_POLL_INTERVAL_S)


@contextmanager
def start_lang_server(
    log_dir: Path | None = None,
    *,
    ready_timeout_s: float = READY_TIMEOUT_S,
    tls: CertFiles | None = None,
) -> Iterator[LangServer]:
    """Run the server on a free loopback port, logs in ``log_dir`` (default: a temp dir);
    HTTPS and wss with ``tls`` (see ``support.certs.make_certs``)."""
    with tempfile.TemporaryDirectory(prefix="lang_server-") as scratch:
        directory = Path(scratch) if log_dir is None else Path(log_dir)
        port = free_port()
        process = ManagedProcess(
            "lang_server",
            [sys.executable, "-m", "tests.support.lang_server", "--port", str(port)]
            + (
                ["--tls-cert", str(tls.server_cert), "--tls-key", str(tls.server_key)]
                if tls
                else []
            ),
            directory,
            env=python_env(),
            cwd=REPO_ROOT,
        )

        def ready(proc: ManagedProcess) -> None:
            deadline = time.monotonic() + ready_timeout_s
            _wait_for_ready_line(proc, port, deadline)
            wait_for_tcp(LOOPBACK, port, max(deadline - time.monotonic(), 0.5), process=proc)

        with running(process, ready) as proc:
            yield LangServer(proc, port, ca_file=tls.ca_cert if tls else None)
