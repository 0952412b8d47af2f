"""body.py through parse.py: forwarded messages and split bodies are never silently missing.

Shapes from real clients: Gmail "forward as attachment" (message/rfc822 named .eml), Outlook's
attached .msg (application/vnd.ms-outlook: kept, named in a note), Apple Mail's plain-text body
split around an inline picture, and its rich-text variant inside multipart/alternative.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.parse import ParseError, parse_email

NOW = datetime(2026, 11, 25, tzinfo=UTC)
JPEG = base64.b64encode(b"\xff\xd8\xff\xe0 not really a jpeg \xff\xd9").decode()

GMAIL_FORWARD_AS_ATTACHMENT = f"""From: Sam Student <sam.student@gmail.com>
To: report@uni.example
Subject: Fwd: the messages he keeps sending
Date: Wed, 25 Nov 2026 10:00:00 +0000
Message-ID: <CAFwd.1@mail.gmail.com>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="000000000000outer"

--000000000000outer
Content-Type: multipart/alternative; boundary="000000000000alt"

--000000000000alt
Content-Type: text/plain; charset="UTF-8"

This is the latest one he sent me.

--000000000000alt
Content-Type: text/html; charset="UTF-8"

<div dir="ltr">This is the latest one he sent me.</div>

--000000000000alt--
--000000000000outer
Content-Type: message/rfc822; name="You are not safe.eml"
Content-Disposition: attachment; filename="You are not safe.eml"

Return-Path: <harasser@example.net>
From: Pat Harasser <harasser@example.net>
To: Sam Student <sam.student@gmail.com>
Subject: =?UTF-8?Q?You_are_not_safe_=E2=80=94_I_know_where_you_live?=
Date: Tue, 24 Nov 2026 23:12:00 +0000
Message-ID: <threat.1@example.net>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="inner"

--inner
Content-Type: multipart/alternative; boundary="inneralt"

--inneralt
Content-Type: text/plain; charset="UTF-8"
Content-Transfer-Encoding: quoted-printable

I saw you at the library tonight. THREAT-TEXT-1

--inneralt
Content-Type: text/html; charset="UTF-8"

<p>I saw you at the library tonight. THREAT-TEXT-1</p>

--inneralt--
--inner
Content-Type: image/jpeg; name="your-door.jpg"
Content-Disposition: attachment; filename="your-door.jpg"
Content-Transfer-Encoding: base64

{JPEG}
--inner--

--000000000000outer--
""".encode()

APPLE_PLAIN_SPLIT = f"""From: Sam Student <sam@icloud.com>
To: report@uni.example
Subject: What happened on Friday
Mime-Version: 1.0 (Mac OS X Mail 16.0 \\(3774.600.62\\))
Content-Type: multipart/mixed; boundary="Apple-Mail=_1A2B3C4D"

--Apple-Mail=_1A2B3C4D
Content-Transfer-Encoding: 7bit
Content-Type: text/plain; charset=us-ascii

This is the photo of the bruise. BEFORE-IMAGE-TEXT

--Apple-Mail=_1A2B3C4D
Content-Disposition: inline; filename=IMG_0412.jpeg
Content-Type: image/jpeg; x-unix-mode=0644; name="IMG_0412.jpeg"
Content-Transfer-Encoding: base64

{JPEG}
--Apple-Mail=_1A2B3C4D
Content-Transfer-Encoding: 7bit
Content-Type: text/plain; charset=us-ascii

It happened in the car park behind the sports hall. AFTER-IMAGE-TEXT

--Apple-Mail=_1A2B3C4D--
""".encode()

APPLE_RICH_SPLIT = f"""From: Sam Student <sam@icloud.com>
To: report@uni.example
Subject: What happened on Friday
Mime-Version: 1.0 (Mac OS X Mail 16.0 \\(3774.600.62\\))
Content-Type: multipart/alternative; boundary="Apple-Mail=_ALT"

--Apple-Mail=_ALT
Content-Transfer-Encoding: 7bit
Content-Type: text/plain; charset=us-ascii

Before the picture. BEFORE-IMAGE-TEXT

After the picture. AFTER-IMAGE-TEXT

--Apple-Mail=_ALT
Content-Type: multipart/mixed; boundary="Apple-Mail=_MIX"

--Apple-Mail=_MIX
Content-Transfer-Encoding: 7bit
Content-Type: text/html; charset=us-ascii

<html><body>Before the picture. BEFORE-IMAGE-TEXT</body></html>
--Apple-Mail=_MIX
Content-Disposition: inline; filename=IMG_0412.jpeg
Content-Type: image/jpeg; name="IMG_0412.jpeg"
Content-Transfer-Encoding: base64

{JPEG}
--Apple-Mail=_MIX
Content-Transfer-Encoding: 7bit
Content-Type: text/html; charset=us-ascii

<html><body>After the picture. AFTER-IMAGE-TEXT</body></html>
--Apple-Mail=_MIX--

--Apple-Mail=_ALT--
""".encode()


def test_gmail_forward_as_attachment_appears_as_text_with_its_headers() -> None:
    report = parse_email(GMAIL_FORWARD_AS_ATTACHMENT, NOW)
    assert report.body == "This is the latest one he sent me."
    assert len(report.forwarded) == 1
    head, _, text = report.forwarded[0].partition("\n\n")
    assert head.splitlines() == [
        "From: Pat Harasser <harasser@example.net>",
        "Date: Tue, 24 Nov 2026 23:12:00 +0000",
        "Subject: You are not safe — I know where you live",
        "To: Sam Student <sam.student@gmail.com>",
    ]
    assert text == "I saw you at the library tonight. THREAT-TEXT-1"
    # its own attachment travels with the report, under its name
    assert [(a.filename, a.content_type) for a in report.attachments] == [
        ("your-door.jpg", "image/jpeg")
    ]
    assert report.attachment_notes == []


def test_forwards_inside_forwards_are_listed_in_order() -> None:
    inner = b"From: first@example.net\nSubject: first\n\nFIRST-TEXT\n"
    middle = (
        b"From: second@example.net\nSubject: second\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="M"\n\n--M\nContent-Type: text/plain\n\n'
        b"SECOND-TEXT\n--M\nContent-Type: message/rfc822\n\n" + inner + b"--M--\n"
    )
    raw = (
        b"From: sam@x.example\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=O\n\n"
        b"--O\nContent-Type: text/plain\n\nsee both\n--O\nContent-Type: message/rfc822\n\n"
        + middle
        + b"--O--\n"
    )
    report = parse_email(raw, NOW)
    assert report.body == "see both"
    assert [entry.split("\n\n", 1)[1] for entry in report.forwarded] == [
        "SECOND-TEXT",
        "FIRST-TEXT",
    ]
    assert report.forwarded[0].startswith("From: second@example.net\nSubject: second\n\n")


def test_outlook_msg_is_kept_as_an_attachment_and_named_in_a_note() -> None:
    raw = (
        b"From: sam@x.example\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=B\n\n"
        b"--B\nContent-Type: text/plain\n\nthe email he sent is attached\n"
        b'--B\nContent-Type: application/vnd.ms-outlook; name="Threat.msg"\n'
        b'Content-Disposition: attachment; filename="Threat.msg"\n'
        b"Content-Transfer-Encoding: base64\n\n0M8R4KGxGuEAAAAAAAAAAAAAAAAAAAAAPgADAP7/CQAGAAAA\n--B--\n"
    )
    report = parse_email(raw, NOW)
    assert [(a.filename, a.content_type) for a in report.attachments] == [
        ("Threat.msg", "application/vnd.ms-outlook")
    ]
    assert report.attachments[0].data.startswith(b"\xd0\xcf\x11\xe0")  # the OLE file, whole
    assert len(report.attachment_notes) == 1
    assert "attachment 1 is an Outlook message (.msg)" in report.attachment_notes[0]
    assert "Threat" not in report.attachment_notes[0]  # a note never repeats a file name
    assert report.forwarded == []


def test_a_base64_encoded_forward_is_read_as_text() -> None:
    inner = b"From: harasser@example.net\r\nSubject: x\r\n\r\nENCODED-FORWARD-TEXT\r\n"
    raw = (
        b"From: sam@x.example\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=B\n\n"
        b"--B\nContent-Type: text/plain\n\nsee attached\n"
        b"--B\nContent-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\n"
        + base64.encodebytes(inner)
        + b"--B--\n"
    )
    report = parse_email(raw, NOW)
    assert report.forwarded == ["From: harasser@example.net\nSubject: x\n\nENCODED-FORWARD-TEXT"]
    assert report.attachments == [] and report.attachment_notes == []


def test_apple_mail_plain_body_split_around_a_picture_is_whole() -> None:
    report = parse_email(APPLE_PLAIN_SPLIT, NOW)
    assert report.body == (
        "This is the photo of the bruise. BEFORE-IMAGE-TEXT\n\n"
        "It happened in the car park behind the sports hall. AFTER-IMAGE-TEXT"
    )
    assert [a.filename for a in report.attachments] == ["IMG_0412.jpeg"]


def test_apple_mail_rich_text_uses_the_whole_plain_alternative() -> None:
    report = parse_email(APPLE_RICH_SPLIT, NOW)
    assert "BEFORE-IMAGE-TEXT" in report.body and "AFTER-IMAGE-TEXT" in report.body
    assert "<html>" not in report.body
    assert [a.filename for a in report.attachments] == ["IMG_0412.jpeg"]


def test_html_only_split_body_keeps_both_halves() -> None:
    html_only = APPLE_RICH_SPLIT.split(b"--Apple-Mail=_ALT\nContent-Type: multipart/mixed")[1]
    raw = (
        b"From: sam@icloud.com\nMIME-Version: 1.0\nContent-Type: multipart/mixed"
        + html_only.split(b"--Apple-Mail=_ALT--")[0]
    )
    report = parse_email(raw, NOW)
    assert report.body == (
        "Before the picture. BEFORE-IMAGE-TEXT\n\nAfter the picture. AFTER-IMAGE-TEXT"
    )


def test_related_html_with_text_after_the_image() -> None:
    raw = (
        b"From: sam@x.example\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/related; boundary=R; type="text/html"\n\n'
        b"--R\nContent-Type: text/html\n\n<p>ONE</p><img src=cid:i1>\n"
        b"--R\nContent-Type: image/png\nContent-ID: <i1>\nContent-Transfer-Encoding: base64\n\n"
        b"iVBORw0KGgo=\n--R\nContent-Type: text/html\n\n<p>TWO</p>\n--R--\n"
    )
    report = parse_email(raw, NOW)
    assert report.body == "ONE\n\nTWO"
    assert [a.content_type for a in report.attachments] == ["image/png"]


def test_a_calendar_alternative_is_an_attachment_not_text() -> None:
    raw = (
        b"From: sam@x.example\nMIME-Version: 1.0\nContent-Type: multipart/alternative; boundary=A\n"
        b"\n--A\nContent-Type: text/plain\n\nMeet me\n--A\nContent-Type: text/calendar\n\n"
        b"BEGIN:VCALENDAR\n--A--\n"
    )
    report = parse_email(raw, NOW)
    assert report.body == "Meet me"
    assert [(a.filename, a.content_type) for a in report.attachments] == [
        ("attachment-1.ics", "text/calendar")
    ]


# --- every inline text leaf shows somewhere --------------------------------------------------

_leaf_ids = iter(range(10**9))


def _leaf(kind: str) -> tuple[str, str]:
    token = f"TOKEN{next(_leaf_ids)}X"
    if kind == "text":
        return token, f"Content-Type: text/plain\n\n{token}\n"
    if kind == "image":
        return "", "Content-Type: image/png\nContent-Disposition: inline\n\nPNG\n"
    return (
        "",
        'Content-Type: application/pdf\nContent-Disposition: attachment; filename="f.pdf"\n\nx\n',
    )


def _tree(node: object, boundary: list[int]) -> tuple[list[str], str]:
    """(tokens that must be shown, the MIME entity) for a generated node."""
    if isinstance(node, str):
        token, entity = _leaf(node)
        return ([token] if token else []), entity
    kind, children = node  # type: ignore[misc]
    if kind == "forward":
        tokens, entity = _tree(children, boundary)
        return tokens, "Content-Type: message/rfc822\n\nFrom: x@y.example\n" + entity
    boundary[0] += 1
    mark = f"b{boundary[0]}"
    tokens: list[str] = []
    body = ""
    for child in children:
        found, entity = _tree(child, boundary)
        tokens += found
        body += f"--{mark}\n{entity}\n"
    return tokens, f"Content-Type: multipart/{kind}; boundary={mark}\n\n{body}--{mark}--\n"


_NODES = st.recursive(
    st.sampled_from(["text", "image", "pdf"]),
    lambda children: st.one_of(
        st.tuples(st.sampled_from(["mixed", "related"]), st.lists(children, max_size=4)),
        st.tuples(st.just("forward"), children),
    ),
    max_leaves=10,
)


@settings(max_examples=200, deadline=None)
@given(_NODES)
def test_every_inline_text_part_is_in_the_body_or_a_forward(node: object) -> None:
    tokens, entity = _tree(node, [0])
    raw = ("From: sam@x.example\nMIME-Version: 1.0\n" + entity).encode()
    try:
        report = parse_email(raw, NOW)
    except ParseError as exc:  # only a limit may stop it, and then it is quarantined whole
        assert exc.limit is not None
        return
    shown = report.body + "\n".join(report.forwarded)
    for token in tokens:
        assert shown.count(token) == 1, token
