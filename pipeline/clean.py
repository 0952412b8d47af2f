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

import re
import shutil
import unicodedata
import zipfile
from dataclasses import dataclass
from io import BytesIO

from PIL import Image, ImageOps, PngImagePlugin, TiffImagePlugin
from pypdf import PdfReader, PdfWriter
from pypdf.generic import ArrayObject, DictionaryObject, IndirectObject, PdfObject, StreamObject

from pipeline.report import Attachment

MAX_NAME_LENGTH = 100
MAX_ARCHIVE_MEMBERS = 10_000
MAX_FRAMES = 1_000
DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's default, used when Image.MAX_IMAGE_PIXELS is None

_KEPT = "the original is kept in the encrypted record"
_METADATA = "withheld because its metadata could not be removed"
_UNKNOWN = "withheld because this kind of file cannot be checked for hidden details"
_TOO_LARGE = "withheld because it is too large to check safely"
_UNREADABLE = "withheld because it could not be read"
_PROTECTED = "withheld because it is password-protected"
_EMBEDDED = "withheld because it contains embedded files or macros that cannot be checked"
_FAILED = "withheld because it could not be checked"
_IMAGE_REMOVED = "hidden details such as location, camera and author were removed"
_DOCUMENT_REMOVED = "hidden details such as author and title were removed"


@dataclass(frozen=True)
class Cleaned:
    """The outcome for one attachment: a cleaned copy or None (withheld), and a referral note."""

    attachment: Attachment | None
    note: str | None


class _Withhold(Exception):
    """Raised inside this module to withhold an attachment for the given reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def clean_attachment(
    attachment: Attachment, *, max_archive_bytes: int = 100 * 1024 * 1024
) -> Cleaned:
    """A copy of `attachment` that may leave the encrypted record, or None with a reason."""
    name = _safe_name_or_default(attachment)
    try:
        return _clean(attachment, name, max_archive_bytes)
    except _Withhold as withheld:
        return _withheld(name, withheld.reason)
    except Image.DecompressionBombError:
        return _withheld(name, _TOO_LARGE)
    except Exception:
        return _withheld(name, _FAILED)


def _clean(attachment: Attachment, name: str, max_archive_bytes: int) -> Cleaned:
    """Sniff the content and hand it to the cleaner for its type."""
    data = attachment.data
    if _is_heif(data):
        raise _Withhold(_METADATA)
    image = _open_image(data)
    if image is not None:
        with image:
            cleaned, content_type, removed = _clean_image(image)
        return _kept(name, content_type, cleaned, _IMAGE_REMOVED if removed else None)
    if data.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        cleaned, content_type, removed = _clean_package(data, max_archive_bytes)
        return _kept(name, content_type, cleaned, _DOCUMENT_REMOVED if removed else None)
    if b"%PDF-" in data[:1024]:
        cleaned, removed = _clean_pdf(data)
        return _kept(name, "application/pdf", cleaned, _DOCUMENT_REMOVED if removed else None)
    charset = _text_charset(attachment, name)
    if charset is not None:
        return _kept(name, f"{_text_type(attachment, name)}; charset={charset}", data, None)
    declared_image = attachment.content_type.lower().startswith("image/")
    raise _Withhold(_METADATA if declared_image else _UNKNOWN)


def _kept(name: str, content_type: str, data: bytes, removed: str | None) -> Cleaned:
    note = f"{name}: {removed}." if removed else None
    return Cleaned(Attachment(filename=name, content_type=content_type, data=data), note)


def _withheld(name: str, reason: str) -> Cleaned:
    return Cleaned(None, f"{name}: {reason}; {_KEPT}.")


# -- File names -------------------------------------------------------------------------------

_UNSAFE_CHARACTERS = str.maketrans(dict.fromkeys('<>:"|?*', "_"))


def _safe_name_or_default(attachment: Attachment) -> str:
    try:
        return _safe_name(attachment.filename)
    except Exception:
        return "attachment"


def _safe_name(filename: str) -> str:
    """Basename only; no separators, control or format characters; at most 100 characters."""
    base = re.split(r"[/\\]", unicodedata.normalize("NFC", filename))[-1]
    base = "".join(c for c in base if unicodedata.category(c) not in {"Cc", "Cf", "Zl", "Zp"})
    base = base.translate(_UNSAFE_CHARACTERS).strip(" .")
    if not base:
        return "attachment"
    if len(base) <= MAX_NAME_LENGTH:
        return base
    stem, dot, extension = base.rpartition(".")
    if dot and stem and len(extension) <= 16:
        return stem[: MAX_NAME_LENGTH - len(extension) - 1].rstrip(" .") + "." + extension
    return base[:MAX_NAME_LENGTH]


# -- Images -----------------------------------------------------------------------------------

# The format Pillow reports → the format we save (an MPO is a JPEG with extra frames).
_IMAGE_FORMATS = {
    "JPEG": "JPEG",
    "MPO": "JPEG",
    "PNG": "PNG",
    "GIF": "GIF",
    "WEBP": "WEBP",
    "TIFF": "TIFF",
}
_IMAGE_TYPES = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "TIFF": "image/tiff",
}
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs"}
_HEIF_BRANDS |= {b"mif1", b"mif2", b"msf1", b"avif", b"avis"}
_IMAGE_METADATA_KEYS = {"exif", "xmp", "XML:com.adobe.xmp", "icc_profile", "comment"}
_IMAGE_METADATA_KEYS |= {"photoshop", "extension"}
_KEPT_IMAGE_INFO = ("transparency", "duration", "background")
# TIFF tags that describe the pixels; any other tag (Artist, Make, GPS, XMP...) is metadata.
_TIFF_STRUCTURE_TAGS = {254, 255, 256, 257, 258, 259, 262, 266, 273, 274, 277, 278, 279, 280}
_TIFF_STRUCTURE_TAGS |= {281, 282, 283, 284, 292, 293, 296, 297, 317, 318, 319, 320, 322}
_TIFF_STRUCTURE_TAGS |= {323, 324, 325, 338, 339, 340, 341, 347, 529, 530, 531, 532}
_TIFF_COMPRESSIONS = {"raw", "tiff_lzw", "tiff_adobe_deflate", "tiff_deflate", "packbits"}
_TIFF_COMPRESSIONS |= {"group3", "group4", "jpeg"}


def _is_heif(data: bytes) -> bool:
    """HEIC/HEIF/AVIF: an ISO media file whose brand is an image brand."""
    return data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS


def _open_image(data: bytes) -> Image.Image | None:
    """The image when the content is one of the formats we re-save, else None."""
    try:
        return Image.open(BytesIO(data), formats=list(_IMAGE_TYPES))
    except Image.UnidentifiedImageError:
        return None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise _Withhold(_UNREADABLE) from error


def _clean_image(image: Image.Image) -> tuple[bytes, str, bool]:
    """Re-save the image without metadata: (bytes, content type, whether metadata was found)."""
    if image.format not in _IMAGE_FORMATS:
        raise _Withhold(_METADATA)
    target = _IMAGE_FORMATS[image.format]
    try:
        frames = _clean_frames(image, target)
        removed = _has_image_metadata(image)
        out = BytesIO()
        frames[0].save(out, target, **_save_options(image, target, frames))
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise _Withhold(_UNREADABLE) from error
    result = out.getvalue()
    _verify_image(result, target)
    return result, _IMAGE_TYPES[target], removed


def _clean_frames(image: Image.Image, target: str) -> list[Image.Image]:
    """Every frame upright, as a plain image whose info keeps only animation and transparency."""
    count = 1 if target == "JPEG" else getattr(image, "n_frames", 1)
    if count > MAX_FRAMES:
        raise _Withhold(_TOO_LARGE)
    limit = Image.MAX_IMAGE_PIXELS or DEFAULT_MAX_PIXELS
    frames, pixels = [], 0
    for index in range(count):
        image.seek(index)
        pixels += image.width * image.height
        if pixels > limit:
            raise _Withhold(_TOO_LARGE)
        frame = ImageOps.exif_transpose(image)
        frame.info = {key: image.info[key] for key in _KEPT_IMAGE_INFO if key in image.info}
        frames.append(frame)
    image.seek(0)
    return frames


def _save_options(image: Image.Image, target: str, frames: list[Image.Image]) -> dict[str, object]:
    """Pillow save options: quality, compression and animation; never any metadata."""
    options: dict[str, object] = {}
    if target == "JPEG":
        options["quality"] = 95
    if target == "WEBP":
        options["quality"] = 90
    if target == "TIFF":
        compression = image.info.get("compression")
        options["compression"] = compression if compression in _TIFF_COMPRESSIONS else "tiff_lzw"
    if "dpi" in image.info and target in {"JPEG", "PNG", "TIFF"}:
        options["dpi"] = image.info["dpi"]
    if len(frames) > 1:
        options.update(save_all=True, append_images=frames[1:])
        if target != "TIFF":
            options["duration"] = [frame.info.get("duration", 0) for frame in frames]
            options["loop"] = image.info.get("loop", 0)
    return options


def _has_image_metadata(image: Image.Image) -> bool:
    """True when the image carries EXIF, XMP, ICC, comments, text chunks or descriptive tags."""
    found = _IMAGE_METADATA_KEYS & image.info.keys()
    if found == {"extension"} and _is_animation_extension(image.info["extension"]):
        found = set()
    if found:
        return True
    if isinstance(image, PngImagePlugin.PngImageFile) and image.text:
        return True
    if isinstance(image, TiffImagePlugin.TiffImageFile):
        return bool(set(image.tag_v2) - _TIFF_STRUCTURE_TAGS)
    return False


def _is_animation_extension(extension: object) -> bool:
    """The GIF application extension that only says how often to loop."""
    block = extension[0] if isinstance(extension, tuple) and extension else b""
    return isinstance(block, bytes) and block.startswith((b"NETSCAPE2.0", b"ANIMEXTS1.0"))


def _verify_image(data: bytes, target: str) -> None:
    """Reopen what we wrote: it must be readable, in the same format and carry no metadata."""
    with Image.open(BytesIO(data), formats=[target]) as image:
        for index in range(getattr(image, "n_frames", 1)):
            image.seek(index)
            if _has_image_metadata(image):
                raise _Withhold(_METADATA)


# -- PDF --------------------------------------------------------------------------------------

_PDF_PRIVATE_KEYS = ("/Metadata", "/PieceInfo")
_PDF_MARKUP_ANNOTATIONS = {"/Text", "/FreeText", "/Line", "/Square", "/Circle", "/Polygon"}
_PDF_MARKUP_ANNOTATIONS |= {"/PolyLine", "/Highlight", "/Underline", "/Squiggly", "/StrikeOut"}
_PDF_MARKUP_ANNOTATIONS |= {"/Stamp", "/Caret", "/Ink", "/Popup", "/Sound", "/Redact"}
_JPEG_METADATA_KEYS = {"exif", "xmp", "photoshop"}


def _clean_pdf(data: bytes) -> tuple[bytes, bool]:
    """Rewrite the PDF without its metadata: (bytes, whether anything was removed)."""
    try:
        reader = PdfReader(BytesIO(data))
        if reader.is_encrypted:
            raise _Withhold(_PROTECTED)
        page_count = len(reader.pages)
        had_info = reader.metadata is not None and len(reader.metadata) > 0
        root = reader.root_object
    except _Withhold:
        raise
    except Exception as error:
        raise _Withhold(_UNREADABLE) from error
    if page_count == 0:
        raise _Withhold(_UNREADABLE)
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
        raise _Withhold(_METADATA)
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
        raise _Withhold(_EMBEDDED)
    if isinstance(obj, StreamObject) and _is_tagged_jpeg(obj):
        raise _Withhold(_METADATA)
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


# -- Office Open XML and OpenDocument ---------------------------------------------------------

_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_XML = b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
_OOXML_CORE = _XML + (
    b'<cp:coreProperties xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/'
    b'core-properties" xmlns:dc="http://purl.org/dc/elements/1.1/" '
    b'xmlns:dcterms="http://purl.org/dc/terms/" xmlns:dcmitype="http://purl.org/dc/dcmitype/" '
    b'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"/>'
)
_OOXML_APP = _XML + (
    b'<Properties xmlns="http://schemas.openxmlformats.org/officeDocument/2006/'
    b'extended-properties" xmlns:vt="http://schemas.openxmlformats.org/officeDocument/2006/'
    b'docPropsVTypes"/>'
)
_OOXML_CUSTOM = _XML + (
    b'<Properties xmlns="http://schemas.openxmlformats.org/officeDocument/2006/'
    b'custom-properties" xmlns:vt="http://schemas.openxmlformats.org/officeDocument/2006/'
    b'docPropsVTypes"/>'
)
_OOXML_PARTS = {  # lower-case part name → its empty replacement
    "docprops/core.xml": _OOXML_CORE,
    "docprops/app.xml": _OOXML_APP,
    "docprops/custom.xml": _OOXML_CUSTOM,
}
_OOXML_MAIN_PARTS = {
    "word/document.xml": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "xl/workbook.xml": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "ppt/presentation.xml": (
        "application/vnd.openxmlformats-officedocument.presentationml.presentation"
    ),
}
_ODF_TYPES = tuple(
    f"application/vnd.oasis.opendocument.{kind}" for kind in ("text", "spreadsheet", "presentation")
)


def _clean_package(data: bytes, max_bytes: int) -> tuple[bytes, str, bool]:
    """Rewrite an OOXML or ODF package with empty metadata parts: (bytes, type, any replaced)."""
    try:
        with zipfile.ZipFile(BytesIO(data)) as archive:
            infos = archive.infolist()
            _check_archive(infos, max_bytes)
            content_type, replacements = _package_parts(archive)
            cleaned = _rewrite_package(archive, infos, replacements)
            return cleaned, content_type, bool(replacements)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, KeyError) as error:
        raise _Withhold(_UNREADABLE) from error


def _check_archive(infos: list[zipfile.ZipInfo], max_bytes: int) -> None:
    """Refuse zip bombs, encrypted members and ambiguous (duplicate) member names."""
    if len(infos) > MAX_ARCHIVE_MEMBERS or sum(i.file_size for i in infos) > max_bytes:
        raise _Withhold(_TOO_LARGE)
    if any(info.flag_bits & 0x1 for info in infos):
        raise _Withhold(_PROTECTED)
    if len({info.filename for info in infos}) != len(infos):
        raise _Withhold(_UNREADABLE)


def _package_parts(archive: zipfile.ZipFile) -> tuple[str, dict[str, bytes]]:
    """The package's content type and the replacement for each metadata part it holds."""
    names = set(archive.namelist())
    if "mimetype" in names and archive.getinfo("mimetype").file_size <= 200:
        mimetype = archive.read("mimetype").decode("ascii", "replace").strip()
        if mimetype.startswith(_ODF_TYPES):
            if b"encryption-data" in archive.read("META-INF/manifest.xml"):
                raise _Withhold(_PROTECTED)
            replacements = {"meta.xml": _odf_meta(archive)} if "meta.xml" in names else {}
            return mimetype, replacements
    # Part names in an Office Open XML package are case-insensitive.
    parts = {name.lower(): name for name in names}
    if "[content_types].xml" in parts:
        if any(part.endswith("vbaproject.bin") for part in parts):
            raise _Withhold(_EMBEDDED)
        for main, content_type in _OOXML_MAIN_PARTS.items():
            if main in parts:
                found = {parts[p]: empty for p, empty in _OOXML_PARTS.items() if p in parts}
                return content_type, found
    raise _Withhold(_UNKNOWN)


def _odf_meta(archive: zipfile.ZipFile) -> bytes:
    """An empty meta.xml, declaring the same ODF version as the one it replaces."""
    found = re.search(rb'office:version="([0-9.]{1,8})"', archive.read("meta.xml"))
    version = found.group(1) if found else b"1.2"
    return _XML + (
        b'<office:document-meta xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0"'
        b' office:version="' + version + b'"><office:meta/></office:document-meta>'
    )


def _rewrite_package(
    archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo], replacements: dict[str, bytes]
) -> bytes:
    """A new zip, same members in the same order and compression; no comments or timestamps."""
    out = BytesIO()
    with zipfile.ZipFile(out, "w") as package:
        for info in infos:
            member = zipfile.ZipInfo(info.filename, date_time=_ZIP_EPOCH)
            member.compress_type = info.compress_type
            if info.filename in replacements:
                package.writestr(member, replacements[info.filename])
            elif info.is_dir():
                package.writestr(member, b"")
            else:
                with archive.open(info) as source, package.open(member, "w") as target:
                    shutil.copyfileobj(source, target, 1 << 16)
    return out.getvalue()


# -- Plain text -------------------------------------------------------------------------------

_TEXT_TYPES = {"text/plain", "text/csv"}
_TEXT_SUFFIXES = {".txt": "text/plain", ".csv": "text/csv"}
_TEXT_CONTROLS = {"\t", "\n", "\r", "\f", "\v", "\x1a"}


def _declared_type(attachment: Attachment) -> str:
    return attachment.content_type.split(";", 1)[0].strip().lower()


def _suffix(name: str) -> str:
    return name[name.rfind(".") :].lower() if "." in name else ""


def _text_type(attachment: Attachment, name: str) -> str:
    """text/plain or text/csv, from the declared type or else the file name."""
    declared = _declared_type(attachment)
    if declared in _TEXT_TYPES:
        return declared
    return _TEXT_SUFFIXES.get(_suffix(name), "text/plain")


def _text_charset(attachment: Attachment, name: str) -> str | None:
    """The charset when the attachment is declared as text and its bytes really are text."""
    if _declared_type(attachment) not in _TEXT_TYPES and _suffix(name) not in _TEXT_SUFFIXES:
        return None
    for charset in _text_charsets(attachment.data):
        try:
            text = attachment.data.decode(charset)
        except UnicodeDecodeError:
            continue
        if all(c in _TEXT_CONTROLS or unicodedata.category(c) != "Cc" for c in text):
            return charset
        return None
    return None


def _text_charsets(data: bytes) -> tuple[str, ...]:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return ("utf-16",)
    return ("utf-8", "windows-1252")
