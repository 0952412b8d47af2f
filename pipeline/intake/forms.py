"""Forms intake: web-form exports dropped in a folder in, one report per response out.

Each `[[forms]]` entry names a glob of export files and maps report fields to columns. A file
still being written (a temporary name, or a size or mtime that changes between two looks) waits
for the next poll. Every response is keyed `form:<form id>:<response id>` and taken in once,
ever, however often cumulative exports repeat it. A bad row (missing column, unreadable or
ambiguous date, empty description) is quarantined, encrypted, with `file:row: reason`; the
other rows go through. Once every row of a file is committed the plaintext export is handled
per `after`: kept, deleted, or (default) encrypted to the records keys into an archive folder.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import re
import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from pipeline.anonymity import anonymise
from pipeline.config import FormConfig
from pipeline.crypto import ensure_private_dir
from pipeline.ingest import Ingest, Outcome
from pipeline.intake import PollResult, take_safely
from pipeline.intake.exports import Export, ExportError, ExportRow, is_temporary_name, read_export
from pipeline.intake.exports import parse_date as parse_export_date
from pipeline.parse import strict_address
from pipeline.report import Report

log = logging.getLogger(__name__)

# Report fields that are not copied into `Report.fields` (they have their own places).
_OWN_FIELDS = {"description", "category", "email", "name", "reporter_role"}
_DATE_FIELDS = {"occurred_at"}


class RowError(Exception):
    """One response cannot become a report; the message is the reason, without its content."""


def slug(text: str) -> str:
    """ "Sexual harassment" → "sexual-harassment": form answers as rule-file categories."""
    return re.sub(r"[^a-z0-9]+", "-", text.strip().lower()).strip("-")


def check_columns(form: FormConfig, export: Export) -> None:
    """Refuse an export that lacks a mapped column, naming what was expected and found."""
    if export.rows and not export.columns:
        return  # JSON: columns vary per object, checked row by row
    missing = [header for header in form.columns.values() if header not in export.columns]
    if missing:
        raise ExportError(
            f"{export.path}: unknown layout for form {form.id!r}: expected the columns "
            f"{sorted(form.columns.values())}, missing {missing}; found {export.columns}"
        )


def _value(form: FormConfig, row: ExportRow, field: str) -> str | None:
    header = form.columns.get(field)
    if header is None:
        return None
    if header not in row.values:
        raise RowError(f"missing column {header!r}")
    return row.values[header].strip()


def is_anonymous_row(form: FormConfig, row: ExportRow) -> bool:
    rule = form.anonymous_when
    if rule is None:
        return False
    answer = row.values.get(rule.column, "").strip().lower()
    return answer in {value.strip().lower() for value in rule.equals}


def _fields(form: FormConfig, row: ExportRow, dialect: str) -> dict[str, str]:
    fields = {}
    for field in form.columns:
        value = _value(form, row, field)
        if field in _OWN_FIELDS or not value:
            continue
        if field in _DATE_FIELDS:
            try:
                value = parse_export_date(value, dialect, form.date_format).isoformat()
            except ValueError as exc:
                raise RowError(f"{form.columns[field]}: {exc}") from None
        fields[field] = value
    return fields


def row_report(form: FormConfig, export: Export, row: ExportRow, now: datetime) -> Report:
    """The report for one response (anonymised when the form says so), or RowError."""
    if row.problems:
        raise RowError(row.problems[0])
    description = _value(form, row, "description")
    if not description:
        raise RowError("the description is empty")
    email = strict_address(_value(form, row, "email") or "")
    report = Report(
        source="form",
        form_id=form.id,
        subject=f"Response to form {form.id}",
        body=description,
        received_at=now,
        sent_at=row.submitted_at,
        category=slug(_value(form, row, "category") or "") or None,
        reporter_role=_value(form, row, "reporter_role") or None,
        sender_name=_value(form, row, "name") or None,
        sender_address=email,
        ack_address=email,
        fields=_fields(form, row, export.dialect),
    )
    if is_anonymous_row(form, row):
        anonymise(report)
        report.ack_address = None  # a form response is acknowledged only when named
        for field in form.identifying:
            report.fields.pop(field, None)
    return report


def stored_row(form: FormConfig, export: Export, row: ExportRow, anonymous: bool) -> bytes:
    """The response as it is kept (encrypted): without identifying columns when anonymous."""
    values = dict(row.values)
    if anonymous:
        for field in form.identifying:
            values.pop(form.columns.get(field, ""), None)
    record = {"form": form.id, "file": export.path.name, "row": row.row, "values": values}
    return json.dumps(record, ensure_ascii=False).encode()


def take_row(ingest: Ingest, form: FormConfig, export: Export, row: ExportRow) -> Outcome:
    """Take one response in, once: stored and routed, or quarantined with `file:row: reason`."""
    key = f"form:{form.id}:{row.response_id}"
    if ingest.seen(key):
        return Outcome("seen")
    fingerprint = hashlib.sha256(key.encode()).hexdigest()
    now = datetime.now(UTC)
    try:
        report = row_report(form, export, row, now)
    except RowError as exc:
        original = stored_row(form, export, row, is_anonymous_row(form, row))
        reason = f"{export.path.name}:{row.row}: {exc}"
        return ingest.quarantine(key, fingerprint, original, reason, "form", now)
    original = stored_row(form, export, row, report.anonymous)
    return ingest.take_report(report, key, fingerprint, original)


def settled(path: Path, settle_seconds: float) -> bool:
    """True when the file is not being written: not touched lately, same size and mtime twice."""
    if is_temporary_name(path):
        return False
    first = path.stat()
    if time.time() - first.st_mtime < settle_seconds:
        return False
    time.sleep(min(settle_seconds, 0.2))
    second = path.stat()
    return (first.st_size, first.st_mtime_ns) == (second.st_size, second.st_mtime_ns)


class FormSource:
    def __init__(self, form: FormConfig, data_dir: Path) -> None:
        self.form = form
        self.name = f"form:{form.id}"
        self.archive_dir = form.archive_dir or data_dir / "archive" / form.id

    def files(self) -> list[Path]:
        return [Path(p) for p in sorted(glob.glob(self.form.path)) if Path(p).is_file()]

    def read(self, path: Path) -> Export:
        form = self.form
        export = read_export(path, form.dialect, form.id_column, form.date_format)
        check_columns(form, export)
        return export

    def poll(self, ingest: Ingest) -> PollResult:
        result = PollResult()
        for path in self.files():
            if not settled(path, self.form.settle_seconds):
                result.add("waiting")
                continue
            try:
                export = self.read(path)
            except ExportError as exc:
                result.errors.append(str(exc))
                continue
            taken = [
                take_safely(
                    f"{path.name}:{row.row}",
                    partial(take_row, ingest, self.form, export, row),
                    result,
                )
                for row in export.rows
            ]
            if all(taken):
                self.finish(path, ingest)
        return result

    def finish(self, path: Path, ingest: Ingest) -> None:
        """Handle the plaintext export once all its responses are committed."""
        if self.form.after == "keep":
            return
        if self.form.after == "archive-encrypted":
            sealed = ingest.crypto.encrypt(path.read_bytes(), list(ingest.config.gpg.records_keys))
            ensure_private_dir(self.archive_dir)
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
            target = self.archive_dir / f"{path.name}.{stamp}.asc"
            partial_target = target.with_suffix(".asc.part")
            partial_target.write_bytes(sealed)
            partial_target.rename(target)
        path.unlink()
        log.info("%s: %s handled (%s)", self.name, path.name, self.form.after)
