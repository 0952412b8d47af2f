"""Forms intake: web-form exports dropped in a folder in, one report per response out.

Each `[[forms]]` entry names a glob of export files and maps report fields to columns. A file
still being written (a temporary name, or a size or mtime that changes between two looks) waits
for the next poll. Every response is keyed `form:<form id>:<sha256 of its response id>` and
taken in once, ever, however often cumulative exports repeat it. A file without a mapped column,
or without the `anonymous_when` question, is refused and left where it is. A bad row (a
submission time that cannot be read, an empty description, a JSON response without the
anonymity question) is quarantined, encrypted, with `file:row: reason`; the other rows go
through. Once every row of a file is committed the plaintext export is handled per `after`:
kept, deleted, or (default) encrypted to the records keys into an archive folder. A quarantined
response is taken in again, as the report it was, when a later export of it reads (the mapping
was fixed: `readable_again`), or when a records keyholder releases it from the archive
(`intake quarantine release`).

A poll hands rows over for `SLICE_SECONDS` (always at least one new row), then returns, so the
sources polled after it (mail) never wait behind a large export. The rows not handed over yet
stay in memory with the file's identity (inode, size, mtime) and the next poll goes on from
there; its `remaining` count (rows left, and one for each export not reached) tells the daemon
to poll again at once. Whether responses were taken in before is looked up `LOOKUP_ROWS` rows
at a time, and such rows are passed over whatever the time, so a cumulative export of rows
taken long ago goes by quickly. An export that changed between polls is read again from its
start, as is every export after a restart: rows already committed are `seen`, so a crash
mid-slice loses no row and takes none twice. Rows that failed are tried again at the next
poll (not at once: a fault that stays would keep the daemon busy); the file is handled per
`after` only once every row is committed, and only when it is still the file that was read.

Anonymity fails closed: a response is anonymous when its `anonymous_when` answer is one of
`equals`, is blank, or is missing (a JSON object without the key: also quarantined, as
anonymous). A form is never read as named because its anonymity question cannot be found.

Privacy: a reason, an error or a log line names a column and a problem, never an answer. The
category answer becomes the report's category (a database column) only when the rules know that
category; any other answer travels, encrypted, in the referral as "Reported as". Values are
normalised before they reach `Report.fields`: every kind of line break becomes "\\n" (the
referral template indents continuation lines, so a value cannot forge a line of its own) and
other control characters are removed; one-line fields (name, role) lose their line breaks.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import logging
import re
import time
from collections import deque
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from pipeline.anonymity import anonymise, forget_sender
from pipeline.config import FormConfig
from pipeline.crypto import ensure_private_dir
from pipeline.ingest import Ingest, Outcome
from pipeline.intake import PollResult, SourceError, describe, take_safely
from pipeline.intake.dates import answer_date
from pipeline.intake.exports import Export, ExportError, ExportRow, is_temporary_name, read_export
from pipeline.models import ReportRow, ReportState, SourceItem, as_utc
from pipeline.parse import strict_address
from pipeline.render import one_line
from pipeline.report import Report
from pipeline.rules import RuleSet, category_slug
from pipeline.rules.conditions import as_words

log = logging.getLogger(__name__)

# Report fields that are not copied into `Report.fields` (they have their own places).
_OWN_FIELDS = {"description", "category", "email", "name", "reporter_role"}
_DATE_FIELDS = {"occurred_at"}
# The field that shows a category answer the rules do not know (label "Reported as").
CATEGORY_ANSWER = "reported_as"
# C0 and C1 control characters other than tab, left after line breaks are split off.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# How long one poll of a form hands rows over before it returns (see the module docstring).
SLICE_SECONDS = 5.0
# Rows whose keys (two each: `response_keys`) are looked up in the database at once.
LOOKUP_ROWS = 250
# The count of a poll's rows (and exports not reached) left for the next poll.
REMAINING = "remaining"

Stamp = tuple[int, int, int]  # an export file's inode, size and mtime (ns)


class RowError(Exception):
    """One response cannot become a report; the message is the reason, without its content."""


def as_lines(text: str) -> str:
    """Text whose only line break is "\\n": CR, CRLF, U+2028/2029, NEL, form feed, vertical tab
    and the other separators str.splitlines knows all become "\\n"; other control characters
    (but tab) are removed."""
    return "\n".join(_CONTROL.sub("", line) for line in text.splitlines()).strip()


def mapped_headers(form: FormConfig) -> list[str]:
    """Every header the form reads: its mapped columns, then the anonymity question."""
    headers = list(form.columns.values())
    if form.anonymous_when is not None:
        headers.append(form.anonymous_when.column)
    return list(dict.fromkeys(headers))


def known_categories(rules: RuleSet) -> frozenset[str]:
    """The categories the rules name (in `when: category` or `set: category`), as slugs
    (`category_slug`, as the rules compare them: "Hate Crime" is `hate-crime`)."""
    found: set[str] = set()
    for rule in rules.rules:
        found.update(as_words(rule.when.get("category")))
        found.update(as_words(rule.updates.get("category")))
    return frozenset(category_slug(word) for word in found)


def check_columns(form: FormConfig, export: Export) -> None:
    """Refuse an export that lacks a mapped column or the anonymity question, naming what was
    expected and (only when the header row was recognised) what was found."""
    unmapped = [header for header in form.date_formats if header not in form.columns.values()]
    if unmapped:
        raise ExportError(
            f"{export.path}: form {form.id!r}: date_formats names {unmapped}, which "
            "[forms.columns] does not map; use the header of a mapped column"
        )
    if not export.rows and not export.columns:
        return  # a JSON file without responses: no layout to check
    wanted = mapped_headers(form)
    present = set(export.headers())
    missing = [header for header in wanted if header not in present]
    if not missing:
        return
    anonymity = ""
    if form.anonymous_when is not None and form.anonymous_when.column in missing:
        anonymity = (
            f" The anonymity question {form.anonymous_when.column!r} (anonymous_when) is "
            "missing, so no response of this file can be known to be named; if the question "
            "was reworded, update anonymous_when.column."
        )
    raise ExportError(
        f"{export.path}: unknown layout for form {form.id!r}: expected the columns "
        f"{sorted(wanted)}, missing {missing}; found {export.describe_headers()}.{anonymity}"
    )


def _value(form: FormConfig, row: ExportRow, field: str) -> str | None:
    header = form.columns.get(field)
    if header is None:
        return None
    if header not in row.values:
        raise RowError(f"missing column {header!r}")
    return row.values[header].strip()


def is_anonymous_row(form: FormConfig, row: ExportRow) -> bool:
    """True when the form has an anonymity question and this response's answer is one of
    `equals`, blank, or missing (fail closed)."""
    rule = form.anonymous_when
    if rule is None:
        return False
    if rule.column not in row.values or rule.column in row.missing:
        return True
    answer = row.values[rule.column].strip().casefold()
    return not answer or answer in {value.strip().casefold() for value in rule.equals}


def _check_anonymity_answered(form: FormConfig, row: ExportRow) -> None:
    rule = form.anonymous_when
    if rule is not None and (rule.column not in row.values or rule.column in row.missing):
        raise RowError(
            f"{rule.column!r}: the response has no such field, so it is kept as anonymous "
            "(identifying columns removed)"
        )


def _date_headers(form: FormConfig) -> set[str]:
    """Mapped columns read as dates: the date fields, and any header given a date format."""
    return {
        header
        for field, header in form.columns.items()
        if field in _DATE_FIELDS or header in form.date_formats
    }


def _fields(form: FormConfig, row: ExportRow) -> dict[str, str]:
    fields = {}
    dates = _date_headers(form)
    for field, header in form.columns.items():
        value = as_lines(_value(form, row, field) or "")
        if field in _OWN_FIELDS or not value:
            continue
        if header in dates:  # a date, or the text as written (never a reason to quarantine)
            value = answer_date(value, form.date_formats.get(header))
        fields[field] = value
    return fields


def _category(
    form: FormConfig, row: ExportRow, categories: Collection[str] | None
) -> tuple[str | None, str | None]:
    """(the report's category, the answer to show as "Reported as"): an answer becomes the
    category only when the rules know it (`categories`; None: any answer does)."""
    answer = one_line(as_lines(_value(form, row, "category") or ""))
    category = category_slug(answer) or None
    if category is None or categories is None or category in categories:
        return category, None
    return None, answer


def row_report(
    form: FormConfig,
    export: Export,
    row: ExportRow,
    now: datetime,
    categories: Collection[str] | None = None,
) -> Report:
    """The report for one response (anonymised when the form says so), or RowError.
    `categories`: the categories the rules know (see `known_categories`); None keeps any."""
    if row.problems:
        raise RowError(row.problems[0])
    _check_anonymity_answered(form, row)
    description = as_lines(_value(form, row, "description") or "")
    if not description:
        raise RowError("the description is empty")
    email = strict_address(_value(form, row, "email") or "")
    category, answer = _category(form, row, categories)
    fields = _fields(form, row)
    if answer:
        fields = {CATEGORY_ANSWER: answer, **fields}
    report = Report(
        source="form",
        form_id=form.id,
        subject=f"Response to form {form.id}",
        body=description,
        received_at=now,
        sent_at=row.submitted_at,
        category=category,
        reporter_role=one_line(_value(form, row, "reporter_role") or "") or None,
        sender_name=one_line(_value(form, row, "name") or "") or None,
        sender_address=email,
        ack_address=email,
        fields=fields,
    )
    return anonymise_response(form, report) if is_anonymous_row(form, row) else report


def anonymise_response(form: FormConfig, report: Report) -> Report:
    """An anonymous response's report: no sender, no identifying field, no acknowledgement."""
    hints = [hint for hint in (report.sender_name, report.sender_address) if hint]
    anonymise(report)
    forget_sender(report, hints)  # "Thanks, Sam" in the description
    report.ack_address = None  # a form response is acknowledged only when named
    for field in form.identifying:
        report.fields.pop(field, None)
    return report


def stored_row(form: FormConfig, export: Export, row: ExportRow, anonymous: bool) -> bytes:
    """The response as it is kept (encrypted). Anonymous: only the mapped columns that do not
    identify, and the anonymity answer; platforms add identity columns of their own (Microsoft
    Forms' Email and Name, Qualtrics' RecipientEmail and ExternalReference), never kept."""
    values = dict(row.values)
    if anonymous:
        identifying = {form.columns.get(field) for field in form.identifying}
        kept = {header for header in form.columns.values() if header not in identifying}
        if form.anonymous_when is not None:
            kept.add(form.anonymous_when.column)
        values = {header: value for header, value in values.items() if header in kept}
    record = {"form": form.id, "file": export.path.name, "row": row.row, "values": values}
    return json.dumps(record, ensure_ascii=False).encode()


def source_key(form: FormConfig, row: ExportRow) -> str:
    """`form:<form id>:<sha256 of the response id>`: an id column may hold what a person typed
    (a student number), so the database keeps only its hash."""
    return f"form:{form.id}:{hashlib.sha256(row.response_id.encode()).hexdigest()}"


def response_keys(form: FormConfig, row: ExportRow) -> list[str]:
    """The keys a response may have been taken in under: `source_key`, and as keyed before."""
    return [source_key(form, row), f"form:{form.id}:{row.response_id}"]


def take_row(
    ingest: Ingest,
    form: FormConfig,
    export: Export,
    row: ExportRow,
    before: Mapping[str, bool],
) -> Outcome:
    """Take one response in, once: stored and routed, or quarantined with `file:row: reason`.
    `before`: `taken_before` for (at least) this row's keys."""
    keys = response_keys(form, row)
    key = keys[0]
    if any(k in before for k in keys):
        quarantined = any(before.get(k) for k in keys)
        return readable_again(ingest, form, export, row, keys) if quarantined else Outcome("seen")
    fingerprint = ingest.fingerprint(hashlib.sha256(key.encode()).hexdigest())
    now = datetime.now(UTC)
    try:
        report = row_report(form, export, row, now, known_categories(ingest.rules))
    except RowError as exc:
        anonymous = is_anonymous_row(form, row)
        original = stored_row(form, export, row, anonymous)
        reason = f"{export.path.name}:{row.row}: {exc}"
        return ingest.quarantine(
            key, fingerprint, original, reason, "form", now, anonymous=anonymous
        )
    original = stored_row(form, export, row, report.anonymous)
    return ingest.take_report(report, key, fingerprint, original)


def taken_before(engine: Engine, keys: Collection[str]) -> dict[str, bool]:
    """Which of these source keys were taken in before (one query), each with whether its
    report is quarantined now."""
    query = (
        select(SourceItem.source_key, ReportRow.state)
        .outerjoin(ReportRow, col(SourceItem.report_id) == col(ReportRow.id))
        .where(col(SourceItem.source_key).in_(keys))
    )
    with Session(engine) as session:
        return {key: state == ReportState.QUARANTINED for key, state in session.exec(query)}


def next_batch(form: FormConfig, rows: deque[ExportRow]) -> list[ExportRow]:
    """Up to `LOOKUP_ROWS` rows off the front of `rows`, ending before a row whose key is in
    the batch already (a response exported twice): its lookup must see the first one taken."""
    batch: list[ExportRow] = []
    keys: set[str] = set()
    while rows and len(batch) < LOOKUP_ROWS:
        row_keys = response_keys(form, rows[0])
        if keys.intersection(row_keys):
            break
        keys.update(row_keys)
        batch.append(rows.popleft())
    return batch


def readable_again(
    ingest: Ingest, form: FormConfig, export: Export, row: ExportRow, keys: list[str]
) -> Outcome:
    """A response taken in before as a quarantined report: taken in again, as the report it
    was, when it reads now (a re-export after the form's mapping was fixed); else `seen`."""
    quarantined = ingest.quarantined_input(keys)
    if quarantined is None:
        return Outcome("seen")
    try:
        report, original = released_response(ingest, form, export, row, quarantined)
    except RowError:
        return Outcome("seen")  # still unreadable: it stays quarantined as it is
    return ingest.release_report(quarantined, report, original, "daemon")


def released_response(
    ingest: Ingest, form: FormConfig, export: Export, row: ExportRow, quarantined: ReportRow
) -> tuple[Report, bytes]:
    """A quarantined response read again under the current mapping: its report (as anonymous
    as it was quarantined, at least) and its record as stored; RowError when it still cannot
    be read."""
    received_at = as_utc(quarantined.received_at)
    report = row_report(form, export, row, received_at, known_categories(ingest.rules))
    if quarantined.anonymous and not report.anonymous:
        anonymise_response(form, report)
    return report, stored_row(form, export, row, report.anonymous)


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


def count_remaining(result: PollResult, count: int) -> None:
    """Add to the poll's `remaining`: rows, or exports, left for the next poll at once."""
    result.counts[REMAINING] = result.counts.get(REMAINING, 0) + count


def file_stamp(path: Path) -> Stamp:
    """What tells one state of an export file from another: its inode, size and mtime."""
    info = path.stat()
    return info.st_ino, info.st_size, info.st_mtime_ns


@dataclass
class ExportPass:
    """An export being taken in across polls: the file as it was read (`stamp`; `export` with
    its rows moved out), the rows not handed over yet, and the rows that failed (tried again
    at the next poll)."""

    export: Export
    stamp: Stamp
    rows: deque[ExportRow]
    failed: list[ExportRow] = dataclasses.field(default_factory=list)

    @classmethod
    def of(cls, export: Export, stamp: Stamp) -> ExportPass:
        return cls(dataclasses.replace(export, rows=[]), stamp, deque(export.rows))


@dataclass
class Slice:
    """One poll's share of time: rows are handed over until `deadline`, and always one new row
    (taken in, or tried), so every poll that leaves rows for the next one made progress."""

    deadline: float
    handed: bool = False

    def over(self) -> bool:
        return self.handed and time.monotonic() >= self.deadline


class FormSource:
    def __init__(
        self, form: FormConfig, data_dir: Path, slice_seconds: float = SLICE_SECONDS
    ) -> None:
        self.form = form
        self.name = f"form:{form.id}"
        self.archive_dir = form.archive_dir or data_dir / "archive" / form.id
        self.slice_seconds = slice_seconds
        self.passes: dict[Path, ExportPass] = {}  # exports being taken in, by path

    def files(self) -> list[Path]:
        """The export files now in the form's folder; SourceError when the folder is missing."""
        folder = Path(self.form.path).parent
        while glob.has_magic(folder.name):
            folder = folder.parent
        if not folder.is_dir():
            raise SourceError("folder", f"{self.name}: forms.path: {folder}: no such folder")
        return [Path(p) for p in sorted(glob.glob(self.form.path)) if Path(p).is_file()]

    def read(self, path: Path, data: bytes | None = None) -> Export:
        """One export of this form, checked; `data`: its bytes when in memory (decrypted)."""
        form = self.form
        zone = ZoneInfo(form.timezone or "UTC")
        export = read_export(
            path, form.dialect, form.id_column, form.date_format, mapped_headers(form), data, zone
        )
        check_columns(form, export)
        return export

    def archived(self, name: str) -> list[Path]:
        """The encrypted archives of the export file `name` (`after = "archive-encrypted"`),
        oldest first."""
        return sorted(self.archive_dir.glob(f"{glob.escape(name)}.*.asc"))

    def poll(self, ingest: Ingest) -> PollResult:
        """One slice of the form's exports (see the module docstring): files in name order, each
        from where the last poll left it, until the slice is over."""
        result = PollResult()
        budget = Slice(time.monotonic() + self.slice_seconds)
        files = self.files()
        for gone in self.passes.keys() - set(files):
            del self.passes[gone]
        for index, path in enumerate(files):
            if budget.over():
                count_remaining(result, len(files) - index)
                break
            try:
                self.poll_file(path, ingest, result, budget)
            except Exception as exc:  # one file's fault never stops the form's other files
                self.passes.pop(path, None)
                result.fail(
                    "export",
                    f"{self.name}: {path}: the export failed ({describe(exc)}); the file waits "
                    "in place and is tried again at the next poll",
                )
        return result

    def poll_file(self, path: Path, ingest: Ingest, result: PollResult, budget: Slice) -> None:
        """Take in one export's responses while the slice lasts; the file leaves its folder
        (`finish`) only once every response is committed, else it waits there."""
        current = self.passes.get(path)
        if current is None or current.stamp != file_stamp(path):
            self.passes.pop(path, None)
            current = self.open(path, result)
            if current is None:
                return
            self.passes[path] = current
        elif not current.rows:  # what failed at the last poll is tried again
            current.rows.extend(current.failed)
            current.failed.clear()
        self.take_slice(current, ingest, result, budget)
        if current.rows:
            count_remaining(result, len(current.rows))
        elif not current.failed:
            del self.passes[path]
            if file_stamp(path) != current.stamp:  # replaced meanwhile: read again, at once
                count_remaining(result, 1)
                return
            self.finish(path, ingest)

    def open(self, path: Path, result: PollResult) -> ExportPass | None:
        """The export read, to be taken in; None when it is still being written or cannot
        be read (recorded in `result`: it waits in place)."""
        if not settled(path, self.form.settle_seconds):
            result.add("waiting")
            return None
        stamp = file_stamp(path)
        try:
            export = self.read(path)
        except ExportError as exc:
            keys = "check forms.path, forms.dialect, forms.columns, forms.anonymous_when"
            result.fail("export", f"{self.name}: {exc} ({keys}; the file waits in place)")
            return None
        return ExportPass.of(export, stamp)

    def take_slice(
        self, current: ExportPass, ingest: Ingest, result: PollResult, budget: Slice
    ) -> None:
        """Hand rows over while the slice lasts; the rest stay in `current.rows`. Rows taken in
        before cost a lookup only and are passed over whatever the time."""
        name = current.export.path.name
        while current.rows:
            batch = next_batch(self.form, current.rows)
            keys = [key for row in batch for key in response_keys(self.form, row)]
            before = taken_before(ingest.engine, keys)
            ingest.alive()
            for index, row in enumerate(batch):
                new = before.keys().isdisjoint(response_keys(self.form, row))
                if new and budget.over():
                    current.rows.extendleft(reversed(batch[index:]))
                    return
                budget.handed = budget.handed or new
                take = partial(take_row, ingest, self.form, current.export, row, before)
                if not take_safely(f"{name}:{row.row}", take, result):
                    current.failed.append(row)

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
