"""Form exports taken in slices: a large export never holds up the mail polled in the same loop
(a poll of a form hands over rows for `slice_seconds`, at least one, then returns and says how
many remain), and across polls, changed files and crashes every response is stored exactly once;
the file leaves its folder only once all its rows are committed."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import Session, col, select

from pipeline.app import App
from pipeline.intake import PollResult
from pipeline.intake.forms import REMAINING, FormSource
from pipeline.models import ReportRow, SourceItem
from tests.integration.conftest import Deployment, email
from tests.integration.forms_data import PLATFORMS, Response, form_config

GENERIC = PLATFORMS["generic"]


def responses(count: int) -> list[Response]:
    return [
        Response(str(200 + i), f"r{i}@example.ac.uk", f"Reporter {i}", i % 2 == 0, f"SLICE-{i}")
        for i in range(count)
    ]


def drop(deployment: Deployment, rows: list[Response], name: str = "export") -> Path:
    path = deployment.root / "exports" / f"{name}.csv"
    GENERIC.write(path, rows, "utf-8", ",")
    return path


@pytest.fixture
def app(deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    monkeypatch.setenv("TEST_IMAP_PASSWORD", deployment.imap.password)
    (deployment.root / "exports").mkdir()
    deployment.write(extra=form_config(GENERIC, "report-form", "exports"))
    opened = App.open(deployment.config())
    yield opened
    opened.close()


def form_source(app: App, slice_seconds: float) -> FormSource:
    source = next(s for s in app.sources if isinstance(s, FormSource))
    source.slice_seconds = slice_seconds
    return source


def form_items(app: App) -> list[tuple[str, int | None]]:
    """The form responses taken in: (source key, report id) each."""
    query = select(SourceItem.source_key, SourceItem.report_id).where(
        col(SourceItem.source_key).startswith("form:report-form:")
    )
    with Session(app.engine) as session:
        return list(session.exec(query))


def report_count(app: App) -> int:
    with Session(app.engine) as session:
        return len(session.exec(select(ReportRow.id)).all())


def taken(result: PollResult) -> int:
    return sum(result.counts.get(status, 0) for status in ("stored", "unrouted", "quarantined"))


def test_a_large_export_goes_in_slices_and_mail_is_taken_in_between(
    deployment: Deployment, app: App
) -> None:
    export = drop(deployment, responses(5))
    original = export.read_bytes()
    form = form_source(app, 0)  # a slice of one row: every poll returns after one
    mail, first = app.poll()

    assert taken(first) == 1 and first.counts[REMAINING] == 4 and export.exists()
    deployment.imap.append(email("Someone followed me home. MAIL-MARK"))
    mail, second = app.poll()  # the mail is not kept waiting behind the export
    assert mail.counts == {"stored": 1} and second.counts[REMAINING] == 3

    polls = [first, second]
    while export.exists() and len(polls) < 10:
        polls.append(form.poll(app.ingest))
    assert [taken(p) for p in polls] == [1, 1, 1, 1, 1]
    assert [p.counts.get(REMAINING, 0) for p in polls] == [4, 3, 2, 1, 0]
    items = form_items(app)
    assert len(items) == 5 and len({report for _, report in items}) == 5
    assert report_count(app) == 6  # five responses and the mail, each once
    (archived,) = (deployment.data_dir / "archive" / "report-form").iterdir()
    assert deployment.keys.decrypt(archived.read_bytes()) == original


def test_an_export_replaced_between_polls_is_read_again_and_each_row_goes_once(
    deployment: Deployment, app: App
) -> None:
    export = drop(deployment, responses(3))
    form = form_source(app, 0)
    assert taken(form.poll(app.ingest)) == 1
    drop(deployment, responses(6))  # a cumulative export of the same form, same name
    newer = export.read_bytes()

    results = [form.poll(app.ingest) for _ in range(6) if export.exists()]

    assert results[0].counts == {"seen": 1, "stored": 1, REMAINING: 4}
    assert sum(taken(r) for r in results) == 5 and not export.exists()
    assert len(form_items(app)) == 6 and report_count(app) == 6
    (archived,) = (deployment.data_dir / "archive" / "report-form").iterdir()
    assert deployment.keys.decrypt(archived.read_bytes()) == newer


def test_an_export_replaced_while_its_last_rows_go_in_is_not_archived_unread(
    deployment: Deployment, app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    export = drop(deployment, responses(2))
    form = form_source(app, 60)
    real_take = app.ingest.take_report

    def replacing(*args: object, **kwargs: object) -> object:
        monkeypatch.setattr(app.ingest, "take_report", real_take)
        drop(deployment, responses(3))  # the platform writes a newer export meanwhile
        return real_take(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(app.ingest, "take_report", replacing)
    first = form.poll(app.ingest)

    assert first.counts == {"stored": 2, REMAINING: 1} and export.exists()
    newer = export.read_bytes()
    again = form.poll(app.ingest)
    assert again.counts == {"seen": 2, "stored": 1} and not export.exists()
    (archived,) = (deployment.data_dir / "archive" / "report-form").iterdir()
    assert deployment.keys.decrypt(archived.read_bytes()) == newer


def test_a_failed_row_waits_for_the_next_poll_without_rereading_the_file(
    deployment: Deployment, app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    export = drop(deployment, responses(3))
    form = form_source(app, 60)
    real_take = app.ingest.take_report

    def failing_once(report: object, *args: object, **kwargs: object) -> object:
        monkeypatch.setattr(app.ingest, "take_report", real_take)
        raise RuntimeError("a fault in one row")

    monkeypatch.setattr(app.ingest, "take_report", failing_once)
    first = form.poll(app.ingest)

    assert first.counts == {"stored": 2} and len(first.errors) == 1  # no REMAINING: no rush
    assert REMAINING not in first.counts and export.exists()
    again = form.poll(app.ingest)  # only the failed row is tried again: nothing read twice
    assert again.counts == {"stored": 1} and not again.errors and not export.exists()
    assert len(form_items(app)) == 3


def test_a_file_that_cannot_be_read_holds_up_no_other_file(
    deployment: Deployment, app: App
) -> None:
    """Its read takes time but hands over no row, so the slice goes on to the next file."""
    unreadable = deployment.root / "exports" / "a-other.csv"
    unreadable.write_text("id,colour\n1,blue\n")
    export = drop(deployment, responses(2), name="b-export")
    form = form_source(app, 0)

    first = form.poll(app.ingest)
    assert len(first.errors) == 1 and taken(first) == 1 and first.counts[REMAINING] == 1
    second = form.poll(app.ingest)
    assert len(second.errors) == 1 and taken(second) == 1 and REMAINING not in second.counts
    assert not export.exists() and unreadable.exists()


def test_a_response_exported_twice_in_one_file_is_taken_once(
    deployment: Deployment, app: App
) -> None:
    once = responses(1)[0]
    drop(deployment, [once, dataclasses.replace(once, description="SLICE-again")])
    result = form_source(app, 60).poll(app.ingest)

    assert result.counts == {"stored": 1, "seen": 1} and not result.errors
    assert len(form_items(app)) == 1 and report_count(app) == 1


def test_a_crash_mid_slice_loses_no_row_and_takes_none_twice(deployment: Deployment) -> None:
    (deployment.root / "exports").mkdir()
    deployment.write(extra=form_config(GENERIC, "report-form", "exports"))
    export = drop(deployment, responses(4))

    crashed = deployment.run_once(crash_at="after-commit:2")  # SIGKILL after the second row
    assert crashed.returncode == -9 and export.exists()
    runs = 0
    while export.exists() and runs < 5:
        deployment.run_in_process()
        runs += 1

    assert not export.exists()
    advice = deployment.keys.emails["advice-centre"]
    referred = [
        deployment.keys.decrypt(m.message.get_payload()[1].get_payload(decode=True)).decode()  # type: ignore[index,union-attr]
        for m in deployment.smtp.messages
        if m.rcpt_tos == [advice]
    ]
    for i in range(4):
        assert sum(f"SLICE-{i}" in text for text in referred) == 1, f"row {i}"
