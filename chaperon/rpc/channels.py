"""gRPC channels and servers, plaintext or TLS, with readable errors for bad files.

Every process of the cluster opens its channels and ports here, so the TLS rules are the same
everywhere: a server given ``--tls-cert``/``--tls-key`` serves TLS only; a client given
``--tls-ca`` verifies the server's certificate against that CA (the certificate must name the
host it is dialled by, e.g. an IP SAN of 127.0.0.1).

Servers come in two kinds with the same options, health and reflection: ``build_server``
(grpc's thread-pool server: each call holds a thread) and ``build_aio_server`` (grpc's asyncio
server: a call that waits holds no thread; the master's, where thousands of streams stay
open).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import _async as health_async
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from chaperon.core.health import ServiceHealth


class TlsConfigError(ValueError):
    """A TLS file that is missing, unreadable or given without its pair."""


# gRPC's channel-argument names, written once here for every channel and server we make.
MAX_RECEIVE_BYTES_OPTION = "grpc.max_receive_message_length"
MAX_SEND_BYTES_OPTION = "grpc.max_send_message_length"
# What our servers may send in one message (a finished run with every histogram is large).
SERVER_MAX_SEND_BYTES = 64 * 1024 * 1024


def message_size_options(
    max_receive_bytes: int, max_send_bytes: int | None = None
) -> list[tuple[str, Any]]:
    """Channel or server options capping the size of messages received (and sent)."""
    options: list[tuple[str, Any]] = [(MAX_RECEIVE_BYTES_OPTION, max_receive_bytes)]
    if max_send_bytes is not None:
        options.append((MAX_SEND_BYTES_OPTION, max_send_bytes))
    return options


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise TlsConfigError(f"cannot read the {what} {path!r}: {exc.strerror}") from None
    if b"-----BEGIN" not in data:
        raise TlsConfigError(f"the {what} {path!r} is not a PEM file")
    return data


def read_ca(path: str | None) -> bytes | None:
    return _read(path, "CA certificate (--tls-ca)") if path else None


def server_credentials(cert: str | None, key: str | None) -> grpc.ServerCredentials | None:
    """TLS credentials for a server, or None for plaintext; both files or neither."""
    if not cert and not key:
        return None
    if not cert or not key:
        raise TlsConfigError("--tls-cert and --tls-key go together")
    return grpc.ssl_server_credentials(
        [(_read(key, "private key (--tls-key)"), _read(cert, "certificate (--tls-cert)"))]
    )


def make_channel(
    address: str,
    tls: bool = False,
    ca: bytes | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.Channel:
    """A TLS channel when ``tls`` or a CA is given (no CA: the system roots), else plaintext."""
    if tls or ca is not None:
        return grpc.secure_channel(address, grpc.ssl_channel_credentials(ca), list(options))
    return grpc.insecure_channel(address, list(options))


DEFAULT_MASTER_PORT = 50051
# gRPC targets with a scheme (dns:///host:port, unix:/path, ipv4:..., ...) are taken as given.
_TARGET_SCHEME = re.compile(r"^(dns|unix|unix-abstract|ipv4|ipv6|vsock|xds|google-c2p):")
_BRACKETED = re.compile(r"^\[([^\]]*)\](?::(.*))?$")


def with_default_port(address: str, port: int = DEFAULT_MASTER_PORT) -> str:
    """``address`` as a gRPC target, with ``port`` when it names none: ``host`` ->
    ``host:50051``, ``[::1]`` and ``::1`` -> ``[::1]:50051``; ``host:port``, ``[v6]:port`` and
    targets with a scheme (``dns:///``, ``unix:``) as given. ValueError saying what is wrong
    for an empty host, an empty or bad port, or brackets around what is not an IPv6 address."""
    text = address.strip()
    if _TARGET_SCHEME.match(text) and not re.fullmatch(r"[\w.-]+:\d+", text):
        return text  # (a host named "unix" with a port is a host)
    bracketed = _BRACKETED.match(text)
    if bracketed:
        host, given = bracketed.group(1), bracketed.group(2)
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise ValueError(f"{address!r}: [{host}] is not an IPv6 address") from None
        host = f"[{host}]"
    elif text.count(":") > 1:  # an IPv6 address without brackets, or nothing valid
        try:
            ipaddress.IPv6Address(text.split("%", 1)[0])
        except ValueError:
            raise ValueError(
                f"{address!r}: write HOST, HOST:PORT or [IPv6]:PORT "
                f"(e.g. 127.0.0.1:{port} or [::1]:{port})"
            ) from None
        host, given = f"[{text}]", None
    else:
        host, _, given = text.partition(":")
        given = given if ":" in text else None
    if not host:
        raise ValueError(f"{address!r}: the host is missing (e.g. 127.0.0.1:{port})")
    if given is None:
        return f"{host}:{port}"
    if not given:
        raise ValueError(f"{address!r}: the port is missing (HOST alone means port {port})")
    if not given.isdigit() or not 0 < int(given) < 65536:
        raise ValueError(f"{address!r}: {given!r} is not a port (1 to 65535)")
    return f"{host}:{int(given)}"


def host_port(host: str, port: int) -> str:
    """``host:port`` as gRPC targets want it (IPv6 literals in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def add_port(
    server: grpc.Server, host: str, port: int, creds: grpc.ServerCredentials | None
) -> int:
    """Bind host:port (plaintext or TLS); the bound port, or OSError with the reason."""
    target = host_port(host, port)
    try:
        if creds is not None:
            bound = server.add_secure_port(target, creds)
        else:
            bound = server.add_insecure_port(target)
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise OSError(f"cannot listen on {target} (port in use or address not available)")
    return bound


@dataclass
class GrpcServer:
    """A gRPC server with health and reflection beside its one service."""

    server: grpc.Server
    port: int
    health: health.HealthServicer
    service_name: str

    def start(self) -> None:
        """Start serving and report SERVING for the server and its service."""
        self.server.start()
        for name in ("", self.service_name):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    def follow(self, state: ServiceHealth) -> None:
        """From now on, report SERVING or NOT_SERVING (server and service) as ``state`` says."""

        def report(serving: bool, _reason: str) -> None:
            status = health_pb2.HealthCheckResponse.SERVING
            if not serving:
                status = health_pb2.HealthCheckResponse.NOT_SERVING
            for name in ("", self.service_name):
                self.health.set(name, status)

        state.listen(report)


def build_server(
    service_name: str,
    add_service: Callable[[grpc.Server], None],
    *,
    host: str,
    port: int,
    creds: grpc.ServerCredentials | None,
    interceptors: Sequence[grpc.ServerInterceptor],
    max_workers: int,
    max_receive_bytes: int,
    thread_prefix: str,
) -> GrpcServer:
    """A server (not started) serving one of our services plus grpc.health.v1.Health and
    server reflection on host:port; OSError if the port cannot be bound."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=thread_prefix),
        interceptors=list(interceptors),
        options=_server_options(max_receive_bytes),
    )
    add_service(server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    _add_reflection(server, service_name)
    bound = add_port(server, host, port, creds)
    return GrpcServer(server, bound, health_servicer, service_name)


def _server_options(max_receive_bytes: int) -> list[tuple[str, Any]]:
    return [
        *message_size_options(max_receive_bytes, SERVER_MAX_SEND_BYTES),
        ("grpc.so_reuseport", 0),
    ]


def _add_reflection(server: grpc.Server | grpc.aio.Server, service_name: str) -> None:
    # grpc_reflection serves an asyncio servicer on a grpc.aio server, a plain one otherwise.
    reflection.enable_server_reflection(
        (
            service_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )


@dataclass
class AioGrpcServer:
    """A ``grpc.aio`` server with health and reflection beside its one service; every method
    runs on the event loop the server was built on."""

    server: grpc.aio.Server
    port: int
    health: health_async.HealthServicer
    service_name: str

    async def start(self) -> None:
        """Start serving and report SERVING for the server and its service."""
        await self.server.start()
        await self._report(health_pb2.HealthCheckResponse.SERVING)

    def follow(self, state: ServiceHealth) -> None:
        """From now on, report SERVING or NOT_SERVING (server and service) as ``state`` says.
        Call it on the server's loop; a change reported from another thread hops onto it."""
        loop = asyncio.get_running_loop()

        def report(serving: bool, _reason: str) -> None:
            status = health_pb2.HealthCheckResponse.SERVING
            if not serving:
                status = health_pb2.HealthCheckResponse.NOT_SERVING
            try:
                # The coroutine is made on the loop: none is left un-awaited if it has stopped.
                loop.call_soon_threadsafe(lambda: loop.create_task(self._report(status)))
            except RuntimeError:  # the loop has closed: the server is gone
                pass

        state.listen(report)

    async def _report(self, status: int) -> None:
        for name in ("", self.service_name):
            await self.health.set(name, status)  # type: ignore[arg-type]


def build_aio_server(
    service_name: str,
    add_service: Callable[[grpc.aio.Server], None],
    *,
    host: str,
    port: int,
    creds: grpc.ServerCredentials | None,
    interceptors: Sequence[grpc.aio.ServerInterceptor],
    max_receive_bytes: int,
    sync_pool: futures.Executor | None = None,
) -> AioGrpcServer:
    """``build_server`` for grpc's asyncio server: call it on the event loop that will run
    the server (grpc.aio objects belong to the loop they are made on). The same options,
    health (its asyncio servicer) and reflection. ``sync_pool`` runs any servicer method
    that is a plain function rather than a coroutine. OSError if the port cannot be bound."""
    server = grpc.aio.server(
        migration_thread_pool=sync_pool,
        interceptors=list(interceptors),
        options=_server_options(max_receive_bytes),
    )
    add_service(server)
    health_servicer = health_async.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    _add_reflection(server, service_name)
    bound = add_port(server, host, port, creds)  # type: ignore[arg-type]
    return AioGrpcServer(server, bound, health_servicer, service_name)
