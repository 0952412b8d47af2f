"""Warnings about a rule set that loads but probably does not route as its author meant.

In: a loaded `RuleSet` and whether any `[[forms]]` entry maps a `category` column. Out:
`Problem`s marked `warning`, at the line each concerns, in file and line order:

- a rule after a catch-all rule (no `when`) with `stop: true`: it can never fire;
- a rule with the same conditions as an earlier one, and a condition listing a value twice;
- a category a condition asks for that nothing produces: no earlier rule sets it and no form
  maps a `category` column (an email report has no category of its own);
- a service that no rule, nor the default, refers to.

`intake check-rules` prints them and still exits 0 (`--strict` makes them errors).
"""

from __future__ import annotations

from collections.abc import Iterator

from pipeline.rules.categories import category_slug
from pipeline.rules.conditions import as_words
from pipeline.rules.model import Problem, Rule, RuleSet

Canonical = frozenset[tuple[str, object]]


def lint(ruleset: RuleSet, *, forms_give_categories: bool) -> list[Problem]:
    """Every warning for `ruleset`, by file (in the order they were read) and line."""
    rules = ruleset.rules
    found = [
        *_unreachable(rules),
        *_duplicate_conditions(rules),
        *([] if forms_give_categories else _unproduced_categories(rules)),
        *_unused_services(ruleset),
    ]
    rank = {path: index for index, path in enumerate(ruleset.files)}
    return sorted(found, key=lambda problem: (rank.get(problem.file, len(rank)), problem.line))


def _warning(rule: Rule, key: str, message: str) -> Problem:
    return Problem(rule.file, rule.line_of(key), message, warning=True)


def _place(rule: Rule) -> str:
    return f"{rule.file.name}:{rule.line}"


def _unreachable(rules: list[Rule]) -> Iterator[Problem]:
    catch_all: Rule | None = None
    for rule in rules:
        if catch_all is not None:
            message = (
                f"rule '{rule.name}' can never fire: rule '{catch_all.name}' "
                f"({_place(catch_all)}) has no 'when', so it matches every report, and stops"
            )
            yield _warning(rule, "name", message)
        elif rule.stop and not rule.when:
            catch_all = rule


def _duplicate_conditions(rules: list[Rule]) -> Iterator[Problem]:
    first: dict[Canonical, Rule] = {}
    for rule in rules:
        yield from _repeated_values(rule)
        if not rule.when:
            continue
        canonical = frozenset((key, _canonical(key, value)) for key, value in rule.when.items())
        earlier = first.setdefault(canonical, rule)
        if earlier is not rule:
            message = (
                f"rule '{rule.name}' has the same conditions as rule '{earlier.name}' "
                f"({_place(earlier)}); merge the two, or make their conditions differ"
            )
            yield _warning(rule, "when", message)


def _repeated_values(rule: Rule) -> Iterator[Problem]:
    for key, value in rule.when.items():
        seen: set[str] = set()
        for word in as_words(value):
            folded = _fold(key, word)
            if folded in seen:
                message = f"condition '{key}' in rule '{rule.name}' lists '{word}' twice"
                yield _warning(rule, f"when.{key}", message)
            seen.add(folded)


def _canonical(key: str, value: object) -> object:
    """A condition's value as the engine compares it: a set of folded words, or as it is."""
    if isinstance(value, bool):
        return value
    return frozenset(_fold(key, word) for word in as_words(value))


def _fold(key: str, word: str) -> str:
    if key == "category":
        return category_slug(word)
    return " ".join(word.casefold().split())


def _unproduced_categories(rules: list[Rule]) -> Iterator[Problem]:
    produced: set[str] = set()
    for rule in rules:
        for word in as_words(rule.when.get("category")):
            slug = category_slug(word)
            if slug not in produced:
                message = (
                    f"rule '{rule.name}' asks for category '{slug}', which nothing produces: "
                    "no earlier rule sets it and no [[forms]] entry maps a 'category' column"
                )
                yield _warning(rule, "when.category", message)
        category = rule.updates.get("category")
        if isinstance(category, str):
            produced.add(category_slug(category))


def _unused_services(ruleset: RuleSet) -> Iterator[Problem]:
    referred = {service for rule in ruleset.rules for service in rule.refer}
    if ruleset.default is not None:
        referred.update(ruleset.default.refer)
    for service in ruleset.services.values():
        if service.id not in referred:
            message = (
                f"service '{service.id}' is never referred to: "
                "no rule, nor the default, lists it in 'refer'"
            )
            yield Problem(service.file, service.line, message, warning=True)
