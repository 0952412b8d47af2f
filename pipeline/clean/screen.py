"""Screen: what a named report's attachments may not carry into a referral.

In: one `Attachment` and the kinds to withhold (`[attachments] withhold`: "executable", "macro",
"external"). Out: `Cleaned` with the attachment unchanged (a named reporter gave their name:
nothing is cleaned), or None and a note saying why it was withheld. Inside PGP an attachment
passes the service's mail scanner unseen, so these are withheld by default:

- executable: by content (Windows MZ/PE, ELF, Mach-O, Java class, `#!` scripts) or by name
  (.exe .dll .js .vbs .ps1 .bat .msi .jar .lnk .iso ...), and a zip archive holding one (names
  and first bytes of its members; nested archives are not opened);
- macro: macro-enabled Office names (.docm .xlsm .pptm ...), any Office package with a
  vbaProject.bin, an OpenDocument file with Basic or script modules, an old binary Office file
  with a VBA project, whatever its name;
- external: an Office package with external relationships other than hyperlinks (attached
  templates, linked files and pictures, external workbook links) or DDE fields, an OpenDocument
  file with links to files outside it or DDE links.

A zip that cannot be opened or is too large to list (a zip bomb) could hold anything: it is
withheld when "executable" is, with a note saying it could not be checked.

`screen_attachments` applies this to a named report and writes the notes to
`attachment_notes`. Nothing is logged about the content.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable, Collection, Iterator
from io import BytesIO

from pipeline.clean import odf
from pipeline.clean.common import KEPT, Cleaned, Deadline, Withhold, safe_name_or_default
from pipeline.clean.packages import check_archive
from pipeline.clean.xmlparts import Name, XmlPolicy, filter_part, parse_part
from pipeline.report import Attachment, Report

KINDS = ("executable", "macro", "external")
MAX_SCREENED_BYTES = 100 * 1024 * 1024  # an archive larger than this, unpacked, is withheld

EXECUTABLE_SUFFIXES = frozenset(
    [
        ".exe",
        ".dll",
        ".scr",
        ".bat",
        ".cmd",
        ".ps1",
        ".psm1",
        ".vbs",
        ".vbe",
        ".js",
        ".jse",
        ".wsf",
        ".wsh",
        ".hta",
        ".msi",
        ".msp",
        ".jar",
        ".lnk",
        ".reg",
        ".sh",
        ".apk",
        ".app",
        ".dmg",
        ".iso",
        ".img",
        ".cpl",
        ".pif",
        ".scf",
        ".msc",
        ".gadget",
        ".appx",
        ".msix",
        ".vhd",
        ".vhdx",
        ".xll",
        ".py",
        ".pl",
        ".rb",
        ".run",
        ".command",
        ".deb",
        ".rpm",
    ]
)
MACRO_SUFFIXES = frozenset(
    [".docm", ".dotm", ".xlsm", ".xltm", ".xlam", ".pptm", ".potm", ".ppam", ".ppsm", ".sldm"]
)
_EXECUTABLE_MAGIC = (
    b"\x7fELF",
    b"\xfe\xed\xfa\xce",  # Mach-O, both byte orders, 32 and 64 bits
    b"\xfe\xed\xfa\xcf",
    b"\xce\xfa\xed\xfe",
    b"\xcf\xfa\xed\xfe",
    b"\xca\xfe\xba\xbe",  # Mach-O universal binary, Java class
    b"#!/",  # a script naming its interpreter
)
_OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_OLE_VBA = "_VBA_PROJECT".encode("utf-16-le")
_HYPERLINK = "/hyperlink"
# A DDE field runs a program or fetches data when the document opens (field code, not text).
_DDE = re.compile(rb'(<w:instrText[^>]*>|w:instr=")\s*DDE(AUTO)?\b')
_PART_SECONDS = 20.0
_REASONS = {
    "executable": "it is a program or script, which could harm the computer it is opened on",
    "macro": "it is a document with macros, which could harm the computer it is opened on",
    "external": "it is a document that fetches templates or content from elsewhere when opened",
    "unchecked": "it is an archive or document that could not be checked for programs",
}


def screen_attachments(report: Report, withhold: Collection[str]) -> None:
    """For a named report: withhold the attachments of the kinds in `withhold`, with a note."""
    if report.anonymous or not withhold:
        return
    kept: list[Attachment] = []
    for attachment in report.attachments:
        screened = screen_attachment(attachment, withhold)
        if screened.attachment is not None:
            kept.append(screened.attachment)
        if screened.note:
            report.attachment_notes.append(screened.note)
    report.attachments = kept


def screen_attachment(attachment: Attachment, withhold: Collection[str]) -> Cleaned:
    """The attachment unchanged, or None and a note when it is of a kind to withhold."""
    try:
        found = set(_kinds(attachment))
    except Exception:
        found = {*KINDS, "unchecked"}  # cannot be checked: treated as the worst it could be
    if "unchecked" in found and "executable" in withhold:
        return _withheld(attachment, "unchecked")
    for kind in KINDS:
        if kind in found and kind in withhold:
            return _withheld(attachment, kind)
    return Cleaned(attachment, None)


def _withheld(attachment: Attachment, why: str) -> Cleaned:
    name = safe_name_or_default(attachment)
    return Cleaned(None, f"{name}: withheld because {_REASONS[why]}; {KEPT}.")


def _kinds(attachment: Attachment) -> Iterator[str]:
    data, suffix = attachment.data, _suffix(attachment.filename)
    if suffix in EXECUTABLE_SUFFIXES or is_program(data):
        yield "executable"
    if suffix in MACRO_SUFFIXES:
        yield "macro"
    if data.startswith(_OLE) and _OLE_VBA in data:
        yield "macro"
    if data.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        yield from _archive_kinds(data)


def _suffix(filename: str) -> str:
    base = re.split(r"[/\\]", filename)[-1].strip(" .").lower()
    return base[base.rfind(".") :] if "." in base else ""


def _archive_kinds(data: bytes) -> Iterator[str]:
    """What a zip holds: programs, macros, links outside it; "unchecked" when unreadable."""
    try:
        with zipfile.ZipFile(BytesIO(data)) as archive:
            infos = archive.infolist()
            check_archive(infos, MAX_SCREENED_BYTES)
            names = [info.filename for info in infos]
            lower = [name.lower() for name in names]
            if any(_suffix(name) in EXECUTABLE_SUFFIXES for name in names) or any(
                _starts_executable(archive, info) for info in infos
            ):
                yield "executable"
            if any(name.endswith("vbaproject.bin") for name in lower):
                yield "macro"
            if any(_is_odf_macro(name) for name in names):
                yield "macro"
            if _links_outside(archive, names):
                yield "external"
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, KeyError, Withhold):
        yield "unchecked"


def _starts_executable(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bool:
    if info.is_dir() or info.file_size < 2:
        return False
    with archive.open(info) as member:
        return is_program(member.read(4096))


def is_program(data: bytes) -> bool:
    """Whether bytes are a program by their content: a Windows PE file (an `MZ` header whose
    pointer leads to `PE\\0\\0`: a text that starts "MZ" is not one), ELF, Mach-O, a Java class,
    or a script naming its interpreter (`#!/`). `.com` files are programs only so."""
    if data.startswith(b"MZ") and len(data) >= 64:
        offset = int.from_bytes(data[60:64], "little")
        return data[offset : offset + 4] == b"PE\0\0"
    return data.startswith(_EXECUTABLE_MAGIC)


def _is_odf_macro(name: str) -> bool:
    if name.startswith("Scripts/") and not name.endswith("/"):
        return True
    return name.startswith("Basic/") and not name.endswith(("/", "script-lc.xml", "script-lb.xml"))


def _links_outside(archive: zipfile.ZipFile, names: list[str]) -> bool:
    """External relationships (not hyperlinks) or DDE fields (OOXML); outside links (ODF)."""
    return any(_member_links_outside(name, archive.read) for name in names)


def _member_links_outside(name: str, read: Callable[[str], bytes]) -> bool:
    lower = name.lower()
    if lower.endswith(".rels"):
        return any(
            relationship.get("TargetMode") == "External"
            and not relationship.get("Type", "").endswith(_HYPERLINK)
            for relationship in parse_part(read(name))
        )
    if lower.startswith("word/") and lower.endswith(".xml"):
        return bool(_DDE.search(read(name)))
    if name in {"content.xml", "styles.xml"} or name.endswith("/content.xml"):
        return _odf_links_outside(read(name))
    return False


def _odf_links_outside(data: bytes) -> bool:
    """True when an OpenDocument part links a file outside the package or a DDE source."""
    found: list[Name] = []

    def outside(name: Name, attributes: dict[Name, str]) -> bool:
        if odf.links_outside(name, attributes) or name[1] in {"dde-source", "dde-link"}:
            found.append(name)
        return False

    filter_part(data, XmlPolicy(("",), drop_when=outside), Deadline(_PART_SECONDS))
    return bool(found)
