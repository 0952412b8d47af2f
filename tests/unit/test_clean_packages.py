"""clean/packages: Office and OpenDocument files leave without any trace of their authors, or not
at all. The fixtures (tests/unit/clean_fixtures.py) carry a canary in every hidden place."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
import zipfile
from io import BytesIO

import openpyxl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.clean import Cleaned, Deadline, clean_attachment
from pipeline.clean.common import Withhold
from pipeline.clean.odf import NAMESPACES as ODF_NAMESPACES
from pipeline.clean.xmlparts import XmlPolicy, filter_part
from pipeline.report import Attachment
from tests.unit import clean_fixtures as fx

KEPT = "the original is kept in the encrypted record."


def _clean(data: bytes, name: str) -> Cleaned:
    return clean_attachment(Attachment(name, "application/octet-stream", data))


def _assert_no_canary(data: bytes) -> dict[str, bytes]:
    """No canary in the file, nor in any of its members once decompressed."""
    parts = fx.members(data)
    for name, member in [("(file)", data), *parts.items()]:
        for canary in fx.CANARIES:
            assert canary.encode() not in member, f"{canary!r} left in {name}"
    return parts


def _withheld(result: Cleaned, reason: str) -> None:
    assert result.attachment is None
    assert result.note is not None and reason in result.note and result.note.endswith(KEPT)


def _references_resolve(parts: dict[str, bytes]) -> None:
    """Every internal relationship points at a member, every content-type override names one,
    and every r:id in a part has its relationship: the package still opens."""
    lower = {name.lower() for name in parts}
    for name, data in parts.items():
        if not name.endswith(".rels"):
            continue
        folder = name.rsplit("_rels/", 1)[0]
        ids = set()
        for rel in ElementTree.fromstring(data):
            ids.add(rel.get("Id"))
            if rel.get("TargetMode") != "External":
                target = rel.get("Target", "")
                path = target.lstrip("/") if target.startswith("/") else folder + target
                assert _normal(path) in lower, f"{name} points at missing {path}"
        source = folder + name.rsplit("/", 1)[1].removesuffix(".rels")
        if source in parts:
            root = ElementTree.fromstring(parts[source])
            for element in root.iter():
                for key, value in element.attrib.items():
                    if key.startswith(f"{{{fx.R}}}"):
                        assert value in ids, f"{source} refers to missing {value}"
    for override in ElementTree.fromstring(parts["[Content_Types].xml"]):
        if override.tag.endswith("Override"):
            assert override.get("PartName", "").lstrip("/").lower() in lower


def _normal(path: str) -> str:
    out: list[str] = []
    for piece in path.split("/"):
        if piece == "..":
            out.pop()
        elif piece not in ("", "."):
            out.append(piece)
    return "/".join(out).lower()


# -- Word -------------------------------------------------------------------------------------


def test_docx_keeps_no_author_comment_template_thumbnail_custom_xml_or_photo_location() -> None:
    original = fx.docx()
    assert fx.AUTHOR.encode() in b"".join(fx.members(original).values())  # the input has it

    result = _clean(original, "statement.docx")

    assert result.attachment is not None
    assert result.note == "statement.docx: hidden details such as author and title were removed."
    parts = _assert_no_canary(result.attachment.data)
    gone = {"word/comments.xml", "word/people.xml", "docProps/thumbnail.jpeg"}
    gone |= {"customXml/item1.xml", "customXml/itemProps1.xml"}
    assert not gone & set(parts)
    assert b"exif" not in parts["word/media/image1.jpeg"].lower()
    _references_resolve(parts)


def test_docx_tracked_changes_are_accepted_and_the_text_survives() -> None:
    result = _clean(fx.docx(), "statement.docx")

    assert result.attachment is not None
    document = fx.members(result.attachment.data)["word/document.xml"]
    root = ElementTree.fromstring(document)  # still well-formed
    text = "".join(t.text or "" for t in root.iter(f"{{{fx.W}}}t"))
    assert fx.VISIBLE in text and fx.INSERTED in text and fx.HYPERLINK in text
    assert fx.DELETED.encode() not in document
    for tag in ("ins", "del", "rPrChange", "commentReference", "commentRangeStart"):
        assert not list(root.iter(f"{{{fx.W}}}{tag}"))
    assert document.count(b"mc:Ignorable") == 1  # prefixes kept as they were


def test_docx_hyperlink_stays_and_external_template_goes() -> None:
    result = _clean(fx.docx(), "statement.docx")

    assert result.attachment is not None
    parts = fx.members(result.attachment.data)
    assert fx.HYPERLINK.encode() in parts["word/_rels/document.xml.rels"]
    assert b"attachedTemplate" not in parts["word/settings.xml"]
    assert b"Relationship " not in parts["word/_rels/settings.xml.rels"]


def test_docx_without_anything_to_remove_keeps_its_xml_byte_identical() -> None:
    content_types = (
        f'<Types xmlns="{fx.CT}"><Default Extension="xml" ContentType="application/xml"/>'
        '<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-'
        'officedocument.wordprocessingml.document.main+xml"/></Types>'
    ).encode()
    members = [("[Content_Types].xml", content_types)]  # overrides only of parts it has
    body = (
        f'<w:document xmlns:w="{fx.W}"><w:body><w:p><w:r><w:t>{fx.VISIBLE}</w:t></w:r></w:p>'
        "</w:body></w:document>"
    ).encode()
    members.append(("word/document.xml", body))

    result = _clean(fx.package(members), "plain.docx")

    assert result.attachment is not None and result.note is None
    assert fx.members(result.attachment.data)["word/document.xml"] == body


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("word/embeddings/oleObject1.bin", b"\xd0\xcf\x11\xe0" + b"\x00" * 64, "embedded"),
        ("word/fonts/font1.odttf", b"\x00" * 64, "cannot be checked"),
        ("word/media/image2.emf", b"\x01\x00\x00\x00" + b"\x00" * 64, "cannot be checked"),
        ("word/glossary/document.xml", b'<x:doc xmlns:x="urn:unknown"/>', "cannot be checked"),
        ("word/unknownPart.xml", f'<w:x xmlns:w="{fx.W}"/>'.encode(), "cannot be checked"),
        ("xl/connections.xml", f'<w:x xmlns:w="{fx.W}"/>'.encode(), "cannot be checked"),
    ],
)
def test_docx_with_a_part_the_cleaner_does_not_know_is_withheld(
    name: str, data: bytes, reason: str
) -> None:
    _withheld(_clean(fx.package([*fx.docx_members(), (name, data)]), "s.docx"), reason)


def test_docx_with_an_unknown_vocabulary_in_its_body_is_withheld() -> None:
    members = dict(fx.docx_members())
    members["word/document.xml"] = members["word/document.xml"].replace(
        b"<w:body>", b'<w:body><t:track xmlns:t="urn:tracker" t:who="me"/>'
    )

    _withheld(_clean(fx.package(list(members.items())), "s.docx"), "cannot be checked")


@pytest.mark.parametrize(
    "doctype",
    [
        b'<!DOCTYPE w:document [<!ENTITY a "aaaaaaaaaa">]>',
        b'<!DOCTYPE w:document SYSTEM "file:///etc/passwd">',
    ],
)
def test_docx_with_a_dtd_or_entities_is_withheld_unread(doctype: bytes) -> None:
    members = dict(fx.docx_members())
    document = members["word/document.xml"]
    members["word/document.xml"] = document.replace(b"<w:document", doctype + b"<w:document", 1)

    _withheld(_clean(fx.package(list(members.items())), "s.docx"), "could not be read")


def test_docx_deadline_passed_midway_withholds_it() -> None:
    ticks = iter(range(1000))
    deadline = Deadline(5, clock=lambda: float(next(ticks)))  # one second per check

    result = clean_attachment(Attachment("s.docx", "x", fx.docx()), deadline=deadline)

    _withheld(result, "took too long to check")


# -- Excel and PowerPoint ---------------------------------------------------------------------


def test_xlsx_loses_comments_persons_abspath_and_user_name_and_still_opens() -> None:
    result = _clean(fx.xlsx(), "log.xlsx")

    assert result.attachment is not None
    parts = _assert_no_canary(result.attachment.data)
    assert not [name for name in parts if "comment" in name.lower() or "person" in name.lower()]
    assert b"absPath" not in parts["xl/workbook.xml"]
    workbook = openpyxl.load_workbook(BytesIO(result.attachment.data))
    sheet = workbook.active
    assert sheet is not None
    assert sheet["A1"].value == fx.VISIBLE
    assert sheet["A1"].comment is None


def test_pptx_loses_comment_authors_and_comments() -> None:
    result = _clean(fx.pptx(), "slides.pptx")

    assert result.attachment is not None
    parts = _assert_no_canary(result.attachment.data)
    assert "ppt/commentAuthors.xml" not in parts and "ppt/comments/comment1.xml" not in parts
    _references_resolve(parts)


# -- OpenDocument -----------------------------------------------------------------------------


def test_odt_keeps_no_author_annotation_change_log_settings_thumbnail_or_linked_path() -> None:
    result = _clean(fx.odt(), "statement.odt")

    assert result.attachment is not None
    assert result.attachment.content_type == "application/vnd.oasis.opendocument.text"
    parts = _assert_no_canary(result.attachment.data)
    assert not {"settings.xml", "Thumbnails/thumbnail.png", "manifest.rdf"} & set(parts)
    manifest = parts["META-INF/manifest.xml"]
    assert b"settings.xml" not in manifest and b"Thumbnails" not in manifest
    assert b"Pictures/photo.jpg" in manifest and b"exif" not in parts["Pictures/photo.jpg"].lower()
    with zipfile.ZipFile(BytesIO(result.attachment.data)) as archive:
        first = archive.infolist()[0]
        assert (first.filename, first.compress_type) == ("mimetype", zipfile.ZIP_STORED)


def test_odt_tracked_changes_are_accepted() -> None:
    result = _clean(fx.odt(), "statement.odt")

    assert result.attachment is not None
    content = fx.members(result.attachment.data)["content.xml"]
    ElementTree.fromstring(content)
    assert fx.VISIBLE.encode() in content and fx.INSERTED.encode() in content
    assert fx.DELETED.encode() not in content
    assert b"tracked-changes" not in content and b"change-start" not in content
    assert fx.HYPERLINK.encode() in content  # a hyperlink is what the reporter wrote


def test_odt_with_basic_macros_is_withheld() -> None:
    members = [*fx.odt_members(), ("Basic/Standard/Module1.xml", b"<script/>")]

    _withheld(_clean(fx.package(members, stored=("mimetype",)), "s.odt"), "macros")


# -- The XML filter ---------------------------------------------------------------------------

_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=40)


@settings(max_examples=150, deadline=None)
@given(text=_TEXT, value=_TEXT, author=_TEXT)
def test_filter_keeps_any_text_and_drops_authors(text: str, value: str, author: str) -> None:
    ns = ODF_NAMESPACES[0] + "xmlns:text:1.0"
    element = ElementTree.Element(f"{{{ns}}}p", {f"{{{ns}}}style": value, "author": author})
    element.text = text
    data = ElementTree.tostring(element, encoding="utf-8")
    policy = XmlPolicy(ODF_NAMESPACES, drop_attributes=lambda name: name[1] == "author")

    out, removed = filter_part(data, policy, Deadline(10))

    parsed = ElementTree.fromstring(out)
    assert removed
    assert (parsed.text or "") == text.replace("\r\n", "\n").replace("\r", "\n")
    assert parsed.get(f"{{{ns}}}style") == value
    assert parsed.get("author") is None


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_filter_on_any_bytes_gives_well_formed_xml_or_withholds(data: bytes) -> None:
    part = b"<a:x xmlns:a='urn:oasis:names:tc:opendocument:x'>" + data + b"</a:x>"
    try:
        out, _ = filter_part(part, XmlPolicy(ODF_NAMESPACES), Deadline(10))
    except Withhold:
        return
    ElementTree.fromstring(out)
