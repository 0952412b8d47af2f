"""Form exports: one exported responses file in, an `Export` (its rows as text) out, or an
`ExportError` whose message starts with the file's path and says what to do.

Staff export web-form responses into a folder; this module reads one such file and knows nothing
of reports (mapping columns to reports is the caller's job). Layouts recognised (`dialect`):

- "google", Google Forms' "Download responses (.csv)": the first header is "Timestamp", written
  like `2026/11/24 10:15:32 am GMT`; Google Sheets' own CSV of the same sheet writes
  `11/24/2026 10:15:32` or `24/11/2026 10:15:32` by locale. No response id: rows are hashed.
- "microsoft", Microsoft Forms' Excel workbook: "ID", "Start time", "Completion time", "Email",
  "Name", then one column per question; times are datetime cells (or text like
  `11/24/26 10:15:32`). The id is "ID", the submission time "Completion time".
- "qualtrics", Qualtrics CSV/TSV/Excel: three header rows (column ids such as "ResponseId" and
  "Q3"; question texts; `{"ImportId": ...}` cells whose "timeZone" is the zone of "RecordedDate"
  and "EndDate"). Values are keyed by column id and by question text. "IPAddress",
  "LocationLatitude" and "LocationLongitude" are dropped on reading; nothing downstream sees them.
- "jisc", Jisc Online Surveys: its export layout could not be checked against Jisc's own
  documentation, so a header row is taken for Jisc when it has "Response ID" plus a started
  column ("Started", "Started on", "Start date") and a completed one ("Completed", "Completed on",
  "Completion date"); the completed column is the submission time, "Response ID" the id.
- "generic": anything else with one header row, JSON and JSON Lines included; the submission time
  is the first of "submitted_at", "Submitted at", "Submitted", "Timestamp", "Completion time".

Delimited text may be UTF-8 (with or without BOM), UTF-16 with BOM (Excel's "Unicode Text") or
Windows-1252, separated by `,`, `;` or tab (an Excel `sep=` first line is honoured). A response's
`row` is the row a person sees when opening the file in a spreadsheet: a cell with line breaks
is still one row. Blank rows are skipped. `columns` are the headers as found (duplicates made
unique: "Name", "Name (2)"; dropped Qualtrics columns left out), each a key of every row's
`values`; a Qualtrics question text never shadows a column id. `submitted_at` is always in UTC.
A submission time that cannot be read, or that reads two ways (03/04/2026), never fails the
file: `submitted_at` is None and `problems` says why (set `date_format` for that form).
Without an id column, `response_id` is the sha256 of the row's (header, value) pairs; a second
identical row in the same file gets a hash of that and its count, so ids survive re-exports
that append rows.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from itertools import islice
from pathlib import Path
from zoneinfo import ZoneInfo

import openpyxl

DIALECTS = ("google", "microsoft", "qualtrics", "jisc", "generic")
_DETECTION_ORDER = ("qualtrics", "microsoft", "jisc", "google", "generic")
MAX_FILE_BYTES = 50 * 1024 * 1024
MAX_ROWS = 100_000
SUFFIXES = (".csv", ".tsv", ".txt", ".xlsx", ".json", ".jsonl", ".ndjson")

_Cell = str | datetime
_Records = list[tuple[int, list[_Cell]]]  # (row number as a spreadsheet shows it, cells)

_DELIMITERS = ",;\t"
_QUALTRICS_DROPPED = frozenset({"IPAddress", "LocationLatitude", "LocationLongitude"})
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
_EXAMPLE_DATE = {
    "google": "2026/11/24 10:15:32 am GMT",
    "microsoft": "11/24/26 10:15:32",
    "qualtrics": "2026-11-24 10:15:32",
    "jisc": "24/11/2026 10:15",
    "generic": "2026-11-24T10:15:32Z",
}
_DATE_FORMATS = {
    "/": ("%Y/%m/%d", "%d/%m/%Y", "%m/%d/%Y", "%d/%m/%y", "%m/%d/%y"),
    ".": ("%d.%m.%Y",),
}
_ZONE = re.compile(
    r"^(?P<moment>.*?)\s*\b(?:GMT|UTC)(?:(?P<sign>[+-])(?P<h>\d{1,2})(?::?(?P<m>\d\d))?)?$", re.I
)
_TOO_MANY_ROWS = (
    "the file has more than {:,} rows, the most one export may have; export it in parts "
    "(e.g. by date range)"
)
_TEMPORARY_SUFFIXES = (".part", ".tmp", ".crdownload", ".partial")
_FORMULA_START = ("=", "+", "-", "@")


@dataclass(frozen=True)
class ExportRow:
    """One response: where it is in the file, its id, its cells as text, when it was submitted."""

    row: int
    response_id: str
    values: dict[str, str]
    submitted_at: datetime | None
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class Export:
    """One export file read: its layout, its columns (each a key of every row's values), rows."""

    path: Path
    dialect: str
    columns: list[str]
    rows: list[ExportRow]


class ExportError(Exception):
    """The whole file cannot be read; the message starts with the file's path."""


class _Unreadable(Exception):
    """Why a file cannot be read, without its path (read_export adds it)."""


@dataclass
class _Layout:
    columns: list[str]  # kept primary names; for Qualtrics the column ids
    keys: list[tuple[int, str]]  # cell index -> primary name, dropped columns left out
    aliases: list[tuple[int, str]]  # Qualtrics: cell index -> question text
    width: int
    submitted: tuple[int, str] | None  # cell index and name of the submission time
    zone: tzinfo | None = None
    zone_problem: str | None = None


def read_export(
    path: Path, dialect: str = "auto", id_column: str | None = None, date_format: str | None = None
) -> Export:
    """Read one export file (see the module docstring); ExportError when it cannot be read."""
    if dialect != "auto" and dialect not in DIALECTS:
        raise ValueError(f"unknown dialect {dialect!r}; use 'auto' or one of {', '.join(DIALECTS)}")
    try:
        return _export(path, _read_records(path), dialect, id_column, date_format)
    except _Unreadable as exc:
        raise ExportError(f"{path}: {exc}") from None


def parse_date(text: str, dialect: str, date_format: str | None = None) -> datetime:
    """A platform's timestamp text as a datetime in UTC (the text taken as UTC when it names no
    zone).

    ISO 8601 is always accepted. A date whose day and month could be swapped (03/04/2026) is read
    with `date_format` (a strptime format) when given, else ValueError says it is ambiguous.
    """
    moment = _parse_moment(text, dialect, date_format)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


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


# -- Reading files into records ---------------------------------------------------------------


def _read_records(path: Path) -> _Records:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise _Unreadable(
            f"files ending {suffix or 'without a suffix'} are not read; "
            f"save the export as one of {', '.join(SUFFIXES)}"
        )
    data = _read_bytes(path)
    if suffix == ".xlsx":
        return _xlsx_records(data)
    if suffix in (".json", ".jsonl", ".ndjson"):
        return _json_records(data, lines=suffix != ".json")
    return _text_records(_decode(data), suffix)


def _read_bytes(path: Path) -> bytes:
    limit = f"over the {MAX_FILE_BYTES // 2**20} MB limit for one export; export it in parts"
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise _Unreadable(f"the file is {path.stat().st_size / 2**20:.1f} MB, {limit}")
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise _Unreadable("the file does not exist (was it moved while being read?)") from None
    except OSError as exc:
        raise _Unreadable(
            f"the file cannot be read ({exc.strerror or type(exc).__name__})"
        ) from None
    if len(data) > MAX_FILE_BYTES:
        raise _Unreadable(f"the file grew {limit}")
    return data


def _decode(data: bytes) -> str:
    """Text from UTF-16 or UTF-8 (by BOM), else UTF-8, else Windows-1252."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    else:
        encoding = "utf-8-sig" if data.startswith(codecs.BOM_UTF8) else "utf-8"
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        if encoding != "utf-8":
            raise _Unreadable(
                f"the file has a {encoding} byte-order mark but byte {exc.start} is "
                "not valid in it; re-save the export"
            ) from None
        try:
            text = data.decode("cp1252")
        except UnicodeDecodeError as exc:
            raise _Unreadable(
                f"byte {exc.start} is neither UTF-8 nor Windows-1252 text; "
                "re-save the export as CSV UTF-8"
            ) from None
    if "\x00" in text:
        raise _Unreadable(
            "the file contains NUL characters: it is UTF-16 without a byte-order "
            "mark, or not text at all; re-save it as CSV UTF-8"
        )
    return text


def _text_records(text: str, suffix: str) -> _Records:
    first_line, _, rest = text.partition("\n")
    hint = re.fullmatch(r"sep=(.)\r?", first_line)
    if hint:  # Excel's delimiter hint; Excel does not show it as a row
        delimiter, text = hint.group(1), rest
    else:
        delimiter = "\t" if suffix == ".tsv" else _delimiter(text)
    records: _Records = []
    number = 0
    try:
        for number, cells in enumerate(
            csv.reader(io.StringIO(text, newline=""), delimiter=delimiter), 1
        ):
            if any(cell.strip() for cell in cells):
                _count(records, number, list(cells))
    except csv.Error as exc:
        raise _Unreadable(
            f"row {number + 1} cannot be read as {_name(delimiter)}-separated text ({exc})"
        ) from None
    return records


def _delimiter(text: str) -> str:
    """The delimiter that splits the header widest while the first rows all agree with it (ties
    go to csv.Sniffer's guess); else the one used most in line 1; else (one column) one that
    splits no row."""
    try:
        sniffed = csv.Sniffer().sniff(text[:8192], delimiters=_DELIMITERS).delimiter
    except csv.Error:
        sniffed = ","
    widths = {d: _consistent_width(text, d) for d in _DELIMITERS}
    wide = [d for d in _DELIMITERS if widths[d] > 1]
    if wide:
        return max(wide, key=lambda d: (widths[d], d == sniffed))
    first_line = text.partition("\n")[0]
    if any(d in first_line for d in _DELIMITERS):
        return max(_DELIMITERS, key=lambda d: (first_line.count(d), d == sniffed))
    single = [d for d in _DELIMITERS if widths[d] == 1]
    return sniffed if sniffed in single or not single else single[0]


def _consistent_width(text: str, delimiter: str) -> int:
    """The header's width when the first 1000 rows all have it with this delimiter, else 0."""
    try:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
        widths = {len(cells) for cells in islice(reader, 1000) if cells}
    except csv.Error:
        return 0
    return widths.pop() if len(widths) == 1 else 0


def _xlsx_records(data: bytes) -> _Records:
    try:
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:  # a file openpyxl cannot open is one unreadable export
        raise _Unreadable(
            f"it is not a readable Excel workbook ({type(exc).__name__}); it may be "
            "password-protected, or an old .xls renamed; re-save it as .xlsx"
        ) from None
    try:
        sheet = book.worksheets[0]
        sheet.reset_dimensions()  # some writers store wrong dimensions, which would cut rows
        records: _Records = []
        for number, cells in enumerate(sheet.iter_rows(values_only=True), 1):
            row = [_xlsx_cell(value) for value in cells]
            if any(cell != "" for cell in row):
                _count(records, number, row)
        return records
    except _Unreadable:
        raise
    except Exception as exc:
        raise _Unreadable(f"the first worksheet could not be read ({type(exc).__name__})") from None
    finally:
        book.close()


def _xlsx_cell(value: object) -> _Cell:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _json_records(data: bytes, lines: bool) -> _Records:
    try:
        text = data.decode(json.detect_encoding(data))
    except UnicodeDecodeError as exc:
        raise _Unreadable(f"byte {exc.start} is not valid UTF-8; JSON must be UTF-8") from None
    if lines:
        return _json_table(_json_lines(text))
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # one object per line, under a .json name
            return _json_table(_json_lines(text))
        raise _Unreadable(
            f"not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    if isinstance(document, dict):
        listed = next(
            (document[k] for k in ("responses", "data", "results") if k in document), None
        )
        document = [document] if listed is None else listed
    if not isinstance(document, list):
        raise _Unreadable(
            "the JSON is not a list of responses, nor an object with one under "
            '"responses", "data" or "results"'
        )
    return _json_table(list(enumerate(document, 1)))


def _json_lines(text: str) -> list[tuple[int, object]]:
    items: list[tuple[int, object]] = []
    for number, line in enumerate(text.split("\n"), 1):  # not splitlines: U+2028 is JSON text
        if line.strip():
            try:
                items.append((number, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise _Unreadable(f"line {number} is not a JSON object ({exc.msg})") from None
    return items


def _json_table(items: list[tuple[int, object]]) -> _Records:
    """JSON objects as records: a header of every key in order of first use, then one row each."""
    objects: list[tuple[int, dict[str, object]]] = []
    names: dict[str, None] = {}
    for number, item in items:
        if not isinstance(item, dict):
            raise _Unreadable(f"item {number} is not an object with named fields")
        objects.append((number, item))
        names.update(dict.fromkeys(item))
    records: _Records = [(0, list(names))]
    for number, item in objects:
        cells: list[_Cell] = [_json_cell(item.get(name)) for name in names]
        if any(_text(cell) for cell in cells):
            _count(records, number, cells)
    return records


def _json_cell(value: object) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _count(records: _Records, number: int, cells: list[_Cell]) -> None:
    if len(records) > MAX_ROWS + 2:  # at most three header rows
        raise _Unreadable(_TOO_MANY_ROWS.format(MAX_ROWS))
    records.append((number, cells))


# -- _Records into an Export -------------------------------------------------------------------


def _export(
    path: Path, records: _Records, dialect: str, id_column: str | None, date_format: str | None
) -> Export:
    if not records:
        raise _Unreadable("the file is empty: it has no header row")
    if dialect == "auto":
        dialect = next(d for d in _DETECTION_ORDER if _looks_like(d, records))
    elif not _looks_like(dialect, records):
        found = ", ".join(repr(_text(cell)) for cell in records[0][1][:40]) or "none"
        raise _Unreadable(
            f"this is not a {dialect} export as this reader knows it: expected "
            f"{_EXPECTED[dialect]}; found columns {found}"
        )
    header_rows = 3 if dialect == "qualtrics" else 1
    layout = _layout(dialect, records[:header_rows])
    data = records[header_rows:]
    if len(data) > MAX_ROWS:
        raise _Unreadable(_TOO_MANY_ROWS.format(MAX_ROWS))
    id_key = _id_key(dialect, layout, id_column)
    seen: Counter[str] = Counter()
    rows = [
        _row(layout, number, cells, id_key, date_format, dialect, seen) for number, cells in data
    ]
    return Export(path=path, dialect=dialect, columns=layout.columns, rows=rows)


def _looks_like(dialect: str, records: _Records) -> bool:
    header = [_text(cell) for cell in records[0][1]]
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


def _is_import_row(cells: list[_Cell]) -> bool:
    texts = [_text(cell) for cell in cells if _text(cell)]
    return bool(texts) and all(_import_id(text) is not None for text in texts)


def _import_id(text: str) -> dict[str, object] | None:
    try:
        found = json.loads(text) if text.startswith("{") else None
    except json.JSONDecodeError:
        return None
    return found if isinstance(found, dict) and "ImportId" in found else None


def _layout(dialect: str, header_rows: _Records) -> _Layout:
    raw = [_text(cell) for cell in header_rows[0][1]]
    while raw and not raw[-1]:  # blank trailing header cells (formatting, stray commas)
        raw.pop()
    names = _unique([name or f"Column {i}" for i, name in enumerate(raw, 1)], set())
    dropped = _QUALTRICS_DROPPED if dialect == "qualtrics" else frozenset()
    keys = [(i, name) for i, name in enumerate(names) if raw[i] not in dropped]
    aliases: list[tuple[int, str]] = []
    if dialect == "qualtrics":
        texts = [_text(cell) for cell in header_rows[1][1]]
        kept = [(i, texts[i]) for i, _ in keys if i < len(texts) and texts[i]]
        unique = _unique([text for _, text in kept], set(names))
        aliases = [(i, text) for (i, _), text in zip(kept, unique, strict=True)]
    by_lower = {name.lower(): (i, name) for i, name in reversed(keys)}
    submitted = next((by_lower[n] for n in _SUBMITTED[dialect] if n in by_lower), None)
    layout = _Layout([name for _, name in keys], keys, aliases, len(names), submitted)
    if dialect == "qualtrics" and submitted is not None:
        _qualtrics_zone(layout, header_rows[2][1], submitted)
    return layout


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


def _qualtrics_zone(layout: _Layout, import_row: list[_Cell], submitted: tuple[int, str]) -> None:
    index, name = submitted
    info = _import_id(_text(import_row[index])) if index < len(import_row) else None
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
            found = ", ".join(repr(name) for name in layout.columns[:40])
            raise _Unreadable(
                f"id_column {id_column!r} is not a column of this file; its columns are {found}"
            )
        return id_column
    wanted = _PLATFORM_ID.get(dialect)
    return next((name for name in layout.columns if name.lower() == wanted), None)


def _row(
    layout: _Layout,
    number: int,
    cells: list[_Cell],
    id_key: str | None,
    date_format: str | None,
    dialect: str,
    seen: Counter[str],
) -> ExportRow:
    problems: list[str] = []
    texts = [_text(cell) for cell in cells]
    if any(texts[layout.width :]):
        problems.append(
            f"the row has {len(texts)} cells but the header {layout.width}; the cells "
            f"after column {layout.width} were not read"
        )
    texts += [""] * (layout.width - len(texts))
    values = {name: texts[i] for i, name in layout.keys}
    values.update((text, texts[i]) for i, text in layout.aliases)
    response_id = values[id_key] if id_key else ""
    if not response_id:
        if id_key:
            problems.append(f"{id_key} is empty; the response id is a hash of the row's values")
        response_id = _row_hash(values, layout.columns, seen)
    submitted_at = None
    if layout.submitted is not None:
        index, name = layout.submitted
        submitted_at = _submitted(
            cells[index] if index < len(cells) else "", name, layout, dialect, date_format, problems
        )
    return ExportRow(number, response_id, values, submitted_at, tuple(problems))


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
    cell: _Cell,
    name: str,
    layout: _Layout,
    dialect: str,
    date_format: str | None,
    problems: list[str],
) -> datetime | None:
    if isinstance(cell, str) and not cell.strip():
        return None
    if layout.zone_problem:
        problems.append(layout.zone_problem)
        return None
    if isinstance(cell, datetime):
        moment = cell
    else:
        try:
            moment = _parse_moment(cell, dialect, date_format)
        except ValueError as exc:
            problems.append(f"{name} {exc}")
            return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=layout.zone or UTC)).astimezone(UTC)


def _text(cell: _Cell) -> str:
    return cell.isoformat() if isinstance(cell, datetime) else cell.strip()


def _name(delimiter: str) -> str:
    return {"\t": "tab", ",": "comma", ";": "semicolon"}.get(delimiter, repr(delimiter))


# -- Dates ------------------------------------------------------------------------------------


def _parse_moment(text: str, dialect: str, date_format: str | None) -> datetime:
    """A timestamp as written by `dialect`, naive when the text names no zone."""
    if dialect not in DIALECTS:
        raise ValueError(f"unknown dialect {dialect!r}; use one of {', '.join(DIALECTS)}")
    text = " ".join(text.split())
    if not text:
        raise ValueError("the date is empty")
    if date_format:
        try:
            return datetime.strptime(text, date_format)
        except ValueError:
            pass
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    moment, zone = _split_zone(text)
    readings: dict[datetime, str] = {}
    for fmt in _candidate_formats(moment):
        try:
            readings.setdefault(datetime.strptime(moment, fmt), fmt)
        except ValueError:
            continue
    unmatched = f" (date_format {date_format!r} does not match it)" if date_format else ""
    if not readings:
        raise ValueError(
            f"'{text}' is not a date as {dialect} writes them (e.g. "
            f"'{_EXAMPLE_DATE[dialect]}') nor ISO 8601{unmatched}; set date_format "
            "for this form"
        )
    if len(readings) > 1:
        (first, fmt1), (second, fmt2) = sorted(readings.items())[:2]
        raise ValueError(
            f"'{text}': day and month are ambiguous ({first:%d %b %Y} or "
            f"{second:%d %b %Y}){unmatched}; set date_format for this form, e.g. "
            f"'{fmt1}' or '{fmt2}'"
        )
    found = next(iter(readings))
    return found.replace(tzinfo=zone) if zone else found


def _split_zone(text: str) -> tuple[str, tzinfo | None]:
    """'... GMT', '... GMT+1', '... UTC-05:30' -> the text before it and that fixed zone."""
    match = _ZONE.match(text)
    if not match:
        return text, None
    hours, minutes = int(match["h"] or 0), int(match["m"] or 0)
    if hours > 23 or minutes > 59:
        raise ValueError(f"'{text}': the zone offset is out of range")
    offset = timedelta(hours=hours, minutes=minutes) * (-1 if match["sign"] == "-" else 1)
    return match["moment"], timezone(offset)


def _candidate_formats(moment: str) -> list[str]:
    """The strptime formats that could fit: each day/month order, the one time shape given."""
    day, _, clock = moment.partition(" ")
    dates = next((formats for sep, formats in _DATE_FORMATS.items() if sep in day), ())
    if not clock:
        return list(dates)
    seconds = ":%S" if clock.count(":") >= 2 else ""
    if clock.lower().endswith(("am", "pm")):
        shape = f"%I:%M{seconds} %p"
    else:
        shape = f"%H:%M{seconds}" + (".%f" if seconds and "." in clock else "")
    return [f"{d} {shape}" for d in dates]
