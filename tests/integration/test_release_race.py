"""Held referrals released by two processes at once (`intake retry` while the daemon drains, or
two instances): the one that comes second changes nothing, so a referral the first released and
sent is never queued again (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from sqlmodel import Session, create_engine, select

from pipeline.app import App
from pipeline.crypto import Crypto
from pipeline.models import AlertRow, OutboxRow
from pipeline.outbox import release_held
from tests.integration.conftest import Deployment, email


class SlowCrypto:
    """The real Crypto, whose encryption takes a second (a loaded machine): the window in
    which the other process releases and sends the same referral."""

    def __init__(self, inner: Crypto) -> None:
        self.inner = inner

    def encrypt(self, data: bytes, fingerprints: list[str]) -> str:
        time.sleep(1.0)
        return self.inner.encrypt(data, fingerprints)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_a_referral_released_twice_at_once_is_sent_once(
    deployment: Deployment,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    database: str,
) -> None:
    monkeypatch.setenv("TEST_IMAP_PASSWORD", deployment.imap.password)
    if database == "postgres":
        deployment.database_url = request.getfixturevalue("pg_url")
    key_file = deployment.own_keys() / "student-services.asc"
    armor = key_file.read_text()
    daemon, other = App.open(deployment.config()), App.open(deployment.config())
    try:
        key_file.unlink()
        daemon.sync_keys()
        deployment.imap.append(email("A hate crime happened.", message_id="<h1@x>"))
        daemon.poll()
        daemon.drain()  # the referral to student-services is held: no key
        key_file.write_text(armor)
        daemon.sync_keys()
        other.sync_keys()
        slow = SlowCrypto(other.crypto)
        args = (other.config, other.engine, slow, other.rules.services)
        second = threading.Thread(target=release_held, args=args)
        second.start()
        time.sleep(0.3)
        daemon.drain()  # releases it too, and sends it
        second.join()
        daemon.drain()
        other.drain()
    finally:
        daemon.close()
        other.close()
    service = deployment.keys.emails["student-services"]
    sent = Counter(
        str(m.message["Message-ID"]) for m in deployment.smtp.messages if m.rcpt_tos == [service]
    )
    assert list(sent.values()) == [1]


def test_a_held_referral_this_instance_cannot_open_stays_held_and_the_rest_goes_out(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sealed by another instance's outbox key (a gpg home not shared): once its service key is
    back it stays held with a reason and an alert, and the mail behind it is still sent."""
    monkeypatch.setenv("TEST_IMAP_PASSWORD", deployment.imap.password)
    key_file = deployment.own_keys() / "student-services.asc"
    armor = key_file.read_text()
    key_file.unlink()
    deployment.imap.append(email("A hate crime happened.", message_id="<h1@x>"))
    deployment.run_in_process()
    engine = create_engine(deployment.config().database_url)
    with Session(engine) as session:
        (held,) = session.exec(select(OutboxRow).where(OutboxRow.state == "held")).all()
        held.sealed = deployment.keys.encrypt(b"inner", deployment.keys.records_fpr).encode()
        session.add(held)
        session.commit()
        held_id = held.id
    key_file.write_text(armor)
    deployment.imap.append(
        email("Shouted at in the library.", sender="Al <al@example.ac.uk>", message_id="<h2@x>")
    )

    deployment.run_in_process()

    assert any(m.rcpt_tos == ["al@example.ac.uk"] for m in deployment.smtp.messages)
    with Session(engine) as session:
        row = session.get(OutboxRow, held_id)
        assert row is not None and row.state == "held"
        assert row.last_error == "held: cannot be released here (DecryptError)"
        kinds = [a.kind for a in session.exec(select(AlertRow)).all()]
    engine.dispose()
    assert "held" in kinds
