"""Anonymity under real-world recipient shapes (recipients.py): any recipient or envelope field
that contains the anonymous address, however it is written, makes the message anonymous; a
field that cannot be read does too; cleanly written named mail stays named; junk never raises."""

from __future__ import annotations

import base64
from email.header import Header
from email.utils import formataddr

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.anonymity import is_anonymous_message
from pipeline.recipients import ENVELOPE_FIELDS, RECIPIENT_FIELDS, sent_to_anonymous

ANONYMOUS = "anonymous@example.ac.uk"
ADDRESSES = [ANONYMOUS]
INTAKE = "report@example.ac.uk"


def message(*fields: str) -> bytes:
    head = "".join(f"{field}\r\n" for field in fields)
    return (f"From: Sam Student <sam@example.org>\r\n{head}Subject: help\r\n\r\nbody\r\n").encode()


#: The shapes issue 8 lists, each written as a mail client writes it.
SHAPES = {
    "outlook-double-quoted": f'To: "{ANONYMOUS}" <{ANONYMOUS}>',
    "outlook-single-quoted": f"To: '{ANONYMOUS}' <{ANONYMOUS}>",
    "name-with-specials": f'To: "Anon (Reports): [Uni]. O\'Neil" <{ANONYMOUS}>',
    "unquoted-specials": f"To: Anon (Reports): [Uni]. O'Neil <{ANONYMOUS}>",
    "group": f"To: Anonymous reports: {ANONYMOUS};",
    "group-with-others": f"To: Team: {INTAKE}, {ANONYMOUS};, other@example.org",
    "encoded-name-with-at": "To: =?utf-8?q?anonymous=40example=2Eac=2Euk?= <report@example.ac.uk>",
    "encoded-b-name": "To: =?utf-8?b?"
    + base64.b64encode(ANONYMOUS.encode()).decode()
    + "?= <report@example.ac.uk>",
    "comment-after": f"To: {ANONYMOUS} (Anonymous reporting)",
    "comment-inside": "To: anonymous(reports)@example.ac.uk",
    "upper-case": f"To: {ANONYMOUS.upper()}",
    "several": f"To: Friend <friend@example.org>, {ANONYMOUS}, Tutor <tutor@example.ac.uk>",
    "cc-only": f"To: {INTAKE}\r\nCc: Anonymous <{ANONYMOUS}>",
    "bcc-delivered-to": f"To: undisclosed-recipients:;\r\nDelivered-To: {ANONYMOUS}",
    "bcc-x-original-to": f"To: friend@example.org\r\nX-Original-To: {ANONYMOUS}",
    "bcc-envelope-to": f"To: friend@example.org\r\nEnvelope-To: {ANONYMOUS}",
    "bcc-x-envelope-to": f"To: friend@example.org\r\nX-Envelope-To: <{ANONYMOUS}>",
    "bcc-exchange": "To: friend@example.org\r\n"
    f"X-MS-Exchange-Organization-OriginalEnvelopeRecipients: {ANONYMOUS}",
    "bcc-received-for": "To: friend@example.org\r\nReceived: from pc by mx.example.ac.uk\r\n"
    f"\tfor <{ANONYMOUS}>; Tue, 24 Nov 2026 10:00:00 +0000",
    "resent-to": f"To: friend@example.org\r\nResent-To: {ANONYMOUS}",
    "plus-tag": "To: Anonymous+web@Example.AC.UK",
    "folded": f"To: Friend <friend@example.org>,\r\n\t{ANONYMOUS}",
    "quoted-local-part": 'To: "anonymous"@example.ac.uk',
    "spaces-around-at": "To: anonymous @ example.ac.uk",
    "space-before-colon": f"To : {ANONYMOUS}",
}


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_every_listed_shape_is_anonymous(shape: str) -> None:
    assert is_anonymous_message(message(shape), "help", ADDRESSES, "[anonymous]")


# --- properties ---------------------------------------------------------------------------------

_NAME_ALPHABET = st.characters(
    codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp"), exclude_characters="\r\n"
)
_FIELDS = sorted(
    (RECIPIENT_FIELDS | ENVELOPE_FIELDS) - {"received", "x-forwarded-for", "original-recipient"}
)


def _random_case(text: str, flips: list[bool]) -> str:
    flips = (flips + [False] * len(text))[: len(text)]
    return "".join(c.upper() if flip else c for c, flip in zip(text, flips, strict=True))


@st.composite
def anonymous_recipient(draw: st.DrawFn) -> str:
    """The anonymous address in one random shape: case, plus tag, display name and how it is
    quoted or encoded, a comment, its place among other addresses, a group."""
    local, domain = ANONYMOUS.split("@")
    tag = draw(st.sampled_from(["", "+web", "+x.y", "+Tag-1"]))
    address = _random_case(f"{local}{tag}@{domain}", draw(st.lists(st.booleans(), max_size=40)))
    name = draw(st.text(_NAME_ALPHABET, max_size=30))
    style = draw(st.sampled_from(["bare", "angle", "quoted", "single", "encoded", "comment"]))
    if style == "bare":
        item = address
    elif style == "angle":
        item = f"<{address}>"
    elif style == "quoted":
        item = formataddr((name, address))
    elif style == "single":
        item = f"'{name}' <{address}>"
    elif style == "encoded":
        item = f"{Header(name or address, 'utf-8').encode()} <{address}>"
    else:
        comment = name.replace("\\", "").replace("(", "").replace(")", "")
        item = f"{address} ({comment})"
    others = draw(st.lists(st.sampled_from([INTAKE, "Friend <f@example.org>"]), max_size=3))
    items = [*others]
    items.insert(draw(st.integers(0, len(others))), item)
    text = ", ".join(items)
    if draw(st.booleans()):
        text = f"Reports: {text};"
    return text


@settings(max_examples=500, deadline=None)
@given(
    recipient=anonymous_recipient(),
    field=st.sampled_from(_FIELDS),
    before=st.sampled_from(["", f"To: {INTAKE}", "Cc: friend@example.org"]),
)
def test_any_shape_holding_the_anonymous_address_is_anonymous(
    recipient: str, field: str, before: str
) -> None:
    fields = [f for f in (before, f"{field}: {recipient}") if f]
    assert sent_to_anonymous(message(*fields), ADDRESSES)


@settings(max_examples=300, deadline=None)
@given(
    name=st.text(_NAME_ALPHABET.filter(lambda c: c != "@"), max_size=40),
    field=st.sampled_from(["To", "Cc"]),
)
def test_cleanly_written_named_mail_to_the_intake_is_named(name: str, field: str) -> None:
    """A display name the sender's client quoted or encoded properly never makes mail
    anonymous when no anonymous address is in it."""
    recipient = formataddr((name, INTAKE))
    raw = message(f"{field}: {recipient}", f"Delivered-To: {INTAKE}")
    assert not sent_to_anonymous(raw, ADDRESSES)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2000), st.text(max_size=50))
def test_junk_never_raises(raw: bytes, subject: str) -> None:
    assert is_anonymous_message(raw, subject, ADDRESSES, "[anonymous]") in (True, False)
    assert is_anonymous_message(b"To: " + raw, subject, ADDRESSES, "") in (True, False)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(['"', "(", ")", "<", ">", "\\", ",", ";", ":", "=?", "?=", "@", " ", "a"]),
        max_size=200,
    )
)
def test_malformed_recipient_fields_never_raise(pieces: list[str]) -> None:
    raw = message("To: " + "".join(pieces))
    assert sent_to_anonymous(raw, ADDRESSES) in (True, False)


def test_hostile_fields_are_read_in_linear_time() -> None:
    import time

    for value in ("(" * 20000, '"' * 60000, "<" * 60000, "=?a?q?" * 10000, "a@b, " * 12000):
        started = time.monotonic()
        sent_to_anonymous(message(f"To: {value}"), ADDRESSES)
        assert time.monotonic() - started < 1.0, value[:10]
