"""HTTPS in the request engine (``_fastpath.engine`` over ``_fastpath/tls.pxd``), on loopback.

One nginx per module (skipped when nginx or its SSL module is missing) serves plain HTTP and
HTTPS on several ports, with a certificate for localhost/127.0.0.1/::1 from a throw-away CA
(``support.certs``). Its access log has one line per request with the server port, the status,
``$ssl_session_reused`` ("r" on a resumed handshake) and the connection serial number, so
every test compares the engine's counts with what the server saw, and resumption and
keep-alive are read from the server's side. Small Python listeners stand in for servers that
misbehave during the handshake (silent, closing, resetting). Every wait is bounded.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.certs import CertFiles
from support.ports import LOOPBACK
from support.servers import HandshakeSpoiler, TlsNginx, skip_without_tls_nginx, tls_nginx

from _fastpath.engine import ERROR_KINDS, Engine, EngineOptions, PlanBuilder

S = 1_000_000_000
MS = 1_000_000
GET = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
GET_CLOSE = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
BIG = b"GET /big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n"
BIG_SIZE = 300_000  # many TLS records, several 64 KiB reads per response


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory, certs: CertFiles) -> Iterator[TlsNginx]:
    skip_without_tls_nginx()
    with tls_nginx(tmp_path_factory.mktemp("nginx-engine-tls"), certs, BIG_SIZE) as server:
        yield server


@dataclass
class Result:
    rows: dict[str, tuple[int, int, dict[str, int]]]  # key -> (count, errors, kinds)
    stats: dict[str, int]
    tls_error: str | None
    elapsed_s: float


def run(engine: Engine, timeout_s: float = 20.0) -> Result:
    """Start, wait (bounded), take the final swap and close."""
    try:
        t0 = time.monotonic()
        engine.start()
        assert engine.wait(timeout_s), "engine did not finish in time"
        elapsed = time.monotonic() - t0
        rows = {}
        for key, hist, count, errors, kinds, _service in engine.swap():
            assert hist.total_count == count
            rows[key] = (count, errors, kinds)
    finally:
        engine.close()
    return Result(rows, engine.stats(), engine.tls_error, elapsed)


def https(port: int, name: str | None = "localhost", host: str = LOOPBACK) -> tuple:
    return (host, port, True, name)


def one_target(target: tuple, request: bytes = GET, **options: Any) -> Engine:
    options.setdefault("sessions", 4)
    options.setdefault("iterations", 25)
    plan = PlanBuilder()
    plan.http(0, 0, request)
    return Engine([target], ["GET /"], plan, EngineOptions(**options))


def reused(lines: list[list[str]]) -> int:
    return sum(1 for line in lines if line[2] == "r")


def connections(lines: list[list[str]]) -> int:
    return len({line[3] for line in lines})


# ------------------------------------------------------------------------------ nginx


def test_https_closed_model_verified_keep_alive(nginx: TlsNginx, certs: CertFiles) -> None:
    mark = nginx.mark()
    res = run(
        one_target(
            https(nginx.ports.tls),
            sessions=4,
            threads=2,
            iterations=50,
            tls_ca_file=str(certs.ca_cert),
        )
    )
    assert res.rows == {"GET /": (200, 0, {})}, res.tls_error
    assert res.stats["requests_sent"] == res.stats["responses"] == 200
    lines = nginx.served(mark, 200, port=nginx.ports.tls)
    assert len(lines) == 200
    assert all(line[0] == str(nginx.ports.tls) and line[1] == "200" for line in lines)
    assert connections(lines) == 4  # one kept-alive TLS connection per session
    assert res.tls_error is None


@pytest.mark.parametrize("version", ["1.3", "1.2"])
def test_connection_close_reconnects_and_resumes(
    nginx: TlsNginx, certs: CertFiles, version: str
) -> None:
    port = nginx.ports.tls if version == "1.3" else nginx.ports.tls12
    mark = nginx.mark()
    res = run(
        one_target(https(port), GET_CLOSE, sessions=2, iterations=20, tls_ca_file=certs.ca_cert)
    )
    assert res.rows == {"GET /": (40, 0, {})}, res.tls_error
    lines = nginx.served(mark, 40, port=port)
    assert len(lines) == 40 and connections(lines) == 40  # a new connection per request
    # Only each session's first handshake is a full one; every reconnect resumes.
    assert reused(lines) == 40 - 2, lines


def test_large_responses_through_read_ahead(nginx: TlsNginx, certs: CertFiles) -> None:
    # Responses far larger than the 64 KiB receive buffer: OpenSSL holds decrypted bytes the
    # kernel no longer reports (the drain rule), and a stall would end as a timeout.
    mark = nginx.mark()
    res = run(
        one_target(
            https(nginx.ports.tls),
            BIG,
            sessions=3,
            iterations=10,
            tls_ca_file=certs.ca_cert,
            request_timeout_ns=5 * S,
        )
    )
    assert res.rows == {"GET /": (30, 0, {})}, res.tls_error
    assert len(nginx.served(mark, 30, port=nginx.ports.tls)) == 30


def test_unknown_ca_fails_every_op_as_tls(nginx: TlsNginx) -> None:
    mark = nginx.mark()
    res = run(one_target(https(nginx.ports.tls), sessions=2, iterations=5))  # system CAs only
    assert res.rows == {"GET /": (0, 10, {"tls": 10})}
    assert res.stats["responses"] == 0 and res.stats["iterations"] == 10  # the run ended normally
    assert res.tls_error is not None
    assert "certificate verification failed" in res.tls_error
    assert "unable to get local issuer certificate" in res.tls_error
    assert nginx.served(mark, 0, timeout_s=0.2) == []


def test_insecure_succeeds_without_the_ca(nginx: TlsNginx) -> None:
    mark = nginx.mark()
    res = run(one_target(https(nginx.ports.tls, "wrong.example"), tls_insecure=True))
    assert res.rows == {"GET /": (100, 0, {})}
    assert len(nginx.served(mark, 100, port=nginx.ports.tls)) == 100


@pytest.mark.parametrize(
    ("name", "reason"),
    [("wrong.example", "hostname mismatch"), ("127.0.0.2", "IP address mismatch")],
)
def test_wrong_server_name_fails_verification(
    nginx: TlsNginx, certs: CertFiles, name: str, reason: str
) -> None:
    res = run(
        one_target(
            https(nginx.ports.tls, name), sessions=1, iterations=3, tls_ca_file=certs.ca_cert
        )
    )
    assert res.rows == {"GET /": (0, 3, {"tls": 3})}
    assert res.tls_error is not None and reason in res.tls_error


@pytest.mark.parametrize("name", [None, "", "127.0.0.1"])
def test_ip_literal_server_name_is_verified_as_an_ip(
    nginx: TlsNginx, certs: CertFiles, name: str | None
) -> None:
    res = run(
        one_target(
            https(nginx.ports.tls, name), sessions=1, iterations=3, tls_ca_file=certs.ca_cert
        )
    )
    assert res.rows == {"GET /": (3, 0, {})}, res.tls_error


@pytest.mark.parametrize("name", ["localhost", None])
def test_ipv6_target(nginx: TlsNginx, certs: CertFiles, name: str | None) -> None:
    if nginx.ports.tls6 is None:
        pytest.skip("no IPv6 loopback")
    mark = nginx.mark()
    res = run(
        one_target(
            https(nginx.ports.tls6, name, host="::1"),
            sessions=2,
            iterations=5,
            tls_ca_file=certs.ca_cert,
        )
    )
    assert res.rows == {"GET /": (10, 0, {})}, res.tls_error
    assert len(nginx.served(mark, 10, port=nginx.ports.tls6)) == 10


def test_plain_http_server_behind_a_tls_target(nginx: TlsNginx, certs: CertFiles) -> None:
    res = run(
        one_target(https(nginx.ports.plain), sessions=2, iterations=3, tls_ca_file=certs.ca_cert)
    )
    assert res.rows == {"GET /": (0, 6, {"tls": 6})}
    assert res.tls_error is not None
    assert "wrong version number" in res.tls_error or "packet length" in res.tls_error


def test_open_model_over_tls(nginx: TlsNginx, certs: CertFiles) -> None:
    mark = nginx.mark()
    res = run(
        one_target(
            https(nginx.ports.tls),
            sessions=8,
            iterations=0,
            arrival_rate_per_s=200.0,
            duration_ns=1 * S,
            tls_ca_file=certs.ca_cert,
        )
    )
    started = res.stats["sessions_started"]
    assert res.stats["sessions_dropped"] == 0
    assert started + res.stats["sessions_dropped"] in range(195, 201)
    assert res.rows == {"GET /": (started, 0, {})}, res.tls_error
    lines = nginx.served(mark, started, port=nginx.ports.tls)
    assert len(lines) == started
    assert connections(lines) <= 8  # a slot keeps its TLS connection for the next arrival


def test_mixed_http_and_https_targets(nginx: TlsNginx, certs: CertFiles) -> None:
    mark = nginx.mark()
    plan = PlanBuilder()
    plan.http(0, 0, GET)
    plan.http(1, 1, GET)
    eng = Engine(
        [(LOOPBACK, nginx.ports.plain), https(nginx.ports.tls)],
        ["http", "https"],
        plan,
        EngineOptions(sessions=2, iterations=10, tls_ca_file=certs.ca_cert),
    )
    res = run(eng)
    assert res.rows == {"http": (20, 0, {}), "https": (20, 0, {})}, res.tls_error
    lines = nginx.served(mark, 40)
    by_port = {
        p: [ln for ln in lines if ln[0] == str(p)] for p in (nginx.ports.plain, nginx.ports.tls)
    }
    assert len(by_port[nginx.ports.plain]) == len(by_port[nginx.ports.tls]) == 20
    # Switching targets reconnects; the HTTPS reconnects resume (the slot keeps the session).
    assert reused(by_port[nginx.ports.tls]) == 20 - 2


# ------------------------------------------------------------------------------ misbehaving peers


@pytest.mark.parametrize("spoiler", ["close", "reset"], indirect=True)
def test_peer_closing_during_the_handshake(spoiler: HandshakeSpoiler, certs: CertFiles) -> None:
    # Not a TLS failure: closed or reset, as tls.pxd maps it (OpenSSL 3.0 may report an RST
    # during the handshake as an EOF, so "reset" may read "closed").
    res = run(one_target(https(spoiler.port), sessions=2, iterations=3, tls_ca_file=certs.ca_cert))
    count, errors, by_kind = res.rows["GET /"]
    assert (count, errors) == (0, 6)
    assert set(by_kind) <= {"closed", "reset"}, (by_kind, res.tls_error)
    if spoiler.mode == "close":
        assert by_kind == {"closed": 6}


@pytest.mark.parametrize("spoiler", ["silent"], indirect=True)
def test_handshake_is_under_the_connect_timeout(
    spoiler: HandshakeSpoiler, certs: CertFiles
) -> None:
    res = run(
        one_target(
            https(spoiler.port),
            sessions=2,
            iterations=2,
            tls_ca_file=certs.ca_cert,
            connect_timeout_ns=200 * MS,
            request_timeout_ns=30 * S,
        )
    )
    assert res.rows == {"GET /": (0, 4, {"timeout": 4})}
    assert 0.35 < res.elapsed_s < 5.0  # two 200 ms handshake timeouts per session


# ------------------------------------------------------------------------------ API


def test_tls_follows_the_http_error_kinds() -> None:
    assert ERROR_KINDS[:6] == ("connect", "timeout", "reset", "closed", "http_4xx", "http_5xx")
    assert ERROR_KINDS[6] == "tls"


def test_bad_ca_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot load the CA file") as info:
        one_target(https(443), tls_ca_file=str(tmp_path / "missing.pem"))
    assert "missing.pem" in str(info.value)
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    with pytest.raises(ValueError, match="cannot load the CA file"):
        one_target(https(443), tls_ca_file=tmp_path / "junk.pem")


def test_tls_options_are_ignored_without_tls_targets(tmp_path: Path) -> None:
    # No SSL_CTX is built for a plain plan, so a CA file is not even read.
    one_target((LOOPBACK, 80), tls_ca_file=str(tmp_path / "missing.pem")).close()
    one_target((LOOPBACK, 80, False, None)).close()


@pytest.mark.parametrize(
    ("target", "kw", "exc", "match"),
    [
        ((LOOPBACK, 443, 1, "localhost"), {}, TypeError, "tls must be a bool"),
        ((LOOPBACK, 443, True), {}, TypeError, r"\(host, port, tls, server_name\)"),
        ((LOOPBACK, 443, True, 5), {}, TypeError, "server_name must be a str"),
        ((LOOPBACK, 443, True, "bücher.example"), {}, ValueError, "not ASCII"),
        ((LOOPBACK, 443, True, "a b"), {}, ValueError, "not a valid server name"),
        ((LOOPBACK, 443, True, "x" * 300), {}, ValueError, "not a valid server name"),
        ((LOOPBACK, 443, True, "h"), {"tls_insecure": 1}, TypeError, "tls_insecure must be a bool"),
        ((LOOPBACK, 443, True, "h"), {"tls_ca_file": 3}, TypeError, "tls_ca_file must be a path"),
    ],
)
def test_tls_target_validation(target: tuple, kw: dict, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        one_target(target, **kw)
