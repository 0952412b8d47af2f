"""Acknowledgements only to people who wrote, and evidence never silently missing, through the
real daemon (Dovecot → run_daemon.py --once → SMTP sink, real gpg and SQLite).

One run takes in: a Gmail vacation reply (no report, no acknowledgement, counted in the audit
log), an echo of our own acknowledgement, a report from a plus-variant of the intake address,
a report whose sender failed DMARC at our receiving host (and one that passed), a report with
a forwarded message attached as message/rfc822, and an Apple Mail body split around a picture.
"""

from __future__ import annotations

import base64
import sqlite3
from email import message_from_bytes, policy
from email.message import EmailMessage

from pipeline.deliver import build_acknowledgement
from pipeline.render import Rendered
from tests.integration.conftest import INTAKE, Deployment, email
from tests.integration.test_email_end_to_end import referral_parts, status

AUTHSERV = "mx.example.ac.uk"
JPEG = base64.b64encode(b"\xff\xd8\xff\xe0 picture bytes \xff\xd9").decode()


def vacation_reply() -> bytes:
    return (
        b"From: Alex Away <alex.away@gmail.example>\r\nTo: report@example.ac.uk\r\n"
        b"Subject: Away until January\r\nMessage-ID: <vacation.1@mail.gmail.example>\r\n"
        b"Date: Tue, 24 Nov 2026 10:00:00 +0000\r\nX-Autoreply: yes\r\n"
        b"Auto-Submitted: auto-replied\r\nContent-Type: text/plain\r\n\r\n"
        b"I am travelling. VACATION-TEXT-77\r\n"
    )


def echo_of_our_acknowledgement() -> bytes:
    """Our acknowledgement, sent back to the intake by a reporter's forwarding rule."""
    ack = build_acknowledgement(
        f"Report and Support <{INTAKE}>",
        "<174000000000.4242.1234567890@example.ac.uk>",
        Rendered("Your report R-2026-000001 has been received", "Thank you. ECHO-TEXT-31\n"),
    )
    return ack.replace(f"From: Report and Support <{INTAKE}>".encode(), b"From: echo@example.org")


def forwarded_threat() -> bytes:
    inner = (
        "From: Pat Harasser <pat@example.net>\r\nTo: Casey <casey@example.org>\r\n"
        "Subject: I know where you live\r\nDate: Mon, 23 Nov 2026 23:00:00 +0000\r\n"
        "Message-ID: <threat.7@example.net>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        "I saw you at the library. FORWARDED-THREAT-TEXT-19\r\n"
    )
    return (
        "From: Casey <casey@example.org>\r\nTo: report@example.ac.uk\r\n"
        "Subject: Fwd: I know where you live\r\nMessage-ID: <fwd.1@example.org>\r\n"
        'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="OUT"\r\n\r\n'
        "--OUT\r\nContent-Type: text/plain\r\n\r\nHe keeps writing to me. FWD-COVER-TEXT\r\n"
        '--OUT\r\nContent-Type: message/rfc822; name="threat.eml"\r\n'
        'Content-Disposition: attachment; filename="threat.eml"\r\n\r\n'
        f"{inner}--OUT--\r\n"
    ).encode()


def apple_split_body() -> bytes:
    return (
        "From: Robin <robin@icloud.example>\r\nTo: report@example.ac.uk\r\n"
        "Subject: Friday night\r\nMessage-ID: <apple.1@icloud.example>\r\n"
        'Mime-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="Apple-Mail=_X"\r\n\r\n'
        "--Apple-Mail=_X\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        "This is what he did to my arm. BEFORE-PICTURE-52\r\n\r\n"
        "--Apple-Mail=_X\r\nContent-Disposition: inline; filename=IMG_0001.jpeg\r\n"
        "Content-Type: image/jpeg; name=IMG_0001.jpeg\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        f"{JPEG}\r\n"
        "--Apple-Mail=_X\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        "It was outside the student union at midnight. AFTER-PICTURE-52\r\n"
        "--Apple-Mail=_X--\r\n"
    ).encode()


def verified(result: str) -> str:
    return f"Authentication-Results: {AUTHSERV}; spf=pass smtp.mailfrom=x; dmarc={result}\r\n"


def referral_texts(deployment: Deployment) -> list[str]:
    texts = []
    for received in deployment.smtp.messages:
        outer = message_from_bytes(received.data, policy=policy.default)
        if outer.get_content_type() != "multipart/encrypted":
            continue
        inner = message_from_bytes(
            deployment.keys.decrypt(referral_parts(received)[1]), policy=policy.default
        )
        assert isinstance(inner, EmailMessage)
        body = inner.get_body(("plain",))
        assert body is not None
        texts.append(body.get_content())
    return texts


def test_acknowledgements_only_to_people_who_wrote_and_nothing_missing(
    deployment: Deployment,
) -> None:
    config = deployment.config_path.read_text()
    deployment.config_path.write_text(
        config.replace("[intake]\n", f'[intake]\nauthserv_id = "{AUTHSERV}"\n', 1)
    )
    inputs = [
        vacation_reply(),
        echo_of_our_acknowledgement(),
        email(
            "Sent from our own alias. PLUS-VARIANT-TEXT",
            sender="Report+Loop@Example.AC.UK",
            message_id="<plus.1@example.ac.uk>",
            extra_headers=verified("pass"),
        ),
        email(
            "Someone spoofed me? DMARC-FAIL-TEXT",
            sender="Dana <dana@example.org>",
            message_id="<dmarc.fail@example.org>",
            extra_headers=verified("fail"),
        ),
        email(
            "A verified report. DMARC-PASS-TEXT",
            sender="Ellis <ellis@example.org>",
            message_id="<dmarc.pass@example.org>",
            extra_headers=verified("pass"),
        ),
        forwarded_threat(),
        apple_split_body(),
    ]
    for raw in inputs:
        deployment.imap.append(raw)

    run = deployment.run_once()
    assert run.returncode == 0, run.stderr

    acknowledged = {
        m.rcpt_tos[0]
        for m in deployment.smtp.messages
        if message_from_bytes(m.data, policy=policy.default)["X-Report-Intake"]
    }
    # Only people who wrote and could be verified: not the vacation reply, not the echo, not
    # our own alias, not the DMARC failure. The forward and the Apple Mail report have no
    # Authentication-Results from our host, so they are not verified either.
    assert acknowledged == {"ellis@example.org"}

    counts = status(deployment)
    assert sum(counts["reports"].values()) == 5  # not the vacation reply, not the echo
    database = sqlite3.connect(deployment.data_dir / "intake.db")
    details = [d for (d,) in database.execute("SELECT detail FROM audit WHERE action='input'")]
    database.close()
    assert details.count("auto_reply") == 2  # the vacation reply and the echo (auto-replied)
    assert deployment.imap.uids("INBOX") == []

    texts = referral_texts(deployment)
    joined = "\n".join(texts)
    for marker in ("PLUS-VARIANT-TEXT", "DMARC-FAIL-TEXT", "DMARC-PASS-TEXT", "FWD-COVER-TEXT"):
        assert marker in joined  # every report was referred
    assert "VACATION-TEXT-77" not in joined and "ECHO-TEXT-31" not in joined
    forward = next(t for t in texts if "FWD-COVER-TEXT" in t)
    assert "FORWARDED-THREAT-TEXT-19" in forward
    assert "From: Pat Harasser <pat@example.net>" in forward
    assert "Subject: I know where you live" in forward
    apple = next(t for t in texts if "BEFORE-PICTURE-52" in t)
    assert "AFTER-PICTURE-52" in apple
    assert "IMG_0001.jpeg" in apple


def test_a_service_helpdesk_receipt_for_a_referral_is_not_a_report(deployment: Deployment) -> None:
    """A ticket system answering our referral automatically would otherwise be referred back
    to the service, which would answer again: a loop."""
    deployment.imap.append(email("HELPDESK-LOOP it happened"))
    assert deployment.run_once().returncode == 0
    referrals = [m for m in deployment.smtp.messages if deployment.decrypted(m) is not None]
    ours = referrals[0].message
    receipt = email(
        "Thank you, your ticket has been logged.",
        sender="Advice Centre Helpdesk <helpdesk@example.ac.uk>",
        subject=f"[Ticket #4711] {ours['Subject']}",
        message_id="<ticket-4711@helpdesk.example.ac.uk>",
        extra_headers=f"Auto-Submitted: auto-generated\r\nIn-Reply-To: {ours['Message-ID']}\r\n",
    )
    deployment.imap.append(receipt)
    sent = len(deployment.smtp.messages)

    assert deployment.run_once().returncode == 0

    assert len(deployment.smtp.messages) == sent  # nothing referred back, nothing acknowledged
    database = sqlite3.connect(deployment.data_dir / "intake.db")
    try:
        (reports,) = database.execute("SELECT count(*) FROM report").fetchone()
        (counted,) = database.execute(
            "SELECT count(*) FROM audit WHERE action = 'input' AND detail = 'auto_reply'"
        ).fetchone()
    finally:
        database.close()
    assert (reports, counted) == (1, 1)
    assert deployment.imap.uids("INBOX") == []
