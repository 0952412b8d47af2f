"""PDF: rewritten by pypdf without the document information dictionary, XMP streams, private
application data (/PieceInfo, OPI image paths) and markup-annotation authors. Actions that would
name a file on the sender's computer or network are removed from the link, page, field, outline
or document that holds them (/A, /OpenAction, /AA, /Next): URI actions other than http(s) and
mailto (file:, smb:, UNC and drive paths, relative paths), form submissions to anything else and
JavaScript (which can open any path); as is a base URI other than a web address. Withheld when it
embeds files (or has file attachment annotations), is digitally signed (any signature field,
signature dictionary or /Perms: the certificate names the signer), has actions that open other
files by path (/Launch, /GoToR, ...), file specifications by path elsewhere (external stream
data, reference XObjects, movies, threads), or holds pictures whose hidden details cannot be
removed: inline images (BI ... ID ... EI in a content stream) and JPEG images with a comment or
any APPn segment other than JFIF and Adobe.

In: PDF bytes and a `Deadline`. Out: the cleaned bytes and whether anything was removed; or
`Withhold`.
"""

from __future__ import annotations

from io import BytesIO

from PIL import Image
from pypdf import PdfReader, PdfWriter
from pypdf.generic import (
    ArrayObject,
    ByteStringObject,
    ContentStream,
    DictionaryObject,
    IndirectObject,
    NameObject,
    PdfObject,
    StreamObject,
)

from pipeline.clean.common import (
    EMBEDDED,
    LINKED,
    METADATA,
    PROTECTED,
    SIGNED,
    UNREADABLE,
    Deadline,
    Withhold,
    web_link,
)

_PDF_PRIVATE_KEYS = (
    "/Metadata",
    "/PieceInfo",
    "/OPI",
)  # OPI: the image's path on the author's disk
_PDF_MARKUP_ANNOTATIONS = {"/Text", "/FreeText", "/Line", "/Square", "/Circle", "/Polygon"}
_PDF_MARKUP_ANNOTATIONS |= {"/PolyLine", "/Highlight", "/Underline", "/Squiggly", "/StrikeOut"}
_PDF_MARKUP_ANNOTATIONS |= {"/Stamp", "/Caret", "/Ink", "/Popup", "/Sound", "/Redact"}
_PDF_MARKUP_ANNOTATIONS |= {"/FileAttachment"}
# Actions that open, import or submit another file, named by its path.
_PDF_FILE_ACTIONS = {"/Launch", "/GoToR", "/GoToE", "/ImportData"}
# The APPn segments a plain JPEG needs (JFIF density, Adobe colour transform); any other, or a
# comment, may carry EXIF, XMP, IPTC, an ICC description or a camera maker's notes.
_JPEG_STRUCTURE_SEGMENTS = (("APP0", b"JFIF\x00"), ("APP0", b"JFXX\x00"), ("APP14", b"Adobe"))
_INLINE_IMAGE = b"INLINE IMAGE"  # the operator pypdf gives a BI ... ID ... EI sequence


def clean_pdf(data: bytes, deadline: Deadline) -> tuple[bytes, bool]:
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
    removed = _scrub_pdf(root, reader, deadline)
    for page in reader.pages:
        deadline.check()
        contents = page.get_contents()
        if contents is not None and _INLINE_IMAGE in (op for _, op in contents.operations):
            raise Withhold(METADATA)
    deadline.check()
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


def _scrub_pdf(root: PdfObject, reader: PdfReader, deadline: Deadline) -> bool:
    """Remove private keys from every reachable object; True when something was removed."""
    removed = False
    seen: set[tuple[int, int]] = set()
    stack: list[PdfObject | None] = [root]
    while stack:
        if len(seen) % 256 == 0:
            deadline.check()
        obj = stack.pop()
        if isinstance(obj, IndirectObject):
            if (obj.idnum, obj.generation) in seen:
                continue
            seen.add((obj.idnum, obj.generation))
            obj = obj.get_object()
        if isinstance(obj, DictionaryObject):
            removed = _scrub_pdf_dictionary(obj, reader) or removed
            stack.extend(obj.values())
        elif isinstance(obj, ArrayObject):
            stack.extend(obj)
    return removed


def _scrub_pdf_dictionary(obj: DictionaryObject, reader: PdfReader) -> bool:
    """Drop metadata keys and annotation authors; refuse embedded files, tagged photos and
    inline images (in forms, tiling patterns and Type 3 glyphs; pages are checked apart)."""
    if "/EF" in obj or obj.get("/Subtype") == "/FileAttachment":
        raise Withhold(EMBEDDED)  # an attached file, or a file attachment naming its path
    if obj.get("/FT") == "/Sig" or obj.get("/Type") in ("/Sig", "/DocTimeStamp"):
        raise Withhold(SIGNED)
    if "/ByteRange" in obj or "/Perms" in obj:
        raise Withhold(SIGNED)
    if obj.get("/S") in _PDF_FILE_ACTIONS or _names_file(obj):
        raise Withhold(LINKED)
    if isinstance(obj, StreamObject) and _is_tagged_jpeg(obj):
        raise Withhold(METADATA)
    if isinstance(obj, StreamObject) and _draws(obj) and _has_inline_image(obj, reader):
        raise Withhold(METADATA)
    glyphs = obj.get("/CharProcs")
    if isinstance(glyphs, IndirectObject):
        glyphs = glyphs.get_object()
    if isinstance(glyphs, DictionaryObject):
        for glyph in glyphs.values():
            glyph = glyph.get_object()
            if isinstance(glyph, StreamObject) and _has_inline_image(glyph, reader):
                raise Withhold(METADATA)
    keys = [key for key in _PDF_PRIVATE_KEYS if key in obj]
    if obj.get("/Subtype") in _PDF_MARKUP_ANNOTATIONS and "/T" in obj:
        keys.append("/T")
    keys += _leaking_links(obj)
    for key in keys:
        del obj[key]
    return _remove_leaking_actions(obj) or bool(keys)


# -- Links and actions ------------------------------------------------------------------------

_ACTION_KEYS = ("/A", "/OpenAction")


def _remove_leaking_actions(obj: DictionaryObject) -> bool:
    """Remove the actions `obj` holds (its action, open action, additional actions and the
    actions chained after it) that would name a file; True when something was removed. The
    dictionary is scrubbed before what it holds is visited, so a removed action is not."""
    removed = False
    for key in _ACTION_KEYS:
        if key in obj and _leaks(obj[key]):
            del obj[key]
            removed = True
    additional = _resolved(obj.get("/AA"))
    if isinstance(additional, DictionaryObject):
        for key in [key for key, action in additional.items() if _leaks(action)]:
            del additional[key]
            removed = True
    chained = _resolved(obj.get("/Next")) if "/S" in obj else None
    if isinstance(chained, DictionaryObject) and _leaks(chained):
        del obj["/Next"]
        removed = True
    elif isinstance(chained, ArrayObject):
        kept = [action for action in chained if not _leaks(action)]
        if len(kept) != len(chained):
            obj[NameObject("/Next")] = ArrayObject(kept)
            removed = True
    return removed


def _leaks(action: PdfObject | None) -> bool:
    """A URI action to anything but a web page or mailbox, a form submission likewise, or
    JavaScript (which can open any path)."""
    action = _resolved(action)
    if not isinstance(action, DictionaryObject):
        return False
    kind = action.get("/S")
    if kind == "/URI":
        return not web_link(_text(action.get("/URI")))
    if kind == "/SubmitForm":
        return not web_link(_file_name(action.get("/F")))
    return kind == "/JavaScript"


def _leaking_links(obj: DictionaryObject) -> list[str]:
    """Keys of `obj` to remove wherever it is reached: the target of a URI action or JavaScript
    reachable other than through an action key, a base URI other than a web address, the
    document's JavaScript name tree."""
    keys = []
    if obj.get("/S") == "/URI" and "/URI" in obj and _leaks(obj):
        keys.append("/URI")
    if obj.get("/S") == "/JavaScript" and "/JS" in obj:
        keys.append("/JS")
    base = _resolved(obj.get("/Base"))
    if isinstance(base, (str, bytes)) and not web_link(_text(base)):
        keys.append("/Base")
    if "/JavaScript" in obj:
        keys.append("/JavaScript")
    return keys


def _names_file(obj: DictionaryObject) -> bool:
    """A file named by path where it cannot be removed: a stream's external data (/F), a
    reference XObject (/Ref), a movie (/Movie), an article thread in another file, or a file
    specification dictionary other than a URL."""
    if isinstance(obj, StreamObject) and "/F" in obj:
        return True
    if "/Ref" in obj and obj.get("/Subtype") == "/Form":
        return True
    if obj.get("/S") == "/Thread" and "/F" in obj:
        return True
    movie = _resolved(obj.get("/Movie"))
    if isinstance(movie, DictionaryObject) and "/F" in movie:
        return True
    is_file_spec = obj.get("/Type") == "/Filespec" or any(
        key in obj for key in ("/UF", "/DOS", "/Mac", "/Unix")
    )
    return is_file_spec and not (obj.get("/FS") == "/URL" and web_link(_file_name(obj)))


def _file_name(spec: PdfObject | None) -> str:
    """The name or URL in a file specification (a string or a dictionary)."""
    spec = _resolved(spec)
    if isinstance(spec, DictionaryObject):
        return _text(spec.get("/F", spec.get("/UF")))
    return _text(spec)


def _text(value: PdfObject | None) -> str:
    value = _resolved(value)
    if isinstance(value, ByteStringObject):
        return bytes(value).decode("latin-1")
    return str(value) if isinstance(value, str) else ""


def _resolved(value: PdfObject | None) -> PdfObject | None:
    return value.get_object() if isinstance(value, IndirectObject) else value


def _draws(stream: StreamObject) -> bool:
    """A form XObject or a tiling pattern: a content stream of its own."""
    return stream.get("/Subtype") == "/Form" or stream.get("/PatternType") == 1


def _has_inline_image(stream: StreamObject, reader: PdfReader) -> bool:
    try:
        return _INLINE_IMAGE in (op for _, op in ContentStream(stream, reader).operations)
    except Exception:
        return True  # cannot vouch for it


def _is_tagged_jpeg(stream: StreamObject) -> bool:
    """True for a JPEG image XObject with a comment or metadata segment (e.g. a phone photo)."""
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
            segments = getattr(image, "applist", None)
            if not isinstance(segments, list):
                return True
            return not all(_structural(marker, body) for marker, body in segments)
    except Exception:
        return True  # cannot vouch for it


def _structural(marker: str, body: bytes) -> bool:
    return any(marker == m and body.startswith(prefix) for m, prefix in _JPEG_STRUCTURE_SEGMENTS)
