"""crypto.py against the real gpg: pinned keys only, every failure a specific error."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from pathlib import Path

import pysequoia
import pytest
from pysequoia import Profile

from pipeline.crypto import STREAM_BYTES, Crypto, CryptoError, KeyUnusableError, ensure_private_dir
from tests.servers.gpg import KeySet


@pytest.fixture
def crypto(tmp_path: Path, gpg_keys: KeySet) -> Crypto:
    found = Crypto(tmp_path / "g", passphrase="unit test passphrase")
    found.sync_keys_dir(gpg_keys.keys_dir)
    yield found
    found.close()


def test_encrypt_to_pinned_key_decrypts_with_its_secret(crypto: Crypto, gpg_keys: KeySet) -> None:
    armored = crypto.encrypt(b"secret text", [gpg_keys.records_fpr])
    assert armored.startswith(b"-----BEGIN PGP MESSAGE-----")
    assert b"secret text" not in armored
    assert gpg_keys.decrypt(armored) == b"secret text"


def test_unknown_key_is_refused(crypto: Crypto) -> None:
    with pytest.raises(KeyUnusableError, match="no public key"):
        crypto.encrypt(b"x", ["F" * 40])


def test_expired_key_is_refused(crypto: Crypto, gpg_keys: KeySet, tmp_path: Path) -> None:
    fpr, public = gpg_keys.make_key("Expired", "old@example.ac.uk", expire=dt.date(2020, 1, 1))
    (tmp_path / "k").mkdir()
    (tmp_path / "k" / "old.asc").write_text(public)
    crypto.sync_keys_dir(tmp_path / "k")
    with pytest.raises(KeyUnusableError, match="expired"):
        crypto.encrypt(b"x", [fpr])


def test_outbox_roundtrip_and_only_the_outbox_secret(crypto: Crypto) -> None:
    sealed = crypto.encrypt_for_outbox(b"reporter@example.org")
    assert b"reporter" not in sealed
    assert crypto.decrypt_outbox(sealed) == b"reporter@example.org"
    crypto.check_secret_keys()  # only the outbox key: no error


def test_secret_key_in_keys_dir_is_refused(crypto: Crypto, tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "x.asc").write_text("-----BEGIN PGP PRIVATE KEY BLOCK-----\n")
    with pytest.raises(CryptoError, match="secret key"):
        crypto.sync_keys_dir(tmp_path / "s")


def test_readable_homedir_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "open"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    with pytest.raises(CryptoError, match="chmod 700"):
        ensure_private_dir(home)


def _counting_gpg(tmp_path: Path) -> tuple[str, Path]:
    """A gpg binary that logs its arguments, one line per process, then runs the real gpg."""
    log = tmp_path / "gpg-calls.log"
    wrapper = tmp_path / "gpg-counting"
    real = shutil.which("gpg")
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper), log


def _runs(log: Path, option: str) -> int:
    return sum(option in line.split() for line in log.read_text().splitlines())


def test_keys_are_listed_once_until_forgotten_and_encryption_runs_no_gpg(
    tmp_path: Path, gpg_keys: KeySet
) -> None:
    binary, log = _counting_gpg(tmp_path)
    with Crypto(tmp_path / "g", binary, passphrase="unit test passphrase") as crypto:
        crypto.sync_keys_dir(gpg_keys.keys_dir)
        log.write_text("")
        for number in range(4):
            armored = crypto.encrypt(f"report {number}".encode(), [gpg_keys.records_fpr])
            assert gpg_keys.decrypt(armored) == f"report {number}".encode()  # stock gpg opens it
            crypto.encrypt_for_outbox(b"reporter@example.org")  # in process: no gpg at all
        runs = log.read_text().splitlines()
        assert (_runs(log, "--list-keys"), _runs(log, "--export"), len(runs)) == (1, 1, 2)
        crypto.forget_keys()  # each poll: another process may have changed the keyring
        crypto.encrypt(b"a report", [gpg_keys.records_fpr])
        assert (_runs(log, "--list-keys"), _runs(log, "--encrypt")) == (2, 0)


def test_large_data_is_left_to_gpg_which_streams_and_compresses(
    tmp_path: Path, gpg_keys: KeySet
) -> None:
    binary, log = _counting_gpg(tmp_path)
    below, large = b"x" * (STREAM_BYTES - 1), b"y" * STREAM_BYTES
    with Crypto(tmp_path / "g", binary, passphrase="unit test passphrase") as crypto:
        crypto.sync_keys_dir(gpg_keys.keys_dir)
        small_armour = crypto.encrypt(below, [gpg_keys.records_fpr])
        assert _runs(log, "--encrypt") == 0  # in process
        large_armour = crypto.encrypt(large, [gpg_keys.records_fpr])
        assert _runs(log, "--encrypt") == 1
    assert len(small_armour) > len(below)  # Sequoia does not compress
    assert len(large_armour) < len(large) // 100  # gpg does
    assert gpg_keys.decrypt(small_armour) == below and gpg_keys.decrypt(large_armour) == large


def test_an_encrypt_to_in_the_homedirs_gpg_conf_adds_no_recipient(
    crypto: Crypto, gpg_keys: KeySet, tmp_path: Path
) -> None:
    other = next(fpr for fpr in gpg_keys.services.values() if fpr != gpg_keys.records_fpr)
    (tmp_path / "g" / "gpg.conf").write_text(f"encrypt-to {other}\n")
    armored = crypto.encrypt(b"z" * STREAM_BYTES, [gpg_keys.records_fpr])  # gpg encrypts it
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o700)
    listed = subprocess.run(
        ["gpg", "--homedir", str(empty), "--batch", "--list-packets"],
        input=armored,
        capture_output=True,
        check=False,
    ).stdout.decode()
    assert listed.count(":pubkey enc packet:") == 1


def test_a_key_deleted_through_sync_is_refused_at_once(
    tmp_path: Path, crypto: Crypto, gpg_keys: KeySet
) -> None:
    crypto.encrypt(b"x", [gpg_keys.records_fpr])  # the listing is kept from here on
    fpr, public = gpg_keys.make_key("Leaving", "leaving@example.ac.uk")
    (tmp_path / "k").mkdir()
    (tmp_path / "k" / "leaving.asc").write_text(public)
    crypto.sync_keys_dir(tmp_path / "k")  # the records key's file is gone: it is deleted
    crypto.encrypt(b"x", [fpr])
    with pytest.raises(KeyUnusableError, match="no public key"):
        crypto.encrypt(b"x", [gpg_keys.records_fpr])


def test_a_primary_key_that_encrypts_too_is_left_to_gpg(
    tmp_path: Path, crypto: Crypto, gpg_keys: KeySet
) -> None:
    spec = gpg_keys.gpg.gen_key_input(
        key_type="RSA",
        key_length=1024,
        key_usage="sign encrypt",
        name_real="One Key",
        name_email="onekey@example.ac.uk",
        no_protection=True,
        expire_date="0",
    )
    fpr = str(gpg_keys.gpg.gen_key(spec).fingerprint).upper()
    (tmp_path / "k").mkdir()
    (tmp_path / "k" / "one.asc").write_text(gpg_keys.gpg.export_keys(fpr))
    crypto.sync_keys_dir(tmp_path / "k")
    armored = crypto.encrypt(b"to the primary key", [fpr])
    assert gpg_keys.recipients(armored) == [fpr[-16:]]  # what gpg chose, and only that
    assert gpg_keys.decrypt(armored) == b"to the primary key"


def test_a_key_asking_for_rfc9580_messages_still_gets_what_gpg_reads(
    tmp_path: Path, crypto: Crypto, gpg_keys: KeySet
) -> None:
    secret = pysequoia.Tsk.generate("Sequoia Made <sq@example.ac.uk>", profile=Profile.RFC4880)
    made = secret.extract_certificate()
    assert gpg_keys.gpg.import_keys(str(secret)).fingerprints  # gpg 2.2 holds its secret
    (tmp_path / "k").mkdir()
    (tmp_path / "k" / "sq.asc").write_text(str(made))
    crypto.sync_keys_dir(tmp_path / "k")
    armored = crypto.encrypt(b"for a key Sequoia made", [made.fingerprint.upper()])
    assert gpg_keys.decrypt(armored) == b"for a key Sequoia made"
