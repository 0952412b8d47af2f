"""Office Open XML and OpenDocument packages: rebuilt from what the cleaner knows.

In: the package bytes, the archive size limit and a `Deadline`. Out: the cleaned bytes, the
package's content type and whether anything was removed; or `Withhold`. Each member's fate comes
from `ooxml.plan` or `odf.plan` (an allowlist: a member, XML vocabulary or link they do not know
withholds the whole document); embedded pictures go through the same image cleaner as attached
ones. The new zip keeps the members' order and compression, with no comments or timestamps.
"""

from __future__ import annotations

import shutil
import zipfile
from io import BytesIO

from pipeline.clean import odf, ooxml
from pipeline.clean.common import (
    PART_UNKNOWN,
    PROTECTED,
    TOO_LARGE,
    UNKNOWN,
    UNREADABLE,
    Deadline,
    Withhold,
)
from pipeline.clean.images import clean_image, converted, open_image
from pipeline.clean.xmlparts import Part, filter_part

MAX_ARCHIVE_MEMBERS = 10_000
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def clean_package(data: bytes, max_bytes: int, deadline: Deadline) -> tuple[bytes, str, bool]:
    """Rewrite an OOXML or ODF package without what identifies its authors."""
    try:
        with zipfile.ZipFile(BytesIO(data)) as archive:
            infos = archive.infolist()
            check_archive(infos, max_bytes)
            content_type, parts = _plan(archive)
            cleaned, removed = _rewrite(archive, infos, parts, deadline)
            return cleaned, content_type, removed
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, KeyError) as error:
        raise Withhold(UNREADABLE) from error


def check_archive(infos: list[zipfile.ZipInfo], max_bytes: int) -> None:
    """Refuse zip bombs, encrypted members and ambiguous (duplicate) member names."""
    if len(infos) > MAX_ARCHIVE_MEMBERS or sum(i.file_size for i in infos) > max_bytes:
        raise Withhold(TOO_LARGE)
    if any(info.flag_bits & 0x1 for info in infos):
        raise Withhold(PROTECTED)
    if len({info.filename for info in infos}) != len(infos):
        raise Withhold(UNREADABLE)
    if len({info.filename.lower() for info in infos}) != len(infos):
        raise Withhold(UNREADABLE)  # OOXML part names are case-insensitive


def _plan(archive: zipfile.ZipFile) -> tuple[str, dict[str, Part]]:
    names = archive.namelist()

    def size(name: str) -> int:
        return archive.getinfo(name).file_size

    if odf.is_odf(names, archive.read, size):
        return odf.plan(names, archive.read)
    if any(name.lower() == "[content_types].xml" for name in names):
        return ooxml.plan(names, archive.read)
    raise Withhold(UNKNOWN)


def _rewrite(
    archive: zipfile.ZipFile,
    infos: list[zipfile.ZipInfo],
    parts: dict[str, Part],
    deadline: Deadline,
) -> tuple[bytes, bool]:
    """A new zip of the members the plan keeps, each as the plan says."""
    removed = False
    out = BytesIO()
    with zipfile.ZipFile(out, "w") as package:
        for info in infos:
            deadline.check()
            part = parts[info.filename]
            if part.action == "drop":
                removed = True
                continue
            member = zipfile.ZipInfo(info.filename, date_time=_ZIP_EPOCH)
            member.compress_type = info.compress_type
            if part.action == "keep":
                with archive.open(info) as source, package.open(member, "w") as target:
                    shutil.copyfileobj(source, target, 1 << 16)
                continue
            data, changed = _transform(part, archive.read(info), deadline)
            removed = removed or changed
            package.writestr(member, data)
    return out.getvalue(), removed


def _transform(part: Part, data: bytes, deadline: Deadline) -> tuple[bytes, bool]:
    if part.action == "replace":
        return part.data, True
    if part.action == "xml" and part.policy is not None:
        return filter_part(data, part.policy, deadline)
    if part.action == "image":
        image = open_image(data)
        if image is None:
            raise Withhold(PART_UNKNOWN)
        with image:
            if converted(image):
                raise Withhold(PART_UNKNOWN)  # the document names the part by its format
            cleaned, _, found = clean_image(image, deadline)
        return cleaned, found or cleaned != data
    raise Withhold(PART_UNKNOWN)
