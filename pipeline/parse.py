"""Parse: raw email bytes in, a `Report` out, or a `ParseError` naming why it could not be read.

Uses Python's `email` package with `policy.default`. Never raises anything but `ParseError` for
bad input: a message it cannot read is quarantined by the caller, never dropped. The reason in a
`ParseError` names the problem, never the content.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import parseaddr
from html.parser import HTMLParser

from pipeline.report import Attachment, Report

MAX_MESSAGE_BYTES = 25 * 1024 * 1024
_NO_ACK_LOCALPARTS = {"mailer-daemon", "postmaster", "noreply", "no-reply", "donotreply"}
_ADDRESS = re.compile(r"^[^@\s<>()\[\],;:\"\\]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$")


class ParseError(Exception):
    """The message cannot be turned into a report; `reason` says why, without its content."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _TextExtractor(HTMLParser):
    """HTML to plain text: visible text only, no scripts, styles or remote resources."""

    _SKIP = frozenset({"script", "style", "head", "title", "noscript", "template"})
    _BREAK = frozenset({"br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "blockquote"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in self._BREAK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skipping = max(0, self._skipping - 1)
        elif tag in self._BREAK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    extractor = _TextExtractor()
    extractor.feed(html)
    extractor.close()
    text = "".join(extractor.parts)
    text = re.sub(r"[ \t\r\f\v]+", " ", text)
    return re.sub(r"\n\s*\n\s*", "\n\n", text).strip()


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
    """One plain addr-spec, or None. Refuses anything parseaddr would have to guess at."""
    candidate = value.strip().lower()
    return candidate if _ADDRESS.match(candidate) else None


def _header(msg: EmailMessage, name: str) -> str | None:
    try:
        value = msg[name]
    except Exception:  # a header the parser cannot decode is treated as absent
        return None
    return None if value is None else clean_header(value)


def _sender(msg: EmailMessage) -> tuple[str | None, str | None]:
    raw_from = _header(msg, "From")
    if not raw_from:
        return None, None
    if raw_from.count("@") != 1:  # several or hidden addresses: trust none of them
        return None, None
    name, address = parseaddr(raw_from)
    return (clean_header(name) or None), strict_address(address)


def _recipients(msg: EmailMessage) -> list[str]:
    found: list[str] = []
    for name in ("To", "Cc", "Delivered-To", "X-Original-To"):
        for value in msg.get_all(name, []) if _header(msg, name) else []:
            for part in str(value).split(","):
                address = strict_address(parseaddr(part)[1])
                if address and address not in found:
                    found.append(address)
    return found


def _date(msg: EmailMessage) -> datetime | None:
    try:
        value = msg["Date"]
        return getattr(value, "datetime", None) if value is not None else None
    except Exception:
        return None


def _text_of(part: EmailMessage) -> str:
    try:
        content = part.get_content()
        return content if isinstance(content, str) else content.decode("utf-8", "replace")
    except (LookupError, UnicodeError, ValueError, AssertionError):
        payload = part.get_payload(decode=True)
        return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""


def _body(msg: EmailMessage) -> tuple[str, EmailMessage | None]:
    part = msg.get_body(preferencelist=("plain", "html"))
    if part is None:
        return "", None
    text = _text_of(part)  # type: ignore[arg-type]
    if part.get_content_subtype() == "html":
        text = html_to_text(text)
    return text.strip(), part  # type: ignore[return-value]


def _attachments(msg: EmailMessage, body_part: EmailMessage | None) -> list[Attachment]:
    found: list[Attachment] = []
    for part in msg.walk():
        if part.is_multipart() or part is body_part:
            continue
        filename = part.get_filename()
        is_text_alternative = part.get_content_maintype() == "text" and not filename
        if is_text_alternative and part.get_content_disposition() != "attachment":
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        name = clean_header(filename) if filename else f"attachment-{len(found) + 1}"
        found.append(Attachment(name, part.get_content_type(), data))
    return found


def ack_blocked_reason(msg: EmailMessage, sender: str | None) -> str | None:
    """Why no acknowledgement may go to this message's sender (loops, bulk mail), or None."""
    auto = (_header(msg, "Auto-Submitted") or "no").lower()
    if auto != "no":
        return "auto-submitted"
    if (_header(msg, "Precedence") or "").lower() in {"bulk", "list", "junk"}:
        return "bulk or list mail"
    if _header(msg, "List-Id") or _header(msg, "List-Unsubscribe"):
        return "mailing-list mail"
    if sender is None:
        return "no usable sender address"
    if sender.split("@")[0] in _NO_ACK_LOCALPARTS:
        return "the sender does not take replies"
    return None


def read_message(raw: bytes) -> EmailMessage:
    """The raw bytes as an EmailMessage, or ParseError for input that is not a message at all."""
    if not raw.strip():
        raise ParseError("the message is empty")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise ParseError(f"the message is larger than the {MAX_MESSAGE_BYTES // 2**20} MB limit")
    try:
        msg = BytesParser(policy=policy.default).parsebytes(raw)
    except Exception as exc:
        raise ParseError(f"the message could not be read as email ({type(exc).__name__})") from None
    if not msg.keys():
        raise ParseError("the message has no headers")
    return msg  # type: ignore[return-value]


def parse_email(raw: bytes, received_at: datetime) -> Report:
    """A `Report` from raw RFC 5322 bytes (sender as given; anonymity is applied afterwards)."""
    return report_from_message(read_message(raw), received_at)


def report_from_message(msg: EmailMessage, received_at: datetime) -> Report:
    """A `Report` from a parsed message, or ParseError when its body cannot be read."""
    try:
        body, body_part = _body(msg)
        attachments = _attachments(msg, body_part)
    except (RecursionError, MemoryError):
        raise ParseError("the message is nested too deeply to read") from None
    except Exception as exc:
        raise ParseError(f"the message body could not be read ({type(exc).__name__})") from None
    name, address = _sender(msg)
    report = Report(
        source="email",
        subject=_header(msg, "Subject") or "",
        body=body,
        received_at=received_at,
        sender_name=name,
        sender_address=address,
        to_addresses=_recipients(msg),
        message_id=_header(msg, "Message-ID"),
        sent_at=_date(msg),
        attachments=attachments,
    )
    if ack_blocked_reason(msg, address) is None:
        report.ack_address = address
    return report
