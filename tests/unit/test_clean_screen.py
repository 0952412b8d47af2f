"""clean/screen: a named report's programs, macro documents and documents that fetch content from
elsewhere are withheld with a note; everything else travels byte-identical."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pipeline.clean import screen, screen_attachment, screen_attachments
from pipeline.clean.screen import KINDS
from pipeline.report import Attachment, Report
from tests.unit import clean_fixtures as fx

ALL = list(KINDS)
KEPT = "the original is kept in the encrypted record."
ELF = b"\x7fELF\x02\x01\x01" + b"\x00" * 64
PE = b"MZ\x90\x00" + b"\x00" * 56 + (64).to_bytes(4, "little") + b"PE\x00\x00" + b"\x00" * 20


def _screen(data: bytes, name: str, withhold: list[str] = ALL) -> str | None:
    """The note when withheld, None when the attachment travels unchanged."""
    attachment = Attachment(name, "application/octet-stream", data)
    result = screen_attachment(attachment, withhold)
    if result.attachment is not None:
        assert result.attachment is attachment and result.note is None
        return None
    assert result.note is not None and result.note.endswith(KEPT)
    return result.note


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (PE, "holiday-photos.jpg"),  # by content, whatever the name
        (ELF, "notes"),
        (b"\xcf\xfa\xed\xfe" + b"\x00" * 32, "report.pdf"),
        (b"#!/bin/sh\nrm -rf ~\n", "readme.txt"),
        (b"WScript.Echo('hi')", "invoice.js"),  # by name
        (b"anything", "run.ps1"),
        (b"anything", "setup.MSI"),
        (b"anything", "shortcut.lnk"),
        (fx.package([("evidence/tool.exe", b"anything")]), "evidence.zip"),
        (fx.package([("evidence/notes", ELF)]), "evidence.zip"),
    ],
)
def test_programs_and_scripts_are_withheld(data: bytes, name: str) -> None:
    note = _screen(data, name)

    assert note is not None and "program or script" in note


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (fx.docx(), "report.docm"),  # macro-enabled by its name
        (fx.package([*fx.docx_members(), ("word/vbaProject.bin", b"\xd0\xcf")]), "report.docx"),
        (fx.package([*fx.odt_members(), ("Basic/Standard/Module1.xml", b"<m/>")]), "r.odt"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + "_VBA_PROJECT".encode("utf-16-le"), "old.doc"),
    ],
)
def test_macro_documents_are_withheld_whatever_their_name(data: bytes, name: str) -> None:
    note = _screen(data, name)

    assert note is not None and "macros" in note


def test_documents_fetching_a_template_or_linked_file_are_withheld() -> None:
    docx_note = _screen(fx.docx(), "statement.docx")  # settings: an external attachedTemplate
    odt_note = _screen(fx.odt(), "statement.odt")  # draw:image linking file:///C:/Users/...

    assert docx_note is not None and "fetches templates or content from elsewhere" in docx_note
    assert odt_note is not None and "elsewhere" in odt_note


def test_dde_field_is_external() -> None:
    members = dict(fx.docx_members())
    members["word/_rels/settings.xml.rels"] = b'<Relationships xmlns="x"/>'
    members["word/document.xml"] = members["word/document.xml"].replace(
        b"<w:body>",
        b'<w:body><w:p><w:r><w:instrText> DDEAUTO c:\\\\cmd.exe "/k calc"</w:instrText>'
        b"</w:r></w:p>",
    )

    note = _screen(fx.package(list(members.items())), "s.docx")

    assert note is not None and "elsewhere" in note


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (fx.photo(), "photo.jpg"),
        (b"%PDF-1.7\n...", "statement.pdf"),
        (b"It happened on Monday.", "notes.txt"),
        (fx.xlsx(), "log.xlsx"),
        (fx.package([("notes.txt", b"hello"), ("photo.jpg", fx.photo())]), "evidence.zip"),
        (b"The word DDE in a sentence.", "notes.txt"),
    ],
)
def test_everything_else_travels_unchanged_with_its_metadata(data: bytes, name: str) -> None:
    assert _screen(data, name) is None


def test_only_the_configured_kinds_are_withheld() -> None:
    assert _screen(PE, "tool.exe", ["macro", "external"]) is None
    assert _screen(fx.docx(), "statement.docm", ["executable"]) is None
    assert _screen(PE, "tool.exe", []) is None


def test_damaged_or_bomb_archive_is_withheld_as_unchecked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(screen, "MAX_SCREENED_BYTES", 50_000)
    broken = fx.docx()[:-40]
    bomb = fx.package([("zeros.bin", b"\x00" * 100_000)])  # over the limit once unpacked

    for data in (broken, bomb):
        note = _screen(data, "evidence.zip")
        assert note is not None and "could not be checked for programs" in note
        assert _screen(data, "evidence.zip", ["macro", "external"]) is None


def _report(anonymous: bool) -> Report:
    report = Report("email", "subject", "body", datetime.now(UTC), anonymous=anonymous)
    report.attachments = [
        Attachment("tool.exe", "application/octet-stream", PE),
        Attachment("photo.jpg", "image/jpeg", fx.photo()),
    ]
    return report


def test_named_report_keeps_the_photo_and_notes_the_program() -> None:
    report = _report(anonymous=False)

    screen_attachments(report, ALL)

    assert [a.filename for a in report.attachments] == ["photo.jpg"]
    assert fx.AUTHOR.encode() in report.attachments[0].data  # named: nothing is cleaned
    assert len(report.attachment_notes) == 1 and "tool.exe" in report.attachment_notes[0]


def test_anonymous_report_is_left_to_the_cleaner() -> None:
    report = _report(anonymous=True)

    screen_attachments(report, ALL)

    assert len(report.attachments) == 2 and not report.attachment_notes


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (b"MZ Smith shouted at me in the lab on Friday.", "what happened.txt"),
        (b"#!! he wrote this on the board", "board.txt"),
        (b"Screenshots of the messages", "chat from instagram.com"),
    ],
)
def test_text_that_only_looks_like_a_program_travels(data: bytes, name: str) -> None:
    assert _screen(data, name) is None
