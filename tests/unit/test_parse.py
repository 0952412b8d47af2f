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


_CHARSETS = st.sampled_from(["utf-8", "latin-1", "x-unknown", "utf-7", "rot13", "idna", ""])
_HEADER_VALUES = st.one_of(
    st.text(max_size=60),
    st.builds(
        "=?{}?{}?{}?=".format,
        _CHARSETS,
        st.sampled_from(["q", "b", "Q", "x"]),
        st.text(alphabet="=ABCDEFabc0123456789_<>@\r\n", max_size=30),
    ),
    st.sampled_from(['"a@evil.example"@good.example', "a@b.example, c@d.example", "(((", "<"]),
)
_HEADERS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "From",
                "To",
                "Subject",
                "Message-ID",
                "Date",
                "Content-Disposition",
                "Content-Transfer-Encoding",
                "X-Other",
                "List-Id",
            ]
        ),
        _HEADER_VALUES,
    ),
    max_size=4,
)
_LEAVES = st.builds(
    lambda subtype, charset, headers, body: ("leaf", subtype, charset, headers, body),
    st.sampled_from(["plain", "html", "octet-stream", "rfc822"]),
    _CHARSETS,
    _HEADERS,
    st.binary(max_size=60),
)


def _trees(children: st.SearchStrategy) -> st.SearchStrategy:
    return st.builds(
        lambda subtype, headers, parts: ("multipart", subtype, "", headers, parts),
        st.sampled_from(["mixed", "alternative", "related", "digest", "report"]),
        _HEADERS,
        st.lists(children, max_size=4),
    )


def _render(node: tuple, boundary: int = 0) -> bytes:
    kind, subtype, charset, headers, content = node
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers)
    if kind == "leaf":
        maintype = {"octet-stream": "application", "rfc822": "message"}.get(subtype, "text")
        params = f"; charset={charset}" if charset else ""
        head = f"{lines}Content-Type: {maintype}/{subtype}{params}\r\n\r\n"
        return head.encode("utf-8", "surrogateescape") + content
    mark = f"b{boundary}"
    head = f"{lines}Content-Type: multipart/{subtype}; boundary={mark}\r\n\r\n".encode(
        "utf-8", "surrogateescape"
    )
    body = b"".join(
        f"--{mark}\r\n".encode() + _render(child, boundary * 10 + i + 1) + b"\r\n"
        for i, child in enumerate(content)
    )
    return head + body + f"--{mark}--\r\n".encode()


@settings(max_examples=300, deadline=None)
@given(st.recursive(_LEAVES, _trees, max_leaves=12))
def test_random_mime_trees_give_a_report_or_a_parse_error(tree: tuple) -> None:
    raw = b"From: x@y.example\r\nMIME-Version: 1.0\r\n" + _render(tree)
    try:
        report = parse_email(raw, NOW)
    except ParseError as exc:
        assert exc.reason and "\n" not in exc.reason
        return
    assert isinstance(report.body, str)
    assert not any(c in report.subject for c in "\r\n\x00")
    for attachment in report.attachments:
        assert "\n" not in attachment.filename and "/" in attachment.content_type
    assert report.ack_address in (None, "x@y.example")
    assert all(isinstance(entry, str) and "\n\n" in entry for entry in report.forwarded)
    assert all(isinstance(note, str) and "\n" not in note for note in report.attachment_notes)
