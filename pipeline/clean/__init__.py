"""Clean: strips what identifies a reporter from the files they attach, before a referral.

In: one `Attachment` (file name, declared content type, bytes). Out: `Cleaned`, holding either a
cleaned copy that may travel in a referral or None when the file is withheld, and a one-sentence
note for the referral whenever something was removed or withheld. The type is decided by the
content (magic bytes and Pillow), never by the declared type or file name alone:

- JPEG, PNG, GIF, WebP, TIFF: re-saved by Pillow in the same format, upright, with no EXIF, XMP,
  ICC profile, text chunks or comments;
- PDF: rewritten by pypdf without the document information dictionary, XMP streams, private
  application data (/PieceInfo) and markup-annotation authors;
- Office Open XML and OpenDocument packages: rewritten with their metadata parts replaced by
  empty ones, every other member byte-identical;
- plain text (.txt, .csv): kept as it is;
- anything else, or anything that cannot be read, checked or safely rewritten: withheld.

The untouched original stays in the encrypted record; that is not this module's concern.
`clean_attachment` never raises and logs nothing about the content.
"""

from __future__ import annotations

from PIL import Image

from pipeline.clean.common import (
    DOCUMENT_REMOVED,
    FAILED,
    IMAGE_REMOVED,
    METADATA,
    TOO_LARGE,
    UNKNOWN,
    Cleaned,
    Withhold,
    kept,
    safe_name_or_default,
    withheld,
)
from pipeline.clean.images import clean_image, is_heif, open_image
from pipeline.clean.packages import clean_package
from pipeline.clean.pdf import clean_pdf
from pipeline.clean.text import text_charset, text_type
from pipeline.report import Attachment

__all__ = ["Cleaned", "clean_attachment"]


def clean_attachment(
    attachment: Attachment, *, max_archive_bytes: int = 100 * 1024 * 1024
) -> Cleaned:
    """A copy of `attachment` that may leave the encrypted record, or None with a reason."""
    name = safe_name_or_default(attachment)
    try:
        return _clean(attachment, name, max_archive_bytes)
    except Withhold as refusal:
        return withheld(name, refusal.reason)
    except Image.DecompressionBombError:
        return withheld(name, TOO_LARGE)
    except Exception:
        return withheld(name, FAILED)


def _clean(attachment: Attachment, name: str, max_archive_bytes: int) -> Cleaned:
    """Sniff the content and hand it to the cleaner for its type."""
    data = attachment.data
    if is_heif(data):
        raise Withhold(METADATA)
    image = open_image(data)
    if image is not None:
        with image:
            cleaned, content_type, removed = clean_image(image)
        return kept(name, content_type, cleaned, IMAGE_REMOVED if removed else None)
    if data.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        cleaned, content_type, removed = clean_package(data, max_archive_bytes)
        return kept(name, content_type, cleaned, DOCUMENT_REMOVED if removed else None)
    if b"%PDF-" in data[:1024]:
        cleaned, removed = clean_pdf(data)
        return kept(name, "application/pdf", cleaned, DOCUMENT_REMOVED if removed else None)
    charset = text_charset(attachment, name)
    if charset is not None:
        return kept(name, f"{text_type(attachment, name)}; charset={charset}", data, None)
    declared_image = attachment.content_type.lower().startswith("image/")
    raise Withhold(METADATA if declared_image else UNKNOWN)
