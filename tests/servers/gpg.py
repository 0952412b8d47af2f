"""Throwaway OpenPGP keys for one test session, made by the real gpg.

In: the ``gpg`` binary (Debian package ``gnupg``). Out: a ``KeySet``: a GnuPG home
holding the secret keys of "records" and of two services, a folder with their public
keys as ``<name>.asc`` (what the pipeline is configured with), the fingerprints, and
``decrypt()`` to read what the pipeline encrypted. Keys are ed25519 with a cv25519
encryption subkey and no passphrase, so the three take well under a second.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import gnupg
import pytest

#: name → e-mail of the keys every session has; all but "records" are services.
KEYS: dict[str, str] = {
    "records": "records@example.ac.uk",
    "advice-centre": "advice@su.example.ac.uk",
    "student-services": "support@example.ac.uk",
}

#: Never look keys up on the network: a missing key must fail at once.
GPG_CONF = "auto-key-locate local\nno-auto-key-retrieve\n"


class GpgSetupError(RuntimeError):
    """gpg could not make or export a test key."""


@dataclass
class KeySet:
    """The session's keys; see the module docstring."""

    home: Path
    keys_dir: Path
    records_fpr: str
    records_email: str
    services: dict[str, str]
    emails: dict[str, str]
    gpg: gnupg.GPG = field(repr=False)

    def decrypt(self, armored: bytes | str) -> bytes:
        """Decrypt with the secret keys in ``home``; fail the test when gpg cannot."""
        result = self.gpg.decrypt(armored)
        assert result.ok, f"gpg could not decrypt: {result.status}\n{result.stderr}"
        return bytes(result.data)

    def encrypt(self, data: bytes | str, *fingerprints: str) -> str:
        """ASCII-armoured ciphertext of ``data`` for ``fingerprints``."""
        result = self.gpg.encrypt(data, list(fingerprints), armor=True, always_trust=True)
        assert result.ok, f"gpg could not encrypt: {result.status}\n{result.stderr}"
        return str(result)

    def make_key(
        self, name: str, email: str, expire: str | dt.date | None = None
    ) -> tuple[str, str]:
        """Generate one more key in ``home``; return ``(fingerprint, public armour)``.

        ``expire``: ``None`` (never), a gpg period such as ``"2d"``, or a date; a date
        in the past gives a key that is already expired (created the day before).
        The key is not written to ``keys_dir``.
        """
        return generate_key(self.gpg, name, email, expire)

    def make_key_with_subkeys(
        self, name: str, email: str, subkeys: list[str | dt.date]
    ) -> tuple[str, str]:
        """A key whose primary (sign only) never expires, with one encryption subkey per
        entry, added in order; return ``(fingerprint, public armour)``. An entry is a gpg
        period such as ``"5d"`` or a date; a date in the past gives a subkey that expired
        then (created the day before, so older than the others)."""
        past = [day for day in subkeys if isinstance(day, dt.date) and day <= dt.date.today()]
        created = min(past, default=dt.date.today()) - dt.timedelta(days=2)
        spec = self.gpg.gen_key_input(
            key_type="EDDSA",
            key_curve="ed25519",
            key_usage="sign",
            name_real=name,
            name_email=email,
            no_protection=True,
            expire_date="0",
            creation_date=created.strftime("%Y%m%dT000000"),
        )
        key = self.gpg.gen_key(spec)
        if not key.fingerprint:
            raise GpgSetupError(f"gpg did not create the key {name} <{email}>:\n{key.stderr}")
        fpr = str(key.fingerprint).upper()
        for expire in subkeys:
            self.add_encryption_subkey(fpr, expire)
        return fpr, self.gpg.export_keys(fpr)

    def add_encryption_subkey(self, fingerprint: str, expire: str | dt.date) -> str:
        """Add a cv25519 encryption subkey to a key made here (see `make_key_with_subkeys`
        for ``expire``); the new public armour of the whole key."""
        argv = ["gpg", "--homedir", str(self.home), "--batch", "--pinentry-mode", "loopback"]
        argv += ["--passphrase", ""]
        period = expire
        if isinstance(expire, dt.date):
            if expire <= dt.date.today():
                made = expire - dt.timedelta(days=1)
                argv += ["--faked-system-time", made.strftime("%Y%m%dT120000!")]
                period = "1d"
            else:
                period = expire.isoformat()
        argv += ["--quick-add-key", fingerprint, "cv25519", "encr", str(period)]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise GpgSetupError(f"gpg could not add a subkey to {fingerprint}:\n{done.stderr}")
        return str(self.gpg.export_keys(fingerprint))

    def encryption_subkeys(self, fingerprint: str) -> list[str]:
        """The fingerprints of a key's encryption subkeys, oldest first."""
        key = next(k for k in self.gpg.list_keys() if k["fingerprint"] == fingerprint)
        subs = [s for s in key["subkey_info"].values() if "e" in s["cap"]]
        return [s["fingerprint"] for s in sorted(subs, key=lambda s: int(s["date"]))]

    def public_without_subkey(self, fingerprint: str, subkey: str) -> str:
        """The public armour of a key made here, less one subkey (a rotated key file)."""
        with tempfile.TemporaryDirectory(prefix="intake-gpg-cut-") as home:
            copy = gnupg.GPG(gnupghome=home)
            copy.import_keys(self.gpg.export_keys(fingerprint))
            if str(copy.delete_keys(subkey, exclamation_mode=True).status) != "ok":
                raise GpgSetupError(f"gpg could not drop the subkey {subkey} of {fingerprint}")
            armor = str(copy.export_keys(fingerprint))
            kill = ["gpgconf", "--homedir", home, "--kill", "all"]
            subprocess.run(kill, check=False, capture_output=True)
        return armor

    def recipients(self, armored: bytes | str) -> list[str]:
        """The long key ids an OpenPGP message is encrypted to."""
        return [str(keyid).upper() for keyid in self.gpg.get_recipients(armored)]

    def close(self) -> None:
        """Stop this home's gpg-agent and delete the home and the key folder."""
        subprocess.run(
            ["gpgconf", "--homedir", str(self.home), "--kill", "gpg-agent"],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(self.home, ignore_errors=True)
        shutil.rmtree(self.keys_dir, ignore_errors=True)
        with suppress(OSError):
            self.home.parent.rmdir()  # the temp folder make_keyset made, once empty


def make_keyset(base: Path | None = None) -> KeySet:
    """Create a home under ``base`` (a new temp folder by default) and the session keys."""
    if shutil.which("gpg") is None:
        raise GpgSetupError(
            "The gpg binary is not installed: run tests/run.sh as root (it installs the "
            "Debian package gnupg), or apt-get install gnupg."
        )
    # A short path: gpg-agent's socket must fit in a Unix socket name.
    root = Path(base or tempfile.mkdtemp(prefix="intake-gpg-"))
    home, keys_dir = root / "home", root / "keys"
    home.mkdir(mode=0o700)
    keys_dir.mkdir()
    (home / "gpg.conf").write_text(GPG_CONF)
    gpg = gnupg.GPG(gnupghome=str(home))
    fingerprints: dict[str, str] = {}
    for name, email in KEYS.items():
        fingerprints[name], armor = generate_key(gpg, name, email, None)
        (keys_dir / f"{name}.asc").write_text(armor)
    services = {name: fpr for name, fpr in fingerprints.items() if name != "records"}
    return KeySet(
        home=home,
        keys_dir=keys_dir,
        records_fpr=fingerprints["records"],
        records_email=KEYS["records"],
        services=services,
        emails={name: KEYS[name] for name in services},
        gpg=gpg,
    )


def generate_key(
    gpg: gnupg.GPG, name: str, email: str, expire: str | dt.date | None
) -> tuple[str, str]:
    params: dict[str, str] = {"expire_date": "0"}
    if isinstance(expire, str):
        params["expire_date"] = expire
    elif isinstance(expire, dt.date):
        day = expire if not isinstance(expire, dt.datetime) else expire.date()
        if day <= dt.date.today():
            created = day - dt.timedelta(days=1)
            params = {"creation_date": created.strftime("%Y%m%dT000000"), "expire_date": "1d"}
        else:
            params["expire_date"] = day.isoformat()
    spec = gpg.gen_key_input(
        key_type="EDDSA",
        key_curve="ed25519",
        key_usage="sign",
        subkey_type="ECDH",
        subkey_curve="cv25519",
        subkey_usage="encrypt",
        name_real=name,
        name_email=email,
        no_protection=True,
        **params,
    )
    key = gpg.gen_key(spec)
    if not key.fingerprint:
        raise GpgSetupError(f"gpg did not create the key {name} <{email}>:\n{key.stderr}")
    fpr = str(key.fingerprint).upper()
    armor = gpg.export_keys(fpr)
    if "BEGIN PGP PUBLIC KEY BLOCK" not in armor:
        raise GpgSetupError(f"gpg did not export the key {fpr}:\n{armor}")
    return fpr, armor


@pytest.fixture(scope="session")
def gpg_keys() -> Iterator[KeySet]:
    """The session's ``KeySet`` (made once, agent killed and files deleted at the end)."""
    keys = make_keyset()
    try:
        yield keys
    finally:
        keys.close()


def make_legacy_outbox_key(gpg: gnupg.GPG) -> str:
    """An outbox key made the way the daemon made it before passphrases (no protection), for
    the tests of its replacement; its fingerprint."""
    spec = gpg.gen_key_input(
        key_type="EDDSA",
        key_curve="ed25519",
        subkey_type="ECDH",
        subkey_curve="cv25519",
        name_real="report-intake outbox",
        name_email="outbox@report-intake.invalid",
        expire_date=0,
        no_protection=True,
    )
    return str(gpg.gen_key(spec).fingerprint)
