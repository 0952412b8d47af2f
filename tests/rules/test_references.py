"""check_references: templates and public keys the rules name must exist."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pipeline.rules import check_references, load_ruleset

WriteRules = Callable[..., Path]  # the write_rules fixture (see conftest.py)

ADVICE_KEY = "0123456789ABCDEF0123456789ABCDEF01234567"
STUDENT_KEY = "89ABCDEF0123456789ABCDEF0123456789ABCDEF"
ROUTING = """\
rules:
  - name: urgent
    when: {any_keyword: [help]}
    acknowledge: ack-urgent
  - name: quiet
    when: {anonymous: true}
    acknowledge: none
default:
  refer: [advice-centre]
  acknowledge: ack-default
"""
ALL_TEMPLATES = {"ack-urgent", "ack-default", "referral-default"}


def test_nothing_missing(write_rules: WriteRules) -> None:
    ruleset = load_ruleset(write_rules(routing=ROUTING))

    assert check_references(ruleset, ALL_TEMPLATES, {ADVICE_KEY, STUDENT_KEY}) == []


def test_missing_templates_are_reported_where_they_are_named(write_rules: WriteRules) -> None:
    folder = write_rules(routing=ROUTING)
    ruleset = load_ruleset(folder)

    found = check_references(ruleset, set(), {ADVICE_KEY, STUDENT_KEY})

    assert [str(problem) for problem in found] == [
        f"{folder / 'routing.yaml'}:4: rule 'urgent' names acknowledgement template "
        "'ack-urgent', but templates/ has no ack-urgent.txt",
        f"{folder / 'routing.yaml'}:10: the default names acknowledgement template "
        "'ack-default', but templates/ has no ack-default.txt",
        f"{folder / 'services.yaml'}:6: service 'advice-centre' names referral template "
        "'referral-default', but templates/ has no referral-default.txt",
        f"{folder / 'services.yaml'}:7: service 'student-services' names referral template "
        "'referral-default', but templates/ has no referral-default.txt",
    ]


def test_missing_public_key(write_rules: WriteRules) -> None:
    ruleset = load_ruleset(write_rules(routing=ROUTING))

    found = check_references(ruleset, ALL_TEMPLATES, {ADVICE_KEY})

    assert [(problem.file.name, problem.line, problem.message) for problem in found] == [
        (
            "services.yaml",
            10,
            f"service 'student-services' has no public key with fingerprint {STUDENT_KEY} "
            "in the keys folder",
        )
    ]


def test_key_fingerprints_may_be_spaced_and_lower_case(write_rules: WriteRules) -> None:
    ruleset = load_ruleset(write_rules(routing=ROUTING))
    spaced = {
        " ".join(key[i : i + 4] for i in range(0, 40, 4)).lower()
        for key in (ADVICE_KEY, STUDENT_KEY)
    }

    assert check_references(ruleset, ALL_TEMPLATES, spaced) == []
