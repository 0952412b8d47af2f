"""Qualtrics exports mapped by question text, as the README promises: the layout check and the
rows accept the question texts (row 2 of the three header rows) as well as the column ids, also
as a person copying them from the survey would write them.
"""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from openpyxl import Workbook

from pipeline.config import FormConfig
from pipeline.intake.exports import ExportError, read_export
from pipeline.intake.forms import FormSource, row_report, stored_row

NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)
ASK = "Do you want to stay anonymous?"
# Column id, question text as Qualtrics exports it, ImportId.
# fmt: off
COLUMNS = [
    ("RecordedDate", "Recorded Date", {"ImportId": "recordedDate", "timeZone": "Europe/London"}),
    ("ResponseId", "Response ID", {"ImportId": "_recordId"}),
    ("IPAddress", "IP Address", {"ImportId": "ipAddress"}),
    ("Q1", "Email address", {"ImportId": "QID1_TEXT"}),
    ("Q2", "Your name", {"ImportId": "QID2_TEXT"}),
    ("Q3", "What happened? - Selected Choice", {"ImportId": "QID3"}),
    ("Q3_4_TEXT", "What happened? - Something else - Text", {"ImportId": "QID3_4_TEXT"}),
    ("Q4", "Please describe\nthe incident\u00a0 ", {"ImportId": "QID4_TEXT"}),
    ("Q5", ASK, {"ImportId": "QID5"}),
    ("Q6", "Where did  it happen?", {"ImportId": "QID6_TEXT"}),
]
NAMED = ["2026-06-24 10:15:32", "R_named", "192.0.2.10", "sam@example.ac.uk", "Sam",
         "Bullying", "", "He shouted at me", "No", "Library"]
ANONYMOUS = ["2026-06-25 09:00:00", "R_anon", "192.0.2.11", "hidden@example.ac.uk", "Hidden",
             "Something else", "Stalking", "Followed home", "Yes", "Bus stop"]
# fmt: on
BY_TEXT = {
    "description": "Please describe the incident",
    "category": "What happened?",
    "email": "Email address",
    "name": "Your name",
    "location": "Where did it happen?",
    "details": "What happened? - Something else - Text",
}


def header_rows() -> list[list[str]]:
    return [
        [column_id for column_id, _, _ in COLUMNS],
        [text for _, text, _ in COLUMNS],
        [json.dumps(import_id) for _, _, import_id in COLUMNS],
    ]


def write(path: Path, rows: list[list[str]]) -> Path:
    if path.suffix == ".xlsx":
        book = Workbook()
        sheet = book.active
        assert sheet is not None
        for row in rows:
            sheet.append(row)
        book.save(path)
    else:
        with path.open("w", encoding="utf-8-sig", newline="") as handle:
            csv.writer(handle, lineterminator="\r\n").writerows(rows)
    return path


def form(columns: dict[str, str], **extra: object) -> FormConfig:
    settings: dict[str, object] = {
        "id": "qualtrics-form",
        "path": "exports/*",
        "dialect": "qualtrics",
        "anonymous_when": {"column": ASK, "equals": ["Yes"]},
        "columns": columns,
        **extra,
    }
    return FormConfig.model_validate(settings)


@pytest.mark.parametrize("suffix", [".csv", ".xlsx"])
def test_a_form_mapped_by_question_text_is_read(tmp_path: Path, suffix: str) -> None:
    path = write(tmp_path / f"export{suffix}", [*header_rows(), NAMED, ANONYMOUS])
    config = form(BY_TEXT, id_column="Response ID")
    export = FormSource(config, tmp_path).read(path)  # the layout check accepts the texts

    named, anonymous = (row_report(config, export, row, NOW) for row in export.rows)
    assert named.body == "He shouted at me"
    assert (named.sender_name, named.sender_address) == ("Sam", "sam@example.ac.uk")
    assert named.category == "bullying"  # from "What happened? - Selected Choice"
    assert named.fields == {"location": "Library"}  # "Where did  it happen?", spaces collapsed
    assert named.sent_at == datetime(2026, 6, 24, 9, 15, 32, tzinfo=UTC)  # BST in the export
    assert anonymous.anonymous and anonymous.sender_address is None
    assert anonymous.fields == {"location": "Bus stop", "details": "Stalking"}
    assert export.rows[1].response_id == "R_anon"
    kept = json.loads(stored_row(config, export, export.rows[1], anonymous=True))["values"]
    assert "Hidden" not in kept.values() and "192.0.2.11" not in json.dumps(kept)


def test_column_ids_and_texts_as_exported_still_work(tmp_path: Path) -> None:
    path = write(tmp_path / "export.csv", [*header_rows(), NAMED])
    by_id = form({"description": "Q4", "location": "Q6"})
    by_exact_text = form(
        {
            "description": "Please describe\nthe incident",
            "location": "Where did  it happen?",
            "category": "What happened? - Selected Choice",
        }
    )
    for config in (by_id, by_exact_text):
        export = FormSource(config, tmp_path).read(path)
        report = row_report(config, export, export.rows[0], NOW)
        assert report.body == "He shouted at me" and report.fields == {"location": "Library"}


def test_a_plain_form_that_two_columns_share_names_neither(tmp_path: Path) -> None:
    """Two texts that read the same once white space is collapsed: the plain form names
    neither (no answer is read from the wrong column); each text as exported still works."""
    rows = [
        ["ResponseId", "Q1", "Q2", "Q3"],
        ["Response ID", "Describe it", "Comments\n(staff)", "Comments  (staff)"],
        [json.dumps({"ImportId": key}) for key in ("_recordId", "QID1", "QID2", "QID3")],
        ["R_1", "text", "first", "second"],
    ]
    export = read_export(write(tmp_path / "export.csv", rows), "qualtrics")
    (row,) = export.rows
    assert "Comments (staff)" not in row.values
    assert row.values["Comments\n(staff)"] == "first"
    assert row.values["Comments  (staff)"] == "second"


def test_a_misspelt_question_text_is_refused_naming_the_texts_found(tmp_path: Path) -> None:
    path = write(tmp_path / "export.csv", [*header_rows(), NAMED])
    config = form({"description": "Please describe what happened"})
    with pytest.raises(ExportError) as caught:
        FormSource(config, tmp_path).read(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: unknown layout for form 'qualtrics-form'")
    assert "missing ['Please describe what happened']" in message
    assert "question texts" in message and "'Your name'" in message
    for answer in ("192.0.2.10", "sam@example.ac.uk", "He shouted at me", "Library"):
        assert answer not in message  # no cell of a response is quoted
