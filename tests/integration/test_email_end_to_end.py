"""One email's whole path on real parts: Dovecot → run_daemon.py --once → SMTP sink, with the
real gpg and SQLite. Referrals are decrypted with the services' secret keys."""

from __future__ import annotations

import json
import re
import sqlite3
from email import message_from_bytes, policy
from email.message import EmailMessage

from pipeline.store import unbundle_record
from tests.integration.conftest import ADMIN, ANONYMOUS, Deployment, email
from tests.servers.smtp import Received


def referral_parts(received: Received) -> tuple[EmailMessage, bytes]:
    """The outer message and the decrypted inner part of a PGP/MIME referral."""
    outer = message_from_bytes(received.data, policy=policy.default)
    assert outer.get_content_type() == "multipart/encrypted"
    assert outer.get_param("protocol") == "application/pgp-encrypted"
    control, encrypted = outer.get_payload()  # type: ignore[misc]
    assert control.get_content_type() == "application/pgp-encrypted"
    assert b"Version: 1" in control.get_payload(decode=True)
    return outer, encrypted.get_payload(decode=True)  # type: ignore[return-value]


def by_recipient(messages: list[Received]) -> dict[str, Received]:
    return {m.rcpt_tos[0]: m for m in messages}


def status(deployment: Deployment) -> dict[str, dict[str, int]]:
    run = deployment.intake("status", "--json")
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_named_report_reaches_services_encrypted_and_reporter_gets_ack(
    deployment: Deployment,
) -> None:
    marker = "MARKER-named-7f3a"
    deployment.imap.append(email(f"Someone groped me at the bar. {marker}"))

    run = deployment.run_once()

    assert run.returncode == 0, run.stderr
    mail = by_recipient(deployment.smtp.wait_for(3))
    keys = deployment.keys
    assert set(mail) == {
        keys.emails["advice-centre"],
        keys.emails["student-services"],
        "sam.student@example.ac.uk",
    }
    for service in ("advice-centre", "student-services"):
        received = mail[keys.emails[service]]
        outer, encrypted = referral_parts(received)
        assert re.fullmatch(r"Referral R-\d{4}-\d{6}", outer["Subject"])
        assert marker.encode() not in received.data
        assert b"sam.student" not in received.data
        inner = keys.decrypt(encrypted).decode()
        assert marker in inner
        assert "sam.student@example.ac.uk" in inner and "Sam Student" in inner
        assert "sexual-violence" in inner
    ack = message_from_bytes(mail["sam.student@example.ac.uk"].data, policy=policy.default)
    assert ack["Auto-Submitted"] == "auto-replied"
    assert marker not in ack.get_content()
    assert re.search(r"R-\d{4}-\d{6}", ack["Subject"])
    assert deployment.imap.uids("INBOX") == []
    assert deployment.imap.uids("Processed") == []  # by default the original is expunged
    assert status(deployment)["reports"]["delivered"] == 1
    assert status(deployment)["outbox"]["sent"] == 3


def test_anonymous_report_forwards_no_identity(deployment: Deployment) -> None:
    deployment.imap.append(
        email(
            "People in my corridor make racist comments. BODY-anon-55",
            sender="Secret Name <secret.person@example.org>",
            to=ANONYMOUS,
            extra_headers="X-Originating-IP: [192.0.2.77]\r\nReceived: from pc.secret.example\r\n",
        )
    )

    run = deployment.run_once()

    assert run.returncode == 0, run.stderr
    mail = by_recipient(deployment.smtp.wait_for(2))
    referral = mail[deployment.keys.emails["student-services"]]
    inner = deployment.keys.decrypt(referral_parts(referral)[1]).decode()
    assert "BODY-anon-55" in inner
    for identity in ("secret.person", "Secret Name", "192.0.2.77", "pc.secret.example"):
        assert identity not in inner
        assert identity.encode() not in referral.data
    # the stored original is the redacted one: decrypt it with the records key
    database = sqlite3.connect(deployment.data_dir / "intake.db")
    (original,) = database.execute(
        "SELECT data FROM encrypted_record WHERE kind='bundle'"
    ).fetchone()
    stored = unbundle_record(deployment.keys.decrypt(original))[1].decode()
    assert "BODY-anon-55" in stored and "secret.person" not in stored and "192.0.2.77" not in stored
    # the acknowledgement went once, and its address is gone from the outbox
    assert "secret.person@example.org" in mail
    rows = database.execute(
        "SELECT kind, state, sealed, payload FROM outbox WHERE kind='ack'"
    ).fetchall()
    assert rows == [("ack", "sent", None, None)]


def test_no_plaintext_at_rest_or_in_logs(deployment: Deployment) -> None:
    canaries = [
        "CANARY-body-91c2",
        "canary.sender@example.ac.uk",
        "Canary Sendername",
        "CANARY-subject-3d",
    ]
    deployment.imap.append(
        email(
            f"I was followed home. {canaries[0]}",
            sender=f"{canaries[2]} <{canaries[1]}>",
            subject=canaries[3],
        )
    )

    run = deployment.run_once()
    deployment.intake("status")

    assert run.returncode == 0, run.stderr
    assert len(deployment.smtp.wait_for(2)) >= 2
    files = [p for p in deployment.data_dir.rglob("*") if p.is_file()]
    assert any(p.name == "intake.db" for p in files)
    temp_files = [p for p in deployment.temp_dir.rglob("*") if p.is_file()]
    deployment.assert_nowhere(canaries, files + temp_files)


def test_second_run_and_redelivery_send_nothing_new(deployment: Deployment) -> None:
    raw = email("A report that must be referred once. ONCE-1")
    deployment.imap.append(raw)
    assert deployment.run_once().returncode == 0
    first = len(deployment.smtp.wait_for(2))  # default rule: advice centre + acknowledgement

    assert deployment.run_once().returncode == 0
    deployment.imap.append(b"Received: from relay2.example by mx.example\r\n" + raw)
    assert deployment.run_once().returncode == 0

    assert len(deployment.smtp.messages) == first
    assert deployment.imap.uids("INBOX") == []
    # a different message that happens to share the Message-ID is a new report
    deployment.imap.append(email("A different report. ONCE-2"))
    assert deployment.run_once().returncode == 0
    assert len(deployment.smtp.wait_for(first + 2)) == first + 2
    assert status(deployment)["reports"]["delivered"] == 2


def test_unparseable_message_is_quarantined_not_lost(deployment: Deployment) -> None:
    deployment.imap.append(b"\x00\x01\x02 garbage that is no email at all")

    run = deployment.run_once()

    assert run.returncode == 8, run.stderr  # quarantined
    counts = status(deployment)
    assert counts["reports"]["quarantined"] == 1
    assert deployment.imap.uids("INBOX") == []
    database = sqlite3.connect(deployment.data_dir / "intake.db")
    reason, data = database.execute(
        "SELECT reason, data FROM report JOIN encrypted_record ON report.id = report_id"
    ).fetchone()
    assert "no headers" in reason
    assert b"garbage that is no email at all" in deployment.keys.decrypt(data)  # as IMAP gave it
    (alert,) = deployment.smtp.messages  # to the admins, never to anyone else
    assert alert.rcpt_tos == [ADMIN] and "is quarantined" in str(alert.message["Subject"])
    assert b"garbage" not in alert.data


def test_message_too_broken_for_its_body_is_quarantined(deployment: Deployment) -> None:
    deployment.imap.append(email("fine"))
    deployment.imap.append(b"Subject: only headers\r\nFrom: x@y.example\r\n\r\n")

    assert deployment.run_once().returncode == 0

    counts = status(deployment)
    assert counts["reports"]["delivered"] + counts["reports"]["quarantined"] == 2
    assert deployment.imap.uids("INBOX") == []


def test_server_without_move_falls_back_to_copy_and_uid_expunge(
    deployment: Deployment, dovecot_factory
) -> None:
    server = dovecot_factory(capabilities_without={"MOVE"})
    assert "MOVE" not in server.capabilities() and "UIDPLUS" in server.capabilities()
    deployment.imap = server
    deployment.write(imap_extra='processed_folder = "Processed"\n')  # opt-in: keep named ones
    server.append(email("No MOVE here. NOMOVE-1"))

    assert deployment.run_once().returncode == 0

    assert server.uids("INBOX") == []
    assert len(server.uids("Processed")) == 1
    assert len(deployment.smtp.wait_for(2)) == 2


def test_attachments_travel_inside_the_encrypted_part(deployment: Deployment) -> None:
    raw = (
        b"From: Sam <sam.student@example.ac.uk>\r\nTo: report@example.ac.uk\r\n"
        b"Subject: photo\r\nMessage-ID: <att@x>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=B\r\n\r\n"
        b"--B\r\nContent-Type: text/plain\r\n\r\nSee the screenshot of the messages.\r\n"
        b"--B\r\nContent-Type: image/png\r\nContent-Disposition: attachment; filename=shot.png\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nQVRUQUNITUVOVC1CWVRFUw==\r\n--B--\r\n"
    )
    deployment.imap.append(raw)

    assert deployment.run_once().returncode == 0

    referral = by_recipient(deployment.smtp.wait_for(2))[deployment.keys.emails["advice-centre"]]
    assert b"shot.png" not in referral.data
    inner = message_from_bytes(
        deployment.keys.decrypt(referral_parts(referral)[1]), policy=policy.default
    )
    attachments = list(inner.iter_attachments())  # type: ignore[attr-defined]
    assert [a.get_filename() for a in attachments] == ["shot.png"]
    assert attachments[0].get_payload(decode=True) == b"ATTACHMENT-BYTES"


def test_no_acknowledgement_to_the_intake_itself_or_automatic_mail(deployment: Deployment) -> None:
    deployment.imap.append(email("Loop?", sender="report@example.ac.uk", message_id="<a@x>"))
    deployment.imap.append(  # a web-form mailer: a report, never acknowledged
        email("Form mail", message_id="<b@x>", extra_headers="Auto-Submitted: auto-generated\r\n")
    )
    deployment.imap.append(  # an out-of-office reply: not even a report (test_acks_end_to_end)
        email("Out of office", message_id="<c@x>", extra_headers="Auto-Submitted: auto-replied\r\n")
    )

    assert deployment.run_once().returncode == 0

    recipients = [m.rcpt_tos[0] for m in deployment.smtp.wait_for(2)]
    assert recipients == [deployment.keys.emails["advice-centre"]] * 2


def test_delete_processed_removes_the_message_instead_of_moving_it(deployment: Deployment) -> None:
    deployment.write(imap_extra='processed_folder = "Processed"\ndelete_processed = true\n')
    deployment.imap.append(email("Delete me once stored."))

    assert deployment.run_once().returncode == 0

    assert deployment.imap.uids("INBOX") == []
    assert deployment.imap.uids("Processed") == []
    assert len(deployment.smtp.wait_for(2)) == 2


def test_two_messages_without_message_id_are_two_reports(deployment: Deployment) -> None:
    """Without a Message-ID the fingerprint is the whole message minus trace fields: two
    reports with the same body from two people are both taken; the same one delivered again
    through another relay is still a duplicate."""

    def without_id(sender: str) -> bytes:
        raw = email("It happened again in the library.", sender=sender)
        return re.sub(rb"Message-ID: [^\r]*\r\n", b"", raw)

    first, second = without_id("Ann <ann@example.ac.uk>"), without_id("Bo <bo@example.ac.uk>")
    assert b"Message-ID" not in first
    deployment.imap.append(first)
    deployment.imap.append(second)
    deployment.imap.append(b"Received: from relay2.example by mx.example\r\n" + first)
    assert deployment.run_once().returncode == 0

    counts = status(deployment)
    assert counts["reports"]["delivered"] == 2
    assert counts["inputs"]["stored"] == 2 and counts["inputs"]["duplicate"] == 1
    acknowledged = {m.rcpt_tos[0] for m in deployment.smtp.wait_for(4)}
    assert {"ann@example.ac.uk", "bo@example.ac.uk"} <= acknowledged
