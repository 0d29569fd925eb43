"""What the processes tell the operator, without -v: the pure parts.

A worker's schedule of "cannot reach the master" notices, the registry's and the run queue's
log lines, the CLI's log levels and its reading of ``--master``. The same behaviour through
real processes is in ``tests/system/test_cli_errors.py``.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from chaperon.cli import _log_level, build_parser
from chaperon.rpc.channels import with_default_port
from chaperon.v1 import results_pb2
from master_service.registry import WorkerRegistry
from master_service.run_queue import ended
from worker_service.server import RetryNotices

CLIENT_COMMANDS = {
    "submit": ["f.yaml"],
    "status": [],
    "workers": [],
    "watch": ["run-1"],
    "report": ["run-1"],
    "cancel": ["run-1"],
    "delete": ["run-1"],
}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_notices_come_after_a_second_of_failing_then_less_and_less_often() -> None:
    clock = Clock()
    notices = RetryNotices(clock=clock)
    told = []
    for _ in range(1600):  # a failure every 0.25 s for 400 s
        if notices.failed():
            told.append(clock.now - 1000.0)
        clock.now += 0.25
    assert told[:5] == [1.0, 6.0, 16.0, 36.0, 96.0]
    assert told[5:] == [156.0, 216.0, 276.0, 336.0, 396.0]  # then every minute
    assert notices.told == len(told)
    assert notices.failing_s == pytest.approx(400.0)


def test_a_first_failure_is_quiet_a_second_one_past_a_second_is_not() -> None:
    clock = Clock()
    notices = RetryNotices(clock=clock)
    assert not notices.failed()  # the master may be starting at the same moment
    clock.now += 1.5  # retries back off: the next failure comes later
    assert notices.failed()
    assert not notices.failed()


def _records(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records]


def test_the_registry_tells_of_joins_losses_returns_and_forgetting(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    registry = WorkerRegistry(heartbeat_interval_s=1.0, clock=clock, forget_after_s=60.0)
    with caplog.at_level(logging.INFO, logger="master_service.registry"):
        w1 = registry.register("127.0.0.1:40001", 4, worker_id="w1")
        w2 = registry.register("127.0.0.1:40002", 1, worker_id="w2")
        clock.now += 2.0
        registry.sweep()  # not lost yet: 3 intervals
        registry.heartbeat(w2, 0)
        clock.now += 2.9
        registry.sweep()
        registry.sweep()  # told once
        registry.heartbeat(w1, 0)
        registry.register("127.0.0.1:40002", 2)  # the same address: the same worker
        clock.now += 61.0
        registry.sweep()
    assert _records(caplog) == [
        ("INFO", "worker w1 joined from 127.0.0.1:40001 (4 threads)"),
        ("INFO", "worker w2 joined from 127.0.0.1:40002 (1 thread)"),
        ("WARNING", "worker w1 lost: no heartbeat for 5s"),
        ("INFO", "worker w1 is back (silent for 5s)"),
        ("INFO", "worker w2 joined again from 127.0.0.1:40002 (2 threads)"),
        ("INFO", "worker w1 forgotten: no heartbeat for 61s"),
        ("INFO", "worker w2 forgotten: no heartbeat for 61s"),
    ]
    assert registry.snapshot() == []


def _run(state: int, error: str = "", **counts: Any) -> results_pb2.LoadTestRun:
    run = results_pb2.LoadTestRun(id="run-abc", state=state, error=error)  # type: ignore[arg-type]
    run.started_at.FromNanoseconds(10**18)
    run.finished_at.FromNanoseconds(10**18 + 10_200_000_000)
    run.result.metrics.add(key="GET /", **counts)
    return run


def test_a_runs_end_is_told_with_its_figures(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="master_service.run_queue"):
        ended(_run(results_pb2.SUCCEEDED, count=12345))
        ended(_run(results_pb2.FAILED, "threshold GET / p99 failed", count=10, errors=10,
                   errors_by_kind={"http_5xx": 10}))  # fmt: skip
    assert _records(caplog) == [
        ("INFO", "run run-abc SUCCEEDED in 10.2s: 12345 requests, 0 errors"),
        ("WARNING", "run run-abc FAILED in 10.2s: 10 requests, 10 errors"
                    " (threshold GET / p99 failed)"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "level"),
    [
        (["master"], logging.INFO),
        (["worker", "--master", "h"], logging.INFO),
        (["-v", "master"], logging.DEBUG),
        (["status"], logging.WARNING),
        (["-v", "status"], logging.INFO),
        (["run", "f.yaml"], logging.WARNING),
    ],
)
def test_services_log_at_info_and_commands_at_warning(argv: list[str], level: int) -> None:
    args = build_parser().parse_args(argv)
    assert _log_level(args) == level


@pytest.mark.parametrize(
    ("given", "dialled"),
    [
        ("127.0.0.1", "127.0.0.1:50051"),
        ("localhost", "localhost:50051"),
        ("127.0.0.1:6000", "127.0.0.1:6000"),
        ("[::1]", "[::1]:50051"),
        ("::1", "[::1]:50051"),
        ("[::1]:6000", "[::1]:6000"),
        ("dns:///master.example:7000", "dns:///master.example:7000"),
        ("unix:/run/chaperon.sock", "unix:/run/chaperon.sock"),
    ],
)
def test_master_without_a_port_means_50051_for_every_client_command(
    given: str, dialled: str
) -> None:
    parser = build_parser()
    for command, rest in CLIENT_COMMANDS.items():
        assert parser.parse_args([command, *rest, "--master", given]).master == dialled
    assert parser.parse_args(["worker", "--master", given]).master == dialled
    assert with_default_port(given) == dialled


@pytest.mark.parametrize(
    ("given", "why"),
    [
        ("h:", "the port is missing (HOST alone means port 50051)"),
        ("h:x", "'x' is not a port (1 to 65535)"),
        ("h:70000", "'70000' is not a port (1 to 65535)"),
        (":50051", "the host is missing"),
        ("[h]", "[h] is not an IPv6 address"),
        ("a:b:c", "write HOST, HOST:PORT or [IPv6]:PORT"),
    ],
)
def test_a_bad_master_address_is_a_usage_error_saying_why(
    given: str, why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["status", "--master", given])
    assert info.value.code == 2
    assert why in capsys.readouterr().err


def test_the_help_of_each_client_command_names_port_50051(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CHAPERON_MASTER", raising=False)
    for command in [*CLIENT_COMMANDS, "worker"]:
        with pytest.raises(SystemExit):
            build_parser().parse_args([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "port 50051 when only HOST is given" in text, command
        if command != "worker":
            assert "default: 127.0.0.1:50051" in text, command
