"""Start real processes for tests, wait until they are ready, and always stop them.

Theory of operation: :class:`ManagedProcess` starts a command in its own process group with
stdin closed and stdout/stderr going to files (``<name>.out`` / ``<name>.err`` in a log
directory), so nothing blocks on a full pipe and the logs survive for inspection.
Readiness is never a fixed sleep: :func:`wait_for_tcp` connects to the port and
:func:`wait_for_health` calls ``grpc.health.v1.Health/Check`` until it answers ``SERVING``,
both polling against a deadline and failing fast, with the process's log tail, when the
process exits first. :func:`running` ties it together as a context manager whose ``finally``
sends SIGTERM, waits, and SIGKILLs the whole group if the process does not go.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parents[2]

# Between two readiness attempts: a poll interval, not a wait for readiness.
_POLL_INTERVAL_S = 0.05


class ProcessNotReady(RuntimeError):
    """The process did not become ready before the deadline (or exited first)."""


class ManagedProcess:
    """A command started with its output in ``log_dir``; stop it with :meth:`stop`."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_dir: Path,
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        extra_logs: Sequence[Path] = (),
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_dir = Path(log_dir)
        self.stdout_path = self.log_dir / f"{name}.out"
        self.stderr_path = self.log_dir / f"{name}.err"
        self.env = env
        self.cwd = cwd
        self.extra_logs = [Path(p) for p in extra_logs]
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} was not started"
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def start(self) -> ManagedProcess:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            # The child keeps its own copies of the descriptors; ours close here.
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        return self

    def is_running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def check_running(self) -> None:
        """Raise :class:`ProcessNotReady` with the log tail if the process has exited."""
        if not self.is_running():
            raise ProcessNotReady(
                f"{self.name} exited with code {self.returncode}\n{self.describe()}"
            )

    def signal(self, signum: int) -> None:
        if self.is_running():
            os.kill(self.pid, signum)

    def wait(self, timeout_s: float) -> int:
        assert self.popen is not None
        return self.popen.wait(timeout=timeout_s)

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM, wait up to ``timeout_s``, then SIGKILL the process group. Idempotent."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            try:
                self.popen.send_signal(signal.SIGTERM)
                return self.popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                pass
        # Gone already or refusing to go: make sure no child of its group survives either
        # (nginx's worker, for one). The group is ours: start_new_session made it.
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return self.popen.wait(timeout=timeout_s)

    def log_tail(self, lines: int = 40) -> str:
        parts = []
        for path in (self.stdout_path, self.stderr_path, *self.extra_logs):
            try:
                text = path.read_text(errors="replace")
            except FileNotFoundError:
                continue
            tail = "\n".join(text.splitlines()[-lines:])
            parts.append(f"--- {path.name} (last {lines} lines) ---\n{tail}")
        return "\n".join(parts)

    def describe(self) -> str:
        return f"command: {' '.join(self.argv)}\n{self.log_tail()}"


def wait_for_tcp(
    host: str, port: int, timeout_s: float = 20.0, *, process: ManagedProcess | None = None
) -> None:
    """Poll until a TCP connection to ``host:port`` succeeds, within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last_error: OSError | None = None
    while True:
        if process is not None:
            process.check_running()
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f"\n{process.describe()}" if process is not None else ""
            raise ProcessNotReady(
                f"nothing accepted connections on {host}:{port} within {timeout_s}s "
                f"(last error: {last_error}){detail}"
            )
        time.sleep(_POLL_INTERVAL_S)


def wait_for_health(
    address: str,
    timeout_s: float = 20.0,
    *,
    service: str = "",
    process: ManagedProcess | None = None,
) -> None:
    """Poll ``grpc.health.v1.Health/Check`` on ``address`` until it answers SERVING."""
    deadline = time.monotonic() + timeout_s
    last: str = "no answer"
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if process is not None:
                process.check_running()
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                detail = f"\n{process.describe()}" if process is not None else ""
                raise ProcessNotReady(
                    f"health check on {address} not SERVING within {timeout_s}s "
                    f"(last: {last}){detail}"
                )
            try:
                # wait_for_ready: the attempt itself waits for the server to listen.
                reply = stub.Check(
                    health_pb2.HealthCheckRequest(service=service),
                    timeout=min(0.5, remaining_s),
                    wait_for_ready=True,
                )
            except grpc.RpcError as exc:
                last = f"{exc.code()}: {exc.details()}"
            else:
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            time.sleep(_POLL_INTERVAL_S)


@contextmanager
def running(
    process: ManagedProcess,
    ready: Callable[[ManagedProcess], None] | None = None,
    *,
    stop_timeout_s: float = 10.0,
) -> Iterator[ManagedProcess]:
    """Start ``process``, run ``ready(process)``, yield it, and always stop it."""
    process.start()
    try:
        if ready is not None:
            ready(process)
        yield process
    finally:
        process.stop(stop_timeout_s)


def python_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for our Python processes: unbuffered, the repo importable."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    paths = [str(REPO_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    if extra:
        env.update(extra)
    return env


def chaperon_command() -> list[str]:
    """argv prefix that runs the ``chaperon`` command line of this interpreter.

    The console script installed next to this interpreter by ``pip install -e .`` when it
    exists; otherwise the same entry point through ``python -c`` (the source tree is on
    PYTHONPATH via :func:`python_env`), so the tests also run in an un-installed checkout.
    """
    script = Path(sys.executable).parent / "chaperon"
    if script.exists():
        return [str(script)]
    return [
        sys.executable,
        "-c",
        "import sys; from chaperon.cli import main; sys.argv[0] = 'chaperon'; sys.exit(main())",
    ]


def run_chaperon(
    *args: str,
    cwd: Path | None = None,
    timeout_s: float = 60.0,
    env: dict[str, str] | None = None,
    text: bool = True,
) -> subprocess.CompletedProcess[Any]:
    """``chaperon ARGS`` to its end (stdin closed, output captured); ``env`` defaults to
    :func:`python_env`."""
    return subprocess.run(
        [*chaperon_command(), *args],
        cwd=cwd,
        env=python_env() if env is None else env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=text,
        timeout=timeout_s,
    )
