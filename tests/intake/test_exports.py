"""intake/exports.py: form export files in each platform's layout -> rows, or ExportError.

Every file is written here, in tmp_path, the way the platform writes it: Google Forms' CSV,
Microsoft Forms' workbook (openpyxl), Qualtrics' three header rows, Jisc, JSON and JSON Lines.
"""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path

import openpyxl
import pytest

from pipeline.intake import readers
from pipeline.intake.exports import (
    ExportError,
    is_temporary_name,
    neutralise_cell,
    parse_date,
    read_export,
)


def write_csv(
    path: Path, rows: list[list[str]], delimiter: str = ",", encoding: str = "utf-8"
) -> Path:
    with path.open("w", encoding=encoding, newline="") as handle:
        csv.writer(handle, delimiter=delimiter).writerows(rows)
    return path


def write_xlsx(path: Path, rows: list[list[object]]) -> Path:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    for row in rows:
        sheet.append(row)
    book.save(path)
    return path


# -- Google Forms --------------------------------------------------------------------------

GOOGLE = [
    ["Timestamp", "Email Address", "What happened?", "Where did it happen?"],
    ["2026/11/24 10:15:32 am GMT", "a@example.ac.uk", "Shouted at, twice", "Library, floor 2"],
    ["2026/11/24 2:01:09 pm GMT+1", "", "Line one\nLine two\nLine three", "Canteen"],
    ["2026/11/25 9:00:00 AM GMT", "", "Followed home", "Bus stop"],
]


def test_google_forms_csv(tmp_path: Path) -> None:
    export = read_export(write_csv(tmp_path / "responses.csv", GOOGLE))
    assert export.dialect == "google"
    assert export.columns == GOOGLE[0]
    assert [row.row for row in export.rows] == [2, 3, 4]  # the multi-line cell is one row
    first, second, _ = export.rows
    assert first.values["Where did it happen?"] == "Library, floor 2"
    assert second.values["What happened?"] == "Line one\nLine two\nLine three"
    assert first.submitted_at == datetime(2026, 11, 24, 10, 15, 32, tzinfo=UTC)
    assert second.submitted_at == datetime(2026, 11, 24, 13, 1, 9, tzinfo=UTC)
    assert all(len(row.response_id) == 64 for row in export.rows)  # no id column: a sha256
    assert len({row.response_id for row in export.rows}) == 3
    assert all(row.problems == () for row in export.rows)


def test_google_sheets_dates_and_an_ambiguous_one(tmp_path: Path) -> None:
    rows = [
        ["Timestamp", "What happened?"],
        ["11/24/2026 10:15:32", "a"],
        ["03/04/2026 10:00", "b"],
    ]
    path = write_csv(tmp_path / "sheet.csv", rows)
    clear, ambiguous = read_export(path).rows
    assert clear.submitted_at == datetime(2026, 11, 24, 10, 15, 32, tzinfo=UTC)
    assert ambiguous.submitted_at is None
    assert len(ambiguous.problems) == 1
    assert ambiguous.problems[0].startswith("'Timestamp': day and month are ambiguous")
    assert "set date_format for this form" in ambiguous.problems[0]
    assert "03/04" not in ambiguous.problems[0]  # a reason never quotes the value
    resolved = read_export(path, date_format="%d/%m/%Y %H:%M").rows[1]
    assert resolved.submitted_at == datetime(2026, 4, 3, 10, 0, tzinfo=UTC)
    assert resolved.problems == ()


# -- Microsoft Forms -----------------------------------------------------------------------


def test_microsoft_forms_xlsx(tmp_path: Path) -> None:
    header = ["ID", "Start time", "Completion time", "Email", "Name", "What happened?", "When?"]
    path = write_xlsx(
        tmp_path / "Incident report(1-2).xlsx",
        [
            header,
            [
                1,
                datetime(2026, 11, 24, 10, 1, 5),
                datetime(2026, 11, 24, 10, 20, 5),
                "anonymous",
                None,
                "Pushed =in the corridor",
                "Monday",
            ],
            [
                2,
                datetime(2026, 11, 24, 11, 0),
                "11/24/26 11:09:30",
                "s123@example.ac.uk",
                "Sam Student",
                "Line one\nLine two",
                None,
            ],
        ],
    )
    export = read_export(path)
    assert export.dialect == "microsoft"
    assert export.columns == header
    first, second = export.rows
    assert (first.row, second.row) == (2, 3)
    assert (first.response_id, second.response_id) == ("1", "2")
    assert first.submitted_at == datetime(2026, 11, 24, 10, 20, 5, tzinfo=UTC)
    assert first.values["Completion time"] == "2026-11-24T10:20:05"
    assert first.values["Name"] == "" and second.values["When?"] == ""
    assert second.values["What happened?"] == "Line one\nLine two"
    assert second.submitted_at == datetime(2026, 11, 24, 11, 9, 30, tzinfo=UTC)


# -- Qualtrics -----------------------------------------------------------------------------

# The real layout: column ids, question texts, ImportId JSON (one Qualtrics CSV export).
# fmt: off
QUALTRICS_IDS = [
    "StartDate", "EndDate", "Status", "IPAddress", "Progress", "Duration (in seconds)",
    "Finished", "RecordedDate", "ResponseId", "RecipientLastName", "RecipientFirstName",
    "RecipientEmail", "ExternalReference", "LocationLatitude", "LocationLongitude",
    "DistributionChannel", "UserLanguage", "Q1", "Q2", "Q3",
]
QUALTRICS_TEXTS = [
    "Start Date", "End Date", "Response Type", "IP Address", "Progress", "Duration (in seconds)",
    "Finished", "Recorded Date", "Response ID", "Recipient Last Name", "Recipient First Name",
    "Recipient Email", "External Data Reference", "Location Latitude", "Location Longitude",
    "Distribution Channel", "User Language", "What happened?", "Where did it happen?",
    "Anything else?\n(witnesses, dates)",
]
QUALTRICS_IMPORT_IDS = [
    "startDate", "endDate", "status", "ipAddress", "progress", "duration", "finished",
    "recordedDate", "_recordId", "recipientLastName", "recipientFirstName", "recipientEmail",
    "externalDataReference", "locationLatitude", "locationLongitude", "distributionChannel",
    "userLanguage", "QID1_TEXT", "QID2_TEXT", "QID3_TEXT",
]
# fmt: on


def qualtrics_import_row(zone: str) -> list[str]:
    return [
        json.dumps(
            {"ImportId": key, "timeZone": zone} if key.endswith("Date") else {"ImportId": key}
        )
        for key in QUALTRICS_IMPORT_IDS
    ]


def qualtrics_row(response_id: str, recorded: str, ip: str, answers: list[str]) -> list[str]:
    # fmt: off
    return [
        "2026-11-24 10:01:00", recorded, "IP Address", ip, "100", "600", "True", recorded,
        response_id, "", "", "", "", "51.50720", "-0.12760", "anonymous", "EN", *answers,
    ]
    # fmt: on


def test_qualtrics_csv(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "Incident_November+24,+2026_10.30.csv",
        [
            QUALTRICS_IDS,
            QUALTRICS_TEXTS,
            qualtrics_import_row("America/Denver"),
            qualtrics_row(
                "R_1AbCdEfGhIjKlMn",
                "2026-11-24 10:15:32",
                "192.0.2.10",
                ["Shouted at, twice", "Library", "Two\nwitnesses"],
            ),
            qualtrics_row(
                "R_2ZyXwVuTsRqPoNm",
                "2026-11-25 09:00:00",
                "198.51.100.7",
                ["Followed", "Bus stop", ""],
            ),
        ],
    )
    export = read_export(path)
    assert export.dialect == "qualtrics"
    first, second = export.rows
    assert (first.row, second.row) == (4, 5)  # three header rows, one with a line break
    assert (first.response_id, second.response_id) == ("R_1AbCdEfGhIjKlMn", "R_2ZyXwVuTsRqPoNm")
    assert first.values["Q1"] == first.values["What happened?"] == "Shouted at, twice"
    assert first.values["Anything else?\n(witnesses, dates)"] == "Two\nwitnesses"
    assert first.values["ResponseId"] == first.values["Response ID"]
    # 10:15:32 in America/Denver (MST, UTC-7) as the ImportId row says
    assert first.submitted_at == datetime(2026, 11, 24, 17, 15, 32, tzinfo=UTC)
    dropped = {
        "IPAddress",
        "LocationLatitude",
        "LocationLongitude",
        "IP Address",
        "Location Latitude",
        "Location Longitude",
    }
    for row in export.rows:
        assert not dropped & set(row.values)
    assert not dropped & set(export.columns)
    for secret in ("192.0.2.10", "198.51.100.7", "51.50720", "-0.12760"):
        assert secret not in repr(export)
    assert first.values["RecipientEmail"] == ""  # kept: the anonymity stage decides


def test_qualtrics_zone_that_is_unknown_is_a_problem_not_a_failure(tmp_path: Path) -> None:
    row = qualtrics_row("R_1", "2026-11-24 10:15:32", "192.0.2.1", ["a", "b", "c"])
    path = write_csv(
        tmp_path / "q.csv", [QUALTRICS_IDS, QUALTRICS_TEXTS, qualtrics_import_row("Mars/Base"), row]
    )
    (only,) = read_export(path).rows
    assert only.submitted_at is None
    assert only.problems == ("RecordedDate: the export's time zone 'Mars/Base' is not known here",)
    assert only.values["Q1"] == "a"


def test_qualtrics_explicit_but_without_import_row_is_refused(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "q.csv", [QUALTRICS_IDS, QUALTRICS_TEXTS])
    with pytest.raises(ExportError, match=r"ImportId") as caught:
        read_export(path, dialect="qualtrics")
    assert str(caught.value).startswith(f"{path}: ")
    assert read_export(path).dialect == "generic"


# -- Jisc, generic, JSON -------------------------------------------------------------------


def test_jisc_csv(tmp_path: Path) -> None:
    rows = [
        ["Response ID", "Started", "Completed", "1. What happened?", "2. Where?"],
        [
            "80321456",
            "24/11/2026 10:02",
            "24/11/2026 10:15",
            "Café incident’s details",
            "Union bar",
        ],
    ]
    export = read_export(write_csv(tmp_path / "jisc.csv", rows))
    assert export.dialect == "jisc"
    (row,) = export.rows
    assert (row.row, row.response_id) == (2, "80321456")
    assert row.submitted_at == datetime(2026, 11, 24, 10, 15, tzinfo=UTC)
    assert row.values["1. What happened?"] == "Café incident’s details"


def test_generic_csv_with_duplicate_headers_and_padding(tmp_path: Path) -> None:
    rows = [
        ["Name", "Comment", "Name", ""],
        ["  Ann  ", "  spaced  "],
        ["", "", "", ""],
        ["Bo", "x", "y"],
    ]
    export = read_export(write_csv(tmp_path / "generic.csv", rows))
    assert export.dialect == "generic"
    assert export.columns == ["Name", "Comment", "Name (2)"]
    assert [row.row for row in export.rows] == [2, 4]  # the blank row 3 is no response
    assert export.rows[0].values == {"Name": "Ann", "Comment": "spaced", "Name (2)": ""}
    assert export.rows[0].submitted_at is None


def test_extra_cells_beyond_the_header_are_a_problem(tmp_path: Path) -> None:
    rows = [["Name", "Comment"], ["Ann", "a", "spilled"], ["Bo", "b"]]
    spilled, fine = read_export(write_csv(tmp_path / "ragged.csv", rows)).rows
    assert spilled.values == {"Name": "Ann", "Comment": "a"}
    assert "were not read" in spilled.problems[0]
    assert fine.problems == ()


def test_json_array_and_wrapped_object(tmp_path: Path) -> None:
    items = [{"id": "a1", "text": "first", "n": 3}, {"id": "a2", "text": "second", "extra": None}]
    (tmp_path / "r.json").write_text(json.dumps(items), encoding="utf-8")
    (tmp_path / "w.json").write_text(json.dumps({"responses": items}), encoding="utf-8")
    for name in ("r.json", "w.json"):
        export = read_export(tmp_path / name, id_column="id")
        assert export.dialect == "generic"
        assert export.columns == ["id", "text", "n", "extra"]
        assert [(row.row, row.response_id) for row in export.rows] == [(1, "a1"), (2, "a2")]
        assert export.rows[0].values["n"] == "3"
        assert export.rows[1].values["n"] == export.rows[1].values["extra"] == ""


def test_a_single_json_object_is_one_response(tmp_path: Path) -> None:
    (tmp_path / "one.json").write_text('{"text": "hello", "tags": ["a", "b"]}', encoding="utf-8")
    (row,) = read_export(tmp_path / "one.json").rows
    assert (row.row, row.values) == (1, {"text": "hello", "tags": '["a", "b"]'})


@pytest.mark.parametrize("name", ["r.jsonl", "r.ndjson", "lines.json"])
def test_json_lines_rows_are_line_numbers(tmp_path: Path, name: str) -> None:
    text = (
        '{"Timestamp": "2026-11-24T10:00:00Z", "text": "a\\nb"}\n\n{"Timestamp": "", "text": "c"}\n'
    )
    (tmp_path / name).write_text(text, encoding="utf-8")
    export = read_export(tmp_path / name)
    assert [row.row for row in export.rows] == [1, 3]
    assert export.rows[0].values["text"] == "a\nb"
    assert export.rows[0].submitted_at == datetime(2026, 11, 24, 10, tzinfo=UTC)
    assert export.rows[1].submitted_at is None


# -- Encodings and delimiters --------------------------------------------------------------

TEXT_ROWS = [["Timestamp", "Comment"], ["2026/11/24 10:15:32 am GMT", "Café staff’s reply, “rude”"]]


@pytest.mark.parametrize(
    ("encoding", "delimiter", "first_bytes"),
    [
        ("utf-8", ",", b"Timestamp,"),
        ("utf-8-sig", ",", b"\xef\xbb\xbfTimestamp,"),
        ("utf-16", "\t", b"\xff\xfeT\x00"),  # Excel's "Unicode Text", saved as .csv
        ("cp1252", ";", b"Timestamp;"),
    ],
)
def test_encodings(tmp_path: Path, encoding: str, delimiter: str, first_bytes: bytes) -> None:
    path = write_csv(tmp_path / "export.csv", TEXT_ROWS, delimiter, encoding)
    assert path.read_bytes().startswith(first_bytes)
    export = read_export(path)
    assert export.dialect == "google"
    assert export.columns == TEXT_ROWS[0]
    assert export.rows[0].values["Comment"] == "Café staff’s reply, “rude”"


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_delimiters_with_the_others_inside_cells(tmp_path: Path, delimiter: str) -> None:
    rows = [
        ["Name", "Comment", "Place"],
        ["Ann", 'a, b; c\td "q"', "x"],
        ["Bo", "multi\nline; yes, no", "y"],
    ]
    export = read_export(write_csv(tmp_path / "d.txt", rows, delimiter))
    assert export.columns == rows[0]
    assert [list(row.values.values()) for row in export.rows] == rows[1:]


def test_excel_sep_line_is_honoured_and_not_a_row(tmp_path: Path) -> None:
    path = tmp_path / "sep.csv"
    path.write_text("sep=;\nName;Comment\nAnn;a,b\n", encoding="utf-8")
    (row,) = read_export(path).rows
    assert row.values == {"Name": "Ann", "Comment": "a,b"}
    assert row.row == 2


def test_rows_after_a_multi_line_cell_are_spreadsheet_rows(tmp_path: Path) -> None:
    rows = [
        ["Name", "Comment"],
        ["Ann", "one\ntwo\nthree\nfour"],
        ["Bo", "b"],
        ["Cy", "c\r\nd"],
        ["Di", "e"],
    ]
    export = read_export(write_csv(tmp_path / "m.csv", rows))
    assert [(row.row, row.values["Name"]) for row in export.rows] == [
        (2, "Ann"),
        (3, "Bo"),
        (4, "Cy"),
        (5, "Di"),
    ]


# -- Ids -----------------------------------------------------------------------------------


def test_id_column_is_honoured(tmp_path: Path) -> None:
    rows = [
        ["Timestamp", "Reference", "Comment"],
        ["2026-11-24 10:00", "REF-7", "a"],
        ["2026-11-24 11:00", "", "b"],
    ]
    path = write_csv(tmp_path / "ids.csv", rows)
    with_ref, empty_ref = read_export(path, id_column="Reference").rows
    assert with_ref.response_id == "REF-7"
    assert len(empty_ref.response_id) == 64
    assert "'Reference' is empty" in empty_ref.problems[0]
    with pytest.raises(ExportError, match=r"id_column 'Ref' is not a column.*'Reference'"):
        read_export(path, id_column="Ref")


def test_hash_ids_are_stable_when_a_later_export_appends_rows(tmp_path: Path) -> None:
    header = ["Timestamp", "Comment"]
    early = [["2026/11/24 10:00:00 am GMT", "a"], ["2026/11/24 10:00:00 am GMT", "a"]]
    first = read_export(write_csv(tmp_path / "1.csv", [header, *early]))
    later = read_export(
        write_csv(tmp_path / "2.csv", [header, *early, ["2026/11/25 9:00:00 am GMT", "b"]])
    )
    first_ids = [row.response_id for row in first.rows]
    later_ids = [row.response_id for row in later.rows]
    assert later_ids[:2] == first_ids
    assert len(set(later_ids)) == 3  # two identical submissions keep two ids


# -- Refusals ------------------------------------------------------------------------------


def test_explicit_dialect_that_does_not_fit_names_expected_and_found(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "g.csv", [["Name", "Comment"], ["Ann", "a"]])
    with pytest.raises(ExportError) as caught:
        read_export(path, dialect="microsoft")
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert '"Start time"' in message and '"Completion time"' in message
    # the first row was not recognised as a header: it may be a response, so it is not shown
    assert "first row (2 cells, not shown)" in message
    assert "Name" not in message and "Comment" not in message
    google = write_csv(tmp_path / "google.csv", [["Timestamp", "Comment"], ["x", "a"]])
    with pytest.raises(ExportError, match=r'looks like a google export \(set dialect = "google"'):
        read_export(google, dialect="microsoft")


def test_empty_file_is_refused_and_header_only_has_no_rows(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(ExportError, match=r"empty\.csv: the file is empty"):
        read_export(tmp_path / "empty.csv")
    export = read_export(write_csv(tmp_path / "h.csv", [["Timestamp", "Comment"]]))
    assert (export.dialect, export.columns, export.rows) == ("google", ["Timestamp", "Comment"], [])


@pytest.mark.parametrize(
    ("name", "content", "pattern"),
    [
        ("r.xls", b"x", r"\.xls are not read; save the export as one of .*\.csv.*\.xlsx"),
        ("r.xlsx", b"not a zip", r"not a readable Excel workbook"),
        ("r.csv", "Name,Comment\n".encode("utf-16-le"), r"NUL characters"),
        ("r.json", b'{"a": [1, 2', r"not valid JSON at line 1"),
        ("r.json", b'{"responses": "no"}', r"not a list of responses"),
        ("r.jsonl", b'{"a": 1}\n[1]\n', r"item 2 is not an object"),
    ],
)
def test_unreadable_files(tmp_path: Path, name: str, content: bytes, pattern: str) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ExportError, match=pattern) as caught:
        read_export(tmp_path / name)
    assert str(caught.value).startswith(str(tmp_path / name))


def test_size_and_row_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_csv(tmp_path / "big.csv", [["Name"], *[[f"n{i}"] for i in range(6)]])
    monkeypatch.setattr(readers, "MAX_ROWS", 5)
    with pytest.raises(ExportError, match=r"more than 5 rows"):
        read_export(path)
    monkeypatch.setattr(readers, "MAX_ROWS", 6)
    assert len(read_export(path).rows) == 6
    monkeypatch.setattr(readers, "MAX_FILE_BYTES", 10)
    with pytest.raises(ExportError, match=r"MB limit"):
        read_export(path)


def test_unknown_dialect_name_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown dialect 'typeform'"):
        read_export(tmp_path / "x.csv", dialect="typeform")


# -- Dates, names, cells -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "dialect", "expected"),
    [
        ("2026/11/24 10:15:32 am GMT", "google", datetime(2026, 11, 24, 10, 15, 32, tzinfo=UTC)),
        ("2026/11/24 10:15:32 pm GMT-5", "google", datetime(2026, 11, 25, 3, 15, 32, tzinfo=UTC)),
        ("24/11/2026 10:15:32", "google", datetime(2026, 11, 24, 10, 15, 32, tzinfo=UTC)),
        ("11/24/26 10:15:32", "microsoft", datetime(2026, 11, 24, 10, 15, 32, tzinfo=UTC)),
        ("2026-11-24 10:15:32", "qualtrics", datetime(2026, 11, 24, 10, 15, 32, tzinfo=UTC)),
        ("2026-11-24T10:15:32+01:00", "jisc", datetime(2026, 11, 24, 9, 15, 32, tzinfo=UTC)),
        ("05/05/2026", "generic", datetime(2026, 5, 5, tzinfo=UTC)),
    ],
)
def test_parse_date(text: str, dialect: str, expected: datetime) -> None:
    parsed = parse_date(text, dialect)
    assert parsed == expected
    assert parsed.tzinfo is not None


def test_parse_date_ambiguity_and_garbage() -> None:
    with pytest.raises(ValueError, match=r"day and month are ambiguous.*set date_format"):
        parse_date("03/04/26 10:00:00", "microsoft")
    assert parse_date("03/04/26 10:00:00", "microsoft", "%m/%d/%y %H:%M:%S") == datetime(
        2026, 3, 4, 10, tzinfo=UTC
    )
    with pytest.raises(ValueError, match=r"^not a date as google writes them") as caught:
        parse_date("yesterday", "google")
    assert "yesterday" not in str(caught.value)


@pytest.mark.parametrize(
    ("name", "temporary"),
    [
        ("~$responses.xlsx", True),
        (".~lock.responses.xlsx#", True),
        ("responses.csv.part", True),
        ("responses.xlsx.crdownload", True),
        ("responses.csv.tmp", True),
        ("responses.csv.PARTIAL", True),
        (".DS_Store", True),
        ("responses.csv", False),
        ("Incident report(1-12).xlsx", False),
        ("partial-results.csv", False),
    ],
)
def test_is_temporary_name(name: str, temporary: bool) -> None:
    assert is_temporary_name(Path("/drop") / name) is temporary


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+1", "'+1"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("  =1+1", "'  =1+1"),
        ("\t=1", "'\t=1"),
        ("\rx", "'\rx"),
        ("plain text", "plain text"),
        ("a=b", "a=b"),
        ("", ""),
    ],
)
def test_neutralise_cell(value: str, written: str) -> None:
    assert neutralise_cell(value) == written
