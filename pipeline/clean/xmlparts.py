"""Package parts: what happens to each member of an Office or OpenDocument file (`Part`), and
the filter for its XML parts.

In: the bytes of a part and an `XmlPolicy`. Out: the part without the elements and attributes
the policy removes (or unwraps), or `Withhold` when the part uses a vocabulary (namespace) the
policy does not know, declares a DTD or entities, or is not well-formed. Prefixes, element
order and text are kept as they are, so an Office application still opens the result; XML
comments and processing instructions are dropped. A part from which nothing was removed is
returned byte-identical.

The parser is expat without DTD or entity support: any DOCTYPE or ENTITY declaration is refused
before it is read, so no entity can expand and no external resource is fetched.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, NoReturn, Protocol
from xml.parsers import expat
from xml.sax.saxutils import escape

from pipeline.clean.common import PART_UNKNOWN, UNREADABLE, Deadline, Withhold

XML_NAMESPACE = "http://www.w3.org/XML/1998/namespace"
_DECLARATION = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
_ATTRIBUTE_ESCAPES = {'"': "&quot;", "\n": "&#10;", "\r": "&#13;", "\t": "&#9;"}
_TEXT_ESCAPES = {"\r": "&#13;"}

Name = tuple[str, str]  # (namespace URI, local name); "" for no namespace
Attributes = dict[Name, str]


class Watcher(Protocol):
    """Sees the elements and text a filter keeps, in order; raises `Withhold` to refuse the part
    (e.g. a Word field that shows the author). A new one is made for each part."""

    def start(self, name: Name, attributes: Attributes) -> None: ...

    def text(self, data: str) -> None: ...

    def end(self, name: Name) -> None: ...


@dataclass(frozen=True)
class XmlPolicy:
    """What may stay in a part: vocabularies by namespace URI prefix, and what goes."""

    namespaces: tuple[str, ...]
    drop_elements: frozenset[Name] = frozenset()  # removed with everything inside
    unwrap_elements: frozenset[Name] = frozenset()  # removed, their content kept
    drop_attributes: Callable[[Name], bool] = field(default=lambda name: False)
    # Removed with everything inside when this says so (e.g. it points at a dropped part).
    drop_when: Callable[[Name, Attributes], bool] = field(default=lambda name, attributes: False)
    # Unwrapped (content kept) when this says so (e.g. a hyperlink to a file on a disk).
    unwrap_when: Callable[[Name, Attributes], bool] = field(default=lambda name, attributes: False)
    # An attribute removed when this says so, from its element, its name and its value (e.g. a
    # reference to an unlinked relationship, a tooltip holding a path).
    drop_attribute_when: Callable[[Name, Name, str], bool] = field(
        default=lambda element, name, value: False
    )
    watch: Callable[[], Watcher] | None = None  # makes the watcher of one part, if any


@dataclass(frozen=True)
class Part:
    """One member's fate: kept byte-identical, dropped, replaced, filtered as XML or cleaned as
    an image."""

    action: Literal["keep", "drop", "replace", "xml", "image"]
    data: bytes = b""  # the replacement
    policy: XmlPolicy | None = None  # the filter


KEEP = Part("keep")
DROP = Part("drop")
IMAGE = Part("image")


class _Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def filter_part(data: bytes, policy: XmlPolicy, deadline: Deadline) -> tuple[bytes, bool]:
    """The part as it may leave, and whether anything was removed from it."""
    _refuse_dtd(data)
    writer = _Filter(policy, deadline)
    parser = expat.ParserCreate()
    parser.ordered_attributes = True
    parser.buffer_text = True
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = _refuse
    parser.EntityDeclHandler = _refuse
    parser.ExternalEntityRefHandler = _refuse
    parser.StartElementHandler = writer.start
    parser.EndElementHandler = writer.end
    parser.CharacterDataHandler = writer.text
    parser.CommentHandler = writer.removed_something
    parser.ProcessingInstructionHandler = writer.removed_something
    try:
        parser.Parse(data, True)
    except _Refused as refused:
        raise Withhold(refused.reason) from refused
    except expat.ExpatError as error:
        raise Withhold(UNREADABLE) from error
    if not writer.removed:
        return data, False
    return (_DECLARATION + "".join(writer.out)).encode("utf-8"), True


def parse_part(data: bytes) -> ElementTree.Element:
    """A small part (relationships, manifest) as a tree, read as safely as `filter_part`."""
    _refuse_dtd(data)
    try:
        return ElementTree.fromstring(data)
    except ElementTree.ParseError as error:
        raise Withhold(UNREADABLE) from error


def _refuse_dtd(data: bytes) -> None:
    """No DTD, no entity declarations (in any encoding expat reads: UTF-8 and UTF-16)."""
    for marker in ("<!DOCTYPE", "<!ENTITY"):
        for encoding in ("utf-8", "utf-16-le", "utf-16-be"):
            if marker.encode(encoding) in data:
                raise Withhold(UNREADABLE)


def _refuse(*_: object) -> NoReturn:
    raise _Refused(UNREADABLE)


class _Filter:
    """expat handlers writing what the policy keeps, prefixes as they were."""

    def __init__(self, policy: XmlPolicy, deadline: Deadline) -> None:
        self.policy = policy
        self.deadline = deadline
        self.out: list[str] = []
        self.scopes: list[dict[str, str]] = [{"xml": XML_NAMESPACE}]
        self.written: list[bool] = []  # per open element: was its start tag written
        self.skipping = 0  # depth inside a dropped element
        self.removed = False
        self.count = 0
        self.watcher = policy.watch() if policy.watch is not None else None
        self.names: list[Name] = []  # per open element: its name

    def removed_something(self, *_: object) -> None:
        self.removed = True

    def start(self, qname: str, flat: list[str]) -> None:
        self.count += 1
        if self.count % 1024 == 0:
            self.deadline.check()
        if self.skipping:
            self.skipping += 1
            return
        pairs = list(zip(flat[::2], flat[1::2], strict=True))
        scope = dict(self.scopes[-1])
        for key, value in pairs:
            if key == "xmlns" or key.startswith("xmlns:"):
                scope[key[6:]] = value
        self.scopes.append(scope)
        name = self._resolve(qname, scope, element=True)
        attributes = {self._resolve(k, scope, element=False): v for k, v in pairs if not _ns(k)}
        if name in self.policy.drop_elements or self.policy.drop_when(name, attributes):
            self.removed = True
            self.skipping = 1
            self.written.append(False)
            self.names.append(name)
            return
        self.names.append(name)
        if self.watcher is not None:
            self.watcher.start(name, attributes)
        if name in self.policy.unwrap_elements or self.policy.unwrap_when(name, attributes):
            if any(_ns(key) for key, _ in pairs):
                raise _Refused(PART_UNKNOWN)  # its content may use what it declares
            self.removed = True
            self.written.append(False)
            return
        kept = []
        for key, value in pairs:
            if not _ns(key) and self._drops(name, self._resolve(key, scope, False), value):
                self.removed = True
                continue
            kept.append(f' {key}="{escape(value, _ATTRIBUTE_ESCAPES)}"')
        self.out.append(f"<{qname}{''.join(kept)}>")
        self.written.append(True)

    def _drops(self, element: Name, attribute: Name, value: str) -> bool:
        policy = self.policy
        return policy.drop_attributes(attribute) or policy.drop_attribute_when(
            element, attribute, value
        )

    def end(self, qname: str) -> None:
        if self.skipping > 1:
            self.skipping -= 1
            return
        name = self.names.pop()
        if self.watcher is not None and not self.skipping:
            self.watcher.end(name)
        self.skipping = 0
        self.scopes.pop()
        if self.written.pop():
            self.out.append(f"</{qname}>")

    def text(self, data: str) -> None:
        if not self.skipping:
            if self.watcher is not None:
                self.watcher.text(data)
            self.out.append(escape(data, _TEXT_ESCAPES))

    def _resolve(self, qname: str, scope: dict[str, str], element: bool) -> Name:
        """(namespace, local name); refused when the namespace is not one the policy knows."""
        prefix, colon, local = qname.rpartition(":")
        if not colon and not element:
            return ("", local)  # an unprefixed attribute has no namespace
        if prefix not in scope and (colon or "" not in scope):
            raise _Refused(PART_UNKNOWN)
        uri = scope[prefix]
        if not uri.startswith(self.policy.namespaces) and uri != XML_NAMESPACE:
            raise _Refused(PART_UNKNOWN)
        return (uri, local)


def _ns(key: str) -> bool:
    """A namespace declaration, not an attribute."""
    return key == "xmlns" or key.startswith("xmlns:")
