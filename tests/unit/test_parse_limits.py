"""parse.py and limits.py under hostile input: every limit refuses with its name, bombs are
refused before the email parser runs, and pitfall headers give a Report without a usable
acknowledgement address or a ParseError, never another exception."""

from __future__ import annotations

import base64
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email.message import Message
from email.parser import BytesParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import limits, parse
from pipeline.config import LimitsConfig
from pipeline.limits import Refused, guarded_policy, prescan
from pipeline.parse import ParseError, html_to_text, parse_email, strict_address

NOW = datetime(2026, 11, 25, tzinfo=UTC)
DEFAULTS = LimitsConfig()
FROM = b"From: Alice <alice@example.org>\r\n"


# --- message builders ---------------------------------------------------------------------------


def flat(parts: int, *, part_headers: bytes = b"Content-Type: text/plain\r\n") -> bytes:
    """A multipart/mixed message with `parts` text parts."""
    body = b"".join(b"--B\r\n" + part_headers + b"\r\npart %d\r\n" % i for i in range(parts))
    return FROM + b"Content-Type: multipart/mixed; boundary=B\r\n\r\n" + body + b"--B--\r\n"


def nested(depth: int) -> bytes:
    """A message whose deepest part is `depth` levels below the top (multiparts in multiparts)."""
    body = b"".join(
        b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (level - 1, level)
        for level in range(1, depth)
    )
    body += b"--b%d\r\nContent-Type: text/plain\r\n\r\ndeep\r\n" % (depth - 1)
    body += b"".join(b"--b%d--\r\n" % level for level in reversed(range(depth)))
    return FROM + b"Content-Type: multipart/mixed; boundary=b0\r\n\r\n" + body


def with_attachments(count: int, data: bytes = b"attachment bytes") -> bytes:
    encoded = base64.b64encode(data)
    headers = (
        b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
        b"Content-Disposition: attachment; filename=file.bin\r\n"
    )
    body = b"--B\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
    body += b"".join(b"--B\r\n" + headers + b"\r\n" + encoded + b"\r\n" for _ in range(count))
    return FROM + b"Content-Type: multipart/mixed; boundary=B\r\n\r\n" + body + b"--B--\r\n"


def refusal(raw: bytes, limits: LimitsConfig = DEFAULTS) -> ParseError:
    with pytest.raises(ParseError) as caught:
        parse_email(raw, NOW, limits=limits)
    return caught.value


@contextmanager
def within(seconds: float) -> Iterator[None]:
    start = time.perf_counter()
    yield
    elapsed = time.perf_counter() - start
    assert elapsed < seconds, f"took {elapsed:.2f} s"


@pytest.fixture
def no_email_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the email parser is run at all: the pre-scan must refuse first."""

    def parser(*args: object, **kwargs: object) -> None:
        raise AssertionError("the email parser ran on input the pre-scan should have refused")

    monkeypatch.setattr(limits, "BytesParser", parser)  # where parse_bytes runs it


# --- one test per limit -------------------------------------------------------------------------


def test_message_bytes_is_checked_before_anything_is_read(no_email_parser: None) -> None:
    error = refusal(FROM + b"\r\n" + b"x" * 2000, LimitsConfig(message_bytes=1024))
    assert error.limit == "message_bytes"
    assert error.reason == "the message is larger than 1 KB (limit: limits.message_bytes)"
    with within(1.0):
        error = refusal(FROM + b"\r\n" + bytes(DEFAULTS.message_bytes))
    assert error.limit == "message_bytes" and "50 MB" in error.reason


def test_ten_thousand_parts_are_refused_fast_before_parsing(no_email_parser: None) -> None:
    raw = flat(10_000)
    with within(1.0):
        error = refusal(raw)
    assert error.limit == "parts"
    assert error.reason == "the message has more than 100 MIME parts (limit: limits.parts)"


def test_parts_limit_is_exact() -> None:
    body = parse_email(flat(100), NOW).body  # 100 parts: the limit itself is fine
    assert body.split("\n\n") == [f"part {i}" for i in range(100)]  # every inline text part
    assert refusal(flat(101)).limit == "parts"
    assert refusal(flat(11), LimitsConfig(parts=10)).limit == "parts"


def test_delivery_status_blocks_count_as_parts(no_email_parser: None) -> None:
    raw = FROM + b"Content-Type: message/delivery-status\r\n\r\n" + b"Action: failed\r\n\r\n" * 5000
    with within(1.0):
        assert refusal(raw).limit == "parts"


def test_a_thousand_levels_are_refused_fast_without_recursion(no_email_parser: None) -> None:
    with within(1.0):
        error = refusal(nested(1000))
    assert error.limit == "depth"
    assert error.reason == (
        "the message's MIME parts are nested more than 10 levels deep (limit: limits.depth)"
    )
    attached = b"Content-Type: message/rfc822\r\n\r\n" * 1000 + b"From: a@b.example\r\n\r\nhi\r\n"
    with within(1.0):
        assert refusal(FROM + attached).limit == "depth"


def test_depth_limit_is_exact() -> None:
    assert parse_email(nested(10), NOW).body == "deep"
    assert refusal(nested(11)).limit == "depth"


def test_header_fields_per_part_are_limited_in_every_part() -> None:
    many = b"".join(b"X-Field-%d: value\r\n" % i for i in range(499))
    assert parse_email(FROM + many + b"\r\nbody\r\n", NOW).body == "body"  # 500 fields: fine
    error = refusal(FROM + many + b"X-One-More: v\r\n\r\nbody\r\n")
    assert error.limit == "headers"
    assert (
        error.reason
        == "a part of the message has more than 500 header fields (limit: limits.headers)"
    )
    nested_part = flat(1, part_headers=b"Content-Type: text/plain\r\n" + many * 2)
    assert refusal(nested_part).limit == "headers"


def test_header_bomb_is_refused_fast(no_email_parser: None) -> None:
    with within(1.0):
        assert refusal(FROM + b"X-Bomb: 1\r\n" * 200_000 + b"\r\nbody\r\n").limit == "headers"


def test_header_field_length_is_limited_folded_or_not() -> None:
    message_id = b"Message-ID: <" + b"a" * 100_000 + b"@example.org>\r\n"
    error = refusal(FROM + message_id + b"\r\nbody\r\n")
    assert error.limit == "header_bytes"
    assert (
        error.reason
        == "a header field of the message is longer than 64 KB (limit: limits.header_bytes)"
    )
    folded = b"Subject: start" + b"\r\n word" * 20_000 + b"\r\n"
    assert refusal(FROM + folded + b"\r\nbody\r\n").limit == "header_bytes"
    fine = b"Subject: " + b"word " * 10_000 + b"\r\n"
    assert parse_email(FROM + fine + b"\r\nbody\r\n", NOW).subject.startswith("word word")


def test_attachments_are_limited() -> None:
    assert len(parse_email(with_attachments(20), NOW).attachments) == 20
    error = refusal(with_attachments(21))
    assert error.limit == "attachments"
    assert error.reason == "the message has more than 20 attachments (limit: limits.attachments)"


def test_parse_seconds_is_a_cooperative_deadline() -> None:
    error = refusal(flat(3), LimitsConfig(parse_seconds=1e-9))
    assert error.limit == "parse_seconds"
    assert "(limit: limits.parse_seconds)" in error.reason


def test_empty_and_headerless_input_is_refused_without_a_limit() -> None:
    assert refusal(b"").limit is None
    assert refusal(b"no headers here").reason == "the message has no headers"


def test_limits_also_hold_for_a_message_parsed_elsewhere() -> None:
    msg = BytesParser(policy=guarded_policy()).parsebytes(flat(30))
    with pytest.raises(ParseError) as caught:
        parse.report_from_message(msg, NOW, limits=LimitsConfig(parts=10))
    assert caught.value.limit == "parts"


# --- the slow corners of Python's email package -------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        b'Content-Type: text/plain; a="' + b'"' * 60_000,  # malformed and long: quadratic
        b"Content-Type: text/plain; " + b"; ".join(b"p%d=1" % i for i in range(500)),  # params
        b"Content-Disposition: inline; " + b";" * 3000,
    ],
)
def test_a_costly_mime_header_never_reaches_the_header_registry(
    header: bytes, no_email_parser: None
) -> None:
    with within(1.0):
        error = refusal(FROM + header + b"\r\n\r\nbody\r\n")
    assert error.limit is None and "header too long to read" in error.reason


def test_a_hundred_parts_with_costly_but_allowed_mime_headers_stay_fast() -> None:
    def part(number: int) -> bytes:  # all different, so no parsed header is reused
        params = b"; ".join(b"p%d=%d" % (i, number) for i in range(60))
        disposition = b"\r\nContent-Disposition: inline; " + params
        return b"Content-Type: text/plain; " + params + disposition

    body = b"".join(b"--B\r\n" + part(n) + b"\r\n\r\nx\r\n" for n in range(99))
    raw = FROM + b"Content-Type: multipart/mixed; boundary=B\r\n\r\n" + body + b"--B--\r\n"
    # About 1.5 s of the stdlib's parameter parsing (each header is parsed once); the guard is
    # against the quadratic paths that take minutes, so it leaves room for a loaded machine.
    with within(4.0):
        report = parse_email(raw, NOW)
    assert report.attachments == [] and report.body.count("x") == 99  # every part is text


@pytest.mark.parametrize("name", [b"From", b"To", b"Cc", b"Reply-To", b"Message-ID", b"Date"])
@pytest.mark.parametrize("filler", [b'"', b",", b"\\", b"a ", b"("])
def test_long_malformed_address_headers_are_read_leniently_and_fast(
    name: bytes, filler: bytes
) -> None:
    value = filler * (60_000 // len(filler))
    raw = name + b": " + value + b"\r\nSubject: s\r\n\r\nbody\r\n"
    with within(1.0):
        report = parse_email(raw, NOW)
    assert report.ack_address is None and report.body == "body"


def test_long_but_well_formed_mime_headers_are_read() -> None:
    filename = "\u65e5\u672c\u8a9e" * 80  # long RFC 2231 filenames are legitimate
    encoded = "".join(f"%{b:02X}" for b in filename.encode())
    disposition = f"attachment; filename*=utf-8''{encoded}".encode()
    raw = with_attachments(1).replace(b"attachment; filename=file.bin", disposition)
    assert len(disposition) > 2000
    assert parse_email(raw, NOW).attachments[0].filename == filename


@pytest.mark.parametrize("chunk", ["<a ", "<!--", "<script>", "&#", "<a b='", "</"])
def test_html_to_text_is_linear(chunk: str) -> None:
    with within(1.0):
        html_to_text(chunk * (500_000 // len(chunk)))


def test_html_to_text_drops_hidden_content() -> None:
    html = "<head><title>t</title></head><p>Visible &lt;b&gt;</p><!-- hidden --><script>x()"
    assert html_to_text(html) == "Visible <b>"


# --- pitfall headers ----------------------------------------------------------------------------

PITFALLS = {
    "unknown charset": b"=?x-no-such-charset?q?bob=40evil.example?=",
    "crlf inside a b-word": b"=?utf-8?b?"
    + base64.b64encode(b"alice@example.org\r\nBcc: bob@evil.example")
    + b"?=",
    "nul byte": b"alice@example.org\x00bob@evil.example",
    "nul in the address": b"bob\x00@evil.example",
    "8-bit address": b"b\xc3\xb6b@evil.example",
    "8-bit garbage": b"\xff\xfe\x80 <\xffbob@evil.example>",
    "quoted address as name": b'"alice@example.org" <bob@evil.example>',
    "two addresses": b"a@b.example, c@d.example",
    "encoded word hiding an address": b"=?utf-8?q?=3Cevil=40x.example=3E?= <a@b.example>",
    "encoded word as the whole address": b"=?utf-8?q?evil=40x.example?=",
    "encoded word in the local part": b"=?utf-8?q?evil?=@good.example",
    "CVE-2023-27043": b'"a@evil.example"@good.example',
    "address in a comment": b"alice@example.org (bob@evil.example)",
    "two angle addresses": b"<alice@example.org> <bob@evil.example>",
    "folded injection": b"alice@example.org\r\n\tBcc: bob@evil.example",
    "group": b"friends: alice@example.org;",
    "registry IndexError": b"xQUJD<",
    "registry AttributeError": b"g:text/plaintext/plain<>;<''",
    "registry TypeError": b"(utf-8).[=3C\t",
    "deep comments": b"(" * 5000 + b"alice@example.org",
}


@pytest.mark.parametrize("value", PITFALLS.values(), ids=PITFALLS.keys())
def test_pitfall_in_from_gives_no_usable_address(value: bytes) -> None:
    raw = b"From: " + value + b"\r\nSubject: hello\r\nTo: report@example.ac.uk\r\n\r\nbody\r\n"
    try:
        report = parse_email(raw, NOW)
    except ParseError as error:
        assert error.reason
    else:
        assert report.ack_address is None and report.sender_address is None
        assert report.body == "body"


@pytest.mark.parametrize("value", PITFALLS.values(), ids=PITFALLS.keys())
def test_pitfall_in_subject_and_recipients_stays_one_line(value: bytes) -> None:
    raw = FROM + b"Subject: " + value + b"\r\nTo: " + value + b"\r\nCc: " + value + b"\r\n\r\nbody"
    report = parse_email(raw, NOW)
    assert not any(c in report.subject for c in "\r\n\x00")
    assert report.ack_address == "alice@example.org"
    assert "bob@evil.example" not in report.to_addresses
    assert "evil@x.example" not in report.to_addresses


def test_plain_senders_still_get_an_acknowledgement() -> None:
    for sender in (
        b"Alice <alice@example.org>",
        b"alice@example.org (Alice)",
        b"<alice@example.org>",
    ):
        report = parse_email(b"From: " + sender + b"\r\n\r\nbody\r\n", NOW)
        assert report.ack_address == "alice@example.org", sender


def test_unknown_charset_in_a_name_is_read_leniently() -> None:
    report = parse_email(b"From: =?x-unknown?q?Alice?= <alice@example.org>\r\n\r\nhi", NOW)
    assert (report.sender_name, report.ack_address) == ("Alice", "alice@example.org")


def test_several_from_fields_are_not_trusted() -> None:
    report = parse_email(FROM + b"From: bob@evil.example\r\n\r\nbody\r\n", NOW)
    assert report.ack_address is None


def test_encoded_line_breaks_never_reach_report_fields() -> None:
    injected = b"=?utf-8?q?x=0D=0ABcc=3A_bob=40evil.example?="
    raw = (
        b"From: =?utf-8?q?Alice=0D=0AX-Evil=3A_1?= <alice@example.org>\r\nSubject: "
        + injected
        + b"\r\nMessage-ID: <id=0D=0A@x>\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
        b"--B\r\nContent-Type: text/plain\r\n\r\nbody\r\n--B\r\nContent-Type: application/pdf\r\n"
        b'Content-Disposition: attachment; filename="' + injected + b'"\r\n\r\n%PDF\r\n--B--\r\n'
    )
    report = parse_email(raw, NOW)
    fields = [report.subject, report.sender_name or "", report.attachments[0].filename]
    assert report.sender_name == "Alice X-Evil: 1"
    for field in fields:
        assert "\r" not in field and "\n" not in field, field


def test_strict_address_refuses_what_it_would_have_to_guess_at() -> None:
    assert strict_address(" Alice.Smith+tag@Example.ORG ") == "alice.smith+tag@example.org"
    for bad in (
        "a@b",
        "a b@c.example",
        "a\x00@b.example",
        "é@b.example",
        "=?utf-8?q?a?=@b.example",
        "a..b@c.example",
        ".a@b.example",
        "a@-b.example",
        "a" * 250 + "@b.example",
    ):
        assert strict_address(bad) is None, bad


def test_registry_crashers_in_message_id_are_read_as_text() -> None:
    report = parse_email(FROM + b"Message-ID: <>!@=3C'=00a/][multipart/mixed\r\n\r\nbody", NOW)
    assert report.message_id and "\n" not in report.message_id


# --- the pre-scan sees what the parser will see ---------------------------------------------------

_EOLS = (b"\r\n", b"\n", b"\r")
_BOUNDARIES = (b"B", b"B1", b"b-", b"x y", b"B--", b"=_x")
_TYPES = (
    "text/plain",
    "multipart/mixed",
    "multipart/alternative",
    "multipart/digest",
    "multipart/related",
    "message/rfc822",
    "message/delivery-status",
    "application/pdf",
)


def _random_entity(r: random.Random, depth: int) -> bytes:
    """A MIME entity with the corners the parser treats specially (lone CR, repeated and
    enclosing boundaries, digests, delivery-status blocks, missing blank lines)."""
    eol = r.choice(_EOLS) if r.random() < 0.2 else b"\r\n"
    kind = r.choice(_TYPES) if depth < 5 else "text/plain"
    boundary = r.choice(_BOUNDARIES)
    head = b""
    if r.random() < 0.9:
        form = r.choice([b'; boundary="%s"', b"; boundary=%s", b"; boundary*=us-ascii''%s", b""])
        params = form % boundary if kind.startswith("multipart/") and form else b""
        head += b"Content-Type: " + kind.encode() + params + eol
    for _ in range(r.randint(0, 2)):
        head += r.choice([b"X-A: 1", b" folded", b"From x", b"--" + boundary, b"Bad line"]) + eol
    body = b""
    if kind.startswith("multipart/"):
        body += r.choice([b"", b"preamble" + eol])
        for _ in range(r.randint(0, 3)):
            body += b"--" + boundary + r.choice([b"", b"  ", b"--", b"x"]) + eol
            body += _random_entity(r, depth + 1) + eol
        body += r.choice([b"--" + boundary + b"--" + eol, b"", b"--" + boundary + b"--epilogue"])
    elif kind == "message/delivery-status":
        body += (b"Action: failed" + eol + r.choice([eol, b"", eol + eol])) * r.randint(0, 3)
    elif kind == "message/rfc822":
        body += _random_entity(r, depth + 1)
    else:
        body += r.choice([b"text", b"--" + boundary, b"", b"\r", b" x"]) + eol
    return head + r.choice([eol, b""]) + body


def _tree_shape(msg: Message) -> tuple[int, int]:
    parts, deepest, stack = 0, 0, [(msg, 0)]
    while stack:
        part, depth = stack.pop()
        if depth:
            parts, deepest = parts + 1, max(deepest, depth)
        if part.is_multipart():
            stack.extend((child, depth + 1) for child in part.get_payload())
    return parts, deepest


@settings(max_examples=400, deadline=None)
@given(st.randoms(use_true_random=False))
def test_prescan_counts_what_the_parser_builds(r: random.Random) -> None:
    raw = _random_entity(r, 0)
    unlimited = LimitsConfig(parts=10**6, depth=10**3, headers=10**6, header_bytes=10**8)
    try:
        expected: tuple[int, int] | None = _tree_shape(
            BytesParser(policy=guarded_policy()).parsebytes(raw)
        )
    except Exception:
        expected = None  # the parser fails: the pre-scan may refuse instead
    try:
        shape = prescan(raw, unlimited)
    except Refused:
        assert expected is None
    else:
        assert (shape.parts, shape.depth) == expected


@pytest.mark.parametrize("charset", [b"punycode", b"idna", b"rot13", b"x-unknown", b"base64"])
def test_sender_named_charsets_never_pick_a_slow_or_non_text_codec(charset: bytes) -> None:
    body = b"a" * 200_000 + b"-" + b"9" * 200_000  # punycode decodes this in quadratic time
    raw = FROM + b"Content-Type: text/plain; charset=" + charset + b"\r\n\r\n" + body
    with within(1.0):
        report = parse_email(raw, NOW)
    assert report.body == body.decode()
    subject = b"Subject: =?" + charset + b"?q?" + b"a" * 30_000 + b"-" + b"9" * 30_000 + b"?=\r\n"
    with within(1.0):
        assert parse_email(FROM + subject + b"\r\nbody", NOW).subject


def test_report_from_headers_reads_the_sender_of_a_refused_message() -> None:
    raw = FROM + b"To: report@example.ac.uk\r\nSubject: big\r\n" + flat(10_000).split(b"\r\n", 1)[1]
    assert refusal(raw).limit == "parts"
    with within(1.0):
        report = parse.report_from_headers(raw, NOW)
    assert report is not None
    assert (report.ack_address, report.subject, report.body) == ("alice@example.org", "big", "")
    assert report.to_addresses == ["report@example.ac.uk"]


@pytest.mark.parametrize(
    "raw",
    [
        FROM + b"X-Bomb: 1\r\n" * 1000 + b"\r\nbody",  # the header block is itself over a limit
        FROM + b"Subject: " + b"a" * 2_000_000,  # no end of the headers within reach
        b"",
        b'From: "alice@example.org" <bob@evil.example>\r\n\r\nbody',
    ],
)
def test_report_from_headers_gives_none_or_no_address_when_unsure(raw: bytes) -> None:
    report = parse.report_from_headers(raw, NOW)
    assert report is None or report.ack_address is None
