"""intake/exports.py, by property: any rows csv.DictWriter writes, in any encoding and delimiter
the reader supports, read back as the same values, rows and spreadsheet row numbers; and no
value of a broken export ever appears in an ExportError, a row problem or a RowError."""

from __future__ import annotations

import csv
import io
import json
import string
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import FormConfig
from pipeline.intake.exports import ExportError, read_export
from pipeline.intake.forms import RowError, check_columns, mapped_headers, row_report
from pipeline.intake.readers import lines

# Header names are plain words (as question ids and texts mostly are); values are anything a
# student may type: delimiters, quotes, line breaks, unicode. NUL is not text and is refused.
HEADER = st.text(string.ascii_letters + string.digits + " _", min_size=1, max_size=12).map(
    str.strip
)
TRICKY = st.sampled_from([",", ";", "\t", '"', "\n", "\r", " ", "=", "é", "€"])
ANY_CHAR = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
# cp1252 only: ASCII and accented letters (bytes 0xC0-0xFF). Bytes 0x80-0xBF such as "’" can
# form valid UTF-8 together with those, which the reader (rightly) takes for UTF-8.
CP1252_CHAR = st.sampled_from(string.printable + "éèàçüößñÉÀ")
ENCODINGS = {"utf-8": ANY_CHAR, "utf-8-sig": ANY_CHAR, "utf-16": ANY_CHAR, "cp1252": CP1252_CHAR}


LINE_BREAKS = st.sampled_from(["\r", "\n", "\r\n", "\u2028", "\x85", "\x0b", "\x0c", "\x1e"])


@settings(max_examples=500)
@given(st.lists(st.one_of(LINE_BREAKS, st.sampled_from(["a", ",", '"']), ANY_CHAR)).map("".join))
def test_lines_split_as_stringio_does(text: str) -> None:
    """The reader's line splitting (no copy of the text) is the one csv is documented with."""
    assert list(lines(text)) == list(io.StringIO(text, newline=""))


@st.composite
def exports(draw: st.DrawFn) -> tuple[str, str, list[str], list[dict[str, str]]]:
    encoding = draw(st.sampled_from(sorted(ENCODINGS)))
    delimiter = draw(st.sampled_from([",", ";", "\t"]))
    keys = draw(st.lists(HEADER.filter(bool), min_size=1, max_size=5, unique=True))
    value = st.text(st.one_of(ENCODINGS[encoding], TRICKY), max_size=20)
    row = st.fixed_dictionaries({key: value for key in keys})
    rows = draw(st.lists(row.filter(lambda r: any(v.strip() for v in r.values())), max_size=6))
    return encoding, delimiter, keys, rows


@settings(max_examples=250, deadline=None)
@given(exports())
def test_written_rows_read_back_the_same(
    case: tuple[str, str, list[str], list[dict[str, str]]],
) -> None:
    encoding, delimiter, keys, rows = case
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "export.csv"
        with path.open("w", encoding=encoding, newline="") as handle:
            writer = csv.DictWriter(handle, keys, delimiter=delimiter)
            writer.writeheader()
            writer.writerows(rows)
        export = read_export(path)
    assert export.columns == keys
    assert len(export.rows) == len(rows)
    assert [row.values for row in export.rows] == [
        {key: text.strip() for key, text in row.items()} for row in rows
    ]
    assert [row.row for row in export.rows] == list(range(2, len(rows) + 2))


# Values a person could type, each marked so that finding one in a message is never chance.
MARKED = st.text(st.one_of(ANY_CHAR, TRICKY), max_size=12).map(lambda text: f"Vq{text}Zx")
LAYOUTS = ["auto", "google", "microsoft", "qualtrics", "jisc", "generic"]


@st.composite
def broken_exports(draw: st.DrawFn) -> tuple[str, str, list[list[str]], str, str | None]:
    """Rows of marked values in shapes that fail: no header row, a header missing what the
    form maps, timestamps that are no dates, ragged rows, JSON that does not parse."""
    width = draw(st.integers(1, 4))
    rows = draw(st.lists(st.lists(MARKED, min_size=1, max_size=width + 2), min_size=1, max_size=4))
    header = draw(st.sampled_from([None, ["Timestamp", "Comment"], ["id", "Comment"]]))
    suffix = draw(st.sampled_from([".csv", ".json", ".jsonl"]))
    dialect = draw(st.sampled_from(LAYOUTS))
    id_column = draw(st.sampled_from([None, "id", "Response ID"]))
    return suffix, dialect, ([header] if header else []) + rows, draw(MARKED), id_column


@settings(max_examples=200, deadline=None)
@given(broken_exports())
def test_no_cell_value_is_ever_in_an_error_message(
    case: tuple[str, str, list[list[str]], str, str | None],
) -> None:
    suffix, dialect, rows, stray, id_column = case
    values = {cell for row in rows for cell in row if cell.startswith("Vq")} | {stray}
    config = FormConfig.model_validate(
        {
            "id": "f",
            "path": "*.csv",
            "anonymous_when": {"column": "Anonymous?", "equals": ["Yes"]},
            "columns": {"description": "Comment", "occurred_at": "Timestamp"},
        }
    )
    messages: list[str] = []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"export{suffix}"
        if suffix == ".csv":
            with path.open("w", encoding="utf-8", newline="") as handle:
                csv.writer(handle).writerows(rows)
        else:  # objects keyed by the first row, then a line that is not JSON at all
            keys = rows[0]
            objects = [json.dumps(dict(zip(keys, row, strict=False))) for row in rows[1:]]
            path.write_text("\n".join([*objects, stray]), encoding="utf-8")
        try:
            export = read_export(path, dialect, id_column, None, mapped_headers(config))
            check_columns(config, export)
        except ExportError as exc:
            messages.append(str(exc))
        else:
            for row in export.rows:
                messages.extend(row.problems)
                try:
                    row_report(config, export, row, datetime.now(UTC), frozenset())
                except RowError as exc:
                    messages.append(str(exc))
    for message in messages:
        for value in values:
            assert value not in message
