"""The only module that talks to gpg.

In: bytes to protect and pinned 40-hex fingerprints. Out: ASCII-armoured OpenPGP messages, or a
specific exception (`KeyUnusableError`, `EncryptError`, `DecryptError`). Data goes to gpg through
pipes, never through a temporary file. Every recipient is named explicitly and checked against
the keyring (present, not expired, not revoked, able to encrypt) before `always_trust` is used:
the pin is the trust decision, there is no keyserver or WKD lookup.

The daemon's homedir holds public keys (records keys and services' keys, imported from
`keys_dir`) and exactly one secret key: the outbox key, which protects queued acknowledgement
addresses. It holds nothing that opens a stored report.
"""

from __future__ import annotations

import fcntl
import stat
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gnupg

OUTBOX_UID = "report-intake outbox <outbox@report-intake.invalid>"
_GPG_OPTIONS = ["--no-auto-key-locate", "--no-auto-key-retrieve", "--keyid-format", "long"]


class CryptoError(Exception):
    """gpg could not do what was asked; the message says what and for which key."""


class KeyUnusableError(CryptoError):
    """A pinned key is missing, expired, revoked or cannot encrypt."""

    def __init__(self, fingerprint: str, reason: str) -> None:
        super().__init__(f"key {fingerprint}: {reason}")
        self.fingerprint = fingerprint
        self.reason = reason


class EncryptError(CryptoError):
    """gpg refused to encrypt or returned nothing."""


class DecryptError(CryptoError):
    """gpg could not decrypt (only outbox data is ever decrypted here)."""


@dataclass(frozen=True)
class KeyInfo:
    fingerprint: str
    uids: tuple[str, ...]
    expires: float | None  # epoch seconds, None = never
    problem: str | None  # None when the key can be used to encrypt now


def ensure_private_dir(path: Path) -> Path:
    """Create `path` with mode 0700, or refuse an existing one that others can read."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise CryptoError(
            f"{path} is readable by group or others (mode {mode:o}); run: chmod 700 {path}"
        )
    return path


def normalise_fingerprint(fpr: str) -> str:
    return fpr.replace(" ", "").upper()


def _key_problem(key: dict[str, Any], now: float) -> str | None:
    validity = key.get("trust", "")
    if validity == "r":
        return "the key is revoked"
    expires = float(key["expires"]) if key.get("expires") else None
    if validity == "e" or (expires is not None and expires <= now):
        return "the key has expired"
    if "E" not in key.get("cap", ""):
        return "the key has no usable encryption subkey"
    return None


class Crypto:
    """A gpg homedir with the records keys, the services' keys and the outbox key."""

    def __init__(self, homedir: Path, binary: str = "gpg") -> None:
        self.homedir = ensure_private_dir(homedir)
        self.gpg = gnupg.GPG(gnupghome=str(homedir), gpgbinary=binary, options=_GPG_OPTIONS)
        self.gpg.encoding = "utf-8"
        self._outbox_fpr: str | None = None

    @contextmanager
    def setup_lock(self) -> Iterator[None]:
        """An exclusive lock on the homedir for changes to the keyring (imports, key generation)."""
        with (self.homedir / ".intake.lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def import_keys_dir(self, keys_dir: Path) -> list[str]:
        """Import every public key `*.asc` in `keys_dir`; refuse files that hold secret keys."""
        imported: list[str] = []
        for path in sorted(keys_dir.glob("*.asc")):
            text = path.read_text(encoding="ascii", errors="replace")
            if "PRIVATE KEY BLOCK" in text:
                raise CryptoError(f"{path}: holds a secret key; the keys folder is for public keys")
            result = self.gpg.import_keys(text)
            if not result.fingerprints:
                raise CryptoError(f"{path}: no OpenPGP public key could be imported")
            imported.extend(normalise_fingerprint(f) for f in result.fingerprints)
        return imported

    def keys(self) -> dict[str, KeyInfo]:
        """Every public key in the homedir by primary fingerprint."""
        now = time.time()
        found = {}
        for key in self.gpg.list_keys():
            fpr = normalise_fingerprint(key["fingerprint"])
            expires = float(key["expires"]) if key.get("expires") else None
            found[fpr] = KeyInfo(fpr, tuple(key.get("uids", [])), expires, _key_problem(key, now))
        return found

    def check_key(self, fingerprint: str) -> KeyInfo:
        """The pinned key, usable for encryption now, or KeyUnusableError saying why not."""
        fpr = normalise_fingerprint(fingerprint)
        info = self.keys().get(fpr)
        if info is None:
            raise KeyUnusableError(fpr, "no public key with this fingerprint in the keyring")
        if info.problem:
            raise KeyUnusableError(fpr, info.problem)
        return info

    def encrypt(self, data: bytes, fingerprints: list[str]) -> bytes:
        """Encrypt `data` to exactly these pinned keys; ASCII armour out."""
        if not fingerprints:
            raise EncryptError("no recipient key given")
        recipients = [self.check_key(f).fingerprint for f in fingerprints]
        result = self.gpg.encrypt(data, recipients, armor=True, always_trust=True)
        if not result.ok or not result.data:
            raise EncryptError(f"gpg could not encrypt to {', '.join(recipients)}: {result.status}")
        return bytes(result.data)

    def outbox_fingerprint(self) -> str:
        """The outbox key's fingerprint, generating the key on first use."""
        if self._outbox_fpr is None:
            self._outbox_fpr = self._find_outbox_key() or self._generate_outbox_key()
        return self._outbox_fpr

    def _find_outbox_key(self) -> str | None:
        for key in self.gpg.list_keys(secret=True):
            if OUTBOX_UID in key.get("uids", []):
                return normalise_fingerprint(key["fingerprint"])
        return None

    def _generate_outbox_key(self) -> str:
        spec = self.gpg.gen_key_input(
            key_type="EDDSA",
            key_curve="ed25519",
            subkey_type="ECDH",
            subkey_curve="cv25519",
            name_real="report-intake outbox",
            name_email="outbox@report-intake.invalid",
            expire_date=0,
            no_protection=True,
        )
        result = self.gpg.gen_key(spec)
        if not result.fingerprint:
            raise CryptoError(f"could not generate the outbox key: {result.status}")
        return normalise_fingerprint(str(result.fingerprint))

    def check_secret_keys(self) -> None:
        """Refuse a homedir holding any secret key other than the outbox key."""
        outbox = self.outbox_fingerprint()
        for key in self.gpg.list_keys(secret=True):
            fpr = normalise_fingerprint(key["fingerprint"])
            if fpr != outbox:
                raise CryptoError(
                    f"{self.homedir} holds secret key {fpr}; the daemon may hold only its outbox "
                    f"key. Remove it with: gpg --homedir {self.homedir} --delete-secret-keys {fpr}"
                )

    def encrypt_for_outbox(self, data: bytes) -> bytes:
        return self.encrypt(data, [self.outbox_fingerprint()])

    def decrypt_outbox(self, data: bytes) -> bytes:
        result = self.gpg.decrypt(data)
        if not result.ok:
            raise DecryptError(f"could not decrypt outbox data: {result.status}")
        return bytes(result.data)

    def close(self) -> None:
        """Stop this homedir's gpg-agent (tests and short runs leave no sockets behind)."""
        subprocess.run(
            ["gpgconf", "--homedir", str(self.homedir), "--kill", "gpg-agent"],
            capture_output=True,
            check=False,
        )
