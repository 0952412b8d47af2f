"""Office Open XML and OpenDocument packages: rewritten with their metadata parts replaced by
empty ones, every other member byte-identical.

In: the package bytes and the archive size limit. Out: the cleaned bytes, the package's content
type and whether a part was replaced; or `Withhold`.
"""

from __future__ import annotations

import re
import shutil
import zipfile
from io import BytesIO

from pipeline.clean.common import EMBEDDED, PROTECTED, TOO_LARGE, UNKNOWN, UNREADABLE, Withhold

MAX_ARCHIVE_MEMBERS = 10_000

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


def clean_package(data: bytes, max_bytes: int) -> tuple[bytes, str, bool]:
    """Rewrite an OOXML or ODF package with empty metadata parts: (bytes, type, any replaced)."""
    try:
        with zipfile.ZipFile(BytesIO(data)) as archive:
            infos = archive.infolist()
            _check_archive(infos, max_bytes)
            content_type, replacements = _package_parts(archive)
            cleaned = _rewrite_package(archive, infos, replacements)
            return cleaned, content_type, bool(replacements)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, KeyError) as error:
        raise Withhold(UNREADABLE) from error


def _check_archive(infos: list[zipfile.ZipInfo], max_bytes: int) -> None:
    """Refuse zip bombs, encrypted members and ambiguous (duplicate) member names."""
    if len(infos) > MAX_ARCHIVE_MEMBERS or sum(i.file_size for i in infos) > max_bytes:
        raise Withhold(TOO_LARGE)
    if any(info.flag_bits & 0x1 for info in infos):
        raise Withhold(PROTECTED)
    if len({info.filename for info in infos}) != len(infos):
        raise Withhold(UNREADABLE)


def _package_parts(archive: zipfile.ZipFile) -> tuple[str, dict[str, bytes]]:
    """The package's content type and the replacement for each metadata part it holds."""
    names = set(archive.namelist())
    if "mimetype" in names and archive.getinfo("mimetype").file_size <= 200:
        mimetype = archive.read("mimetype").decode("ascii", "replace").strip()
        if mimetype.startswith(_ODF_TYPES):
            if b"encryption-data" in archive.read("META-INF/manifest.xml"):
                raise Withhold(PROTECTED)
            replacements = {"meta.xml": _odf_meta(archive)} if "meta.xml" in names else {}
            return mimetype, replacements
    # Part names in an Office Open XML package are case-insensitive.
    parts = {name.lower(): name for name in names}
    if "[content_types].xml" in parts:
        if any(part.endswith("vbaproject.bin") for part in parts):
            raise Withhold(EMBEDDED)
        for main, content_type in _OOXML_MAIN_PARTS.items():
            if main in parts:
                found = {parts[p]: empty for p, empty in _OOXML_PARTS.items() if p in parts}
                return content_type, found
    raise Withhold(UNKNOWN)


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
