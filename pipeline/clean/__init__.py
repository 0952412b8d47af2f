"""Clean: strips what identifies a reporter from the files they attach, before a referral.

In: one `Attachment` (file name, declared content type, bytes). Out: `Cleaned`, holding either a
cleaned copy that may travel in a referral or None when the file is withheld, and a one-sentence
note for the referral whenever something was removed or withheld. The type is decided by the
content (magic bytes and Pillow), never by the declared type or file name alone:

- JPEG, PNG, GIF, WebP, TIFF: re-saved by Pillow in the same format, upright, with no EXIF, XMP,
  ICC profile, text chunks or comments; HEIC/HEIF and AVIF photos re-saved as JPEG (`images`);
- PDF: rewritten by pypdf without the document information dictionary, XMP streams, private
  application data (/PieceInfo, /OPI) and markup-annotation authors, and without link actions
  to anything but web pages and mailboxes (file:, UNC, drive paths name the sender) and
  JavaScript; withheld when it holds inline images or JPEG images with comments or APPn
  metadata, embedded or attached files, a digital signature, or actions or file
  specifications opening other files by path (`pdf`);
- Office Open XML and OpenDocument packages: rebuilt from an allowlist of parts and XML
  vocabularies, without authors, comments, tracked changes (accepted), thumbnails, custom XML,
  external relationships, absolute paths, picture alt text, editing permissions and author or
  file-name fields (Word documents with such fields are withheld), every embedded image
  cleaned; hyperlinks to anything but web pages and mailboxes become plain text (`packages`);
- plain text (.txt, .csv): kept as it is, with the charset it was read in (`Cleaned.charset`,
  and the content type's charset parameter) (`text`);
- anything else, anything that cannot be read, checked or safely rewritten, or anything that
  takes longer than its `Deadline`: withheld.

For named reports nothing is cleaned: `screen_attachments` only withholds programs, macro-enabled
documents and documents that fetch content from elsewhere (`screen`).

The untouched original stays in the encrypted record; that is not this package's concern.
`clean_attachment` and `screen_attachment` never raise and log nothing about the content.
"""

from __future__ import annotations

from pathlib import PurePath

from PIL import Image

from pipeline.clean.common import (
    DOCUMENT_REMOVED,
    FAILED,
    HEIF_CONVERTED,
    IMAGE_REMOVED,
    METADATA,
    TOO_LARGE,
    UNKNOWN,
    Cleaned,
    Deadline,
    Withhold,
    kept,
    safe_name_or_default,
    withheld,
)
from pipeline.clean.images import clean_image, converted, is_heif, open_image
from pipeline.clean.packages import clean_package
from pipeline.clean.pdf import clean_pdf
from pipeline.clean.screen import screen_attachment, screen_attachments
from pipeline.clean.text import text_charset, text_type
from pipeline.report import Attachment

__all__ = [
    "ATTACHMENT_SECONDS",
    "REPORT_SECONDS",
    "Cleaned",
    "Deadline",
    "clean_attachment",
    "screen_attachment",
    "screen_attachments",
]

ATTACHMENT_SECONDS = 20.0  # the budget of one attachment when no report deadline is given
REPORT_SECONDS = 20.0  # the budget of all attachments of one report together


def clean_attachment(
    attachment: Attachment,
    *,
    max_archive_bytes: int = 100 * 1024 * 1024,
    deadline: Deadline | None = None,
) -> Cleaned:
    """A copy of `attachment` that may leave the encrypted record, or None with a reason.
    Past `deadline` (by default `ATTACHMENT_SECONDS` from now) the attachment is withheld."""
    name = safe_name_or_default(attachment)
    try:
        return _clean(attachment, name, max_archive_bytes, deadline or Deadline(ATTACHMENT_SECONDS))
    except Withhold as refusal:
        return withheld(name, refusal.reason)
    except Image.DecompressionBombError:
        return withheld(name, TOO_LARGE)
    except Exception:
        return withheld(name, FAILED)


def _clean(
    attachment: Attachment, name: str, max_archive_bytes: int, deadline: Deadline
) -> Cleaned:
    """Sniff the content and hand it to the cleaner for its type."""
    deadline.check()
    data = attachment.data
    image = open_image(data)
    if image is not None:
        with image:
            cleaned, content_type, removed = clean_image(image, deadline)
            if converted(image):
                return kept(_as_jpeg(name), content_type, cleaned, HEIF_CONVERTED)
        return kept(name, content_type, cleaned, IMAGE_REMOVED if removed else None)
    if is_heif(data):
        raise Withhold(METADATA)
    if data.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        cleaned, content_type, removed = clean_package(data, max_archive_bytes, deadline)
        return kept(name, content_type, cleaned, DOCUMENT_REMOVED if removed else None)
    if b"%PDF-" in data[:1024]:
        cleaned, removed = clean_pdf(data, deadline)
        return kept(name, "application/pdf", cleaned, DOCUMENT_REMOVED if removed else None)
    charset = text_charset(attachment, name)
    if charset is not None:
        content_type = f"{text_type(attachment, name)}; charset={charset}"
        return kept(name, content_type, data, None, charset)
    declared_image = attachment.content_type.lower().startswith("image/")
    raise Withhold(METADATA if declared_image else UNKNOWN)


def _as_jpeg(name: str) -> str:
    """`IMG_0001.HEIC` → `IMG_0001.jpg`: the name says what the file now is."""
    return f"{PurePath(name).stem or 'attachment'}.jpg"
