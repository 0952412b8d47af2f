"""Office Open XML (docx, xlsx, pptx): the plan for cleaning each part of a package.

In: the member names of a package and a way to read a member. Out: a `Part` for every member:
- metadata parts (docProps core, app, custom) replaced by empty ones;
- people, comments, thumbnails, custom XML, printer settings, revision logs, custom tags and
  external workbook links dropped, with the relationships and content-type overrides naming
  them, and the elements that refer to those relationships;
- relationships to external templates and linked files dropped (web and mailto hyperlinks stay:
  they are part of what the reporter wrote); hyperlinks to anything else (file:, smb:, UNC and
  drive paths, relative paths: they name the sender's disk, user name or network) and internal
  relationships to parts not in the package are dropped, and the references to them removed
  (`r:id` of `w:hyperlink`, `a:hlinkClick`, a sheet's `hyperlink`...), so the link text stays as
  plain text; hyperlink tooltips and `docLocation`, VML `href`s other than web links and frame
  names other than the standard ones are removed;
- media cleaned as images;
- each known XML part (document, styles, sheets, slides, charts...) filtered: tracked changes
  accepted (deletions removed, insertions kept), comment anchors removed; author, initials,
  user and provider ids, user names and revision session ids removed; attached templates,
  document variables, mail-merge sources, document ids and absolute paths removed; picture alt
  text (`descr`, `title`: Office writes the file path there), Restrict-editing ranges (the
  editor's address), file-sharing settings, protected-range account ids (SIDs) removed.
A Word part holding a field that shows the author, user, file path, a document property or a
linked file (AUTHOR, FILENAME, TEMPLATE, DOCPROPERTY, INCLUDEPICTURE...), or a HYPERLINK field to
anything but a web page or mailbox, withholds the document.
Any other member (embedded objects, fonts, macros, binary parts, external data connections,
parts of unknown purpose) withholds the document.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from urllib.parse import unquote

from pipeline.clean.common import (
    EMBEDDED,
    FIELDS,
    LINKED,
    PART_UNKNOWN,
    STANDARD_FRAMES,
    UNKNOWN,
    Withhold,
    web_link,
)
from pipeline.clean.xmlparts import DROP, IMAGE, KEEP, Attributes, Name, Part, XmlPolicy
from pipeline.clean.xmlparts import parse_part as parse_xml

NAMESPACES = (
    "http://schemas.openxmlformats.org/",
    "http://purl.oclc.org/ooxml/",
    "http://schemas.microsoft.com/office/",
    "urn:schemas-microsoft-com:",
    "http://purl.org/dc/",
    "http://www.w3.org/2001/XMLSchema-instance",
)
_W = (
    "http://schemas.openxmlformats.org/wordprocessingml/2006/main",
    "http://purl.oclc.org/ooxml/wordprocessingml/main",
)
_R = (
    "http://schemas.openxmlformats.org/officeDocument/2006/relationships",
    "http://purl.oclc.org/ooxml/officeDocument/relationships",
)
_RELATIONSHIPS = "http://schemas.openxmlformats.org/package/2006/relationships"
_CONTENT_TYPES = "http://schemas.openxmlformats.org/package/2006/content-types"
_HYPERLINK = "/hyperlink"

_XML = b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
_EXTENDED = "http://schemas.openxmlformats.org/officeDocument/2006/"
_EMPTY = {  # lower-case part name → its empty replacement
    "docprops/core.xml": _XML
    + b'<cp:coreProperties xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/'
    b'core-properties" xmlns:dc="http://purl.org/dc/elements/1.1/" '
    b'xmlns:dcterms="http://purl.org/dc/terms/" xmlns:dcmitype="http://purl.org/dc/dcmitype/" '
    b'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"/>',
    "docprops/app.xml": _XML
    + f'<Properties xmlns="{_EXTENDED}extended-properties" '
    f'xmlns:vt="{_EXTENDED}docPropsVTypes"/>'.encode(),
    "docprops/custom.xml": _XML
    + f'<Properties xmlns="{_EXTENDED}custom-properties" '
    f'xmlns:vt="{_EXTENDED}docPropsVTypes"/>'.encode(),
}
MAIN_PARTS = {
    "word/document.xml": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "xl/workbook.xml": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "ppt/presentation.xml": (
        "application/vnd.openxmlformats-officedocument.presentationml.presentation"
    ),
}
_DROPPED_PARTS = re.compile(
    r"^(docprops/thumbnail\.[^/]+"
    r"|customxml/.*"
    r"|\[trash\]/.*"
    r"|(word|xl|ppt)/printersettings/.*"
    r"|word/(comments[a-z]*|people)\.xml"
    r"|ppt/(commentauthors|authors)\.xml"
    r"|ppt/comments/.*|ppt/tags/.*"
    r"|xl/comments\d*\.xml|xl/comments/.*"
    r"|xl/(threadedcomments|persons|revisions|externallinks)/.*"
    r"|xl/drawings/[^/]*\.vml)$"  # legacy drawings: comment boxes and form controls
)
# The XML parts the cleaner knows (lower case); any other part withholds the document.
_N = r"\d*\.xml"
_SHARED = (
    rf"theme/theme{_N}|charts/(chart|colors|style){_N}"
    rf"|diagrams/(data|layout|quickstyle|colors|drawing){_N}"
)
_KNOWN_PARTS = re.compile(
    r"^(word/(glossary/)?(document|styles|styleswitheffects|settings|websettings|fonttable"
    rf"|numbering|footnotes|endnotes|header\d*|footer\d*)\.xml|word/(glossary/)?({_SHARED})"
    rf"|xl/(workbook|styles|sharedstrings|calcchain|metadata)\.xml"
    rf"|xl/(worksheets|chartsheets)/sheet{_N}|xl/drawings/drawing{_N}|xl/tables/table{_N}"
    rf"|xl/pivottables/pivottable{_N}|xl/pivotcache/pivotcache(definition|records){_N}"
    rf"|xl/({_SHARED})"
    r"|ppt/(presentation|presprops|viewprops|tablestyles)\.xml"
    rf"|ppt/(slides/slide|slidelayouts/slidelayout|slidemasters/slidemaster){_N}"
    rf"|ppt/(notesslides/notesslide|notesmasters/notesmaster|handoutmasters/handoutmaster){_N}"
    rf"|ppt/({_SHARED}))$"
)
# Elements removed with their content, in WordprocessingML: deleted and moved-away text (the
# tracked changes are accepted), records of formatting changes, comment anchors, and settings
# that name files or people.
_W_DROPPED = {
    "del", "moveFrom", "delText", "delInstrText", "moveFromRangeStart", "moveFromRangeEnd",
    "moveToRangeStart", "moveToRangeEnd", "rPrChange", "pPrChange", "sectPrChange",
    "tblPrChange", "tblPrExChange", "trPrChange", "tcPrChange", "tblGridChange",
    "numberingChange", "cellIns", "cellDel", "cellMerge", "customXmlInsRangeStart",
    "customXmlInsRangeEnd", "customXmlDelRangeStart", "customXmlDelRangeEnd",
    "customXmlMoveFromRangeStart", "customXmlMoveFromRangeEnd", "customXmlMoveToRangeStart",
    "customXmlMoveToRangeEnd", "commentRangeStart", "commentRangeEnd", "commentReference",
    "attachedTemplate", "attachedSchema", "docVars", "rsids", "mailMerge", "saveThroughXslt",
    "dataBinding", "trackRevisions", "permStart", "permEnd",
}  # fmt: skip
_W_UNWRAPPED = {"ins", "moveTo"}  # inserted and moved-here text stays, its wrapper goes
# Removed wherever they are: a workbook's absolute path, revision and document ids.
# A workbook's file-sharing settings (the reserving user's name), the Windows account ids (SIDs)
# of protected ranges and the application build that last saved the workbook go too.
_DROPPED_ANYWHERE = {"absPath", "revisionPtr", "docId", "presenceInfo"}
_DROPPED_ANYWHERE |= {"fileSharing", "securityDescriptor", "fileVersion"}
_DROPPED_ATTRIBUTES = {"author", "initials", "userId", "providerId", "userName", "lastModifiedBy"}
_DROPPED_ATTRIBUTES |= {"refreshedBy", "personId", "securityDescriptor"}
# Picture alt text, which Office writes from the picture's file path (C:\Users\<name>\...).
_DROPPED_ATTRIBUTES |= {"descr", "title"}
# Hidden text of hyperlinks (ScreenTips, a location in the target file), which may hold a path.
_DROPPED_ATTRIBUTES |= {"tooltip", "docLocation"}


_Ids = tuple[set[str], set[str]]
_NONE: _Ids = (set(), set())


def plan(names: list[str], read: Callable[[str], bytes]) -> tuple[str, dict[str, Part]]:
    """The content type of the package and the fate of each member (by its exact name)."""
    lower = {name.lower(): name for name in names}
    if any(part.endswith("vbaproject.bin") for part in lower):
        raise Withhold(EMBEDDED)
    main = next((kind for part, kind in MAIN_PARTS.items() if part in lower), None)
    if main is None:
        raise Withhold(UNKNOWN)
    dropped = {part for part in lower if _DROPPED_PARTS.match(part) or _rels_of_dropped(part)}
    present = set(lower) - dropped
    relationships = {
        part: _relationships(part, read(name), dropped, present)
        for part, name in lower.items()
        if part.endswith(".rels") and part not in dropped
    }
    parts = {name: _part(part, dropped, present, relationships) for part, name in lower.items()}
    return main, parts


def _part(part: str, dropped: set[str], present: set[str], relationships: dict[str, _Ids]) -> Part:
    if part in dropped:
        return DROP
    if part.endswith("/"):
        return KEEP
    if part == "[content_types].xml":
        return Part("xml", policy=_content_types_policy(present))
    if part.endswith(".rels"):
        dropped_ids, unlinked_ids = relationships[part]
        return Part("xml", policy=_relationships_policy(dropped_ids | unlinked_ids))
    if part in _EMPTY:
        return Part("replace", data=_EMPTY[part])
    if "/media/" in f"/{part}":
        return IMAGE
    if _KNOWN_PARTS.match(part):
        return Part("xml", policy=_content_policy(*relationships.get(_rels_name(part), _NONE)))
    raise Withhold(EMBEDDED if "/embeddings/" in part or part.endswith(".bin") else PART_UNKNOWN)


def _rels_name(part: str) -> str:
    """`word/document.xml` → `word/_rels/document.xml.rels`."""
    folder, name = posixpath.split(part)
    return posixpath.join(folder, "_rels", f"{name}.rels")


def _rels_source(rels: str) -> str:
    """`word/_rels/document.xml.rels` → `word/document.xml`; `_rels/.rels` → `` (the package)."""
    folder, name = posixpath.split(rels)
    return posixpath.join(posixpath.dirname(folder), name.removesuffix(".rels"))


def _rels_of_dropped(part: str) -> bool:
    return part.endswith(".rels") and bool(_DROPPED_PARTS.match(_rels_source(part)))


def _relationships(rels: str, data: bytes, dropped: set[str], present: set[str]) -> _Ids:
    """Ids of the relationships to drop, in two sets: those whose referring elements go too (to
    dropped parts; external ones but hyperlinks), and those whose references are removed, their
    elements kept (hyperlinks other than web links; parts not in the package, whose names could
    be anything, e.g. `../../Users/<name>/photo.png`)."""
    base = posixpath.dirname(_rels_source(rels))
    dropped_ids, unlinked_ids = set(), set()
    for relationship in parse_xml(data):
        rid = relationship.get("Id", "")
        target = relationship.get("Target", "")
        if relationship.get("TargetMode") == "External":
            if not relationship.get("Type", "").endswith(_HYPERLINK):
                dropped_ids.add(rid)
            elif not web_link(target):
                unlinked_ids.add(rid)
            continue
        target = unquote(target)
        path = target.lstrip("/") if target.startswith("/") else posixpath.join(base, target)
        path = posixpath.normpath(path).lower()
        if path in dropped:
            dropped_ids.add(rid)
        elif path not in present:
            unlinked_ids.add(rid)
    return dropped_ids, unlinked_ids


def _content_types_policy(present: set[str]) -> XmlPolicy:
    """Overrides of dropped parts go, and of parts not in the package (any name could be there)."""

    def drop_when(name: Name, attributes: Attributes) -> bool:
        part = unquote(attributes.get(("", "PartName"), "").lstrip("/")).lower()
        return name == (_CONTENT_TYPES, "Override") and part not in present

    return XmlPolicy(NAMESPACES, drop_when=drop_when)


def _relationships_policy(ids: set[str]) -> XmlPolicy:
    def drop_when(name: Name, attributes: Attributes) -> bool:
        return name == (_RELATIONSHIPS, "Relationship") and attributes.get(("", "Id")) in ids

    return XmlPolicy(NAMESPACES, drop_when=drop_when)


def _content_policy(ids: set[str], unlinked: set[str]) -> XmlPolicy:
    def drop_when(name: Name, attributes: Attributes) -> bool:
        if name[1] in _DROPPED_ANYWHERE:
            return True
        return any(key[0] in _R and value in ids for key, value in attributes.items())

    def drop_attribute_when(element: Name, name: Name, value: str) -> bool:
        if name[0] in _R:
            return value in unlinked  # the link goes, its text stays
        if name[1] == "href":  # VML: a shape's link, a picture's original location
            return not web_link(value)
        return name[1] == "tgtFrame" and value not in STANDARD_FRAMES

    return XmlPolicy(
        NAMESPACES,
        drop_elements=frozenset((w, local) for w in _W for local in _W_DROPPED),
        unwrap_elements=frozenset((w, local) for w in _W for local in _W_UNWRAPPED),
        drop_attributes=_identifying_attribute,
        drop_when=drop_when,
        drop_attribute_when=drop_attribute_when,
        watch=FieldCheck,
    )


def _identifying_attribute(name: Name) -> bool:
    if name[1] in _DROPPED_ATTRIBUTES or name[1].startswith("rsid"):
        return True
    return name[0] in _W and name[1] in {"ed", "edGrp"}  # who may edit a range


# Word fields whose stored result shows the author, user, file path, a document property or a
# linked file, as text of the document: a document holding one is withheld.
_IDENTIFYING_FIELDS = frozenset(
    {
        "AUTHOR", "USERNAME", "USERINITIALS", "USERADDRESS", "LASTSAVEDBY", "FILENAME",
        "TEMPLATE", "DOCPROPERTY", "DOCVARIABLE", "INFO", "TITLE", "SUBJECT", "KEYWORDS",
        "COMMENTS", "CREATEDATE", "SAVEDATE", "PRINTDATE", "INCLUDETEXT", "INCLUDE",
        "INCLUDEPICTURE", "LINK", "IMPORT", "DDE", "DDEAUTO",
    }
)  # fmt: skip


class FieldCheck:
    """Withholds a part holding a Word field from `_IDENTIFYING_FIELDS`: a simple field
    (`w:fldSimple w:instr`) or a complex one (`w:fldChar` begin, `w:instrText` runs, possibly
    split and nested)."""

    def __init__(self) -> None:
        self.fields: list[list[str]] = [[]]  # instruction text per open complex field
        self.in_instruction = False

    def start(self, name: Name, attributes: Attributes) -> None:
        if name[0] not in _W:
            return
        if name[1] == "fldSimple":
            _check_field(attributes.get((name[0], "instr"), ""))
            _check_link(attributes.get((name[0], "instr"), ""))
        elif name[1] == "fldChar":
            kind = attributes.get((name[0], "fldCharType"))
            if kind == "begin":
                self.fields.append([])
            elif kind in ("separate", "end"):
                _check_link("".join(self.fields[-1]))
            if kind == "end" and len(self.fields) > 1:
                self.fields.pop()
        elif name[1] == "instrText":
            self.in_instruction = True

    def text(self, data: str) -> None:
        if self.in_instruction:
            self.fields[-1].append(data)
            _check_field("".join(self.fields[-1]))

    def end(self, name: Name) -> None:
        if name[0] in _W and name[1] == "instrText":
            self.in_instruction = False


def _check_field(instruction: str) -> None:
    words = instruction.split(None, 1)
    if words and words[0].upper() in _IDENTIFYING_FIELDS:
        raise Withhold(FIELDS)


# A HYPERLINK field's target (the first argument that is not a switch), quoted or not, and its
# ScreenTip (`\o "..."`).
_HYPERLINK_FIELD = re.compile(r'\s*HYPERLINK\s+(?:"([^"]*)"|([^\s\\"]\S*))?', re.IGNORECASE)
_FIELD_TOOLTIP = re.compile(r'\\o\s+"([^"]*)"')


def _check_link(instruction: str) -> None:
    """A complete HYPERLINK field must point at a web page or a mailbox (or only at a bookmark,
    `\\l`), and its ScreenTip must not hold a path; otherwise the document is withheld."""
    found = _HYPERLINK_FIELD.match(instruction)
    if found is None:
        return
    target = found.group(1) if found.group(1) is not None else found.group(2)
    if target is not None and not web_link(target):
        raise Withhold(LINKED)
    tooltip = _FIELD_TOOLTIP.search(instruction)
    if tooltip is not None and re.search(r"[\\/:]", tooltip.group(1)):
        raise Withhold(LINKED)
