"""Anonymity: decides whether a report is anonymous and strips what identifies its sender.

In: a parsed `Report` (and the raw original). Out: the same report with `anonymous` set and,
when anonymous, no sender name, address or Message-ID; and a raw original whose identifying
headers (From, Sender, Reply-To, Return-Path, Received, X-Originating-IP, DKIM/ARC, User-Agent,
Message-ID...) are removed before it is encrypted and stored. The acknowledgement address
survives only in memory, for one acknowledgement if the rules ask for it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace
from pathlib import PurePath

from pipeline.clean import clean_attachment
from pipeline.parse import split_raw
from pipeline.report import Attachment, Report

IDENTIFYING_HEADERS = frozenset(
    {
        "from",
        "sender",
        "reply-to",
        "return-path",
        "received",
        "x-originating-ip",
        "x-sender-ip",
        "x-forwarded-for",
        "message-id",
        "in-reply-to",
        "references",
        "dkim-signature",
        "arc-seal",
        "arc-message-signature",
        "arc-authentication-results",
        "authentication-results",
        "received-spf",
        "user-agent",
        "x-mailer",
        "x-original-from",
        "x-envelope-from",
        "x-google-smtp-source",
        "x-ms-exchange-organization-authas",
        "thread-index",
    }
)


def _base_address(address: str) -> str:
    """`report+anonymous@x` → `report@x` (plus-addressing)."""
    local, _, domain = address.partition("@")
    return f"{local.split('+', 1)[0]}@{domain}"


def is_anonymous(
    to_addresses: Iterable[str], subject: str, anonymous_addresses: Iterable[str], marker: str
) -> bool:
    """True when the report was sent to an anonymous address or its subject starts with marker."""
    wanted = {a.lower() for a in anonymous_addresses}
    for address in to_addresses:
        address = address.lower()
        if address in wanted or _base_address(address) in wanted:
            return True
        if address.partition("@")[0].endswith("+anonymous"):
            return True
    return bool(marker) and subject.strip().lower().startswith(marker.lower())


def strip_marker(subject: str, marker: str) -> str:
    stripped = subject.strip()
    if marker and stripped.lower().startswith(marker.lower()):
        return stripped[len(marker) :].strip()
    return subject


def anonymise(report: Report) -> Report:
    """Mark the report anonymous and forget who sent it (ack_address stays for one use)."""
    report.anonymous = True
    report.sender_name = None
    report.sender_address = None
    report.message_id = None
    return report


def apply_anonymity(
    report: Report,
    raw: bytes,
    anonymous_addresses: Iterable[str],
    marker: str,
    *,
    forced: bool = False,
) -> bytes:
    """Anonymise the report when it is anonymous (`forced`: it came from an anonymous source);
    return the original as it may be stored."""
    anonymous = is_anonymous(report.to_addresses, report.subject, anonymous_addresses, marker)
    if not (forced or anonymous):
        return raw
    anonymise(report)
    report.subject = strip_marker(report.subject, marker)
    return redact_headers(raw)


def _neutral_name(number: int, filename: str) -> str:
    suffix = "".join(c for c in PurePath(filename).suffix.lower() if c.isalnum() or c == ".")
    return f"attachment-{number}{suffix[:8]}"


def clean_attachments(report: Report, max_archive_bytes: int) -> None:
    """For an anonymous report: the attachments the referral may carry, renamed (a file name
    can name its author) and stripped of metadata, or withheld; `attachment_notes` says which.
    The untouched originals stay only in the encrypted record."""
    if not report.anonymous:
        return
    kept: list[Attachment] = []
    for number, attachment in enumerate(report.attachments, start=1):
        renamed = replace(attachment, filename=_neutral_name(number, attachment.filename))
        cleaned = clean_attachment(renamed, max_archive_bytes=max_archive_bytes)
        if cleaned.attachment is not None:
            kept.append(cleaned.attachment)
        if cleaned.note:
            report.attachment_notes.append(cleaned.note)
    report.attachments = kept


def redact_headers(raw: bytes) -> bytes:
    """The raw message without identifying header fields (and their folded continuation lines)."""
    headers, body = split_raw(raw)
    kept: list[bytes] = []
    dropping = False
    for line in re.split(rb"(?<=\n)", headers + b"\n"):
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                kept.append(line)
            continue
        name = line.split(b":", 1)[0].strip().lower().decode("ascii", "replace")
        dropping = name in IDENTIFYING_HEADERS
        if not dropping:
            kept.append(line)
    return b"".join(kept).rstrip(b"\r\n") + b"\n\n" + body
