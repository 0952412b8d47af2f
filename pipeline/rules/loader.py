"""Loading a rules folder: YAML files in, a checked `RuleSet` out.

In: a folder holding `services.yaml` (the services reports may be referred to) and one or more
routing files (every other `*.yaml`; they run in file-name order, rules within a file in
order; hidden files are ignored). Out: a `RuleSet`, or `RuleError` listing every problem of
every file as `file:line: message` -- nothing is loaded from a folder with any mistake in it.
A folder without a default route (a `default:` with `refer:`) is one: a report no rule refers
would reach nobody. Categories in `set:` are kept as slugs (`categories.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from yaml.nodes import Node

from pipeline.rules.categories import category_slug
from pipeline.rules.conditions import CONDITIONS
from pipeline.rules.facts import SETTABLE
from pipeline.rules.model import (
    NO_ACKNOWLEDGEMENT,
    Default,
    Problem,
    Rule,
    RuleError,
    RuleSet,
)
from pipeline.rules.services import SERVICES_FILE, Services, load_services
from pipeline.rules.yamlnodes import (
    Fields,
    Source,
    checked_value,
    expect_list,
    expect_text,
    is_null,
    line_of,
    mapping_pairs,
    peek_text,
    read_fields,
    read_file_fields,
)

ROUTING_KEYS = ("rules", "default")
RULE_KEYS = ("name", "description", "when", "set", "refer", "acknowledge", "stop")
DEFAULT_KEYS = ("refer", "acknowledge")


@dataclass
class _Found:
    """What has been read so far, across all files of the folder."""

    problems: list[Problem] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    services: Services = field(default_factory=Services)
    rules: list[Rule] = field(default_factory=list)
    rule_places: dict[str, str] = field(default_factory=dict)
    default: Default | None = None
    default_place: str | None = None


def load_ruleset(rules_dir: Path) -> RuleSet:
    """Load and check every file of `rules_dir`; raise RuleError listing all problems found."""
    found = _Found()
    entries = _list_folder(rules_dir, found.problems)
    if entries is not None:
        found.services = load_services(rules_dir / SERVICES_FILE, found.problems)
        found.files.append(rules_dir / SERVICES_FILE)
        routing = _routing_files(rules_dir, entries, found.problems)
        for path in routing:
            _load_routing(path, found)
        if routing:
            _require_default(rules_dir, found)
    if found.problems:
        raise RuleError(_by_file_and_line(found.problems))
    return RuleSet(found.services.by_id, found.rules, found.default, found.files)


def _list_folder(rules_dir: Path, problems: list[Problem]) -> list[Path] | None:
    """The folder's visible entries by name; None (with a problem) if it cannot be listed."""
    if not rules_dir.is_dir():
        what = "is not a folder" if rules_dir.exists() else "does not exist"
        problems.append(Problem(rules_dir, 0, f"the rules folder {what}", folder=True))
        return None
    try:
        entries = sorted(rules_dir.iterdir(), key=lambda path: path.name)
    except OSError as error:
        message = f"cannot list the rules folder: {error.strerror}"
        problems.append(Problem(rules_dir, 0, message, folder=True))
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
        problems.append(Problem(rules_dir, 0, message, folder=True))
    return routing


def _by_file_and_line(problems: list[Problem]) -> list[Problem]:
    """Problems grouped by file (in the order files were read), then by line."""
    rank: dict[Path, int] = {}
    for problem in problems:
        rank.setdefault(problem.file, len(rank))
    return sorted(problems, key=lambda problem: (rank[problem.file], problem.line))


# --- routing files ----------------------------------------------------------------------


def _load_routing(path: Path, found: _Found) -> None:
    found.files.append(path)
    source = Source(path, found.problems)
    fields = read_file_fields(source, ROUTING_KEYS)
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
    (when, when_lines), updates = _conditions(fields), _updates(fields)
    refer = _refer(fields, found)
    acknowledge = _acknowledge(fields)
    stop = fields.flag("stop")
    _require_action(fields, stop)
    if name is None or len(source.problems) > before:
        return
    rule = Rule(
        name=name,
        file=source.file,
        line=line_of(node),
        description=description,
        when=when,
        updates=updates,
        refer=refer,
        acknowledge=acknowledge,
        stop=bool(stop),
        lines=fields.lines(),
        when_lines=when_lines,
    )
    found.rules.append(rule)


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


def _conditions(fields: Fields) -> tuple[dict[str, object], dict[str, int]]:
    """The rule's conditions (key -> value) and the line of each value."""
    node = fields.values.get("when")
    if node is None or is_null(node):
        return {}, {}
    pairs = mapping_pairs(fields.source, node, fields.label("when"))
    if pairs is None:
        return {}, {}
    known = sorted(CONDITIONS)
    given = read_fields(fields.source, node, pairs, known, fields.owner, kind="condition")
    conditions: dict[str, object] = {}
    for key, value_node in given.values.items():
        label = f"condition '{key}' in {fields.owner}"
        readable, value = checked_value(fields.source, value_node, label)
        error = CONDITIONS[key].validate(value) if readable else None
        if error is not None:
            fields.source.report(value_node, f"{label} {error}")
        elif readable:
            conditions[key] = tuple(value) if isinstance(value, list) else value
    return conditions, given.lines()


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
        if key == "category" and isinstance(value, str):
            value = _category(settings, value)
        if value is not None:
            updates[key] = value
    return updates


def _category(settings: Fields, written: str) -> str | None:
    """The slug a `set: {category: ...}` stands for; None (reported) if it has none."""
    slug = category_slug(written)
    if not slug:
        label = settings.label("category")
        settings.report("category", f"{label} must have a letter or digit, not '{written}'")
    return slug or None


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


def _acknowledge(fields: Fields) -> str | None:
    """The acknowledgement template named (templates/NAME.txt), or "none"."""
    return fields.name("acknowledge", "a template name or none", special=NO_ACKNOWLEDGEMENT)


def _is_known_service(fields: Fields, node: Node, service_id: str, found: _Found) -> bool:
    ids = found.services.ids
    if ids is None or service_id in ids:
        return True
    known = ", ".join(sorted(ids)) or "none"
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
    acknowledge = _acknowledge(default)
    if pairs and "refer" not in default.values:
        message = (
            "no default route: the default refers to no service, so a report no rule refers "
            f"would reach nobody; add 'refer: [{_a_service(found)}]' to it"
        )
        source.report(line, message)
    found.default = Default(source.file, line, refer, acknowledge, default.lines())


def _require_default(rules_dir: Path, found: _Found) -> None:
    """A folder whose routing files set no default has no default route: refused."""
    if found.default_place is not None:
        return
    service = _a_service(found)
    message = (
        "no default route: no routing file sets 'default', so a report no rule refers would "
        f"reach nobody; add 'default: {{refer: [{service}], acknowledge: ack-default}}' "
        "to one routing file (e.g. routing.yaml)"
    )
    found.problems.append(Problem(rules_dir, 0, message, folder=True))


def _a_service(found: _Found) -> str:
    """A service id for an example in a message: the first one defined, else a placeholder."""
    return next(iter(found.services.by_id), "SERVICE-ID")
