"""Routing rules: which services a report is referred to and how it is acknowledged.

In: a rules folder (`services.yaml` plus routing `*.yaml` files) and reports. Out: a checked
`RuleSet` (`load_ruleset`, raising `RuleError` with every `file:line: message`), the problems
of its template and key references (`check_references`) and a `Decision` per report
(`evaluate`). Conditions live in `conditions.py`, one registered function each.
"""

from pipeline.rules.engine import Decision, evaluate
from pipeline.rules.loader import load_ruleset
from pipeline.rules.model import Default, Problem, Rule, RuleError, RuleSet, Service, TemplateRef
from pipeline.rules.references import check_references

__all__ = [
    "Decision",
    "Default",
    "Problem",
    "Rule",
    "RuleError",
    "RuleSet",
    "Service",
    "TemplateRef",
    "check_references",
    "evaluate",
    "load_ruleset",
]
