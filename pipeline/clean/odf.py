"""OpenDocument (odt, ods, odp): the plan for cleaning each member of a package.

In: the member names of a package and a way to read a member. Out: a `Part` for every member:
`mimetype` kept byte-identical (first and stored, as ODF requires); `meta.xml` replaced by an
empty one; settings (printer names), thumbnails, toolbar configurations, layout caches, RDF
metadata and signatures (certificates name their owner) dropped, with their manifest entries;
pictures cleaned as images; every other XML part filtered: comments (`office:annotation`) and
tracked changes (accepted: the change log and deleted text go) removed, `dc:creator` and
`dc:date` wherever they are, author, sender, file name, template, printed-by and document
property fields, picture alt text (`svg:title`, `svg:desc`), DDE links, and elements that link files
outside the package (`xlink:href` other than a hyperlink, or naming a member that is not there)
removed, revision session ids removed. Hyperlinks (`text:a`, `draw:a`) to anything but a web page,
a mailbox or a bookmark of the document (file:, smb:, UNC and drive paths, relative paths name
the sender's disk, user name or network) are unwrapped: their text stays, the link goes; the
hidden name and title of every hyperlink, frame names other than the standard ones and
bibliography URLs other than web links are removed.
Macros (Basic/, Scripts/) and any other member withhold the document.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from urllib.parse import unquote

from pipeline.clean.common import (
    EMBEDDED,
    PART_UNKNOWN,
    PROTECTED,
    STANDARD_FRAMES,
    Withhold,
    web_link,
)
from pipeline.clean.xmlparts import DROP, IMAGE, KEEP, Attributes, Name, Part, XmlPolicy

TYPES = tuple(
    f"application/vnd.oasis.opendocument.{kind}" for kind in ("text", "spreadsheet", "presentation")
)
NAMESPACES = (
    "urn:oasis:names:tc:opendocument:",
    "urn:org:documentfoundation:names:experimental:",
    "http://openoffice.org/",
    "http://www.openoffice.org/",
    "http://purl.org/dc/elements/1.1/",
    "http://www.w3.org/1999/xlink",
    "http://www.w3.org/1998/Math/MathML",
    "http://www.w3.org/1999/xhtml",
    "http://www.w3.org/2002/xforms",
    "http://www.w3.org/2001/xml-events",
    "http://www.w3.org/2001/XMLSchema",
    "http://www.w3.org/2003/g/data-view#",
    "http://www.w3.org/TR/css3-text/",
    "http://docs.oasis-open.org/ns/office/1.2/meta/",
)
_ODF = "urn:oasis:names:tc:opendocument:xmlns:"
_OFFICE, _TEXT, _TABLE = f"{_ODF}office:1.0", f"{_ODF}text:1.0", f"{_ODF}table:1.0"
_DRAW, _META, _MANIFEST = f"{_ODF}drawing:1.0", f"{_ODF}meta:1.0", f"{_ODF}manifest:1.0"
_DC = "http://purl.org/dc/elements/1.1/"
_SVG = f"{_ODF}svg-compatible:1.0"
_XLINK = "http://www.w3.org/1999/xlink"
_DROPPED_ELEMENTS = frozenset(
    {
        (_OFFICE, "annotation"),
        (_OFFICE, "annotation-end"),
        (_OFFICE, "dde-source"),
        (_TEXT, "tracked-changes"),
        (_TEXT, "change"),
        (_TEXT, "change-start"),
        (_TEXT, "change-end"),
        (_TEXT, "author-name"),
        (_TEXT, "author-initials"),
        (_TEXT, "initial-creator"),
        (_TEXT, "creator"),
        (_TEXT, "user-defined"),
        (_TEXT, "dde-connection-decls"),
        # Fields showing the file's path, its template's path, who printed it, or document
        # properties removed from meta.xml: the element goes with the value it stored.
        (_TEXT, "file-name"),
        (_TEXT, "template-name"),
        (_TEXT, "printed-by"),
        (_TEXT, "title"),
        (_TEXT, "subject"),
        (_TEXT, "keywords"),
        (_TEXT, "description"),
        (_TEXT, "creation-date"),
        (_TEXT, "creation-time"),
        (_TEXT, "modification-date"),
        (_TEXT, "modification-time"),
        (_TEXT, "print-date"),
        (_TEXT, "print-time"),
        # Picture alt text, which may hold the picture's original path.
        (_SVG, "title"),
        (_SVG, "desc"),
        (_TABLE, "tracked-changes"),
        (_TABLE, "dde-links"),
        (_DC, "creator"),
        (_DC, "date"),
    }
)
_HYPERLINKS = {(_TEXT, "a"), (_DRAW, "a")}
_DROPPED_PARTS = re.compile(
    r"^((.*/)?settings\.xml|(.*/)?layout-cache|manifest\.rdf|Thumbnails/.*|Configurations2/.*"
    r"|META-INF/(documentsignatures|macrosignatures|signatures[^/]*)\.xml"
    r"|Basic/script-l[bc]\.xml)$"
)
_KNOWN_PARTS = re.compile(r"^(Object \d+/)?(content|styles)\.xml$")  # other XML withholds
_DROPPED_ATTRIBUTES = {"author", "initials", "creator", "paragraph-rsid"}


def plan(names: list[str], read: Callable[[str], bytes]) -> tuple[str, dict[str, Part]]:
    """The content type of the package and the fate of each member."""
    mimetype = read("mimetype").decode("ascii", "replace").strip()
    if b"encryption-data" in read("META-INF/manifest.xml"):
        raise Withhold(PROTECTED)
    dropped = {name for name in names if _DROPPED_PARTS.match(name)}
    content = _content_policy({name for name in names if name not in dropped})
    return mimetype, {name: _part(name, dropped, read, content) for name in names}


def is_odf(names: list[str], read: Callable[[str], bytes], size: Callable[[str], int]) -> bool:
    if "mimetype" not in names or size("mimetype") > 200:
        return False
    return read("mimetype").decode("ascii", "replace").strip().startswith(TYPES)


def _part(name: str, dropped: set[str], read: Callable[[str], bytes], content: XmlPolicy) -> Part:
    if name in dropped or (name.endswith("/") and _DROPPED_PARTS.match(name + "x")):
        return DROP
    if name == "mimetype" or name.endswith("/"):
        return KEEP
    if name.startswith(("Basic/", "Scripts/")):
        raise Withhold(EMBEDDED)
    if name == "META-INF/manifest.xml":
        return Part("xml", policy=_manifest_policy(dropped))
    if name == "meta.xml" or name.endswith("/meta.xml"):
        return Part("replace", data=_empty_meta(read(name)))
    if name.startswith(("Pictures/", "ObjectReplacements/")) or "/Pictures/" in name:
        return IMAGE
    if _KNOWN_PARTS.match(name):
        return Part("xml", policy=content)
    raise Withhold(PART_UNKNOWN)


def _empty_meta(original: bytes) -> bytes:
    """An empty meta.xml, declaring the same ODF version as the one it replaces."""
    found = re.search(rb'office:version="([0-9.]{1,8})"', original)
    version = found.group(1) if found else b"1.2"
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + (
        b'<office:document-meta xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0"'
        b' office:version="' + version + b'"><office:meta/></office:document-meta>'
    )


def _manifest_policy(dropped: set[str]) -> XmlPolicy:
    def drop_when(name: Name, attributes: Attributes) -> bool:
        path = attributes.get((_MANIFEST, "full-path"), "")
        gone = path in dropped or (path.endswith("/") and bool(_DROPPED_PARTS.match(path + "x")))
        return name == (_MANIFEST, "file-entry") and gone

    return XmlPolicy(NAMESPACES, drop_when=drop_when)


def links_outside(name: Name, attributes: Attributes) -> bool:
    """An element other than a hyperlink whose `xlink:href` leaves the package (a linked image,
    section or table, an OLE link, a script), or a DDE link: it names or fetches another file."""
    href = attributes.get((_XLINK, "href"), "")
    outside = ":" in href or href.startswith(("/", "../", "\\"))
    return bool(href) and outside and name not in _HYPERLINKS


def _content_policy(members: set[str]) -> XmlPolicy:
    """The filter of content.xml and styles.xml, for a package holding `members`."""
    folders = {folder + "/" for name in members for folder in _folders(name)}

    def missing(name: Name, attributes: Attributes) -> bool:
        """An element other than a hyperlink naming a member that is not in the package (its
        name could be anything, e.g. `Users/<name>/photo.png`)."""
        href = attributes.get((_XLINK, "href"), "")
        if not href or name in _HYPERLINKS or href.startswith("#"):
            return False
        path = posixpath.normpath(unquote(href))
        return path not in members and path + "/" not in folders and path not in folders

    def drop_when(name: Name, attributes: Attributes) -> bool:
        if name[0] == _META or (name[0] == _TEXT and name[1].startswith("sender-")):
            return True
        return links_outside(name, attributes) or missing(name, attributes)

    return XmlPolicy(
        NAMESPACES,
        drop_elements=_DROPPED_ELEMENTS,
        drop_attributes=_identifying_attribute,
        drop_when=drop_when,
        unwrap_when=_local_link,
        drop_attribute_when=_hidden_link_detail,
    )


def _folders(name: str) -> list[str]:
    parts = name.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _local_link(name: Name, attributes: Attributes) -> bool:
    """A hyperlink to anything but a web page, a mailbox or a bookmark of this document."""
    if name not in _HYPERLINKS:
        return False
    href = attributes.get((_XLINK, "href"), "")
    bookmark = href.startswith("#") and not any(c in href for c in ":/\\")
    return not (web_link(href) or bookmark)


def _hidden_link_detail(element: Name, name: Name, value: str) -> bool:
    """A hyperlink's name and title (hidden text), a frame name other than the standard ones,
    a bibliography entry's URL other than a web link."""
    if name == (_OFFICE, "target-frame-name"):
        return value not in STANDARD_FRAMES
    if name == (_TEXT, "url"):
        return not web_link(value)
    return element in _HYPERLINKS and name in {(_OFFICE, "name"), (_OFFICE, "title")}


def _identifying_attribute(name: Name) -> bool:
    return name[1] in _DROPPED_ATTRIBUTES or name[1].startswith("rsid")
