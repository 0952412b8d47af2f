"""body.py: which parts of real-world mail become body text, and which become attachments.

Only text/plain and text/html are ever body text: a meeting invite (text/calendar) or a contact
card (text/vcard) is an attachment. An empty plain-text alternative gives way to the HTML one.
A forwarded message sent base64 or quoted-printable encoded is opened like any other, within
the same limits.
"""

from __future__ import annotations

import base64
import quopri
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.clean import clean_attachment
from pipeline.config import LimitsConfig
from pipeline.parse import ParseError, parse_email
from pipeline.redact import stored_original

NOW = datetime(2026, 11, 25, tzinfo=UTC)

INVITE = (
    "BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\n"
    "ORGANIZER;CN=Sam Student:mailto:sam.student@uni.example\r\n"
    "ATTENDEE;CN=Pat:mailto:pat@uni.example\r\nSUMMARY:Chat\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
)
VCARD = (
    "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Sam Student\r\nEMAIL:sam.student@uni.example\r\n"
    "TEL:+44 7700 900123\r\nEND:VCARD\r\n"
)


def _mixed(*parts: str, top: str = "From: sam@x.example\n") -> bytes:
    body = "".join(f"--B\n{part}\n" for part in parts)
    return (
        f"{top}MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=B\n\n{body}--B--\n"
    ).encode()


def _alternative(*parts: str) -> str:
    body = "".join(f"--A\n{part}\n" for part in parts)
    return f"Content-Type: multipart/alternative; boundary=A\n\n{body}--A--\n"


def _no_identity(text: str) -> None:
    for leak in ("ORGANIZER", "mailto:", "Sam Student", "sam.student", "7700", "VCARD", "FN:"):
        assert leak not in text, leak


# --- 1. only text/plain and text/html are body text ------------------------------------------


def test_inline_calendar_invite_is_an_attachment_not_body_text() -> None:
    raw = _mixed(
        "Content-Type: text/plain\n\nHe sent me this invite. BODY-TEXT",
        f"Content-Type: text/calendar; method=REQUEST; charset=utf-8\n\n{INVITE}",
    )
    report = parse_email(raw, NOW)
    assert report.body == "He sent me this invite. BODY-TEXT"
    _no_identity(report.body + "".join(report.forwarded) + "".join(report.attachment_notes))
    assert [(a.filename, a.content_type) for a in report.attachments] == [
        ("attachment-1.ics", "text/calendar")
    ]
    assert b"ORGANIZER;CN=Sam Student" in report.attachments[0].data


def test_outlook_invite_alternative_is_an_attachment() -> None:
    raw = (
        "From: sam@x.example\nMIME-Version: 1.0\n"
        + _alternative(
            "Content-Type: text/plain\n\nMeet me",
            "Content-Type: text/html\n\n<p>Meet me</p>",
            f"Content-Type: text/calendar; method=REQUEST\n\n{INVITE}",
        )
    ).encode()
    report = parse_email(raw, NOW)
    assert report.body == "Meet me"
    assert [a.filename for a in report.attachments] == ["attachment-1.ics"]


def test_a_message_that_is_only_an_invite_has_no_body_text() -> None:
    raw = f"From: sam@x.example\nContent-Type: text/calendar\n\n{INVITE}".encode()
    report = parse_email(raw, NOW)
    assert report.body == ""
    assert [(a.filename, a.content_type) for a in report.attachments] == [
        ("attachment-1.ics", "text/calendar")
    ]


@pytest.mark.parametrize(
    ("ctype", "name"),
    [
        ("text/vcard", "attachment-1.vcf"),
        ("text/x-vcard", "attachment-1.vcf"),
        ("text/directory", "attachment-1.vcf"),
        ("text/enriched", "attachment-1"),
        ("text/rtf", "attachment-1"),
        ("text/x-unknown-thing", "attachment-1"),
    ],
)
def test_other_inline_text_types_are_attachments(ctype: str, name: str) -> None:
    raw = _mixed("Content-Type: text/plain\n\nmy card", f"Content-Type: {ctype}\n\n{VCARD}")
    report = parse_email(raw, NOW)
    assert report.body == "my card"
    _no_identity(report.body)
    assert [(a.filename, a.content_type) for a in report.attachments] == [(name, ctype)]


def test_a_named_inline_card_keeps_its_name() -> None:
    raw = _mixed(
        "Content-Type: text/plain\n\nmy card",
        f'Content-Type: text/x-vcard; name="Sam.vcf"\nContent-Disposition: inline\n\n{VCARD}',
    )
    assert [a.filename for a in parse_email(raw, NOW).attachments] == ["Sam.vcf"]


@pytest.mark.parametrize("ctype", ["text/calendar", "text/vcard", "text/x-vcard"])
def test_the_anonymous_cleaner_withholds_such_attachments(ctype: str) -> None:
    raw = _mixed("Content-Type: text/plain\n\nx", f"Content-Type: {ctype}\n\n{INVITE}{VCARD}")
    (attachment,) = parse_email(raw, NOW).attachments
    cleaned = clean_attachment(attachment)
    assert cleaned.attachment is None
    assert "withheld" in (cleaned.note or "")


# --- 2. an empty plain-text alternative gives way to HTML ------------------------------------


@pytest.mark.parametrize(
    "plain",
    [
        "Content-Type: text/plain\n\n",
        "Content-Type: text/plain; charset=utf-8\n\n \r\n\t\n",
        "Content-Type: text/plain\nContent-Transfer-Encoding: base64\n\nICAKCg==\n",
        "Content-Type: text/plain\nContent-Transfer-Encoding: quoted-printable\n\n=20=20\n",
    ],
)
def test_empty_plain_alternative_uses_the_html_one(plain: str) -> None:
    html = "Content-Type: text/html\n\n<p>It happened on <b>Friday</b>.</p><p>HTML-TEXT</p>"
    raw = ("From: sam@x.example\nMIME-Version: 1.0\n" + _alternative(plain, html)).encode()
    report = parse_email(raw, NOW)
    assert report.body == "It happened on Friday.\n\nHTML-TEXT"
    assert report.attachments == [] and report.attachment_notes == []


def test_empty_plain_alternative_beside_related_html_keeps_the_picture() -> None:
    related = (
        "Content-Type: multipart/related; boundary=R\n\n"
        "--R\nContent-Type: text/html\n\n<p>HTML-TEXT</p><img src=cid:i>\n"
        "--R\nContent-Type: image/png\nContent-ID: <i>\nContent-Transfer-Encoding: base64\n\n"
        "iVBORw0KGgo=\n--R--\n"
    )
    raw = _mixed(_alternative("Content-Type: text/plain\n\n\n", related))
    report = parse_email(raw, NOW)
    assert report.body == "HTML-TEXT"
    assert [a.content_type for a in report.attachments] == ["image/png"]


def test_a_non_empty_plain_alternative_is_still_preferred() -> None:
    raw = (
        "From: sam@x.example\nMIME-Version: 1.0\n"
        + _alternative(
            "Content-Type: text/plain\n\nPLAIN", "Content-Type: text/html\n\n<p>HTML</p>"
        )
    ).encode()
    assert parse_email(raw, NOW).body == "PLAIN"


# --- 3. encoded forwarded messages are opened --------------------------------------------------

INNER = (
    b"Received: from [192.0.2.7] by mx.example.net\r\n"
    b"X-Originating-IP: [192.0.2.7]\r\n"
    b"From: Pat Harasser <harasser@example.net>\r\n"
    b"To: sam.student@uni.example\r\n"
    b"Subject: you again\r\n"
    b"Date: Tue, 24 Nov 2026 23:12:00 +0000\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=I\r\n\r\n"
    b"--I\r\nContent-Type: text/plain\r\n\r\nI know where you live. ENCODED-FORWARD-TEXT\r\n"
    b'--I\r\nContent-Type: image/png; name="door.png"\r\nContent-Disposition: attachment; '
    b'filename="door.png"\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n--I--\r\n'
)


def _encoded(inner: bytes, encoding: str) -> bytes:
    if encoding == "base64":
        return base64.encodebytes(inner)
    return quopri.encodestring(inner)


def _forward(inner: bytes, encoding: str, ctype: str = "message/rfc822") -> str:
    data = _encoded(inner, encoding).decode("ascii")
    return (
        f'Content-Type: {ctype}; name="fwd.eml"\nContent-Disposition: attachment; '
        f'filename="fwd.eml"\nContent-Transfer-Encoding: {encoding}\n\n{data}'
    )


@pytest.mark.parametrize("encoding", ["base64", "quoted-printable", "BASE64"])
def test_an_encoded_forward_is_read_like_any_other(encoding: str) -> None:
    forward = _forward(INNER, encoding.lower())
    forward = forward.replace(f"Encoding: {encoding.lower()}", f"Encoding: {encoding}")
    raw = _mixed("Content-Type: text/plain\n\nsee attached", forward)
    report = parse_email(raw, NOW)
    assert report.body == "see attached"
    assert report.forwarded == [
        "From: Pat Harasser <harasser@example.net>\nDate: Tue, 24 Nov 2026 23:12:00 +0000\n"
        "Subject: you again\nTo: sam.student@uni.example\n\n"
        "I know where you live. ENCODED-FORWARD-TEXT"
    ]
    assert [(a.filename, a.content_type) for a in report.attachments] == [("door.png", "image/png")]
    assert report.attachment_notes == []


def test_an_encoded_forward_inside_an_encoded_forward() -> None:
    middle = (
        b"From: second@example.net\r\nSubject: second\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=M\r\n\r\n--M\r\nContent-Type: text/plain\r\n\r\n"
        b"SECOND-TEXT\r\n--M\r\n" + _forward(INNER, "base64").encode() + b"\r\n--M--\r\n"
    )
    raw = _mixed("Content-Type: text/plain\n\nboth", _forward(middle, "quoted-printable"))
    report = parse_email(raw, NOW)
    assert [entry.split("\n\n", 1)[1] for entry in report.forwarded] == [
        "SECOND-TEXT",
        "I know where you live. ENCODED-FORWARD-TEXT",
    ]
    assert [a.filename for a in report.attachments] == ["door.png"]


def test_an_encoded_global_message_is_read_too() -> None:
    inner = "From: pat@example.net\r\nSubject: Grüße\r\n\r\nGLOBAL-TEXT ü\r\n".encode()
    raw = _mixed("Content-Type: text/plain\n\nx", _forward(inner, "base64", "message/global"))
    report = parse_email(raw, NOW)
    assert report.forwarded == ["From: pat@example.net\nSubject: Grüße\n\nGLOBAL-TEXT ü"]


@pytest.mark.parametrize("junk", [b"", b"\x00\x01\x02 not a message at all", b"   \r\n\r\n"])
def test_an_encoded_forward_that_is_not_a_message_is_attached_with_one_note(junk: bytes) -> None:
    raw = _mixed("Content-Type: text/plain\n\nx", _forward(junk, "base64"))
    report = parse_email(raw, NOW)
    assert report.forwarded == []
    assert [(a.filename, a.content_type) for a in report.attachments] == [
        ("fwd.eml", "message/rfc822")
    ]
    assert report.attachments[0].data == junk
    assert len(report.attachment_notes) == 1
    assert "attachment 1 is a forwarded message" in report.attachment_notes[0]
    assert "open the attachment" not in report.attachment_notes[0]  # it may be withheld


def _many_parts(count: int) -> bytes:
    parts = b"".join(b"--P\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(count))
    return (
        b"From: a@example.net\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=P\r\n\r\n" + parts + b"--P--\r\n"
    )


def test_an_encoded_forward_counts_against_the_parts_limit() -> None:
    limits = LimitsConfig(parts=20)
    fits = _mixed("Content-Type: text/plain\n\nx", _forward(_many_parts(15), "base64"))
    assert len(parse_email(fits, NOW, limits=limits).forwarded) == 1
    # 16 parts inside, 3 outside: each side alone is within the limit, both together are not
    both = _mixed(
        "Content-Type: text/plain\n\nx",
        _forward(_many_parts(16), "base64"),
        _forward(_many_parts(1), "base64"),
    )
    with pytest.raises(ParseError) as refused:
        parse_email(both, NOW, limits=limits)
    assert refused.value.limit == "parts"


def test_an_encoded_forward_counts_against_the_depth_limit() -> None:
    inner = b"From: a@example.net\r\nSubject: deep\r\n\r\nDEEPEST\r\n"
    for _ in range(3):
        inner = _mixed(
            "Content-Type: text/plain\n\nlevel",
            _forward(inner, "base64"),
            top="From: b@x.example\n",
        )
    assert "DEEPEST" in parse_email(inner, NOW, limits=LimitsConfig(depth=6)).forwarded[-1]
    with pytest.raises(ParseError) as refused:
        parse_email(inner, NOW, limits=LimitsConfig(depth=5))
    assert refused.value.limit == "depth"


def test_encoded_forwards_count_against_the_message_size() -> None:
    inner = b"From: a@example.net\r\n\r\n" + b"y" * 3000 + b"\r\n"
    raw = _mixed("Content-Type: text/plain\n\nx", _forward(inner, "base64"))
    assert len(parse_email(raw, NOW, limits=LimitsConfig(message_bytes=len(raw))).forwarded) == 1
    # nested: each level decodes to less than the last, but together they are more than allowed
    for _ in range(3):
        inner = _mixed("Content-Type: text/plain\n\nx", _forward(inner, "base64"))
    with pytest.raises(ParseError) as refused:
        parse_email(inner, NOW, limits=LimitsConfig(message_bytes=len(inner) + 10))
    assert refused.value.limit == "message_bytes"


def test_an_encoded_forward_with_a_bad_header_is_refused_by_the_header_limit() -> None:
    inner = b"From: a@example.net\r\nX-Long: " + b"z" * 5000 + b"\r\n\r\nbody\r\n"
    raw = _mixed("Content-Type: text/plain\n\nx", _forward(inner, "base64"))
    with pytest.raises(ParseError) as refused:
        parse_email(raw, NOW, limits=LimitsConfig(header_bytes=4096))
    assert refused.value.limit == "header_bytes"


# --- 4. a forwarded message's own body: the same choice -------------------------------------


@pytest.mark.parametrize("encoding", ["7bit", "base64"])
def test_a_forward_with_an_empty_plain_alternative_uses_its_html(encoding: str) -> None:
    inner = (
        "From: pat@example.net\r\nSubject: hi\r\nMIME-Version: 1.0\r\n"
        + _alternative(
            "Content-Type: text/plain\r\n\r\n",
            "Content-Type: text/html\r\n\r\n<div>FORWARD-HTML-TEXT</div>",
        )
    ).encode()
    if encoding == "7bit":
        forward = "Content-Type: message/rfc822\n\n" + inner.decode()
    else:
        forward = _forward(inner, encoding)
    report = parse_email(_mixed("Content-Type: text/plain\n\nx", forward), NOW)
    assert report.forwarded == ["From: pat@example.net\nSubject: hi\n\nFORWARD-HTML-TEXT"]


def test_a_forward_that_is_html_only_is_shown_as_text() -> None:
    inner = b"From: pat@example.net\r\nContent-Type: text/html\r\n\r\n<p>ONE</p><p>TWO</p>\r\n"
    report = parse_email(_mixed("Content-Type: text/plain\n\nx", _forward(inner, "base64")), NOW)
    assert report.forwarded == ["From: pat@example.net\n\nONE\n\nTWO"]


def test_a_forwarded_invite_stays_out_of_the_forwarded_text() -> None:
    inner = (
        "From: pat@example.net\r\nMIME-Version: 1.0\r\n"
        + _alternative(
            "Content-Type: text/plain\r\n\r\nMeet", f"Content-Type: text/calendar\r\n\r\n{INVITE}"
        )
    ).encode()
    report = parse_email(_mixed("Content-Type: text/plain\n\nx", _forward(inner, "base64")), NOW)
    assert report.forwarded == ["From: pat@example.net\n\nMeet"]
    assert [a.filename for a in report.attachments] == ["attachment-1.ics"]


# --- every text leaf shows exactly once, in the body, a forward or an attachment --------------

_ids = iter(range(10**9))


def _leaf(kind: str) -> tuple[list[str], list[str], str]:
    """(tokens shown as text, tokens only in attachments, the MIME entity)."""
    token = f"TOKEN{next(_ids)}X"
    if kind == "plain":
        return [token], [], f"Content-Type: text/plain\n\n{token}\n"
    if kind == "empty-alt":
        return (
            [token],
            [],
            _alternative(
                "Content-Type: text/plain\n\n \n", f"Content-Type: text/html\n\n<p>{token}"
            ),
        )
    if kind == "calendar":
        return [], [token], f"Content-Type: text/calendar\n\nSUMMARY:{token}\n"
    return [], [token], f"Content-Type: text/x-vcard\n\nFN:{token}\n"


def _tree(node: object, boundary: list[int]) -> tuple[list[str], list[str], str]:
    if isinstance(node, str):
        return _leaf(node)
    kind, children = node  # type: ignore[misc]
    if kind in ("7bit", "base64", "quoted-printable"):
        shown, hidden, entity = _tree(children, boundary)
        inner = ("From: x@y.example\n" + entity).encode()
        if kind == "7bit":
            return shown, hidden, "Content-Type: message/rfc822\n\n" + inner.decode()
        data = _encoded(inner, kind).decode("ascii")
        return (
            shown,
            hidden,
            (f"Content-Type: message/rfc822\nContent-Transfer-Encoding: {kind}\n\n{data}"),
        )
    boundary[0] += 1
    mark = f"b{boundary[0]}"
    shown, hidden, body = [], [], ""
    for child in children:
        more_shown, more_hidden, entity = _tree(child, boundary)
        shown, hidden = shown + more_shown, hidden + more_hidden
        body += f"--{mark}\n{entity}\n"
    return shown, hidden, f"Content-Type: multipart/mixed; boundary={mark}\n\n{body}--{mark}--\n"


_NODES = st.recursive(
    st.sampled_from(["plain", "empty-alt", "calendar", "vcard"]),
    lambda children: st.one_of(
        st.tuples(st.just("mixed"), st.lists(children, max_size=4)),
        st.tuples(st.sampled_from(["7bit", "base64", "quoted-printable"]), children),
    ),
    max_leaves=10,
)


@settings(max_examples=200, deadline=None)
@given(_NODES)
def test_every_text_leaf_is_shown_once_or_attached(node: object) -> None:
    shown_tokens, attached_tokens, entity = _tree(node, [0])
    raw = ("From: sam@x.example\nMIME-Version: 1.0\n" + entity).encode()
    try:
        report = parse_email(raw, NOW)
    except ParseError as exc:  # only a limit may stop it
        assert exc.limit is not None
        return
    shown = report.body + "\n".join(report.forwarded)
    attached = b"".join(a.data for a in report.attachments)
    for token in shown_tokens:
        assert shown.count(token) == 1, token
    for token in attached_tokens:
        assert token not in shown, token
        assert attached.count(token.encode()) == 1, token
    assert report.attachment_notes == []


# --- hostile encoded forwards: refused by the limits, fast, never anything but ParseError ----


@contextmanager
def within(seconds: float) -> Iterator[None]:
    start = time.perf_counter()
    yield
    elapsed = time.perf_counter() - start
    assert elapsed < seconds, f"took {elapsed:.2f} s"


def test_an_encoded_part_bomb_is_refused_before_it_is_parsed() -> None:
    bomb = _many_parts(20_000)
    raw = _mixed("Content-Type: text/plain\n\nx", _forward(bomb, "base64"))
    with within(2.0), pytest.raises(ParseError) as refused:
        parse_email(raw, NOW)
    assert refused.value.limit == "parts"


def test_an_encoded_nesting_bomb_is_refused_fast() -> None:
    nested = b"From: a@example.net\r\n\r\nx\r\n"
    for _ in range(12):  # each level one encoded forward deeper: only the depth limit stops it
        nested = _mixed("Content-Type: text/plain\n\nx", _forward(nested, "base64"))
    with within(2.0), pytest.raises(ParseError) as refused:
        parse_email(nested, NOW)
    assert refused.value.limit == "depth"


def test_an_encoded_forward_with_a_slow_header_is_read_leniently_and_fast() -> None:
    inner = b"From: " + b'"' * 60_000 + b"\r\nSubject: s\r\n\r\nSLOW-HEADER-TEXT\r\n"
    raw = _mixed("Content-Type: text/plain\n\nx", _forward(inner, "base64"))
    with within(2.0):
        report = parse_email(raw, NOW)
    assert report.forwarded[0].endswith("\n\nSLOW-HEADER-TEXT")


@pytest.mark.parametrize("encoding", ["quoted-printable", "x-unknown"])
@pytest.mark.parametrize("filler", [b'"', b",", b"\\"])
def test_a_long_malformed_header_in_an_encoded_forward_is_not_refolded(
    encoding: str, filler: bytes
) -> None:
    # quoted-printable lines may be any length in practice: the parser reads this From field
    # whole, and writing the message back out must not hand it to the header registry
    inner = b"From: " + filler * 60_000 + b"\r\nSubject: s\r\n\r\nLONG-HEADER-TEXT\r\n"
    raw = _mixed(
        "Content-Type: text/plain\n\nx",
        f"Content-Type: message/rfc822\nContent-Transfer-Encoding: {encoding}\n\n" + inner.decode(),
    )
    with within(2.0):
        report = parse_email(raw, NOW)
    assert report.forwarded[0].endswith("\n\nLONG-HEADER-TEXT")


@settings(max_examples=150, deadline=None)
@given(
    st.binary(max_size=600) | st.text(max_size=600).map(str.encode),
    st.sampled_from(["base64", "quoted-printable"]),
)
def test_any_encoded_forward_is_a_report_or_a_parse_error(data: bytes, encoding: str) -> None:
    raw = _mixed(
        "Content-Type: text/plain\n\nx", _forward(b"From: a@b.example\r\n" + data, encoding)
    )
    try:
        report = parse_email(raw, NOW, limits=LimitsConfig(parts=20, depth=4))
    except ParseError:
        return
    assert report.body == "x"
    assert len(report.forwarded) + len(report.attachments) >= 1


# --- the stored original of an anonymous report (pipeline/redact.py, not body.py) -------------

_LONG_RECEIVED = (
    b"Received: from mail-sor-f41.google.com (mail-sor-f41.google.com [209.85.220.41]) "
    b"by mx.example.net\r\n"
)


@pytest.mark.parametrize("encoding", ["base64", "quoted-printable"])
def test_redact_removes_the_header_fields_of_an_encoded_forward(encoding: str) -> None:
    stored = stored_original(
        _mixed("Content-Type: text/plain\n\nx", _forward(_LONG_RECEIVED + INNER, encoding))
    )
    runs = re.findall(rb"(?:^[A-Za-z0-9+/]{20,}={0,2}\r?$\n?)+", stored, re.M)
    seen = stored + quopri.decodestring(stored)
    seen += b"".join(base64.b64decode(b"".join(run.split())) for run in runs)
    for leak in (b"X-Originating-IP", b"192.0.2.7", b"209.85.220.41", b"sam.student"):
        assert leak not in seen, leak
