"""intake/forms.py: export rows -> reports. Anonymity fails closed, date answers stay readable,
values cannot forge referral lines, and no message made on any error path quotes an answer.

Exports are written in tmp_path; the referral is rendered from the shipped template.
"""

from __future__ import annotations

import csv
import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.config import FormConfig
from pipeline.contexts import referral_context
from pipeline.intake.dates import answer_date
from pipeline.intake.exports import Export, ExportError, read_export
from pipeline.intake.forms import (
    CATEGORY_ANSWER,
    RowError,
    as_lines,
    check_columns,
    is_anonymous_row,
    mapped_headers,
    row_report,
    stored_row,
)
from pipeline.render import Renderer
from pipeline.rules import Decision, Service

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)
ASK = "Do you want to stay anonymous?"
WHEN = "When did it happen?"
HEADER = ["id", "Email", "Name", "What happened?", "Describe it", ASK, WHEN, "Where?"]


def form(**extra: object) -> FormConfig:
    settings: dict[str, object] = {
        "id": "f",
        "path": "x/*.csv",
        "id_column": "id",
        "anonymous_when": {"column": ASK, "equals": ["Yes"]},
        "columns": {
            "category": "What happened?",
            "description": "Describe it",
            "email": "Email",
            "name": "Name",
            "occurred_at": WHEN,
            "location": "Where?",
        },
    }
    settings.update(extra)
    return FormConfig.model_validate(settings)


def answers(**given: str) -> list[str]:
    row = {
        "id": "1",
        "Email": "sam@example.ac.uk",
        "Name": "Sam",
        "What happened?": "Sexual harassment",
        "Describe it": "It happened",
        ASK: "No",
        WHEN: "2026-11-20",
        "Where?": "Library",
    }
    row.update(given)
    return [row[name] for name in HEADER]


def read(
    path: Path, rows: list[list[str]], config: FormConfig, header: list[str] = HEADER
) -> Export:
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    export = read_export(path, "auto", config.id_column, None, mapped_headers(config))
    check_columns(config, export)
    return export


# -- anonymous_when fails closed -----------------------------------------------------------


@pytest.mark.parametrize(("answer", "anonymous"), [("Yes", True), ("yes ", True), ("", True)])
def test_blank_or_yes_is_anonymous(tmp_path: Path, answer: str, anonymous: bool) -> None:
    config = form()
    export = read(tmp_path / "a.csv", [answers(**{ASK: answer})], config)
    (row,) = export.rows
    report = row_report(config, export, row, NOW)
    assert is_anonymous_row(config, row) is anonymous
    assert report.anonymous is anonymous
    assert report.sender_address is None and report.sender_name is None
    assert report.ack_address is None


def test_no_is_named(tmp_path: Path) -> None:
    config = form()
    export = read(tmp_path / "n.csv", [answers()], config)
    report = row_report(config, export, export.rows[0], NOW)
    assert not report.anonymous
    assert (report.sender_name, report.ack_address) == ("Sam", "sam@example.ac.uk")


def test_reworded_anonymity_question_refuses_the_file(tmp_path: Path) -> None:
    config = form()
    header = [ASK + " (optional)" if name == ASK else name for name in HEADER]
    with pytest.raises(ExportError) as caught:
        read(tmp_path / "r.csv", [answers()], config, header)
    message = str(caught.value)
    assert f"missing [{ASK!r}]" in message
    assert "anonymity question" in message and "anonymous_when.column" in message
    assert "'Describe it'" in message  # a recognised header row is listed


def test_json_file_without_the_question_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps([{"id": "1", "Describe it": "x", WHEN: "", "Where?": ""}]))
    config = form(columns={"description": "Describe it", "occurred_at": WHEN, "location": "Where?"})
    export = read_export(path, id_column="id", expected=mapped_headers(config))
    with pytest.raises(ExportError, match=r"missing \['Do you want to stay anonymous\?'\]"):
        check_columns(config, export)


def test_json_response_without_the_key_is_quarantined_as_anonymous(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    named = {"id": "1", "Email": "a@example.ac.uk", "Name": "Ann", "Describe it": "x", ASK: "No"}
    keyless = {"id": "2", "Email": "b@example.ac.uk", "Name": "Bo", "Describe it": "y"}
    blank = {"id": "3", "Email": "c@example.ac.uk", "Name": "Cy", "Describe it": "z", ASK: None}
    path.write_text("\n".join(json.dumps(o) for o in (named, keyless, blank)))
    config = form(columns={"description": "Describe it", "email": "Email", "name": "Name"})
    export = read_export(path, id_column="id", expected=mapped_headers(config))
    check_columns(config, export)
    first, second, third = export.rows
    assert second.missing == {ASK} and first.missing == third.missing == frozenset()
    assert not row_report(config, export, first, NOW).anonymous
    with pytest.raises(RowError, match=r"^'Do you want to stay anonymous\?': .* kept as anon"):
        row_report(config, export, second, NOW)
    assert is_anonymous_row(config, second)
    kept = json.loads(stored_row(config, export, second, is_anonymous_row(config, second)))
    assert "Email" not in kept["values"] and "Name" not in kept["values"]
    assert row_report(config, export, third, NOW).anonymous  # null answer: blank: anonymous


# -- date answers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fmt", "shown"),
    [
        ("2026-11-20", None, "2026-11-20"),
        ("20/11/2026", None, "2026-11-20"),
        ("2026-11-20T21:30", None, "2026-11-20 21:30"),
        ("2026-11-20 21:30:15+01:00", None, "2026-11-20 21:30:15+01:00"),
        ("11/20/2026 9:30 pm", None, "2026-11-20 21:30"),
        ("03/04/2026", "%d/%m/%Y", "2026-04-03"),
        ("03/04/2026", "%m/%d/%Y", "2026-03-04"),
        ("2026-11-20", "%d/%m/%Y", "2026-11-20"),  # ISO still read when the format misses
        ("after the party on Friday", None, "after the party on Friday"),
        ("after the party on Friday", "%d/%m/%Y", "after the party on Friday"),
        (
            "03/04/2026",
            None,
            "03/04/2026 (as written: day and month are ambiguous, 4 March 2026 or 3 April 2026)",
        ),
        ("Friday GMT+99", None, "Friday GMT+99"),
    ],
)
def test_answer_date(text: str, fmt: str | None, shown: str) -> None:
    assert answer_date(text, fmt) == shown


@given(st.text(max_size=40), st.sampled_from([None, "%d/%m/%Y", "%Q", "%H:%M"]))
def test_answer_date_never_fails_and_keeps_text_it_cannot_read(text: str, fmt: str | None) -> None:
    shown = answer_date(text, fmt)
    assert isinstance(shown, str)
    assert shown == text or shown[:4].isdigit() or shown.startswith(text)


def test_free_text_and_per_column_formats_reach_the_fields(tmp_path: Path) -> None:
    config = form(
        columns={"description": "Describe it", "occurred_at": WHEN, "seen_at": "Where?"},
        date_formats={"Where?": "%d/%m/%Y"},
    )
    rows = [
        answers(**{WHEN: "after the party on Friday", "Where?": "03/04/2026"}),
        answers(id="2", **{WHEN: "03/04/2026", "Where?": "not sure"}),
    ]
    free, ambiguous = read(tmp_path / "d.csv", rows, config).rows
    export = read(tmp_path / "d.csv", rows, config)
    assert row_report(config, export, free, NOW).fields == {
        "occurred_at": "after the party on Friday",
        "seen_at": "2026-04-03",
    }
    fields = row_report(config, export, ambiguous, NOW).fields
    assert fields["occurred_at"].startswith("03/04/2026 (as written: day and month are ambig")
    assert fields["seen_at"] == "not sure"


def test_date_format_for_an_unmapped_header_is_refused(tmp_path: Path) -> None:
    config = form(date_formats={"When?": "%d/%m/%Y"})
    with pytest.raises(ExportError, match=r"date_formats names \['When\?'\], which"):
        read(tmp_path / "u.csv", [answers()], config)


# -- categories ----------------------------------------------------------------------------


def test_only_categories_the_rules_know_become_the_category(tmp_path: Path) -> None:
    config = form()
    free = "My tutor Jo Bloggs, in room 4"
    export = read(
        tmp_path / "c.csv", [answers(), answers(id="2", **{"What happened?": free})], config
    )
    known = {"sexual-harassment"}
    first, second = (row_report(config, export, row, NOW, known) for row in export.rows)
    assert first.category == "sexual-harassment" and CATEGORY_ANSWER not in first.fields
    assert second.category is None
    assert second.fields[CATEGORY_ANSWER] == free  # shown, encrypted, in the referral


# -- line breaks cannot forge referral lines -----------------------------------------------

BREAKS = ["\n", "\r", "\r\n", "\u2028", "\u2029", "\x0c", "\x0b", "\x85", "\x1e"]


@pytest.mark.parametrize("brk", BREAKS)
def test_every_line_break_becomes_newline(brk: str) -> None:
    assert as_lines(f"x{brk}Reporter: forged{brk}Email: forged@x") == (
        "x\nReporter: forged\nEmail: forged@x"
    )
    assert as_lines("a\x1b[2Jb\x00c\td") == "a[2Jbc\td"


@pytest.mark.parametrize("brk", BREAKS)
def test_multi_line_values_are_indented_in_the_referral(tmp_path: Path, brk: str) -> None:
    forged = f"x{brk}Reporter: forged{brk}Email: forged@x{brk}{brk}Category:   forged"
    config = form()
    rows = [answers(**{"Where?": forged, "Name": f"Sam{brk}Email: forged@x"})]
    export = read(tmp_path / "m.csv", rows, config)
    report = row_report(config, export, export.rows[0], NOW)
    assert report.fields["location"].split("\n")[1:3] == ["Reporter: forged", "Email: forged@x"]
    assert report.sender_name == "Sam Email: forged@x"  # one-line fields lose their breaks
    decision = Decision(report.category, False, False, ["advice"], None, [])
    service = Service("advice", "Advice Centre", "advice@example.ac.uk", "A" * 40)
    context = referral_context("R-2026-000001", report, decision, service)
    body = Renderer(REPO / "templates").render("referral-default", context).body
    lines = body.splitlines()
    assert "Location:   x" in lines
    forged_lines = [line for line in lines if "forged" in line and not line.startswith("  Name:")]
    assert len(forged_lines) == 3
    assert all(line.startswith(" " * 12) for line in forged_lines), forged_lines
    assert sum(line.startswith("Category:") for line in lines) == 1
    assert sum(line.lstrip().startswith("Email:") for line in lines) == 2  # ours + indented


# -- canaries: no answer in any message ----------------------------------------------------

CANARY = "Cnry7Q"


def _canary_rows(count: int = 2) -> list[list[str]]:
    return [[f"{CANARY}{i}-{j}" for j in range(len(HEADER))] for i in range(count)]


def test_no_message_on_any_error_path_quotes_an_answer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    config = form(date_formats={WHEN: "%d/%m/%Y"})
    messages: list[str] = []

    def attempt(path: Path, **options: object) -> None:
        try:
            export = read_export(path, **options)  # type: ignore[arg-type]
            check_columns(config, export)
        except ExportError as exc:
            messages.append(str(exc))
            return
        for row in export.rows:
            messages.extend(row.problems)
            try:
                report = row_report(config, export, row, NOW, frozenset())
            except RowError as exc:
                messages.append(str(exc))
            else:
                assert CANARY in report.body  # the answers travel only inside the report

    def write(name: str, rows: list[list[str]]) -> Path:
        path = tmp_path / name
        with path.open("w", encoding="utf-8", newline="") as handle:
            csv.writer(handle).writerows(rows)
        return path

    expected = {"expected": mapped_headers(config), "id_column": "id"}
    attempt(write("headerless.csv", _canary_rows()), **expected)
    attempt(write("headerless1.csv", _canary_rows()), expected=mapped_headers(config))
    attempt(write("headerless2.csv", _canary_rows()), dialect="microsoft")
    attempt(write("headerless3.csv", _canary_rows()), id_column="Response")
    google = [["Timestamp", *HEADER], *[[f"{CANARY} GMT+99", *r] for r in _canary_rows()]]
    attempt(write("zone.csv", google), **expected)
    google = [["Timestamp", *HEADER], *[[f"03/04/2026 {CANARY}", *r] for r in _canary_rows()]]
    attempt(write("stamp.csv", google), **expected)
    attempt(write("spill.csv", [HEADER, [*_canary_rows(1)[0], CANARY, CANARY]]), **expected)
    blank = [HEADER, [f"{CANARY}-id", "", "", "", "", "", CANARY, CANARY]]
    attempt(write("blank.csv", blank), **expected)
    attempt(write("huge.csv", [HEADER, [CANARY * 30000]]), **expected)
    for name, text in [
        ("a.json", f'[{{"id": "{CANARY}", "x": {CANARY}}}]'),
        ("b.json", f'[{{"id": "{CANARY}\x01"}}]'),
        ("c.json", f'[{{"id": "\\{CANARY}"}}]'),
        ("d.json", f'["{CANARY}"]'),
        ("e.jsonl", f'{{"id": "1"}}\n{{"{CANARY}": {CANARY}}}\n'),
        ("f.json", json.dumps([{"id": CANARY, "Describe it": CANARY, WHEN: CANARY}])),
        ("g.xlsx", CANARY),
        ("h.csv", f"{CANARY}\x81\x8d".encode("latin-1").decode("latin-1")),
    ]:
        (tmp_path / name).write_bytes(text.encode("latin-1", "replace"))
        attempt(tmp_path / name, **expected)
    assert len(messages) >= 20
    assert any("unknown layout for form 'f'" in m and "not shown" in m for m in messages)
    for message in messages:
        assert CANARY not in message, message
    for record in caplog.records:
        assert CANARY not in record.getMessage()


def test_an_anonymous_response_keeps_only_mapped_columns_that_do_not_identify(
    tmp_path: Path,
) -> None:
    """Platforms add identity columns of their own (Qualtrics' RecipientEmail, a student
    number in ExternalReference): an anonymous response's stored record keeps none of them."""
    path = tmp_path / "r.jsonl"
    response = {
        "id": "1",
        "Email": "a@example.ac.uk",
        "Name": "Ann",
        "Describe it": "x",
        ASK: "Yes",
        "RecipientEmail": "ann.recipient@example.ac.uk",
        "ExternalReference": "S1234567",
    }
    path.write_text(json.dumps(response))
    config = form(columns={"description": "Describe it", "email": "Email", "name": "Name"})
    export = read_export(path, id_column="id", expected=mapped_headers(config))
    (row,) = export.rows
    kept = json.loads(stored_row(config, export, row, anonymous=True))
    assert kept["values"] == {"Describe it": "x", ASK: "Yes"}
    named = json.loads(stored_row(config, export, row, anonymous=False))
    assert named["values"]["ExternalReference"] == "S1234567"  # a named response is kept whole


def test_an_anonymous_description_loses_the_name_and_address_given_elsewhere(
    tmp_path: Path,
) -> None:
    path = tmp_path / "r.jsonl"
    response = {
        "id": "1",
        "Email": "ann.example@example.ac.uk",
        "Name": "Ann Example",
        ASK: "Yes",
        "Describe it": "He followed me home. Write to ann.example@example.ac.uk\n\nThanks,\nAnn",
    }
    path.write_text(json.dumps(response))
    config = form(columns={"description": "Describe it", "email": "Email", "name": "Name"})
    export = read_export(path, id_column="id", expected=mapped_headers(config))
    (row,) = export.rows

    report = row_report(config, export, row, NOW)

    assert report.anonymous and "He followed me home." in report.body
    assert "Ann" not in report.body and "ann.example" not in report.body
    assert report.notes  # the referral says what was removed
