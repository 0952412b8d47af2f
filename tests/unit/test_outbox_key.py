"""The outbox key against the real gpg: protected by a passphrase the homedir does not hold,
never cached by the agent, and an old key without passphrase is replaced without losing data."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import gnupg
import pytest

from pipeline.crypto import (
    AGENT_CONF,
    LEGACY_OUTBOX_UID,
    SEAL_PREFIX,
    Crypto,
    CryptoError,
    derive_secret,
)
from tests.servers.gpg import make_legacy_outbox_key

PASSPHRASE = "unit outbox passphrase 31d7"


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    found = tmp_path / "g"
    yield found
    subprocess.run(["gpgconf", "--homedir", str(found), "--kill", "gpg-agent"], check=False)


def legacy_key(home: Path) -> tuple[gnupg.GPG, str]:
    """An outbox key made the way the daemon made it before passphrases."""
    home.mkdir(mode=0o700)
    gpg = gnupg.GPG(gnupghome=str(home))
    fpr = make_legacy_outbox_key(gpg)
    assert LEGACY_OUTBOX_UID in gpg.list_keys(secret=True)[0]["uids"]
    return gpg, fpr


def test_the_outbox_key_opens_only_with_its_passphrase(home: Path) -> None:
    crypto = Crypto(home, passphrase=PASSPHRASE)
    sealed = crypto.encrypt_for_outbox(b"reporter@example.org")
    assert crypto.decrypt_outbox(sealed) == b"reporter@example.org"
    crypto.check_outbox_passphrase()
    wrong = Crypto(home, passphrase="not the passphrase")
    with pytest.raises(CryptoError, match="could not decrypt"):
        wrong.decrypt_outbox(sealed)  # right after a good one: nothing cached by the agent
    with pytest.raises(CryptoError, match="does not open the outbox key"):
        wrong.check_outbox_passphrase()
    plain = gnupg.GPG(gnupghome=str(home)).decrypt(sealed, passphrase="")
    assert not plain.ok and b"reporter" not in bytes(plain.data)
    assert (home / "gpg-agent.conf").read_text() == AGENT_CONF


def test_no_passphrase_names_the_config_keys(home: Path) -> None:
    crypto = Crypto(home)
    with pytest.raises(CryptoError, match=r"gpg\.outbox_passphrase_file"):
        crypto.encrypt_for_outbox(b"x")  # no key is made without one


def test_a_key_without_passphrase_is_replaced_and_its_data_resealed(home: Path) -> None:
    old_gpg, old = legacy_key(home)
    sealed_old = bytes(old_gpg.encrypt(b"queued@example.org", [old], armor=True).data)
    crypto = Crypto(home, passphrase=PASSPHRASE)
    assert crypto.legacy_outbox_keys() == [old.upper()]
    new = crypto.outbox_fingerprint()
    assert new != old.upper()
    resealed = crypto.reseal(sealed_old)
    assert resealed is not None
    crypto.delete_secret_key(old)
    assert crypto.legacy_outbox_keys() == []
    crypto.check_secret_keys()  # only the protected key is left
    assert crypto.decrypt_outbox(resealed) == b"queued@example.org"
    assert crypto.reseal(sealed_old) is None  # nothing here opens the old key's data now
    assert not gnupg.GPG(gnupghome=str(home)).decrypt(resealed, passphrase="").ok


def test_the_limiter_secret_depends_on_passphrase_and_purpose() -> None:
    one = derive_secret(PASSPHRASE, "ack-limit")
    assert len(one) == 32 and one == derive_secret(PASSPHRASE, "ack-limit")
    assert one != derive_secret(PASSPHRASE + "x", "ack-limit")
    assert one != derive_secret(PASSPHRASE, "other")


def test_outbox_data_is_sealed_in_process_and_old_gpg_sealed_data_still_opens(home: Path) -> None:
    crypto = Crypto(home, passphrase=PASSPHRASE)
    old = crypto._gpg_seal(b"queued before the upgrade")  # how it was sealed until now
    sealed = crypto.encrypt_for_outbox(b"reporter@example.org")
    assert sealed.startswith(SEAL_PREFIX) and b"reporter" not in sealed
    assert crypto.encrypt_for_outbox(b"reporter@example.org") != sealed  # a fresh nonce each
    assert crypto.decrypt_outbox(sealed) == b"reporter@example.org"
    assert crypto.decrypt_outbox(old) == b"queued before the upgrade"
    assert crypto.reseal(sealed) is None  # nothing to move: sealed in process already
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(CryptoError, match="another outbox passphrase, or it was changed"):
        crypto.decrypt_outbox(tampered)
    with pytest.raises(CryptoError, match="another outbox passphrase"):
        Crypto(home, passphrase="not the passphrase").decrypt_outbox(sealed)
