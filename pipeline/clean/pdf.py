"""PDF: rewritten by pypdf without the document information dictionary, XMP streams, private
application data (/PieceInfo) and markup-annotation authors.

In: PDF bytes. Out: the cleaned bytes and whether anything was removed; or `Withhold`.
"""

from __future__ import annotations

from io import BytesIO

from PIL import Image
from pypdf import PdfReader, PdfWriter
from pypdf.generic import ArrayObject, DictionaryObject, IndirectObject, PdfObject, StreamObject

from pipeline.clean.common import EMBEDDED, METADATA, PROTECTED, UNREADABLE, Withhold

_PDF_PRIVATE_KEYS = ("/Metadata", "/PieceInfo")
_PDF_MARKUP_ANNOTATIONS = {"/Text", "/FreeText", "/Line", "/Square", "/Circle", "/Polygon"}
_PDF_MARKUP_ANNOTATIONS |= {"/PolyLine", "/Highlight", "/Underline", "/Squiggly", "/StrikeOut"}
_PDF_MARKUP_ANNOTATIONS |= {"/Stamp", "/Caret", "/Ink", "/Popup", "/Sound", "/Redact"}
_JPEG_METADATA_KEYS = {"exif", "xmp", "photoshop"}


def clean_pdf(data: bytes) -> tuple[bytes, bool]:
    """Rewrite the PDF without its metadata: (bytes, whether anything was removed)."""
    try:
        reader = PdfReader(BytesIO(data))
        if reader.is_encrypted:
            raise Withhold(PROTECTED)
        page_count = len(reader.pages)
        had_info = reader.metadata is not None and len(reader.metadata) > 0
        root = reader.root_object
    except Withhold:
        raise
    except Exception as error:
        raise Withhold(UNREADABLE) from error
    if page_count == 0:
        raise Withhold(UNREADABLE)
    # Scrub the reader's objects first: cloning then copies only what is still reachable, so
    # a removed metadata stream does not survive as an unreferenced object in the new file.
    removed = _scrub_pdf(root)
    writer = PdfWriter(clone_from=reader)
    writer.metadata = None
    writer._ID = None  # the original file identifier would link this copy to the original
    out = BytesIO()
    writer.write(out)
    result = out.getvalue()
    check = PdfReader(BytesIO(result))
    if check.metadata is not None or len(check.pages) != page_count:
        raise Withhold(METADATA)
    return result, had_info or removed


def _scrub_pdf(root: PdfObject) -> bool:
    """Remove private keys from every reachable object; True when something was removed."""
    removed = False
    seen: set[tuple[int, int]] = set()
    stack: list[PdfObject | None] = [root]
    while stack:
        obj = stack.pop()
        if isinstance(obj, IndirectObject):
            if (obj.idnum, obj.generation) in seen:
                continue
            seen.add((obj.idnum, obj.generation))
            obj = obj.get_object()
        if isinstance(obj, DictionaryObject):
            removed = _scrub_pdf_dictionary(obj) or removed
            stack.extend(obj.values())
        elif isinstance(obj, ArrayObject):
            stack.extend(obj)
    return removed


def _scrub_pdf_dictionary(obj: DictionaryObject) -> bool:
    """Drop metadata keys and annotation authors; refuse embedded files and tagged photos."""
    if "/EF" in obj:
        raise Withhold(EMBEDDED)
    if isinstance(obj, StreamObject) and _is_tagged_jpeg(obj):
        raise Withhold(METADATA)
    keys = [key for key in _PDF_PRIVATE_KEYS if key in obj]
    if obj.get("/Subtype") in _PDF_MARKUP_ANNOTATIONS and "/T" in obj:
        keys.append("/T")
    for key in keys:
        del obj[key]
    return bool(keys)


def _is_tagged_jpeg(stream: StreamObject) -> bool:
    """True for a JPEG image XObject that carries EXIF, XMP or IPTC (e.g. a phone photo)."""
    if stream.get("/Subtype") != "/Image":
        return False
    filters = stream.get("/Filter")
    if isinstance(filters, IndirectObject):
        filters = filters.get_object()
    names = list(filters) if isinstance(filters, ArrayObject) else [filters]
    if "/DCTDecode" not in names:
        return False
    try:
        with Image.open(BytesIO(stream.get_data()), formats=["JPEG"]) as image:
            return bool(_JPEG_METADATA_KEYS & image.info.keys())
    except Exception:
        return True  # cannot vouch for it
