"""Routing rules: which services a report is referred to and how it is acknowledged.

In: a rules folder (`services.yaml` plus routing `*.yaml` files) and reports. Out: a checked
`RuleSet` (`load_ruleset`, raising `RuleError` with every `file:line: message`), the problems
of its template and key references (`check_references`), warnings about rules that probably
do not route as meant (`lint`) and a `Decision` per report (`evaluate`). Conditions live in
`conditions.py`, one registered function each; categories compare as slugs (`category_slug`).
"""

from pipeline.rules.categories import category_slug
from pipeline.rules.checks import lint
from pipeline.rules.engine import Decision, evaluate
from pipeline.rules.loader import load_ruleset
from pipeline.rules.model import Default, Problem, Rule, RuleError, RuleSet, Service, TemplateRef
from pipeline.rules.references import check_references, missing_templates

__all__ = [
    "Decision",
    "Default",
    "Problem",
    "Rule",
    "RuleError",
    "RuleSet",
    "Service",
    "TemplateRef",
    "category_slug",
    "check_references",
    "evaluate",
    "lint",
    "load_ruleset",
    "missing_templates",
]
