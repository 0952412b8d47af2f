"""Fixtures for the routing-rules tests: the example rules folder and small report factories."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline.report import Report
from pipeline.rules import RuleSet, load_ruleset

EXAMPLE_SERVICES = """\
services:
  - id: advice-centre
    name: The Advice and Support Centre (Students' Union)
    email: advice@su.example.ac.uk
    fingerprint: 0123456789ABCDEF0123456789ABCDEF01234567
    template: referral-default      # optional; referral template name
  - id: student-services
    name: Student Services
    email: student.services@example.ac.uk
    fingerprint: 89ab cdef 0123 4567 89ab cdef 0123 4567 89ab cdef
"""

EXAMPLE_ROUTING = """\
# routing.yaml -- rules run in file-name order, then in order within a file
rules:
  - name: hate-crime-keywords
    when: {any_keyword: ["racist", "homophobic", "hate crime"]}
    set: {category: hate-crime}
  - name: sexual-violence
    when: {category: [sexual-violence, sexual-harassment]}
    refer: [advice-centre, student-services]
  - name: urgent
    when: {any_keyword: ["suicide", "kill myself", "in danger"]}
    set: {urgent: true}
    refer: [student-services]
  - name: anonymous-no-ack
    when: {anonymous: true}
    acknowledge: none
default: {refer: [advice-centre], acknowledge: ack-default}
"""

WriteRules = Callable[..., Path]
MakeReport = Callable[..., Report]


def write_rules_into(folder: Path, files: dict[str, str]) -> Path:
    """Write `files` (name -> YAML text, dedented) into `folder` and return it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return folder


@pytest.fixture
def write_rules(tmp_path: Path) -> WriteRules:
    """write_rules(routing=..., services=..., **more): a rules folder under tmp_path.

    `services` defaults to the example services; `routing` (routing.yaml) to the example
    routing; other keyword arguments name further files ("routing_2" -> routing_2.yaml).
    Pass None to leave a file out.
    """

    def write(
        routing: str | None = EXAMPLE_ROUTING,
        services: str | None = EXAMPLE_SERVICES,
        **more: str,
    ) -> Path:
        files = {"services.yaml": services, "routing.yaml": routing}
        files.update({f"{name}.yaml": text for name, text in more.items()})
        present = {name: text for name, text in files.items() if text is not None}
        return write_rules_into(tmp_path / "rules", present)

    return write


@pytest.fixture(scope="session")
def example_files() -> dict[str, str]:
    """The example folder's files: name -> text."""
    return {"services.yaml": EXAMPLE_SERVICES, "routing.yaml": EXAMPLE_ROUTING}


@pytest.fixture(scope="session")
def example_ruleset(
    tmp_path_factory: pytest.TempPathFactory, example_files: dict[str, str]
) -> RuleSet:
    folder = tmp_path_factory.mktemp("example-rules")
    return load_ruleset(write_rules_into(folder, example_files))


def new_report(body: str = "", subject: str = "A report", **fields: object) -> Report:
    """A form report with the given text; other Report fields by keyword."""
    values: dict[str, object] = {"source": "form", "received_at": datetime(2024, 5, 1, tzinfo=UTC)}
    values.update(fields)
    return Report(subject=subject, body=body, **values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def make_report() -> MakeReport:
    """make_report(body, subject=..., **fields) -> Report."""
    return new_report
