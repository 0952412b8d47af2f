"""Attachments through the real daemon: an anonymous report's Office, OpenDocument, PDF and HEIC
files reach the service without their authors' traces; a named report's programs and macro
documents are withheld with a note."""

from __future__ import annotations

import io
import zipfile
from email import message_from_bytes, policy
from email.message import EmailMessage, Message

from pypdf import PdfWriter

from tests.integration.conftest import ANONYMOUS, INTAKE, Deployment
from tests.unit import clean_fixtures as fx

KEPT = "the original is kept in the encrypted record"


def _pdf() -> bytes:
    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    writer.add_metadata({"/Author": fx.AUTHOR, "/Creator": f"{fx.PATH}\\statement.docx"})
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _email(to: str, body: str, files: list[tuple[str, str, str, bytes]]) -> bytes:
    message = EmailMessage()
    message["From"] = "Someone <someone@example.org>"
    message["To"] = to
    message["Subject"] = "what happened"
    message["Message-ID"] = f"<{body}@example.org>"
    message.set_content(f"Please see the files. {body}")
    for filename, maintype, subtype, data in files:
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return message.as_bytes()


def _referrals(deployment: Deployment) -> list[Message]:
    return [message_from_bytes(inner, policy=policy.default) for inner in deployment.referrals()]


def _text(referral: Message) -> str:
    return referral.get_body(preferencelist=("plain",)).get_content()  # type: ignore[attr-defined,union-attr]


def _every_byte(data: bytes) -> list[bytes]:
    """The file and, when it is a zip (Office, OpenDocument), each member decompressed."""
    if not data.startswith(b"PK"):
        return [data]
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return [data, *(archive.read(name) for name in archive.namelist())]


def test_anonymous_documents_and_photos_arrive_without_their_authors(
    deployment: Deployment,
) -> None:
    files = [
        ("Statement by Canary Author-7Q.docx", "application", "octet-stream", fx.docx()),
        ("statement.odt", "application", "vnd.oasis.opendocument.text", fx.odt()),
        ("statement.pdf", "application", "pdf", _pdf()),
        ("IMG_0042.HEIC", "image", "heic", fx.heic_photo()),
    ]
    deployment.imap.append(_email(ANONYMOUS, "ANON-DOCS-8", files))

    assert deployment.run_once().returncode == 0

    (referral,) = [r for r in _referrals(deployment) if "ANON-DOCS-8" in _text(r)]
    attachments = list(referral.iter_attachments())  # type: ignore[attr-defined]
    names = [a.get_filename() for a in attachments]
    assert names == [
        "attachment-1.docx",
        "attachment-2.odt",
        "attachment-3.pdf",
        "attachment-4.jpg",
    ]
    for attachment in attachments:
        for data in _every_byte(attachment.get_payload(decode=True)):
            for canary in fx.CANARIES:
                assert canary.encode() not in data, f"{canary} in {attachment.get_filename()}"
    text = _text(referral)
    assert "About the attachments" in text
    for name in names:
        assert f"{name}: " in text  # a note for each: what was removed
    assert "converted to JPEG" in text
    headers = " ".join(f"{k}: {v}" for part in referral.walk() for k, v in part.items())
    assert all(canary not in text and canary not in headers for canary in fx.CANARIES)


def test_named_program_and_macro_document_are_withheld_with_notes(deployment: Deployment) -> None:
    files = [
        ("tool.exe", "application", "octet-stream", b"MZ\x90\x00" + b"\x00" * 200),
        ("report.docm", "application", "vnd.ms-word.document.macroenabled.12", fx.docx()),
        ("photo.jpg", "image", "jpeg", fx.photo()),
    ]
    deployment.imap.append(_email(INTAKE, "NAMED-PROGRAMS-8", files))

    assert deployment.run_once().returncode == 0

    (referral,) = [r for r in _referrals(deployment) if "NAMED-PROGRAMS-8" in _text(r)]
    attachments = list(referral.iter_attachments())  # type: ignore[attr-defined]
    assert [a.get_filename() for a in attachments] == ["photo.jpg"]
    assert attachments[0].get_payload(decode=True) == fx.photo()  # named: travels unchanged
    text = _text(referral)
    assert "About the attachments" in text
    assert "tool.exe: withheld because it is a program or script" in text
    assert "report.docm: withheld because it is a document with macros" in text
    assert text.count(KEPT) == 2
