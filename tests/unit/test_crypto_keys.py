"""crypto.py's view of keys against the real gpg: the encryption subkey gpg will use decides
whether a key is usable and when it expires; `sync_keys_dir` makes the keyring what the keys
folder holds (a key in two files is both merged) and never touches the outbox key; `printable`
shows a user id without anything a terminal would act on."""

from __future__ import annotations

import datetime as dt
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.app import expiring_keys
from pipeline.crypto import Crypto, CryptoError, KeyChanges, KeyUnusableError, printable
from tests.servers.gpg import KeySet

YESTERDAY = dt.date.today() - dt.timedelta(days=1)


@pytest.fixture
def keys_dir(tmp_path: Path, gpg_keys: KeySet) -> Path:
    folder = tmp_path / "keys"
    shutil.copytree(gpg_keys.keys_dir, folder)
    return folder


@pytest.fixture
def crypto(tmp_path: Path, keys_dir: Path) -> Iterator[Crypto]:
    found = Crypto(tmp_path / "g", passphrase="unit test passphrase")
    found.sync_keys_dir(keys_dir)
    yield found
    found.close()


def pin(crypto: Crypto, keys_dir: Path, name: str, armor: str) -> KeyChanges:
    """Write a key file and sync the keyring with the folder."""
    (keys_dir / f"{name}.asc").write_text(armor)
    return crypto.sync_keys_dir(keys_dir)


def test_a_subkey_expiring_soon_is_when_the_key_expires(
    crypto: Crypto, keys_dir: Path, gpg_keys: KeySet
) -> None:
    fpr, armor = gpg_keys.make_key_with_subkeys("Soon", "soon@example.ac.uk", ["5d"])
    pin(crypto, keys_dir, "soon", armor)

    info = crypto.check_key(fpr)

    assert info.subkey == gpg_keys.encryption_subkeys(fpr)[0]
    assert info.expires is not None and 4 * 86400 < info.expires - time.time() <= 5 * 86400
    assert expiring_keys(crypto.keys(), {fpr: "soon"}, 14) == [(fpr, 4)]


def test_an_expired_encryption_subkey_makes_the_key_unusable(
    crypto: Crypto, keys_dir: Path, gpg_keys: KeySet
) -> None:
    fpr, armor = gpg_keys.make_key_with_subkeys("Lapsed", "lapsed@example.ac.uk", [YESTERDAY])
    pin(crypto, keys_dir, "lapsed", armor)
    subkey = gpg_keys.encryption_subkeys(fpr)[0]

    with pytest.raises(KeyUnusableError, match=f"{subkey}, expired on {YESTERDAY}"):
        crypto.encrypt(b"x", [fpr])
    assert expiring_keys(crypto.keys(), {fpr: "lapsed"}, 14) == []  # a problem, not a warning


def test_another_valid_encryption_subkey_keeps_the_key_usable(
    crypto: Crypto, keys_dir: Path, gpg_keys: KeySet
) -> None:
    fpr, armor = gpg_keys.make_key_with_subkeys(
        "Renewed", "renewed@example.ac.uk", [YESTERDAY, "3y"]
    )
    pin(crypto, keys_dir, "renewed", armor)
    valid = gpg_keys.encryption_subkeys(fpr)[1]

    info = crypto.check_key(fpr)
    armored = crypto.encrypt(b"to the valid subkey", [fpr])

    assert info.problem is None and info.subkey == valid
    assert gpg_keys.recipients(armored) == [valid[-16:]]
    assert expiring_keys(crypto.keys(), {fpr: "renewed"}, 14) == []


def test_a_later_subkey_expiring_first_still_counts_the_last_one(
    crypto: Crypto, keys_dir: Path, gpg_keys: KeySet
) -> None:
    fpr, armor = gpg_keys.make_key_with_subkeys("Two", "two@example.ac.uk", ["3y", "5d"])
    pin(crypto, keys_dir, "two", armor)

    info = crypto.check_key(fpr)

    assert info.subkey is not None  # the one gpg encrypts to:
    assert gpg_keys.recipients(crypto.encrypt(b"x", [fpr])) == [info.subkey[-16:]]
    assert info.expires is not None and info.expires - time.time() > 2 * 365 * 86400


def test_a_removed_file_deletes_its_key_and_never_the_outbox_key(
    crypto: Crypto, keys_dir: Path, gpg_keys: KeySet
) -> None:
    sealed = crypto.encrypt_for_outbox(b"queued acknowledgement")
    outbox = crypto.outbox_fingerprint()
    advice = gpg_keys.services["advice-centre"]
    (keys_dir / "advice-centre.asc").unlink()

    changes = crypto.sync_keys_dir(keys_dir)

    assert changes.deleted == (advice,) and not changes.imported
    held = crypto.keys()
    assert advice not in held and gpg_keys.records_fpr in held and outbox in held
    with pytest.raises(KeyUnusableError, match="no public key"):
        crypto.encrypt(b"x", [advice])
    assert crypto.decrypt_outbox(sealed) == b"queued acknowledgement"
    crypto.check_secret_keys()  # still exactly the outbox key


def test_an_unchanged_folder_changes_nothing(crypto: Crypto, keys_dir: Path) -> None:
    assert not crypto.sync_keys_dir(keys_dir)


def test_a_subkey_left_out_of_the_file_is_removed(
    crypto: Crypto, keys_dir: Path, gpg_keys: KeySet
) -> None:
    fpr, armor = gpg_keys.make_key_with_subkeys("Cut", "cut@example.ac.uk", ["3y", "3y"])
    pin(crypto, keys_dir, "cut", armor)
    kept, dropped = gpg_keys.encryption_subkeys(fpr)

    changes = pin(crypto, keys_dir, "cut", gpg_keys.public_without_subkey(fpr, dropped))

    assert changes.pruned == (dropped,)
    assert crypto.check_key(fpr).subkey == kept
    assert gpg_keys.recipients(crypto.encrypt(b"x", [fpr])) == [kept[-16:]]


def test_a_key_in_two_files_is_merged_and_its_renewed_subkey_and_expiry_win(
    crypto: Crypto, keys_dir: Path, gpg_keys: KeySet
) -> None:
    """`student-services.asc` holds the key as it was, `<FPR>.asc` (sorting first) the key
    renewed: neither file's subkeys may be cut because the other sorts last."""
    fpr, old = gpg_keys.make_key_with_subkeys("Twice", "twice@example.ac.uk", ["5d"])
    pin(crypto, keys_dir, "twice", old)  # "twice.asc" sorts after any fingerprint
    time.sleep(1.1)  # subkeys made in one second tie: gpg would take either
    renewed = gpg_keys.add_encryption_subkey(fpr, "2y")
    expiring, new = gpg_keys.encryption_subkeys(fpr)

    changes = pin(crypto, keys_dir, fpr, renewed)
    info = crypto.check_key(fpr)

    assert sorted(path.name for path in keys_dir.glob("*.asc"))[0] == f"{fpr}.asc"
    assert changes.imported == (fpr,) and changes.pruned == ()
    assert info.subkey == new
    assert info.expires is not None and info.expires - time.time() > 365 * 86400
    assert gpg_keys.recipients(crypto.encrypt(b"x", [fpr])) == [new[-16:]]
    assert expiring_keys(crypto.keys(), {fpr: "twice"}, 14) == []
    assert not crypto.sync_keys_dir(keys_dir)  # settled: the next poll changes nothing
    (keys_dir / f"{fpr}.asc").unlink()  # the renewed file goes: only the old subkey is left
    assert crypto.sync_keys_dir(keys_dir).pruned == (new,)
    assert crypto.check_key(fpr).subkey == expiring


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (
            "Evil \x1b[2J\x1b[31mFAKE FPR 0000\x1b[0m <e@x>",
            r"Evil \x1b[2J\x1b[31mFAKE FPR 0000\x1b[0m <e@x>",
        ),
        ("C1 \x9b2J and DEL \x7f", r"C1 \x9b2J and DEL \x7f"),
        (
            "moc.live\u202e <a@b>, \u2066isolate\u2069 \u200bzero",
            r"moc.live\u202e <a@b>, \u2066isolate\u2069 \u200bzero",
        ),
        ("line\nbreak\r\tand \u2028", r"line\nbreak\r\tand \u2028"),
        ("a tag \U000e0041", r"a tag \U000e0041"),
        ("not an escape: \\x1b", r"not an escape: \\x1b"),
        ("Zoë Łukasz 陈 <zoe@example.ac.uk>", "Zoë Łukasz 陈 <zoe@example.ac.uk>"),
    ],
)
def test_printable_escapes_what_a_terminal_would_act_on(text: str, shown: str) -> None:
    assert printable(text) == shown
    assert printable(text).isprintable()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("-----BEGIN PGP PRIVATE KEY BLOCK-----\n", "holds a secret key"),
        ("not a key at all\n", "no OpenPGP public key"),
    ],
)
def test_a_bad_file_refuses_the_sync_and_changes_nothing(
    crypto: Crypto, keys_dir: Path, content: str, message: str
) -> None:
    before = crypto.keys()
    (keys_dir / "advice-centre.asc").unlink()
    (keys_dir / "bad.asc").write_text(content)

    with pytest.raises(CryptoError, match=f"bad.asc: {message}"):
        crypto.sync_keys_dir(keys_dir)

    assert crypto.keys() == before


def test_a_missing_folder_is_refused(crypto: Crypto, tmp_path: Path) -> None:
    before = crypto.keys()
    with pytest.raises(CryptoError, match=r"gpg\.keys_dir"):
        crypto.sync_keys_dir(tmp_path / "nowhere")
    assert crypto.keys() == before


def test_an_emptied_folder_is_refused_and_deletes_nothing(crypto: Crypto, keys_dir: Path) -> None:
    """A folder with no key file is a failed mount or a slip, never "delete every key"."""
    before = crypto.keys()
    for path in keys_dir.glob("*.asc"):
        path.unlink()
    (keys_dir / "README").write_text("keys go here\n")
    with pytest.raises(CryptoError, match=r"gpg\.keys_dir\) holds no \.asc file"):
        crypto.sync_keys_dir(keys_dir)
    assert crypto.keys() == before and before
