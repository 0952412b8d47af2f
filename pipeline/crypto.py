"""The only module that talks to gpg.

In: bytes to protect and pinned 40-hex fingerprints. Out: ASCII-armoured OpenPGP messages, or a
specific exception (`KeyUnusableError`, `EncryptError`, `DecryptError`). Data goes to gpg through
pipes, never through a temporary file. Every recipient is named explicitly and checked against
the keyring (present, not expired, not revoked, able to encrypt) before `always_trust` is used:
the pin is the trust decision, there is no keyserver or WKD lookup.

The daemon's homedir holds public keys (records keys and services' keys, imported from
`keys_dir`) and exactly one secret key: the outbox key, which seals queued acknowledgements
(address and mail) and held referrals. It holds nothing that opens a stored report. The outbox
key is protected by a passphrase kept outside the data folder. It is stretched once per start
with scrypt (`derive_secret`): gpg gets the derived value through a pipe (`--pinentry-mode
loopback --passphrase-fd 0`), so a guess at the passphrase costs a memory-hard scrypt while
each use of the key stays cheap (the agent's own S2K count is set low); the homedir's gpg-agent
is told never to cache it, so each decryption needs it and a wrong one fails at once. An outbox
key from before passphrases (no protection, `LEGACY_OUTBOX_UID`) is replaced:
`legacy_outbox_keys` names it, `reseal` moves data to the protected key, `delete_secret_key`
removes it.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import hmac
import stat
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gnupg

OUTBOX_UID = "report-intake outbox (passphrase) <outbox@report-intake.invalid>"
LEGACY_OUTBOX_UID = "report-intake outbox <outbox@report-intake.invalid>"  # no passphrase
_GPG_OPTIONS = ["--no-auto-key-locate", "--no-auto-key-retrieve", "--keyid-format", "long"]
# The agent keeps no passphrase, not even in memory: every use of the outbox key needs it.
AGENT_CONF = (
    "# written by report-intake: nothing cached; the passphrase is stretched by scrypt already\n"
    "default-cache-ttl 0\nmax-cache-ttl 0\ns2k-count 65536\n"
)
_PROBE = b"report-intake outbox probe"


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


@functools.lru_cache(maxsize=4)
def _stretch(passphrase: str) -> bytes:
    """scrypt (32 MiB, about 0.1 s): what every guess at the passphrase has to pay."""
    salt = b"report-intake outbox passphrase v1"
    return hashlib.scrypt(passphrase.encode(), salt=salt, n=2**15, r=8, p=1, maxmem=2**26)


def derive_secret(passphrase: str, purpose: str) -> bytes:
    """A 32-byte key for `purpose` ("outbox-key": gpg's passphrase for the outbox key, as hex;
    "ack-limit": the rate limiter's HMAC key; "fingerprint": the inputs' fingerprints) derived
    from the outbox passphrase."""
    return hmac.new(_stretch(passphrase), f"report-intake {purpose}".encode(), "sha256").digest()


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

    def __init__(self, homedir: Path, binary: str = "gpg", passphrase: str | None = None) -> None:
        self.homedir = ensure_private_dir(homedir)
        self._agent_conf()
        self.gpg = gnupg.GPG(gnupghome=str(homedir), gpgbinary=binary, options=_GPG_OPTIONS)
        self.gpg.encoding = "utf-8"
        self._passphrase = derive_secret(passphrase, "outbox-key").hex() if passphrase else None
        self._outbox_fpr: str | None = None

    def _agent_conf(self) -> None:
        """Tell this homedir's gpg-agent to cache no passphrase (a running one rereads it and
        forgets what it cached)."""
        conf = self.homedir / "gpg-agent.conf"
        if conf.exists() and conf.read_text(encoding="utf-8", errors="replace") == AGENT_CONF:
            return
        conf.write_text(AGENT_CONF, encoding="utf-8")
        subprocess.run(
            ["gpgconf", "--homedir", str(self.homedir), "--reload", "gpg-agent"],
            capture_output=True,
            check=False,
        )

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
        """The outbox key's fingerprint, generating the key (with the passphrase) on first use."""
        if self._outbox_fpr is None:
            found = self._secret_keys_with(OUTBOX_UID)
            self._outbox_fpr = found[0] if found else self._generate_outbox_key()
        return self._outbox_fpr

    def legacy_outbox_keys(self) -> list[str]:
        """Outbox keys from before passphrases (unprotected): re-seal, then delete them."""
        return self._secret_keys_with(LEGACY_OUTBOX_UID)

    def _secret_keys_with(self, uid: str) -> list[str]:
        return [
            normalise_fingerprint(key["fingerprint"])
            for key in self.gpg.list_keys(secret=True)
            if uid in key.get("uids", [])
        ]

    def _require_passphrase(self) -> str:
        if not self._passphrase:
            raise CryptoError(
                "the outbox key needs a passphrase and none was given (gpg.outbox_passphrase_file"
                ", gpg.outbox_passphrase_env or gpg.outbox_passphrase)"
            )
        return self._passphrase

    def _generate_outbox_key(self) -> str:
        spec = self.gpg.gen_key_input(
            key_type="EDDSA",
            key_curve="ed25519",
            subkey_type="ECDH",
            subkey_curve="cv25519",
            name_real="report-intake outbox",
            name_comment="passphrase",
            name_email="outbox@report-intake.invalid",
            expire_date=0,
            passphrase=self._require_passphrase(),
        )
        result = self.gpg.gen_key(spec)
        if not result.fingerprint:
            raise CryptoError(f"could not generate the outbox key: {result.status}")
        return normalise_fingerprint(str(result.fingerprint))

    def check_outbox_passphrase(self) -> None:
        """Decrypt a probe with the outbox key: CryptoError when the passphrase does not open it."""
        fpr = self.outbox_fingerprint()
        if not self._opens_probe():
            # A fresh agent once more: gpg-agent has been seen to answer "Corrupted protection"
            # for a key it had just made (about once in a thousand starts); a wrong passphrase
            # fails again.
            self.close()
            if self._opens_probe():
                return
            raise CryptoError(
                f"the outbox passphrase does not open the outbox key {fpr} in {self.homedir}: "
                "check gpg.outbox_passphrase_file (or _env) holds the passphrase it was made with"
            )

    def _opens_probe(self) -> bool:
        try:
            return self.decrypt_outbox(self.encrypt_for_outbox(_PROBE)) == _PROBE
        except CryptoError:
            return False

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
        """Seal `data` to our own outbox key (no pin to check: the key is ours)."""
        fpr = self.outbox_fingerprint()
        result = self.gpg.encrypt(data, [fpr], armor=True, always_trust=True)
        if not result.ok or not result.data:
            raise EncryptError(f"gpg could not encrypt to the outbox key {fpr}: {result.status}")
        return bytes(result.data)

    def decrypt_outbox(self, data: bytes) -> bytes:
        result = self.gpg.decrypt(data, passphrase=self._require_passphrase())
        if not result.ok:
            raise DecryptError(f"could not decrypt outbox data: {result.status}")
        return bytes(result.data)

    def reseal(self, data: bytes) -> bytes | None:
        """Outbox data sealed to any of our outbox keys, sealed to the protected one now; None
        when no key of ours opens it (e.g. another instance's)."""
        result = self.gpg.decrypt(data, passphrase=self._require_passphrase())
        if not result.ok:
            if "no secret key" in str(result.status) or "NO_SECKEY" in str(result.stderr):
                return None
            raise DecryptError(f"could not decrypt outbox data to re-seal it: {result.status}")
        return self.encrypt_for_outbox(bytes(result.data))

    def delete_secret_key(self, fingerprint: str) -> None:
        """Delete a secret key and its public key from the homedir."""
        fpr = normalise_fingerprint(fingerprint)
        secret = self.gpg.delete_keys(fpr, secret=True, expect_passphrase=False)
        public = self.gpg.delete_keys(fpr)
        if str(secret.status) != "ok" or str(public.status) != "ok":
            raise CryptoError(f"could not delete the old outbox key {fpr}: {secret.status}")

    def close(self) -> None:
        """Stop this homedir's gpg-agent (tests and short runs leave no sockets behind)."""
        subprocess.run(
            ["gpgconf", "--homedir", str(self.homedir), "--kill", "gpg-agent"],
            capture_output=True,
            check=False,
        )
