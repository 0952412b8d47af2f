"""Documents and photos carrying a canary identity in their hidden details, built here.

Each builder returns the bytes of a realistic file whose author, initials, user id, template path,
thumbnail, comment, tracked changes and embedded photo (EXIF with GPS) carry `CANARIES`; the
visible text carries `VISIBLE` (kept by cleaning) and `INSERTED` (a tracked insertion, kept when
changes are accepted); `DELETED` is tracked-deleted text that must go.
"""

from __future__ import annotations

import zipfile
from io import BytesIO

import pillow_heif
from PIL import Image

AUTHOR = "Canary Author-7Q"
USER_ID = "S::canary7q@example.ac.uk::4f1b7q"
PATH = "C:\\Users\\canary7q\\Documents"
INITIALS = "CA7Q"
CANARIES = [AUTHOR, "canary7q", INITIALS, "Canary", "7Q"]
VISIBLE = "What happened in the library"
INSERTED = "INSERTED-TEXT"
DELETED = "DELETED-WORDS"
HYPERLINK = "https://example.org/evidence"

W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
R = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
PR = "http://schemas.openxmlformats.org/package/2006/relationships"
CT = "http://schemas.openxmlformats.org/package/2006/content-types"
REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
W14 = "http://schemas.microsoft.com/office/word/2010/wordml"
W15 = "http://schemas.microsoft.com/office/word/2012/wordml"
MC = "http://schemas.openxmlformats.org/markup-compatibility/2006"
A = "http://schemas.openxmlformats.org/drawingml/2006/main"
PIC = "http://schemas.openxmlformats.org/drawingml/2006/picture"
WP = "http://schemas.openxmlformats.org/drawingml/2006/wordprocessingDrawing"


def photo(fmt: str = "JPEG") -> bytes:
    """A small photo whose EXIF names the canary and holds a GPS position."""
    exif = Image.Exif()
    exif[315] = AUTHOR  # Artist
    exif[0x010F] = "canary7q phone"  # Make
    exif[34853] = {1: "N", 2: (51.0, 30.0, 7.0), 3: "W", 4: (0.0, 7.0, 7.0)}  # GPSInfo
    out = BytesIO()
    Image.new("RGB", (24, 16), (10, 120, 200)).save(out, fmt, exif=exif)
    return out.getvalue()


def heic_photo() -> bytes:
    """An iPhone-style HEIC, written by pillow-heif, with the canary's EXIF and GPS."""
    pillow_heif.register_heif_opener()
    exif = Image.Exif()
    exif[315] = AUTHOR
    exif[34853] = {1: "N", 2: (51.0, 30.0, 7.0), 3: "W", 4: (0.0, 7.0, 7.0)}
    out = BytesIO()
    Image.new("RGB", (64, 48), (200, 60, 20)).save(out, "HEIF", exif=exif.tobytes(), quality=80)
    return out.getvalue()


def package(members: list[tuple[str, bytes]], stored: tuple[str, ...] = ()) -> bytes:
    out = BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            method = zipfile.ZIP_STORED if name in stored else zipfile.ZIP_DEFLATED
            archive.writestr(name, data, compress_type=method)
    return out.getvalue()


def members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _xml(text: str) -> bytes:
    return ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n' + text).encode()


def _rels(*relationships: tuple[str, str, str, bool]) -> bytes:
    items = "".join(
        f'<Relationship Id="{rid}" Type="{REL}/{kind}" Target="{target}"'
        + (' TargetMode="External"' if external else "")
        + "/>"
        for rid, kind, target, external in relationships
    )
    return _xml(f'<Relationships xmlns="{PR}">{items}</Relationships>')


def _core() -> bytes:
    return _xml(
        '<cp:coreProperties xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/'
        'core-properties" xmlns:dc="http://purl.org/dc/elements/1.1/">'
        f"<dc:creator>{AUTHOR}</dc:creator><cp:lastModifiedBy>{AUTHOR}</cp:lastModifiedBy>"
        "</cp:coreProperties>"
    )


def docx_members() -> list[tuple[str, bytes]]:
    overrides = {
        "/word/document.xml": "wordprocessingml.document.main+xml",
        "/word/settings.xml": "wordprocessingml.settings+xml",
        "/word/comments.xml": "wordprocessingml.comments+xml",
        "/word/people.xml": "wordprocessingml.people+xml",
        "/docProps/core.xml": "package.core-properties+xml",
        "/customXml/itemProps1.xml": "officedocument.customXmlProperties+xml",
    }
    override_xml = "".join(
        f'<Override PartName="{part}" ContentType="application/vnd.openxmlformats-{kind}"/>'
        for part, kind in overrides.items()
    )
    content_types = _xml(
        f'<Types xmlns="{CT}"><Default Extension="rels" ContentType="application/'
        'vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" '
        'ContentType="application/xml"/><Default Extension="jpeg" ContentType="image/jpeg"/>'
        f"{override_xml}</Types>"
    )
    document = _xml(
        f'<w:document xmlns:w="{W}" xmlns:r="{R}" xmlns:w14="{W14}" xmlns:mc="{MC}" '
        f'xmlns:a="{A}" xmlns:pic="{PIC}" xmlns:wp="{WP}" mc:Ignorable="w14">'
        f"<!-- saved by {AUTHOR} -->"
        '<w:body><w:p w:rsidR="00C7A7Q1" w14:paraId="1A2B3C4D">'
        '<w:commentRangeStart w:id="0"/>'
        f"<w:r><w:t>{VISIBLE}</w:t></w:r>"
        f'<w:ins w:id="1" w:author="{AUTHOR}" w:date="2026-11-20T10:00:00Z">'
        f'<w:r><w:t xml:space="preserve"> {INSERTED}</w:t></w:r></w:ins>'
        f'<w:del w:id="2" w:author="{AUTHOR}" w:date="2026-11-20T10:01:00Z">'
        f"<w:r><w:delText>{DELETED}</w:delText></w:r></w:del>"
        '<w:commentRangeEnd w:id="0"/><w:r><w:commentReference w:id="0"/></w:r>'
        f'<w:hyperlink r:id="rId6"><w:r><w:t>{HYPERLINK}</w:t></w:r></w:hyperlink>'
        "</w:p><w:p><w:r><w:rPr><w:b/>"
        f'<w:rPrChange w:id="3" w:author="{AUTHOR}" w:date="2026-11-20T10:02:00Z"><w:rPr/>'
        '</w:rPrChange></w:rPr><w:drawing><wp:inline><wp:docPr id="1" name="Picture 1"/>'
        '<a:graphic><a:graphicData uri="http://schemas.openxmlformats.org/drawingml/2006/'
        'picture"><pic:pic><pic:blipFill><a:blip r:embed="rId5"/></pic:blipFill></pic:pic>'
        "</a:graphicData></a:graphic></wp:inline></w:drawing></w:r></w:p>"
        "<w:sectPr/></w:body></w:document>"
    )
    settings = _xml(
        f'<w:settings xmlns:w="{W}" xmlns:r="{R}" xmlns:w15="{W15}">'
        '<w:trackRevisions/><w:attachedTemplate r:id="rId1"/>'
        f'<w:docVars><w:docVar w:name="owner" w:val="{AUTHOR}"/></w:docVars>'
        '<w:rsids><w:rsidRoot w:val="00C7A7Q1"/></w:rsids>'
        '<w15:docId w15:val="{7Q7Q7Q7Q-0000-0000-0000-000000000000}"/></w:settings>'
    )
    comments = _xml(
        f'<w:comments xmlns:w="{W}"><w:comment w:id="0" w:author="{AUTHOR}" '
        f'w:initials="{INITIALS}"><w:p><w:r><w:t>note by canary7q</w:t></w:r></w:p>'
        "</w:comment></w:comments>"
    )
    people = _xml(
        f'<w15:people xmlns:w15="{W15}"><w15:person w15:author="{AUTHOR}">'
        f'<w15:presenceInfo w15:providerId="AD" w15:userId="{USER_ID}"/></w15:person>'
        "</w15:people>"
    )
    return [
        ("[Content_Types].xml", content_types),
        (
            "_rels/.rels",
            _rels(
                ("rId1", "officeDocument", "word/document.xml", False),
                ("rId2", "metadata/thumbnail", "docProps/thumbnail.jpeg", False),
                ("rId3", "metadata/core-properties", "docProps/core.xml", False),
            ),
        ),
        ("docProps/core.xml", _core()),
        ("docProps/thumbnail.jpeg", photo()),
        ("word/document.xml", document),
        (
            "word/_rels/document.xml.rels",
            _rels(
                ("rId2", "settings", "settings.xml", False),
                ("rId3", "comments", "comments.xml", False),
                ("rId4", "people", "people.xml", False),
                ("rId5", "image", "media/image1.jpeg", False),
                ("rId6", "hyperlink", HYPERLINK, True),
                ("rId7", "customXml", "../customXml/item1.xml", False),
            ),
        ),
        ("word/settings.xml", settings),
        (
            "word/_rels/settings.xml.rels",
            _rels(("rId1", "attachedTemplate", f"file:///{PATH}\\Normal.dotm", True)),
        ),
        ("word/comments.xml", comments),
        ("word/people.xml", people),
        ("word/media/image1.jpeg", photo()),
        ("customXml/item1.xml", _xml(f"<owner>{AUTHOR}</owner>")),
        (
            "customXml/itemProps1.xml",
            _xml(f'<ds:datastoreItem xmlns:ds="x" ds:itemID="{USER_ID}"/>'),
        ),
        (
            "customXml/_rels/item1.xml.rels",
            _rels(("rId1", "customXmlProps", "itemProps1.xml", False)),
        ),
    ]


def docx() -> bytes:
    return package(docx_members())


def xlsx() -> bytes:
    """A workbook written by openpyxl (with a comment by the canary), then given the parts
    and attributes Excel adds: absPath, file-sharing user name, persons, a thumbnail."""
    from openpyxl import Workbook
    from openpyxl.comments import Comment

    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet["A1"] = VISIBLE
    sheet["A1"].comment = Comment("seen by canary7q", AUTHOR)
    workbook.properties.creator = AUTHOR
    out = BytesIO()
    workbook.save(out)
    parts = members(out.getvalue())
    book = parts["xl/workbook.xml"].decode()
    head, rest = book.split("<workbookPr", 1)
    extra = (
        f'<fileSharing userName="{AUTHOR}"/>'
        '<mc:AlternateContent xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/'
        '2006"><mc:Choice Requires="x15"><x15ac:absPath xmlns:x15ac="http://schemas.microsoft.'
        f'com/office/spreadsheetml/2010/11/ac" url="{PATH}\\"/></mc:Choice></mc:AlternateContent>'
    )
    parts["xl/workbook.xml"] = (head + extra + "<workbookPr" + rest).encode()
    parts["xl/persons/person.xml"] = _xml(
        '<personList xmlns="http://schemas.microsoft.com/office/spreadsheetml/2018/threadedcomments">'
        f'<person displayName="{AUTHOR}" id="{{7Q}}" userId="{USER_ID}" providerId="AD"/>'
        "</personList>"
    )
    parts["docProps/thumbnail.jpeg"] = photo()
    return package(list(parts.items()))


ODF_NS = {
    "office": "urn:oasis:names:tc:opendocument:xmlns:office:1.0",
    "text": "urn:oasis:names:tc:opendocument:xmlns:text:1.0",
    "draw": "urn:oasis:names:tc:opendocument:xmlns:drawing:1.0",
    "xlink": "http://www.w3.org/1999/xlink",
    "dc": "http://purl.org/dc/elements/1.1/",
    "meta": "urn:oasis:names:tc:opendocument:xmlns:meta:1.0",
    "officeooo": "http://openoffice.org/2009/office",
    "svg": "urn:oasis:names:tc:opendocument:xmlns:svg-compatible:1.0",
    "manifest": "urn:oasis:names:tc:opendocument:xmlns:manifest:1.0",
    "config": "urn:oasis:names:tc:opendocument:xmlns:config:1.0",
}


def _odf_ns(*prefixes: str) -> str:
    return " ".join(f'xmlns:{p}="{ODF_NS[p]}"' for p in prefixes)


def odt_members() -> list[tuple[str, bytes]]:
    change_info = (
        f"<office:change-info><dc:creator>{AUTHOR}</dc:creator>"
        "<dc:date>2026-11-20T10:00:00</dc:date></office:change-info>"
    )
    content = _xml(
        f"<office:document-content {_odf_ns('office', 'text', 'draw', 'xlink', 'dc', 'officeooo', 'svg')}"
        ' office:version="1.3"><office:body><office:text>'
        '<text:tracked-changes><text:changed-region text:id="ct1"><text:insertion>'
        f"{change_info}</text:insertion></text:changed-region>"
        f'<text:changed-region text:id="ct2"><text:deletion>{change_info}'
        f"<text:p>{DELETED}</text:p></text:deletion></text:changed-region></text:tracked-changes>"
        f'<text:p officeooo:rsid="7a7q" officeooo:paragraph-rsid="7a7q">{VISIBLE}'
        f'<text:change-start text:change-id="ct1"/> {INSERTED}<text:change-end text:change-id="ct1"/>'
        '<text:change text:change-id="ct2"/>'
        f"<office:annotation><dc:creator>{AUTHOR}</dc:creator><meta:creator-initials "
        f'xmlns:meta="{ODF_NS["meta"]}">{INITIALS}</meta:creator-initials>'
        "<dc:date>2026-11-20T10:00:00</dc:date><text:p>comment by canary7q</text:p>"
        f"</office:annotation> <text:author-name>{AUTHOR}</text:author-name>"
        f'<text:a xlink:type="simple" xlink:href="{HYPERLINK}">{HYPERLINK}</text:a></text:p>'
        '<text:p><draw:frame draw:name="Image1" svg:width="2cm" svg:height="1cm">'
        '<draw:image xlink:href="Pictures/photo.jpg" xlink:type="simple"/></draw:frame>'
        '<draw:frame draw:name="Image2" svg:width="2cm" svg:height="1cm">'
        f'<draw:image xlink:href="file:///{PATH.replace(chr(92), "/")}/linked.png"/></draw:frame>'
        "</text:p></office:text></office:body></office:document-content>"
    )
    meta = _xml(
        f'<office:document-meta {_odf_ns("office", "meta", "dc")} office:version="1.3">'
        f"<office:meta><meta:initial-creator>{AUTHOR}</meta:initial-creator>"
        f"<dc:creator>{AUTHOR}</dc:creator></office:meta></office:document-meta>"
    )
    settings = _xml(
        f"<office:document-settings {_odf_ns('office', 'config')}><office:settings>"
        '<config:config-item-set config:name="ooo:configuration-settings">'
        f'<config:config-item config:name="PrinterName" config:type="string">{AUTHOR} printer'
        "</config:config-item></config:config-item-set></office:settings>"
        "</office:document-settings>"
    )
    files = ["content.xml", "meta.xml", "settings.xml", "Thumbnails/thumbnail.png"]
    files += ["Pictures/photo.jpg", "manifest.rdf"]
    entries = "".join(
        f'<manifest:file-entry manifest:full-path="{name}" manifest:media-type="x"/>'
        for name in files
    )
    manifest = _xml(
        f'<manifest:manifest {_odf_ns("manifest")} manifest:version="1.3">'
        '<manifest:file-entry manifest:full-path="/" '
        f'manifest:media-type="application/vnd.oasis.opendocument.text"/>{entries}'
        "</manifest:manifest>"
    )
    return [
        ("mimetype", b"application/vnd.oasis.opendocument.text"),
        ("META-INF/manifest.xml", manifest),
        ("content.xml", content),
        ("meta.xml", meta),
        ("settings.xml", settings),
        ("Thumbnails/thumbnail.png", photo("PNG")),
        ("Pictures/photo.jpg", photo()),
        ("manifest.rdf", _xml(f'<rdf:RDF xmlns:rdf="r"><owner>{AUTHOR}</owner></rdf:RDF>')),
    ]


def odt() -> bytes:
    return package(odt_members(), stored=("mimetype",))


def pptx() -> bytes:
    """A minimal presentation with a comment author list and a comment."""
    p = "http://schemas.openxmlformats.org/presentationml/2006/main"
    return package(
        [
            ("[Content_Types].xml", _xml(f'<Types xmlns="{CT}"/>')),
            ("_rels/.rels", _rels(("rId1", "officeDocument", "ppt/presentation.xml", False))),
            ("ppt/presentation.xml", _xml(f'<p:presentation xmlns:p="{p}"/>')),
            (
                "ppt/_rels/presentation.xml.rels",
                _rels(
                    ("rId1", "commentAuthors", "commentAuthors.xml", False),
                    ("rId2", "slide", "slides/slide1.xml", False),
                ),
            ),
            (
                "ppt/commentAuthors.xml",
                _xml(
                    f'<p:cmAuthorLst xmlns:p="{p}"><p:cmAuthor id="0" name="{AUTHOR}" '
                    f'initials="{INITIALS}" lastIdx="1" clrIdx="0"/></p:cmAuthorLst>'
                ),
            ),
            ("ppt/slides/slide1.xml", _xml(f'<p:sld xmlns:p="{p}"><p:cSld/></p:sld>')),
            (
                "ppt/slides/_rels/slide1.xml.rels",
                _rels(("rId1", "comments", "../comments/comment1.xml", False)),
            ),
            (
                "ppt/comments/comment1.xml",
                _xml(
                    f'<p:cmLst xmlns:p="{p}"><p:cm authorId="0"><p:text>by canary7q</p:text>'
                    "</p:cm></p:cmLst>"
                ),
            ),
        ]
    )
