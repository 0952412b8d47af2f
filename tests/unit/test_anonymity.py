"""anonymity.py: who counts as anonymous, and what an anonymous original keeps."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pipeline.anonymity import apply_anonymity, is_anonymous, redact_headers
from pipeline.report import Report

ADDRESSES = ["anonymous@example.ac.uk"]


@pytest.mark.parametrize(
    ("to", "subject", "expected"),
    [
        (["anonymous@example.ac.uk"], "hi", True),
        (["Anonymous@Example.ac.uk"], "hi", True),
        (["anonymous+web@example.ac.uk"], "hi", True),
        (["report+anonymous@example.ac.uk"], "hi", True),
        (["report@example.ac.uk"], "[Anonymous] hi", True),
        (["report@example.ac.uk"], "  [anonymous]hi", True),
        (["report@example.ac.uk"], "hi [anonymous]", False),
        (["report@example.ac.uk"], "hi", False),
    ],
)
def test_is_anonymous(to: list[str], subject: str, expected: bool) -> None:
    assert is_anonymous(to, subject, ADDRESSES, "[anonymous]") is expected


def test_apply_anonymity_forgets_the_sender_and_redacts_the_original() -> None:
    raw = (
        b"From: Name <who@example.org>\r\nReceived: from host\r\n\tby mx\r\n"
        b"X-Originating-IP: 192.0.2.1\r\nMessage-ID: <id@pc>\r\nDKIM-Signature: v=1;\r\n b=xyz\r\n"
        b"To: anonymous@example.ac.uk\r\nSubject: [anonymous] help\r\n\r\nthe body\r\n"
    )
    report = Report(
        source="email",
        subject="[anonymous] help",
        body="the body",
        received_at=datetime.now(UTC),
        sender_name="Name",
        sender_address="who@example.org",
        to_addresses=["anonymous@example.ac.uk"],
        message_id="<id@pc>",
        ack_address="who@example.org",
    )
    stored = apply_anonymity(report, raw, ADDRESSES, "[anonymous]")
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
    assert stored.endswith(b"\r\n\r\nthe body\r\n") or stored.endswith(b"\n\nthe body\r\n")
    assert b"Subject: [anonymous] help" in stored


def test_redact_keeps_a_message_without_identifying_headers() -> None:
    raw = b"Subject: s\nTo: t@x\n\nbody\n"
    assert redact_headers(raw) == raw
