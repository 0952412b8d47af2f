"""intake/exports.py, by property: any rows csv.DictWriter writes, in any encoding and delimiter
the reader supports, read back as the same values, rows and spreadsheet row numbers."""

from __future__ import annotations

import csv
import string
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.intake.exports import read_export

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
