"""Anonymity: decides whether a report is anonymous and strips what identifies its sender.

In: a parsed `Report` and the raw original. Out: the same report with `anonymous` set and,
when anonymous, no sender name, address or Message-ID, its text without a signature block or
reply attributions (`pipeline.scrub`, with a note saying what was removed); and a copy of the
raw original that keeps only allowlisted header fields (`pipeline.redact`), which is what is
encrypted and stored. The acknowledgement address survives only in memory, for one
acknowledgement if the rules ask for it.

A message is anonymous when a recipient or envelope header names an anonymous address in any
shape, or cannot be read for certain (`pipeline.recipients`: fails closed), when its subject
starts with the marker (after any reply or forward prefixes: `Re: Fwd: [anonymous] ...`), or
when its source is anonymous (`forced`).

The sender's names and addresses (the parsed sender, and the From, Sender and Reply-To fields
of the raw original, RFC 2047 decoded) are read before the report forgets them, and replaced by
`[sender]` in the subject, the text and, in `clean_attachments`, kept text attachments. Until
then they stay on the report in memory (`Report.sender_hints`), never stored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace
from email.utils import getaddresses
from pathlib import PurePath

from pipeline.clean import REPORT_SECONDS, Deadline, clean_attachment
from pipeline.config import LimitsConfig
from pipeline.recipients import Unreadable, decoded_text, header_fields, sent_to_anonymous
from pipeline.redact import stored_original
from pipeline.report import Attachment, Report
from pipeline.scrub import SENDER_NOTE, scrub_report, scrub_text_attachment
from pipeline.scrub.sender import decoded_name, sender_patterns

#: Reply and forward prefixes mail clients put before a subject, in many languages.
_PREFIXES = re.compile(
    r"[ \t]*(?:(?:re|fwd?|fw|aw|wg|sv|vs|tr|rv|antw|odp|enc|r|wtr|vl|ynt|ilt|rif|res)"
    r"[ \t]*(?:\[\d{1,4}\]|\(\d{1,4}\))?[ \t]*[:：][ \t]*){0,20}",
    re.I,
)
SUBJECT_ONLY_NOTE = (
    "The report was written in the subject line only, so that line is shown as its text."
)
SENDER_FIELDS = ("from", "sender", "reply-to")
MAX_SENDER_FIELD = 2000


def is_anonymous_message(
    raw: bytes, subject: str, anonymous_addresses: Iterable[str], marker: str
) -> bool:
    """True when the message was sent to an anonymous address (in any recipient or envelope
    header, in any shape, or a recipient header cannot be read) or its subject starts with
    the marker. Never raises."""
    if sent_to_anonymous(raw, anonymous_addresses):
        return True
    return _marker_at(subject, marker) is not None


def _marker_at(subject: str, marker: str) -> int | None:
    """Where the marker starts, when it starts the subject after reply and forward prefixes."""
    if not marker:
        return None
    start = _PREFIXES.match(subject)
    at = start.end() if start else 0
    return at if subject[at : at + len(marker)].lower() == marker.lower() else None


def strip_marker(subject: str, marker: str) -> str:
    """The subject without the marker (its reply prefixes stay: `Re: [anonymous] x` → `Re: x`)."""
    at = _marker_at(subject, marker)
    if at is None:
        return subject
    prefixes = " ".join(subject[:at].split())
    rest = subject[at + len(marker) :].strip()
    return f"{prefixes} {rest}".strip() if prefixes else rest


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
    limits: LimitsConfig | None = None,
) -> bytes:
    """Anonymise the report when it is anonymous (`forced`: it came from an anonymous source);
    return the original as it may be stored."""
    if not (forced or is_anonymous_message(raw, report.subject, anonymous_addresses, marker)):
        return raw
    hints = sender_hints(report, raw)
    anonymise(report)
    report.subject = strip_marker(report.subject, marker)
    forget_sender(report, hints)
    if not report.body.strip() and report.subject.strip():
        report.body = report.subject  # the referral withholds the subject: its text goes here
        report.notes.append(SUBJECT_ONLY_NOTE)
    return stored_original(raw, limits)


def forget_sender(report: Report, hints: list[str]) -> None:
    """For an anonymised report: the sender's names and addresses (`hints`) replaced by
    `[sender]` in the subject and text, signatures and attributions removed, with notes; the
    hints stay in memory for `clean_attachments`."""
    report.subject, named = sender_patterns(hints).replace(report.subject)
    scrub_report(report, hints)
    if named and SENDER_NOTE not in report.notes:
        report.notes.append(SENDER_NOTE)
    report.sender_hints = hints


def sender_hints(report: Report, raw: bytes) -> list[str]:
    """The sender's display names and addresses: the parsed sender and the From, Sender and
    Reply-To fields of the raw original (encoded words decoded). Never raises."""
    hints = [decoded_name(report.sender_name or ""), report.sender_address or ""]
    try:
        for name, value in header_fields(raw) or ():
            if name not in SENDER_FIELDS or len(value) > MAX_SENDER_FIELD:
                continue
            text = value.decode("utf-8", "replace")
            try:
                text = decoded_text(text)
            except Unreadable:
                text = decoded_name(text)
            for display, address in getaddresses([text]):
                hints += [display, address]
    except Exception:  # the parsed sender alone is still replaced
        pass
    return [hint for hint in dict.fromkeys(h.strip() for h in hints) if hint]


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
    deadline = Deadline(REPORT_SECONDS)  # one budget for all of the report's attachments
    hints, report.sender_hints = report.sender_hints, []
    for number, attachment in enumerate(report.attachments, start=1):
        renamed = replace(attachment, filename=_neutral_name(number, attachment.filename))
        cleaned = clean_attachment(renamed, max_archive_bytes=max_archive_bytes, deadline=deadline)
        if cleaned.note:
            report.attachment_notes.append(cleaned.note)
        if cleaned.attachment is not None:
            kept.append(_scrubbed_text(cleaned.attachment, hints, report.attachment_notes))
    report.attachments = kept


_TEXT_TYPES = ("text/plain", "text/csv")
_CHARSET = re.compile(r";\s*charset=\"?(?P<charset>[\w.:-]{1,40})\"?", re.I)


def _scrubbed_text(attachment: Attachment, hints: list[str], notes: list[str]) -> Attachment:
    """A kept text attachment with its signature, attributions and the sender's names taken
    out like the report's own text, re-encoded as UTF-8; withheld-in-kind when its declared
    charset does not decode it (that cannot happen after cleaning, but fail closed)."""
    content_type = attachment.content_type.split(";", 1)[0].strip().lower()
    if content_type not in _TEXT_TYPES:
        return attachment
    found = _CHARSET.search(attachment.content_type)
    try:
        text = attachment.data.decode(found["charset"] if found else "utf-8")
    except (LookupError, UnicodeError):
        text = attachment.data.decode("utf-8", "replace")
    name = hints[0] if hints else None
    address = next((h for h in hints if "@" in h), None)
    scrubbed, removed = scrub_text_attachment(text, name, address, more=hints)
    for note in removed:
        notes.append(f"{attachment.filename}: {note}")
    return replace(
        attachment, content_type=f"{content_type}; charset=utf-8", data=scrubbed.encode("utf-8")
    )
