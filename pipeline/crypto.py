"""The only module that talks to gpg.

In: bytes to protect and pinned 40-hex fingerprints. Out: ASCII-armoured OpenPGP messages, or a
specific exception (`KeyUnusableError`, `EncryptError`, `DecryptError`). Data goes to gpg through
pipes, never through a temporary file. Every recipient is named explicitly and checked against
the keyring (present, not expired, not revoked, able to encrypt) before `always_trust` is used:
the pin is the trust decision, there is no keyserver or WKD lookup. A key is judged by its
encryption subkeys (`KeyInfo`): an expired one makes the key unusable unless another can
encrypt, and the key expires when its primary or its last usable encryption subkey does.

Encryption runs in process where it can (`pysequoia`, a binding of Sequoia-PGP): to exactly
the encryption subkey gpg would choose, exported from the keyring with the primary key alone
(`SUBKEY!`), in the formats gpg 2.2 reads (version 3 session keys, SEIPD version 1: a key that
asks for RFC 9580's SEIPD version 2 is probed once, `_gpg_reads`), so stock gpg opens it. gpg
itself encrypts when Sequoia cannot so (a primary key that encrypts too, a key asking for the
newer format, a key Sequoia's policy refuses), and encrypts data of `STREAM_BYTES` or more:
it streams and compresses, where Sequoia holds about four copies of the message while it
encrypts (139 MB more for a 34 MB referral carrying a 25 MiB attachment; gpg, 70 MB: its output
read back) and does not compress (that referral: 45 MB with Sequoia, 34 MB with gpg; Exchange
Online takes 35 MB by default).
gpg stays the judge of every key (listing, expiry, revocation) and keeps the keyring.

What the keyring holds is listed once and kept (`keys`): a change made through this object
(import, delete, key generation) or `forget_keys` (each poll, so that a change made by another
process is seen) lists it again. Expiry is judged against the clock at every use.

The daemon's homedir holds public keys (records keys and services' keys: exactly those in
`keys_dir`, kept so by `sync_keys_dir`) and exactly one secret key, the outbox key. It holds
nothing that opens a stored report. Queued acknowledgements (address and mail) and held
referrals are sealed in process (`encrypt_for_outbox`: AES-256-GCM from `cryptography`) with a
key derived from the outbox passphrase: no gpg process runs for this bookkeeping. The outbox key
is the passphrase's check at start (`check_outbox_passphrase`: a wrong passphrase is refused
before anything is sealed with it), and it opens what earlier versions sealed to it.

The passphrase is kept outside the data folder and stretched once per start with scrypt
(`derive_secret`): gpg gets a derived value through a pipe (`--pinentry-mode loopback
--passphrase-fd 0`), so a guess at the passphrase costs a memory-hard scrypt while each use of
the key stays cheap (the agent's own S2K count is set low); the homedir's gpg-agent is told
never to cache it, so each decryption needs it and a wrong one fails at once. An outbox key from
before passphrases (no protection, `LEGACY_OUTBOX_UID`) is replaced: `legacy_outbox_keys` names
it, `reseal` seals its data in process, `delete_secret_key` removes it.

Checks that must write nothing use a `scratch_keyring` (a throwaway homedir, deleted after);
`read_public_key` takes one public key from a key file (`intake keys import`). What a key says of
itself (its user ids) is shown only through `printable`: a user id can hold terminal escapes.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import hmac
import os
import stat
import subprocess
import tempfile
import time
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gnupg
import pysequoia
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pysequoia.packet import PacketPile, Tag

OUTBOX_UID = "report-intake outbox (passphrase) <outbox@report-intake.invalid>"
LEGACY_OUTBOX_UID = "report-intake outbox <outbox@report-intake.invalid>"  # no passphrase
_GPG_OPTIONS = [
    *("--no-auto-key-locate", "--no-auto-key-retrieve", "--keyid-format", "long"),
    "--no-encrypt-to",  # a gpg.conf `encrypt-to` must not add a recipient to what gpg encrypts
]
# The agent keeps no passphrase, not even in memory: every use of the outbox key needs it.
AGENT_CONF = (
    "# written by report-intake: nothing cached; the passphrase is stretched by scrypt already\n"
    "default-cache-ttl 0\nmax-cache-ttl 0\ns2k-count 65536\n"
)
# While the outbox key is made, and only then: gpg signs the new subkey with the new primary
# key through the agent's cache; with a TTL of 0 that entry can expire in between under load
# ("key not created", about 1 in 50). The agent is stopped right after, so nothing stays cached.
GENERATION_AGENT_CONF = AGENT_CONF.replace("cache-ttl 0", "cache-ttl 60")
_PROBE = b"report-intake outbox probe"
STREAM_BYTES = 1024 * 1024  # data this large or larger is encrypted by gpg (see above)
# Outbox data sealed in process: this prefix (also the AEAD's associated data), a 12-byte nonce,
# then the AES-256-GCM ciphertext and tag. Data without it is an OpenPGP message (gpg-sealed).
SEAL_PREFIX = b"report-intake sealed v1\n"
_NONCE_BYTES = 12


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
    # When it stops being able to encrypt (epoch seconds, None = never): the primary key's
    # expiry or the last of its usable encryption subkeys', whichever comes first.
    expires: float | None
    problem: str | None  # None when the key can be used to encrypt now
    subkey: str | None = None  # the encryption (sub)key gpg encrypts to now


@dataclass(frozen=True)
class KeyChanges:
    """What `Crypto.sync_keys_dir` changed in the keyring; false when nothing."""

    imported: tuple[str, ...] = ()  # new keys, or keys with new subkeys/signatures/revocations
    deleted: tuple[str, ...] = ()  # keys whose file left keys_dir
    pruned: tuple[str, ...] = ()  # subkeys that a key's file no longer holds

    def __bool__(self) -> bool:
        return bool(self.imported or self.deleted or self.pruned)

    def __str__(self) -> str:
        named = (
            ("imported", self.imported),
            ("deleted", self.deleted),
            ("subkeys removed", self.pruned),
        )
        return "; ".join(f"{name} {', '.join(fprs)}" for name, fprs in named if fprs)


@dataclass(frozen=True)
class KeyFile:
    """One `*.asc` file of the keys folder: its text and the keys it holds (fingerprint ->
    the fingerprints of its subkeys)."""

    path: Path
    text: str
    keys: dict[str, set[str]]


@dataclass(frozen=True)
class _Part:
    """The primary key or a subkey that can encrypt, as gpg lists it."""

    fingerprint: str
    created: float
    expires: float | None
    validity: str  # gpg's validity letter: "e" expired, "r" revoked

    def usable(self, now: float) -> bool:
        expired = self.expires is not None and self.expires <= now
        # gpg passes over a part made in the future ("not yet valid"), as a clock behind would
        return self.validity not in ("e", "r") and not expired and self.created <= now

    def state(self) -> str:
        if self.validity == "r":
            return "is revoked"
        if self.created > time.time():
            made = time.strftime("%Y-%m-%d", time.gmtime(self.created))
            return f"is not valid before {made} (made in the future, or this clock is behind)"
        day = time.strftime("%Y-%m-%d", time.gmtime(self.expires)) if self.expires else "?"
        return f"expired on {day}"


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


# What a terminal would act on instead of showing: control characters (C0, DEL, C1), format
# characters (the bidi overrides such as U+202E, zero-width ones, tags), line and paragraph
# separators; and the backslash, so that an escape shown is never the key's own text.
_UNPRINTABLE = frozenset(("Cc", "Cf", "Cs", "Zl", "Zp"))


def printable(text: str) -> str:
    """Text a key brings (a user id) safe to print: what a terminal would act on is shown
    escaped, as Python writes it (ESC as \\x1b, U+202E as \\u202e, a backslash doubled)."""
    return "".join(
        char.encode("unicode_escape").decode("ascii")
        if char == "\\" or unicodedata.category(char) in _UNPRINTABLE
        else char
        for char in text
    )


@functools.lru_cache(maxsize=4)
def _stretch(passphrase: str) -> bytes:
    """scrypt (32 MiB, about 0.1 s): what every guess at the passphrase has to pay."""
    salt = b"report-intake outbox passphrase v1"
    return hashlib.scrypt(passphrase.encode(), salt=salt, n=2**15, r=8, p=1, maxmem=2**26)


def derive_secret(passphrase: str, purpose: str) -> bytes:
    """A 32-byte key for `purpose` ("outbox-key": gpg's passphrase for the outbox key, as hex;
    "outbox-seal": the AES key of sealed outbox data; "ack-limit": the rate limiter's HMAC key;
    "fingerprint": the inputs' fingerprints) derived from the outbox passphrase."""
    return hmac.new(_stretch(passphrase), f"report-intake {purpose}".encode(), "sha256").digest()


def _gpg_reads(message: bytes) -> bool:
    """Whether an OpenPGP message is in the formats gpg 2.2 reads: session keys in version 3
    packets and the data in a version 1 SEIPD packet (RFC 4880), not RFC 9580's version 6 and
    version 2 (which Sequoia writes for a key that says it reads them)."""
    versions = {int(packet.tag): packet.body[:1] for packet in PacketPile.from_bytes(message)}
    return versions.get(int(Tag.PKESK)) == b"\x03" and versions.get(int(Tag.SEIP)) == b"\x01"


def _epoch(value: str | None) -> float | None:
    return float(value) if value else None


def _encryption_parts(key: dict[str, Any]) -> list[_Part]:
    """The primary key (when it encrypts itself: lowercase "e") and the encryption subkeys."""
    listed = [key, *key.get("subkey_info", {}).values()]
    return [
        _Part(
            normalise_fingerprint(part["fingerprint"]),
            float(part.get("date") or 0),
            _epoch(part.get("expires")),
            part.get("trust", ""),
        )
        for part in listed
        if "e" in part.get("cap", "")
    ]


def _key_info(key: dict[str, Any], now: float) -> KeyInfo:
    """A listed key as the daemon sees it: gpg encrypts to the newest usable encryption
    (sub)key; the key can encrypt until its primary or its last usable such subkey expires."""
    fpr = normalise_fingerprint(key["fingerprint"])
    uids = tuple(key.get("uids", []))
    primary = _epoch(key.get("expires"))
    parts = _encryption_parts(key)
    usable = [part for part in parts if part.usable(now)]
    problem = _key_problem(key, primary, parts, usable, now)
    if problem:
        return KeyInfo(fpr, uids, primary, problem)
    newest = max(usable, key=lambda part: part.created)  # gpg's choice (the first of equals)
    return KeyInfo(fpr, uids, _encrypts_until(primary, usable), None, newest.fingerprint)


def _encrypts_until(primary: float | None, usable: list[_Part]) -> float | None:
    subkeys = None
    if all(part.expires is not None for part in usable):
        subkeys = max(part.expires or 0.0 for part in usable)
    ends = [end for end in (primary, subkeys) if end is not None]
    return min(ends) if ends else None


def _key_problem(
    key: dict[str, Any],
    primary_expires: float | None,
    parts: list[_Part],
    usable: list[_Part],
    now: float,
) -> str | None:
    validity = key.get("trust", "")
    if validity == "r":
        return "the key is revoked"
    if validity == "e" or (primary_expires is not None and primary_expires <= now):
        return "the key has expired"
    if not parts:
        return "the key has no encryption subkey"
    if not usable:
        newest = max(parts, key=lambda part: part.created)
        return f"no usable encryption subkey: the newest, {newest.fingerprint}, {newest.state()}"
    if "E" not in key.get("cap", "") or "D" in key.get("cap", ""):
        return "the key has no usable encryption subkey"  # gpg says so (disabled, bad binding)
    return None


class Crypto:
    """A gpg homedir with the records keys, the services' keys and the outbox key."""

    def __init__(self, homedir: Path, binary: str = "gpg", passphrase: str | None = None) -> None:
        self.homedir = ensure_private_dir(homedir)
        self._agent_conf()
        self.gpg = gnupg.GPG(gnupghome=str(homedir), gpgbinary=binary, options=_GPG_OPTIONS)
        self.gpg.encoding = "utf-8"
        self._passphrase = derive_secret(passphrase, "outbox-key").hex() if passphrase else None
        self._sealer = AESGCM(derive_secret(passphrase, "outbox-seal")) if passphrase else None
        self._outbox_fpr: str | None = None
        self._listed: list[dict[str, Any]] | None = None  # gpg --list-keys, until a change
        self._certs: dict[str, pysequoia.Cert | None] = {}  # by subkey: `_cert`, until a change

    def _agent_conf(self, text: str = AGENT_CONF) -> None:
        """Tell this homedir's gpg-agent to cache no passphrase (a running one rereads it and
        forgets what it cached)."""
        conf = self.homedir / "gpg-agent.conf"
        if conf.exists() and conf.read_text(encoding="utf-8", errors="replace") == text:
            return
        conf.write_text(text, encoding="utf-8")
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

    def sync_keys_dir(self, keys_dir: Path) -> KeyChanges:
        """Make the homedir's public keys what `keys_dir` holds (`*.asc`): new and changed
        files are imported, a subkey no file holds any more is removed, and a key whose last
        file is gone is deleted. A key held by several files is all of them merged (gpg keeps
        every subkey and the newest self-signatures: a renewed key's new subkey and expiry
        win, whichever file sorts first). A key with a secret part (the outbox key) is never
        touched. Every file is read first: a missing or empty folder, or a file with a secret
        key or no key, refuses the whole sync (CryptoError naming it) and changes nothing. Run
        under `setup_lock`."""
        files = self.read_keys_dir(keys_dir)
        if not files:  # a folder emptied by accident (a failed mount) would delete every key
            raise CryptoError(f"{keys_dir}: the keys folder (gpg.keys_dir) holds no .asc file")
        wanted: dict[str, set[str]] = {}
        for file in files:
            for fpr, subkeys in file.keys.items():
                wanted.setdefault(fpr, set()).update(subkeys)
        imported = [fpr for file in files for fpr in self._import(file.text)]
        listed = {normalise_fingerprint(k["fingerprint"]): k for k in self.gpg.list_keys()}
        gone = [fpr for fpr in listed if fpr not in wanted]
        cut = [
            (fpr, sub)
            for fpr, key in listed.items()
            if fpr in wanted
            for sub in (normalise_fingerprint(s[2]) for s in key.get("subkeys", []))
            if sub not in wanted[fpr]
        ]
        if gone or cut:  # asking for secret keys starts gpg-agent: only when it matters
            with_secret = self.gpg.list_keys(secret=True)
            secret = {normalise_fingerprint(k["fingerprint"]) for k in with_secret}
            gone = [fpr for fpr in gone if fpr not in secret]
            cut = [(fpr, sub) for fpr, sub in cut if fpr not in secret]
        for fpr in gone:
            self._delete(fpr, f"{fpr} (its file left {keys_dir})")
        for fpr, sub in cut:
            self._delete(sub, f"subkey {sub} of {fpr}", subkey=True)
        return KeyChanges(tuple(imported), tuple(gone), tuple(sub for _, sub in cut))

    def read_keys_dir(self, keys_dir: Path) -> list[KeyFile]:
        """Each `*.asc` file of `keys_dir` (sorted by name) with the keys it holds; CryptoError
        for a folder that cannot be read and a file with a secret key or no key."""
        if not keys_dir.is_dir():
            raise CryptoError(f"{keys_dir}: the keys folder (gpg.keys_dir) does not exist")
        try:  # unlike glob, listdir says when the folder cannot be read (it is not empty then)
            names = sorted(name for name in os.listdir(keys_dir) if name.endswith(".asc"))
        except OSError as exc:
            raise CryptoError(
                f"{keys_dir}: the keys folder (gpg.keys_dir) cannot be read ({exc.strerror})"
            ) from None
        found = []
        for path in (keys_dir / name for name in names):
            text = path.read_text(encoding="ascii", errors="replace")
            if "PRIVATE KEY BLOCK" in text:
                raise CryptoError(f"{path}: holds a secret key; the keys folder is for public keys")
            held = {
                normalise_fingerprint(key["fingerprint"]): {
                    normalise_fingerprint(sub[2]) for sub in key.get("subkeys", [])
                }
                for key in self.gpg.scan_keys_mem(text)
                if key.get("fingerprint")
            }
            if not held:
                raise CryptoError(f"{path}: no OpenPGP public key could be read")
            found.append(KeyFile(path, text, held))
        return found

    def _import(self, text: str) -> list[str]:
        """Import (merge) the keys in `text`; the fingerprints of those that changed."""
        self.forget_keys()
        result = self.gpg.import_keys(text)
        if not result.fingerprints:
            raise CryptoError(f"gpg could not import a key from the keys folder: {result.status}")
        return [
            normalise_fingerprint(r["fingerprint"])
            for r in result.results
            if r.get("ok", "0") != "0"
        ]

    def _delete(self, fingerprint: str, what: str, *, subkey: bool = False) -> None:
        """Delete a public key, or one subkey; gpg itself refuses a key with a secret part."""
        self.forget_keys()
        result = self.gpg.delete_keys(fingerprint, exclamation_mode=subkey)
        if str(result.status) != "ok":
            raise CryptoError(f"could not delete the public key {what}: {result.status}")

    def keys(self) -> dict[str, KeyInfo]:
        """Every public key in the homedir by primary fingerprint, as of now (the listing is
        kept until `forget_keys`; expiry is judged against the clock at each call)."""
        listed_now = self._listed  # one read: another thread may forget it meanwhile
        if listed_now is None:
            listed_now = self._listed = list(self.gpg.list_keys())
        now = time.time()
        listed = (_key_info(key, now) for key in listed_now)
        return {info.fingerprint: info for info in listed}

    def forget_keys(self) -> None:
        """List the keyring again at the next use (another process may have changed it)."""
        self._listed = None
        self._certs.clear()

    def _cert(self, key: KeyInfo) -> pysequoia.Cert | None:
        """The usable key as Sequoia encrypts to it: its primary key and the one encryption
        subkey gpg chooses (`key.subkey`); None when gpg must encrypt (the primary key can
        encrypt too, or Sequoia cannot read the key)."""
        subkey = key.subkey or key.fingerprint
        if subkey not in self._certs:
            self._certs[subkey] = self._read_cert(key.fingerprint, subkey)
        return self._certs[subkey]

    def _read_cert(self, fingerprint: str, subkey: str) -> pysequoia.Cert | None:
        listed = next(
            (
                k
                for k in self._listed or []
                if normalise_fingerprint(k["fingerprint"]) == fingerprint
            ),
            None,
        )
        if listed is None or subkey == fingerprint or "e" in listed.get("cap", ""):
            return None
        try:
            cert = pysequoia.Cert.from_bytes(str(self.gpg.export_keys(f"{subkey}!")).encode())
            probe = pysequoia.encrypt(_PROBE, recipients=[cert], armor=False)
        except Exception:  # not a key Sequoia reads: gpg encrypts to it
            return None
        return cert if _gpg_reads(bytes(probe)) else None

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
        keys = [self.check_key(f) for f in fingerprints]
        certs = [cert for cert in map(self._cert, keys) if cert is not None]
        if len(certs) == len(keys) and len(data) < STREAM_BYTES:
            try:
                return bytes(pysequoia.encrypt(data, recipients=certs))
            except Exception:  # Sequoia refuses what gpg may take: gpg decides
                self._certs.update((key.subkey or key.fingerprint, None) for key in keys)
        recipients = [key.fingerprint for key in keys]
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

    def outbox_key(self) -> KeyInfo | None:
        """The outbox key as it is now; None when none was made yet (this never makes one)."""
        found = self._secret_keys_with(OUTBOX_UID)
        return self.keys().get(found[0]) if found else None

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
        self.close()
        self._agent_conf(GENERATION_AGENT_CONF)
        try:
            result = self.gpg.gen_key(spec)
        finally:
            self.forget_keys()
            self.close()  # the agent that cached the new key's passphrase goes
            self._agent_conf()
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
            return self._gpg_open(self._gpg_seal(_PROBE)) == _PROBE
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
        """Seal `data` for the outbox, in process (`SEAL_PREFIX`, nonce, AES-256-GCM)."""
        nonce = os.urandom(_NONCE_BYTES)
        return SEAL_PREFIX + nonce + self._outbox_sealer().encrypt(nonce, data, SEAL_PREFIX)

    def decrypt_outbox(self, data: bytes) -> bytes:
        """Open outbox data sealed in process, or (from before) to the outbox key with gpg."""
        if not data.startswith(SEAL_PREFIX):
            return self._gpg_open(data)
        nonce = data[len(SEAL_PREFIX) : len(SEAL_PREFIX) + _NONCE_BYTES]
        sealed = data[len(SEAL_PREFIX) + _NONCE_BYTES :]
        try:
            return self._outbox_sealer().decrypt(nonce, sealed, SEAL_PREFIX)
        except InvalidTag:
            raise DecryptError(
                "could not decrypt outbox data: it was sealed with another outbox passphrase, "
                "or it was changed"
            ) from None

    def _outbox_sealer(self) -> AESGCM:
        if self._sealer is None:
            self._require_passphrase()  # raises, naming the config keys
        assert self._sealer is not None
        return self._sealer

    def _gpg_seal(self, data: bytes) -> bytes:
        """Encrypt `data` to our own outbox key (no pin to check: the key is ours)."""
        fpr = self.outbox_fingerprint()
        result = self.gpg.encrypt(data, [fpr], armor=True, always_trust=True)
        if not result.ok or not result.data:
            raise EncryptError(f"gpg could not encrypt to the outbox key {fpr}: {result.status}")
        return bytes(result.data)

    def _gpg_open(self, data: bytes) -> bytes:
        result = self.gpg.decrypt(data, passphrase=self._require_passphrase())
        if not result.ok:
            raise DecryptError(f"could not decrypt outbox data: {result.status}")
        return bytes(result.data)

    def reseal(self, data: bytes) -> bytes | None:
        """Outbox data sealed to any of our gpg outbox keys, sealed in process now; None when no
        key of ours opens it (e.g. another instance's) or it is sealed in process already."""
        if data.startswith(SEAL_PREFIX):
            return None
        result = self.gpg.decrypt(data, passphrase=self._require_passphrase())
        if not result.ok:
            if "no secret key" in str(result.status) or "NO_SECKEY" in str(result.stderr):
                return None
            raise DecryptError(f"could not decrypt outbox data to re-seal it: {result.status}")
        return self.encrypt_for_outbox(bytes(result.data))

    def delete_secret_key(self, fingerprint: str) -> None:
        """Delete a secret key and its public key from the homedir."""
        fpr = normalise_fingerprint(fingerprint)
        self.forget_keys()
        secret = self.gpg.delete_keys(fpr, secret=True, expect_passphrase=False)
        public = self.gpg.delete_keys(fpr)
        if str(secret.status) != "ok" or str(public.status) != "ok":
            raise CryptoError(f"could not delete the old outbox key {fpr}: {secret.status}")

    def __enter__(self) -> Crypto:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop this homedir's gpg-agent (tests and short runs leave no sockets behind)."""
        subprocess.run(
            ["gpgconf", "--homedir", str(self.homedir), "--kill", "gpg-agent"],
            capture_output=True,
            check=False,
        )


@contextmanager
def scratch_keyring(binary: str = "gpg", keys_dir: Path | None = None) -> Iterator[Crypto]:
    """A throwaway homedir holding the keys of `keys_dir` (when given), deleted afterwards."""
    with (
        tempfile.TemporaryDirectory(prefix="intake-keys-") as home,
        Crypto(Path(home) / "gnupg", binary) as crypto,
    ):
        if keys_dir is not None:
            crypto.sync_keys_dir(keys_dir)
        yield crypto


@dataclass(frozen=True)
class PublicKey:
    """One public key read from a key file: what it is, and its ASCII armour (public only)."""

    info: KeyInfo
    armored: str


def read_public_key(data: bytes, where: str, binary: str = "gpg") -> PublicKey:
    """The one public key in `data` (a key file, armoured or binary), able to encrypt now; a
    CryptoError naming `where` when it holds a secret key, no key or several keys, or when its
    key cannot encrypt (no encryption subkey, expired, revoked)."""
    with scratch_keyring(binary) as crypto:
        listed = crypto.gpg.scan_keys_mem(data)
        if b"PRIVATE KEY BLOCK" in data or any(key.get("type") == "sec" for key in listed):
            raise CryptoError(
                f"{where}: holds a secret key; give the public key only "
                "(gpg --armor --export FINGERPRINT), and keep the secret key with its holder"
            )
        fingerprints = sorted({normalise_fingerprint(k["fingerprint"]) for k in listed})
        if not fingerprints:
            raise CryptoError(f"{where}: no OpenPGP public key could be read")
        if len(fingerprints) > 1:
            raise CryptoError(
                f"{where}: holds {len(fingerprints)} keys ({', '.join(fingerprints)}); "
                "import one key a file"
            )
        fpr = fingerprints[0]
        crypto.gpg.import_keys(data)
        crypto.forget_keys()
        info = crypto.keys().get(fpr)
        if info is None:
            raise CryptoError(f"{where}: gpg could not import the key {fpr}")
        if info.problem:
            raise CryptoError(f"{where}: key {fpr} cannot be used to encrypt: {info.problem}")
        return PublicKey(info, str(crypto.gpg.export_keys(fpr)))


class KeyholderHome:
    """A records keyholder's own GnuPG home (`--gnupghome` of `intake quarantine release` and
    `intake show`), used as it is: nothing is written to it, its agent is left alone. It only
    decrypts stored records, in memory; the daemon's homedir never holds a records secret key."""

    def __init__(self, homedir: Path, binary: str = "gpg") -> None:
        if not homedir.is_dir():
            raise CryptoError(f"{homedir} is not a folder (a GnuPG home)")
        self.homedir = homedir
        # Decrypting needs no trust computation: without these gpg would rewrite trustdb.gpg.
        options = [*_GPG_OPTIONS, "--no-auto-check-trustdb", "--trust-model", "always"]
        self.gpg = gnupg.GPG(gnupghome=str(homedir), gpgbinary=binary, options=options)

    def secret_keys(self) -> set[str]:
        """The primary fingerprints of the keys whose secret (or secret subkey) is here."""
        keys = self.gpg.list_keys(secret=True)
        return {normalise_fingerprint(key["fingerprint"]) for key in keys}

    def decrypt(self, data: bytes) -> bytes:
        """The plaintext of a stored record; DecryptError when no key here opens it."""
        result = self.gpg.decrypt(data)
        if not result.ok:
            raise DecryptError(f"gpg in {self.homedir} could not decrypt it: {result.status}")
        return bytes(result.data)
