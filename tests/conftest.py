"""Test tiers, and the fixtures that start the tests' servers (registered once, here).

The directory a test lives in is its tier, and the tier is its marker:

- ``tests/unit``: the **pure** tier, no marker. No network at all, not even loopback: it
  passes inside ``unshare -rn``. Run it with ``pytest -m "not engine and not system"``.
- ``tests/engine``: marker ``engine``. Loopback sockets inside the test process: the engine,
  the codecs and the TLS layer against servers on threads (``support.servers``).
- ``tests/system``: marker ``system``. Other processes: nginx, the session-language target,
  ``chaperon`` masters and workers (``support.servers``, ``support.cluster``).

:func:`pytest_collection_modifyitems` adds each test's marker from its directory, and refuses
an ``engine``/``system`` marker written on a test of another directory (move the file
instead). A test that opens an IP socket in the pure tier fails at once, whatever the
machine's network (see :func:`_guard_ip_sockets`); ``support.servers`` refuses to
start a server process outside the system tier.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any

import pytest

_TESTS_DIR = Path(__file__).resolve().parent
if str(_TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(_TESTS_DIR))

# The servers the tests start, as fixtures: requested by name, started only when asked for.
from support import tiers  # noqa: E402
from support.servers import (  # noqa: E402, F401
    certs,
    lang_server,
    lang_server_process,
    nginx,
    spoiler,
    tls_server,
)


def _tier_of(path: Path) -> str | None:
    """The tier of a test file, from its directory under ``tests/`` (None for a stray file)."""
    try:
        top = path.resolve().relative_to(_TESTS_DIR).parts[0]
    except (ValueError, IndexError):
        return None
    return tiers.TIER_OF_DIRECTORY.get(top)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        tier = _tier_of(item.path)
        for marker in tiers.MARKERS:
            if marker != tier and item.get_closest_marker(marker) is not None:
                raise pytest.UsageError(
                    f"{item.nodeid} is marked {marker!r} but lives in the {tier} tier's "
                    f"directory: move it to tests/{tiers.DIRECTORY_OF_TIER[marker]}/"
                )
        if tier in tiers.MARKERS:
            item.add_marker(getattr(pytest.mark, tier))


_GUARDED = ("bind", "connect", "connect_ex", "sendto")
_ORIGINALS: dict[str, Any] = {name: getattr(socket.socket, name) for name in _GUARDED}


def _refuse_ip(name: str) -> Any:
    original = _ORIGINALS[name]

    def guarded(self: socket.socket, *args: Any, **kwargs: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise tiers.NetworkInPureTier(
                f"socket.{name} on an IP socket in the pure tier (tests/unit): a test that "
                "needs loopback belongs in tests/engine (in-process servers) or tests/system "
                "(server processes)"
            )
        return original(self, *args, **kwargs)

    return guarded


def _guard_ip_sockets(on: bool) -> None:
    """Make ``bind``/``connect``/``connect_ex``/``sendto`` on an IP socket raise (or not).

    On for the setup, call and teardown of every pure test (its fixtures of any scope
    included), so a socket test put in ``tests/unit`` by mistake fails on every machine, not
    only inside ``unshare -rn`` where loopback is down. Unix sockets (asyncio's self-pipe)
    stay allowed. Sockets opened in C (the engine, gRPC) are not seen here; ``unshare -rn``
    catches those.
    """
    for name in _GUARDED:
        setattr(socket.socket, name, _refuse_ip(name) if on else _ORIGINALS[name])


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Before any fixture of the test is set up: support.servers reads the tier to refuse a
    # server process outside the system tier.
    tiers.current = _tier_of(item.path)
    _guard_ip_sockets(tiers.current == tiers.PURE)


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    # After the test's fixtures are torn down (the runner's own teardown goes first).
    _guard_ip_sockets(False)
    tiers.current = None
