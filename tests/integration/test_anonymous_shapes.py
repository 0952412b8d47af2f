"""Anonymous mail as real clients write it, through the real daemon on Dovecot and gpg: every
recipient shape of issue 8 §1 gives an anonymous referral with nothing of its sender, and an
anonymous report's signature and reply attribution never reach a service."""

from __future__ import annotations

import base64
import sqlite3
from email import message_from_bytes, policy

from pipeline.scrub import ATTRIBUTION_NOTE, SIGNATURE_NOTE
from pipeline.store import unbundle_record
from tests.integration.conftest import ANONYMOUS, INTAKE, Deployment, email
from tests.servers.smtp import Received

#: Recipient and envelope fields, as the clients and servers of issue 8 write them.
SHAPES = {
    "outlook-double": f'To: "{ANONYMOUS}" <{ANONYMOUS}>',
    "outlook-single": f"To: '{ANONYMOUS}' <{ANONYMOUS}>",
    "specials": f"To: Anon (Reports): [Uni]. O'Neil <{ANONYMOUS}>",
    "group": f"To: Anonymous reports: {ANONYMOUS};",
    "encoded-at": "To: =?utf-8?q?anonymous=40example=2Eac=2Euk?= <report@example.ac.uk>",
    "encoded-b": f"To: =?utf-8?b?{base64.b64encode(ANONYMOUS.encode()).decode()}?= <{INTAKE}>",
    "comment": f"To: {ANONYMOUS} (Anonymous reporting)",
    "upper": f"To: {ANONYMOUS.upper()}",
    "several": f"To: Friend <friend@example.org>, {ANONYMOUS}, {INTAKE}",
    "cc-only": f"To: {INTAKE}\r\nCc: Anonymous <{ANONYMOUS}>",
    "bcc-delivered-to": f"To: undisclosed-recipients:;\r\nDelivered-To: {ANONYMOUS}",
    "bcc-x-original-to": f"To: friend@example.org\r\nX-Original-To: {ANONYMOUS}",
    "bcc-envelope-to": f"To: friend@example.org\r\nEnvelope-To: {ANONYMOUS}",
    "bcc-x-envelope-to": f"To: friend@example.org\r\nX-Envelope-To: <{ANONYMOUS}>",
    "bcc-exchange": "To: friend@example.org\r\n"
    f"X-MS-Exchange-Organization-OriginalEnvelopeRecipients: {ANONYMOUS}",
    "plus-tag": "To: Anonymous+Web@Example.AC.UK",
    "unreadable": f'To: "Report and Support <{INTAKE}>',  # unbalanced: anonymous, fail closed
}


def _shaped(number: int, key: str, fields: str) -> bytes:
    return (
        f"From: Pat Shape{number} <pat.shape{number}@example.org>\r\n{fields}\r\n"
        f"Subject: shape {number}\r\nMessage-ID: <shape-{number}@pc.example.org>\r\n"
        "Date: Tue, 24 Nov 2026 10:17:00 +0000\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        f"Someone keeps shouting at me in the corridor. SHAPE-{key}\r\n"
    ).encode()


def _referrals(deployment: Deployment) -> list[str]:
    return [inner.decode() for inner in deployment.referrals()]


def _acknowledgements(deployment: Deployment) -> dict[str, Received]:
    return {
        m.rcpt_tos[0]: m
        for m in deployment.smtp.messages
        if m.message.get_content_type() != "multipart/encrypted"
    }


def test_every_recipient_shape_gives_an_anonymous_referral(deployment: Deployment) -> None:
    shapes = list(SHAPES.items())
    for number, (key, fields) in enumerate(shapes):
        deployment.imap.append(_shaped(number, key, fields))
    deployment.imap.append(email("A named control report. SHAPE-named", to=INTAKE))

    run = deployment.run_once()

    assert run.returncode == 0, run.stderr
    referrals = _referrals(deployment)
    acks = _acknowledgements(deployment)
    for number, (key, _) in enumerate(shapes):
        found = [r for r in referrals if f"SHAPE-{key}\n" in r or f"SHAPE-{key}\r\n" in r]
        assert len(found) == 1, key
        referral = found[0]
        assert f"pat.shape{number}" not in referral, key
        assert f"Shape{number}" not in referral, key
        assert "\nReporter\n" not in referral and "Anonymous:  yes" in referral, key
        ack = message_from_bytes(acks[f"pat.shape{number}@example.org"].data, policy=policy.default)
        assert "You reported anonymously" in ack.get_content(), key  # type: ignore[attr-defined]
    named = next(r for r in referrals if "SHAPE-named" in r)
    assert "sam.student@example.ac.uk" in named and "Anonymous:  no" in named
    stored = sqlite3.connect(deployment.data_dir / "intake.db").execute(
        "SELECT count(*) FROM report WHERE anonymous"
    )
    assert stored.fetchone() == (len(shapes),)


SIGNED = """It happened again after the seminar. SIGNED-BODY-31

Thanks,
Sam Student
BSc Psychology, Year 2
07700 900123

On Tue, 24 Nov 2026 at 10:00, Sam Student <sam.student@example.ac.uk> wrote:
> Someone keeps following me home.
"""


def test_an_anonymous_signature_and_attribution_never_reach_a_service(
    deployment: Deployment,
) -> None:
    deployment.imap.append(
        email(SIGNED.replace("\n", "\r\n"), to=ANONYMOUS, message_id="<signed@pc.example.org>")
    )

    assert deployment.run_once().returncode == 0

    (referral,) = _referrals(deployment)
    assert "SIGNED-BODY-31" in referral and "> Someone keeps following me home." in referral
    for identity in ("Sam Student", "sam.student", "07700 900123", "Psychology"):
        assert identity not in referral
    assert SIGNATURE_NOTE in referral and ATTRIBUTION_NOTE in referral
    database = sqlite3.connect(deployment.data_dir / "intake.db")
    (original,) = database.execute(
        "SELECT data FROM encrypted_record WHERE kind='bundle'"
    ).fetchone()
    stored = unbundle_record(deployment.keys.decrypt(original))[1].decode()
    head, _, body = stored.replace("\r\n", "\n").partition("\n\n")
    assert "07700 900123" in body  # the encrypted original keeps the text as written
    assert "sam.student" not in head and "Message-ID" not in head
