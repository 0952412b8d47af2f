"""Evaluating the routing rules for one report.

In: a loaded `RuleSet` and a `Report`. Out: a `Decision`: the category, whether the report is
urgent or anonymous, the services to refer it to, the acknowledgement template (None for
none) and the names of the rules that matched; with what the conditions looked at (source,
form, reporter role, the addresses the rules name) and whether each outcome came from rules
or from the default. Pure: no I/O, the report is not changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.report import Report
from pipeline.rules.conditions import as_words, matches
from pipeline.rules.facts import Facts
from pipeline.rules.model import NO_ACKNOWLEDGEMENT, Default, Rule, RuleSet

DEFAULT = "default"  # how `decided_by` names the default


@dataclass
class Decision:
    """What the rules decided for a report; printable with `to_json_dict()`."""

    category: str | None
    anonymous: bool
    urgent: bool
    refer: list[str]
    acknowledge: str | None  # a template name, or None for no acknowledgement
    rules: list[str]  # the names of the rules that matched, in order
    # As reported or as a rule set it.
    reporter_role: str | None = None
    # What else the conditions looked at; two decisions are equal by their outcome alone.
    source: str | None = field(default=None, compare=False)
    form: str | None = field(default=None, compare=False)
    # The report's addresses that a `to_address` condition names (never any other address).
    to_addresses: list[str] = field(default_factory=list, compare=False)
    # Who decided: "refer" -> the names of the rules that referred, or ["default"];
    # "acknowledge" -> the rule whose `acknowledge` applied, "default", or None.
    decided_by: dict[str, object] = field(default_factory=dict, compare=False)

    def to_json_dict(self) -> dict[str, object]:
        """The decision as a JSON-ready dict (what `route --dry-run --json` prints)."""
        return {
            "category": self.category,
            "anonymous": self.anonymous,
            "urgent": self.urgent,
            "refer": list(self.refer),
            "acknowledge": self.acknowledge,
            "rules": list(self.rules),
            "reporter_role": self.reporter_role,
            "source": self.source,
            "form": self.form,
            "to_addresses": list(self.to_addresses),
            "decided_by": dict(self.decided_by),
        }


def evaluate(ruleset: RuleSet, report: Report) -> Decision:
    """Run the rules in order over the report's facts and decide where it goes."""
    facts = Facts.from_report(report)
    matched = matching_rules(ruleset.rules, facts)
    return Decision(
        category=facts.category,
        anonymous=facts.anonymous,
        urgent=facts.urgent,
        refer=_referrals(matched, ruleset.default),
        acknowledge=_acknowledgement(matched, ruleset.default),
        rules=[rule.name for rule in matched],
        reporter_role=facts.reporter_role,
        source=facts.source,
        form=facts.form_id,
        to_addresses=_named_addresses(ruleset.rules, facts.to_addresses),
        decided_by=_deciders(matched, ruleset.default),
    )


def matching_rules(rules: list[Rule], facts: Facts) -> list[Rule]:
    """The rules that match, in order, applying each one's `set:` before the next is checked."""
    matched: list[Rule] = []
    for rule in rules:
        if not matches(rule.when, facts):
            continue
        facts.apply(rule.updates)
        matched.append(rule)
        if rule.stop:
            break
    return matched


def _referrals(matched: list[Rule], default: Default | None) -> list[str]:
    refer = [service for rule in matched for service in rule.refer]
    if not refer and default is not None:
        refer = list(default.refer)
    return list(dict.fromkeys(refer))


def _deciders(matched: list[Rule], default: Default | None) -> dict[str, object]:
    """Which rules (or the default) gave the referrals and the acknowledgement."""
    referred = [rule.name for rule in matched if rule.refer]
    if not referred and default is not None and default.refer:
        referred = [DEFAULT]
    said = [rule.name for rule in matched if rule.acknowledge is not None]
    acknowledged = said[-1] if said else None
    if acknowledged is None and default is not None and default.acknowledge is not None:
        acknowledged = DEFAULT
    return {"refer": referred, "acknowledge": acknowledged}


def _named_addresses(rules: list[Rule], addresses: tuple[str, ...]) -> list[str]:
    named = {word.casefold() for rule in rules for word in as_words(rule.when.get("to_address"))}
    return [address for address in addresses if address.casefold() in named]


def _acknowledgement(matched: list[Rule], default: Default | None) -> str | None:
    said = [rule.acknowledge for rule in matched if rule.acknowledge is not None]
    if said:
        template: str | None = said[-1]
    else:
        template = default.acknowledge if default is not None else None
    return None if template == NO_ACKNOWLEDGEMENT else template
