"""An anonymous report stays anonymous after it was taken in: a reply to its acknowledgement, a
mail quoting its reference, a message too large to read, and its times (issue 8: real Dovecot,
run_daemon.py --once, gpg and the SMTP sink)."""

from __future__ import annotations

import sqlite3
from datetime import datetime

import pytest

from tests.integration.conftest import ANONYMOUS, INTAKE, Deployment, email

REPORTER = "Samantha Jones <samantha.jones@example.org>"


def decrypted_referrals(deployment: Deployment) -> list[str]:
    return [inner.decode() for inner in deployment.referrals()]


def rows(deployment: Deployment, query: str) -> list[tuple[object, ...]]:
    database = sqlite3.connect(deployment.data_dir / "intake.db")
    try:
        return database.execute(query).fetchall()
    finally:
        database.close()


def test_a_reply_to_an_anonymous_acknowledgement_stays_anonymous(deployment: Deployment) -> None:
    deployment.imap.append(
        email("THREAD-FIRST it happened again", sender=REPORTER, to=ANONYMOUS, message_id="<a@x>")
    )
    assert deployment.run_once().returncode == 0
    (ack,) = [
        m.message for m in deployment.smtp.messages if m.rcpt_tos == ["samantha.jones@example.org"]
    ]
    assert ack["Reply-To"] == ANONYMOUS  # a reply goes back to the anonymous address
    reference = ack["Subject"].rsplit("(", 1)[1].rstrip(")")

    # The reporter answers the intake address anyway: once replying to the acknowledgement,
    # once writing afresh with the reference in the subject.
    deployment.imap.append(
        email(
            "THREAD-REPLY my name is on this mail",
            sender=REPORTER,
            to=INTAKE,
            subject=f"Re: {ack['Subject']}",
            message_id="<b@x>",
            extra_headers=f"In-Reply-To: {ack['Message-ID']}\r\nReferences: {ack['Message-ID']}\r\n",
        )
    )
    deployment.imap.append(
        email(
            "THREAD-QUOTE one more thing",
            sender=REPORTER,
            to=INTAKE,
            subject=f"About {reference}",
            message_id="<c@x>",
        )
    )
    assert deployment.run_once().returncode == 0

    referrals = decrypted_referrals(deployment)
    for marker in ("THREAD-REPLY", "THREAD-QUOTE"):
        (referral,) = [r for r in referrals if marker in r]
        assert "Samantha" not in referral and "samantha.jones" not in referral
        assert "Anonymous:  yes" in referral
        assert f"Adds to:    {reference}" in referral  # the caseworker can join them up
    assert rows(deployment, "SELECT count(*) FROM report WHERE anonymous = 0") == [(0,)]


def test_an_anonymous_report_keeps_its_times_to_the_hour(deployment: Deployment) -> None:
    deployment.imap.append(email("TIMES report", sender=REPORTER, to=ANONYMOUS))
    deployment.imap.append(email("TIMES named", message_id="<named@x>"))
    assert deployment.run_once().returncode == 0

    stamps = rows(deployment, "SELECT anonymous, received_at FROM report ORDER BY anonymous")
    (named, anonymous) = [(bool(a), datetime.fromisoformat(str(t))) for a, t in stamps]
    assert anonymous[0] and (anonymous[1].minute, anonymous[1].second) == (0, 0)
    assert anonymous[1].microsecond == 0
    assert not named[0]
    referral = next(r for r in decrypted_referrals(deployment) if "TIMES report" in r)
    received = next(line for line in referral.splitlines() if line.startswith("Received:"))
    assert received.split()[2].endswith(":00")  # to the hour, in [display] timezone


@pytest.mark.parametrize(
    ("to", "subject"),
    [(ANONYMOUS, "screenshots"), (INTAKE, "Re: [anonymous] screenshots")],
    ids=["to-anonymous", "subject-marker"],
)
def test_an_anonymous_message_too_large_to_read_is_kept_without_its_sender(
    deployment: Deployment, to: str, subject: str
) -> None:
    deployment.write(extra="[limits]\nattachments = 1\n")
    attachments = "".join(
        f"--B\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; "
        f'filename="f{n}.bin"\r\n\r\nDATA{n}\r\n'
        for n in range(3)
    )
    raw = (
        f"From: {REPORTER}\r\nTo: {to}\r\nSubject: {subject}\r\n"
        "Received: from laptop ([198.51.100.23]) by mx.example.org\r\n"
        "X-Originating-IP: [198.51.100.23]\r\nMessage-ID: <big@x>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="B"\r\n\r\n--B\r\n'
        "Content-Type: text/plain\r\n\r\nQUARANTINED-ANON text\r\n"
        f"{attachments}--B--\r\n"
    ).encode()
    deployment.imap.append(raw)

    assert deployment.run_once().returncode == 8  # quarantined

    ((anonymous, state, data),) = rows(
        deployment,
        "SELECT r.anonymous, r.state, e.data FROM report r "
        "JOIN encrypted_record e ON e.report_id = r.id",
    )
    assert (bool(anonymous), state) == (True, "quarantined")
    original = deployment.keys.decrypt(bytes(data))  # type: ignore[arg-type]
    assert b"QUARANTINED-ANON text" in original and b"DATA2" in original  # nothing lost
    for identity in (b"samantha", b"Samantha", b"198.51.100.23", b"<big@x>"):
        assert identity not in original
    assert not [m for m in deployment.smtp.messages if "samantha.jones@example.org" in m.rcpt_tos]
