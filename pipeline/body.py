"""Body: a parsed message in; what the referral shows of it out (`Contents`): the text a person
wrote, the attachments, forwarded messages as text, and a note for anything it cannot show.

- The body is every inline text/plain or text/html part of the message (no file name, not an
  attachment), in order, with the plain-text alternative chosen over HTML unless it is empty
  (some clients send an empty plain part beside the real HTML one): Apple Mail splits a body
  around an inline picture (`multipart/mixed`: text, image, text), so the text after the
  picture is as much the report as the text before it.
- Every other text part (a meeting invite `text/calendar`, a contact card `text/vcard`, ...)
  is an attachment, never body text: they name people, addresses and phone numbers. Without
  a file name it is called `attachment-N` with the usual extension (`.ics`, `.vcf`).
- A forwarded message (`message/rfc822`, e.g. Gmail's "forward as attachment" or an attached
  `.eml`) becomes one `forwarded` entry: its From, Date, Subject and To lines, an empty line
  and its body text, chosen as for the report itself. Its own attachments become report
  attachments; messages forwarded inside it become entries of their own, in order. One sent
  base64 or quoted-printable encoded is decoded and parsed like the message itself: pre-scanned
  within `[limits]` (its parts and depth count with the message's, and all decoded forwards
  together may be no larger than `message_bytes`) before the parser sees it.
- Anything that cannot be shown as text is named in `notes`: an Outlook `.msg` (it stays an
  attachment), an encoded forwarded message that does not decode to a message (attached as a
  `.eml`), a text part that could not be decoded.

Works within the caller's `[limits]` and `Deadline` (parse.py has already walked the parts
within the limits); never recurses deeper than the MIME depth limit. Raises `Refused` (from
pipeline.limits) past a limit, which parse.py turns into its `ParseError`.
"""

from __future__ import annotations

import binascii
import mimetypes
import quopri
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message

from pipeline.config import LimitsConfig
from pipeline.limits import (
    Deadline,
    GuardedPolicy,
    exceeded,
    guarded_policy,
    parse_bytes,
    prescan,
    walk,
)
from pipeline.mime import (
    content_type,
    disposition,
    filename,
    header,
    html_to_text,
    payload,
    text_of,
    transfer_encoding,
)
from pipeline.report import Attachment

FORWARDED_TYPES = frozenset({"message/rfc822", "message/global"})
FORWARDED_HEADERS = ("From", "Date", "Subject", "To")
_READABLE_ENCODINGS = frozenset({"7bit", "8bit", "binary", ""})
_OUTLOOK_TYPES = frozenset({"application/vnd.ms-outlook", "application/x-msg"})
#: The only types that are ever body text; every other text/* part is an attachment.
BODY_TYPES = frozenset({"text/plain", "text/html"})
#: Extensions for unnamed text attachments the stdlib's built-in table does not know.
_TEXT_EXTENSIONS = {
    "text/calendar": ".ics",
    "text/x-vcalendar": ".vcs",
    "text/vcard": ".vcf",
    "text/x-vcard": ".vcf",
    "text/directory": ".vcf",
}
_BUILT_IN_TYPES = mimetypes.MimeTypes()  # the stdlib's own table, not this host's files


@dataclass
class Contents:
    """What a message shows: body text, attachments, forwarded messages, notes."""

    body: str = ""
    attachments: list[Attachment] = field(default_factory=list)
    forwarded: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def read_contents(msg: Message, limits: LimitsConfig, deadline: Deadline) -> Contents:
    """The body, attachments, forwarded messages and notes of a parsed message; `Refused`
    (from pipeline.limits) past the attachment limit or the deadline."""
    reader = _Reader(limits, deadline)
    reader.parts = sum(1 for _part in walk(msg, limits, deadline)) - 1
    reader.contents.body = reader.message(msg, 0)
    return reader.contents


def body_parts(part: Message, depth: int, max_depth: int, root: bool = True) -> list[Message]:
    """The inline text/plain and text/html parts that make up the body of `part`, in order: of
    a `multipart/alternative` the plain-text alternative unless it is empty (else HTML), of any
    other multipart every such part. Attachments and attached messages are not entered."""
    if depth > max_depth or disposition(part) == "attachment":
        return []
    ctype = content_type(part)
    if ctype in BODY_TYPES:
        return [part] if root or filename(part) is None else []
    if not ctype.startswith("multipart/") or not part.is_multipart():
        return []
    children = [child for child in part.get_payload() if isinstance(child, Message)]
    if ctype != "multipart/alternative":
        return [p for c in children for p in body_parts(c, depth + 1, max_depth, root=False)]
    best: list[Message] = []
    best_rank = 3
    for child in children:
        found = body_parts(child, depth + 1, max_depth, root=False)
        if not found:
            continue
        types = {content_type(p) for p in found}
        rank = 2 if _blank(found) else 0 if "text/plain" in types else 1
        if rank < best_rank:
            best, best_rank = found, rank
    return best


def forwarded_text(inner: Message, body: str) -> str:
    """A forwarded message as the referral shows it: its header lines, an empty line, its text."""
    lines = [f"{name}: {value}" for name in FORWARDED_HEADERS if (value := header(inner, name))]
    return "\n".join(lines) + "\n\n" + (body or "(the forwarded message has no text)")


class _Reader:
    def __init__(self, limits: LimitsConfig, deadline: Deadline) -> None:
        self.limits = limits
        self.deadline = deadline
        self.contents = Contents()
        self.parts = 0  # MIME parts below the top, counting those of decoded forwards
        self.decoded = 0  # bytes of all decoded forwarded messages together

    def message(self, msg: Message, depth: int) -> str:
        """The body text of `msg` (the report or a forwarded message, `depth` MIME levels
        down); its attachments and the messages forwarded in it are added to `contents`."""
        chosen = body_parts(msg, depth, self.limits.depth)
        shown = {id(part) for part in chosen}
        for part, below in _own_parts(msg):
            self.deadline.check()
            if id(part) in shown:
                continue
            if content_type(part) in FORWARDED_TYPES and part.is_multipart():
                self.forward(part, depth + below)
            elif not _is_text_alternative(part):
                self.attach(part)
        return self.join(chosen)

    def join(self, parts: list[Message]) -> str:
        texts: list[str] = []
        for part in parts:
            self.deadline.check()
            text = text_of(part)
            if not text and _has_raw_content(part):
                self.contents.notes.append(
                    "a text part of the message could not be decoded; it is kept in the "
                    "encrypted original"
                )
            if content_type(part) == "text/html":
                text = html_to_text(text)
            if text.strip():
                texts.append(text.strip())
        return "\n\n".join(texts)

    def forward(self, part: Message, depth: int) -> None:
        """A forwarded message: the `message/*` part `part`, `depth` MIME levels down."""
        inner = next((c for c in part.get_payload() if isinstance(c, Message)), None)
        if inner is None:
            self.attach(part)
            return
        if depth + 1 > self.limits.depth:
            return
        if transfer_encoding(part) not in _READABLE_ENCODINGS:  # the parser did not open it
            data = _decoded_message(inner, transfer_encoding(part))
            opened = self.opened(data, depth + 1)
            if opened is None:
                self.attach(part, data=data)
                return
            inner = opened
        index = len(self.contents.forwarded)
        self.contents.forwarded.append("")  # keeps the order: this message, then its forwards
        body = self.message(inner, depth + 1)
        self.contents.forwarded[index] = forwarded_text(inner, body)

    def opened(self, data: bytes, depth: int) -> Message | None:
        """The decoded bytes of an encoded forwarded message, `depth` MIME levels down, parsed
        as read_message parses a message: pre-scanned first, then walked, within the limits
        left (`Refused` beyond them). None when they are not a message."""
        self.decoded += len(data)
        if self.decoded > self.limits.message_bytes:
            raise exceeded("message_bytes", self.limits)
        if not data or data.isspace():
            return None
        policy = guarded_policy()
        shape = prescan(data, self.limits, self.deadline, policy)
        self.parts += shape.parts  # the part it replaces was counted already
        if self.parts > self.limits.parts:
            raise exceeded("parts", self.limits)
        if depth + shape.depth > self.limits.depth:
            raise exceeded("depth", self.limits)
        try:
            msg = parse_bytes(data, shape, policy)
        except Exception:  # RecursionError, UnsafeHeader, the parser's own bugs
            return None
        if not msg.keys():
            return None
        for _part in walk(msg, self.limits, self.deadline):
            pass
        return msg

    def attach(self, part: Message, data: bytes | None = None) -> int:
        """Add the part as an attachment; its number (1-based)."""
        found = self.contents.attachments
        if len(found) >= self.limits.attachments:
            raise exceeded("attachments", self.limits)
        ctype = content_type(part)
        number = len(found) + 1
        default = f"forwarded-{number}.eml" if ctype in FORWARDED_TYPES else f"attachment-{number}"
        name = filename(part) or default + _text_extension(ctype)
        found.append(Attachment(name, ctype, payload(part) if data is None else data))
        if ctype in FORWARDED_TYPES:
            self.contents.notes.append(
                f"attachment {number} is a forwarded message that could not be read as a "
                "message, so its text is not shown here"
            )
        elif ctype in _OUTLOOK_TYPES or name.lower().endswith(".msg"):
            self.contents.notes.append(
                f"attachment {number} is an Outlook message (.msg): its text could not be "
                "read into this referral; open the attachment in Outlook"
            )
        return number


def _own_parts(msg: Message) -> Iterator[tuple[Message, int]]:
    """The leaves of `msg` and its forwarded messages (whole), in order, without entering them;
    each with its MIME depth below `msg`."""
    stack = [(msg, 0)]
    while stack:
        part, depth = stack.pop()
        if content_type(part) in FORWARDED_TYPES or not part.is_multipart():
            yield part, depth
            continue
        children = [child for child in part.get_payload() if isinstance(child, Message)]
        stack.extend((child, depth + 1) for child in reversed(children))


def _is_text_alternative(part: Message) -> bool:
    """An inline text/plain or text/html part not chosen for the body: an alternative of the
    text shown (or an empty plain part that gave way to HTML)."""
    if filename(part) or disposition(part) == "attachment":
        return False
    return content_type(part) in BODY_TYPES


def _blank(parts: list[Message]) -> bool:
    """Whether an alternative is only plain text with nothing in it but white space."""
    return all(content_type(p) == "text/plain" and not text_of(p).strip() for p in parts)


def _text_extension(ctype: str) -> str:
    """`.ics` for an unnamed text/calendar part; "" for anything but text."""
    if not ctype.startswith("text/"):
        return ""
    return _TEXT_EXTENSIONS.get(ctype) or _BUILT_IN_TYPES.guess_extension(ctype) or ""


def _has_raw_content(part: Message) -> bool:
    try:
        raw = part.get_payload()
    except Exception:
        return False
    return isinstance(raw, str) and bool(raw.strip())


def _decoded_message(inner: Message, encoding: str) -> bytes:
    """The bytes of a forwarded message the parser read as text because it was encoded.

    Written back as read (`refold_source="none"`): refolding would hand each long header line
    to the header registry, unguarded, and a 60 KB line of quotes takes it a minute."""
    try:
        data = inner.as_bytes(policy=GuardedPolicy(refold_source="none"))
    except Exception:
        return b""
    try:
        if encoding == "base64":
            return binascii.a2b_base64(b"".join(data.split()))
        if encoding == "quoted-printable":
            return quopri.decodestring(data)
    except (binascii.Error, ValueError):
        pass
    return data
