"""One form export that fails, whatever the fault, fails alone: the error names its path (never
its content), the form's other files go through, and it waits in place for the next poll, so
nothing is lost. Polled with a real `Ingest` (database, gpg, rules) of a test deployment.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.app import App
from pipeline.intake import forms
from pipeline.intake.forms import FormSource
from tests.integration import conftest as integration
from tests.integration.conftest import Deployment

deployment = integration.deployment  # the whole-deployment fixture, for a real Ingest

FORM = """
[[forms]]
id = "cms"
path = "exports/*.json"
dialect = "generic"
id_column = "id"
settle_seconds = 0
{archive}
[forms.columns]
description = "details"
"""
CANARY = "CANARY-IN-EXPORT"


@pytest.fixture
def app(deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    monkeypatch.setenv("TEST_IMAP_PASSWORD", deployment.imap.password)
    (deployment.root / "exports").mkdir()
    deployment.write(extra=FORM.format(archive=""))
    opened = App.open(deployment.config())
    yield opened
    opened.close()


def source(deployment: Deployment) -> FormSource:
    config = deployment.config()
    return FormSource(config.forms[0], config.data_dir)


def drop(deployment: Deployment, name: str, text: str) -> Path:
    path = deployment.root / "exports" / name
    path.write_text(text, encoding="utf-8")
    return path


def response(number: int) -> str:
    return json.dumps([{"id": str(number), "details": f"Report {number} {CANARY}"}])


def test_json_nested_too_deeply_fails_that_file_only(deployment: Deployment, app: App) -> None:
    depth = 100_000
    deep = drop(deployment, "a-deep.json", '[{"id": "' + CANARY + '", "x": ' + "[" * depth)
    good = drop(deployment, "b-good.json", response(1))

    result = source(deployment).poll(app.ingest)

    assert result.counts.get("stored") == 1 and not good.exists()
    (error,) = result.errors
    assert error.startswith(f"form:cms: {deep}: ") and "nested too deeply" in error
    assert CANARY not in error and deep.exists()
    again = source(deployment).poll(app.ingest)  # it waits in place, still failing alone
    assert deep.exists() and len(again.errors) == 1 and not again.counts.get("stored")


def test_an_unexpected_fault_names_the_file_and_it_is_taken_at_the_next_poll(
    deployment: Deployment, app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = drop(deployment, "a-bad.json", response(1))
    good = drop(deployment, "b-good.json", response(2))
    real_read = forms.read_export

    def faulty(path: Path, *args: object, **kwargs: object) -> object:
        if path.name == "a-bad.json":
            raise RuntimeError(f"a library bug quoting the file: {CANARY}")
        return real_read(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(forms, "read_export", faulty)
    result = source(deployment).poll(app.ingest)

    assert result.counts.get("stored") == 1 and not good.exists() and bad.exists()
    (error,) = result.errors
    assert error.startswith(f"form:cms: {bad}: ") and "RuntimeError" in error
    assert CANARY not in error and "next poll" in error
    assert "export" in result.causes

    monkeypatch.setattr(forms, "read_export", real_read)  # the fault is gone
    later = source(deployment).poll(app.ingest)
    assert later.counts.get("stored") == 1 and not later.errors and not bad.exists()


def test_a_file_that_cannot_be_archived_stays_and_the_others_go_on(
    deployment: Deployment, app: App
) -> None:
    """A real fault after the responses were committed: the archive folder is a file."""
    blocker = deployment.root / "archive-blocked"
    blocker.write_text("not a folder")
    deployment.write(extra=FORM.format(archive=f'archive_dir = "{blocker}"'))
    first = drop(deployment, "a.json", response(1))
    second = drop(deployment, "b.json", response(2))

    result = source(deployment).poll(app.ingest)

    assert result.counts.get("stored") == 2  # both files' responses are committed
    assert [error.split(": ")[1] for error in result.errors] == [str(first), str(second)]
    assert first.exists() and second.exists()

    blocker.unlink()
    later = source(deployment).poll(app.ingest)
    assert later.counts == {"seen": 2} and not later.errors  # taken once, never twice
    assert not first.exists() and not second.exists()
    assert len(list(blocker.iterdir())) == 2  # archived, encrypted
