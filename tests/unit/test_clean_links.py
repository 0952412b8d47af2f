"""Links that name the sender's computer: a hyperlink or PDF action to `file:///C:/Users/<name>/...`
(or a UNC, drive, smb: or relative path) leaks the Windows user name. Each case puts the canary
user name `CANARY` in one such place; the cleaned file must not hold it in any (decompressed)
member, while a web link (`fx.HYPERLINK`) survives.
"""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from xml.etree import ElementTree
from xml.sax.saxutils import quoteattr

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pypdf import PdfReader, PdfWriter
from pypdf.generic import (
    ArrayObject,
    DictionaryObject,
    FloatObject,
    NameObject,
    StreamObject,
    TextStringObject,
)

from pipeline.clean import Cleaned, clean_attachment
from pipeline.clean.common import web_link
from pipeline.report import Attachment
from tests.unit import clean_fixtures as fx

CANARY = "canaryuser7q"
LOCAL_TARGETS = [
    f"file:///C:/Users/{CANARY}/Desktop/evidence.png",
    f"FILE:///C:/Users/{CANARY}/Desktop/evidence.png",
    f"\\\\fileserver\\home\\{CANARY}\\evidence.png",
    f"C:\\Users\\{CANARY}\\Desktop\\evidence.png",
    f"../../Users/{CANARY}/evidence.png",
    f"smb://nas/{CANARY}/evidence.png",
    f"/home/{CANARY}/evidence.png",
    f"http:\\\\fileserver\\{CANARY}\\evidence.png",
]
KEPT = "the original is kept in the encrypted record."
PP = "http://schemas.openxmlformats.org/presentationml/2006/main"
V = "urn:schemas-microsoft-com:vml"


def _clean(data: bytes, name: str) -> Cleaned:
    return clean_attachment(Attachment(name, "application/octet-stream", data))


def _package_without_canary(result: Cleaned) -> dict[str, bytes]:
    assert result.attachment is not None, result.note
    parts = fx.members(result.attachment.data)
    for name, member in parts.items():
        assert CANARY.encode() not in member, f"canary left in {name}"
        assert CANARY not in name
    return parts


def _docx_with(paragraph: str, relationships: list[tuple[str, str, str, bool]]) -> bytes:
    members = dict(fx.docx_members())
    document = members["word/document.xml"].decode()
    members["word/document.xml"] = document.replace("<w:sectPr/>", f"{paragraph}<w:sectPr/>")
    rels = members["word/_rels/document.xml.rels"].decode()
    extra = "".join(
        f'<Relationship Id="{rid}" Type="{fx.REL}/{kind}" Target={quoteattr(target)}'
        + (' TargetMode="External"' if external else "")
        + "/>"
        for rid, kind, target, external in relationships
    )
    members["word/_rels/document.xml.rels"] = rels.replace(
        "</Relationships>", f"{extra}</Relationships>"
    ).encode()
    return fx.package(list(members.items()))


def _hyperlink(rid: str, text: str, extra: str = "") -> str:
    return f'<w:p><w:hyperlink r:id="{rid}"{extra}><w:r><w:t>{text}</w:t></w:r></w:hyperlink></w:p>'


@pytest.mark.parametrize("target", LOCAL_TARGETS)
def test_docx_hyperlink_to_a_local_file_becomes_plain_text_and_web_link_stays(
    target: str,
) -> None:
    data = _docx_with(_hyperlink("rId20", "see my photo"), [("rId20", "hyperlink", target, True)])

    parts = _package_without_canary(_clean(data, "statement.docx"))

    rels = parts["word/_rels/document.xml.rels"]
    assert fx.HYPERLINK.encode() in rels and b'Id="rId6"' in rels  # the web link stays
    assert b'"rId20"' not in rels
    root = ElementTree.fromstring(parts["word/document.xml"])
    links = list(root.iter(f"{{{fx.W}}}hyperlink"))
    assert [link.get(f"{{{fx.R}}}id") for link in links] == ["rId6", None]
    assert "".join(t.text or "" for t in links[1].iter(f"{{{fx.W}}}t")) == "see my photo"


def test_docx_hyperlink_tooltip_location_frame_and_vml_href_lose_the_path() -> None:
    path = f"C:\\Users\\{CANARY}\\Desktop\\evidence.png"
    extra = f' w:tooltip="{path}" w:docLocation="{path}" w:tgtFrame="{path}"'
    shape = (
        f'<w:p><w:r><w:pict><v:shape xmlns:v="{V}" id="s1" href="file:///{path}">'
        "</v:shape></w:pict></w:r></w:p>"
    )
    data = _docx_with(_hyperlink("rId6", "web", extra) + shape, [])

    parts = _package_without_canary(_clean(data, "statement.docx"))

    assert fx.HYPERLINK.encode() in parts["word/_rels/document.xml.rels"]
    assert b'<w:hyperlink r:id="rId6">' in parts["word/document.xml"]


def test_docx_internal_relationship_to_a_part_that_is_not_there_goes() -> None:
    target = f"../../Users/{CANARY}/Pictures/evidence.png"
    picture = (
        '<w:p><w:r><w:drawing><a:graphic><a:graphicData uri="x"><pic:pic><pic:blipFill>'
        '<a:blip r:embed="rId21"/></pic:blipFill></pic:pic></a:graphicData></a:graphic>'
        "</w:drawing></w:r></w:p>"
    )
    data = _docx_with(picture, [("rId21", "image", target, False)])
    members = dict(fx.members(data))
    types = members["[Content_Types].xml"].replace(
        b"</Types>",
        f'<Override PartName="/Users/{CANARY}/x.xml" ContentType="a/b"/></Types>'.encode(),
    )
    data = fx.package([*{**members, "[Content_Types].xml": types}.items()])

    parts = _package_without_canary(_clean(data, "statement.docx"))

    assert b"rId21" not in parts["word/document.xml"]
    assert b'r:embed="rId5"' in parts["word/document.xml"]  # the real picture stays


@pytest.mark.parametrize(
    "instruction",
    [
        f' HYPERLINK "file:///C:\\\\Users\\\\{CANARY}\\\\evidence.png" ',
        f" HYPERLINK ..\\\\{CANARY}\\\\evidence.png ",
        f' HYPERLINK "{fx.HYPERLINK}" \\o "C:\\\\Users\\\\{CANARY}" ',
    ],
)
def test_docx_hyperlink_field_to_a_local_file_is_withheld(instruction: str) -> None:
    half = len(instruction) // 2
    field = (
        '<w:p><w:r><w:fldChar w:fldCharType="begin"/></w:r>'
        f'<w:r><w:instrText xml:space="preserve">{instruction[:half]}</w:instrText></w:r>'
        f'<w:r><w:instrText xml:space="preserve">{instruction[half:]}</w:instrText></w:r>'
        '<w:r><w:fldChar w:fldCharType="separate"/></w:r><w:r><w:t>photo</w:t></w:r>'
        '<w:r><w:fldChar w:fldCharType="end"/></w:r></w:p>'
    )
    result = _clean(_docx_with(field, []), "statement.docx")

    assert result.attachment is None
    assert result.note is not None and "refers to files outside it" in result.note


def test_docx_hyperlink_field_to_a_web_page_is_kept() -> None:
    field = (
        f'<w:p><w:fldSimple w:instr=" HYPERLINK &quot;{fx.HYPERLINK}&quot; \\l &quot;top&quot; ">'
        "<w:r><w:t>web</w:t></w:r></w:fldSimple></w:p>"
    )
    result = _clean(_docx_with(field, []), "statement.docx")

    assert result.attachment is not None, result.note
    assert fx.HYPERLINK.encode() in fx.members(result.attachment.data)["word/document.xml"]


def test_pptx_click_action_to_a_local_file_loses_its_link() -> None:
    target = f"file:///C:/Users/{CANARY}/Desktop/evidence.png"
    slide = (
        f'<p:sld xmlns:p="{PP}" xmlns:a="{fx.A}" xmlns:r="{fx.R}"><p:cSld><p:spTree><p:sp>'
        '<p:nvSpPr><p:cNvPr id="2" name="t"><a:hlinkClick r:id="rId2"/></p:cNvPr></p:nvSpPr>'
        '<p:txBody><a:p><a:r><a:rPr><a:hlinkClick r:id="rId3" tooltip="x"/></a:rPr>'
        "<a:t>web</a:t></a:r></a:p></p:txBody></p:sp></p:spTree></p:cSld></p:sld>"
    )
    rels = (
        f'<Relationships xmlns="{fx.PR}">'
        f'<Relationship Id="rId2" Type="{fx.REL}/hyperlink" Target="{target}" '
        'TargetMode="External"/>'
        f'<Relationship Id="rId3" Type="{fx.REL}/hyperlink" Target="{fx.HYPERLINK}" '
        'TargetMode="External"/></Relationships>'
    )
    data = fx.package(
        [
            ("[Content_Types].xml", f'<Types xmlns="{fx.CT}"/>'.encode()),
            ("ppt/presentation.xml", f'<p:presentation xmlns:p="{PP}"/>'.encode()),
            ("ppt/slides/slide1.xml", slide.encode()),
            ("ppt/slides/_rels/slide1.xml.rels", rels.encode()),
        ]
    )

    parts = _package_without_canary(_clean(data, "slides.pptx"))

    assert fx.HYPERLINK.encode() in parts["ppt/slides/_rels/slide1.xml.rels"]
    assert b'<a:hlinkClick r:id="rId3">' in parts["ppt/slides/slide1.xml"]
    assert b"rId2" not in parts["ppt/slides/slide1.xml"]


def _odt_with(paragraph: str) -> bytes:
    members = dict(fx.odt_members())
    content = members["content.xml"].decode()
    members["content.xml"] = content.replace(
        "</office:text>", f"{paragraph}</office:text>"
    ).encode()
    return fx.package(list(members.items()), stored=("mimetype",))


@pytest.mark.parametrize("target", LOCAL_TARGETS)
def test_odt_hyperlink_to_a_local_file_becomes_plain_text(target: str) -> None:
    link = (
        f'<text:p>see <text:a xlink:type="simple" xlink:href={quoteattr(target)}>my photo'
        "</text:a> here</text:p>"
    )
    parts = _package_without_canary(_clean(_odt_with(link), "statement.odt"))

    content = parts["content.xml"]
    assert f'xlink:href="{fx.HYPERLINK}"'.encode() in content  # the web link stays
    assert b"see my photo here" in content


def test_odt_hyperlink_name_title_frame_and_bibliography_url_lose_the_path() -> None:
    path = f"C:\\Users\\{CANARY}\\evidence.png"
    link = (
        f'<text:p><text:a xlink:type="simple" xlink:href="{fx.HYPERLINK}" office:name="{path}" '
        f'office:title="{path}" office:target-frame-name="{path}">web</text:a>'
        f'<text:a xlink:href="#Heading|outline" office:target-frame-name="_blank">top</text:a>'
        f'<text:bibliography-mark text:identifier="b1" text:url="file:///{path}"/>'
        f'<draw:a xlink:href="file:///{path}"><draw:frame draw:name="F"/></draw:a>'
        f'<draw:image xlink:href="Users/{CANARY}/photo.png"/></text:p>'
    )
    parts = _package_without_canary(_clean(_odt_with(link), "statement.odt"))

    content = parts["content.xml"]
    assert f'<text:a xlink:type="simple" xlink:href="{fx.HYPERLINK}">web'.encode() in content
    assert b'xlink:href="#Heading|outline" office:target-frame-name="_blank"' in content
    assert b'<draw:frame draw:name="F">' in content  # the frame stays, its link goes


# -- PDF ----------------------------------------------------------------------------------------


def _uri(uri: str) -> DictionaryObject:
    return DictionaryObject(
        {NameObject("/S"): NameObject("/URI"), NameObject("/URI"): TextStringObject(uri)}
    )


def _link(action: DictionaryObject, key: str = "/A") -> DictionaryObject:
    rect = ArrayObject([FloatObject(v) for v in (10, 10, 30, 30)])
    return DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Annot"),
            NameObject("/Subtype"): NameObject("/Link"),
            NameObject("/Rect"): rect,
            NameObject(key): action,
        }
    )


def _pdf_with(change: Callable[[PdfWriter], None]) -> bytes:
    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    writer.add_annotation(page_number=0, annotation=_link(_uri(fx.HYPERLINK)))
    change(writer)
    out = BytesIO()
    writer.write(out)
    return out.getvalue()


def _pdf_without_canary(result: Cleaned) -> PdfReader:
    assert result.attachment is not None, result.note
    data = result.attachment.data
    assert CANARY.encode() not in data
    reader = PdfReader(BytesIO(data))
    for generation in reader.xref.values():
        for number in generation:
            obj = reader.get_object(number)
            if isinstance(obj, StreamObject):
                assert CANARY.encode() not in obj.get_data()
    uris = [
        str(annotation.get_object()["/A"]["/URI"])
        for annotation in reader.pages[0].get("/Annots", [])
        if "/A" in annotation.get_object()
    ]
    assert fx.HYPERLINK in uris  # the web link stays
    return reader


@pytest.mark.parametrize("target", LOCAL_TARGETS)
def test_pdf_link_to_a_local_file_loses_its_action(target: str) -> None:
    def change(writer: PdfWriter) -> None:
        writer.add_annotation(page_number=0, annotation=_link(_uri(target)))

    result = _clean(_pdf_with(change), "statement.pdf")

    reader = _pdf_without_canary(result)
    assert len(reader.pages[0]["/Annots"]) == 2  # the link stays, without its action
    assert result.note is not None and "removed" in result.note


def test_pdf_open_additional_chained_javascript_and_base_uri_actions_go() -> None:
    local = f"file:///C:/Users/{CANARY}/evidence.png"

    def change(writer: PdfWriter) -> None:
        javascript = DictionaryObject(
            {
                NameObject("/S"): NameObject("/JavaScript"),
                NameObject("/JS"): TextStringObject(f'app.launchURL("{local}")'),
            }
        )
        chained = _uri(fx.HYPERLINK)
        chained[NameObject("/Next")] = ArrayObject([_uri(local), javascript])
        writer.add_annotation(page_number=0, annotation=_link(chained))
        additional = DictionaryObject({NameObject("/E"): _uri(local)})
        writer.add_annotation(page_number=0, annotation=_link(additional, "/AA"))
        writer._root_object[NameObject("/OpenAction")] = writer._add_object(_uri(local))
        writer._root_object[NameObject("/URI")] = DictionaryObject(
            {NameObject("/Base"): TextStringObject(f"file:///C:/Users/{CANARY}/")}
        )
        submit = DictionaryObject(
            {
                NameObject("/S"): NameObject("/SubmitForm"),
                NameObject("/F"): TextStringObject(f"\\\\server\\{CANARY}\\form.fdf"),
            }
        )
        writer.add_annotation(page_number=0, annotation=_link(submit))

    reader = _pdf_without_canary(_clean(_pdf_with(change), "statement.pdf"))

    assert "/OpenAction" not in reader.trailer["/Root"]


def test_pdf_file_specification_by_path_is_withheld() -> None:
    def change(writer: PdfWriter) -> None:
        spec = DictionaryObject(
            {
                NameObject("/Type"): NameObject("/Filespec"),
                NameObject("/UF"): TextStringObject(f"C:\\Users\\{CANARY}\\movie.mov"),
            }
        )
        writer._root_object[NameObject("/Extra")] = writer._add_object(spec)

    result = _clean(_pdf_with(change), "statement.pdf")

    assert result.attachment is None
    assert result.note is not None and "refers to files outside it" in result.note


# -- Properties -----------------------------------------------------------------------------------

_PATHISH = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30)


@given(
    prefix=st.sampled_from(["file:", "smb:", "\\\\", "C:", "..", "/", "", " https://"]),
    rest=_PATHISH,
)
@settings(max_examples=40, deadline=None)
def test_any_non_web_hyperlink_target_leaves_no_trace(prefix: str, rest: str) -> None:
    target = f"{prefix}{rest}/{CANARY}"
    assert not web_link(target)
    data = _docx_with(_hyperlink("rId20", "x"), [("rId20", "hyperlink", target, True)])

    _package_without_canary(_clean(data, "statement.docx"))


@given(st.sampled_from(["http://", "https://", "HTTPS://", "mailto:"]), _PATHISH)
def test_web_links_are_recognised(scheme: str, rest: str) -> None:
    assert web_link(scheme + rest)
    assert not web_link("file://" + rest)


def test_xlsx_cell_hyperlink_to_a_local_file_loses_its_link_and_still_opens() -> None:
    from openpyxl import Workbook, load_workbook

    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet["A1"] = "my photo"
    sheet["A1"].hyperlink = f"file:///C:/Users/{CANARY}/Desktop/evidence.png"
    sheet["A2"] = "web"
    sheet["A2"].hyperlink = fx.HYPERLINK
    out = BytesIO()
    workbook.save(out)

    result = _clean(out.getvalue(), "log.xlsx")

    _package_without_canary(result)
    assert result.attachment is not None
    reopened = load_workbook(BytesIO(result.attachment.data)).active
    assert reopened is not None
    emptied = reopened["A1"].hyperlink  # kept without a target: a valid, inert hyperlink
    assert reopened["A1"].value == "my photo" and emptied is not None and emptied.target is None
    assert reopened["A2"].hyperlink is not None and reopened["A2"].hyperlink.target == fx.HYPERLINK
