"""evaluate: the example rules route reports as their comments say; conditions one by one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.report import Report
from pipeline.rules import Decision, RuleSet, evaluate, load_ruleset

WriteRules = Callable[..., Path]  # fixtures from conftest.py
MakeReport = Callable[..., Report]


def ruleset_of(
    write_rules: WriteRules, rules: str, default: str = "default: {refer: [advice-centre]}\n"
) -> RuleSet:
    """A rule set with the example services and these rules (YAML list items, at column 2)."""
    return load_ruleset(write_rules(routing=f"rules:\n{rules}\n{default}"))


# --- the example rules ------------------------------------------------------------------


def test_sexual_violence_is_referred_to_both_services(
    example_ruleset: RuleSet, make_report: MakeReport
) -> None:
    report = make_report("Something happened at the party.", category="sexual-violence")

    decision = evaluate(example_ruleset, report)

    assert decision == Decision(
        category="sexual-violence",
        anonymous=False,
        urgent=False,
        refer=["advice-centre", "student-services"],
        acknowledge="ack-default",
        rules=["sexual-violence"],
    )


def test_category_matches_ignoring_case(example_ruleset: RuleSet, make_report: MakeReport) -> None:
    decision = evaluate(example_ruleset, make_report("...", category="Sexual-Harassment"))

    assert decision.rules == ["sexual-violence"]


def test_hate_crime_keywords_set_the_category(
    example_ruleset: RuleSet, make_report: MakeReport
) -> None:
    report = make_report("They shouted Racist! abuse at me.", subject="On the bus")

    decision = evaluate(example_ruleset, report)

    assert decision.category == "hate-crime"
    assert decision.rules == ["hate-crime-keywords"]
    assert decision.refer == ["advice-centre"]  # from the default: no rule referred


def test_urgent_sets_urgent_and_referrals_accumulate(
    example_ruleset: RuleSet, make_report: MakeReport
) -> None:
    report = make_report("I am in danger.", category="sexual-harassment")

    decision = evaluate(example_ruleset, report)

    assert decision.urgent is True
    assert decision.rules == ["sexual-violence", "urgent"]
    assert decision.refer == ["advice-centre", "student-services"]  # no duplicate


def test_anonymous_report_gets_no_acknowledgement(
    example_ruleset: RuleSet, make_report: MakeReport
) -> None:
    decision = evaluate(example_ruleset, make_report("Hello", anonymous=True))

    assert decision.acknowledge is None
    assert decision.anonymous is True
    assert decision.refer == ["advice-centre"]


def test_nothing_matches_so_the_default_applies(
    example_ruleset: RuleSet, make_report: MakeReport
) -> None:
    decision = evaluate(example_ruleset, make_report("My bike was stolen."))

    assert decision.to_json_dict() == {
        "category": None,
        "anonymous": False,
        "urgent": False,
        "refer": ["advice-centre"],
        "acknowledge": "ack-default",
        "rules": [],
        "reporter_role": None,
        "source": "form",
        "form": None,
        "to_addresses": [],
        "decided_by": {"refer": ["default"], "acknowledge": "default"},
    }


def test_evaluate_does_not_change_the_report(
    example_ruleset: RuleSet, make_report: MakeReport
) -> None:
    report = make_report("racist comments, I am in danger")

    evaluate(example_ruleset, report)

    assert (report.category, report.urgent) == (None, False)


# --- actions ----------------------------------------------------------------------------


def test_a_category_set_by_one_rule_is_seen_by_the_next(
    write_rules: WriteRules, make_report: MakeReport
) -> None:
    ruleset = ruleset_of(
        write_rules,
        "  - {name: tag, when: {any_keyword: [stalking]}, set: {category: stalking}}\n"
        "  - {name: route, when: {category: stalking}, refer: [student-services]}\n",
    )

    decision = evaluate(ruleset, make_report("This is stalking."))

    assert decision.rules == ["tag", "route"]
    assert decision.refer == ["student-services"]


def test_stop_ends_evaluation(write_rules: WriteRules, make_report: MakeReport) -> None:
    ruleset = ruleset_of(
        write_rules,
        "  - {name: first, refer: [advice-centre], stop: true}\n"
        "  - {name: second, refer: [student-services]}\n",
    )

    decision = evaluate(ruleset, make_report("anything"))

    assert decision.rules == ["first"]
    assert decision.refer == ["advice-centre"]


def test_stop_only_applies_when_its_rule_matches(
    write_rules: WriteRules, make_report: MakeReport
) -> None:
    ruleset = ruleset_of(
        write_rules,
        "  - {name: first, when: {anonymous: true}, stop: true}\n"
        "  - {name: second, refer: [student-services]}\n",
    )

    assert evaluate(ruleset, make_report("x")).rules == ["second"]
    assert evaluate(ruleset, make_report("x", anonymous=True)).rules == ["first"]


def test_last_acknowledge_wins(write_rules: WriteRules, make_report: MakeReport) -> None:
    ruleset = ruleset_of(
        write_rules,
        "  - {name: one, acknowledge: none}\n"
        "  - {name: two, acknowledge: ack-urgent}\n"
        "  - {name: three, when: {anonymous: true}, acknowledge: ack-never}\n",
        "default: {refer: [advice-centre], acknowledge: ack-default}\n",
    )

    assert evaluate(ruleset, make_report("x")).acknowledge == "ack-urgent"


def test_acknowledge_none_overrides_the_default(
    write_rules: WriteRules, make_report: MakeReport
) -> None:
    ruleset = ruleset_of(
        write_rules,
        "  - {name: quiet, when: {source: email}, acknowledge: NONE}\n",
        "default: {refer: [advice-centre], acknowledge: ack-default}\n",
    )

    assert evaluate(ruleset, make_report("x", source="email")).acknowledge is None
    assert evaluate(ruleset, make_report("x", source="form")).acknowledge == "ack-default"


def test_default_refer_applies_only_when_no_rule_referred(
    write_rules: WriteRules, make_report: MakeReport
) -> None:
    ruleset = ruleset_of(
        write_rules,
        "  - {name: staff, when: {reporter_role: staff}, refer: [student-services]}\n",
        "default: {refer: [advice-centre]}\n",
    )

    assert evaluate(ruleset, make_report("x", reporter_role="Staff")).refer == ["student-services"]
    assert evaluate(ruleset, make_report("x", reporter_role="student")).refer == ["advice-centre"]


def test_without_a_default_acknowledgement_none_is_sent(
    write_rules: WriteRules, make_report: MakeReport
) -> None:
    ruleset = ruleset_of(
        write_rules, "  - {name: urgent, when: {any_keyword: [help]}, set: {urgent: true}}\n"
    )

    decision = evaluate(ruleset, make_report("please help"))

    assert (decision.refer, decision.acknowledge, decision.urgent) == (
        ["advice-centre"],
        None,
        True,
    )


def test_conditions_in_one_when_must_all_hold(
    write_rules: WriteRules, make_report: MakeReport
) -> None:
    ruleset = ruleset_of(
        write_rules,
        "  - name: both\n"
        "    when: {source: email, to_address: [Report@Example.ac.uk]}\n"
        "    refer: [advice-centre]\n",
    )
    to = ["someone@example.ac.uk", "report@example.ac.uk"]

    assert evaluate(ruleset, make_report("x", source="email", to_addresses=to)).rules == ["both"]
    assert evaluate(ruleset, make_report("x", source="form", to_addresses=to)).rules == []
    assert evaluate(ruleset, make_report("x", source="email")).rules == []


def test_form_condition(write_rules: WriteRules, make_report: MakeReport) -> None:
    ruleset = ruleset_of(
        write_rules, "  - {name: f, when: {form: [staff-report]}, refer: [advice-centre]}\n"
    )

    assert evaluate(ruleset, make_report("x", form_id="staff-report")).rules == ["f"]
    assert evaluate(ruleset, make_report("x", form_id="student-report")).rules == []
    assert evaluate(ruleset, make_report("x")).rules == []


# --- keywords ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keyword", "body", "matches"),
    [
        ("racist", "That was Racist!", True),
        ("racist", "RACIST", True),
        ("racist", "a racistic remark", False),
        ("racist", "racists everywhere", False),
        ("racist", "antiracist group", False),
        ("racist", "racist_comment", False),
        ("hate crime", "it was a\nhate\n\tcrime, clearly", True),
        ("hate crime", "hatecrime", False),
        ("hate crime", "hate crimes", False),
        ("kill myself", "I want to KILL  MYSELF.", True),
        ("c++", "I study C++ here", True),
        ("(sic)", "he wrote (sic) on it", True),
        ("a.b", "axb", False),
    ],
)
def test_keywords_match_whole_words_and_phrases(
    write_rules: WriteRules, make_report: MakeReport, keyword: str, body: str, matches: bool
) -> None:
    rule = f"  - name: k\n    when: {{any_keyword: ['{keyword}']}}\n    stop: true\n"
    ruleset = ruleset_of(write_rules, rule)

    assert (evaluate(ruleset, make_report(body)).rules == ["k"]) is matches


def test_keywords_are_searched_in_the_subject_too(
    write_rules: WriteRules, make_report: MakeReport
) -> None:
    ruleset = ruleset_of(
        write_rules, "  - {name: k, when: {any_keyword: harassment}, stop: true}\n"
    )

    assert evaluate(ruleset, make_report("nothing here", subject="Harassment")).rules == ["k"]
