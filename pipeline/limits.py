"""Limits: raw message bytes (or a parsed message) and a `LimitsConfig` in; `Refused` out when
the message exceeds one.

Python's `email` parser spends time and stack on what a sender chooses: every MIME part costs
CPU, every nesting level costs recursion, and CPython 3.11's header registry is quadratic in the
length of a malformed structured header (a 60 KB `From` of quotes takes seconds). So before the
parser sees a message, `prescan` walks the raw bytes the way `email.feedparser` will (the same
line breaks, boundaries, nested messages and delivery-status blocks), counting parts, nesting
and header fields, and refuses the message at the first limit it exceeds: a 10,000-part or
1,000-deep message costs milliseconds, not seconds or a RecursionError.

`guarded_policy()` is `email.policy.default` with three changes: a structured header that would
be slow to parse (malformed and long) raises `UnsafeHeader` instead of reaching the header
registry, parsed headers are cached per message, and its messages are `RawBodyMessage`s. `walk`
checks a parsed message's parts against the same limits without recursion. `Deadline` is the
cooperative time limit (`limits.parse_seconds`): parsing runs in worker threads, so no signals.

`parse_bytes` parses a pre-scanned message without handing its large leaf bodies (an attachment,
`LARGE_BODY_BYTES` or more) to the parser, which makes each one text, a list of its lines and
joined copies, and as many again to decode it: a 34 MB message carrying a 25 MiB attachment cost
265 MiB more to parse and 154 MiB more to decode; now nothing, and the attachment once. The
parser reads the message with each large body cut to one marker line; each such part then reads
its body from the raw bytes when asked (`RawBodyMessage`), and decodes base64 straight from
them. What every part holds and decodes to is what the parser alone would give; when the parser
does not see the shape the pre-scan saw, the message is parsed whole, as before.

A `Refused` reason names the problem and the limit, never the message's content.
"""

from __future__ import annotations

import binascii
import io
import quopri
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.headerregistry import HeaderRegistry, UnstructuredHeader
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.policy import EmailPolicy
from typing import Any

from pipeline.config import LimitsConfig

#: A malformed structured header up to this many characters is parsed (cheap even if quadratic).
PARSE_ANY_CHARS = 256
#: A well-formed MIME header (Content-Type, -Disposition, -Transfer-Encoding) up to this many
#: characters and parameters (the registry's cost grows with both: ~4 ms at the bounds).
MIME_HEADER_CHARS = 4096
MIME_HEADER_PARAMS = 64

#: A leaf body this large or larger stays in the raw bytes (`parse_bytes`).
LARGE_BODY_BYTES = 64 * 1024
#: How much of a large body is decoded at a time.
DECODE_CHUNK_BYTES = 1024 * 1024
#: The transfer encodings `Message.get_payload(decode=True)` reads as uuencode.
_UUENCODE = frozenset({"x-uuencode", "uuencode", "uue", "x-uue"})

_MIME_HEADERS = frozenset({"content-type", "content-disposition", "content-transfer-encoding"})
_REGISTRY = HeaderRegistry()
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_WELL_FORMED_MIME = re.compile(
    rf"[ \t]*{_TOKEN}(?:[ \t]*/[ \t]*{_TOKEN})?"
    rf"(?:[ \t]*;[ \t]*{_TOKEN}[ \t]*=[ \t]*(?:{_TOKEN}|{_QUOTED}))*[ \t]*;?[ \t]*"
)

# The lines email.feedparser sees: split at \r\n, \r or \n (StringIO with newline="").
_EOL = rb"(?:\r\n|\r|\n)"
_HEADER_RUN = re.compile(rb"(?:(?:From |[\x21-\x39\x3b-\x7e]*:|[\t ])[^\r\n]*(?:\r\n|\r|\n|\Z))*")
_FIELD = re.compile(rb"(?:From |[\x21-\x39\x3b-\x7e]*:)[^\r\n]*(?:" + _EOL + rb"[\t ][^\r\n]*)*")
_ORPHAN_LINES = re.compile(rb"[\t ][^\r\n]*(?:" + _EOL + rb"[\t ][^\r\n]*)*")
_LINE = re.compile(rb"[^\r\n]*" + _EOL + rb"?")
_BLANK = re.compile(_EOL)


class Refused(Exception):
    """The message is refused before (or while) it is parsed; `reason` says why, without its
    content; `limit` names the `[limits]` key that was exceeded, or is None."""

    def __init__(self, reason: str, limit: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.limit = limit


class UnsafeHeader(ValueError):
    """A structured header too long and malformed to hand to the header registry."""


def _size(n: float) -> str:
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if n >= scale and n % scale == 0:
            return f"{int(n // scale)} {unit}"
    return f"{int(n)} bytes"


_REASONS = {
    "message_bytes": "the message is larger than {size}",
    "parts": "the message has more than {n} MIME parts",
    "depth": "the message's MIME parts are nested more than {n} levels deep",
    "headers": "a part of the message has more than {n} header fields",
    "header_bytes": "a header field of the message is longer than {size}",
    "attachments": "the message has more than {n} attachments",
    "parse_seconds": "reading the message took longer than {n} seconds",
}


def exceeded(key: str, limits: LimitsConfig) -> Refused:
    """The `Refused` for exceeding `limits.<key>`, e.g. "... (limit: limits.parts)"."""
    value = getattr(limits, key)
    text = _REASONS[key].format(n=f"{value:g}", size=_size(value))
    return Refused(f"{text} (limit: limits.{key})", key)


class Deadline:
    """`limits.parse_seconds` from now; `check()` raises `Refused` once it has passed."""

    def __init__(self, limits: LimitsConfig) -> None:
        self.limits = limits
        self.end = time.monotonic() + limits.parse_seconds

    def check(self) -> None:
        if time.monotonic() > self.end:
            raise exceeded("parse_seconds", self.limits)


# --- the header guard ---------------------------------------------------------------------------


def safe_to_parse(name: str, value: str) -> bool:
    """Whether the header registry may parse this header in linear time.

    Unstructured headers (Subject, unknown names) always; a structured one when it is short, or
    when it is a well-formed MIME header of sane size (long RFC 2231 filenames are legitimate).
    """
    key = name.lower()
    kind = _REGISTRY.registry.get(key, _REGISTRY.default_class)
    if issubclass(kind, UnstructuredHeader) or len(value) <= PARSE_ANY_CHARS:
        return True
    if key in _MIME_HEADERS and len(value) <= MIME_HEADER_CHARS:
        if value.count(";") > MIME_HEADER_PARAMS:
            return False
        return _WELL_FORMED_MIME.fullmatch(re.sub(r"[\r\n]", "", value)) is not None
    return False


@dataclass(frozen=True)
class RawBody:
    """A leaf body left in the raw message it was parsed from: `raw[start:end]`."""

    raw: bytes = field(repr=False)
    start: int
    end: int

    def data(self) -> bytes:
        return self.raw[self.start : self.end]

    def text(self) -> str:
        """The body as the parser makes it text (bytes beyond ASCII as surrogates)."""
        return self.data().decode("ascii", "surrogateescape")

    def decoded(self, encoding: str) -> bytes | None:
        """What `Message.get_payload(decode=True)` gives for this body under the transfer
        encoding `encoding` (lower case), without making it text first; None where only the
        email package's own lenient decoding will do (base64 that is not strictly valid,
        uuencode)."""
        if encoding == "base64":
            return self._base64()
        if encoding == "quoted-printable":
            return quopri.decodestring(self.data())
        return None if encoding in _UUENCODE else self.data()

    def _base64(self) -> bytes | None:
        """Strictly valid base64 (line breaks aside, as the email package reads it), decoded a
        chunk at a time into one buffer (no list of pieces joined into a copy); None for
        anything else."""
        out = io.BytesIO()
        rest = b""
        padded = False
        for pos in range(self.start, self.end, DECODE_CHUNK_BYTES):
            chunk = self.raw[pos : min(pos + DECODE_CHUNK_BYTES, self.end)]
            text = rest + chunk.translate(None, b"\r\n")
            whole = len(text) - len(text) % 4
            text, rest = text[:whole], text[whole:]
            if not text:
                continue
            if padded:  # data after the padding
                return None
            try:
                out.write(binascii.a2b_base64(text, strict_mode=True))
            except binascii.Error:
                return None
            padded = text.endswith(b"=")
        return None if rest else out.getvalue()  # the buffer itself, not a copy


class RawBodyMessage(EmailMessage):
    """An `EmailMessage` whose leaf body may stay in the raw bytes (`raw_body`, set by
    `parse_bytes`): made text only when read as text, and decoded straight from the bytes.
    Setting a payload replaces it."""

    raw_body: RawBody | None = None
    _held: Any = None

    @property
    def _payload(self) -> Any:
        return self.raw_body.text() if self.raw_body is not None else self._held

    @_payload.setter
    def _payload(self, value: Any) -> None:
        self.raw_body = None
        self._held = value

    def is_multipart(self) -> bool:
        return self.raw_body is None and super().is_multipart()

    def get_payload(self, i: int | None = None, decode: bool = False) -> Any:
        if self.raw_body is not None and decode and i is None:
            encoding = str(self.get("content-transfer-encoding", "")).lower()
            decoded = self.raw_body.decoded(encoding)
            if decoded is not None:
                return decoded
        return super().get_payload(i, decode)  # type: ignore[call-overload]


class GuardedPolicy(EmailPolicy):
    """`policy.default`, except that unsafe headers raise `UnsafeHeader`, parsed headers are
    cached (the parser reads Content-Type several times per part) and the parser makes
    `RawBodyMessage`s. One instance per message."""

    message_factory = RawBodyMessage
    header_cache: dict[tuple[str, str], Any]

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        object.__setattr__(self, "header_cache", {})  # policies are frozen once built

    def header_fetch_parse(self, name: str, value: str) -> Any:
        if hasattr(value, "name"):
            return value
        if not safe_to_parse(name, value):
            raise UnsafeHeader(f"the {name[:40]} header is too long and malformed to read")
        key = (name.lower(), value)
        if key not in self.header_cache:
            self.header_cache[key] = super().header_fetch_parse(name, value)
        return self.header_cache[key]


def guarded_policy() -> GuardedPolicy:
    """A fresh policy (with its own header cache) for one message."""
    return GuardedPolicy()


# --- a parsed message -------------------------------------------------------------------------


def _check_headers(part: Message, limits: LimitsConfig) -> None:
    items = part.raw_items()
    for count, (name, value) in enumerate(items, start=1):
        if count > limits.headers:
            raise exceeded("headers", limits)
        if len(name) + 1 + len(re.sub(r"[\r\n]", "", str(value))) > limits.header_bytes:
            raise exceeded("header_bytes", limits)


def walk(msg: Message, limits: LimitsConfig, deadline: Deadline) -> Iterator[Message]:
    """The message and its parts in `walk()` order, without recursion; `Refused` beyond the
    parts, depth and header limits or the deadline."""
    stack: list[tuple[Message, int]] = [(msg, 0)]
    count = 0
    while stack:
        part, depth = stack.pop()
        deadline.check()
        if depth:
            count += 1
            if count > limits.parts:
                raise exceeded("parts", limits)
            if depth > limits.depth:
                raise exceeded("depth", limits)
        _check_headers(part, limits)
        yield part
        if part.is_multipart():
            children = [child for child in part.get_payload() if isinstance(child, Message)]
            stack.extend((child, depth + 1) for child in reversed(children))


# --- the pre-scan -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """What the pre-scan counted: MIME parts below the message, and the deepest level reached;
    and where the leaf bodies of `LARGE_BODY_BYTES` or more are in the raw bytes (start, end)."""

    parts: int
    depth: int
    large_bodies: tuple[tuple[int, int], ...] = ()


def prescan(
    raw: bytes,
    limits: LimitsConfig,
    deadline: Deadline | None = None,
    policy: GuardedPolicy | None = None,
) -> Shape:
    """Check the raw message against the limits before it is parsed; `Refused` at the first
    limit exceeded. `message_bytes` is checked first, before anything is read. Pass the policy
    the message will be parsed with: the Content-Type headers read here are then parsed once."""
    if len(raw) > limits.message_bytes:
        raise exceeded("message_bytes", limits)
    scanner = _Scanner(raw, limits, deadline or Deadline(limits), policy or guarded_policy())
    try:
        scanner.entity(0, None)
    except RecursionError:
        raise exceeded("depth", limits) from None
    return Shape(scanner.parts, scanner.deepest, tuple(scanner.large_bodies))


# --- parsing without the large bodies -----------------------------------------------------------


def parse_bytes(raw: bytes, shape: Shape, policy: GuardedPolicy) -> Message:
    """`BytesParser(policy=policy).parsebytes(raw)` for a message `prescan` found of `shape`,
    with its large leaf bodies left in `raw` (see the module docstring)."""
    parser = BytesParser(policy=policy)
    if not shape.large_bodies:
        return parser.parsebytes(raw)
    token = secrets.token_hex(16)  # a sender cannot write a body that passes for a marker
    markers = {f"\x00{token}:{n}": span for n, span in enumerate(shape.large_bodies)}
    pieces, position = [], 0
    for marker, (start, end) in markers.items():
        pieces += [raw[position:start], marker.encode("ascii") + b"\n"]
        position = end
    pieces.append(raw[position:])
    msg = parser.parsebytes(b"".join(pieces))
    if _restore_bodies(msg, raw, markers):
        return msg
    return parser.parsebytes(raw)  # the parser saw another shape than the pre-scan


def _restore_bodies(msg: Message, raw: bytes, markers: dict[str, tuple[int, int]]) -> bool:
    """Give each part whose body the parser read as exactly one marker line the raw body it
    stands for; whether every marker was found so. The parser drops the line break before a
    boundary from the part before it: where it dropped the marker's, the body's goes too."""
    restored = 0
    for part in msg.walk():
        if not isinstance(part, RawBodyMessage) or not isinstance(part._payload, str):
            continue
        payload = part._payload
        cut = payload.removesuffix("\n")
        if cut not in markers:
            continue
        start, end = markers[cut]
        if cut == payload:
            end = _before_final_eol(raw, start, end)
        part.raw_body = RawBody(raw, start, end)
        restored += 1
    return restored == len(markers)


def _before_final_eol(raw: bytes, start: int, end: int) -> int:
    """Where `raw[start:end]` ends without its final line break (`\\r\\n`, `\\r` or `\\n`)."""
    if raw.endswith(b"\r\n", start, end):
        return end - 2
    return end - 1 if raw.endswith((b"\r", b"\n"), start, end) else end


@dataclass
class _Fields:
    """One header block: its first Content-Type, -Transfer-Encoding and -Disposition, as text."""

    mime: dict[str, list[str]]


class _Scanner:
    """Walks raw bytes as `email.feedparser` does, without building messages.

    `eofs` mirrors the parser's stack of false-EOF matchers: enclosing boundaries (bytes) and,
    inside a delivery-status part, the blank line (None). A line matching any of them ends the
    part being read, at any depth (RFC 2046 5.1.2).
    """

    def __init__(
        self, raw: bytes, limits: LimitsConfig, deadline: Deadline, policy: GuardedPolicy
    ) -> None:
        self.raw = raw
        self.limits = limits
        self.deadline = deadline
        self.policy = policy
        self.pos = 0
        self.eofs: list[bytes | None] = []
        self.parts = 0
        self.deepest = 0
        self.large_bodies: list[tuple[int, int]] = []
        self._patterns: dict[tuple[bytes | None, ...], tuple[re.Pattern[bytes], ...]] = {}

    # -- lines ---------------------------------------------------------------------------------

    def _compiled(self, matchers: tuple[bytes | None, ...]) -> tuple[re.Pattern[bytes], ...]:
        if matchers not in self._patterns:
            alternatives = [
                _EOL if b is None else b"--" + re.escape(b) + rb"(?:--)?[ \t]*(?:\r\n|\r|\n|\Z)"
                for b in matchers
            ]
            line = b"(?:" + b"|".join(alternatives or [b"(?!)"]) + b")"
            self._patterns[matchers] = (re.compile(line), re.compile(rb"(?:\n|\r(?!\n))" + line))
        return self._patterns[matchers]

    def _matches(self, pos: int, matchers: tuple[bytes | None, ...]) -> bool:
        return bool(matchers) and self._compiled(matchers)[0].match(self.raw, pos) is not None

    def at_eof(self, pos: int | None = None) -> bool:
        """Whether the parser's readline() returns '' here: end of data or a false EOF."""
        pos = self.pos if pos is None else pos
        return pos >= len(self.raw) or self._matches(pos, tuple(self.eofs))

    def next_eof(self, pos: int, extra: bytes | None = None, end: int | None = None) -> int:
        """Where the first line from `pos` that ends the current part (or matches `extra`)
        starts; `end` (or the end of data) when there is none."""
        matchers = tuple(self.eofs) + ((extra,) if extra is not None else ())
        stop = len(self.raw) if end is None else end
        if pos >= stop or self._matches(pos, matchers):
            return pos
        found = self._compiled(matchers)[1].search(self.raw, pos, stop) if matchers else None
        return found.start() + 1 if found else stop

    def line_end(self, pos: int) -> int:
        found = _LINE.match(self.raw, pos)
        return found.end() if found else len(self.raw)

    # -- entities ------------------------------------------------------------------------------

    def entity(self, depth: int, default_type: str | None) -> None:
        """One message or part from `pos`: its headers, then its body by content type."""
        self.deadline.check()
        if depth:
            self.parts += 1
            if self.parts > self.limits.parts:
                raise exceeded("parts", self.limits)
            if depth > self.limits.depth:
                raise exceeded("depth", self.limits)
            self.deepest = max(self.deepest, depth)
        ctype, boundary = self.content_type(self.header_block(), default_type)
        if ctype == "message/delivery-status":
            self.status_blocks(depth)
        elif ctype.startswith("message/"):
            self.entity(depth + 1, None)
        elif ctype.startswith("multipart/") and boundary is not None:
            digest = "message/rfc822" if ctype == "multipart/digest" else None
            self.multipart(depth, boundary, digest)
        else:
            start, self.pos = self.pos, self.next_eof(self.pos)
            if self.pos - start >= LARGE_BODY_BYTES:
                self.large_bodies.append((start, self.pos))

    def multipart(self, depth: int, boundary: bytes, default_type: str | None) -> None:
        own = (boundary,)
        while True:
            self.pos = self.next_eof(self.pos, extra=boundary)
            if self.at_eof():
                return  # no (further) part: an enclosing boundary or the end of data
            if self.raw.startswith(b"--" + boundary + b"--", self.pos):
                self.pos = self.next_eof(self.line_end(self.pos))  # the epilogue
                return
            self.pos = self.line_end(self.pos)
            while not self.at_eof() and self._matches(self.pos, own):
                self.pos = self.line_end(self.pos)  # repeated boundary lines make no part
            self.eofs.append(boundary)
            self.entity(depth + 1, default_type)
            self.eofs.pop()

    def status_blocks(self, depth: int) -> None:
        """message/delivery-status: blocks of header fields separated by blank lines."""
        while True:
            self.eofs.append(None)
            self.entity(depth + 1, None)
            self.eofs.pop()
            if not self.at_eof():
                self.pos = self.line_end(self.pos)  # the blank line between blocks
            if self.at_eof():
                return

    # -- header blocks -------------------------------------------------------------------------

    def header_block(self) -> _Fields:
        """Read the header fields from `pos` (and the blank line after them), checking counts
        and lengths; return the MIME fields the parser will look at."""
        start = self.pos
        if self.at_eof():
            return _Fields({})
        run = _HEADER_RUN.match(self.raw, start)
        end = self.next_eof(start, end=run.end() if run else start)
        self.pos = end
        if not self.at_eof() and _BLANK.match(self.raw, self.pos):
            self.pos = self.line_end(self.pos)
        return self.fields(start, end)

    def fields(self, start: int, end: int) -> _Fields:
        raw, limits = self.raw, self.limits
        mime: dict[str, list[str]] = {}
        count, pos = 0, start
        while pos < end:
            field = _FIELD.match(raw, pos, end)
            if field is None:  # a continuation line with no field before it: the parser drops it
                orphan = _ORPHAN_LINES.match(raw, pos, end)
                pos = self.line_end(orphan.end() if orphan else pos)
                continue
            count += 1
            if count > limits.headers:
                raise exceeded("headers", limits)
            folds = raw.count(b"\r", field.start(), field.end())
            folds += raw.count(b"\n", field.start(), field.end())
            if field.end() - field.start() - folds > limits.header_bytes:
                raise exceeded("header_bytes", limits)
            colon = raw.find(b":", pos, field.end())
            key = raw[pos:colon].lower().decode("ascii", "replace") if colon > 0 else ""
            if key in _MIME_HEADERS and key not in mime:
                text = field.group(0).decode("ascii", "surrogateescape")
                mime[key] = io.StringIO(text, newline="").readlines()
            pos = self.line_end(field.end())
        return _Fields(mime)

    def content_type(self, fields: _Fields, default_type: str | None) -> tuple[str, bytes | None]:
        """The content type and boundary the parser will see, read with the parser's policy."""
        msg = EmailMessage(policy=self.policy)
        if default_type:
            msg.set_default_type(default_type)
        for name, lines in fields.mime.items():
            header, value = self.policy.header_source_parse(lines)
            if not safe_to_parse(header, value):
                raise Refused(f"a MIME part has a malformed {name.title()} header too long to read")
            msg.set_raw(header, value)
        try:  # what the parser does with these headers, in its order
            ctype = msg.get_content_type()
            if not ctype.startswith("multipart/"):
                return ctype, None
            boundary = msg.get_boundary()
            str(msg.get("content-transfer-encoding", "8bit"))
        except Exception as exc:
            reason = f"a MIME part's content type cannot be read ({type(exc).__name__})"
            raise Refused(reason) from None
        try:
            return ctype, None if boundary is None else boundary.encode("ascii", "surrogateescape")
        except UnicodeEncodeError:  # decoded to characters no raw line can contain: no parts
            return ctype, None
