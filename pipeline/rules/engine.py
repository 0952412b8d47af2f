"""Evaluating the routing rules for one report.

In: a loaded `RuleSet` and a `Report`. Out: a `Decision`: the category, whether the report is
urgent or anonymous, the services to refer it to, the acknowledgement template (None for
none) and the names of the rules that matched. Pure: no I/O, the report is not changed.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.report import Report
from pipeline.rules.conditions import matches
from pipeline.rules.facts import Facts
from pipeline.rules.model import NO_ACKNOWLEDGEMENT, Default, Rule, RuleSet


@dataclass
class Decision:
    """What the rules decided for a report; printable with `to_json_dict()`."""

    category: str | None
    anonymous: bool
    urgent: bool
    refer: list[str]
    acknowledge: str | None  # a template name, or None for no acknowledgement
    rules: list[str]  # the names of the rules that matched, in order
    # As reported or as a rule set it; not in to_json_dict, whose shape is fixed.
    reporter_role: str | None = None

    def to_json_dict(self) -> dict[str, object]:
        """The decision as a JSON-ready dict (what `route --dry-run --json` prints)."""
        return {
            "category": self.category,
            "anonymous": self.anonymous,
            "urgent": self.urgent,
            "refer": list(self.refer),
            "acknowledge": self.acknowledge,
            "rules": list(self.rules),
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


def _acknowledgement(matched: list[Rule], default: Default | None) -> str | None:
    said = [rule.acknowledge for rule in matched if rule.acknowledge is not None]
    if said:
        template: str | None = said[-1]
    else:
        template = default.acknowledge if default is not None else None
    return None if template == NO_ACKNOWLEDGEMENT else template
