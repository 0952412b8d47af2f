"""Anonymity: decides whether a report is anonymous and strips what identifies its sender.

In: a parsed `Report` and the raw original. Out: the same report with `anonymous` set and,
when anonymous, no sender name, address or Message-ID, its text without a signature block or
reply attributions (`pipeline.scrub`, with a note saying what was removed); and a copy of the
raw original that keeps only allowlisted header fields (`pipeline.redact`), which is what is
encrypted and stored. The acknowledgement address survives only in memory, for one
acknowledgement if the rules ask for it.

A message is anonymous when a recipient or envelope header names an anonymous address in any
shape, or cannot be read for certain (`pipeline.recipients`: fails closed), when its subject
starts with the marker, or when its source is anonymous (`forced`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from pathlib import PurePath

from pipeline.clean import REPORT_SECONDS, Deadline, clean_attachment
from pipeline.config import LimitsConfig
from pipeline.recipients import sent_to_anonymous
from pipeline.redact import stored_original
from pipeline.report import Attachment, Report
from pipeline.scrub import scrub_report


def is_anonymous_message(
    raw: bytes, subject: str, anonymous_addresses: Iterable[str], marker: str
) -> bool:
    """True when the message was sent to an anonymous address (in any recipient or envelope
    header, in any shape, or a recipient header cannot be read) or its subject starts with
    the marker. Never raises."""
    if sent_to_anonymous(raw, anonymous_addresses):
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
    limits: LimitsConfig | None = None,
) -> bytes:
    """Anonymise the report when it is anonymous (`forced`: it came from an anonymous source);
    return the original as it may be stored."""
    if not (forced or is_anonymous_message(raw, report.subject, anonymous_addresses, marker)):
        return raw
    hints = [report.sender_name or "", report.sender_address or ""]
    anonymise(report)
    report.subject = strip_marker(report.subject, marker)
    scrub_report(report, hints)
    return stored_original(raw, limits)


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
    for number, attachment in enumerate(report.attachments, start=1):
        renamed = replace(attachment, filename=_neutral_name(number, attachment.filename))
        cleaned = clean_attachment(renamed, max_archive_bytes=max_archive_bytes, deadline=deadline)
        if cleaned.attachment is not None:
            kept.append(cleaned.attachment)
        if cleaned.note:
            report.attachment_notes.append(cleaned.note)
    report.attachments = kept
