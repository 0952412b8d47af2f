"""parse.content_fingerprint: when two deliveries are the same message.

Without a Message-ID the whole message counts except the trace fields a delivery adds or
changes, so two different messages are never merged as duplicates (a report would be lost),
while the same message delivered twice, with either line ending, still is.
"""

from __future__ import annotations

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pipeline.parse import content_fingerprint

TRACE_NAMES = [
    "Received",
    "Delivered-To",
    "Return-Path",
    "X-Original-To",
    "DKIM-Signature",
    "ARC-Seal",
    "ARC-Message-Signature",
    "ARC-Authentication-Results",
    "Authentication-Results",
    "received",
    "dkim-signature",
]
TEXT = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30)
FIELD_NAMES = st.sampled_from(["From", "To", "Cc", "Subject", "Date", "Content-Type", "X-Mailer"])
FIELDS = st.lists(st.tuples(FIELD_NAMES, TEXT), min_size=1, max_size=6)
BODY_LINES = st.lists(TEXT, max_size=6)
TRACE = st.lists(st.tuples(st.sampled_from(TRACE_NAMES), TEXT, st.booleans()), max_size=5)


def message(fields: list[tuple[str, str]], body: list[str], eol: bytes = b"\r\n") -> bytes:
    head = eol.join(f"{name}: {value}".encode() for name, value in fields)
    return head + eol + eol + eol.join(line.encode() for line in body) + eol


def delivered(raw: bytes, trace: list[tuple[str, str, bool]], eol: bytes = b"\r\n") -> bytes:
    """The message as another delivery gives it: trace fields on top (some folded)."""
    added = b"".join(
        f"{name}: {value}".encode() + (eol + b"\tby mx.example" if folded else b"") + eol
        for name, value, folded in trace
    )
    return added + raw


@settings(max_examples=200, deadline=None)
@given(FIELDS, BODY_LINES, TRACE, TRACE, st.booleans())
def test_the_same_message_delivered_twice_is_a_duplicate(
    fields: list[tuple[str, str]],
    body: list[str],
    first: list[tuple[str, str, bool]],
    second: list[tuple[str, str, bool]],
    lf_second: bool,
) -> None:
    eol = b"\n" if lf_second else b"\r\n"
    one = delivered(message(fields, body), first)
    two = delivered(message(fields, body, eol), second, eol)
    assert content_fingerprint(one) == content_fingerprint(two)


@settings(max_examples=200, deadline=None)
@given(FIELDS, FIELDS, BODY_LINES, TRACE, st.booleans())
def test_messages_without_message_id_differing_in_any_header_are_not_merged(
    fields: list[tuple[str, str]],
    other: list[tuple[str, str]],
    body: list[str],
    trace: list[tuple[str, str, bool]],
    lf: bool,
) -> None:
    one = message(fields, body)
    assume(one != message(other, body))
    eol = b"\n" if lf else b"\r\n"
    two = delivered(message(other, body, eol), trace, eol)
    assert content_fingerprint(one) != content_fingerprint(two)


@settings(max_examples=200, deadline=None)
@given(FIELDS, BODY_LINES, BODY_LINES, st.booleans())
def test_messages_differing_in_the_body_are_not_merged(
    fields: list[tuple[str, str]], body: list[str], other: list[str], with_id: bool
) -> None:
    fields = [("Message-ID", "<same@x>"), *fields] if with_id else fields
    one, two = message(fields, body), message(fields, other)
    assume(one != two)
    assert content_fingerprint(one) != content_fingerprint(two)


def test_two_reports_with_the_same_short_body_from_different_people_are_two() -> None:
    """The case that lost reports: the body alone ("See attached.") was the fingerprint."""
    one = message([("From", "a@example.org"), ("Subject", "Report")], ["See attached."])
    two = message([("From", "b@example.org"), ("Subject", "Report")], ["See attached."])
    assert content_fingerprint(one) != content_fingerprint(two)


def test_a_header_that_only_starts_like_a_trace_field_counts() -> None:
    """X-Received-Info or Return-Paths are not trace fields; only the named ones are left out."""
    base = message([("From", "a@example.org")], ["text"])
    for name in ("X-Received-Info", "Return-Paths", "Receivedx", "DKIMSignature"):
        assert content_fingerprint(f"{name}: x\r\n".encode() + base) != content_fingerprint(base)


def test_with_a_message_id_trace_and_line_endings_do_not_count_but_the_body_does() -> None:
    raw = message([("Message-ID", "<same@x>"), ("From", "a@x.example")], ["body one"])
    redelivered = delivered(raw.replace(b"\r\n", b"\n"), [("Received", "from relay", True)], b"\n")
    assert content_fingerprint(raw) == content_fingerprint(redelivered)
    assert content_fingerprint(raw) != content_fingerprint(raw.replace(b"one", b"two"))


def test_an_empty_message_id_counts_as_none() -> None:
    one = message([("Message-ID", ""), ("From", "a@example.org")], ["See attached."])
    two = message([("Message-ID", ""), ("From", "b@example.org")], ["See attached."])
    assert content_fingerprint(one) != content_fingerprint(two)
