"""Export files into records: one file's bytes in, its rows as lists of cells out, or
`Unreadable` saying why (without the file's path, which the caller adds, and without any cell).

Delimited text may be UTF-8 (with or without BOM), UTF-16 with BOM (Excel's "Unicode Text") or
Windows-1252, separated by `,`, `;` or tab (an Excel `sep=` first line is honoured). Workbooks
are read with openpyxl (first sheet). JSON is a list of objects (or an object holding one under
"responses", "data" or "results"), nested no deeper than Python's parser reaches; JSON Lines is
one object a line. Each record is (row number as a spreadsheet or editor shows it, cells);
blank rows are skipped. The header row of a JSON file is built from the objects' keys and
numbered 0; a key an object does not have is the cell None (`ABSENT`), so a missing answer can
be told from a blank one.

No message raised here quotes a cell: a response's text never reaches a log, a reason or an
alert. Parser messages that could quote the document (csv, json) are replaced by fixed text.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections.abc import Iterator
from datetime import date, datetime, time
from itertools import islice
from pathlib import Path

MAX_FILE_BYTES = 50 * 1024 * 1024
MAX_ROWS = 100_000
SUFFIXES = (".csv", ".tsv", ".txt", ".xlsx", ".json", ".jsonl", ".ndjson")
JSON_HEADER_ROW = 0  # the row number of the header built from JSON keys

Cell = str | datetime | None  # None: a JSON object without this key
Records = list[tuple[int, list[Cell]]]  # (row number as a spreadsheet shows it, cells)
ABSENT: Cell = None

_DELIMITERS = ",;\t"
# A line and its ending, as io.StringIO(text, newline="") splits them: \r\n, \r or \n.
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")
_TOO_MANY_ROWS = (
    "the file has more than {:,} rows, the most one export may have; export it in parts "
    "(e.g. by date range)"
)
_TOO_DEEP = (
    "the JSON is nested too deeply to read (lists or objects inside each other thousands of "
    "levels deep); a form export is a list of flat responses"
)
# json.JSONDecodeError.msg texts that quote nothing of the document (the C scanner's)
_JSON_MESSAGES = frozenset(
    {
        "Expecting value",
        "Expecting ',' delimiter",
        "Expecting ':' delimiter",
        "Expecting property name enclosed in double quotes",
        "Unterminated string starting at",
        "Invalid control character at",
        "Invalid \\escape",
        "Invalid \\uXXXX escape",
        "Extra data",
    }
)


class Unreadable(Exception):
    """Why a file cannot be read, without its path and without any of its cells."""


def read_records(path: Path, data: bytes | None = None) -> Records:
    """The file's records by its suffix; Unreadable when it cannot be read. `data`: the file's
    bytes when they are in memory already (a decrypted archive: never written to disk)."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise Unreadable(
            f"files ending {suffix or 'without a suffix'} are not read; "
            f"save the export as one of {', '.join(SUFFIXES)}"
        )
    data = _read_bytes(path) if data is None else data
    if suffix == ".xlsx":
        return _xlsx_records(data)
    if suffix in (".json", ".jsonl", ".ndjson"):
        return _json_records(data, lines=suffix != ".json")
    return _text_records(_decode(data), suffix)


def cell_text(cell: Cell) -> str:
    """A cell as stripped text: a datetime in ISO 8601, an absent JSON key as ""."""
    if cell is None:
        return ""
    return cell.isoformat() if isinstance(cell, datetime) else cell.strip()


def check_row_count(count: int) -> None:
    """Unreadable when a file has more response rows than one export may have."""
    if count > MAX_ROWS:
        raise Unreadable(_TOO_MANY_ROWS.format(MAX_ROWS))


def _read_bytes(path: Path) -> bytes:
    limit = f"over the {MAX_FILE_BYTES // 2**20} MB limit for one export; export it in parts"
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise Unreadable(f"the file is {path.stat().st_size / 2**20:.1f} MB, {limit}")
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise Unreadable("the file does not exist (was it moved while being read?)") from None
    except OSError as exc:
        raise Unreadable(
            f"the file cannot be read ({exc.strerror or type(exc).__name__})"
        ) from None
    if len(data) > MAX_FILE_BYTES:
        raise Unreadable(f"the file grew {limit}")
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
            raise Unreadable(
                f"the file has a {encoding} byte-order mark but byte {exc.start} is "
                "not valid in it; re-save the export"
            ) from None
        try:
            text = data.decode("cp1252")
        except UnicodeDecodeError as exc:
            raise Unreadable(
                f"byte {exc.start} is neither UTF-8 nor Windows-1252 text; "
                "re-save the export as CSV UTF-8"
            ) from None
    if "\x00" in text:
        raise Unreadable(
            "the file contains NUL characters: it is UTF-16 without a byte-order "
            "mark, or not text at all; re-save it as CSV UTF-8"
        )
    return text


def _text_records(text: str, suffix: str) -> Records:
    first_line, _, rest = text.partition("\n")
    hint = re.fullmatch(r"sep=(.)\r?", first_line)
    if hint:  # Excel's delimiter hint; Excel does not show it as a row
        delimiter, text = hint.group(1), rest
    else:
        delimiter = "\t" if suffix == ".tsv" else _delimiter(text)
    records: Records = []
    number = 0
    try:
        for number, cells in enumerate(csv.reader(lines(text), delimiter=delimiter), 1):
            if any(cell.strip() for cell in cells):
                _count(records, number, list(cells))
    except csv.Error as exc:
        raise Unreadable(
            f"row {number + 1} cannot be read as {_name(delimiter)}-separated text "
            f"({_csv_problem(exc)})"
        ) from None
    return records


def lines(text: str) -> Iterator[str]:
    """The lines of `text` with their endings, one at a time, as io.StringIO(text,
    newline="") gives them (what csv reads), without its copy of the whole text at four bytes
    a character."""
    return (match.group() for match in _LINE.finditer(text))


def _csv_problem(exc: csv.Error) -> str:
    """csv's complaint without any text of the file (its strict-mode messages quote it)."""
    if str(exc).startswith("field larger than field limit"):
        return f"a cell is longer than {csv.field_size_limit():,} characters"
    return "a quote or delimiter is out of place"


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
        reader = csv.reader(lines(text), delimiter=delimiter)
        widths = {len(cells) for cells in islice(reader, 1000) if cells}
    except csv.Error:
        return 0
    return widths.pop() if len(widths) == 1 else 0


def _xlsx_records(data: bytes) -> Records:
    import openpyxl  # here: some 20 MB of imports (numpy, lxml) that only workbooks need

    try:
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:  # a file openpyxl cannot open is one unreadable export
        raise Unreadable(
            f"it is not a readable Excel workbook ({type(exc).__name__}); it may be "
            "password-protected, or an old .xls renamed; re-save it as .xlsx"
        ) from None
    try:
        sheet = book.worksheets[0]
        sheet.reset_dimensions()  # some writers store wrong dimensions, which would cut rows
        records: Records = []
        for number, cells in enumerate(sheet.iter_rows(values_only=True), 1):
            row = [_xlsx_cell(value) for value in cells]
            if any(cell != "" for cell in row):
                _count(records, number, row)
        return records
    except Unreadable:
        raise
    except Exception as exc:  # only the class: openpyxl's messages may quote a cell
        raise Unreadable(f"the first worksheet could not be read ({type(exc).__name__})") from None
    finally:
        book.close()


def _xlsx_cell(value: object) -> Cell:
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


def _json_records(data: bytes, lines: bool) -> Records:
    try:
        text = data.decode(json.detect_encoding(data))
    except UnicodeDecodeError as exc:
        raise Unreadable(f"byte {exc.start} is not valid UTF-8; JSON must be UTF-8") from None
    try:
        return _json_document(text, lines)
    except RecursionError:
        raise Unreadable(_TOO_DEEP) from None


def _json_document(text: str, lines: bool) -> Records:
    if lines:
        return _json_table(_json_lines(text))
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # one object per line, under a .json name
            return _json_table(_json_lines(text))
        raise Unreadable(
            f"not valid JSON at line {exc.lineno}, column {exc.colno}: {_json_problem(exc)}"
        ) from None
    if isinstance(document, dict):
        listed = next(
            (document[k] for k in ("responses", "data", "results") if k in document), None
        )
        document = [document] if listed is None else listed
    if not isinstance(document, list):
        raise Unreadable(
            "the JSON is not a list of responses, nor an object with one under "
            '"responses", "data" or "results"'
        )
    return _json_table(list(enumerate(document, 1)))


def _json_problem(exc: json.JSONDecodeError) -> str:
    """The decoder's complaint when it is one of its fixed texts (its pure-Python fallback
    quotes characters of the document in some), else a fixed text."""
    return exc.msg if exc.msg in _JSON_MESSAGES else "malformed JSON"


def _json_lines(text: str) -> list[tuple[int, object]]:
    items: list[tuple[int, object]] = []
    for number, line in enumerate(text.split("\n"), 1):  # not splitlines: U+2028 is JSON text
        if line.strip():
            try:
                items.append((number, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise Unreadable(
                    f"line {number} is not a JSON object ({_json_problem(exc)})"
                ) from None
    return items


def _json_table(items: list[tuple[int, object]]) -> Records:
    """JSON objects as records: a header of every key in order of first use, then one row each;
    a key an object lacks is ABSENT."""
    objects: list[tuple[int, dict[str, object]]] = []
    names: dict[str, None] = {}
    for number, item in items:
        if not isinstance(item, dict):
            raise Unreadable(f"item {number} is not an object with named fields")
        objects.append((number, item))
        names.update(dict.fromkeys(item))
    records: Records = [(JSON_HEADER_ROW, list(names))]
    for number, item in objects:
        cells = [_json_cell(item[name]) if name in item else ABSENT for name in names]
        if any(cell_text(cell) for cell in cells):
            _count(records, number, cells)
    return records


def _json_cell(value: object) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _count(records: Records, number: int, cells: list[Cell]) -> None:
    check_row_count(len(records) - 2)  # at most three header rows
    records.append((number, cells))


def _name(delimiter: str) -> str:
    return {"\t": "tab", ",": "comma", ";": "semicolon"}.get(delimiter, repr(delimiter))
