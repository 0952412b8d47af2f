"""Loading a rules folder: YAML files in, a checked `RuleSet` out.

In: a folder holding `services.yaml` (the services reports may be referred to) and one or more
routing files (every other `*.yaml`; they run in file-name order, rules within a file in
order; hidden files are ignored). Out: a `RuleSet`, or `RuleError` listing every problem of
every file as `file:line: message` -- nothing is loaded from a folder with any mistake in it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from yaml.nodes import Node

from pipeline.rules.conditions import CONDITIONS
from pipeline.rules.facts import SETTABLE
from pipeline.rules.model import (
    NO_ACKNOWLEDGEMENT,
    Default,
    Problem,
    Rule,
    RuleError,
    RuleSet,
    Service,
)
from pipeline.rules.yamlnodes import (
    Fields,
    Source,
    checked_value,
    compose_file,
    expect_list,
    expect_scalar,
    expect_text,
    is_null,
    line_of,
    mapping_pairs,
    peek_text,
    read_fields,
)

SERVICES_FILE = "services.yaml"
SERVICE_KEYS = ("id", "name", "email", "fingerprint", "template")
SERVICE_REQUIRED = ("id", "name", "email", "fingerprint")
ROUTING_KEYS = ("rules", "default")
RULE_KEYS = ("name", "description", "when", "set", "refer", "acknowledge", "stop")
DEFAULT_KEYS = ("refer", "acknowledge")
# Service ids and template names: safe as file names and easy to write in YAML lists.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_NAME_RULE = "letters, digits, '.', '_' and '-'"
_FINGERPRINT = re.compile(r"[0-9A-F]{40}")


@dataclass
class _Found:
    """What has been read so far, across all files of the folder."""

    problems: list[Problem] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    services: dict[str, Service] = field(default_factory=dict)
    # Every service id written in services.yaml; None if that file could not be read, in
    # which case `refer:` entries are not checked (it would only repeat the same problem).
    service_ids: set[str] | None = None
    service_lines: dict[str, int] = field(default_factory=dict)
    rules: list[Rule] = field(default_factory=list)
    rule_places: dict[str, str] = field(default_factory=dict)
    default: Default | None = None
    default_place: str | None = None


def load_ruleset(rules_dir: Path) -> RuleSet:
    """Load and check every file of `rules_dir`; raise RuleError listing all problems found."""
    found = _Found()
    entries = _list_folder(rules_dir, found.problems)
    if entries is not None:
        _load_services(rules_dir / SERVICES_FILE, found)
        for path in _routing_files(rules_dir, entries, found.problems):
            _load_routing(path, found)
    if found.problems:
        raise RuleError(_by_file_and_line(found.problems))
    return RuleSet(found.services, found.rules, found.default, found.files)


def _list_folder(rules_dir: Path, problems: list[Problem]) -> list[Path] | None:
    """The folder's visible entries by name; None (with a problem) if it cannot be listed."""
    if not rules_dir.is_dir():
        what = "is not a folder" if rules_dir.exists() else "does not exist"
        problems.append(Problem(rules_dir, 0, f"the rules folder {what}"))
        return None
    try:
        entries = sorted(rules_dir.iterdir(), key=lambda path: path.name)
    except OSError as error:
        problems.append(Problem(rules_dir, 0, f"cannot list the rules folder: {error.strerror}"))
        return None
    return [path for path in entries if not path.name.startswith(".")]


def _routing_files(rules_dir: Path, entries: list[Path], problems: list[Problem]) -> list[Path]:
    """The routing files in the order their rules run."""
    for path in entries:
        if path.suffix == ".yml":
            message = f"routing files must end in .yaml; rename this one to {path.stem}.yaml"
            problems.append(Problem(path, 0, message))
    routing = [p for p in entries if p.suffix == ".yaml" and p.name != SERVICES_FILE]
    routing = [path for path in routing if path.is_file()]
    if not routing:
        message = (
            "there are no routing files (*.yaml besides services.yaml), "
            "so no report would be referred or acknowledged"
        )
        problems.append(Problem(rules_dir, 0, message))
    return routing


def _by_file_and_line(problems: list[Problem]) -> list[Problem]:
    """Problems grouped by file (in the order files were read), then by line."""
    rank: dict[Path, int] = {}
    for problem in problems:
        rank.setdefault(problem.file, len(rank))
    return sorted(problems, key=lambda problem: (rank[problem.file], problem.line))


def _top_fields(source: Source, allowed: tuple[str, ...]) -> Fields | None:
    root = compose_file(source)
    if root is None:
        return None
    pairs = mapping_pairs(source, root, "the top level of the file")
    if pairs is None:
        return None
    return read_fields(source, root, pairs, allowed, "this file")


# --- services.yaml ----------------------------------------------------------------------


def _load_services(path: Path, found: _Found) -> None:
    if not path.is_file():
        message = "services.yaml is missing; it must list the services reports are referred to"
        found.problems.append(Problem(path, 0, message))
        return
    found.files.append(path)
    source = Source(path, found.problems)
    fields = _top_fields(source, ("services",))
    if fields is None or not fields.require(["services"]):
        return
    example = "[{id: advice-centre, name: ..., email: ..., fingerprint: ...}]"
    items = expect_list(source, fields.values["services"], fields.label("services"), example)
    if items is None:
        return
    found.service_ids = set()
    for index, node in enumerate(items, 1):
        _load_service(source, index, node, found)


def _load_service(source: Source, index: int, node: Node, found: _Found) -> None:
    pairs = mapping_pairs(source, node, f"service #{index}")
    if pairs is None:
        return
    named = peek_text(pairs, "id")
    owner = f"service '{named}'" if named else f"service #{index}"
    fields = read_fields(source, node, pairs, SERVICE_KEYS, owner)
    before = len(source.problems)
    fields.require(SERVICE_REQUIRED)
    service_id, name = _service_id(fields, found), fields.text("name")
    email, fingerprint = _email(fields), _fingerprint(fields)
    template = _template_name(fields, "template", allow_none=False)
    if service_id is None or name is None or email is None or fingerprint is None:
        return
    if len(source.problems) == before:
        lines = fields.lines()
        found.services[service_id] = Service(
            service_id, name, email, fingerprint, template, source.file, line_of(node), lines
        )


def _service_id(fields: Fields, found: _Found) -> str | None:
    service_id = fields.text("id")
    if service_id is None:
        return None
    if found.service_ids is not None:
        found.service_ids.add(service_id)
    if not _NAME.fullmatch(service_id):
        expected = f"a short id made of {_NAME_RULE}, e.g. advice-centre"
        fields.report("id", f"{fields.label('id')} must be {expected}, not '{service_id}'")
        return None
    first = found.service_lines.setdefault(service_id, fields.line("id"))
    if first != fields.line("id"):
        fields.report("id", f"service id '{service_id}' is used twice (first on line {first})")
        return None
    return service_id


def _email(fields: Fields) -> str | None:
    email = fields.text("email", expected="an email address")
    if email is None:
        return None
    local, _, domain = email.rpartition("@")
    if not local or not domain or any(char.isspace() for char in email):
        example = "such as advice@example.ac.uk"
        fields.report(
            "email", f"{fields.label('email')} must be an email address {example}, not '{email}'"
        )
        return None
    return email


def _fingerprint(fields: Fields) -> str | None:
    node = fields.values.get("fingerprint")
    if node is None:
        return None
    expected = "40 hexadecimal digits (spaces allowed)"
    written = expect_scalar(fields.source, node, fields.label("fingerprint"), expected)
    if written is None:
        return None
    fingerprint = "".join(written.split()).upper()
    if not _FINGERPRINT.fullmatch(fingerprint):
        count = f"{len(fingerprint)} characters"
        message = f"{fields.label('fingerprint')} must be {expected}, not '{written}' ({count})"
        fields.report("fingerprint", message)
        return None
    return fingerprint


def _template_name(fields: Fields, key: str, allow_none: bool) -> str | None:
    """A template name (templates/NAME.txt); with allow_none, also `none` (no message)."""
    expected = "a template name or none" if allow_none else "a template name"
    name = fields.text(key, expected=expected)
    if name is None:
        return None
    if allow_none and name.casefold() == NO_ACKNOWLEDGEMENT:
        return NO_ACKNOWLEDGEMENT
    if not _NAME.fullmatch(name):
        rule = f"made of {_NAME_RULE}, for templates/NAME.txt"
        fields.report(key, f"{fields.label(key)} must be {expected} {rule}, not '{name}'")
        return None
    return name


# --- routing files ----------------------------------------------------------------------


def _load_routing(path: Path, found: _Found) -> None:
    found.files.append(path)
    source = Source(path, found.problems)
    fields = _top_fields(source, ROUTING_KEYS)
    if fields is None:
        return
    if not fields.node.value:
        source.report(fields.node, "this file has neither 'rules' nor 'default'")
    if "rules" in fields.values:
        example = "[{name: urgent, when: {...}, refer: [...]}]"
        items = expect_list(source, fields.values["rules"], fields.label("rules"), example)
        for index, node in enumerate(items or [], 1):
            _load_rule(source, index, node, found)
    if "default" in fields.values:
        _load_default(fields, found)


def _load_rule(source: Source, index: int, node: Node, found: _Found) -> None:
    pairs = mapping_pairs(source, node, f"rule #{index}")
    if pairs is None:
        return
    named = peek_text(pairs, "name")
    fields = read_fields(
        source, node, pairs, RULE_KEYS, f"rule '{named}'" if named else f"rule #{index}"
    )
    before = len(source.problems)
    name = _rule_name(fields, found)
    description = fields.text("description")
    when, updates = _conditions(fields), _updates(fields)
    refer = _refer(fields, found)
    acknowledge = _template_name(fields, "acknowledge", allow_none=True)
    stop = fields.flag("stop")
    _require_action(fields, stop)
    if name is None or len(source.problems) > before:
        return
    found.rules.append(
        Rule(
            name,
            source.file,
            line_of(node),
            description,
            when,
            updates,
            refer,
            acknowledge,
            bool(stop),
            fields.lines(),
        )
    )


def _rule_name(fields: Fields, found: _Found) -> str | None:
    if "name" not in fields.values:
        message = f"{fields.owner} has no 'name'; every rule needs a name, unique in the folder"
        fields.source.report(fields.node, message)
        return None
    name = fields.text("name")
    if name is None:
        return None
    place = f"{fields.source.file.name}:{fields.line('name')}"
    first = found.rule_places.setdefault(name, place)
    if first != place:
        fields.report("name", f"rule name '{name}' is used twice (first at {first})")
        return None
    return name


def _conditions(fields: Fields) -> dict[str, object]:
    node = fields.values.get("when")
    if node is None or is_null(node):
        return {}
    pairs = mapping_pairs(fields.source, node, fields.label("when"))
    if pairs is None:
        return {}
    known = sorted(CONDITIONS)
    when = read_fields(fields.source, node, pairs, known, fields.owner, kind="condition")
    conditions: dict[str, object] = {}
    for key, value_node in when.values.items():
        label = f"condition '{key}' in {fields.owner}"
        readable, value = checked_value(fields.source, value_node, label)
        error = CONDITIONS[key].validate(value) if readable else None
        if error is not None:
            fields.source.report(value_node, f"{label} {error}")
        elif readable:
            conditions[key] = tuple(value) if isinstance(value, list) else value
    return conditions


def _updates(fields: Fields) -> dict[str, object]:
    node = fields.values.get("set")
    if node is None:
        return {}
    pairs = mapping_pairs(fields.source, node, fields.label("set"))
    if pairs is None:
        return {}
    allowed = ", ".join(SETTABLE)
    if not pairs:
        fields.report("set", f"{fields.label('set')} is empty; give at least one of: {allowed}")
    settings = read_fields(fields.source, node, pairs, SETTABLE, fields.label("set"))
    updates: dict[str, object] = {}
    for key, kind in SETTABLE.items():
        value = settings.flag(key) if kind is bool else settings.text(key)
        if value is not None:
            updates[key] = value
    return updates


def _refer(fields: Fields, found: _Found) -> tuple[str, ...]:
    node = fields.values.get("refer")
    if node is None:
        return ()
    items = expect_list(fields.source, node, fields.label("refer"), "[advice-centre]")
    if items is None:
        return ()
    if not items:
        fields.report("refer", f"{fields.label('refer')} lists no services")
    refer: list[str] = []
    for item in items:
        label = f"an entry of {fields.label('refer')}"
        service_id = expect_text(fields.source, item, label, expected="a service id")
        if service_id is None or not _is_known_service(fields, item, service_id, found):
            continue
        if service_id not in refer:
            refer.append(service_id)
    return tuple(refer)


def _is_known_service(fields: Fields, node: Node, service_id: str, found: _Found) -> bool:
    if found.service_ids is None or service_id in found.service_ids:
        return True
    known = ", ".join(sorted(found.service_ids)) or "none"
    message = (
        f"{fields.owner} refers to unknown service '{service_id}'; "
        f"services defined in services.yaml: {known}"
    )
    fields.source.report(node, message)
    return False


def _require_action(fields: Fields, stop: bool | None) -> None:
    acts = any(key in fields.values for key in ("set", "refer", "acknowledge"))
    stops = "stop" in fields.values and stop is not False
    if not acts and not stops:
        message = (
            f"{fields.owner} does nothing; "
            "give it at least one of 'set', 'refer', 'acknowledge' or 'stop: true'"
        )
        fields.source.report(fields.node, message)


def _load_default(fields: Fields, found: _Found) -> None:
    source, line = fields.source, fields.key_lines["default"]
    place = f"{source.file.name}:{line}"
    if found.default_place is not None:
        message = (
            f"a default is already set at {found.default_place}; "
            "only one routing file may set 'default'"
        )
        source.report(line, message)
        return
    found.default_place = place
    node = fields.values["default"]
    pairs = mapping_pairs(source, node, fields.label("default"))
    if pairs is None:
        return
    if not pairs:
        source.report(node, "the default is empty; give it 'refer', 'acknowledge' or both")
    default = read_fields(source, node, pairs, DEFAULT_KEYS, "the default")
    refer = _refer(default, found)
    acknowledge = _template_name(default, "acknowledge", allow_none=True)
    found.default = Default(source.file, line, refer, acknowledge, default.lines())
