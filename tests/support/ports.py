"""Free loopback ports.

The kernel picks an unused port for a socket bound to port 0; we close it and hand the
number to the process under test. Another process could take it in between, but on a
test machine that window is small enough, and a process that fails to bind shows up at
once as a readiness failure with its log.
"""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def address(port: int, host: str = LOOPBACK) -> str:
    """``host:port``, the form gRPC targets and ``--master`` take."""
    return f"{host}:{port}"
