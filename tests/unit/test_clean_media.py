"""clean: HEIC photos, PDFs with pictures, the pixel cap and the time budget."""

from __future__ import annotations

from io import BytesIO

import pytest
from PIL import Image
from pypdf import PdfReader, PdfWriter
from pypdf.generic import DecodedStreamObject, NameObject

from pipeline.clean import Cleaned, Deadline, clean_attachment
from pipeline.clean.images import MAX_PIXELS
from pipeline.report import Attachment
from tests.unit import clean_fixtures as fx

KEPT = "the original is kept in the encrypted record."


def _clean(data: bytes, name: str, content_type: str = "application/octet-stream") -> Cleaned:
    return clean_attachment(Attachment(name, content_type, data))


def _withheld(result: Cleaned, reason: str) -> None:
    assert result.attachment is None
    assert result.note is not None and reason in result.note and result.note.endswith(KEPT)


# -- HEIC -------------------------------------------------------------------------------------


def test_heic_photo_becomes_a_jpeg_without_exif_or_location() -> None:
    original = fx.heic_photo()
    with Image.open(BytesIO(original)) as image:  # the input really carries the canary
        assert image.format == "HEIF"
        assert image.getexif()[315] == fx.AUTHOR and 34853 in image.getexif()

    result = _clean(original, "IMG_0042.HEIC", "image/heic")

    assert result.attachment is not None
    assert result.attachment.filename == "IMG_0042.jpg"
    assert result.attachment.content_type == "image/jpeg"
    assert result.note == (
        "IMG_0042.jpg: converted to JPEG, and hidden details such as location, camera and "
        "author were removed."
    )
    for canary in fx.CANARIES:
        assert canary.encode() not in result.attachment.data
    with Image.open(BytesIO(result.attachment.data)) as cleaned:
        assert cleaned.format == "JPEG" and cleaned.size == (64, 48)
        assert not cleaned.getexif() and "exif" not in cleaned.info and "xmp" not in cleaned.info


# -- PDF --------------------------------------------------------------------------------------


def _pdf_with_contents(contents: bytes) -> bytes:
    writer = PdfWriter()
    page = writer.add_blank_page(width=100, height=100)
    stream = DecodedStreamObject()
    stream.set_data(contents)
    page[NameObject("/Contents")] = writer._add_object(stream)
    out = BytesIO()
    writer.write(out)
    return out.getvalue()


def _pdf_with_jpeg(jpeg: bytes) -> bytes:
    out = BytesIO()
    Image.new("RGB", (16, 16), "red").save(out, "PDF")
    writer = PdfWriter(clone_from=PdfReader(BytesIO(out.getvalue())))
    for image in writer.pages[0]["/Resources"]["/XObject"].values():  # type: ignore[index]
        image.get_object()._data = jpeg
    result = BytesIO()
    writer.write(result)
    return result.getvalue()


def _jpeg(**options: object) -> bytes:
    out = BytesIO()
    Image.new("RGB", (16, 16), "red").save(out, "JPEG", **options)  # type: ignore[arg-type]
    return out.getvalue()


def test_pdf_with_an_inline_image_is_withheld() -> None:
    inline = b"q 10 0 0 10 0 0 cm BI /W 1 /H 1 /CS /G /BPC 8 ID \x80 EI Q"
    plain = b"q 1 0 0 1 0 0 cm 0 0 10 10 re f Q"

    _withheld(_clean(_pdf_with_contents(inline), "a.pdf"), "metadata could not be removed")
    assert _clean(_pdf_with_contents(plain), "b.pdf").attachment is not None


@pytest.mark.parametrize(
    "jpeg",
    [
        _jpeg(comment=fx.AUTHOR.encode()),
        fx.photo(),  # EXIF with GPS
        _jpeg(icc_profile=b"\x00" * 128),
    ],
    ids=["comment", "exif", "icc"],
)
def test_pdf_with_a_jpeg_carrying_a_comment_or_app_segment_is_withheld(jpeg: bytes) -> None:
    _withheld(_clean(_pdf_with_jpeg(jpeg), "scan.pdf"), "metadata could not be removed")


def test_pdf_with_a_plain_jpeg_is_kept() -> None:
    result = _clean(_pdf_with_jpeg(_jpeg()), "scan.pdf")

    assert result.attachment is not None
    assert len(PdfReader(BytesIO(result.attachment.data)).pages) == 1


# -- Limits -----------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_image_over_the_pixel_cap_is_withheld_before_it_is_decoded() -> None:
    out = BytesIO()
    Image.new("1", (8000, MAX_PIXELS // 8000 + 1)).save(out, "PNG")  # a few kilobytes
    assert len(out.getvalue()) < 100_000
    assert Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS <= MAX_PIXELS

    _withheld(_clean(out.getvalue(), "huge.png", "image/png"), "too large")


def test_past_the_report_deadline_the_rest_is_withheld_and_cleaning_goes_on() -> None:
    now = [0.0]
    deadline = Deadline(10, clock=lambda: now[0])
    first = clean_attachment(Attachment("a.jpg", "image/jpeg", fx.photo()), deadline=deadline)
    now[0] = 11.0  # the first attachment took eleven seconds

    second = clean_attachment(Attachment("b.docx", "x", fx.docx()), deadline=deadline)
    third = clean_attachment(Attachment("c.jpg", "image/jpeg", fx.photo()))  # its own budget

    assert first.attachment is not None
    _withheld(second, "withheld because it took too long to check")
    assert third.attachment is not None


def test_a_spent_budget_withholds_at_once() -> None:
    result = clean_attachment(Attachment("a.jpg", "x", _jpeg()), deadline=Deadline(-1))

    _withheld(result, "took too long")
