"""Form exports: one exported responses file in, an `Export` (its rows as text) out, or an
`ExportError` whose message starts with the file's path and says what to do.

Staff export web-form responses into a folder; this module reads one such file (the bytes are
read by `readers.py`) and knows nothing of reports (mapping columns to reports is the caller's
job). Layouts recognised (`dialect`):

- "google", Google Forms' "Download responses (.csv)": the first header is "Timestamp", written
  like `2026/11/24 10:15:32 am GMT`; Google Sheets' own CSV of the same sheet writes
  `11/24/2026 10:15:32` or `24/11/2026 10:15:32` by locale. No response id: rows are hashed.
- "microsoft", Microsoft Forms' Excel workbook: "ID", "Start time", "Completion time", "Email",
  "Name", then one column per question; times are datetime cells (or text like
  `11/24/26 10:15:32`). The id is "ID", the submission time "Completion time".
- "qualtrics", Qualtrics CSV/TSV/Excel: three header rows (column ids such as "ResponseId" and
  "Q3"; question texts; `{"ImportId": ...}` cells whose "timeZone" is the zone of "RecordedDate"
  and "EndDate"). Values are keyed by column id and by question text: as exported, and (where
  that names one column only) with its white space collapsed to single spaces and without a
  " - Selected Choice" suffix. "IPAddress", "LocationLatitude" and "LocationLongitude" are
  dropped on reading; nothing downstream sees them.
- "jisc", Jisc Online Surveys: its export layout could not be checked against Jisc's own
  documentation, so a header row is taken for Jisc when it has "Response ID" plus a started
  column ("Started", "Started on", "Start date") and a completed one ("Completed", "Completed on",
  "Completion date"); the completed column is the submission time, "Response ID" the id.
- "generic": anything else with one header row, JSON and JSON Lines included; the submission time
  is the first of "submitted_at", "Submitted at", "Submitted", "Timestamp", "Completion time".

A response's `row` is the row a person sees when opening the file in a spreadsheet: a cell with
line breaks is still one row. Blank rows are skipped. `columns` are the headers as found
(duplicates made unique: "Name", "Name (2)"; dropped Qualtrics columns left out), each a key of
every row's `values`; Qualtrics question texts are `aliases`, also keys of `values`, and never
shadow a column id. `missing` names the columns a JSON object has no key for (its value is "").
`submitted_at` is always in UTC. A submission time that cannot be read, or that reads two ways
(03/04/2026), never fails the file: `submitted_at` is None and `problems` says why (set
`date_format` for that form). Without an id column, `response_id` is the sha256 of the row's
(header, value) pairs; a second identical row in the same file gets a hash of that and its
count, so ids survive re-exports that append rows.

Privacy: no message made here (ExportError, `problems`) quotes a cell of a response. Header
names are listed only when `header_recognised`: the file matched a platform's layout, is JSON
(its keys), or its first row holds one of the headers the caller `expected`; otherwise the
first row may be a response (a headerless file) and only its width is told.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo

from pipeline.intake.dates import parse_date, parse_moment
from pipeline.intake.readers import (
    ABSENT,
    JSON_HEADER_ROW,
    SUFFIXES,
    Cell,
    Records,
    Unreadable,
    cell_text,
    check_row_count,
    read_records,
)

__all__ = [
    "DIALECTS",
    "SUFFIXES",
    "Export",
    "ExportError",
    "ExportRow",
    "is_temporary_name",
    "neutralise_cell",
    "parse_date",
    "read_export",
]

DIALECTS = ("google", "microsoft", "qualtrics", "jisc", "generic")
_DETECTION_ORDER = ("qualtrics", "microsoft", "jisc", "google", "generic")

_QUALTRICS_DROPPED = frozenset({"IPAddress", "LocationLatitude", "LocationLongitude"})
_SELECTED_CHOICE = " - Selected Choice"
_JISC_STARTED = frozenset({"started", "started on", "start date"})
_JISC_COMPLETED = ("completed", "completed on", "completion date")
_PLATFORM_ID = {"microsoft": "id", "qualtrics": "responseid", "jisc": "response id"}
_SUBMITTED = {
    "google": ("timestamp",),
    "microsoft": ("completion time",),
    "qualtrics": ("recordeddate", "enddate"),
    "jisc": _JISC_COMPLETED,
    "generic": ("submitted_at", "submitted at", "submitted", "timestamp", "completion time"),
}
_EXPECTED = {
    "google": 'a first column "Timestamp"',
    "microsoft": 'columns "ID", "Start time" and "Completion time"',
    "qualtrics": '"ResponseId" in the first header row and {"ImportId": ...} cells in the third',
    "jisc": '"Response ID" with a started column (Started, Started on, Start date) and a '
    "completed column (Completed, Completed on, Completion date)",
}
_TEMPORARY_SUFFIXES = (".part", ".tmp", ".crdownload", ".partial")
_FORMULA_START = ("=", "+", "-", "@")


@dataclass(frozen=True)
class ExportRow:
    """One response: where it is in the file, its id, its cells as text, when it was submitted;
    `missing`: columns a JSON object has no key for (their value is "")."""

    row: int
    response_id: str
    values: dict[str, str]
    submitted_at: datetime | None
    problems: tuple[str, ...] = ()
    missing: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Export:
    """One export file read: its layout, its columns (each a key of every row's values), rows;
    `aliases` (Qualtrics question texts) are keys of the values too. `header_recognised` says
    whether the header row is known to be one (see the module docstring): only then may a
    message list its names."""

    path: Path
    dialect: str
    columns: list[str]
    rows: list[ExportRow]
    aliases: list[str] = field(default_factory=list)
    header_recognised: bool = True

    def headers(self) -> list[str]:
        """Every name a row's values are keyed by: the columns, then the aliases."""
        return [*self.columns, *self.aliases]

    def describe_headers(self, limit: int = 40) -> str:
        """The header names for a message (Qualtrics: the column ids, then the question texts),
        or only their number when the first row may be a response (never its cells)."""
        if not self.header_recognised:
            return (
                f"a first row of {len(self.columns)} cells that holds none of the mapped "
                "headers (not shown: it may be a response rather than a header row)"
            )
        found = ", ".join(repr(name) for name in self.columns[:limit]) or "no columns"
        if self.aliases:
            found += "; question texts " + ", ".join(repr(text) for text in self.aliases[:limit])
        return found


class ExportError(Exception):
    """The whole file cannot be read; the message starts with the file's path."""


@dataclass
class _Layout:
    columns: list[str]  # kept primary names; for Qualtrics the column ids
    keys: list[tuple[int, str]]  # cell index -> primary name, dropped columns left out
    aliases: list[tuple[int, str]]  # Qualtrics: cell index -> question text
    width: int
    submitted: tuple[int, str] | None  # cell index and name of the submission time
    recognised: bool = True
    zone: tzinfo | None = None
    zone_problem: str | None = None


def read_export(
    path: Path,
    dialect: str = "auto",
    id_column: str | None = None,
    date_format: str | None = None,
    expected: Collection[str] = (),
    data: bytes | None = None,
    zone: tzinfo = UTC,
) -> Export:
    """Read one export file (see the module docstring); ExportError when it cannot be read.
    `expected`: the headers the caller maps, which mark a generic file's first row as a
    header row. `data`: the file's bytes, when they are in memory already. `zone`: the zone
    of submission times that name none (a Qualtrics export names its own)."""
    if dialect != "auto" and dialect not in DIALECTS:
        raise ValueError(f"unknown dialect {dialect!r}; use 'auto' or one of {', '.join(DIALECTS)}")
    wanted = {*expected, *([id_column] if id_column else [])}
    try:
        records = read_records(path, data)
        return _export(path, records, dialect, id_column, date_format, wanted, zone)
    except Unreadable as exc:
        raise ExportError(f"{path}: {exc}") from None


def neutralise_cell(value: str) -> str:
    """A cell safe to write to a CSV a person will open: a leading =, +, -, @ (also after
    whitespace), tab or CR gets a `'` in front, as OWASP advises against CSV injection."""
    if value[:1] in ("\t", "\r") or value.lstrip().startswith(_FORMULA_START):
        return "'" + value
    return value


def is_temporary_name(path: Path) -> bool:
    """True for files still being written or not meant to be read: Office lock files (`~$x.xlsx`),
    LibreOffice locks and other hidden dot-files, and partial downloads (.part, .tmp, ...)."""
    name = path.name
    return name.startswith((".", "~$")) or name.lower().endswith(_TEMPORARY_SUFFIXES)


# -- Records into an Export --------------------------------------------------------------------


def _export(
    path: Path,
    records: Records,
    dialect: str,
    id_column: str | None,
    date_format: str | None,
    expected: set[str],
    zone: tzinfo = UTC,
) -> Export:
    if not records:
        raise Unreadable("the file is empty: it has no header row")
    if dialect == "auto":
        dialect = next(d for d in _DETECTION_ORDER if _looks_like(d, records))
    elif not _looks_like(dialect, records):
        raise Unreadable(_not_that_dialect(dialect, records))
    header_rows = 3 if dialect == "qualtrics" else 1
    layout = _layout(dialect, records[:header_rows])
    layout.zone = layout.zone or zone
    layout.recognised = (
        dialect != "generic"
        or records[0][0] == JSON_HEADER_ROW
        or bool(expected & {*layout.columns, *(text for _, text in layout.aliases)})
    )
    data = records[header_rows:]
    check_row_count(len(data))
    id_key = _id_key(dialect, layout, id_column)
    seen: Counter[str] = Counter()
    rows = [
        _row(layout, number, cells, id_key, date_format, dialect, seen) for number, cells in data
    ]
    aliases = [text for _, text in layout.aliases]
    return Export(path, dialect, layout.columns, rows, aliases, layout.recognised)


def _not_that_dialect(dialect: str, records: Records) -> str:
    """Why the file is not a `dialect` export, naming the platform it looks like instead; never
    the cells of its first row, which may be a response."""
    other = next(d for d in _DETECTION_ORDER if _looks_like(d, records))
    found = (
        f'it looks like a {other} export (set dialect = "{other}" or "auto")'
        if other != "generic"
        else f"its first row ({len(records[0][1])} cells, not shown) is not such a header"
    )
    return (
        f"this is not a {dialect} export as this reader knows it: expected {_EXPECTED[dialect]}; "
        f"{found}"
    )


def _looks_like(dialect: str, records: Records) -> bool:
    header = [cell_text(cell) for cell in records[0][1]]
    names = {name.lower() for name in header}
    if dialect == "google":
        return bool(header) and header[0].lower() == "timestamp"
    if dialect == "microsoft":
        return {"id", "start time", "completion time"} <= names
    if dialect == "qualtrics":
        return "ResponseId" in header and len(records) >= 3 and _is_import_row(records[2][1])
    if dialect == "jisc":
        started = bool(names & _JISC_STARTED)
        return "response id" in names and started and bool(names & set(_JISC_COMPLETED))
    return True


def _is_import_row(cells: list[Cell]) -> bool:
    texts = [cell_text(cell) for cell in cells if cell_text(cell)]
    return bool(texts) and all(_import_id(text) is not None for text in texts)


def _import_id(text: str) -> dict[str, object] | None:
    try:
        found = json.loads(text) if text.startswith("{") else None
    except json.JSONDecodeError:
        return None
    return found if isinstance(found, dict) and "ImportId" in found else None


def _layout(dialect: str, header_rows: Records) -> _Layout:
    raw = [cell_text(cell) for cell in header_rows[0][1]]
    while raw and not raw[-1]:  # blank trailing header cells (formatting, stray commas)
        raw.pop()
    names = _unique([name or f"Column {i}" for i, name in enumerate(raw, 1)], set())
    dropped = _QUALTRICS_DROPPED if dialect == "qualtrics" else frozenset()
    keys = [(i, name) for i, name in enumerate(names) if raw[i] not in dropped]
    aliases: list[tuple[int, str]] = []
    if dialect == "qualtrics":
        texts = [cell_text(cell) for cell in header_rows[1][1]]
        aliases = _question_aliases([(i, texts[i]) for i, _ in keys if i < len(texts)], names)
    by_lower = {name.lower(): (i, name) for i, name in reversed(keys)}
    submitted = next((by_lower[n] for n in _SUBMITTED[dialect] if n in by_lower), None)
    layout = _Layout([name for _, name in keys], keys, aliases, len(names), submitted)
    if dialect == "qualtrics" and submitted is not None:
        _qualtrics_zone(layout, header_rows[2][1], submitted)
    return layout


def _question_aliases(texts: list[tuple[int, str]], names: list[str]) -> list[tuple[int, str]]:
    """Qualtrics question texts (cell index, text) as names of their columns: each as exported
    (made unique like the columns, never shadowing a column id), then the other names a person
    would map it by (`_plain_forms`) where exactly one column answers to them."""
    kept = [(i, text) for i, text in texts if text]
    unique = _unique([text for _, text in kept], set(names))
    aliases = [(i, text) for (i, _), text in zip(kept, unique, strict=True)]
    taken = {*names, *unique}
    plain = [(i, form) for i, text in kept for form in _plain_forms(text) if form not in taken]
    counts = Counter(form for _, form in plain)
    return aliases + [(i, form) for i, form in plain if counts[form] == 1]


def _plain_forms(text: str) -> list[str]:
    """A question text as someone copying it from the survey would write it: its white space
    (line breaks, no-break spaces, runs of spaces) as one space; and, for a choice question
    with a text-entry option, without Qualtrics' " - Selected Choice" suffix."""
    plain = " ".join(text.split())
    forms = [plain]
    if plain.endswith(_SELECTED_CHOICE) and len(plain) > len(_SELECTED_CHOICE):
        forms.append(plain[: -len(_SELECTED_CHOICE)])
    return [form for form in forms if form != text]


def _unique(names: list[str], taken: set[str]) -> list[str]:
    """Names made unique in order: a second "Name" becomes "Name (2)"."""
    result: list[str] = []
    for name in names:
        candidate, n = name, 1
        while candidate in taken:
            n += 1
            candidate = f"{name} ({n})"
        taken.add(candidate)
        result.append(candidate)
    return result


def _qualtrics_zone(layout: _Layout, import_row: list[Cell], submitted: tuple[int, str]) -> None:
    index, name = submitted
    info = _import_id(cell_text(import_row[index])) if index < len(import_row) else None
    zone = info.get("timeZone") if info else None
    if not zone:
        return
    try:
        layout.zone = ZoneInfo(str(zone))
    except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError
        layout.zone_problem = f"{name}: the export's time zone {zone!r} is not known here"


def _id_key(dialect: str, layout: _Layout, id_column: str | None) -> str | None:
    keys = {name for _, name in layout.keys} | {text for _, text in layout.aliases}
    if id_column is not None:
        if id_column not in keys:
            if layout.recognised:
                found = "its columns are " + ", ".join(repr(n) for n in layout.columns[:40])
            else:
                found = f"its first row ({layout.width} cells, not shown) holds no mapped header"
            raise Unreadable(f"id_column {id_column!r} is not a column of this file; {found}")
        return id_column
    wanted = _PLATFORM_ID.get(dialect)
    return next((name for name in layout.columns if name.lower() == wanted), None)


def _row(
    layout: _Layout,
    number: int,
    cells: list[Cell],
    id_key: str | None,
    date_format: str | None,
    dialect: str,
    seen: Counter[str],
) -> ExportRow:
    problems: list[str] = []
    texts = [cell_text(cell) for cell in cells]
    if any(texts[layout.width :]):
        problems.append(
            f"the row has {len(texts)} cells but the header {layout.width}; the cells "
            f"after column {layout.width} were not read"
        )
    texts += [""] * (layout.width - len(texts))
    values = {name: texts[i] for i, name in layout.keys}
    values.update((text, texts[i]) for i, text in layout.aliases)
    missing = frozenset(name for i, name in layout.keys if i < len(cells) and cells[i] is ABSENT)
    response_id = values[id_key] if id_key else ""
    if not response_id:
        if id_key:
            problems.append(f"{id_key!r} is empty; the response id is a hash of the row's values")
        response_id = _row_hash(values, layout.columns, seen)
    submitted_at = None
    if layout.submitted is not None:
        index, name = layout.submitted
        submitted_at = _submitted(
            cells[index] if index < len(cells) else "", name, layout, dialect, date_format, problems
        )
    return ExportRow(number, response_id, values, submitted_at, tuple(problems), missing)


def _row_hash(values: dict[str, str], columns: list[str], seen: Counter[str]) -> str:
    """sha256 of the (header, value) pairs in header order; an identical earlier row in the same
    file makes it the hash of that plus "#n", so re-exports that append rows keep every id."""
    pairs = [[name, values[name]] for name in columns]
    digest = hashlib.sha256(json.dumps(pairs, ensure_ascii=False).encode()).hexdigest()
    seen[digest] += 1
    if seen[digest] > 1:
        digest = hashlib.sha256(f"{digest}#{seen[digest]}".encode()).hexdigest()
    return digest


def _submitted(
    cell: Cell,
    name: str,
    layout: _Layout,
    dialect: str,
    date_format: str | None,
    problems: list[str],
) -> datetime | None:
    if cell is None or (isinstance(cell, str) and not cell.strip()):
        return None
    if layout.zone_problem:
        problems.append(layout.zone_problem)
        return None
    if isinstance(cell, datetime):
        moment = cell
    else:
        try:
            moment = parse_moment(cell, dialect, date_format)
        except ValueError as exc:
            problems.append(f"{name!r}: {exc}")
            return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=layout.zone or UTC)).astimezone(UTC)
