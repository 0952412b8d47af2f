"""A certificate authority made for the tests, and TLS contexts for the test servers.

In: nothing (the ``cryptography`` package makes the keys). Out: ``TlsFiles`` (PEM files of
a CA, a server certificate for ``127.0.0.1`` and ``localhost`` signed by it, its key, and
an unrelated second CA for negative tests), the session fixture ``tls_files`` and
``server_context()`` / ``client_context()``.

Keys are ECDSA P-256, which takes milliseconds to make, so one set per session costs
nothing. Python's ``ssl`` checks the subjectAltName, so the server certificate names
``IP:127.0.0.1`` and ``DNS:localhost`` there.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: How long the generated certificates are valid, counted from one day ago (clock skew).
VALIDITY = datetime.timedelta(days=30)


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: ``server_cert``/``server_key`` are signed by ``ca_cert``; ``other_ca_cert``
    signed nothing the servers present (a client trusting only it must refuse them)."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    other_ca_cert: Path


def make_tls_files(folder: Path) -> TlsFiles:
    """Write a CA, a server certificate and key for loopback, and a second CA to ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _make_ca("report-intake test CA")
    _other_key, other_cert = _make_ca("report-intake unrelated CA")
    server_key, server_cert = _make_server_cert(ca_key, ca_cert)
    files = TlsFiles(
        ca_cert=folder / "ca.pem",
        server_cert=folder / "server.pem",
        server_key=folder / "server.key",
        other_ca_cert=folder / "other-ca.pem",
    )
    _write(files.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(files.other_ca_cert, other_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(files.server_cert, server_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    key_pem = server_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write(files.server_key, key_pem, 0o600)
    return files


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """A server-side context presenting ``files.server_cert`` (for aiosmtpd and the like)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(files.server_cert, files.server_key)
    return context


def client_context(ca_file: Path) -> ssl.SSLContext:
    """A verifying client context that trusts only ``ca_file``."""
    return ssl.create_default_context(cafile=str(ca_file))


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """The session's CA, loopback server certificate and unrelated CA (see ``TlsFiles``)."""
    folder = tmp_path_factory.mktemp("tls")
    folder.chmod(0o755)  # servers running as another user (Dovecot's) read the certificate
    return make_tls_files(folder)


# -- internals ------------------------------------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + VALIDITY)
    )


def _make_ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    cert = (
        _builder(name, name, key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _make_server_cert(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    san = x509.SubjectAlternativeName(
        [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    )
    cert = (
        _builder(_name("127.0.0.1"), ca_cert.subject, key)
        .add_extension(san, critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _write(path: Path, data: bytes, mode: int) -> None:
    path.write_bytes(data)
    path.chmod(mode)
