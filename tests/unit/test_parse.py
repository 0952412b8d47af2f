"""parse.py: raw bytes → Report, or ParseError with a reason; never anything else."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.parse import ParseError, content_fingerprint, html_to_text, parse_email

NOW = datetime(2026, 11, 25, tzinfo=UTC)


def test_plain_message_fields() -> None:
    raw = (
        b"From: =?utf-8?q?Zo=C3=AB_Example?= <Zoe@Example.org>\r\nTo: a@x.example, b@x.example\r\n"
        b"Subject: =?utf-8?q?Caf=C3=A9?=\r\nMessage-ID: <id1@x>\r\n"
        b"Date: Tue, 24 Nov 2026 10:00:00 +0000\r\n\r\nHello\r\n"
    )
    report = parse_email(raw, NOW)
    assert (report.sender_name, report.sender_address) == ("Zoë Example", "zoe@example.org")
    assert report.subject == "Café"
    assert report.to_addresses == ["a@x.example", "b@x.example"]
    assert report.body == "Hello"
    assert report.sent_at == datetime(2026, 11, 24, 10, tzinfo=UTC)
    assert report.ack_address == "zoe@example.org"


def test_html_only_is_converted_without_scripts() -> None:
    raw = (
        b"From: a@x.example\r\nContent-Type: text/html\r\n\r\n"
        b"<p>First</p><script>steal()</script><img src='http://tracker.example/x'><p>Second</p>"
    )
    report = parse_email(raw, NOW)
    assert report.body == "First\n\nSecond"


def test_attachments_are_listed_with_type_and_size() -> None:
    raw = (
        b"From: a@x.example\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
        b"--B\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        b"--B\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=a.pdf\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQ=\r\n--B--\r\n"
    )
    report = parse_email(raw, NOW)
    assert report.body == "see attached"
    assert [(a.filename, a.content_type, a.size) for a in report.attachments] == [
        ("a.pdf", "application/pdf", 8)
    ]


@pytest.mark.parametrize(
    "headers",
    [b"Auto-Submitted: auto-replied\r\n", b"Precedence: bulk\r\n", b"List-Id: <l.example>\r\n"],
)
def test_no_acknowledgement_to_automatic_or_list_mail(headers: bytes) -> None:
    raw = b"From: a@x.example\r\n" + headers + b"\r\nbody\r\n"
    assert parse_email(raw, NOW).ack_address is None


@pytest.mark.parametrize(
    "sender",
    [b"MAILER-DAEMON@x.example", b'"a@evil.example" <b@good.example>', b"a@x.example, c@y.example"],
)
def test_no_acknowledgement_to_daemons_or_ambiguous_senders(sender: bytes) -> None:
    raw = b"From: " + sender + b"\r\n\r\nbody\r\n"
    assert parse_email(raw, NOW).ack_address is None


@pytest.mark.parametrize("raw", [b"", b"   \r\n", b"no headers here at all"])
def test_unreadable_input_is_a_parse_error(raw: bytes) -> None:
    with pytest.raises(ParseError):
        parse_email(raw, NOW)


def test_fingerprint_ignores_new_received_headers_but_not_the_body() -> None:
    raw = b"Message-ID: <same@x>\r\nFrom: a@x.example\r\n\r\nbody one\r\n"
    assert content_fingerprint(raw) == content_fingerprint(b"Received: from relay\r\n" + raw)
    assert content_fingerprint(raw) != content_fingerprint(raw.replace(b"one", b"two"))


def test_html_to_text_keeps_entities_and_drops_style() -> None:
    assert html_to_text("<style>p{}</style><p>a &amp; b</p>") == "a & b"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_give_a_report_or_a_parse_error(raw: bytes) -> None:
    try:
        report = parse_email(raw, NOW)
    except ParseError as exc:
        assert exc.reason
    else:
        assert isinstance(report.body, str)
        assert "\n" not in report.subject and "\r" not in report.subject


@settings(max_examples=200, deadline=None)
@given(
    st.text(max_size=200),
    st.text(max_size=200),
    st.sampled_from(["utf-8", "latin-1", "x-unknown-charset", "utf-7"]),
)
def test_arbitrary_headers_and_charsets_never_crash(subject: str, body: str, charset: str) -> None:
    raw = (
        f"From: x@y.example\r\nSubject: {subject}\r\n"
        f"Content-Type: text/plain; charset={charset}\r\n\r\n{body}"
    ).encode("utf-8", "surrogateescape")
    try:
        report = parse_email(raw, NOW)
    except ParseError:
        return
    assert "\n" not in report.subject
