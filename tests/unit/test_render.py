"""render.py: sandboxed, strict templates; the shipped ones never repeat the report."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.render import Renderer, RenderError, template_names

REPO = Path(__file__).resolve().parents[2]


def test_shipped_ack_gives_reference_next_steps_and_urgent_help() -> None:
    rendered = Renderer(REPO / "templates").render(
        "ack-default",
        {"reference": "R-2026-000042", "anonymous": False, "urgent": False, "services": ["SU"]},
    )
    assert rendered.subject == "We have received your report (R-2026-000042)"
    assert "R-2026-000042" in rendered.body and "SU" in rendered.body
    assert "999" in rendered.body and "116 123" in rendered.body


def test_shipped_templates_exist() -> None:
    assert {"ack-default", "referral-default"} <= template_names(REPO / "templates")


def test_undefined_variable_is_an_error_naming_the_template(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("Subject: x\n\nHello {{ reporter_nmae }}\n")
    with pytest.raises(RenderError, match=r"t\.txt"):
        Renderer(tmp_path).render("t", {"reporter_name": "x"})


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("line one\n{% if %}\n")
    with pytest.raises(RenderError, match=r"t\.txt:2: "):
        Renderer(tmp_path).check("t")


def test_sandbox_blocks_reaching_outside(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("{{ ''.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(RenderError):
        Renderer(tmp_path).render("t", {})


def test_subject_cannot_add_a_header(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("Subject: {{ s }}\n\nbody\n")
    rendered = Renderer(tmp_path).render("t", {"s": "a\r\nBcc: x@evil.example"})
    assert "\n" not in rendered.subject and "\r" not in rendered.subject


@pytest.mark.parametrize(
    "line",
    [
        '{% set sites = {"Library": "Main Library"} %}{{ sites[report.location] }}',
        "{{ report.fields[report.location] }}",
        "{{ report.fields.get(report.location).name }}",
    ],
)
def test_an_error_while_rendering_a_report_never_quotes_it(tmp_path: Path, line: str) -> None:
    """Jinja's message names the missing key; a lookup by an answer would make it content."""
    (tmp_path / "t.txt").write_text(f"Subject: x\n\n{line}\n")
    report = {"location": "CANARY-behind-the-gym", "fields": {}}
    with pytest.raises(RenderError) as raised:
        Renderer(tmp_path).render("t", {"report": report})
    assert str(raised.value).startswith(f"{tmp_path / 't.txt'}:3: ")
    assert "CANARY" not in str(raised.value)
