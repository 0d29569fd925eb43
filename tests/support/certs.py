"""Throw-away certificates for TLS tests: a private CA and a server certificate it signed.

The server certificate is for ``localhost`` and ``127.0.0.1`` (and ``::1``), valid from a day
ago for a week; keys are ECDSA P-256 (fast to generate). :func:`make_certs` writes PEM files
into a directory the caller owns (a pytest ``tmp_path``) and says how it made them in
``CertFiles.method``: with the ``cryptography`` package when it is installed, else with the
``openssl`` command line. Nothing here is secret or reused across runs.
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SERVER_DNS_NAMES = ("localhost",)
SERVER_IPS = ("127.0.0.1", "::1")


@dataclass(frozen=True)
class CertFiles:
    ca_cert: Path  # the CA certificate clients trust (PEM)
    server_cert: Path  # the server's certificate (PEM), signed by the CA
    server_key: Path  # the server's private key (PEM, unencrypted)
    method: str  # "cryptography" or "openssl-cli"


def make_certs(directory: Path, *, prefer: str | None = None) -> CertFiles:
    """Write ``ca.pem``, ``server.pem`` and ``server.key`` into ``directory``.

    ``prefer`` forces a method ("cryptography" or "openssl-cli"); by default the
    ``cryptography`` package is used when importable.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if prefer in (None, "cryptography"):
        try:
            import cryptography  # noqa: F401
        except ImportError:
            if prefer == "cryptography":
                raise
        else:
            return _with_cryptography(directory)
    return _with_openssl_cli(directory)


def _with_cryptography(d: Path) -> CertFiles:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    not_before, not_after = now - datetime.timedelta(days=1), now + datetime.timedelta(days=7)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Chaperon test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in SERVER_DNS_NAMES]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in SERVER_IPS]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    files = CertFiles(d / "ca.pem", d / "server.pem", d / "server.key", "cryptography")
    files.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.server_key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


def _with_openssl_cli(d: Path) -> CertFiles:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise FileNotFoundError("neither the cryptography package nor the openssl command")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=d)

    sans = ",".join([f"DNS:{n}" for n in SERVER_DNS_NAMES] + [f"IP:{ip}" for ip in SERVER_IPS])
    (d / "ca.ext").write_text(
        "basicConstraints=critical,CA:TRUE,pathlen:0\n"
        "keyUsage=critical,keyCertSign,cRLSign\n"
        "subjectKeyIdentifier=hash\n"
    )
    (d / "server.ext").write_text(
        "basicConstraints=critical,CA:FALSE\n"
        f"subjectAltName={sans}\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n"
    )
    new_ec_key = ["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    sign = ["x509", "-req", "-days", "7"]
    run(*new_ec_key, "-keyout", "ca.key", "-out", "ca.csr", "-subj", "/CN=Chaperon test CA")
    run(*sign, "-in", "ca.csr", "-signkey", "ca.key", "-extfile", "ca.ext", "-out", "ca.pem")
    run(*new_ec_key, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    run(*sign, "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-extfile", "server.ext", "-out", "server.pem")  # fmt: skip
    return CertFiles(d / "ca.pem", d / "server.pem", d / "server.key", "openssl-cli")
