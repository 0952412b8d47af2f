"""Keys are what `[gpg] keys_dir` says, while the daemon runs: a removed key file stops its key
being used (referrals held and alerted; a records key's absence stops intake and says so), a
rotated key (a new fingerprint pinned, or a new encryption subkey) is used without a restart,
an encryption subkey about to expire is warned about, and the outbox key is never touched. A
renewed key brought in by `intake keys import` replaces the file that held it, and the daemon
encrypts to its new subkey.

One daemon (`App`) per test runs `run_once` cycles on the same data, as `run_forever` does.
Real Dovecot, the SMTP sink and gpg keys made for the test."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlmodel import Session, select

from pipeline.app import App
from pipeline.daemon import run_once
from pipeline.models import OutboxRow, OutboxState
from tests.integration.conftest import ADMIN, Deployment, Run, email
from tests.servers.smtp import Received


@pytest.fixture
def keys_dir(deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The deployment's own keys folder, to change while its daemon runs."""
    monkeypatch.setenv("TEST_IMAP_PASSWORD", deployment.imap.password)
    return deployment.own_keys()


@pytest.fixture
def daemon(deployment: Deployment, keys_dir: Path) -> Iterator[App]:
    """The daemon, started once: every change in the test happens while it runs."""
    app = App.open(deployment.config())
    try:
        yield app
    finally:
        app.close()


def mail_to(deployment: Deployment, address: str) -> list[Received]:
    return [m for m in deployment.smtp.messages if m.rcpt_tos == [address]]


def alert_subjects(deployment: Deployment) -> list[str]:
    return [str(m.message["Subject"]) for m in mail_to(deployment, ADMIN)]


def recipients(deployment: Deployment, referral: Received) -> list[str]:
    """The key ids a referral is encrypted to."""
    encrypted = referral.message.get_payload()[1].get_payload(decode=True)  # type: ignore[index,union-attr]
    return deployment.keys.recipients(encrypted)


def referral_states(app: App) -> Counter[str]:
    with Session(app.engine) as session:
        rows = session.exec(select(OutboxRow).where(OutboxRow.kind == "referral")).all()
        return Counter(str(row.state) for row in rows)


def pin(deployment: Deployment, service: str, old: str, new: str, armor: str) -> None:
    """Put a service's new key in the keys folder and pin its fingerprint in the rules."""
    assert deployment.keys_dir is not None
    (deployment.keys_dir / f"{service}.asc").write_text(armor)
    services = deployment.rules_dir / "services.yaml"
    services.write_text(services.read_text().replace(old, new))


def test_a_removed_key_holds_referrals_until_a_new_key_is_pinned_without_restart(
    deployment: Deployment, keys_dir: Path, daemon: App
) -> None:
    support = deployment.keys.emails["student-services"]
    old = deployment.keys.services["student-services"]
    deployment.imap.append(email("Sealed before the key goes.", message_id="<k1@x>"))
    daemon.poll()  # stored: its acknowledgement waits sealed to the outbox key

    (keys_dir / "student-services.asc").unlink()
    daemon.sync_keys()
    daemon.drain()

    held_keys = daemon.crypto.keys()
    assert old not in held_keys
    assert len(mail_to(deployment, "sam.student@example.ac.uk")) == 1  # the outbox key opened it
    daemon.crypto.check_secret_keys()  # the outbox key is still there, and only it
    deployment.imap.append(email("A hate crime happened. KEYS-MARK", message_id="<k2@x>"))
    run_once(daemon)
    assert mail_to(deployment, support) == []
    assert referral_states(daemon)[OutboxState.HELD] == 1
    held = "referrals to student-services are held: its key cannot be used"
    assert any(held in subject for subject in alert_subjects(deployment))

    new, armor = deployment.keys.make_key("Support 2027", support)
    pin(deployment, "student-services", old, new, armor)
    run_once(daemon)

    (referral,) = mail_to(deployment, support)
    subkey = deployment.keys.encryption_subkeys(new)[0]
    assert recipients(deployment, referral) == [subkey[-16:]]
    assert b"KEYS-MARK" in (deployment.decrypted(referral) or b"")
    assert referral_states(daemon) == Counter({OutboxState.SENT: 2})
    assert all(b"KEYS-MARK" not in m.data for m in mail_to(deployment, ADMIN))


def test_rotated_keys_are_used_without_restart_and_a_subkey_expiring_soon_is_warned_about(
    deployment: Deployment, keys_dir: Path
) -> None:
    advice = deployment.keys.emails["advice-centre"]
    fpr, armor = deployment.keys.make_key_with_subkeys("Advice", advice, ["5d"])
    pin(deployment, "advice-centre", deployment.keys.services["advice-centre"], fpr, armor)
    expiring = deployment.keys.encryption_subkeys(fpr)[0]
    app = App.open(deployment.config())
    try:
        deployment.imap.append(email("Before the new subkey.", message_id="<s1@x>"))
        run_once(app)
        deployment.keys.add_encryption_subkey(fpr, "2y")  # same key, new subkey, old one gone
        current = deployment.keys.encryption_subkeys(fpr)[1]
        (keys_dir / "advice-centre.asc").write_text(
            deployment.keys.public_without_subkey(fpr, expiring)
        )
        deployment.imap.append(email("After the new subkey.", message_id="<s2@x>"))
        run_once(app)
        new, armor = deployment.keys.make_key("Advice 2027", advice)  # a new key, pinned at once
        pin(deployment, "advice-centre", fpr, new, armor)
        deployment.imap.append(email("After the new key.", message_id="<s3@x>"))
        run_once(app)
    finally:
        app.close()

    first, second, third = mail_to(deployment, advice)
    assert recipients(deployment, first) == [expiring[-16:]]
    assert recipients(deployment, second) == [current[-16:]]
    assert recipients(deployment, third) == [deployment.keys.encryption_subkeys(new)[0][-16:]]
    subjects = alert_subjects(deployment)
    assert [s for s in subjects if "expires in" in s] == [
        f"[report-intake] the advice-centre key {fpr} expires in 4 day(s)"
    ]
    assert not [s for s in subjects if "held" in s]  # nothing was held, nothing said so
    warning = next(
        m for m in mail_to(deployment, ADMIN) if "expires in" in str(m.message["Subject"])
    )
    assert expiring in warning.message.get_content()


def test_a_renewed_key_imported_replaces_its_file_and_its_new_subkey_is_used_at_once(
    deployment: Deployment, keys_dir: Path, intake: Callable[..., Run]
) -> None:
    """The service renews its key (same primary key, a new encryption subkey, a later expiry):
    `keys import` must replace student-services.asc, not write <FPR>.asc beside it (the file
    sorting last used to win, cutting the new subkey)."""
    support = deployment.keys.emails["student-services"]
    fpr, armor = deployment.keys.make_key_with_subkeys("Support", support, ["5d"])
    pin(deployment, "student-services", deployment.keys.services["student-services"], fpr, armor)
    expiring = deployment.keys.encryption_subkeys(fpr)[0]
    app = App.open(deployment.config())
    try:
        deployment.imap.append(email("A hate crime happened. Before.", message_id="<n1@x>"))
        run_once(app)
        renewed = deployment.root / "renewed.asc"
        # gpg encrypts to the newest subkey, and of two made in the same second to the first:
        # a real renewal comes days later, this one at least a second later.
        time.sleep(1.1)
        renewed.write_text(deployment.keys.add_encryption_subkey(fpr, "2y"))
        new = deployment.keys.encryption_subkeys(fpr)[1]
        files = sorted(keys_dir.iterdir())
        imported = intake("keys", "import", str(renewed), "--yes")
        listed = json.loads(intake("keys", "--json").stdout)["keys"]
        deployment.imap.append(email("A hate crime happened. After.", message_id="<n2@x>"))
        run_once(app)
    finally:
        app.close()

    assert imported.returncode == 0, imported.stderr
    assert "file:               replaces student-services.asc, which holds this key" in (
        imported.stdout
    )
    assert sorted(keys_dir.iterdir()) == files  # no <FPR>.asc beside it
    [key] = [key for key in listed if key["fingerprint"] == fpr]
    assert key["encryption_subkey"] == new and key["used_by"] == ["student-services"]
    assert key["expires"] > (dt.date.today() + dt.timedelta(days=365)).isoformat()
    before, after = mail_to(deployment, support)
    assert recipients(deployment, before) == [expiring[-16:]]
    assert recipients(deployment, after) == [new[-16:]]
    assert not [s for s in alert_subjects(deployment) if "held" in s]


def test_a_removed_records_key_stops_intake_and_says_so(
    deployment: Deployment, keys_dir: Path, daemon: App
) -> None:
    records = keys_dir / "records.asc"
    saved = records.read_text()
    records.unlink()
    deployment.imap.append(email("Waits for the records key.", message_id="<r1@x>"))

    assert run_once(daemon) != 0
    assert len(deployment.imap.uids("INBOX")) == 1  # not taken: it cannot be stored
    stopped = "a records key cannot be used: new reports wait in their source"
    assert any(stopped in subject for subject in alert_subjects(deployment))
    assert mail_to(deployment, deployment.keys.emails["advice-centre"]) == []
    restart = deployment.run_once()
    assert restart.returncode != 0
    assert f"gpg.records_keys: no public key {deployment.keys.records_fpr}" in restart.stderr

    records.write_text(saved)
    assert run_once(daemon) == 0

    assert deployment.imap.uids("INBOX") == []
    assert len(mail_to(deployment, deployment.keys.emails["advice-centre"])) == 1
