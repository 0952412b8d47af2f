"""Hidden details an attacker found the cleaner missing: each case carries a canary identity
(`clean_fixtures.CANARIES`) in one more place, and the file must leave without it or be withheld.
"""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from itertools import pairwise

import openpyxl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pypdf import PdfReader, PdfWriter
from pypdf.generic import (
    ArrayObject,
    ByteStringObject,
    DecodedStreamObject,
    DictionaryObject,
    FloatObject,
    NameObject,
    NumberObject,
    TextStringObject,
)

from pipeline.clean import Cleaned, clean_attachment
from pipeline.report import Attachment
from tests.unit import clean_fixtures as fx

KEPT = "the original is kept in the encrypted record."
PICTURE = f"{fx.PATH}\\IMG_0042.JPG"
EMAIL = "canary7q@example.ac.uk"
SID = "S-1-5-21-1004336348-1177238915-682003330-7Q"


def _clean(data: bytes, name: str, content_type: str = "application/octet-stream") -> Cleaned:
    return clean_attachment(Attachment(name, content_type, data))


def _kept_without_canary(result: Cleaned) -> dict[str, bytes]:
    assert result.attachment is not None, result.note
    parts = fx.members(result.attachment.data)
    for name, member in [("(file)", result.attachment.data), *parts.items()]:
        for canary in [*fx.CANARIES, "IMG_0042"]:
            assert canary.encode() not in member, f"{canary!r} left in {name}"
    return parts


def _withheld(result: Cleaned, reason: str) -> None:
    assert result.attachment is None
    assert result.note is not None and reason in result.note and result.note.endswith(KEPT)


def _docx(replace: dict[str, str], part: str = "word/document.xml") -> bytes:
    members = dict(fx.docx_members())
    text = members[part].decode()
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    members[part] = text.encode()
    return fx.package(list(members.items()))


def _document_with(paragraph: str) -> bytes:
    return _docx({"<w:sectPr/>": f"{paragraph}<w:sectPr/>"})


# -- Word -------------------------------------------------------------------------------------


def test_docx_picture_alt_text_written_from_its_path_is_removed() -> None:
    data = _docx(
        {
            '<wp:docPr id="1" name="Picture 1"/>': (
                f'<wp:docPr id="1" name="Picture 1" descr="{PICTURE}" title="{PICTURE}"/>'
            ),
            "<pic:pic><pic:blipFill>": (
                f'<pic:pic><pic:nvPicPr><pic:cNvPr id="0" name="Picture 1" descr="{PICTURE}" '
                f'title="{PICTURE}"/><pic:cNvPicPr/></pic:nvPicPr><pic:blipFill>'
            ),
        }
    )
    assert PICTURE.encode() in fx.members(data)["word/document.xml"]

    parts = _kept_without_canary(_clean(data, "statement.docx"))

    document = parts["word/document.xml"]
    assert b'<wp:docPr id="1" name="Picture 1">' in document  # the picture itself stays
    assert b'<pic:cNvPr id="0" name="Picture 1">' in document
    assert fx.VISIBLE.encode() in document


@pytest.mark.parametrize(
    "field",
    [
        '<w:fldSimple w:instr=" AUTHOR  \\* MERGEFORMAT "><w:r><w:t>Canary</w:t></w:r>'
        "</w:fldSimple>",
        '<w:fldSimple w:instr="USERNAME"><w:r><w:t>canary7q</w:t></w:r></w:fldSimple>',
        '<w:fldSimple w:instr=" lastsavedby "><w:r><w:t>canary7q</w:t></w:r></w:fldSimple>',
        # A complex field, its instruction split over runs as Word writes it after an edit.
        '<w:r><w:fldChar w:fldCharType="begin"/></w:r><w:r><w:instrText xml:space="preserve">'
        ' FILE</w:instrText></w:r><w:r><w:instrText xml:space="preserve">NAME \\p </w:instrText>'
        '</w:r><w:r><w:fldChar w:fldCharType="separate"/></w:r>'
        f"<w:r><w:t>{fx.PATH}\\statement.docx</w:t></w:r>"
        '<w:r><w:fldChar w:fldCharType="end"/></w:r>',
        # Nested inside a harmless field.
        '<w:r><w:fldChar w:fldCharType="begin"/></w:r><w:r><w:instrText> IF </w:instrText></w:r>'
        '<w:r><w:fldChar w:fldCharType="begin"/></w:r><w:r><w:instrText>TEMPLATE \\p'
        '</w:instrText></w:r><w:r><w:fldChar w:fldCharType="separate"/></w:r>'
        f"<w:r><w:t>{fx.PATH}\\Normal.dotm</w:t></w:r>"
        '<w:r><w:fldChar w:fldCharType="end"/></w:r><w:r><w:instrText> = "" "x" ""'
        '</w:instrText></w:r><w:r><w:fldChar w:fldCharType="end"/></w:r>',
        '<w:fldSimple w:instr="USERINITIALS"><w:r><w:t>CA7Q</w:t></w:r></w:fldSimple>',
        '<w:fldSimple w:instr=" DOCPROPERTY  Author "><w:r><w:t>Canary</w:t></w:r></w:fldSimple>',
    ],
    ids=[
        "author",
        "username",
        "lastsavedby",
        "split-filename",
        "nested-template",
        "initials",
        "docproperty",
    ],
)
def test_docx_with_a_field_showing_the_author_or_path_is_withheld(field: str) -> None:
    _withheld(_clean(_document_with(f"<w:p>{field}</w:p>"), "letter.docx"), "fields that show")


@settings(max_examples=60, deadline=None)
@given(
    field=st.sampled_from(["AUTHOR", "FILENAME \\p", "UserName", "TEMPLATE", "LASTSAVEDBY"]),
    cuts=st.lists(st.integers(min_value=0, max_value=16), max_size=4),
    space=st.sampled_from(["", " ", "  "]),
)
def test_field_instruction_split_anywhere_over_runs_is_found(
    field: str, cuts: list[int], space: str
) -> None:
    instruction = space + field + " \\* MERGEFORMAT "
    points = sorted({0, len(instruction), *(min(c, len(instruction)) for c in cuts)})
    runs = "".join(
        f'<w:r><w:instrText xml:space="preserve">{instruction[a:b]}</w:instrText></w:r>'
        for a, b in pairwise(points)
    )
    paragraph = (
        f'<w:p><w:r><w:fldChar w:fldCharType="begin"/></w:r>{runs}'
        '<w:r><w:fldChar w:fldCharType="separate"/></w:r><w:r><w:t>x</w:t></w:r>'
        '<w:r><w:fldChar w:fldCharType="end"/></w:r></w:p>'
    )
    _withheld(_clean(_document_with(paragraph), "split.docx"), "fields that show")


def test_docx_field_in_a_footer_is_withheld_too() -> None:
    members = dict(fx.docx_members())
    members["word/footer1.xml"] = (
        f'<w:ftr xmlns:w="{fx.W}"><w:p><w:fldSimple w:instr="FILENAME \\p"><w:r>'
        f"<w:t>{fx.PATH}\\x.docx</w:t></w:r></w:fldSimple></w:p></w:ftr>"
    ).encode()

    _withheld(_clean(fx.package(list(members.items())), "x.docx"), "fields that show")


def test_docx_with_harmless_fields_is_kept() -> None:
    fields = (
        '<w:fldSimple w:instr=" PAGE "><w:r><w:t>1</w:t></w:r></w:fldSimple>'
        '<w:r><w:fldChar w:fldCharType="begin"/></w:r><w:r><w:instrText> DATE \\@ "d MMMM"'
        '</w:instrText></w:r><w:r><w:fldChar w:fldCharType="separate"/></w:r>'
        '<w:r><w:t>1 December</w:t></w:r><w:r><w:fldChar w:fldCharType="end"/></w:r>'
        '<w:fldSimple w:instr=" HYPERLINK &quot;https://example.org/author&quot; ">'
        "<w:r><w:t>link</w:t></w:r></w:fldSimple>"
    )
    parts = _kept_without_canary(_clean(_document_with(f"<w:p>{fields}</w:p>"), "ok.docx"))

    assert b"1 December" in parts["word/document.xml"]


def test_docx_restrict_editing_ranges_lose_the_editor_address() -> None:
    ranges = (
        f'<w:p><w:permStart w:id="5" w:ed="{EMAIL}"/><w:r><w:t>open to edit</w:t></w:r>'
        '<w:permEnd w:id="5"/><w:permStart w:id="6" w:edGrp="everyone"/>'
        '<w:r><w:t>to all</w:t></w:r><w:permEnd w:id="6"/></w:p>'
    )

    parts = _kept_without_canary(_clean(_document_with(ranges), "form.docx"))

    document = parts["word/document.xml"]
    assert b"permStart" not in document and b"permEnd" not in document
    assert b"open to edit" in document and b"to all" in document


# -- Excel ------------------------------------------------------------------------------------


def _xlsx_with(sheet_extra: str, workbook_extra: str = "") -> dict[str, bytes]:
    members = fx.members(fx.xlsx())
    sheet = members["xl/worksheets/sheet1.xml"].decode()
    head, tail = sheet.split("<pageMargins", 1)
    members["xl/worksheets/sheet1.xml"] = (head + sheet_extra + "<pageMargins" + tail).encode()
    book = members["xl/workbook.xml"].decode()
    head, tail = book.split("<workbookPr", 1)
    members["xl/workbook.xml"] = (head + workbook_extra + "<workbookPr" + tail).encode()
    return members


def test_xlsx_protected_range_loses_the_windows_account_id() -> None:
    protected = (
        '<protectedRanges><protectedRange sqref="A1:B4" name="Range1" '
        f'securityDescriptor="O:WDG:WDD:(A;;CC;;;{SID})"/></protectedRanges>'
    )
    version = '<fileVersion appName="xl" lastEdited="7" rupBuild="27425" codeName="{7Q7Q7Q7Q}"/>'
    data = fx.package(list(_xlsx_with(protected, version).items()))

    result = _clean(data, "log.xlsx")

    parts = _kept_without_canary(result)
    assert b"S-1-5-21" not in parts["xl/worksheets/sheet1.xml"]
    assert b"protectedRange" in parts["xl/worksheets/sheet1.xml"]  # the range stays
    assert b"fileVersion" not in parts["xl/workbook.xml"]
    assert result.attachment is not None
    sheet = openpyxl.load_workbook(BytesIO(result.attachment.data)).active
    assert sheet is not None and sheet["A1"].value == fx.VISIBLE


def test_xlsx_file_sharing_and_shared_workbook_revision_log_are_removed() -> None:
    members = _xlsx_with("", '<fileSharing readOnlyRecommended="1" reservationPassword="7Q7Q"/>')
    # fx.xlsx already has a <fileSharing userName=...>: keep one, as Excel writes.
    members["xl/workbook.xml"] = members["xl/workbook.xml"].replace(
        f'<fileSharing userName="{fx.AUTHOR}"/>'.encode(), b""
    )
    revisions = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    members["xl/revisions/revisionHeaders.xml"] = (
        f'<headers xmlns="{revisions}" guid="{{7Q}}"><header guid="{{7Q}}" '
        f'dateTime="2026-11-20T10:00:00" userName="{fx.AUTHOR}" r:id="rId1" '
        f'xmlns:r="{fx.R}"/></headers>'
    ).encode()
    members["xl/revisions/userNames.xml"] = (
        f'<users xmlns="{revisions}" count="1"><userInfo guid="{{7Q}}" name="{fx.AUTHOR}" '
        'id="1" dateTime="2026-11-20T10:00:00"/></users>'
    ).encode()
    rels = members["xl/_rels/workbook.xml.rels"].decode()
    members["xl/_rels/workbook.xml.rels"] = rels.replace(
        "</Relationships>",
        f'<Relationship Id="rId97" Type="{fx.REL}/revisionHeaders" '
        'Target="revisions/revisionHeaders.xml"/>'
        f'<Relationship Id="rId98" Type="{fx.REL}/usernames" '
        'Target="revisions/userNames.xml"/></Relationships>',
    ).encode()
    data = fx.package(list(members.items()))
    assert b"7Q7Q" in fx.members(data)["xl/workbook.xml"]

    result = _clean(data, "shared.xlsx")

    parts = _kept_without_canary(result)
    assert not [name for name in parts if name.startswith("xl/revisions/")]
    assert b"fileSharing" not in parts["xl/workbook.xml"]
    assert b"revisions/" not in parts["xl/_rels/workbook.xml.rels"]
    assert result.attachment is not None
    sheet = openpyxl.load_workbook(BytesIO(result.attachment.data)).active
    assert sheet is not None and sheet["A1"].value == fx.VISIBLE


# -- OpenDocument -----------------------------------------------------------------------------


def _odt_with(paragraph: str, meta: str = "") -> bytes:
    members = dict(fx.odt_members())
    content = members["content.xml"].decode()
    members["content.xml"] = content.replace(
        "</office:text>", f"{paragraph}</office:text>"
    ).encode()
    if meta:
        members["meta.xml"] = members["meta.xml"].replace(b"</office:meta>", meta.encode())
    return fx.package(list(members.items()), stored=("mimetype",))


def test_odt_file_name_template_and_printed_by_fields_are_removed() -> None:
    home = fx.PATH.replace("\\", "/")
    fields = (
        '<text:p>Saved as <text:file-name text:display="full">'
        f"{home}/statement.odt</text:file-name>, from "
        f'<text:template-name text:display="full">{home}/Templates/letter.ott</text:template-name>'
        f", printed by <text:printed-by>{fx.AUTHOR}</text:printed-by>"
        f"<text:author-initials>{fx.INITIALS}</text:author-initials>"
        f"<text:creator>{fx.AUTHOR}</text:creator>"
        f"<text:sender-lastname>{fx.AUTHOR}</text:sender-lastname>"
        f'<text:sender-email>{EMAIL}</text:sender-email><text:user-defined text:name="Owner">'
        f"{fx.AUTHOR}</text:user-defined></text:p>"
        '<text:p><draw:frame draw:name="Image3" svg:width="2cm" svg:height="1cm">'
        '<draw:image xlink:href="Pictures/photo.jpg" xlink:type="simple"/>'
        f"<svg:title>{PICTURE}</svg:title><svg:desc>{PICTURE}</svg:desc></draw:frame></text:p>"
    )
    meta = f'<meta:user-defined meta:name="Owner">{fx.AUTHOR}</meta:user-defined></office:meta>'

    parts = _kept_without_canary(_clean(_odt_with(fields, meta), "statement.odt"))

    content = parts["content.xml"]
    assert b"Saved as , from , printed by " in content
    assert b"Image3" in content  # the picture stays, without its alt text
    assert b"user-defined" not in parts["meta.xml"]


# -- PDF --------------------------------------------------------------------------------------


def _pdf_with(change: Callable[[PdfWriter], None]) -> bytes:
    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    change(writer)
    out = BytesIO()
    writer.write(out)
    return out.getvalue()


def _rect() -> ArrayObject:
    return ArrayObject([FloatObject(v) for v in (10, 10, 30, 30)])


def _signature() -> DictionaryObject:
    return DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Sig"),
            NameObject("/Filter"): NameObject("/Adobe.PPKLite"),
            NameObject("/SubFilter"): NameObject("/adbe.pkcs7.detached"),
            NameObject("/Name"): TextStringObject(fx.AUTHOR),
            NameObject("/ByteRange"): ArrayObject([NumberObject(v) for v in (0, 10, 20, 30)]),
            NameObject("/Contents"): ByteStringObject(f"CN={fx.AUTHOR}".encode()),
        }
    )


def _sign_field(writer: PdfWriter, value: bool = True) -> None:
    field = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Annot"),
            NameObject("/Subtype"): NameObject("/Widget"),
            NameObject("/FT"): NameObject("/Sig"),
            NameObject("/T"): TextStringObject("Signature1"),
            NameObject("/Rect"): _rect(),
        }
    )
    if value:
        field[NameObject("/V")] = writer._add_object(_signature())
    reference = writer.add_annotation(page_number=0, annotation=field)
    writer._root_object[NameObject("/AcroForm")] = DictionaryObject(
        {
            NameObject("/Fields"): ArrayObject([reference]),
            NameObject("/SigFlags"): NumberObject(3),
        }
    )


def _certify(writer: PdfWriter) -> None:
    perms = DictionaryObject({NameObject("/DocMDP"): writer._add_object(_signature())})
    writer._root_object[NameObject("/Perms")] = perms


@pytest.mark.parametrize(
    "sign",
    [_sign_field, lambda writer: _sign_field(writer, value=False), _certify],
    ids=["signed", "signature-field", "certified"],
)
def test_signed_pdf_is_withheld(sign: Callable[[PdfWriter], None]) -> None:
    _withheld(_clean(_pdf_with(sign), "signed.pdf"), "digitally signed")


def _attach(filespec: DictionaryObject) -> Callable[[PdfWriter], None]:
    def change(writer: PdfWriter) -> None:
        annotation = DictionaryObject(
            {
                NameObject("/Type"): NameObject("/Annot"),
                NameObject("/Subtype"): NameObject("/FileAttachment"),
                NameObject("/T"): TextStringObject(fx.AUTHOR),
                NameObject("/Rect"): _rect(),
                NameObject("/FS"): filespec,
            }
        )
        writer.add_annotation(page_number=0, annotation=annotation)

    return change


@pytest.mark.parametrize("embedded", [False, True], ids=["by-path", "embedded"])
def test_pdf_file_attachment_annotation_is_withheld_whether_embedded_or_by_path(
    embedded: bool,
) -> None:
    filespec = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Filespec"),
            NameObject("/F"): TextStringObject(f"{fx.PATH}\\notes.docx"),
        }
    )
    if embedded:
        stream = DecodedStreamObject()
        stream.set_data(f"written by {fx.AUTHOR}".encode())
        filespec[NameObject("/EF")] = DictionaryObject({NameObject("/F"): stream})
    _withheld(_clean(_pdf_with(_attach(filespec)), "a.pdf"), "embedded files")


def test_pdf_action_opening_a_file_by_path_is_withheld() -> None:
    def change(writer: PdfWriter) -> None:
        action = DictionaryObject(
            {
                NameObject("/S"): NameObject("/Launch"),
                NameObject("/F"): TextStringObject(f"{fx.PATH}\\evidence.xlsx"),
            }
        )
        link = DictionaryObject(
            {
                NameObject("/Type"): NameObject("/Annot"),
                NameObject("/Subtype"): NameObject("/Link"),
                NameObject("/Rect"): _rect(),
                NameObject("/A"): action,
            }
        )
        writer.add_annotation(page_number=0, annotation=link)

    _withheld(_clean(_pdf_with(change), "linked.pdf"), "refers to files outside it")


def test_pdf_popup_and_its_parent_lose_the_author_and_form_field_names_stay() -> None:
    def change(writer: PdfWriter) -> None:
        note = DictionaryObject(
            {
                NameObject("/Type"): NameObject("/Annot"),
                NameObject("/Subtype"): NameObject("/Text"),
                NameObject("/T"): TextStringObject(fx.AUTHOR),
                NameObject("/Contents"): TextStringObject("see page 2"),
                NameObject("/Rect"): _rect(),
            }
        )
        parent = writer._add_object(note)
        popup = DictionaryObject(
            {
                NameObject("/Type"): NameObject("/Annot"),
                NameObject("/Subtype"): NameObject("/Popup"),
                NameObject("/T"): TextStringObject(fx.AUTHOR),
                NameObject("/Parent"): parent,
                NameObject("/Rect"): _rect(),
            }
        )
        note[NameObject("/Popup")] = writer._add_object(popup)
        widget = DictionaryObject(
            {
                NameObject("/Type"): NameObject("/Annot"),
                NameObject("/Subtype"): NameObject("/Widget"),
                NameObject("/FT"): NameObject("/Tx"),
                NameObject("/T"): TextStringObject("incident_date"),
                NameObject("/Rect"): _rect(),
            }
        )
        annotations = [parent, note["/Popup"], writer._add_object(widget)]
        writer.pages[0][NameObject("/Annots")] = ArrayObject(annotations)

    data = _pdf_with(change)
    assert b"(Canary Author" in data  # pypdf writes "-" escaped

    result = _clean(data, "marked.pdf")

    assert result.attachment is not None
    assert b"Canary" not in result.attachment.data
    found = PdfReader(BytesIO(result.attachment.data)).pages[0]["/Annots"]
    assert isinstance(found, ArrayObject)
    annotations = [a.get_object() for a in found]
    assert {a["/Subtype"] for a in annotations} == {"/Text", "/Popup", "/Widget"}
    assert [a["/T"] for a in annotations if "/T" in a] == ["incident_date"]


# -- Text -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "charset"),
    [
        ("caf\u00e9 at 9pm".encode(), "utf-8"),
        ("caf\u00e9 at 9pm".encode("windows-1252"), "windows-1252"),
        ("caf\u00e9 at 9pm".encode("utf-16"), "utf-16"),
    ],
)
def test_text_is_kept_unchanged_and_says_the_charset_it_was_read_in(
    data: bytes, charset: str
) -> None:
    result = _clean(data, "notes.txt", "text/plain")

    assert result.attachment is not None and result.note is None
    assert result.attachment.data == data  # the outcome is unchanged
    assert result.charset == charset
    assert result.attachment.content_type == f"text/plain; charset={charset}"
    assert data.decode(result.charset) == "caf\u00e9 at 9pm"
