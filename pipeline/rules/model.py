"""The values the routing rules are made of.

In: nothing (plain values built by `loader.py`). Out: `Service`, `Rule`, `Default` and the
`RuleSet` that holds them, plus `Problem` and `RuleError`, the way every mistake in a rules
folder is reported (`file:line: message`, one per line).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

# The referral template a service gets when it names none (templates/referral-default.txt).
DEFAULT_REFERRAL_TEMPLATE = "referral-default"
# What `acknowledge:` says for "send no acknowledgement".
NO_ACKNOWLEDGEMENT = "none"


@dataclass(frozen=True)
class Problem:
    """One mistake in a rules file, at a 1-based line (0 when it concerns a whole file).

    `folder`: it concerns the whole rules folder (`rules/: message`). `warning`: the rules can
    be used, but probably not as meant (`file:line: warning: message`).
    """

    file: Path
    line: int
    message: str
    warning: bool = False
    folder: bool = False

    def __str__(self) -> str:
        place = f"{self.file}/" if self.folder else f"{self.file}:{self.line}"
        return f"{place}: {'warning: ' if self.warning else ''}{self.message}"


class RuleError(Exception):
    """The rules folder cannot be used; `problems` lists every mistake found in it."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(problem) for problem in self.problems)


@dataclass(frozen=True)
class Service:
    """A service reports can be referred to. `template` None means "referral-default"."""

    id: str
    name: str
    email: str
    fingerprint: str  # 40 upper-case hex digits, no spaces
    template: str | None = None
    file: Path = field(default=Path(), compare=False)
    line: int = field(default=0, compare=False)
    # The line of each key's value, for messages about that value.
    lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)

    @property
    def template_name(self) -> str:
        """The referral template this service's referrals are written with."""
        return self.template or DEFAULT_REFERRAL_TEMPLATE


@dataclass(frozen=True)
class Rule:
    """One routing rule: when all its conditions hold, its actions apply."""

    name: str
    file: Path
    line: int
    description: str | None = None
    # Condition key -> its (validated) YAML value; empty means "always".
    when: Mapping[str, object] = field(default_factory=dict)
    # The `set:` mapping: fact name -> new value.
    updates: Mapping[str, object] = field(default_factory=dict)
    refer: tuple[str, ...] = ()
    # None: this rule says nothing about acknowledging; "none": send no acknowledgement.
    acknowledge: str | None = None
    stop: bool = False
    lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)
    # The line of each condition's value in `when:`.
    when_lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)

    def line_of(self, key: str) -> int:
        """The line of a key's value (`when.category` for a condition), else the rule's."""
        if key.startswith("when."):
            return self.when_lines.get(key[len("when.") :], self.lines.get("when", self.line))
        return self.lines.get(key, self.line)


@dataclass(frozen=True)
class Default:
    """What applies when no matching rule referred, or none set `acknowledge`."""

    file: Path
    line: int
    refer: tuple[str, ...] = ()
    acknowledge: str | None = None
    lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)


class TemplateRef(NamedTuple):
    """One place a template is named: by a rule, the default or a service."""

    name: str
    file: Path
    line: int
    owner: str  # "rule 'urgent'", "the default", "service 'advice-centre'"
    kind: str  # "acknowledgement" or "referral"


@dataclass
class RuleSet:
    """A loaded rules folder: services by id (file order), rules in run order, the default."""

    services: dict[str, Service]
    rules: list[Rule]
    default: Default | None = None
    files: list[Path] = field(default_factory=list)

    def template_refs(self) -> list[TemplateRef]:
        """Every template the rules, the default and the services name, with where they do."""
        refs = [_ack_ref(rule.acknowledge, rule, f"rule '{rule.name}'") for rule in self.rules]
        if self.default is not None:
            refs.append(_ack_ref(self.default.acknowledge, self.default, "the default"))
        refs.extend(_referral_ref(service) for service in self.services.values())
        return [ref for ref in refs if ref is not None]

    def template_names(self) -> set[str]:
        """The names of all templates this rule set needs (templates/NAME.txt)."""
        return {ref.name for ref in self.template_refs()}


def _ack_ref(name: str | None, where: Rule | Default, owner: str) -> TemplateRef | None:
    if name is None or name == NO_ACKNOWLEDGEMENT:
        return None
    line = where.lines.get("acknowledge", where.line)
    return TemplateRef(name, where.file, line, owner, "acknowledgement")


def _referral_ref(service: Service) -> TemplateRef:
    line = service.lines.get("template", service.line)
    owner = f"service '{service.id}'"
    return TemplateRef(service.template_name, service.file, line, owner, "referral")
