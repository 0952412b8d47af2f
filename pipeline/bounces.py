"""Bounces: a parsed `EmailMessage` in, a `Bounce` naming the outbox mail it refers to out, or None.

The intake mailbox receives delivery status notifications about the mail the daemon sent
(referrals, acknowledgements). They are recorded against the outbox message and never become
reports. Two shapes are recognised:

- RFC 3464 DSNs: a `message/delivery-status` part (Postfix, Exchange, Gmail, delay notices) in
  the message's own MIME tree, sent by a mailer (null `Return-Path`, or a mailer-daemon,
  postmaster or Exchange system address). The original's Message-ID comes from a `message/rfc822`
  or `text/rfc822-headers` part; `Original-Envelope-Id` is not a Message-ID and is ignored.
- Plain-text bounces without a DSN part (qmail, old Exim): only from a mailer, and only when a
  Message-ID of the original can be found in the quoted headers or an attached original.

A `Bounce` names the recipients it is about (DSN `Final-Recipient` / `Original-Recipient`, or
the failed addresses of a plain-text bounce): the store changes an outbox mail only when both its
Message-ID and its recipient match, so a forged bounce for a Message-ID alone changes nothing.

Only the message's own parts are read: a bounce forwarded by a person inside a `message/rfc822`
attachment is never entered, so it stays a report. Pure: no I/O, no logging, and for any input the
answer is a `Bounce` or None, never an exception.
"""

from __future__ import annotations

import base64
import binascii
import quopri
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage, Message
from email.utils import collapse_rfc2231_value, parseaddr

MAX_DEPTH = 10  # multipart levels read below the top; deeper parts are ignored
MAX_PARTS = 200  # parts read in one message; the rest are ignored
MAX_TEXT_CHARS = 1_000_000  # characters of one text part searched for quoted headers

_ACTIONS = frozenset({"failed", "delayed", "delivered", "relayed", "expanded"})
_DAEMON_LOCALPARTS = frozenset({"mailer-daemon", "mailer_daemon", "mailerdaemon", "mail-daemon"})
_EXCHANGE_SYSTEM_PREFIX = "microsoftexchange"  # MicrosoftExchange329e71ec…@ sends Exchange NDRs
_STATUS_PARTS = frozenset({"message/delivery-status", "message/global-delivery-status"})
_ORIGINAL_MESSAGE_PARTS = frozenset({"message/rfc822", "message/global", "message/global-headers"})
_ORIGINAL_HEADER_PARTS = frozenset({"text/rfc822-headers"})

_ANGLED_ID = re.compile(r"<[^<>\s]+>")
_BARE_ID = re.compile(r"^[^<>\s@]+@[^<>\s@]+$")
_STATUS_CODE = re.compile(r"(?<![\w.])([245]\.\d{1,3}\.\d{1,3})(?!\w|\.\d)")
_TEXT_CODE_AFTER_REPLY = re.compile(r"(?<!\d)[45]\d\d[ -]([45]\.\d{1,3}\.\d{1,3})(?!\w|\.\d)")
_TEXT_CODE = re.compile(r"(?<![\w.])([45]\.\d{1,3}\.\d{1,3})(?!\w|\.\d)")
_QUOTED_MESSAGE_ID = re.compile(r"(?im)^[ \t>]*message-id:[ \t]*(?:\r?\n[ \t]+)?(<[^<>\s]+>)")
_QUOTED_ORIGINAL_START = re.compile(
    r"(?im)^[ \t>]*(?:received|return-path|message-id|dkim-signature):"
    r"|^.*(?:copy of the (?:original )?message|original message|below this line).*$"
)
_DELAY_SUBJECT = re.compile(r"(?i)\bdelay")
_ADDRESS = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})+"
)
MAX_RECIPIENTS = 50  # addresses one bounce may name


@dataclass(frozen=True)
class Bounce:
    """A delivery status notification about mail we sent."""

    message_ids: tuple[str, ...]  # Message-IDs (with angle brackets) of the original mail(s)
    permanent: bool  # True for a failure (5.x.x / failed), False for delayed, delivered, …
    status: str | None  # the RFC 3464 Status code, e.g. "5.1.1", when given
    action: str | None  # "failed" | "delayed" | "delivered" | "relayed" | "expanded" when given
    # The addresses it is about (lower-case): a DSN's Final-Recipient / Original-Recipient of the
    # recipients that decide it, or the failed addresses a plain-text bounce names.
    recipients: tuple[str, ...] = ()


def recognise_bounce(msg: EmailMessage) -> Bounce | None:
    """The `Bounce` this message is, or None for anything else (reports, auto-replies, receipts).

    Never raises: a message too broken to read is not recognised as a bounce.
    """
    try:
        return _recognise(msg)
    except Exception:  # malformed input of any kind: not a bounce we can stand behind
        return None


def _recognise(msg: Message) -> Bounce | None:
    if not isinstance(msg, Message) or _is_other_report(msg):
        return None
    parts = list(_own_parts(msg))
    status_parts = [part for part in parts if _content_type(part) in _STATUS_PARTS]
    if status_parts:
        if not _sent_by_mailer(msg, trust_postmaster=True):
            return None
        return _dsn_bounce(msg, status_parts, _original_ids(parts))
    if not _sent_by_mailer(msg, trust_postmaster=False):
        return None
    return _text_bounce(msg, parts)


# --- the message's own structure -------------------------------------------------------------


def _content_type(part: Message) -> str:
    try:
        return part.get_content_type()
    except Exception:  # an unreadable Content-Type is treated as plain text, as RFC 2045 says
        return "text/plain"


def _is_other_report(msg: Message) -> bool:
    """A multipart/report that declares itself something else: read receipt, abuse report, …"""
    if _content_type(msg) != "multipart/report":
        return False
    value = msg.get_param("report-type", header="content-type")
    if value is None:
        return False
    report_type = collapse_rfc2231_value(value) if isinstance(value, tuple) else str(value)
    return report_type.strip().lower() != "delivery-status"


def _own_parts(msg: Message) -> Iterator[Message]:
    """The message and its MIME parts, without entering attached messages (forwards)."""
    stack: list[tuple[Message, int]] = [(msg, 0)]
    seen = 0
    while stack and seen < MAX_PARTS:
        part, depth = stack.pop()
        seen += 1
        yield part
        if depth >= MAX_DEPTH or not _content_type(part).startswith("multipart/"):
            continue
        payload = part.get_payload()
        if isinstance(payload, list):
            children = [child for child in payload if isinstance(child, Message)]
            stack.extend((child, depth + 1) for child in reversed(children))


def _raw_header(msg: Message, name: str) -> str | None:
    """The first `name` header as received, unfolded, without the policy's parsing."""
    wanted = name.lower()
    for key, value in msg.raw_items():
        if str(key).lower() == wanted:
            return re.sub(r"\r?\n[ \t]*", " ", str(value)).strip()
    return None


def _message_id_in(value: str) -> str | None:
    found = _ANGLED_ID.search(value)
    if found:
        return found.group(0)
    bare = value.strip()
    return f"<{bare}>" if _BARE_ID.match(bare) else None


def _part_text(part: Message) -> str:
    """A leaf part's text, decoded leniently; an unknown charset falls back to UTF-8."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, "replace")
    except (LookupError, UnicodeError):
        return payload.decode("utf-8", "replace")


# --- who sent it -----------------------------------------------------------------------------


def _sent_by_mailer(msg: Message, *, trust_postmaster: bool) -> bool:
    """Whether the sender is mail software rather than a person.

    A null envelope sender (`Return-Path: <>`) or a mailer-daemon address counts. `postmaster@`
    is also a mailbox people write from, so for plain-text bounces it counts only when no real
    envelope sender contradicts it; a null envelope sender with `Auto-Submitted: auto-replied`
    and a personal address is a vacation reply, not a bounce.
    """
    return_path = _raw_header(msg, "Return-Path")
    null_envelope = return_path is not None and return_path.replace(" ", "") == "<>"
    localpart = _from_localpart(msg)
    if localpart in _DAEMON_LOCALPARTS or localpart.startswith(_EXCHANGE_SYSTEM_PREFIX):
        return True
    if localpart == "postmaster" and (trust_postmaster or return_path is None or null_envelope):
        return True
    if not null_envelope:
        return False
    auto_submitted = (_raw_header(msg, "Auto-Submitted") or "no").lower()
    return trust_postmaster or not auto_submitted.startswith("auto-replied")


def _from_localpart(msg: Message) -> str:
    raw_from = _raw_header(msg, "From") or ""
    address = parseaddr(raw_from)[1] or raw_from
    return address.rpartition("@")[0].strip().lower() if "@" in address else address.lower()


# --- RFC 3464 DSNs ---------------------------------------------------------------------------


def _dsn_bounce(msg: Message, status_parts: list[Message], ids: tuple[str, ...]) -> Bounce:
    groups = [
        group
        for part in status_parts
        for group in _field_groups(_status_text(part))
        if "action" in group or "status" in group
    ]
    failed = [g for g in groups if _is_failure(_action_of(g), _status_of(g))]
    delayed = [g for g in groups if _is_delay(_action_of(g), _status_of(g))]
    if groups:
        deciding = failed or delayed or groups
        first = deciding[0]
        return Bounce(
            ids,
            permanent=bool(failed),
            status=_status_of(first),
            action=_action_of(first),
            recipients=_unique(a for g in deciding for a in _group_recipients(g)),
        )
    # A DSN without readable per-recipient fields: still a bounce, judged by its subject.
    return Bounce(ids, permanent=not _subject_says_delay(msg), status=None, action=None)


def _group_recipients(group: dict[str, str]) -> list[str]:
    """Final-Recipient and Original-Recipient (`rfc822; addr`) of one DSN field group."""
    found = []
    for name in ("final-recipient", "original-recipient"):
        value = group.get(name, "")
        address = value.partition(";")[2] if ";" in value else value
        match = _ADDRESS.search(address[:1000])
        if match:
            found.append(match.group(0).lower())
    return found


def _unique(addresses: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(addresses))[:MAX_RECIPIENTS]


def _status_text(part: Message) -> str:
    """The body of a delivery-status part as text, whatever the parser made of it."""
    payload = part.get_payload()
    pieces: list[str] = []
    for block in payload if isinstance(payload, list) else [payload]:
        if isinstance(block, Message):
            pieces.append("\n".join(f"{key}: {value}" for key, value in block.raw_items()))
            inner = block.get_payload()
            pieces.append(inner if isinstance(inner, str) else "")
        elif isinstance(block, str):
            pieces.append(block)
    text = "\n\n".join(pieces)
    encoding = (_raw_header(part, "Content-Transfer-Encoding") or "").lower()
    try:
        if encoding == "base64":
            data = base64.b64decode(text.encode("ascii", "ignore"))
            return data.decode("utf-8", "replace")
        if encoding == "quoted-printable":
            return quopri.decodestring(text.encode("utf-8", "replace")).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return ""
    return text


def _field_groups(text: str) -> list[dict[str, str]]:
    """RFC 3464 field groups: blocks of `Name: value` lines separated by blank lines."""
    groups: list[dict[str, str]] = []
    for block in re.split(r"\r?\n[ \t]*\r?\n", text):
        unfolded = re.sub(r"\r?\n[ \t]+", " ", block)
        fields: dict[str, str] = {}
        for line in unfolded.splitlines():
            name, colon, value = line.partition(":")
            if colon and name.strip():
                fields.setdefault(name.strip().lower(), value.strip())
        if fields:
            groups.append(fields)
    return groups


def _action_of(group: dict[str, str]) -> str | None:
    words = group.get("action", "").lower().split()
    return words[0] if words and words[0] in _ACTIONS else None


def _status_of(group: dict[str, str]) -> str | None:
    found = _STATUS_CODE.search(group.get("status", ""))
    return found.group(1) if found else None


def _is_failure(action: str | None, status: str | None) -> bool:
    if action is not None:
        return action == "failed"
    return status is not None and status.startswith("5")


def _is_delay(action: str | None, status: str | None) -> bool:
    if action is not None:
        return action == "delayed"
    return status is not None and status.startswith("4")


def _subject_says_delay(msg: Message) -> bool:
    return bool(_DELAY_SUBJECT.search(_raw_header(msg, "Subject") or ""))


def _original_ids(parts: list[Message]) -> tuple[str, ...]:
    """Message-IDs of returned originals (`message/rfc822`, `text/rfc822-headers`), in order."""
    found: list[str] = []
    for part in parts:
        kind = _content_type(part)
        message_id: str | None = None
        if kind in _ORIGINAL_MESSAGE_PARTS:
            message_id = _attached_message_id(part)
        elif kind in _ORIGINAL_HEADER_PARTS:
            header_block = re.split(r"\r?\n[ \t]*\r?\n", _part_text(part), maxsplit=1)[0]
            quoted = _QUOTED_MESSAGE_ID.search(header_block)
            message_id = quoted.group(1) if quoted else None
        if message_id and message_id not in found:
            found.append(message_id)
    return tuple(found)


def _attached_message_id(part: Message) -> str | None:
    payload = part.get_payload()
    if isinstance(payload, list):
        original = next((item for item in payload if isinstance(item, Message)), None)
        value = _raw_header(original, "Message-ID") if original is not None else None
        return _message_id_in(value) if value else None
    if isinstance(payload, str):  # an encoded original the parser did not open
        quoted = _QUOTED_MESSAGE_ID.search(_part_text(part)[:MAX_TEXT_CHARS])
        return quoted.group(1) if quoted else None
    return None


# --- plain-text bounces ----------------------------------------------------------------------


def _text_bounce(msg: Message, parts: list[Message]) -> Bounce | None:
    """qmail/Exim-style: an explanation, then the original's headers quoted in the text."""
    ids = list(_original_ids(parts))
    explanation = _raw_header(msg, "X-Failed-Recipients") or ""
    for part in parts:
        if _content_type(part) != "text/plain":
            continue
        text = _part_text(part)[:MAX_TEXT_CHARS]
        start = _QUOTED_ORIGINAL_START.search(text)
        explanation += "\n" + (text[: start.start()] if start else text)
        quoted = _QUOTED_MESSAGE_ID.search(text)
        if quoted and quoted.group(1) not in ids:
            ids.append(quoted.group(1))
    if not ids:
        return None
    found = _TEXT_CODE_AFTER_REPLY.search(explanation) or _TEXT_CODE.search(explanation)
    return Bounce(
        tuple(ids),
        permanent=not _subject_says_delay(msg),
        status=found.group(1) if found else None,
        action=None,
        recipients=_unique(a.group(0).lower() for a in _ADDRESS.finditer(explanation)),
    )
