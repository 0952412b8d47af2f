"""The key files an `[*.oauth2]` table names, read: a certificate file (microsoft) in, msal's
client credential and the certificate's thumbprint out; a Google service account's JSON key
file in, its fields out. A file that cannot be used is a ConfigError naming its key; never the
key's content in a message.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pipeline.config import ConfigError, OAuth2Config, credential_path
from pipeline.oauth.errors import library

SERVICE_ACCOUNT_FIELDS = ("client_email", "private_key", "token_uri")


def read_service_account(path: Path, key: str) -> dict[str, Any]:
    """A Google service account's JSON key file; ConfigError naming `key` (never its content)
    when it cannot be read, is no such key, or names a token endpoint that is not https (the
    signed assertion goes there)."""
    text = read_text(path, key)
    try:
        info = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{key}: {path}: not JSON (line {exc.lineno})") from None
    if not isinstance(info, dict) or info.get("type") != "service_account":
        raise ConfigError(
            f'{key}: {path}: not a service account\'s key (its "type" is not '
            '"service_account"); make a JSON key for the service account'
        )
    missing = [name for name in SERVICE_ACCOUNT_FIELDS if not isinstance(info.get(name), str)]
    if missing:
        raise ConfigError(f"{key}: {path}: the key lacks {', '.join(missing)}")
    if not OAuth2Config.safe_endpoint(info["token_uri"]):
        raise ConfigError(
            f"{key}: {path}: its token_uri is not an https:// address (the signed assertion "
            "would go in the clear): make a new key, or correct token_uri in the file"
        )
    return info


def read_text(path: Path, key: str) -> str:
    """The file's text (`${CREDENTIALS_DIRECTORY}/…` expanded); ConfigError naming `key`."""
    path = credential_path(path, key)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{key}: {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not text"
        raise ConfigError(f"{key}: {path}: cannot read it ({reason})") from None


_PEM = re.compile(r"-----BEGIN ([A-Z ]+)-----\r?\n.*?-----END \1-----", re.DOTALL)


def read_certificate(path: Path, key: str) -> tuple[dict[str, str], str]:
    """msal's client credential from a PEM file holding an RSA private key (unencrypted) and
    its certificate, and the certificate's SHA-1 thumbprint (as the Entra admin centre shows
    it). ConfigError naming `key` when the file is not that; never the key in a message."""
    x509 = library("cryptography.x509", "cryptography", key)
    serialization = library("cryptography.hazmat.primitives.serialization", "cryptography", key)
    hashes = library("cryptography.hazmat.primitives.hashes", "cryptography", key)
    rsa = library("cryptography.hazmat.primitives.asymmetric.rsa", "cryptography", key)
    blocks: dict[str, str] = {}
    for match in _PEM.finditer(read_text(path, key)):
        blocks.setdefault(match.group(1), match.group(0))
    if "ENCRYPTED PRIVATE KEY" in blocks:
        raise ConfigError(
            f"{key}: {path}: the private key is encrypted; store it without a passphrase, "
            "readable by the service's user only"
        )
    private = next((blocks[k] for k in blocks if k.endswith("PRIVATE KEY")), None)
    if private is None or "CERTIFICATE" not in blocks:
        raise ConfigError(
            f"{key}: {path}: needs the private key and the certificate, both in PEM "
            "(cat key.pem cert.pem > file)"
        )
    try:
        private_key = serialization.load_pem_private_key(private.encode(), password=None)
        certificate = x509.load_pem_x509_certificate(blocks["CERTIFICATE"].encode())
    except (ValueError, TypeError):
        raise ConfigError(f"{key}: {path}: the private key or certificate cannot be read") from None
    if not isinstance(private_key, rsa.RSAPrivateKey):
        raise ConfigError(f"{key}: {path}: Entra ID needs an RSA key")
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if private_key.public_key().public_bytes(der, spki) != certificate.public_key().public_bytes(
        der, spki
    ):
        raise ConfigError(f"{key}: {path}: the private key is not the certificate's")
    pkcs8 = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    thumbprint = certificate.fingerprint(hashes.SHA1()).hex().upper()
    return {"private_key": pkcs8, "public_certificate": blocks["CERTIFICATE"]}, thumbprint
