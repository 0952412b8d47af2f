"""Form exports in each platform's real layout, written the way each platform writes them."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from openpyxl import Workbook

QUESTION_CATEGORY = "What happened?"
QUESTION_DESCRIPTION = "Please describe the incident"
QUESTION_ANONYMOUS = "Do you want to stay anonymous?"
QUESTION_ROLE = "Are you a student or staff?"
QUESTION_WHERE = "Where did it happen?"


@dataclass(frozen=True)
class Response:
    response_id: str
    email: str
    name: str
    anonymous: bool
    description: str
    category: str = "Sexual harassment"


@dataclass(frozen=True)
class Platform:
    """How one platform lays out an export, and the form config that maps it."""

    name: str
    suffix: str
    write: Callable[[Path, list[Response], str, str], None]  # path, rows, encoding, delimiter
    id_column: str | None
    email_column: str
    name_column: str


def _answers(r: Response) -> list[str]:
    return [r.category, r.description, "Yes" if r.anonymous else "No", "Student", "Library"]


QUESTIONS = [
    QUESTION_CATEGORY,
    QUESTION_DESCRIPTION,
    QUESTION_ANONYMOUS,
    QUESTION_ROLE,
    QUESTION_WHERE,
]


def _write_text(path: Path, rows: list[list[str]], encoding: str, delimiter: str) -> None:
    buffer = io.StringIO(newline="")
    csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n").writerows(rows)
    path.write_bytes(buffer.getvalue().encode(encoding))


def write_google(path: Path, responses: list[Response], encoding: str, delimiter: str) -> None:
    header = ["Timestamp", "Email address", "Name", *QUESTIONS]
    rows = [
        [f"2026/11/{10 + i} 10:15:3{i} am GMT", r.email, r.name, *_answers(r)]
        for i, r in enumerate(responses)
    ]
    _write_text(path, [header, *rows], encoding, delimiter)


def write_qualtrics(path: Path, responses: list[Response], encoding: str, delimiter: str) -> None:
    ids = ["StartDate", "EndDate", "Status", "IPAddress", "Progress", "Duration (in seconds)"]
    ids += ["Finished", "RecordedDate", "ResponseId", "LocationLatitude", "LocationLongitude"]
    ids += ["DistributionChannel", "UserLanguage", "Q1", "Q2", "Q3", "Q4", "Q5", "Q6", "Q7"]
    texts = ["Start Date", "End Date", "Response Type", "IP Address", "Progress"]
    texts += ["Duration (in seconds)", "Finished", "Recorded Date", "Response ID"]
    texts += ["Location Latitude", "Location Longitude", "Distribution Channel", "User Language"]
    texts += ["Email address", "Name", *QUESTIONS]
    imports = [json.dumps({"ImportId": i}) for i in ids]
    start = ["2026-11-24 10:00:00", "2026-11-24 10:05:00", "IP Address", "198.51.100.23", "100"]
    rows = [
        [
            *start,
            "300",
            "True",
            "2026-11-24 10:05:01",
            r.response_id,
            "51.5072",
            "-0.1276",
            "anonymous",
            "EN",
            r.email,
            r.name,
            *_answers(r),
        ]
        for r in responses
    ]
    _write_text(path, [ids, texts, imports, *rows], encoding, delimiter)


def write_jisc(path: Path, responses: list[Response], encoding: str, delimiter: str) -> None:
    header = ["Response ID", "Start date", "Completion date", "1. Email address", "2. Name"]
    header += [f"{i + 3}. {q}" for i, q in enumerate(QUESTIONS)]
    rows = [
        [r.response_id, "2026-11-24 10:00:00", "2026-11-24 10:05:00", r.email, r.name, *_answers(r)]
        for r in responses
    ]
    _write_text(path, [header, *rows], encoding, delimiter)


def write_generic(path: Path, responses: list[Response], encoding: str, delimiter: str) -> None:
    header = ["id", "submitted", "email", "name", *QUESTIONS]
    rows = [
        [r.response_id, "2026-11-24T10:00:00Z", r.email, r.name, *_answers(r)] for r in responses
    ]
    _write_text(path, [header, *rows], encoding, delimiter)


def write_microsoft(path: Path, responses: list[Response], _encoding: str, _delimiter: str) -> None:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["ID", "Start time", "Completion time", "Email", "Name", *QUESTIONS])
    for i, r in enumerate(responses):
        done = datetime(2026, 11, 24, 10, 5, i)
        sheet.append(
            [int(r.response_id), datetime(2026, 11, 24, 10), done, r.email, r.name, *_answers(r)]
        )
    book.save(path)


def write_json(path: Path, responses: list[Response], encoding: str, _delimiter: str) -> None:
    objects = [
        dict(
            zip(
                ["id", "email", "name", *QUESTIONS],
                [r.response_id, r.email, r.name, *_answers(r)],
                strict=True,
            )
        )
        for r in responses
    ]
    if path.suffix == ".jsonl":
        path.write_bytes("".join(json.dumps(o) + "\n" for o in objects).encode(encoding))
    else:
        path.write_bytes(json.dumps(objects).encode(encoding))


PLATFORMS = {
    "google": Platform("google", ".csv", write_google, None, "Email address", "Name"),
    "microsoft": Platform("microsoft", ".xlsx", write_microsoft, None, "Email", "Name"),
    "qualtrics": Platform("qualtrics", ".csv", write_qualtrics, None, "Q1", "Q2"),
    "jisc": Platform("jisc", ".csv", write_jisc, None, "1. Email address", "2. Name"),
    "generic": Platform("generic", ".csv", write_generic, "id", "email", "name"),
    "json": Platform("generic", ".json", write_json, "id", "email", "name"),
    "jsonl": Platform("generic", ".jsonl", write_json, "id", "email", "name"),
}


def column(platform: Platform, question: str) -> str:
    """The header a question has in this platform's export."""
    if platform.name == "jisc":
        return f"{QUESTIONS.index(question) + 3}. {question}"
    if platform.name == "qualtrics":
        return f"Q{QUESTIONS.index(question) + 3}"
    return question


def form_config(
    platform: Platform, form_id: str, folder: str, after: str = "archive-encrypted"
) -> str:
    """The `[[forms]]` TOML that maps this platform's export."""
    id_line = f'id_column = "{platform.id_column}"\n' if platform.id_column else ""
    return f"""
[[forms]]
id = "{form_id}"
path = "{folder}/*{platform.suffix}"
dialect = "auto"
{id_line}after = "{after}"
settle_seconds = 0
anonymous_when = {{column = "{column(platform, QUESTION_ANONYMOUS)}", equals = ["Yes"]}}
[forms.columns]
category = "{column(platform, QUESTION_CATEGORY)}"
description = "{column(platform, QUESTION_DESCRIPTION)}"
email = "{platform.email_column}"
name = "{platform.name_column}"
reporter_role = "{column(platform, QUESTION_ROLE)}"
location = "{column(platform, QUESTION_WHERE)}"
"""
