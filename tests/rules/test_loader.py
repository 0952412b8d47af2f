"""load_ruleset: a good folder loads; every kind of mistake is a `file:line: message`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.rules import Problem, RuleError, load_ruleset

WriteRules = Callable[..., Path]  # the write_rules fixture (see conftest.py)
Found = list[tuple[str, int, str]]


def problems(folder: Path) -> Found:
    """The (file name, line, message) of every problem load_ruleset reports for `folder`,
    but for the folder's "no default route" (tests/rules/test_checks.py covers it): most
    examples here leave the default out to show one other problem."""
    with pytest.raises(RuleError) as caught:
        load_ruleset(folder)
    found = [problem for problem in caught.value.problems if not _no_default_route(problem)]
    return [(problem.file.name, problem.line, problem.message) for problem in found]


def _no_default_route(problem: Problem) -> bool:
    return problem.folder and problem.message.startswith("no default route: ")


def one_problem(folder: Path) -> tuple[str, int, str]:
    found = problems(folder)
    assert len(found) == 1, found
    return found[0]


# --- a good folder ----------------------------------------------------------------------


def test_example_folder_loads(write_rules: WriteRules) -> None:
    ruleset = load_ruleset(write_rules())

    assert list(ruleset.services) == ["advice-centre", "student-services"]
    assert [rule.name for rule in ruleset.rules] == [
        "hate-crime-keywords",
        "sexual-violence",
        "urgent",
        "anonymous-no-ack",
    ]
    assert ruleset.default is not None
    assert ruleset.default.refer == ("advice-centre",)
    assert ruleset.default.acknowledge == "ack-default"


def test_services_are_normalised(write_rules: WriteRules) -> None:
    ruleset = load_ruleset(write_rules())
    advice, student = ruleset.services.values()

    assert advice.template == "referral-default"
    assert student.template is None
    assert student.template_name == "referral-default"
    assert student.fingerprint == "89ABCDEF0123456789ABCDEF0123456789ABCDEF"
    assert (student.file.name, student.line, student.lines["fingerprint"]) == (
        "services.yaml",
        7,
        10,
    )


def test_rules_keep_their_parts_and_lines(write_rules: WriteRules) -> None:
    ruleset = load_ruleset(write_rules())
    hate, sexual, urgent, anonymous = ruleset.rules

    assert hate.when == {"any_keyword": ("racist", "homophobic", "hate crime")}
    assert hate.updates == {"category": "hate-crime"}
    assert sexual.refer == ("advice-centre", "student-services")
    assert urgent.updates == {"urgent": True}
    assert anonymous.acknowledge == "none"
    assert [rule.line for rule in ruleset.rules] == [3, 6, 9, 13]
    assert [rule.file.name for rule in ruleset.rules] == ["routing.yaml"] * 4


def test_rules_run_in_file_name_order(write_rules: WriteRules) -> None:
    later = "rules: [{name: later, refer: [advice-centre]}]\ndefault: {refer: [advice-centre]}\n"
    earlier = "rules: [{name: earlier, stop: true}]\n"
    folder = write_rules(routing=None, **{"20-later": later, "10-earlier": earlier})

    ruleset = load_ruleset(folder)

    assert [rule.name for rule in ruleset.rules] == ["earlier", "later"]
    assert [path.name for path in ruleset.files] == [
        "services.yaml",
        "10-earlier.yaml",
        "20-later.yaml",
    ]


def test_fingerprint_of_only_digits_stays_text(write_rules: WriteRules) -> None:
    services = """\
    services:
      - id: a
        name: A
        email: a@example.org
        fingerprint: 0123456789012345678901234567890123456789
    """
    routing = "default: {refer: [a]}\n"

    ruleset = load_ruleset(write_rules(routing=routing, services=services))

    assert ruleset.services["a"].fingerprint == "0123456789012345678901234567890123456789"


def test_when_may_be_absent_or_empty(write_rules: WriteRules) -> None:
    routing = """\
    rules:
      - {name: absent, acknowledge: thanks}
      - {name: empty, when: {}, acknowledge: thanks}
      - name: null-when
        when:
        acknowledge: thanks
    default: {refer: [advice-centre]}
    """
    ruleset = load_ruleset(write_rules(routing=routing))

    assert [dict(rule.when) for rule in ruleset.rules] == [{}, {}, {}]


def test_template_names_lists_what_the_rules_need(write_rules: WriteRules) -> None:
    ruleset = load_ruleset(write_rules())

    assert ruleset.template_names() == {"ack-default", "referral-default"}


# --- how problems read ------------------------------------------------------------------


def test_problem_reads_as_file_line_message() -> None:
    problem = Problem(Path("rules/routing.yaml"), 7, "something is wrong")

    assert str(problem) == "rules/routing.yaml:7: something is wrong"


def test_rule_error_lists_problems_one_per_line(write_rules: WriteRules) -> None:
    routing = (
        "rules:\n  - name: a\n    stop: maybe\n  - {name: b}\ndefault: {refer: [advice-centre]}\n"
    )
    folder = write_rules(routing=routing)

    with pytest.raises(RuleError) as caught:
        load_ruleset(folder)

    path = folder / "routing.yaml"
    assert str(caught.value) == (
        f"{path}:3: 'stop' in rule 'a' must be true or false, not the text 'maybe'\n"
        f"{path}:4: rule 'b' does nothing; "
        "give it at least one of 'set', 'refer', 'acknowledge' or 'stop: true'"
    )


# --- YAML and file-level problems -------------------------------------------------------


def test_yaml_syntax_error_gives_line_of_mark(write_rules: WriteRules) -> None:
    routing = """\
    rules:
      - name: a
        when: {category: [a, b}
        refer: [advice-centre]
    """
    assert one_problem(write_rules(routing=routing)) == (
        "routing.yaml",
        3,
        "this is not valid YAML at column 27: expected ',' or ']', but got '}' "
        "(while parsing a flow sequence)",
    )


def test_top_level_must_be_a_mapping(write_rules: WriteRules) -> None:
    assert one_problem(write_rules(routing="- name: a\n  stop: true\n")) == (
        "routing.yaml",
        1,
        "the top level of the file must be a mapping (key: value), not a list",
    )


def test_empty_file(write_rules: WriteRules) -> None:
    assert one_problem(write_rules(routing="# nothing yet\n")) == (
        "routing.yaml",
        1,
        "the file is empty (or holds only comments)",
    )


def test_file_that_is_not_utf8(write_rules: WriteRules) -> None:
    folder = write_rules()
    (folder / "routing.yaml").write_bytes(b"rules:\n  - name: caf\xe9\n")

    assert one_problem(folder) == ("routing.yaml", 2, "the file is not UTF-8 text (byte 0xe9)")


def test_missing_services_file(write_rules: WriteRules) -> None:
    folder = write_rules(services=None)

    with pytest.raises(RuleError) as caught:
        load_ruleset(folder)

    assert [str(problem) for problem in caught.value.problems] == [
        f"{folder / 'services.yaml'}:0: "
        "services.yaml is missing; it must list the services reports are referred to"
    ]


def test_empty_folder(tmp_path: Path) -> None:
    assert problems(tmp_path) == [
        (
            "services.yaml",
            0,
            "services.yaml is missing; it must list the services reports are referred to",
        ),
        (
            tmp_path.name,
            0,
            "there are no routing files (*.yaml besides services.yaml), "
            "so no report would be referred or acknowledged",
        ),
    ]


def test_missing_folder(tmp_path: Path) -> None:
    assert problems(tmp_path / "nowhere") == [("nowhere", 0, "the rules folder does not exist")]


def test_yml_file_is_not_silently_ignored(write_rules: WriteRules) -> None:
    folder = write_rules()
    (folder / "extra.yml").write_text("rules: []\n")

    assert one_problem(folder) == (
        "extra.yml",
        0,
        "routing files must end in .yaml; rename this one to extra.yaml",
    )


# --- unknown keys and wrong types -------------------------------------------------------


def test_unknown_top_level_key(write_rules: WriteRules) -> None:
    assert one_problem(write_rules(routing="default: {refer: [advice-centre]}\nrulse: []\n")) == (
        "routing.yaml",
        2,
        "unknown key 'rulse' in this file; allowed keys are: rules, default",
    )


def test_services_file_holds_only_services(write_rules: WriteRules) -> None:
    folder = write_rules(services="services: []\nrules: []\n", routing="default: {}\n")

    assert problems(folder) == [
        ("services.yaml", 2, "unknown key 'rules' in this file; allowed keys are: services"),
        ("routing.yaml", 1, "the default is empty; give it 'refer', 'acknowledge' or both"),
    ]


def test_unknown_rule_key_lists_allowed_keys(write_rules: WriteRules) -> None:
    routing = """\
    rules:
      - name: a
        refer: [advice-centre]
        refr: [student-services]
    """
    assert one_problem(write_rules(routing=routing)) == (
        "routing.yaml",
        4,
        "unknown key 'refr' in rule 'a'; allowed keys are: "
        "name, description, when, set, refer, acknowledge, stop",
    )


def test_unknown_set_key(write_rules: WriteRules) -> None:
    routing = "rules:\n  - name: a\n    set: {category: x, priority: high}\n"
    assert one_problem(write_rules(routing=routing)) == (
        "routing.yaml",
        3,
        "unknown key 'priority' in 'set' in rule 'a'; "
        "allowed keys are: category, urgent, reporter_role",
    )


def test_repeated_key(write_rules: WriteRules) -> None:
    routing = "rules:\n  - name: a\n    refer: [advice-centre]\n    refer: [student-services]\n"
    assert one_problem(write_rules(routing=routing)) == (
        "routing.yaml",
        4,
        "key 'refer' appears twice in rule 'a' (first on line 3)",
    )


@pytest.mark.parametrize(
    ("rule_line", "message"),
    [
        (
            "refer: advice-centre",
            "'refer' in rule 'a' must be a list, e.g. [advice-centre], "
            "not the text 'advice-centre'",
        ),
        (
            "stop: 1",
            "'stop' in rule 'a' must be true or false, not the number 1 "
            "(put it in quotes if you mean it as text)",
        ),
        (
            "set: {urgent: very}",
            "'urgent' in 'set' in rule 'a' must be true or false, not the text 'very'",
        ),
        ("set: {category: [a, b]}", "'category' in 'set' in rule 'a' must be text, not a list"),
        ("set: [category]", "'set' in rule 'a' must be a mapping (key: value), not a list"),
        (
            "description: 42",
            "'description' in rule 'a' must be text, not the number 42 "
            "(put it in quotes if you mean it as text)",
        ),
        ("when: [anonymous]", "'when' in rule 'a' must be a mapping (key: value), not a list"),
        (
            "refer: [[advice-centre]]",
            "an entry of 'refer' in rule 'a' must be a service id, not a list",
        ),
        (
            "set: {}",
            "'set' in rule 'a' is empty; give at least one of: category, urgent, reporter_role",
        ),
        ("refer: []", "'refer' in rule 'a' lists no services"),
    ],
)
def test_wrong_types_in_a_rule(write_rules: WriteRules, rule_line: str, message: str) -> None:
    routing = f"rules:\n  - name: a\n    acknowledge: thanks\n    {rule_line}\n"

    assert one_problem(write_rules(routing=routing)) == ("routing.yaml", 4, message)


def test_acknowledge_must_be_a_string(write_rules: WriteRules) -> None:
    routing = "rules:\n  - name: a\n    acknowledge: [thanks]\n"
    assert one_problem(write_rules(routing=routing)) == (
        "routing.yaml",
        3,
        "'acknowledge' in rule 'a' must be a template name or none, not a list",
    )


def test_acknowledge_must_be_a_safe_template_name(write_rules: WriteRules) -> None:
    routing = "default: {refer: [advice-centre], acknowledge: ../secret}\n"
    assert one_problem(write_rules(routing=routing)) == (
        "routing.yaml",
        1,
        "'acknowledge' in the default must be a template name or none made of letters, "
        "digits, '.', '_' and '-', not '../secret'",
    )


def test_rule_that_is_not_a_mapping(write_rules: WriteRules) -> None:
    routing = "rules:\n  - {name: a, stop: true}\n  - just a sentence\n"
    assert one_problem(write_rules(routing=routing)) == (
        "routing.yaml",
        3,
        "rule #2 must be a mapping (key: value), not the text 'just a sentence'",
    )


# --- rules ------------------------------------------------------------------------------


def test_rule_without_name(write_rules: WriteRules) -> None:
    routing = """\
    rules:
      - name: first
        stop: true
      - description: forgot the name
        refer: [advice-centre]
    """
    assert one_problem(write_rules(routing=routing)) == (
        "routing.yaml",
        4,
        "rule #2 has no 'name'; every rule needs a name, unique in the folder",
    )


def test_duplicate_rule_names_across_files(write_rules: WriteRules) -> None:
    second = "\n\nrules:\n  - name: urgent\n    stop: true\n"
    assert one_problem(write_rules(second=second)) == (
        "second.yaml",
        4,
        "rule name 'urgent' is used twice (first at routing.yaml:9)",
    )


def test_rule_without_action(write_rules: WriteRules) -> None:
    routing = "rules:\n  - name: idle\n    when: {anonymous: true}\n    stop: false\n"
    assert one_problem(write_rules(routing=routing)) == (
        "routing.yaml",
        2,
        "rule 'idle' does nothing; "
        "give it at least one of 'set', 'refer', 'acknowledge' or 'stop: true'",
    )


def test_unknown_condition(write_rules: WriteRules) -> None:
    routing = """\
    rules:
      - name: a
        when:
          anonymous: true
          catgory: harassment
        stop: true
    """
    assert one_problem(write_rules(routing=routing)) == (
        "routing.yaml",
        5,
        "unknown condition 'catgory' in rule 'a'; allowed conditions are: "
        "anonymous, any_keyword, category, form, reporter_role, source, to_address",
    )


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        (
            "category: 3",
            "must be a word or a list of words, e.g. [first, second], not the number 3",
        ),
        (
            "category: []",
            "must be a word or a list of words, e.g. [first, second], not an empty list",
        ),
        (
            "any_keyword: [racist, '  ']",
            "must be a word or a list of words, e.g. [first, second]; one entry is the text '  '",
        ),
        ("anonymous: maybe", "must be true or false, not the text 'maybe'"),
        ("source: post", "must be one of email, form (or a list of them), not 'post'"),
        (
            "reporter_role: {staff: true}",
            "must be a word or a list of words, e.g. [first, second], not a mapping",
        ),
        ("to_address: reports", "must be an email address (with '@'), not 'reports'"),
        (
            "form: [a, [b]]",
            "must be a word or a list of words, e.g. [first, second]; one entry is a list",
        ),
    ],
)
def test_invalid_condition_values(write_rules: WriteRules, condition: str, message: str) -> None:
    routing = f"rules:\n  - name: a\n    stop: true\n    when:\n      {condition}\n"
    key = condition.split(":")[0]

    assert one_problem(write_rules(routing=routing)) == (
        "routing.yaml",
        5,
        f"condition '{key}' in rule 'a' {message}",
    )


def test_refer_to_unknown_service(write_rules: WriteRules) -> None:
    routing = """\
    rules:
      - name: a
        refer:
          - advice-centre
          - advise-centre
    default: {refer: [nobody]}
    """
    known = "services defined in services.yaml: advice-centre, student-services"
    assert problems(write_rules(routing=routing)) == [
        ("routing.yaml", 5, f"rule 'a' refers to unknown service 'advise-centre'; {known}"),
        ("routing.yaml", 6, f"the default refers to unknown service 'nobody'; {known}"),
    ]


def test_unreadable_services_file_does_not_make_every_refer_a_problem(
    write_rules: WriteRules,
) -> None:
    folder = write_rules(services="services: [\n")

    found = problems(folder)

    assert [(name, line) for name, line, _ in found] == [("services.yaml", 2)]


def test_two_defaults(write_rules: WriteRules) -> None:
    second = "rules: []\ndefault:\n  acknowledge: none\n"
    assert one_problem(write_rules(zz_more=second)) == (
        "zz_more.yaml",
        2,
        "a default is already set at routing.yaml:16; only one routing file may set 'default'",
    )


# --- services ---------------------------------------------------------------------------


def service_problems(write_rules: WriteRules, services: str) -> Found:
    return problems(write_rules(routing="rules: [{name: a, stop: true}]\n", services=services))


def test_duplicate_service_ids(write_rules: WriteRules) -> None:
    key = "0123456789ABCDEF0123456789ABCDEF01234567"
    services = f"""\
    services:
      - {{id: a, name: A, email: a@example.org, fingerprint: {key}}}
      - {{id: b, name: B, email: b@example.org, fingerprint: {key}}}
      - {{id: a, name: C, email: c@example.org, fingerprint: {key}}}
    """
    assert service_problems(write_rules, services) == [
        ("services.yaml", 4, "service id 'a' is used twice (first on line 2)")
    ]


def test_service_missing_keys(write_rules: WriteRules) -> None:
    services = """\
    services:
      - id: a
        name: A
      - name: nameless
        email: n@example.org
    """
    assert service_problems(write_rules, services) == [
        ("services.yaml", 2, "service 'a' is missing 'email', 'fingerprint'"),
        ("services.yaml", 4, "service #2 is missing 'id', 'fingerprint'"),
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "fingerprint: 0123 4567",
            "'fingerprint' in service 'a' must be 40 hexadecimal digits "
            "(spaces allowed), not '0123 4567' (8 characters)",
        ),
        (
            "fingerprint: 0123456789ABCDEF0123456789ABCDEF0123456G",
            "'fingerprint' in service 'a' "
            "must be 40 hexadecimal digits (spaces allowed), not "
            "'0123456789ABCDEF0123456789ABCDEF0123456G' (40 characters)",
        ),
        (
            "fingerprint: [ab]",
            "'fingerprint' in service 'a' must be 40 hexadecimal digits "
            "(spaces allowed), not a list",
        ),
        (
            "email: advice.example.org",
            "'email' in service 'a' must be an email address such as "
            "advice@example.ac.uk, not 'advice.example.org'",
        ),
        (
            "template: 7",
            "'template' in service 'a' must be a template name, not the number 7 "
            "(put it in quotes if you mean it as text)",
        ),
        (
            "id: advice centre",
            "'id' in service 'advice centre' must be a service id made of "
            "letters, digits, '.', '_' and '-', not 'advice centre'",
        ),
        (
            "colour: blue",
            "unknown key 'colour' in service 'a'; "
            "allowed keys are: id, name, email, fingerprint, template",
        ),
    ],
)
def test_bad_service_values(write_rules: WriteRules, line: str, message: str) -> None:
    values = {
        "id": "a",
        "name": "A",
        "email": "a@example.org",
        "fingerprint": "0123456789ABCDEF0123456789ABCDEF01234567",
    }
    values.pop(line.split(":")[0], None)
    lines = [f"{key}: {value}" for key, value in values.items()] + [line]
    services = "services:\n  - " + "\n    ".join(lines) + "\n"

    found = service_problems(write_rules, services)

    assert found == [("services.yaml", 1 + len(lines), message)]


# --- all problems at once ---------------------------------------------------------------


def test_all_problems_of_all_files_are_reported(write_rules: WriteRules) -> None:
    services = """\
    services:
      - id: advice-centre
        name: Advice
        email: advice.example
        fingerprint: 0123456789ABCDEF0123456789ABCDEF01234567
        colour: red
    """
    routing = """\
    rules:
      - name: a
        when: {anonymous: perhaps}
        refer: [advice-centre]
      - name: a
        refer: [nobody]
    """
    broken = "rules:\n  - name: b\n    when: {category: [x}\n"

    found = problems(write_rules(routing=routing, services=services, zz_broken=broken))

    assert [(name, line) for name, line, _ in found] == [  # by file, then by line
        ("services.yaml", 4),
        ("services.yaml", 6),
        ("routing.yaml", 3),
        ("routing.yaml", 5),
        ("routing.yaml", 6),
        ("zz_broken.yaml", 3),
    ]
