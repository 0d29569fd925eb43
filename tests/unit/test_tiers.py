"""The test tiers themselves (``tests/conftest.py``, ``support.tiers``).

The pure tier (``tests/unit``, ``-m "not engine and not system"``) runs with no network at all,
has at least 300 tests, and its test files start no server; a mis-tiered test fails loudly
here, not only inside ``unshare -rn``.
"""

from __future__ import annotations

import ast
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from support import tiers
from support.procs import REPO_ROOT, python_env
from support.servers import start_lang_server, start_nginx

TESTS = REPO_ROOT / "tests"
PURE_DIR = TESTS / tiers.DIRECTORY_OF_TIER[tiers.PURE]
MIN_PURE_TESTS = 300
# Modules that start servers or processes: a pure test imports none of them.
SERVER_MODULES = {
    "aiohttp",
    "support.cluster",
    "support.lang_fixture",
    "support.nginx",
    "support.servers",
    "support.threaded_servers",
    "support.tls_client",
}


def _pure_test_files() -> list[Path]:
    return sorted(PURE_DIR.glob("test_*.py"))


def _collected_pure_tests(request: pytest.FixtureRequest) -> int:
    """How many tests the pure tier has: from this session when it collected the whole tier
    unfiltered (``pytest``, ``pytest -m "not engine and not system"``), else from a
    ``--collect-only`` run."""
    session, option = request.session, request.config.option
    pure = [item for item in session.items if tiers.PURE == _tier(item.path)]
    files = {item.path for item in pure}
    if not option.keyword and set(_pure_test_files()) <= files:
        return len(pure)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
        + ["-m", tiers.PURE_SELECTION, str(PURE_DIR)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
        env=python_env(),
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    found = re.search(r"(\d+)(?:/\d+)? tests? collected", done.stdout)
    assert found, done.stdout[-2000:]
    return int(found.group(1))


def _tier(path: Path) -> str | None:
    try:
        return tiers.TIER_OF_DIRECTORY.get(path.resolve().relative_to(TESTS).parts[0])
    except ValueError:
        return None


def test_the_pure_tier_has_at_least_300_tests(request: pytest.FixtureRequest) -> None:
    assert _collected_pure_tests(request) >= MIN_PURE_TESTS


@pytest.mark.parametrize(
    "path", [p for p in _pure_test_files() if p.name != Path(__file__).name], ids=lambda p: p.name
)
def test_pure_test_files_import_nothing_that_starts_servers(path: Path) -> None:
    imported: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    assert not imported & SERVER_MODULES, (
        f"{path.name} imports {sorted(imported & SERVER_MODULES)}: a test that starts a server "
        "belongs in tests/engine (threads in the test process) or tests/system (processes)"
    )


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_an_ip_socket_fails_loudly_in_the_pure_tier(family: socket.AddressFamily) -> None:
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        for call in (
            lambda: sock.bind((host, 0)),
            lambda: sock.connect((host, 9)),
            lambda: sock.connect_ex((host, 9)),
        ):
            with pytest.raises(tiers.NetworkInPureTier, match="belongs in tests/engine"):
                call()
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        with pytest.raises(tiers.NetworkInPureTier):
            sock.sendto(b"x", (host, 9))


def test_unix_sockets_stay_allowed() -> None:
    left, right = socket.socketpair()
    with left, right:
        left.sendall(b"ping")
        assert right.recv(4) == b"ping"


def test_server_processes_are_refused_outside_the_system_tier(tmp_path: Path) -> None:
    assert tiers.current == tiers.PURE
    with pytest.raises(tiers.ProcessOutsideSystemTier, match="belongs in tests/system"):
        with start_nginx(tmp_path / "nginx"):
            pass
    with pytest.raises(tiers.ProcessOutsideSystemTier, match="belongs in tests/system"):
        with start_lang_server(tmp_path):
            pass


def test_the_markers_are_the_tiers(pytestconfig: pytest.Config) -> None:
    registered = {line.split(":", 1)[0] for line in pytestconfig.getini("markers")}
    assert set(tiers.MARKERS) <= registered
    assert "integration" not in registered  # retired: the system tier is what it marked
    assert "--strict-markers" in pytestconfig.getini("addopts")
    assert set(tiers.TIER_OF_DIRECTORY) == {
        p.name for p in TESTS.iterdir() if p.is_dir() and p.name not in ("support", "__pycache__")
    }
