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

import binascii
import codecs
import hashlib
import html
import re
from collections.abc import Iterator
from datetime import datetime
from email.message import EmailMessage, Message
from email.parser import BytesParser

from pipeline.config import LimitsConfig
from pipeline.limits import (
    Deadline,
    Refused,
    exceeded,
    guarded_policy,
    prescan,
    safe_to_parse,
    walk,
)
from pipeline.report import Attachment, Report

DEFAULT_LIMITS = LimitsConfig()
MAX_RECIPIENTS = 100  # addresses read from To/Cc/Delivered-To/X-Original-To
HEADER_BLOCK_BYTES = 1024 * 1024  # how far report_from_headers looks for the end of the headers
_NO_ACK_LOCALPARTS = {"mailer-daemon", "postmaster", "noreply", "no-reply", "donotreply"}
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
_ENCODED_WORD = re.compile(r"=\?([^?\s]{1,64})\?([qQbB])\?([^?\s]*)\?=")
_MIME_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")
_HTML_TOKEN = re.compile(
    r"<!--.*?(?:-->|\Z)"  # a comment; an unclosed one runs to the end, as in a browser
    r"|<(script|style|head|title|noscript|template)\b[^<>]*>.*?(?:</\1\s*>|\Z)"
    r"|</?([a-z][a-z0-9]*)\b[^<>]*>"  # a tag: only line breaks are kept
    r"|<[!?][^<>]*>",  # doctype, CDATA, processing instruction
    re.S | re.I,
)
#: Codecs written in Python with quadratic decoders: never run on sender-sized data.
_SLOW_CODECS = frozenset({"punycode", "idna"})
_SLOW_WORD = re.compile(r"=\?(?:punycode|idna)[?*]", re.I)  # left to our own decoder
_HTML_BREAKS = frozenset({"br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "blockquote"})


class ParseError(Exception):
    """The message cannot be turned into a report; `reason` says why, without its content.
    `limit` is the `[limits]` key it exceeded (e.g. "parts", "message_bytes"), or None."""

    def __init__(self, reason: str, limit: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.limit = limit


def html_to_text(text: str) -> str:
    """HTML to plain text: visible text only, no scripts, styles or remote resources.

    A tokenizer of bounded regular expressions, linear in the input: `html.parser` in CPython
    3.11 takes minutes on a few hundred KB of unclosed tags.
    """
    pieces: list[str] = []
    position = 0
    for token in _HTML_TOKEN.finditer(text):
        pieces.append(html.unescape(text[position : token.start()]))
        if (token.group(2) or "").lower() in _HTML_BREAKS:
            pieces.append("\n")
        position = token.end()
    pieces.append(html.unescape(text[position:]))
    joined = re.sub(r"[ \t\r\f\v]+", " ", "".join(pieces))
    return re.sub(r"\n\s*\n\s*", "\n\n", joined).strip()


def decode_text(data: bytes, charset: str | None) -> str:
    """Bytes in the charset a sender named, as text. An unknown charset, a codec that is not a
    text encoding (rot13, base64) or a slow one (punycode: minutes for 1 MB) reads as UTF-8."""
    try:
        codec = codecs.lookup(charset or "utf-8")
    except (LookupError, ValueError, TypeError):
        codec = codecs.lookup("utf-8")
    if not getattr(codec, "_is_text_encoding", True) or codec.name in _SLOW_CODECS:
        codec = codecs.lookup("utf-8")
    try:
        return data.decode(codec.name, "replace")
    except Exception:  # a codec that fails even with errors="replace"
        return data.decode("utf-8", "replace")


def split_raw(raw: bytes) -> tuple[bytes, bytes]:
    """The header block and the body of a raw message, split at the first empty line."""
    match = re.search(rb"\r?\n\r?\n", raw)
    if match is None:
        return raw, b""
    return raw[: match.start()], raw[match.end() :]


def content_fingerprint(raw: bytes) -> str:
    """Message-ID plus a hash of the body: the same mail re-delivered (new Received headers) has
    the same fingerprint, while two different mails sharing a Message-ID do not."""
    headers, body = split_raw(raw)
    found = re.search(rb"(?im)^message-id:[ \t]*(.*(?:\r?\n[ \t].*)*)", headers)
    message_id = found.group(1).strip() if found else b""
    body_hash = hashlib.sha256(body.replace(b"\r\n", b"\n")).hexdigest()
    return hashlib.sha256(message_id + b"\0" + body_hash.encode()).hexdigest()


def clean_header(value: object) -> str:
    """A header value as one line of text, with no control characters."""
    return re.sub(r"[\x00-\x1f\x7f]+", " ", str(value)).strip()


def strict_address(value: str) -> str | None:
    """One plain ASCII addr-spec (dot-atom local part, a domain with a TLD), lower-cased, or None.
    Refuses anything an address parser would have to guess at, and encoded words."""
    candidate = value.strip().lower()
    if len(candidate) > 254 or "=?" in candidate:
        return None
    return candidate if _ADDRESS.fullmatch(candidate) else None


# --- header fields, read leniently ------------------------------------------------------------


def _raw_values(msg: Message, name: str) -> list[str]:
    """Every `name` field as received (unfolded), without the header registry."""
    wanted = name.lower()
    return [
        re.sub(r"[\r\n]", "", str(value)).strip()
        for key, value in msg.raw_items()
        if str(key).lower() == wanted
    ]


def _decode_word(found: re.Match[str]) -> str:
    charset, kind, data = found.groups()
    try:
        if kind in "bB":
            octets = binascii.a2b_base64(data + "=" * (-len(data) % 4))
        else:
            octets = binascii.a2b_qp(data.encode("ascii", "replace"), header=True)
    except (binascii.Error, ValueError):
        return found.group(0)
    return decode_text(octets, charset.split("*")[0])


def _octets_as_text(value: str) -> str:
    """A raw header value (the parser keeps 8-bit bytes as surrogates) with 8-bit read as UTF-8."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def lenient_text(value: str) -> str:
    """A raw header value as one line of text: 8-bit bytes read as UTF-8, encoded words decoded
    where they can be, unknown charsets read as UTF-8."""
    text = re.sub(r"(\?=)\s+(?==\?)", r"\1", _octets_as_text(value))  # adjacent encoded words
    return clean_header(_ENCODED_WORD.sub(_decode_word, text))


def _header(msg: Message, name: str) -> str | None:
    """The first `name` field as one line of text, or None when absent."""
    values = _raw_values(msg, name)
    if not values:
        return None
    if safe_to_parse(name, values[0]) and not _SLOW_WORD.search(values[0]):
        try:
            return clean_header(msg[name])
        except Exception:  # the header registry's IndexError, LookupError, RecursionError ...
            pass
    return lenient_text(values[0])


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
    values = _raw_values(msg, "From")
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
        for value in _raw_values(msg, name):
            for item in _split_list(value):
                address = mailbox(item)[1]
                if address and address not in found:
                    found.append(address)
                if len(found) >= MAX_RECIPIENTS:
                    return found
    return found


def _message_id(msg: Message) -> str | None:
    values = _raw_values(msg, "Message-ID")
    return clean_header(_octets_as_text(values[0])) or None if values else None


def _date(msg: Message) -> datetime | None:
    values = _raw_values(msg, "Date")
    if not values or not safe_to_parse("Date", values[0]):
        return None
    try:
        moment = getattr(msg["Date"], "datetime", None)
    except Exception:
        return None
    return moment if isinstance(moment, datetime) else None


def ack_blocked_reason(msg: Message, sender: str | None) -> str | None:
    """Why no acknowledgement may go to this message's sender (loops, bulk mail), or None."""
    auto = (_header(msg, "Auto-Submitted") or "no").lower()
    if auto != "no":
        return "auto-submitted"
    if (_header(msg, "Precedence") or "").lower() in {"bulk", "list", "junk"}:
        return "bulk or list mail"
    if _raw_values(msg, "List-Id") or _raw_values(msg, "List-Unsubscribe"):
        return "mailing-list mail"
    if sender is None:
        return "no usable sender address"
    if sender.split("@")[0] in _NO_ACK_LOCALPARTS:
        return "the sender does not take replies"
    return None


# --- MIME parts, within the limits ------------------------------------------------------------


def _content_type(part: Message) -> str:
    try:
        ctype = part.get_content_type()
    except Exception:  # unreadable: treated as opaque data, never as the body
        return "application/octet-stream"
    return ctype if _MIME_TYPE.fullmatch(ctype) else "application/octet-stream"


def _disposition(part: Message) -> str | None:
    try:
        return part.get_content_disposition()
    except Exception:
        return None


def _filename(part: Message) -> str | None:
    try:
        name = part.get_filename()
    except Exception:
        return None
    name = clean_header(name or "").replace("/", "_").replace("\\", "_")
    return name[:255] or None


def _payload(part: Message) -> bytes:
    try:
        data = part.get_payload(decode=True)
    except Exception:
        return b""
    return data if isinstance(data, bytes) else b""


def _text_of(part: Message) -> str:
    try:
        charset = part.get_content_charset()
    except Exception:
        charset = None
    return decode_text(_payload(part), charset)


def _body_part(msg: Message) -> Message | None:
    """The text a person wrote, as `EmailMessage.get_body(("plain", "html"))` finds it, with
    lenient header reads: attachments and attached messages are not entered."""
    best, best_rank = None, 2
    stack = [msg]
    while stack:
        part = stack.pop()
        if _disposition(part) == "attachment":
            continue
        maintype, _, subtype = _content_type(part).partition("/")
        if maintype == "text" and subtype in ("plain", "html"):
            rank = ("plain", "html").index(subtype)
            if rank < best_rank:
                best, best_rank = part, rank
            if rank == 0:
                break
        elif maintype == "multipart" and part.is_multipart():
            children = [child for child in part.get_payload() if isinstance(child, Message)]
            stack.extend(reversed(children[:1] if subtype == "related" else children))
    return best


def _body(msg: Message) -> tuple[str, Message | None]:
    part = _body_part(msg)
    if part is None:
        return "", None
    text = _text_of(part)
    if _content_type(part) == "text/html":
        text = html_to_text(text)
    return text.strip(), part


def _attachments(
    parts: list[Message], body_part: Message | None, limits: LimitsConfig, deadline: Deadline
) -> list[Attachment]:
    found: list[Attachment] = []
    for part in parts:
        if part.is_multipart() or part is body_part:
            continue
        filename, ctype = _filename(part), _content_type(part)
        if ctype.startswith("text/") and not filename and _disposition(part) != "attachment":
            continue  # an alternative of the body, not an attachment
        if len(found) >= limits.attachments:
            raise exceeded("attachments", limits)
        name = filename or f"attachment-{len(found) + 1}"
        found.append(Attachment(name, ctype, _payload(part)))
        deadline.check()
    return found


# --- entry points -----------------------------------------------------------------------------


def read_message(raw: bytes, *, limits: LimitsConfig = DEFAULT_LIMITS) -> EmailMessage:
    """The raw bytes as an EmailMessage, or ParseError for input that is not a message at all
    or exceeds a limit (checked on the raw bytes first, so bombs never reach the parser)."""
    deadline = Deadline(limits)
    try:
        if len(raw) > limits.message_bytes:
            raise exceeded("message_bytes", limits)
        if not raw.strip():
            raise ParseError("the message is empty")
        policy = guarded_policy()
        prescan(raw, limits, deadline, policy)
        try:
            msg = BytesParser(policy=policy).parsebytes(raw)
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
    raw: bytes, received_at: datetime, *, limits: LimitsConfig = DEFAULT_LIMITS
) -> Report:
    """A `Report` from raw RFC 5322 bytes (sender as given; anonymity is applied afterwards)."""
    return report_from_message(read_message(raw, limits=limits), received_at, limits=limits)


def report_from_message(
    msg: Message, received_at: datetime, *, limits: LimitsConfig = DEFAULT_LIMITS
) -> Report:
    """A `Report` from a parsed message, or ParseError when it cannot be read within limits."""
    try:
        return _report(msg, received_at, limits, Deadline(limits))
    except Refused as exc:
        raise ParseError(exc.reason, exc.limit) from None
    except (RecursionError, MemoryError):
        raise ParseError("the message is nested too deeply to read") from None
    except ParseError:
        raise
    except Exception as exc:  # whatever the email package raises: quarantine, never crash
        raise ParseError(f"the message body could not be read ({type(exc).__name__})") from None


def report_from_headers(
    raw: bytes, received_at: datetime, *, limits: LimitsConfig = DEFAULT_LIMITS
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
        return report_from_message(msg, received_at, limits=limits)
    except ParseError:
        return None


def _report(
    msg: Message, received_at: datetime, limits: LimitsConfig, deadline: Deadline
) -> Report:
    parts = list(walk(msg, limits, deadline))
    body, body_part = _body(msg)
    deadline.check()
    attachments = _attachments(parts, body_part, limits, deadline)
    name, address = _sender(msg)
    report = Report(
        source="email",
        subject=_header(msg, "Subject") or "",
        body=body,
        received_at=received_at,
        sender_name=name,
        sender_address=address,
        to_addresses=_recipients(msg),
        message_id=_message_id(msg),
        sent_at=_date(msg),
        attachments=attachments,
    )
    if ack_blocked_reason(msg, address) is None:
        report.ack_address = address
    deadline.check()
    return report
