"""Checking that what the rules name exists: templates and public keys.

In: a loaded `RuleSet`, the names of the templates in templates/ (file names without `.txt`)
and the fingerprints of the public keys in the keys folder. Out: a list of `Problem`s, one
per missing template reference or key, at the line that names it; empty when all is there.
"""

from __future__ import annotations

from collections.abc import Iterable

from pipeline.rules.model import Problem, RuleSet, TemplateRef


def check_references(
    ruleset: RuleSet, template_names: set[str], key_fingerprints: set[str]
) -> list[Problem]:
    """Problems for every template or public key the rule set names but that is missing."""
    return missing_templates(ruleset, template_names) + _missing_keys(
        ruleset, _normalised(key_fingerprints)
    )


def missing_templates(ruleset: RuleSet, template_names: set[str]) -> list[Problem]:
    """A problem for every template the rule set names that is not in `template_names`."""
    return [
        _missing_template(ref) for ref in ruleset.template_refs() if ref.name not in template_names
    ]


def _missing_template(ref: TemplateRef) -> Problem:
    message = (
        f"{ref.owner} names {ref.kind} template '{ref.name}', but templates/ has no {ref.name}.txt"
    )
    return Problem(ref.file, ref.line, message)


def _missing_keys(ruleset: RuleSet, fingerprints: set[str]) -> list[Problem]:
    problems = []
    for service in ruleset.services.values():
        if service.fingerprint not in fingerprints:
            message = (
                f"service '{service.id}' has no public key with fingerprint "
                f"{service.fingerprint} in the keys folder"
            )
            line = service.lines.get("fingerprint", service.line)
            problems.append(Problem(service.file, line, message))
    return problems


def _normalised(fingerprints: Iterable[str]) -> set[str]:
    return {"".join(fingerprint.split()).upper() for fingerprint in fingerprints}
