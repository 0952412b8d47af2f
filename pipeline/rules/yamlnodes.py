"""Reading one YAML file as nodes that remember their line, and taking typed values from them.

In: the path of a YAML file and a list to append problems to. Out: the composed `yaml.Node`
tree (`compose_file`) and checked values taken from its nodes (`Fields`, `expect_text`, ...).
Bad input never raises here: each mistake becomes a `Problem` with the file and the 1-based
line of the offending key or value, and the caller gets None for that value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from yaml.nodes import Node

from pipeline.rules.conditions import describe as describe_value
from pipeline.rules.model import Problem

# Service ids and template names: safe as file names and easy to write in YAML lists.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_STR_TAG = "tag:yaml.org,2002:str"
_NULL_TAG = "tag:yaml.org,2002:null"
_INVALID = object()  # what plain_value gives for a node YAML cannot build a value from


@dataclass
class Source:
    """The file being read and where its problems go."""

    file: Path
    problems: list[Problem]

    def report(self, where: Node | int, message: str) -> None:
        """Record a problem at a node's line, or at a line number."""
        line = where if isinstance(where, int) else line_of(where)
        self.problems.append(Problem(self.file, line, printable(message)))


def printable(message: str) -> str:
    """The message with control characters (say, from a mistyped key) shown as escapes."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in message)


def line_of(node: Node) -> int:
    """The 1-based line a node starts on."""
    return int(node.start_mark.line) + 1


def compose_file(source: Source) -> Node | None:
    """The file's YAML node tree, or None (with a problem) if it is unreadable or empty."""
    text = _read_text(source)
    if text is None:
        return None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as error:
        _report_syntax(source, error)
        return None
    except yaml.YAMLError as error:  # ReaderError: a character YAML does not allow
        position = getattr(error, "position", 0)
        source.report(text.count("\n", 0, position) + 1, f"this is not valid YAML: {error}")
        return None
    except RecursionError:
        source.report(1, "this YAML nests lists or mappings too deeply to read")
        return None
    if root is None:
        source.report(1, "the file is empty (or holds only comments)")
    return root


def _read_text(source: Source) -> str | None:
    try:
        data = source.file.read_bytes()
    except OSError as error:
        source.report(0, f"cannot read the file: {error.strerror or error}")
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        source.report(line, f"the file is not UTF-8 text (byte 0x{data[error.start]:02x})")
        return None


def _report_syntax(source: Source, error: yaml.MarkedYAMLError) -> None:
    mark = error.problem_mark or error.context_mark
    line = int(mark.line) + 1 if mark is not None else 1
    column = f" at column {mark.column + 1}" if mark is not None else ""
    problem = error.problem or "cannot be read"
    context = f" ({error.context})" if error.context else ""
    source.report(line, f"this is not valid YAML{column}: {problem}{context}")


def describe(node: Node) -> str:
    """A node as a person would name it in a message ("a list", "the number 3")."""
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list" if node.value else "an empty list"
    if node.tag == _STR_TAG:
        return describe_value(node.value) if node.value else "empty text"
    value = plain_value(node)
    return describe_value(node.value) if value is _INVALID else describe_value(value)


def is_null(node: Node) -> bool:
    """True for an empty value (`key:` with nothing after it, `~`, `null`)."""
    return isinstance(node, yaml.ScalarNode) and node.tag == _NULL_TAG


def plain_value(node: Node) -> object:
    """The Python value of a node, or _INVALID if YAML cannot build it (bad date, tag...)."""
    if isinstance(node, yaml.ScalarNode) and node.tag == _STR_TAG:
        return node.value
    try:
        return yaml.constructor.SafeConstructor().construct_object(node, deep=True)
    except (yaml.YAMLError, ValueError, TypeError, OverflowError, RecursionError):
        return _INVALID


def checked_value(source: Source, node: Node, label: str) -> tuple[bool, object]:
    """(True, value) for a node YAML can build; (False, None) after reporting one it cannot."""
    value = plain_value(node)
    if value is _INVALID:
        source.report(node, f"{label} is not a value YAML can read ({describe(node)})")
        return False, None
    return True, value


def _wrong(source: Source, node: Node, label: str, expected: str) -> None:
    found = describe(node)
    quote_hint = ""
    if isinstance(node, yaml.ScalarNode) and node.tag not in (_STR_TAG, _NULL_TAG):
        quote_hint = " (put it in quotes if you mean it as text)"
    source.report(node, f"{label} must be {expected}, not {found}{quote_hint}")


def expect_text(source: Source, node: Node, label: str, expected: str = "text") -> str | None:
    """The node's text if it is non-blank text; else report and return None."""
    text = text_of(node)
    if text is None:
        _wrong(source, node, label, expected)
    return text


def expect_scalar(source: Source, node: Node, label: str, expected: str) -> str | None:
    """The node's text as written, whatever YAML reads it as (40 digits stay text)."""
    if isinstance(node, yaml.ScalarNode) and node.tag != _NULL_TAG:
        return str(node.value)
    _wrong(source, node, label, expected)
    return None


def expect_flag(source: Source, node: Node, label: str) -> bool | None:
    """The node's value if it is true or false; else report and return None."""
    value = plain_value(node) if isinstance(node, yaml.ScalarNode) else None
    if isinstance(value, bool):
        return value
    _wrong(source, node, label, "true or false")
    return None


def expect_list(source: Source, node: Node, label: str, example: str) -> list[Node] | None:
    """The items of a list node; else report (with an example) and return None."""
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    _wrong(source, node, label, f"a list, e.g. {example}")
    return None


@dataclass
class Fields:
    """The keys of one YAML mapping (say, one rule), checked against the allowed ones."""

    source: Source
    node: Node
    owner: str  # how messages name the mapping: "rule 'urgent'", "service #2", "the default"
    values: dict[str, Node] = field(default_factory=dict)
    key_lines: dict[str, int] = field(default_factory=dict)

    def label(self, key: str) -> str:
        return f"'{key}' in {self.owner}"

    def line(self, key: str) -> int:
        return line_of(self.values[key]) if key in self.values else line_of(self.node)

    def lines(self) -> dict[str, int]:
        """The line of each key's value."""
        return {key: line_of(value) for key, value in self.values.items()}

    def require(self, keys: Iterable[str]) -> bool:
        """Report the required keys that are missing; True if none is."""
        missing = [f"'{key}'" for key in keys if key not in self.values]
        if missing:
            self.source.report(self.node, f"{self.owner} is missing {', '.join(missing)}")
        return not missing

    def report(self, key: str, message: str) -> None:
        """Record a problem at the line of `key`'s value."""
        self.source.report(self.line(key), message)

    def text(self, key: str, expected: str = "text") -> str | None:
        node = self.values.get(key)
        if node is None:
            return None
        return expect_text(self.source, node, self.label(key), expected)

    def name(self, key: str, expected: str, special: str | None = None) -> str | None:
        """Text safe as a file name (see SAFE_NAME), or the word `special` in any case."""
        value = self.text(key, expected)
        if value is None:
            return None
        if special is not None and value.casefold() == special:
            return special
        if not SAFE_NAME.fullmatch(value):
            made_of = "made of letters, digits, '.', '_' and '-'"
            self.report(key, f"{self.label(key)} must be {expected} {made_of}, not '{value}'")
            return None
        return value

    def flag(self, key: str) -> bool | None:
        node = self.values.get(key)
        return None if node is None else expect_flag(self.source, node, self.label(key))


def mapping_pairs(source: Source, node: Node, label: str) -> list[tuple[str, Node, Node]] | None:
    """The (key text, key node, value node) pairs of a mapping; else report, return None."""
    if not isinstance(node, yaml.MappingNode):
        _wrong(source, node, label, "a mapping (key: value)")
        return None
    pairs: list[tuple[str, Node, Node]] = []
    for key_node, value_node in node.value:
        if isinstance(key_node, yaml.ScalarNode):
            pairs.append((str(key_node.value), key_node, value_node))
        else:
            source.report(
                key_node, f"a key in {label} must be a plain word, not {describe(key_node)}"
            )
    return pairs


def read_fields(
    source: Source,
    node: Node,
    pairs: list[tuple[str, Node, Node]],
    allowed: Iterable[str],
    owner: str,
    kind: str = "key",
) -> Fields:
    """Check the keys of a mapping (unknown or repeated keys are reported) and keep the rest."""
    allowed = list(allowed)
    fields = Fields(source, node, owner)
    for key, key_node, value_node in pairs:
        if key not in allowed:
            listed = ", ".join(allowed)
            message = f"unknown {kind} '{key}' in {owner}; allowed {kind}s are: {listed}"
            source.report(key_node, message)
        elif key in fields.values:
            first = fields.key_lines[key]
            source.report(
                key_node, f"{kind} '{key}' appears twice in {owner} (first on line {first})"
            )
        else:
            fields.values[key] = value_node
            fields.key_lines[key] = line_of(key_node)
    return fields


def peek_text(pairs: list[tuple[str, Node, Node]], key: str) -> str | None:
    """The text value of `key`, if it has one, without reporting anything (to name a mapping)."""
    for name, _, value in pairs:
        if name == key:
            return text_of(value)
    return None


def text_of(node: Node) -> str | None:
    """The node's text if it is non-blank text, else None; reports nothing."""
    if isinstance(node, yaml.ScalarNode) and node.tag == _STR_TAG and node.value.strip():
        return str(node.value)
    return None


def read_file_fields(source: Source, allowed: Iterable[str]) -> Fields | None:
    """The top-level keys of a YAML file that must be a mapping; None if it is not."""
    root = compose_file(source)
    if root is None:
        return None
    pairs = mapping_pairs(source, root, "the top level of the file")
    if pairs is None:
        return None
    return read_fields(source, root, pairs, allowed, "this file")
