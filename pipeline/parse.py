"""Parse: raw email bytes in, a `Report` out, or a `ParseError` naming why it could not be read.

The intake address is public, so every input is hostile until read. `read_message` checks the raw
bytes against `[limits]` before Python's `email` parser sees them (`pipeline.limits.prescan`),
then parses with a guarded `policy.default`; `report_from_message` reads the parts within the
same limits and a cooperative time limit. Header fields are read leniently (a header the
library cannot parse is decoded as plain text or treated as absent); addresses strictly (one
plain addr-spec, or none). Never raises anything but `ParseError` for bad input: a message it
cannot read is quarantined by the caller, never dropped. A reason names the problem and the
limit (`ParseError.limit`), never the content. `report_from_headers` reads just the sender of a
message refused by a limit, so that they can be told.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from datetime import datetime
from email.message import EmailMessage, Message

from pipeline.acks import AckPolicy
from pipeline.body import read_contents
from pipeline.config import LimitsConfig
from pipeline.limits import (
    Deadline,
    Refused,
    exceeded,
    guarded_policy,
    parse_bytes,
    prescan,
    safe_to_parse,
    walk,
)
from pipeline.mime import (
    clean_header,
    decode_text,
    header,
    html_to_text,
    lenient_text,
    octets_as_text,
    raw_values,
)
from pipeline.report import Report

__all__ = [
    "ParseError",
    "clean_header",
    "content_fingerprint",
    "decode_text",
    "html_to_text",
    "lenient_text",
    "mailbox",
    "parse_email",
    "read_message",
    "report_from_headers",
    "report_from_message",
    "split_raw",
    "strict_address",
]

DEFAULT_LIMITS = LimitsConfig()
MESSAGE_ONLY = AckPolicy()  # judged from the message alone: no deployment's own addresses
MAX_RECIPIENTS = 100  # addresses read from To/Cc/Delivered-To/X-Original-To
HEADER_BLOCK_BYTES = 1024 * 1024  # how far report_from_headers looks for the end of the headers
FINGERPRINT_CHUNK_BYTES = 1024 * 1024  # how much of a body content_fingerprint hashes at a time
_ATEXT = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+"
_ADDRESS = re.compile(
    rf"{_ATEXT}(?:\.{_ATEXT})*@(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z]{{2,63}}"
)
_NAME_ADDR = re.compile(
    r'(?P<name>\s*"(?:[^"\\]|\\.)*"\s*|[^"(),:;<>@\[\]\\]*)<(?P<addr>[^<>]*)>\s*'
    r"(?:\([^()<>@\\]*\)\s*)?"
)
_BARE_ADDR = re.compile(r'(?P<addr>[^\s<>()",;:\\]+)\s*(?:\((?P<name>[^()<>@\\]*)\)\s*)?')
# One token of an address-list: a quoted string, a comment, an angle address, a run of other
# characters, or one character. An unclosed quote or comment runs to the end, and nothing is
# given back (possessive loops), so tokenizing is linear for any input.
_LIST_ITEM = re.compile(r'"(?:[^"\\]|\\.?)*+"?|\((?:[^()\\]|\\.?)*+\)?|<[^<>]*>|[^,"(<]+|.', re.S)
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# Trace fields, which each delivery adds or changes: not part of a fingerprint without Message-ID.
_TRACE = re.compile(
    rb"(?i)(?:received|delivered-to|return-path|x-original-to|authentication-results)[ \t]*:"
    rb"|(?:dkim|arc)-[!-9;-~]*[ \t]*:"
)


class ParseError(Exception):
    """The message cannot be turned into a report; `reason` says why, without its content.
    `limit` is the `[limits]` key it exceeded (e.g. "parts", "message_bytes"), or None."""

    def __init__(self, reason: str, limit: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.limit = limit


def split_raw(raw: bytes) -> tuple[bytes, bytes]:
    """The header block and the body of a raw message, split at the first empty line."""
    end, start = _body_split(raw)
    return raw[:end], raw[start:]


def _body_split(raw: bytes) -> tuple[int, int]:
    """Where the header block of a raw message ends and its body starts (the first empty line
    between them); (len, len) when there is none."""
    match = re.search(rb"\r?\n\r?\n", raw)
    return (match.start(), match.end()) if match else (len(raw), len(raw))


def content_fingerprint(raw: bytes) -> str:
    """What makes two deliveries the same message. With a Message-ID: the ID plus a hash of the
    body, so two different mails sharing an ID are not merged. Without one: a hash of the whole
    message but its trace fields (Received, Delivered-To, Return-Path, X-Original-To, DKIM-*,
    ARC-*, Authentication-Results), so two different mails are never merged while the same mail
    delivered twice is. Line endings (CRLF, LF) do not count. The body is hashed where it lies,
    a chunk at a time: no copy of a large message is made."""
    end, start = _body_split(raw)
    headers = raw[:end].replace(b"\r\n", b"\n")
    found = re.search(rb"(?im)^message-id:[ \t]*(.*(?:\n[ \t].*)*)", headers)
    message_id = b" ".join(found.group(1).split()) if found else b""
    content = hashlib.sha256()
    if not message_id:
        content.update(b"\n".join(_untraced_fields(headers)) + b"\n\n")
    _with_lf(content.update, raw, start)
    return hashlib.sha256(message_id + b"\0" + content.hexdigest().encode()).hexdigest()


def _with_lf(update: Callable[[bytes], None], raw: bytes, start: int) -> None:
    """Hand `raw[start:]` to `update` with each CRLF as LF, a chunk at a time (a CR that ends a
    chunk waits for the next, where it may start a CRLF)."""
    carried = b""
    for position in range(start, len(raw), FINGERPRINT_CHUNK_BYTES):
        chunk = carried + raw[position : position + FINGERPRINT_CHUNK_BYTES]
        chunk, carried = (chunk[:-1], b"\r") if chunk.endswith(b"\r") else (chunk, b"")
        update(chunk.replace(b"\r\n", b"\n"))
    update(carried)


def _untraced_fields(headers: bytes) -> list[bytes]:
    """The fields of an LF-ended header block (folded lines kept with their field) without the
    trace fields that each delivery adds or changes."""
    fields: list[bytes] = []
    for line in headers.split(b"\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += b"\n" + line
        else:
            fields.append(line)
    return [field for field in fields if not _TRACE.match(field)]


def strict_address(value: str) -> str | None:
    """One plain ASCII addr-spec (dot-atom local part, a domain with a TLD), lower-cased, or None.
    Refuses anything an address parser would have to guess at, and encoded words."""
    candidate = value.strip().lower()
    if len(candidate) > 254 or "=?" in candidate:
        return None
    return candidate if _ADDRESS.fullmatch(candidate) else None


# --- addresses and dates ---------------------------------------------------------------------


def _display_name(raw: str) -> str:
    raw = raw.strip()
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
    return lenient_text(raw)


def mailbox(value: str) -> tuple[str | None, str | None]:
    """One plain mailbox (`a@b.example`, `Name <a@b.example>`, `a@b.example (Name)`) as
    (display name, address); (None, None) for anything ambiguous: several or quoted addresses,
    groups, control characters, or a display name that decodes to an address."""
    value = value.strip()
    if value.count("@") != 1 or _CONTROL.search(value):
        return None, None
    found = _NAME_ADDR.fullmatch(value) or _BARE_ADDR.fullmatch(value)
    address = strict_address(found["addr"]) if found else None
    if found is None or address is None:
        return None, None
    name = _display_name(found["name"] or "")
    if any(char in name for char in "@<>"):  # an encoded word hiding another address
        return None, None
    return name or None, address


def _sender(msg: Message) -> tuple[str | None, str | None]:
    values = raw_values(msg, "From")
    if len(values) != 1:  # none, or several From fields: trust none of them
        return None, None
    return mailbox(values[0])


def _split_list(value: str) -> Iterator[str]:
    """An address-list split at the commas outside quotes, comments and angle brackets."""
    item: list[str] = []
    for token in _LIST_ITEM.findall(value):
        if token == ",":
            yield "".join(item)
            item = []
        else:
            item.append(token)
    yield "".join(item)


def _recipients(msg: Message) -> list[str]:
    found: list[str] = []
    for name in ("To", "Cc", "Delivered-To", "X-Original-To"):
        for value in raw_values(msg, name):
            for item in _split_list(value):
                address = mailbox(item)[1]
                if address and address not in found:
                    found.append(address)
                if len(found) >= MAX_RECIPIENTS:
                    return found
    return found


def _message_id(msg: Message) -> str | None:
    values = raw_values(msg, "Message-ID")
    return clean_header(octets_as_text(values[0])) or None if values else None


def _date(msg: Message) -> datetime | None:
    values = raw_values(msg, "Date")
    if not values or not safe_to_parse("Date", values[0]):
        return None
    try:
        moment = getattr(msg["Date"], "datetime", None)
    except Exception:
        return None
    return moment if isinstance(moment, datetime) else None


# --- entry points -----------------------------------------------------------------------------


def read_message(raw: bytes, *, limits: LimitsConfig = DEFAULT_LIMITS) -> EmailMessage:
    """The raw bytes as an EmailMessage, or ParseError for input that is not a message at all
    or exceeds a limit (checked on the raw bytes first, so bombs never reach the parser)."""
    deadline = Deadline(limits)
    try:
        if len(raw) > limits.message_bytes:
            raise exceeded("message_bytes", limits)
        if not raw or raw.isspace():  # (strip() would copy it)
            raise ParseError("the message is empty")
        policy = guarded_policy()
        shape = prescan(raw, limits, deadline, policy)
        try:
            msg = parse_bytes(raw, shape, policy)
        except Exception as exc:  # RecursionError, UnsafeHeader, the parser's own bugs
            reason = f"the message could not be read as email ({type(exc).__name__})"
            raise ParseError(reason) from None
        if not msg.keys():
            raise ParseError("the message has no headers")
        for _part in walk(msg, limits, deadline):
            pass
        deadline.check()
    except Refused as exc:
        raise ParseError(exc.reason, exc.limit) from None
    return msg  # type: ignore[return-value]


def parse_email(
    raw: bytes,
    received_at: datetime,
    *,
    limits: LimitsConfig = DEFAULT_LIMITS,
    acks: AckPolicy = MESSAGE_ONLY,
) -> Report:
    """A `Report` from raw RFC 5322 bytes (sender as given; anonymity is applied afterwards)."""
    msg = read_message(raw, limits=limits)
    return report_from_message(msg, received_at, limits=limits, acks=acks)


def report_from_message(
    msg: Message,
    received_at: datetime,
    *,
    limits: LimitsConfig = DEFAULT_LIMITS,
    acks: AckPolicy = MESSAGE_ONLY,
) -> Report:
    """A `Report` from a parsed message, or ParseError when it cannot be read within limits.
    `ack_address` is the sender when `acks` lets an acknowledgement go to them, else None."""
    try:
        return _report(msg, received_at, limits, Deadline(limits), acks)
    except Refused as exc:
        raise ParseError(exc.reason, exc.limit) from None
    except (RecursionError, MemoryError):
        raise ParseError("the message is nested too deeply to read") from None
    except ParseError:
        raise
    except Exception as exc:  # whatever the email package raises: quarantine, never crash
        raise ParseError(f"the message body could not be read ({type(exc).__name__})") from None


def report_from_headers(
    raw: bytes,
    received_at: datetime,
    *,
    limits: LimitsConfig = DEFAULT_LIMITS,
    acks: AckPolicy = MESSAGE_ONLY,
) -> Report | None:
    """A body-less `Report` (sender, acknowledgement address, recipients, subject) from the top
    header block alone: for telling a sender that their message was refused by a limit. None
    when the header block itself cannot be read within the limits."""
    prefix = raw[:HEADER_BLOCK_BYTES]
    end = re.search(rb"\r?\n\r?\n", prefix)
    if end is None and len(raw) > len(prefix):
        return None  # the header block does not end within reach
    headers = prefix[: end.start()] if end else prefix
    try:
        msg = read_message(headers, limits=limits)
        return report_from_message(msg, received_at, limits=limits, acks=acks)
    except ParseError:
        return None


def _report(
    msg: Message, received_at: datetime, limits: LimitsConfig, deadline: Deadline, acks: AckPolicy
) -> Report:
    for _part in walk(msg, limits, deadline):  # within the limits before anything is read
        pass
    contents = read_contents(msg, limits, deadline)
    name, address = _sender(msg)
    subject = header(msg, "Subject") or ""
    report = Report(
        source="email",
        subject=subject,
        body=contents.body,
        received_at=received_at,
        sender_name=name,
        sender_address=address,
        to_addresses=_recipients(msg),
        message_id=_message_id(msg),
        sent_at=_date(msg),
        attachments=contents.attachments,
        attachment_notes=contents.notes,
        forwarded=contents.forwarded,
    )
    if acks.blocked_reason(msg, address, subject) is None:
        report.ack_address = address
    deadline.check()
    return report
