"""ServiceHealth: the flag a service's health check follows, fed by its background loops."""

from __future__ import annotations

import logging

from chaperon.core.health import ServiceHealth


def test_serving_until_a_component_fails_and_again_when_every_one_is_ok(caplog) -> None:
    state = ServiceHealth()
    heard: list[tuple[bool, str]] = []
    state.listen(lambda serving, reason: heard.append((serving, reason)))
    assert heard == [(True, "")] and state.serving
    with caplog.at_level(logging.ERROR, logger="chaperon.core.health"):
        state.fail("the run queue", "cannot read the queued runs: disk I/O error")
    assert not state.serving
    assert heard[-1] == (False, "the run queue: cannot read the queued runs: disk I/O error")
    assert "the run queue cannot go on: cannot read the queued runs" in caplog.text
    state.fail("the store writer", "disk full")
    assert heard[-1] == (
        False,
        "the run queue: cannot read the queued runs: disk I/O error; the store writer: disk full",
    )
    state.ok("the run queue")
    assert heard[-1] == (False, "the store writer: disk full")
    state.ok("the store writer")
    assert heard[-1] == (True, "") and state.serving


def test_a_repeated_failure_or_ok_is_not_a_change() -> None:
    state = ServiceHealth()
    heard: list[bool] = []
    state.listen(lambda serving, _reason: heard.append(serving))
    state.ok("a")
    state.fail("a", "x")
    state.fail("a", "x")
    state.ok("a")
    state.ok("a")
    assert heard == [True, False, True]


def test_a_broken_listener_does_not_break_the_loop_that_reports() -> None:
    state = ServiceHealth()

    def broken(_serving: bool, _reason: str) -> None:
        raise RuntimeError("listener bug")

    state.listen(broken)
    state.fail("a", "x")  # no exception reaches the reporting loop
    assert not state.serving
