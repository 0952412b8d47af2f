"""Large bodies stay in the raw bytes: `limits.parse_bytes` gives what the email parser alone
gives (every part, its text and its decoded bytes, and the message written back), whatever the
shape, line endings or transfer encoding; reading a message with a large attachment costs
about twice the attachment, not ten times; and `content_fingerprint` hashes a body a chunk at a
time exactly as it hashed the whole."""

from __future__ import annotations

import base64
import hashlib
import os
import random
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email.message import Message
from email.parser import BytesParser
from unittest.mock import patch

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import limits, parse
from pipeline.config import LimitsConfig
from pipeline.limits import RawBodyMessage, guarded_policy, parse_bytes, prescan
from pipeline.parse import parse_email, read_message
from tests.unit.test_parse_limits import _random_entity

NOW = datetime(2026, 11, 25, tzinfo=UTC)
UNLIMITED = LimitsConfig(
    message_bytes=10**9, parts=10**6, depth=10**3, headers=10**6, header_bytes=10**8
)
MIB = 1024 * 1024
_EOLS = (b"\r\n", b"\n", b"\r")


@contextmanager
def every_body_large(chunk: int = 5) -> Iterator[None]:
    """Every non-empty leaf body counts as large, and is decoded `chunk` bytes at a time."""
    with (
        patch.object(limits, "LARGE_BODY_BYTES", 1),
        patch.object(limits, "DECODE_CHUNK_BYTES", chunk),
    ):
        yield


def described(msg: Message) -> list[object]:
    """Everything a reader can ask of each part, in walk order (decoding first: it notes
    defects)."""
    found: list[object] = []
    for part in msg.walk():
        decoded = part.get_payload(decode=True)
        payload = None if part.is_multipart() else part.get_payload()
        defects = [type(defect).__name__ for defect in part.defects]
        found.append((part.get_content_type(), part.is_multipart(), payload, decoded, defects))
        found.append((part.preamble, part.epilogue, list(part.raw_items())))
    return found


def assert_parsed_alike(raw: bytes) -> None:
    """`parse_bytes` with every body left in `raw` gives what the parser gives."""
    try:
        expected = BytesParser(policy=guarded_policy()).parsebytes(raw)
        wanted = (described(expected), expected.as_bytes())
    except Exception:
        return  # the parser fails on it: read_message quarantines it either way
    policy = guarded_policy()
    with every_body_large():
        msg = parse_bytes(raw, prescan(raw, UNLIMITED, policy=policy), policy)
        assert (described(msg), msg.as_bytes()) == wanted


# --- bodies of every encoding ------------------------------------------------------------------

_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _base64_body(r: random.Random, eol: bytes) -> bytes:
    """Valid base64 in lines, or with the flaws senders make: a stray character, no padding,
    data after the padding, a length no padding mends."""
    data = base64.b64encode(r.randbytes(r.randint(0, 40)))
    flaw = r.choice(["none", "none", "stray", "unpadded", "after", "length"])
    if flaw == "stray":
        at = r.randint(0, len(data))
        data = data[:at] + r.choice([b" ", b"!", b"\t", b"\x85", b"="]) + data[at:]
    elif flaw == "unpadded":
        data = data.rstrip(b"=")
    elif flaw == "after":
        data += b"QUJD"
    elif flaw == "length":
        data += r.choice(_ALPHABET).to_bytes(1, "big")
    width = r.randint(1, 12)
    return eol.join(data[i : i + width] for i in range(0, len(data), width)) + eol


def _leaf(r: random.Random, eol: bytes) -> bytes:
    encoding = r.choice([b"base64", b"base64", b"quoted-printable", b"8bit", b"x-uuencode"])
    if encoding == b"base64":
        body = _base64_body(r, eol)
    elif encoding == b"quoted-printable":
        body = r.choice([b"caf=C3=A9 =", b"soft=" + eol + b"break", b"=ZZ bad", b"plain"]) + eol
    elif encoding == b"x-uuencode":
        body = b"begin 644 x" + eol + b"#86)C" + eol + b"`" + eol + b"end" + eol
    else:
        body = r.choice([b"caf\xc3\xa9", b"\xff\xfe raw", b"text"]) + eol
    head = b"Content-Type: application/octet-stream" + eol
    head += b"Content-Transfer-Encoding: " + encoding + eol
    return head + r.choice([eol, b""]) + body + r.choice([b"", b"tail", eol])


def _encoded_message(r: random.Random) -> bytes:
    """Leaves of every encoding, at the top, in a multipart or in an attached message."""
    eol = r.choice(_EOLS)
    top = b"From: a@example.org" + eol
    shape = r.choice(["leaf", "multipart", "attached"])
    if shape == "leaf":
        return top + _leaf(r, eol)
    parts = b"".join(b"--B" + eol + _leaf(r, eol) + eol for _ in range(r.randint(1, 3)))
    multipart = b"Content-Type: multipart/mixed; boundary=B" + eol + eol + parts
    multipart += r.choice([b"--B--" + eol, b"", b"--B--" + eol + b"epilogue"])
    if shape == "multipart":
        return top + multipart
    inner = b"From: b@example.org" + eol + multipart
    return top + b"Content-Type: message/rfc822" + eol + eol + inner


@settings(max_examples=400, deadline=None)
@given(st.randoms(use_true_random=False))
def test_bodies_of_every_encoding_read_as_the_parser_reads_them(r: random.Random) -> None:
    assert_parsed_alike(_encoded_message(r))


@settings(max_examples=400, deadline=None)
@given(st.randoms(use_true_random=False))
def test_every_mime_shape_parses_as_the_parser_parses_it(r: random.Random) -> None:
    assert_parsed_alike(_random_entity(r, 0))


def test_a_large_attachment_stays_in_the_raw_bytes_until_read() -> None:
    data = os.urandom(MIB)
    raw = _with_attachment(data)
    msg = read_message(raw, limits=UNLIMITED)
    attachment = list(msg.walk())[-1]
    assert isinstance(attachment, RawBodyMessage) and attachment.raw_body is not None
    assert attachment.raw_body.raw is raw  # no copy
    assert attachment.get_payload(decode=True) == data
    attachment.set_content(b"replaced", maintype="application", subtype="octet-stream")
    assert attachment.raw_body is None and attachment.get_payload(decode=True) == b"replaced"


def test_a_marker_the_sender_wrote_is_only_text() -> None:
    """A body that looks like a marker stays what it is: the marker's token is secret."""
    data = os.urandom(100_000)
    raw = _with_attachment(data, text=b"\x00" + b"0" * 32 + b":0")
    report = parse_email(raw, NOW, limits=UNLIMITED)
    assert report.body == "\x00" + "0" * 32 + ":0"
    assert report.attachments[0].data == data


# --- what it costs ------------------------------------------------------------------------------


def _with_attachment(data: bytes, text: bytes = b"It happened near the library.") -> bytes:
    encoded = base64.encodebytes(data).replace(b"\n", b"\r\n")
    return (
        b"From: Sam <sam@example.ac.uk>\r\nSubject: report\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="B"\r\n\r\n--B\r\n'
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + text + b"\r\n--B\r\n"
        b'Content-Type: video/mp4\r\nContent-Disposition: attachment; filename="clip.mp4"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded + b"--B--\r\n"
    )


def test_reading_a_large_attachment_costs_about_twice_its_size() -> None:
    """Parsed whole, an 8 MiB attachment cost the parser about ten times its size on top of the
    message (text, lines, joined copies, then as many again to decode it)."""
    data = os.urandom(8 * MIB)
    raw = _with_attachment(data)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        report = parse_email(raw, NOW, limits=UNLIMITED)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert report.attachments[0].data == data
    assert peak < 3 * len(data), f"{peak / MIB:.1f} MiB to read an 8 MiB attachment"


# --- the fingerprint, a chunk at a time ---------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40).map(lambda b: bytes(b"a\r\n"[x % 3] for x in b)), st.integers(1, 5))
def test_a_body_is_hashed_in_chunks_as_it_was_whole(body: bytes, chunk: int) -> None:
    raw = b"Message-ID: <m1@example.org>\r\n\r\n" + body
    with patch.object(parse, "FINGERPRINT_CHUNK_BYTES", chunk):
        chunked = parse.content_fingerprint(raw)
    whole = hashlib.sha256(body.replace(b"\r\n", b"\n")).hexdigest()  # as it was hashed before
    assert chunked == hashlib.sha256(b"<m1@example.org>\0" + whole.encode()).hexdigest()
