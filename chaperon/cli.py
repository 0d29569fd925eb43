"""The ``chaperon`` command line.

``run`` and ``demo`` start a master and a worker inside this process on loopback (the
embedded default), run one load test through the real gRPC API and print the report.
``run`` takes a load-test file, or a URL and a few options as hey and wrk do (``chaperon run
http://127.0.0.1:8080/ -c 50 -d 10s``): the one-liner builds a one-step load test.
``master`` and ``worker`` start the long-running services; ``submit``, ``status``,
``workers``, ``cancel`` and ``delete`` talk to a running master.

Exit status (``EXIT_STATUS``, shown by ``--help``): 0 the run passed; 1 it did not (a state
other than SUCCEEDED, or more errors than ``--max-error-rate`` allows: by default any);
2 bad usage or input, printed as one line on stderr; 130 interrupted; 141 the reader of the
output went away.

``run`` and ``submit --wait`` wait for the run with ``chaperon.interrupt``: the first Ctrl-C
cancels the run and the command still prints the report and writes the outputs (then exits
130); a second quits at once. ``run``'s outputs are checked before any load is sent, and
written after the report is printed (``chaperon.outputs``: a write that fails saves the run).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from urllib.parse import unquote, urlsplit

import grpc
from google.protobuf import json_format

from chaperon import outputs
from chaperon._version import __version__
from chaperon.client import Client
from chaperon.core.durations import DurationError, parse_duration_ns
from chaperon.core.files import LoadedFile, read_load_test
from chaperon.core.loadtest import HTTP_METHODS, LoadTestFileError, load_test_from_dict
from chaperon.core.text import PrintableFormatter, json_printable, printable, printable_lines
from chaperon.exporters import FORMATS, export
from chaperon.interrupt import GracefulInterrupt, run_to_end
from chaperon.outputs import Output, OutputError
from chaperon.report import error_rate_line, format_report
from chaperon.rpc.channels import DEFAULT_MASTER_PORT, TlsConfigError, with_default_port
from chaperon.rpc.status import field_violations
from chaperon.v1 import loadtest_pb2, results_pb2

EXIT_FAILED_RUN = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # chaperon.interrupt.EXIT_INTERRUPTED
# Killed by SIGPIPE, as a shell reports it (128 + 13): the reader of our output went away.
EXIT_BROKEN_PIPE = 141

EXIT_STATUS = """\
exit status:
  0    the run passed: SUCCEEDED, with no more errors than --max-error-rate allows
  1    the run failed: FAILED (a threshold, every request failed or none was sent, the
       timeout, every worker lost), CANCELLED or INTERRUPTED, or its error rate is above
       --max-error-rate (default 0: any error); the report says why
  2    bad usage or input: an unknown option, a file or load test that cannot run, a
       master that cannot be reached (one line on stderr says what to fix)
  130  interrupted (Ctrl-C): `run` and `submit --wait` cancel the run at the first
       Ctrl-C and still print the report and write the outputs; a second quits at once
  141  the output pipe was closed (e.g. `chaperon status | head`)
"""

# The one-liner's defaults (`chaperon run URL`).
URL_CONCURRENCY = 10
URL_DURATION = "10s"


class CliError(Exception):
    """A problem the user can fix; printed as one line."""


def _fail(message: str) -> int:
    # Messages quote the master's and the user's text: no control character gets through.
    print(f"chaperon: {printable_lines(message)}", file=sys.stderr)
    return EXIT_USAGE


def _fail_lines(lines: list[str]) -> int:
    """One problem a line, each as ``_fail`` writes it."""
    for line in lines:
        _fail(line)
    return EXIT_USAGE


NO_MASTER_HINT = "start one with: chaperon master, or use chaperon run FILE for a local run"
# What gRPC says when nothing listens at the address: then that is all there is to say (not
# so for a name that does not resolve, or a TLS handshake that failed: gRPC's words follow).
_REFUSED = ("Connection refused",)


def _rpc_message(exc: grpc.RpcError, master: str | None = None) -> str:
    """One line for a failed call; ``master`` (the address dialled) turns UNAVAILABLE into
    "no master answers at ..." with how to start one, and gRPC's reason when it is more than
    a refused connection (a name that does not resolve, a TLS handshake)."""
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    if code == grpc.StatusCode.UNAVAILABLE and master is not None:
        message = f"no master answers at {master} ({NO_MASTER_HINT})"
        if details and not any(text in details for text in _REFUSED):
            message += f"\n  gRPC said: {details}"
        return message
    violations = field_violations(exc) if code == grpc.StatusCode.INVALID_ARGUMENT else []
    if violations:
        details = "; ".join(f"{f}: {d}" for f, d in violations)
    name = code.name if code is not None else "ERROR"
    return f"{name}: {details}"


def _refusal_lines(exc: grpc.RpcError, loaded: LoadedFile, source: str) -> list[str] | None:
    """The master's INVALID_ARGUMENT about a load test from a file, a line per bad field
    with its line in the file (``smoke.yaml: line 3: config.x: ...``); None for anything
    else."""
    if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:  # type: ignore[attr-defined]
        return None
    violations = field_violations(exc)
    if not violations:
        return None
    found = []
    for field, description in violations:
        line = loaded.positions.line_of_field(field) if loaded.positions is not None else None
        where = f"line {line}: " if line else ""
        found.append((line or sys.maxsize, f"{source}: {where}{field}: {description}"))
    return [text for _, text in sorted(found, key=lambda item: item[0])]  # in file order


def _master_address(text: str) -> str:
    """--master: HOST[:PORT] (port 50051 when not given), or a gRPC target with a scheme."""
    try:
        return with_default_port(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


@contextlib.contextmanager
def _embedded(threads: int, db_path: str | None = None) -> Iterator[str]:
    """The embedded master + worker (loaded only by the commands that start them)."""
    from chaperon.embedded import EmbeddedClusterError, embedded_cluster

    try:
        with embedded_cluster(threads, db_path) as address:
            yield address
    except EmbeddedClusterError as exc:
        raise CliError(str(exc)) from None


def _print_run(
    run: results_pb2.LoadTestRun, as_json: bool, max_error_rate: float | None = None
) -> int:
    """Print the run (the report, or JSON); its exit status: 0 passed, 1 failed.

    With ``max_error_rate`` (``run``, ``submit --wait``), a SUCCEEDED run whose error rate is
    above it fails too; the report says so (with ``--json``, one line on stderr)."""
    if as_json:
        print(json_printable(json_format.MessageToJson(run)))
    else:
        print(format_report(run, max_error_rate=max_error_rate))
    if run.state != results_pb2.SUCCEEDED:
        return EXIT_FAILED_RUN
    if max_error_rate is not None:
        why = error_rate_line(run, max_error_rate)
        if why:
            if as_json:
                print(f"chaperon: {why}", file=sys.stderr)
            return EXIT_FAILED_RUN
    return 0


def _format_of(path: str | None) -> str:
    """The format an output path's extension names (``x.json``, ``x.html``), else CSV."""
    suffix = os.path.splitext(path or "")[1].lower().lstrip(".")
    return suffix if suffix in FORMATS else "csv"


def _export(
    run: results_pb2.LoadTestRun, fmt: str, path: str | None, overwrite: bool = False
) -> None:
    """Write the run with an exporter; a refusal is a CliError (one line)."""
    try:
        written = export(run, fmt, path, overwrite=overwrite)
    except FileExistsError as exc:
        raise CliError(f"{exc.filename} exists; pass --force to overwrite it") from None
    except (ValueError, OSError) as exc:
        raise CliError(str(exc)) from None
    for item in written:
        print(f"wrote {printable(str(item))}", file=sys.stderr)


_URL_OPTIONS = (
    ("concurrency", "-c"),
    ("duration", "-d"),
    ("rate", "--rate"),
    ("method", "-m"),
    ("header", "-H"),
    ("body", "--body"),
)


def _is_url(target: str) -> bool:
    return "://" in target


def _url_load_test(args: argparse.Namespace) -> loadtest_pb2.LoadTest:
    """The one-liner's load test: one request to ``args.target``, as -c/-d/--rate say."""
    from chaperon.builder import LoadTest, Scenario

    url = urlsplit(args.target)
    scheme = url.scheme.lower()
    if scheme not in ("http", "https"):
        raise CliError(f"{args.target}: only http:// and https:// URLs can be run")
    try:
        port = url.port
    except ValueError as exc:
        raise CliError(f"{args.target}: {exc}") from None
    if not url.hostname:
        raise CliError(f"{args.target}: the URL has no host")
    host = f"[{url.hostname}]" if ":" in url.hostname else url.hostname
    netloc = host if port is None else f"{host}:{port}"
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    method = (args.method or "GET").upper()
    if method not in HTTP_METHODS:
        raise CliError(
            f"-m {args.method}: not an HTTP method (use one of {', '.join(HTTP_METHODS)})"
        )
    headers: dict[str, str] = {}
    for item in args.header or ():
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise CliError(f"-H {item!r}: write a header as 'Name: value'")
        headers[name.strip()] = value.strip()
    duration = args.duration or URL_DURATION
    try:
        if parse_duration_ns(duration) <= 0:
            raise CliError(f"-d {duration}: the duration must be more than 0")
    except DurationError as exc:
        raise CliError(f"-d {duration}: {exc}") from None
    if args.concurrency is not None and args.concurrency < 1:
        raise CliError(f"-c {args.concurrency}: at least one session is needed")
    auth = None
    if url.username is not None:
        auth = (unquote(url.username), unquote(url.password or ""))
    scenario = Scenario("url").request(
        method, path, headers=headers or None, body=args.body, auth=auth
    )
    load_test = LoadTest(netloc, base_url=f"{scheme}://{netloc}")
    if args.rate is not None:
        if not args.rate > 0:
            raise CliError(f"--rate {args.rate:g}: the arrival rate must be more than 0")
        # -c caps the sessions in flight (max_sessions); by default the load test's own cap.
        load_test = load_test.add(
            scenario, arrival_rate=args.rate, duration=duration, max_sessions=args.concurrency
        )
    else:
        load_test = load_test.add(
            scenario, concurrency=args.concurrency or URL_CONCURRENCY, duration=duration
        )
    try:
        return load_test.to_proto()
    except ValueError as exc:
        raise CliError(f"{args.target}: {exc}") from None


def _run_outputs(args: argparse.Namespace) -> list[Output]:
    """The outputs ``run`` was asked for, each checked now, before any load is sent: a
    refusal is a CliError (one line, exit 2)."""
    if not (args.output or args.format):
        return []
    output = Output(args.format or _format_of(args.output), args.output, args.force)
    try:
        outputs.check(output)
    except OutputError as exc:
        raise CliError(str(exc)) from None
    return [output]


def _finish_run(
    run: results_pb2.LoadTestRun,
    args: argparse.Namespace,
    wanted: list[Output],
    interrupted: bool,
) -> int:
    """Print the run, then write its outputs (even if stdout went away); the exit status.

    130 when interrupted; else the run's own status, or 2 when a passed run's output could
    not be written (the run is then saved as JSON where the message says)."""
    try:
        code = _print_run(run, args.json, args.max_error_rate)
        sys.stdout.flush()
    finally:
        written, problems = outputs.write(run, wanted)
        for path in written:
            print(f"wrote {path}", file=sys.stderr)
        for problem in problems:
            _fail(problem)
    if interrupted:
        return EXIT_INTERRUPTED
    return code or (EXIT_USAGE if problems else 0)


def cmd_run(args: argparse.Namespace) -> int:
    if args.threads is not None and args.threads < 1:
        return _fail("--threads must be >= 1")
    loaded: LoadedFile | None = None
    if _is_url(args.target):
        load_test = _url_load_test(args)
    else:
        given = [flag for name, flag in _URL_OPTIONS if getattr(args, name) is not None]
        if given:
            return _fail(
                f"{'/'.join(given)}: only with a URL (`chaperon run URL {given[0]} ...`); "
                "a load-test file says all this itself"
            )
        try:
            loaded = read_load_test(args.target)
        except LoadTestFileError as exc:
            return _fail_lines(exc.problems)
        load_test = loaded.load_test
        # python steps ("module:function") are imported by the embedded worker: modules beside
        # the load-test file are found, as they would be by `python` run in that directory.
        folder = os.path.dirname(os.path.abspath(args.target))
        if folder not in sys.path:
            sys.path.insert(0, folder)
    wanted = _run_outputs(args)
    # The interrupt is outermost: a second Ctrl-C quits at once, even while the embedded
    # master and worker stop.
    with (
        GracefulInterrupt() as interrupt,
        _embedded(args.threads or 0, args.db) as address,
        Client(address) as client,
    ):
        try:
            run = _run_with_progress(
                client, load_test, args, interrupt, [_output_name(o) for o in wanted]
            )
        except grpc.RpcError as exc:
            lines = _refusal_lines(exc, loaded, args.target) if loaded is not None else None
            return _fail_lines(lines) if lines else _fail(f"{args.target}: {_rpc_message(exc)}")
        return _finish_run(run, args, wanted, interrupt.requested.is_set())


DEMO_SECONDS = 3


def _output_name(output: Output) -> str:
    """An output as the run header names it."""
    return output.path or f"{output.fmt} (default path under results/)"


def _run_with_progress(
    client: Client,
    load_test: loadtest_pb2.LoadTest,
    args: argparse.Namespace,
    interrupt: GracefulInterrupt,
    outputs: Sequence[str],
) -> results_pb2.LoadTestRun:
    """Submit the load test and wait for its end (``run_to_end``: a first Ctrl-C cancels it),
    showing the header and the live progress on stderr (on a terminal, or with --progress;
    see chaperon.progress)."""
    from chaperon.progress import ProgressDisplay, display_mode, format_header, workers_text

    display = ProgressDisplay(sys.stderr, display_mode(sys.stderr, args.progress))
    if display.mode != "quiet":
        try:
            workers = workers_text(client.workers())
        except grpc.RpcError:  # e.g. a token that may submit but not list: the run says more
            workers = ""
        print(format_header(load_test, workers, outputs), file=sys.stderr, flush=True)
    return run_to_end(client, load_test, interrupt, display.follow)


def cmd_demo(args: argparse.Namespace) -> int:
    """Start a local target, run a short built-in load test against it, print the report."""
    target = subprocess.Popen(
        [sys.executable, "-m", "chaperon._target", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert target.stdout is not None
        line = target.stdout.readline().strip()
        if not line.startswith("listening on "):
            return _fail("the demo target did not start")
        base_url = "http://" + line[len("listening on ") :]
        load_test = load_test_from_dict(
            {
                "name": "demo",
                "config": {"base_url": base_url},
                "scenarios": [
                    {
                        "concurrency": args.concurrency,
                        "duration": f"{args.seconds}s",
                        "scenario": {
                            "name": "root",
                            "run": [{"http": {"method": "GET", "path": "/"}}],
                        },
                    }
                ],
            }
        )
        if not args.json:
            print(
                f"chaperon demo: {args.concurrency} sessions for {args.seconds}s "
                f"against a local target at {base_url}",
                flush=True,
            )
        with _embedded(args.threads or 0) as address, Client(address) as client:
            run = client.run(load_test)
        return _print_run(run, args.json)
    finally:
        target.terminate()
        try:
            target.wait(5)
        except subprocess.TimeoutExpired:
            target.kill()


def _stop_on_signals(received: list[str] | None = None) -> threading.Event:
    """An event set by SIGTERM/SIGINT; installed before serving, so no signal is missed.
    The names of the signals that came are appended to ``received``."""
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        if received is not None:
            received.append(signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)
    return stop


def _wait(stop: threading.Event) -> None:
    while not stop.wait(3600):
        pass


def cmd_master(args: argparse.Namespace) -> int:
    from master_service.server import start_master

    stop = _stop_on_signals()
    try:
        server = start_master(
            args.host,
            args.port,
            args.db,
            worker_wait_s=args.worker_wait,
            token=args.token or None,
            cluster_token=args.cluster_token or None,
            allow_targets=args.allow_target,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            tls_ca=args.tls_ca,
            keep_runs=args.keep_runs,
            keep_days=args.keep_days,
        )
    except (OSError, ValueError) as exc:
        return _fail(str(exc))
    details = [
        f"db: {args.db}",
        "targets: " + ", ".join(server.scheduler.allowed_targets),
        server.scheduler.retention.describe(),
    ]
    if args.token:
        details.append("token required")
    if args.tls_cert:
        details.append("TLS")
    print(
        f"chaperon master {__version__} listening on {server.address} ({'; '.join(details)})",
        file=sys.stderr,
        flush=True,
    )
    _wait(stop)
    server.stop()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from worker_service.server import start_worker

    received: list[str] = []
    stop = _stop_on_signals(received)
    try:
        server = start_worker(
            args.master,
            args.host,
            args.port,
            args.threads or 0,
            args.advertise,
            token=args.token or None,
            allow_targets=args.allow_target,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            tls_ca=args.tls_ca,
            allow_python=args.allow_python_steps,
        )
    except (OSError, ValueError) as exc:
        return _fail(str(exc))
    print(
        f"chaperon worker {__version__} listening on {server.address}, "
        f"{server.state.threads} engine threads, master {args.master}",
        file=sys.stderr,
        flush=True,
    )
    _wait(stop)
    # An assignment in flight ends now; its last report tells the master this worker stopped
    # (and why) and what it did not run. Bounded: the process exits within a few seconds.
    server.stop(reason=received[0] if received else "the worker stopped")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    try:
        loaded = read_load_test(args.file)
    except LoadTestFileError as exc:
        return _fail_lines(exc.problems)
    with GracefulInterrupt() as interrupt, Client(args.master, args.token, args.tls_ca) as client:
        try:
            if args.wait:
                run = _run_with_progress(client, loaded.load_test, args, interrupt, ())
                code = _print_run(run, args.json, args.max_error_rate)
                return EXIT_INTERRUPTED if interrupt.requested.is_set() else code
            run = client.submit(loaded.load_test)
        except grpc.RpcError as exc:
            lines = _refusal_lines(exc, loaded, args.file)
            if lines is None:
                raise  # main() says it
            return _fail_lines(lines)
    if args.json:
        print(json_printable(json_format.MessageToJson(run)))
    else:
        print(f"{printable(run.id)} {results_pb2.RunState.Name(run.state)}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with Client(args.master, args.token, args.tls_ca) as client:
        if args.id:
            return _print_run(client.get(args.id), args.json)
        for run in client.runs():
            state = results_pb2.RunState.Name(run.state)
            print(f"{printable(run.id)}  {state:<11}  {printable(run.load_test.name)}")
    return 0


def cmd_workers(args: argparse.Namespace) -> int:
    from chaperon.v1 import worker_pb2

    with Client(args.master, args.token, args.tls_ca) as client:
        for w in client.workers():
            state = worker_pb2.WorkerState.Name(w.state).removeprefix("WORKER_")
            flags = (" ignored" if w.ignored else "") + ("" if w.healthy else " UNHEALTHY")
            run = (
                f" run={printable(w.current_run_id)} sessions={w.sessions_active}"
                if w.current_run_id
                else ""
            )
            print(
                f"{printable(w.worker_id)}  {printable(w.address)}  {state}  "
                f"capacity={w.capacity}  load={w.load_1m:.2f}{run}{flags}"
            )
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    from rich.console import Console

    from chaperon.progress import ProgressDisplay, display_mode
    from chaperon.report import format_report
    from chaperon.watch import watch

    with Client(args.master, args.token, args.tls_ca) as client:
        try:
            if display_mode(sys.stderr, False) == "live":
                # On a terminal: the live line on stderr, then the report (as `run` shows).
                run = ProgressDisplay(sys.stderr, "live").follow(client.watch(args.id))
                if run is not None:
                    print(format_report(run))
            else:  # a log: a plain line per message on stdout, then the report
                run = watch(client.watch(args.id), Console())
        except KeyboardInterrupt:
            # Only the watching stops: the run is the master's and goes on.
            run_id = printable(args.id)
            _fail(f"stopped watching; run {run_id} goes on (chaperon cancel {run_id} stops it)")
            return EXIT_INTERRUPTED
    if run is None:
        return _fail(f"the progress stream of {args.id} ended without the final run")
    return 0 if run.state == results_pb2.SUCCEEDED else EXIT_FAILED_RUN


def cmd_report(args: argparse.Namespace) -> int:
    with Client(args.master, args.token, args.tls_ca) as client:
        run = client.get(args.id)
    _export(run, args.format, args.output, args.force)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    with Client(args.master, args.token, args.tls_ca) as client:
        run = client.cancel(args.id)
    print(f"{printable(run.id)} {results_pb2.RunState.Name(run.state)}")
    return 0


# Codes that concern one id: the others (no master, no token ...) would fail every id alike.
_PER_RUN_CODES = (
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.INVALID_ARGUMENT,
)


def cmd_delete(args: argparse.Namespace) -> int:
    """Delete each finished run; a line per run. Exit 0 when every one was deleted, else 2
    (after trying the others, unless the master itself failed)."""
    failed = 0
    with Client(args.master, args.token, args.tls_ca) as client:
        for run_id in args.ids:
            try:
                deleted = client.delete_run(run_id)
            except grpc.RpcError as exc:
                if exc.code() not in _PER_RUN_CODES:
                    raise
                _fail(f"{run_id}: {_rpc_message(exc)}")
                failed += 1
                continue
            state = results_pb2.RunState.Name(deleted.state)
            print(f"{printable(deleted.id)} deleted (was {state})")
    return EXIT_USAGE if failed else 0


def _token_arg(p: argparse.ArgumentParser, help_text: str) -> None:
    p.add_argument("--token", default=os.environ.get("CHAPERON_TOKEN", ""), help=help_text)


def _allow_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allow-target",
        action="append",
        metavar="HOST_OR_CIDR",
        help="a host, IP or CIDR load may be sent to (repeatable; replaces the default, "
        "loopback only)",
    )


def _tls_args(p: argparse.ArgumentParser, serve: bool, ca_help: str) -> None:
    if serve:
        p.add_argument("--tls-cert", help="PEM certificate: serve TLS")
        p.add_argument("--tls-key", help="PEM private key of --tls-cert")
    p.add_argument("--tls-ca", help=f"PEM file: {ca_help}")


def _error_rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a fraction from 0 to 1 (0.01 allows 1% of requests to fail)"
        )
    return value


def _max_error_rate_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-error-rate",
        type=_error_rate,
        default=0.0,
        metavar="FRACTION",
        help="exit 1 when more than this fraction of the requests failed, even if the run "
        "SUCCEEDED (default 0: any error; 1: errors alone never fail the run)",
    )


def _progress_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--progress",
        action="store_true",
        help="when stderr is not a terminal, still say what will run and print a progress "
        "line every few seconds (on a terminal the line is live anyway)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chaperon",
        description="Distributed HTTP load testing (master, workers, engine).",
        epilog=EXIT_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"chaperon {__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log more to stderr (master and worker log at INFO, other commands only "
        "warnings; -v: DEBUG and INFO)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "run",
        help="run a load test file, or a URL, on an embedded master and worker",
        description="Run a load test on a master and a worker started in this process\n"
        "(loopback only). TARGET is a load-test file (.json, .yaml/.yml, .py), or an\n"
        "http(s) URL: then -c, -d, --rate, -m, -H and --body describe the load, as hey\n"
        f"and wrk do (default: -c {URL_CONCURRENCY} -d {URL_DURATION}, GET).",
        epilog=EXIT_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("target", metavar="TARGET", help="a load-test file, or an http(s):// URL")
    url = p.add_argument_group("with a URL (the one-liner)")
    url.add_argument(
        "-c",
        "--concurrency",
        type=int,
        metavar="N",
        help=f"sessions sending requests one after the other (default {URL_CONCURRENCY}); "
        "with --rate, the most sessions in flight",
    )
    url.add_argument(
        "-d", "--duration", metavar="DURATION", help=f"how long (default {URL_DURATION})"
    )
    url.add_argument(
        "--rate",
        type=float,
        metavar="R",
        help="open model: R new sessions (one request each) per second, whatever the "
        "server's speed; latencies corrected for coordinated omission",
    )
    url.add_argument("-m", "--method", help="HTTP method (default GET)")
    url.add_argument(
        "-H",
        "--header",
        action="append",
        metavar="'NAME: VALUE'",
        help="a request header (repeatable)",
    )
    url.add_argument("--body", help="the request body, as given")
    p.add_argument("--json", action="store_true", help="print the run as proto3 JSON only")
    p.add_argument("--threads", type=int, help="engine threads (default: number of cores)")
    p.add_argument("--db", help="SQLite file for the embedded master (default: temporary)")
    p.add_argument(
        "--output",
        help="also write the result here, and only here (default path with --format); "
        "checked before the run starts",
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        help="exporter: csv, json or html (default: the --output file's extension, else csv); "
        "the default path is results/<date>/<load test>/<tag>-<timestamp>.<ext>",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="overwrite --output if it exists (without it, an existing file is refused "
        "before the run starts)",
    )
    _max_error_rate_arg(p)
    _progress_arg(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="run a built-in load test against a local target")
    p.add_argument("--seconds", type=int, default=DEMO_SECONDS)
    p.add_argument("--concurrency", type=int, default=20)
    p.add_argument("--threads", type=int)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("master", help="start a master")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=50051)
    p.add_argument("--db", default="chaperon.db", help="SQLite file (default: ./chaperon.db)")
    p.add_argument(
        "--worker-wait",
        type=float,
        default=30.0,
        help="seconds a run waits for a worker before it fails",
    )
    _token_arg(p, "bearer token required from clients (or CHAPERON_TOKEN)")
    p.add_argument(
        "--cluster-token",
        default=os.environ.get("CHAPERON_CLUSTER_TOKEN", ""),
        help="token workers join with (or CHAPERON_CLUSTER_TOKEN; default: --token)",
    )
    _allow_arg(p)
    p.add_argument(
        "--keep-runs",
        type=int,
        metavar="N",
        help="delete finished runs beyond the newest N (default: keep every run)",
    )
    p.add_argument(
        "--keep-days",
        type=float,
        metavar="D",
        help="delete runs that finished more than D days ago; fractions allowed "
        "(default: keep runs of any age)",
    )
    _tls_args(p, serve=True, ca_help="CA that signed the workers' certificates")
    p.set_defaults(func=cmd_master)

    p = sub.add_parser("worker", help="start a worker that joins a master")
    p.add_argument(
        "--master",
        required=True,
        type=_master_address,
        metavar="HOST[:PORT]",
        help=f"the master to join (port {DEFAULT_MASTER_PORT} when only HOST is given)",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--threads", type=int, help="engine threads (default: number of cores)")
    p.add_argument("--advertise", default="", help="HOST:PORT the master should dial")
    _token_arg(p, "cluster token: sent to the master, required from it (or CHAPERON_TOKEN)")
    _allow_arg(p)
    p.add_argument(
        "--allow-python-steps",
        action="store_true",
        help="run load tests' python steps (user code imported on this worker)",
    )
    _tls_args(p, serve=True, ca_help="CA that signed the master's certificate")
    p.set_defaults(func=cmd_worker)

    def client_cmd(name: str, help_text: str) -> argparse.ArgumentParser:
        q = sub.add_parser(name, help=help_text)
        q.add_argument(
            "--master",
            type=_master_address,
            default=os.environ.get("CHAPERON_MASTER", f"127.0.0.1:{DEFAULT_MASTER_PORT}"),
            metavar="HOST[:PORT]",
            help="the master (default: %(default)s, or $CHAPERON_MASTER; "
            f"port {DEFAULT_MASTER_PORT} when only HOST is given)",
        )
        q.add_argument("--token", default=None, help="bearer token (or CHAPERON_TOKEN)")
        _tls_args(q, serve=False, ca_help="CA that signed the master's certificate (turns TLS on)")
        return q

    p = client_cmd("submit", "queue a load test on a master")
    p.add_argument("file")
    p.add_argument("--wait", action="store_true", help="wait for the end and print the report")
    p.add_argument("--json", action="store_true")
    _max_error_rate_arg(p)
    _progress_arg(p)
    p.set_defaults(func=cmd_submit)

    p = client_cmd("status", "list runs, or show one")
    p.add_argument("id", nargs="?")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = client_cmd("workers", "list the workers")
    p.set_defaults(func=cmd_workers)

    p = client_cmd("watch", "show a run's live progress until it ends")
    p.add_argument("id")
    p.set_defaults(func=cmd_watch)

    p = client_cmd("report", "write a finished run's result with an exporter")
    p.add_argument("id")
    p.add_argument("--format", choices=FORMATS, default="csv", help="csv, json or html")
    p.add_argument(
        "--output", help="file to write (default: results/<date>/<load test>/<tag>-<ts>.<ext>)"
    )
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(func=cmd_report)

    p = client_cmd("cancel", "cancel a running or scheduled run")
    p.add_argument("id")
    p.set_defaults(func=cmd_cancel)

    p = client_cmd("delete", "delete finished runs and everything stored for them")
    p.add_argument("ids", nargs="+", metavar="ID")
    p.set_defaults(func=cmd_delete)
    return parser


# The long-running services say what happens to them (workers joining and lost, runs
# starting and ending) at INFO; a command that does one thing says only what went wrong.
SERVICE_COMMANDS = ("master", "worker")


def _log_level(args: argparse.Namespace) -> int:
    """INFO for ``master`` and ``worker``, WARNING for the rest; -v: one step more."""
    service = args.command in SERVICE_COMMANDS
    if args.verbose:
        return logging.DEBUG if service else logging.INFO
    return logging.INFO if service else logging.WARNING


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log = logging.StreamHandler()  # logs quote workers' and users' text: escaped
    log.setFormatter(PrintableFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=_log_level(args), handlers=[log])
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # here, so that a closed pipe is seen below and not at exit
        return code
    except BrokenPipeError:
        # The reader went away (`chaperon status | head`): stop quietly, as a shell tool does.
        # stdout goes to /dev/null so that the interpreter's own flush at exit is silent.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except (CliError, TlsConfigError) as exc:
        return _fail(str(exc))
    except grpc.RpcError as exc:
        return _fail(_rpc_message(exc, getattr(args, "master", None)))
    except KeyboardInterrupt:
        print("chaperon: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
