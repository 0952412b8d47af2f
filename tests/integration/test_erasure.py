"""The outbox key and erasure, through the real daemon, gpg, SMTP sink, SQLite and PostgreSQL.

A copy of the data folder does not open a queued acknowledgement or a held referral without the
outbox passphrase; the daemon refuses to start without it (or with a wrong one); an outbox key
from before passphrases is replaced and what it sealed still goes out; an acknowledgement that
is dead-lettered or expires is erased, and its sealed bytes are gone from the SQLite files.
"""

from __future__ import annotations

import hashlib
import hmac
import shutil
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import gnupg
import pytest
from sqlalchemy import Engine, text

from pipeline.crypto import (
    LEGACY_OUTBOX_UID,
    OUTBOX_UID,
    SEAL_PREFIX,
    Crypto,
    CryptoError,
    derive_secret,
)
from pipeline.models import utcnow
from pipeline.store import make_engine
from tests.integration.conftest import OUTBOX_PASSPHRASE, Deployment, email
from tests.servers.gpg import make_legacy_outbox_key

REPORTER = "sam.student@example.ac.uk"
# What gpg is given for the outbox key: derived from the configured passphrase (scrypt).
GPG_PASSPHRASE = derive_secret(OUTBOX_PASSPHRASE, "outbox-key").hex()


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, deployment: Deployment) -> Deployment:
    if request.param == "postgres":
        deployment.database_url = request.getfixturevalue("pg_url")
        deployment.write()
    return deployment


@pytest.fixture
def db(deployment: Deployment) -> Iterator[Engine]:
    """The deployment's database (after its first run has made the schema)."""
    engine = make_engine(deployment.config().database_url)
    yield engine
    engine.dispose()


def query(engine: Engine, sql: str, **params: Any) -> list[Any]:
    with engine.begin() as connection:
        result = connection.execute(text(sql), params)
        return list(result) if result.returns_rows else []


def kill_agent(home: Path) -> None:
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False)


def make_due(engine: Engine) -> None:
    query(engine, "UPDATE outbox SET next_attempt_at = :t", t=utcnow() - timedelta(minutes=1))


def ack_row(engine: Engine) -> Any:
    return query(engine, "SELECT state, sealed, payload, last_error FROM outbox WHERE kind='ack'")[
        0
    ]


def gpg_decrypt(home: Path, data: bytes, passphrase: str) -> subprocess.CompletedProcess[bytes]:
    argv = ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback"]
    argv += ["--passphrase", passphrase, "--decrypt"]
    return subprocess.run(argv, input=data, capture_output=True, check=False)


def test_a_copy_of_the_data_folder_opens_nothing_without_the_passphrase(
    deployment: Deployment, tmp_path: Path
) -> None:
    keys_dir = deployment.own_keys()
    (keys_dir / "advice-centre.asc").unlink()  # its referral is held, sealed to the outbox key
    deployment.smtp.script("451 4.3.0 try later", times=5)  # the acknowledgement stays queued
    deployment.imap.append(email("Held and queued. HELD-CANARY-0b7e"))
    assert deployment.run_once().returncode == 4, deployment.logs[-1]  # mail deferred

    copy = tmp_path / "copy"
    shutil.copytree(deployment.data_dir, copy, ignore=shutil.ignore_patterns("S.*"))
    engine = make_engine(f"sqlite:///{copy / 'intake.db'}")
    rows = query(engine, "SELECT kind, state, sealed, payload FROM outbox WHERE sealed IS NOT NULL")
    engine.dispose()
    sealed = {(kind, state): (s, p) for kind, state, s, p in rows}
    assert set(sealed) == {("referral", "held"), ("ack", "queued")}
    expected = [
        (sealed["referral", "held"][0], b"HELD-CANARY-0b7e"),
        (sealed["ack", "queued"][0], REPORTER.encode()),
        (sealed["ack", "queued"][1], b"Subject:"),
    ]
    try:
        for data, inside in expected:
            assert data.startswith(SEAL_PREFIX) and inside not in data  # sealed in process
            refused = gpg_decrypt(copy / "gnupg", data, GPG_PASSPHRASE)  # no OpenPGP to open
            assert refused.returncode != 0 and inside not in refused.stdout
            for wrong in ("", "guess", GPG_PASSPHRASE):
                with pytest.raises(CryptoError):
                    Crypto(copy / "gnupg", passphrase=wrong).decrypt_outbox(data)
            assert inside in Crypto(copy / "gnupg", passphrase=OUTBOX_PASSPHRASE).decrypt_outbox(
                data
            )
    finally:
        kill_agent(copy / "gnupg")


def test_the_daemon_needs_the_right_passphrase_from_outside_data_dir(
    deployment: Deployment,
) -> None:
    deployment.passphrase_line = ""
    deployment.write()
    refused = deployment.run_once()
    assert refused.returncode != 0
    assert "gpg.outbox_passphrase_file" in refused.stderr
    assert not (deployment.data_dir / "gnupg").exists()  # no key made without a passphrase
    check = deployment.intake("check-rules")  # the admin's checks need no passphrase
    assert check.returncode == 0, check.stdout + check.stderr

    secret = deployment.data_dir / "outbox-passphrase"
    secret.write_text(OUTBOX_PASSPHRASE)
    secret.chmod(0o600)
    deployment.passphrase_line = f'outbox_passphrase_file = "{secret}"'
    deployment.write()
    inside = deployment.run_once()
    assert inside.returncode != 0 and "is inside data_dir" in inside.stderr

    outside = deployment.root / "outbox-passphrase"
    secret.rename(outside)
    outside.chmod(0o644)
    deployment.passphrase_line = 'outbox_passphrase_file = "outbox-passphrase"'
    deployment.write()
    readable = deployment.run_once()
    assert readable.returncode != 0 and "chmod 600" in readable.stderr
    outside.chmod(0o600)
    deployment.imap.append(email("With the passphrase. PASS-1"))
    assert deployment.run_once().returncode == 0, deployment.logs[-1]
    assert len(deployment.smtp.wait_for(2)) == 2

    deployment.passphrase_line = 'outbox_passphrase = "not the passphrase"'
    deployment.write()
    wrong = deployment.run_once()
    assert wrong.returncode != 0
    assert "does not open the outbox key" in wrong.stderr


def legacy_outbox(home: Path, engine: Engine) -> str:
    """Turn the deployment's homedir and outbox into what the daemon left before passphrases:
    one outbox key without passphrase, and the queued rows sealed to it."""
    kill_agent(home)
    gpg = gnupg.GPG(gnupghome=str(home))
    old = make_legacy_outbox_key(gpg)
    crypto = Crypto(home, passphrase=OUTBOX_PASSPHRASE)
    for row_id, sealed, payload in query(
        engine, "SELECT id, sealed, payload FROM outbox WHERE kind='ack'"
    ):
        opened = [crypto.decrypt_outbox(data) for data in (sealed, payload)]
        again = [bytes(gpg.encrypt(r, [old], armor=True, always_trust=True).data) for r in opened]
        query(
            engine,
            "UPDATE outbox SET sealed=:s, payload=:p WHERE id=:i",
            s=again[0],
            p=again[1],
            i=row_id,
        )
    protected = [k["fingerprint"] for k in gpg.list_keys(secret=True) if OUTBOX_UID in k["uids"]]
    assert gpg.delete_keys(protected, secret=True, passphrase=GPG_PASSPHRASE).status == "ok"
    assert gpg.delete_keys(protected).status == "ok"
    kill_agent(home)
    return old


def test_an_outbox_key_without_passphrase_is_replaced_and_queued_acks_still_go(
    database: Deployment,
) -> None:
    deployment = database
    deployment.smtp.script("451 4.3.0 try later", times=2)
    deployment.imap.append(email("Queued before the upgrade. UPGRADE-1"))
    assert deployment.run_once().returncode == 4  # mail deferred
    engine = make_engine(deployment.config().database_url)
    home = deployment.data_dir / "gnupg"
    old = legacy_outbox(home, engine)
    make_due(engine)
    assert not deployment.smtp.messages

    run = deployment.run_once()

    assert run.returncode == 0, run.stderr
    assert "outbox key upgraded: 1 outbox row(s) re-sealed" in run.stderr
    assert REPORTER in {m.rcpt_tos[0] for m in deployment.smtp.wait_for(2)}
    assert ack_row(engine)[:3] == ("sent", None, None)
    secret = gnupg.GPG(gnupghome=str(home)).list_keys(secret=True)
    kill_agent(home)
    assert [k["uids"] for k in secret] == [[OUTBOX_UID]]
    assert secret[0]["fingerprint"] != old and LEGACY_OUTBOX_UID not in str(secret)
    engine.dispose()


def sealed_pieces(data: bytes) -> list[bytes]:
    """32-byte pieces of sealed outbox data's ciphertext: bytes found nowhere else."""
    body = data[len(SEAL_PREFIX) :]
    return [body[i : i + 32] for i in range(0, len(body) - 32, 32)]


@pytest.mark.parametrize("ending", ["refused", "expired"])
def test_a_dead_or_expired_ack_is_erased_from_the_database_files(
    deployment: Deployment, ending: str
) -> None:
    deployment.smtp.script("451 4.3.0 try later", times=2)
    deployment.imap.append(email("Never acknowledged. ERASE-1"))
    assert deployment.run_once().returncode == 4  # mail deferred
    engine = make_engine(deployment.config().database_url)
    state, sealed, payload, _ = ack_row(engine)
    assert state == "queued" and sealed and payload
    lines = sealed_pieces(sealed) + sealed_pieces(payload)
    assert len(lines) >= 8
    if ending == "refused":
        deployment.smtp.script("550 5.1.1 no such mailbox", times=2, at="RCPT")
    else:
        deployment.smtp.script("451 4.3.0 try later", times=2)
        config = deployment.config_path.read_text()
        deployment.config_path.write_text(
            config.replace(
                "timeout_seconds = 10\n\n[intake]",
                "timeout_seconds = 10\nqueue_lifetime_days = 0.00001\n\n[intake]",
            )
        )
        assert "queue_lifetime_days" in deployment.config_path.read_text()
    make_due(engine)
    engine.dispose()

    assert deployment.run_once().returncode == 4  # the acknowledgement is a dead letter

    engine = make_engine(deployment.config().database_url)
    assert query(engine, "PRAGMA secure_delete") == [(1,)]
    assert ack_row(engine)[:3] == ("failed", None, None)
    engine.dispose()
    database = deployment.data_dir / "intake.db"
    for path in (database, database.with_name("intake.db-wal")):
        if path.exists():
            data = path.read_bytes()
            assert not [line for line in lines if line in data], f"sealed bytes left in {path}"
            assert REPORTER.encode() not in data

    retry = deployment.intake("retry", "--send")
    assert retry.returncode == 0, retry.stderr
    assert "address erased" in retry.stderr
    engine = make_engine(deployment.config().database_url)
    assert ack_row(engine) == ("failed", None, None, "address erased")
    engine.dispose()


def test_the_rate_limit_is_keyed_outside_the_data_folder_and_forgets(
    deployment: Deployment,
) -> None:
    deployment.data_dir.mkdir(mode=0o700)
    old_key = deployment.data_dir / "ack-limit.key"
    old_key.write_bytes(b"k" * 32)
    deployment.imap.append(email("First. LIMIT-1"))
    assert deployment.run_once().returncode == 0
    assert not old_key.exists()
    engine = make_engine(deployment.config().database_url)
    (stored,) = query(engine, "SELECT sender_hash FROM ack_sent")[0]
    secret = derive_secret(OUTBOX_PASSPHRASE, "ack-limit")
    assert stored == hmac.new(secret, REPORTER.encode(), hashlib.sha256).hexdigest()
    assert stored != hmac.new(b"k" * 32, REPORTER.encode(), hashlib.sha256).hexdigest()

    stale = utcnow() - timedelta(hours=1, minutes=5)
    query(engine, "INSERT INTO ack_sent (sender_hash, sent_at) VALUES ('old', :t)", t=stale)
    assert deployment.run_once().returncode == 0  # nothing new: the drain prunes on its own
    assert [row[0] for row in query(engine, "SELECT sender_hash FROM ack_sent")] == [stored]
    engine.dispose()
