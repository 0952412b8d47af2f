"""anonymity.py and redact.py: who counts as anonymous, and what an anonymous original keeps
(an allowlist of header fields, at the top, in every part and in attached messages)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import compat32

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.anonymity import SUBJECT_ONLY_NOTE, apply_anonymity, is_anonymous_message
from pipeline.parse import parse_email
from pipeline.redact import ALLOWED, REBUILT_NOTE, rounded_date, stored_original
from pipeline.report import Report

ADDRESSES = ["anonymous@example.ac.uk"]
MARKER = "[anonymous]"


def _raw(to: str = "report@example.ac.uk", extra: str = "") -> bytes:
    return (
        f"From: Sam <sam@example.org>\r\nTo: {to}\r\n{extra}Subject: hi\r\n\r\nbody\r\n"
    ).encode()


@pytest.mark.parametrize(
    ("to", "subject", "expected"),
    [
        ("anonymous@example.ac.uk", "hi", True),
        ("Anonymous@Example.ac.uk", "hi", True),
        ("anonymous+web@example.ac.uk", "hi", True),
        ("report+anonymous@example.ac.uk", "hi", True),
        ("report@example.ac.uk", "[Anonymous] hi", True),
        ("report@example.ac.uk", "  [anonymous]hi", True),
        ("report@example.ac.uk", "hi [anonymous]", False),
        ("report@example.ac.uk", "hi", False),
        ("Report and Support <report@example.ac.uk>", "hi", False),
        ('"Support, Report (Intake)" <report@example.ac.uk>', "hi", False),
        ("undisclosed-recipients:;", "hi", False),
        ("Report <report@example.ac.uk>, ", "hi", False),  # a trailing comma is no item
    ],
)
def test_is_anonymous_message(to: str, subject: str, expected: bool) -> None:
    assert is_anonymous_message(_raw(to), subject, ADDRESSES, MARKER) is expected


def test_a_named_message_to_the_intake_in_envelope_headers_is_named() -> None:
    extra = (
        "Delivered-To: report@example.ac.uk\r\nReceived: from a by b for <report@example.ac.uk>\r\n"
    )
    assert not is_anonymous_message(_raw(extra=extra), "hi", ADDRESSES, MARKER)


@pytest.mark.parametrize(
    "to",
    [
        '"broken <report@example.ac.uk>',  # unbalanced quote
        "Report (Support <report@example.ac.uk>",  # unbalanced comment
        "<report@example.ac.uk",  # unbalanced angle bracket
        "=?utf-8?b?####?= <report@example.ac.uk>",  # an encoded word that does not decode
        "=?x-no-such-charset?q?Sam?= <report@example.ac.uk>",
        "Report and Support",  # no address
        "O'Brien, report@example.ac.uk",  # an item without an address, no display name after it
    ],
)
def test_a_recipient_header_that_cannot_be_read_is_anonymous(to: str) -> None:
    assert is_anonymous_message(_raw(to), "hi", ADDRESSES, MARKER)


def test_undecodable_bytes_and_an_endless_header_block_are_anonymous() -> None:
    raw = b"From: a@example.org\r\nTo: R\xe9port <report@example.ac.uk>\r\n\r\nbody"
    assert is_anonymous_message(raw, "hi", ADDRESSES, MARKER)
    endless = b"To: report@example.ac.uk\r\n" + b"X-Pad: " + b"a" * (2 * 1024 * 1024)
    assert is_anonymous_message(endless, "hi", ADDRESSES, MARKER)


def _report(subject: str = "[anonymous] help") -> Report:
    return Report(
        source="email",
        subject=subject,
        body="the body",
        received_at=datetime.now(UTC),
        sender_name="Name",
        sender_address="who@example.org",
        to_addresses=["anonymous@example.ac.uk"],
        message_id="<id@pc>",
        ack_address="who@example.org",
    )


def test_apply_anonymity_forgets_the_sender_and_redacts_the_original() -> None:
    raw = (
        b"From: Name <who@example.org>\r\nReceived: from host\r\n\tby mx\r\n"
        b"X-Originating-IP: 192.0.2.1\r\nMessage-ID: <id@pc>\r\nDKIM-Signature: v=1;\r\n b=xyz\r\n"
        b"To: anonymous@example.ac.uk\r\nSubject: [anonymous] help\r\n\r\nthe body\r\n"
    )
    report = _report()
    stored = apply_anonymity(report, raw, ADDRESSES, MARKER)
    assert report.anonymous and report.sender_name is None and report.sender_address is None
    assert report.message_id is None and report.subject == "help"
    assert report.ack_address == "who@example.org"  # used once for the acknowledgement
    for identity in (
        b"who@example.org",
        b"192.0.2.1",
        b"from host",
        b"by mx",
        b"<id@pc>",
        b"b=xyz",
    ):
        assert identity not in stored
    assert stored == b"Subject: [anonymous] help\r\n\r\nthe body\r\n"


def test_a_named_original_is_stored_as_received() -> None:
    raw = _raw()
    assert apply_anonymity(_report("hi"), raw, ADDRESSES, MARKER) == raw


def test_a_forced_anonymous_report_is_anonymised() -> None:
    report = _report("hi")
    stored = apply_anonymity(report, _raw(), ADDRESSES, MARKER, forced=True)
    assert report.anonymous and b"sam@example.org" not in stored


# --- the stored original: an allowlist of header fields -----------------------------------------

#: Header fields that identify a sender, their machine or their organisation.
IDENTITY_FIELDS = [
    "From", "Sender", "Reply-To", "Return-Path", "Received", "X-Received", "X-Originating-IP",
    "X-Sender-IP", "X-Forwarded-For", "Message-ID", "In-Reply-To", "References",
    "DKIM-Signature", "ARC-Seal", "ARC-Message-Signature", "ARC-Authentication-Results",
    "Authentication-Results", "Received-SPF", "User-Agent", "X-Mailer", "X-Original-From",
    "X-Envelope-From", "X-Google-Smtp-Source", "X-Gm-Message-State",
    "X-MS-Exchange-Organization-AuthAs", "X-MS-Exchange-CrossTenant-OriginalArrivalTime",
    "X-MS-Exchange-Organization-Network-Message-Id", "X-Forefront-Antispam-Report",
    "X-Microsoft-Antispam-Mailbox-Delivery", "Thread-Index", "Thread-Topic", "Accept-Language",
    "Autocrypt", "OpenPGP", "Disposition-Notification-To", "Return-Receipt-To",
    "X-Confirm-Reading-To", "Organization", "Resent-From", "Resent-To", "Resent-Date",
    "Resent-Message-ID", "List-Unsubscribe", "To", "Cc", "Bcc", "Delivered-To", "X-Original-To",
    "X-Apparently-To", "X-Face", "Face", "X-Spam-Status", "Content-ID", "Content-Description",
    "Content-Location",
]  # fmt: skip


def _identity_block(tag: str) -> str:
    return "".join(
        f"{name}: {tag}-{number}-canary\r\n" for number, name in enumerate(IDENTITY_FIELDS)
    )


PHOTO = bytes(range(256)) * 4
PDF = b"%PDF-1.4 evidence\r\n%%EOF\r\n"


def _corpus() -> bytes:
    """A multipart message with the identity fields at the top, in a text part, in an attached
    message and in that message's own parts; a photo and a PDF attached."""
    photo = base64.encodebytes(PHOTO).replace(b"\n", b"\r\n").decode()
    return (
        "Received: from pc.example.org (192.0.2.7) by mx.example.ac.uk\r\n"
        "\tfor <anonymous@example.ac.uk>; Tue, 24 Nov 2026 10:17:44 +0100\r\n"
        + _identity_block("TOP")
        + "Subject: what happened\r\nDate: Tue, 24 Nov 2026 10:17:44 +0100\r\n"
        'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="outer"\r\n\r\n'
        "This is a multi-part message in MIME format.\r\n"
        "--outer\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
        + _identity_block("PART")
        + "\r\nIt happened on Friday. \xe9vidence\r\n"
        '--outer\r\nContent-Type: image/jpeg; name="photo.jpg"\r\n'
        'Content-Disposition: attachment; filename="photo.jpg";\r\n'
        ' creation-date="Tue, 24 Nov 2026 09:00:01 +0000"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n" + photo + "--outer\r\n"
        'Content-Type: message/rfc822\r\nContent-Disposition: attachment; filename="fwd.eml"\r\n'
        "\r\n"
        + _identity_block("NEST")
        + "Subject: you will regret it\r\nDate: Mon, 23 Nov 2026 22:59:59 -0500\r\n"
        'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="inner"\r\n\r\n'
        "--inner\r\nContent-Type: text/plain\r\n"
        + _identity_block("INNERPART")
        + "\r\nthe message he sent\r\n"
        "--inner\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.b64encode(PDF).decode()
        + "\r\n--inner--\r\n\r\n--outer--\r\n"
    ).encode("utf-8")


def _leaves(raw: bytes) -> list[tuple[str, bytes]]:
    msg = BytesParser(policy=compat32).parsebytes(raw)
    return [
        (part.get_content_type(), part.get_payload(decode=True))
        for part in msg.walk()
        if not part.is_multipart()
    ]


def test_no_identity_field_survives_anywhere_and_the_evidence_is_intact() -> None:
    raw = _corpus()
    stored = stored_original(raw)
    assert REBUILT_NOTE.encode() not in stored  # rewritten in place, not rebuilt
    assert b"canary" in raw and b"canary" not in stored
    for word in (b"192.0.2.7", b"pc.example.org", b"09:00:01", b"17:44"):
        assert word not in stored
    msg = BytesParser(policy=compat32).parsebytes(stored)
    for part in msg.walk():
        assert {key.lower() for key in part} <= ALLOWED
    assert _leaves(stored) == _leaves(raw)
    contents = [data for _, data in _leaves(stored)]
    assert PHOTO in contents and PDF in contents and b"the message he sent" in contents
    assert msg["Subject"] == "what happened"
    assert msg["Date"] == "Tue, 24 Nov 2026 09:00:00 +0000"  # rounded down, in UTC
    inner = next(p for p in msg.walk() if p.get_content_type() == "message/rfc822")
    assert inner.get_payload(0)["Date"] == "Tue, 24 Nov 2026 03:00:00 +0000"
    assert b'filename="photo.jpg"' in stored  # evidence, kept encrypted


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"Tue, 24 Nov 2026 10:17:44 +0100", b"Tue, 24 Nov 2026 09:00:00 +0000"),
        (b" Tue, 24 Nov 2026 23:59:59 -0100", b"Wed, 25 Nov 2026 00:00:00 +0000"),
        (b"24 Nov 2026 10:17 GMT", b"Tue, 24 Nov 2026 10:00:00 +0000"),
        (b"yesterday", None),
        (b"", None),
        (b"Fri, 31 Dec 9999 23:59:59 -1200", None),
    ],
)
def test_rounded_date(value: bytes, expected: bytes | None) -> None:
    assert rounded_date(value) == expected


def test_an_unreadable_date_and_the_mbox_line_are_dropped() -> None:
    raw = b"From sam@example.org Tue Nov 24 10:00:00 2026\nDate: soon\nSubject: s\n\nbody\n"
    assert stored_original(raw) == b"Subject: s\n\nbody\n"


def test_headers_after_a_broken_line_are_not_kept_the_copy_is_rebuilt() -> None:
    raw = (
        b"Subject: s\r\nnot a header line\r\nFrom: Sam Student <sam@example.org>\r\n"
        b"X-Originating-IP: 192.0.2.9\r\n\r\nbody\r\n"
    )
    stored = stored_original(raw)
    top = stored.split(b"\n\n", 1)[0]
    assert b"sam@example.org" not in top and b"192.0.2.9" not in top
    assert REBUILT_NOTE.encode() in stored.replace(b"\n", b" ") or b"rebuilt" in stored
    msg = BytesParser(policy=compat32).parsebytes(stored)
    for part in msg.walk():
        assert {key.lower() for key in part} <= ALLOWED


def test_a_message_built_by_the_email_package_keeps_its_parts() -> None:
    message = EmailMessage()
    message["From"] = "Sam <sam@example.org>"
    message["To"] = "anonymous@example.ac.uk"
    message["Subject"] = "photos"
    message["Message-ID"] = "<abc@pc.example.org>"
    message.set_content("See the photo.")
    message.add_attachment(PHOTO, maintype="image", subtype="jpeg", filename="p.jpg")
    raw = message.as_bytes()
    stored = stored_original(raw)
    assert b"sam@example.org" not in stored and b"pc.example.org" not in stored
    assert _leaves(stored) == _leaves(raw)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_stored_original_never_raises_and_keeps_only_allowed_top_fields(raw: bytes) -> None:
    stored = stored_original(b"From: Sam <sam@example.org>\r\n" + raw)
    msg = BytesParser(policy=compat32).parsebytes(stored)
    for part in msg.walk():
        assert {str(key).strip().lower() for key in part} <= ALLOWED


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                b"Content-Type: multipart/mixed; boundary=b\r\n",
                b"Content-Type: message/rfc822\r\n",
                b"From: Sam <sam@example.org>\r\n",
                b"X-Originating-IP: 192.0.2.1\r\n",
                b"\r\n",
                b"--b\r\n",
                b"--b--\r\n",
                b"text\r\n",
                b" folded\r\n",
                b"Subject: s\r\n",
            ]
        ),
        max_size=40,
    )
)
def test_no_shape_of_mime_lets_a_sender_field_through(lines: list[bytes]) -> None:
    stored = stored_original(b"".join(lines))
    msg = BytesParser(policy=compat32).parsebytes(stored)
    for part in msg.walk():
        assert {str(key).strip().lower() for key in part} <= ALLOWED


def test_an_anonymous_report_written_in_the_subject_only_keeps_its_text() -> None:
    """The referral withholds an anonymous subject: when it is the whole report, it becomes
    the report's text (after the sender's name is taken out), with a note."""
    raw = (
        b"From: Jo Canary <jo.canary@example.org>\r\nTo: anonymous@example.ac.uk\r\n"
        b"Subject: Dr Smith in Chemistry followed Jo Canary home\r\n\r\n\r\n"
    )
    report = parse_email(raw, datetime(2026, 11, 24, 10, tzinfo=UTC))
    apply_anonymity(report, raw, ["anonymous@example.ac.uk"], "[anonymous]")
    assert report.anonymous
    assert "Dr Smith in Chemistry followed" in report.body and "Jo" not in report.body
    assert SUBJECT_ONLY_NOTE in report.notes
