"""clean.py: attachments leave without metadata, or not at all; inputs are generated here."""

from __future__ import annotations

import unicodedata
import zipfile
from io import BytesIO
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import GifImagePlugin, Image, PngImagePlugin
from pypdf import PdfReader, PdfWriter
from pypdf.generic import ArrayObject, DictionaryObject, FloatObject, NameObject, TextStringObject

from pipeline.clean import Cleaned, clean_attachment
from pipeline.report import Attachment
from tests.unit.clean_fixtures import members as package_members
from tests.unit.clean_fixtures import package

SECRET = "Secret Name"
KEPT = "the original is kept in the encrypted record."


def _image(fmt: str, size: tuple[int, int] = (40, 30), **options: Any) -> bytes:
    out = BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, fmt, **options)
    return out.getvalue()


def _exif(orientation: int | None = None) -> Image.Exif:
    exif = Image.Exif()
    exif[315] = SECRET  # Artist
    exif[34853] = {1: "N", 2: (51.0, 30.0, 0.0), 3: "W", 4: (0.0, 7.0, 0.0)}  # GPSInfo
    if orientation is not None:
        exif[274] = orientation
    return exif


def _pdf(pages: int = 2) -> bytes:
    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=200, height=200)
    writer.add_metadata({"/Author": SECRET, "/Title": "My complaint"})
    out = BytesIO()
    writer.write(out)
    return out.getvalue()


W_NS = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
DOCX_MEMBERS = [
    (
        "[Content_Types].xml",
        b'<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/'
        b'content-types"><Default Extension="png" ContentType="image/png"/></Types>',
    ),
    (
        "_rels/.rels",
        b'<?xml version="1.0"?><Relationships '
        b'xmlns="http://schemas.openxmlformats.org/package/2006/relationships"/>',
    ),
    (
        "docProps/core.xml",
        b'<?xml version="1.0"?><cp:coreProperties xmlns:cp="c" xmlns:dc="d">'
        b"<dc:creator>Secret Name</dc:creator><cp:lastModifiedBy>Secret Name</cp:lastModifiedBy>"
        b"</cp:coreProperties>",
    ),
    ("docProps/app.xml", b"<Properties><Company>Secret Name Ltd</Company></Properties>"),
    (
        "word/document.xml",
        f'<w:document xmlns:w="{W_NS}"><w:body>What happened</w:body></w:document>'.encode(),
    ),
    ("word/media/image1.png", _image("PNG")),
]

ODT_MEMBERS = [
    ("mimetype", b"application/vnd.oasis.opendocument.text"),
    (
        "META-INF/manifest.xml",
        b'<manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0"/>',
    ),
    (
        "meta.xml",
        b'<office:document-meta xmlns:office="o" xmlns:meta="m" office:version="1.3"><office:meta>'
        b"<meta:initial-creator>Secret Name</meta:initial-creator></office:meta>"
        b"</office:document-meta>",
    ),
    (
        "content.xml",
        b'<office:document-content xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0"'
        b">What happened</office:document-content>",
    ),
]


def _clean(data: bytes, filename: str, content_type: str, **kwargs: int) -> Cleaned:
    return clean_attachment(Attachment(filename, content_type, data), **kwargs)


def _withheld(result: Cleaned, reason: str) -> None:
    assert result.attachment is None
    assert result.note is not None
    assert reason in result.note
    assert result.note.endswith(KEPT)


# -- Images ----------------------------------------------------------------------------------


def test_jpeg_loses_gps_and_artist_and_keeps_its_size() -> None:
    original = _image("JPEG", exif=_exif().tobytes(), comment=b"Secret Name")
    assert Image.open(BytesIO(original)).getexif()[315] == SECRET  # the input really has it

    result = _clean(original, "photo.jpg", "image/jpeg")

    assert result.attachment is not None
    assert (
        result.note == "photo.jpg: hidden details such as location, camera and author were removed."
    )
    assert result.attachment.content_type == "image/jpeg"
    with Image.open(BytesIO(result.attachment.data)) as cleaned:
        assert cleaned.format == "JPEG"
        assert cleaned.size == (40, 30)
        assert len(cleaned.getexif()) == 0
        assert not {"exif", "comment", "xmp", "icc_profile"} & cleaned.info.keys()
    assert SECRET.encode() not in result.attachment.data


def test_jpeg_orientation_is_applied_before_exif_is_dropped() -> None:
    original = _image("JPEG", size=(40, 30), exif=_exif(orientation=6).tobytes())

    result = _clean(original, "photo.jpg", "image/jpeg")

    assert result.attachment is not None
    with Image.open(BytesIO(result.attachment.data)) as cleaned:
        assert cleaned.size == (30, 40)
        assert len(cleaned.getexif()) == 0


def test_png_text_chunk_is_gone() -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", SECRET)
    original = _image("PNG", pnginfo=info)
    assert SECRET.encode() in original

    result = _clean(original, "screen.png", "image/png")

    assert result.attachment is not None
    assert result.note is not None
    with Image.open(BytesIO(result.attachment.data)) as cleaned:
        assert isinstance(cleaned, PngImagePlugin.PngImageFile)
        assert cleaned.text == {}
        assert "Author" not in cleaned.info
    assert SECRET.encode() not in result.attachment.data


@pytest.mark.parametrize(
    ("fmt", "options"),
    [
        ("TIFF", {"tiffinfo": {315: SECRET, 271: "PhoneMaker"}}),
        ("WEBP", {"exif": _exif().tobytes()}),
        ("GIF", {"comment": SECRET.encode()}),
    ],
)
def test_other_formats_are_resaved_in_the_same_format_without_metadata(
    fmt: str, options: dict[str, Any]
) -> None:
    original = _image(fmt, **options)
    assert SECRET.encode() in original

    result = _clean(original, f"picture.{fmt.lower()}", "application/octet-stream")

    assert result.attachment is not None
    assert result.note is not None
    assert SECRET.encode() not in result.attachment.data
    with Image.open(BytesIO(result.attachment.data)) as cleaned:
        assert cleaned.format == fmt
        assert cleaned.size == (40, 30)


def test_animated_gif_keeps_its_frames() -> None:
    frames = [Image.new("RGB", (20, 20), colour) for colour in ("red", "green", "blue")]
    out = BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert GifImagePlugin.GifImageFile(BytesIO(out.getvalue())).n_frames == 3

    result = _clean(out.getvalue(), "moving.gif", "image/gif")

    assert result.attachment is not None
    assert result.note is None  # nothing to remove, nothing to say
    with Image.open(BytesIO(result.attachment.data)) as cleaned:
        assert isinstance(cleaned, GifImagePlugin.GifImageFile)
        assert cleaned.n_frames == 3
        assert cleaned.info["loop"] == 0


def test_image_without_metadata_gets_no_note() -> None:
    result = _clean(_image("PNG"), "plain.png", "image/png")

    assert result.attachment is not None
    assert result.note is None


def test_decompression_bomb_error_is_withheld(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 40 x 30 is over twice that

    _withheld(_clean(_image("PNG"), "big.png", "image/png"), "too large")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decompression_bomb_warning_is_withheld(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1200 pixels: only a warning

    _withheld(_clean(_image("PNG"), "big.png", "image/png"), "too large")


def test_unreadable_heic_is_withheld() -> None:
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64

    result = _clean(heic, "IMG_0001.HEIC", "image/heic")

    _withheld(result, "its metadata could not be removed")
    assert result.note is not None and result.note.startswith("IMG_0001.HEIC: withheld")


def test_garbage_declared_as_jpeg_is_withheld() -> None:
    _withheld(_clean(b"\x13\x37 not really a photo" * 20, "photo.jpg", "image/jpeg"), "withheld")


def test_truncated_jpeg_is_withheld() -> None:
    original = _image("JPEG", size=(200, 200))

    _withheld(_clean(original[:400], "photo.jpg", "image/jpeg"), "could not be read")


def test_multi_picture_jpeg_keeps_only_the_first_picture_without_exif() -> None:
    out = BytesIO()
    first, second = Image.new("RGB", (40, 30), "red"), Image.new("RGB", (20, 10), "blue")
    first.save(out, "MPO", save_all=True, append_images=[second], exif=_exif().tobytes())
    assert Image.open(BytesIO(out.getvalue())).format == "MPO"

    result = _clean(out.getvalue(), "portrait.jpg", "image/jpeg")

    assert result.attachment is not None
    assert SECRET.encode() not in result.attachment.data
    with Image.open(BytesIO(result.attachment.data)) as cleaned:
        assert (cleaned.format, cleaned.size) == ("JPEG", (40, 30))


def test_type_comes_from_the_content_not_the_name() -> None:
    result = _clean(_image("PNG"), "photo.jpg", "image/jpeg")

    assert result.attachment is not None
    assert result.attachment.content_type == "image/png"
    assert result.attachment.data.startswith(b"\x89PNG")


# -- PDF -------------------------------------------------------------------------------------


def test_pdf_loses_author_and_title_and_keeps_its_pages() -> None:
    original = _pdf(pages=2)
    assert PdfReader(BytesIO(original)).metadata.author == SECRET  # type: ignore[union-attr]

    result = _clean(original, "statement.pdf", "application/pdf")

    assert result.attachment is not None
    assert result.note == "statement.pdf: hidden details such as author and title were removed."
    reader = PdfReader(BytesIO(result.attachment.data))
    assert len(reader.pages) == 2
    assert reader.metadata is None or "/Author" not in reader.metadata
    assert SECRET.encode() not in result.attachment.data
    assert b"/Author" not in result.attachment.data


def test_pdf_xmp_metadata_is_gone() -> None:
    writer = PdfWriter(clone_from=PdfReader(BytesIO(_pdf(pages=1))))
    writer.xmp_metadata = b"<x:xmpmeta><dc:creator>Secret Name</dc:creator></x:xmpmeta>"
    out = BytesIO()
    writer.write(out)

    result = _clean(out.getvalue(), "statement.pdf", "application/pdf")

    assert result.attachment is not None
    assert b"/Metadata" not in result.attachment.data
    assert SECRET.encode() not in result.attachment.data


def test_pdf_comment_author_is_removed() -> None:
    writer = PdfWriter(clone_from=PdfReader(BytesIO(_pdf(pages=1))))
    note = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Annot"),
            NameObject("/Subtype"): NameObject("/Text"),
            NameObject("/Rect"): ArrayObject([FloatObject(v) for v in (10, 10, 30, 30)]),
            NameObject("/T"): TextStringObject(SECRET),
            NameObject("/Contents"): TextStringObject("see paragraph 2"),
        }
    )
    writer.add_annotation(page_number=0, annotation=note)
    out = BytesIO()
    writer.write(out)
    assert SECRET.encode() in out.getvalue()

    result = _clean(out.getvalue(), "marked.pdf", "application/pdf")

    assert result.attachment is not None
    assert SECRET.encode() not in result.attachment.data
    assert b"see paragraph 2" in result.attachment.data  # the comment itself stays


def test_encrypted_pdf_is_withheld() -> None:
    writer = PdfWriter(clone_from=PdfReader(BytesIO(_pdf(pages=1))))
    writer.encrypt("password")
    out = BytesIO()
    writer.write(out)

    _withheld(_clean(out.getvalue(), "locked.pdf", "application/pdf"), "password-protected")


def test_pdf_embedding_a_photo_with_exif_is_withheld() -> None:
    out = BytesIO()
    Image.new("RGB", (16, 16), "red").save(out, "PDF", exif=_exif().tobytes())
    assert SECRET.encode() in out.getvalue()

    _withheld(_clean(out.getvalue(), "photo.pdf", "application/pdf"), "metadata")


def test_broken_pdf_is_withheld() -> None:
    _withheld(_clean(b"%PDF-1.7\n" + b"\x00" * 200, "x.pdf", "application/pdf"), "withheld")


# -- Office packages -------------------------------------------------------------------------


def test_docx_core_properties_are_blanked_and_other_members_identical() -> None:
    result = _clean(package(DOCX_MEMBERS), "report.docx", "application/octet-stream")

    assert result.attachment is not None
    assert result.note == "report.docx: hidden details such as author and title were removed."
    assert result.attachment.content_type.endswith("wordprocessingml.document")
    assert SECRET.encode() not in result.attachment.data
    cleaned = package_members(result.attachment.data)
    assert list(cleaned) == [name for name, _ in DOCX_MEMBERS]
    assert all(SECRET.encode() not in data for data in cleaned.values())
    assert b"coreProperties" in cleaned["docProps/core.xml"]
    for name, data in DOCX_MEMBERS:
        if not name.startswith(("docProps/", "word/media/")):
            assert cleaned[name] == data  # nothing to remove: byte-identical


def test_odt_meta_is_blanked_and_mimetype_stays_first_and_stored() -> None:
    original = package(ODT_MEMBERS, stored=("mimetype",))

    result = _clean(original, "report.odt", "application/vnd.oasis.opendocument.text")

    assert result.attachment is not None
    assert result.attachment.content_type == "application/vnd.oasis.opendocument.text"
    cleaned = package_members(result.attachment.data)
    assert SECRET.encode() not in cleaned["meta.xml"]
    assert b'office:version="1.3"' in cleaned["meta.xml"]
    assert cleaned["content.xml"] == dict(ODT_MEMBERS)["content.xml"]
    with zipfile.ZipFile(BytesIO(result.attachment.data)) as archive:
        first = archive.infolist()[0]
        assert (first.filename, first.compress_type) == ("mimetype", zipfile.ZIP_STORED)


def test_office_part_names_are_matched_case_insensitively() -> None:
    members = [
        (name.upper() if name.startswith("docProps/") else name, data)
        for name, data in DOCX_MEMBERS
    ]

    result = _clean(package(members), "report.docx", "x/y")

    assert result.attachment is not None
    assert SECRET.encode() not in result.attachment.data
    assert "DOCPROPS/CORE.XML" in package_members(result.attachment.data)


def test_zip_bomb_is_withheld_before_rewriting() -> None:
    bomb = package([*DOCX_MEMBERS, ("word/huge.xml", b"\x00" * 100_000)])
    assert len(bomb) < 5_000

    result = _clean(bomb, "report.docx", "application/octet-stream", max_archive_bytes=50_000)

    _withheld(result, "too large")


def test_package_under_the_limit_is_cleaned() -> None:
    result = _clean(package(DOCX_MEMBERS), "report.docx", "x/y", max_archive_bytes=50_000)

    assert result.attachment is not None


def test_encrypted_member_is_withheld() -> None:
    data = bytearray(package(DOCX_MEMBERS))
    entry = data.find(b"PK\x01\x02")  # first central directory entry: mark it encrypted
    data[entry + 8] |= 0x1

    _withheld(_clean(bytes(data), "report.docx", "x/y"), "password-protected")


def test_plain_zip_archive_is_withheld() -> None:
    archive = package([("notes.txt", b"hello"), ("photo.jpg", _image("JPEG"))])

    _withheld(_clean(archive, "evidence.zip", "application/zip"), "cannot be checked")


def test_macro_enabled_document_is_withheld() -> None:
    members = [*DOCX_MEMBERS, ("word/vbaProject.bin", b"\xd0\xcf\x11\xe0 C:\\Users\\secret")]

    _withheld(_clean(package(members), "report.docm", "x/y"), "macros")


def test_corrupt_package_is_withheld() -> None:
    broken = package(DOCX_MEMBERS)[:-30]

    _withheld(_clean(broken, "report.docx", "x/y"), "withheld")


# -- Text, unknown types and names -----------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "filename", "content_type"),
    [
        (b"It happened on Monday.\r\nNobody helped.\n", "notes.txt", "text/plain"),
        ("date,place\n2026-11-24,Café\n".encode(), "log.csv", "application/octet-stream"),
        ("curly “quotes”".encode("windows-1252"), "notes.txt", "text/plain"),
    ],
)
def test_text_is_kept_unchanged(data: bytes, filename: str, content_type: str) -> None:
    result = _clean(data, filename, content_type)

    assert result.attachment is not None
    assert result.attachment.data == data
    assert result.attachment.filename == filename
    assert result.attachment.content_type.startswith("text/")
    assert result.note is None


def test_binary_named_as_text_is_withheld() -> None:
    _withheld(_clean(b"MZ\x90\x00\x03\x00\x00\x00" * 10, "notes.txt", "text/plain"), "withheld")


@pytest.mark.parametrize(
    ("data", "filename", "content_type"),
    [
        (b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\x00" * 50, "voice.mp3", "audio/mpeg"),
        (b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00" + b"\x00" * 50, "clip.mp4", "video/mp4"),
        (b"7z\xbc\xaf\x27\x1c" + b"\x00" * 50, "files.7z", "application/x-7z-compressed"),
        (b"<html><body>hi</body></html>", "page.html", "text/html"),
    ],
)
def test_unknown_types_are_withheld(data: bytes, filename: str, content_type: str) -> None:
    _withheld(_clean(data, filename, content_type), "cannot be checked")


def test_malicious_filename_is_sanitised() -> None:
    result = _clean(_image("JPEG"), "../../etc/passwd\r\n.jpg", "image/jpeg")

    assert result.attachment is not None
    assert result.attachment.filename == "passwd.jpg"


def test_withheld_note_uses_the_sanitised_name() -> None:
    result = _clean(
        b"\x00junk", "C:\\Users\\someone\\evil\u202egpj.exe", "application/x-msdownload"
    )

    assert result.note is not None
    assert result.note.startswith("evilgpj.exe: withheld")
    assert "\\" not in result.note and "\u202e" not in result.note


def test_long_filename_is_cut_to_100_characters_keeping_the_extension() -> None:
    result = _clean(b"hello", "a" * 300 + ".txt", "text/plain")

    assert result.attachment is not None
    assert len(result.attachment.filename) == 100
    assert result.attachment.filename.endswith(".txt")


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=2048), filename=st.text(max_size=300), content_type=st.text())
def test_never_raises_and_names_are_always_safe(
    data: bytes, filename: str, content_type: str
) -> None:
    result = _clean(data, filename, content_type)

    assert isinstance(result, Cleaned)
    assert (result.attachment is None) == (result.note is not None and "withheld" in result.note)
    if result.attachment is not None:
        name = result.attachment.filename
        assert 0 < len(name) <= 100
        assert "/" not in name and "\\" not in name
        assert not any(unicodedata.category(c) in {"Cc", "Cf"} for c in name)
