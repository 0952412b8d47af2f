"""What check-rules refuses and warns about: no default route, categories compared as slugs,
rules that can never fire, repeated conditions, unused services, broken templates; and the
renderer's snapshot, which keeps the templates it was made with."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.intake.forms import known_categories
from pipeline.render import Renderer
from pipeline.render_check import check_template
from pipeline.report import Report
from pipeline.rules import Problem, RuleError, RuleSet, category_slug, evaluate, lint, load_ruleset
from pipeline.template_samples import samples, template_kinds
from tests.rules.conftest import EXAMPLE_SERVICES, new_report, write_rules_into

WriteRules = Callable[..., Path]
MakeReport = Callable[..., Report]
REPO = Path(__file__).resolve().parents[2]
DEFAULT = "default: {refer: [advice-centre]}\n"


def refused(folder: Path) -> list[str]:
    with pytest.raises(RuleError) as caught:
        load_ruleset(folder)
    return [str(problem) for problem in caught.value.problems]


def warnings(ruleset: RuleSet, forms_give_categories: bool = False) -> list[tuple[str, int, str]]:
    found = lint(ruleset, forms_give_categories=forms_give_categories)
    assert all(problem.warning for problem in found)
    return [(problem.file.name, problem.line, problem.message) for problem in found]


# --- no default route -------------------------------------------------------------------


def test_a_folder_without_default_is_refused_saying_what_to_add(write_rules: WriteRules) -> None:
    folder = write_rules(routing="rules:\n  - {name: a, when: {anonymous: true}, stop: true}\n")

    assert refused(folder) == [
        f"{folder}/: no default route: no routing file sets 'default', so a report no rule "
        "refers would reach nobody; add 'default: {refer: [advice-centre], acknowledge: "
        "ack-default}' to one routing file (e.g. routing.yaml)"
    ]


def test_a_default_without_refer_is_refused_at_its_line(write_rules: WriteRules) -> None:
    folder = write_rules(routing="rules: []\n\ndefault: {acknowledge: ack-default}\n")

    assert refused(folder) == [
        f"{folder / 'routing.yaml'}:3: no default route: the default refers to no service, so "
        "a report no rule refers would reach nobody; add 'refer: [advice-centre]' to it"
    ]


def test_no_default_is_listed_with_every_other_problem(write_rules: WriteRules) -> None:
    folder = write_rules(routing="rules:\n  - {name: a, when: {colour: red}, stop: true}\n")

    found = refused(folder)

    assert len(found) == 2
    assert found[0].startswith(f"{folder / 'routing.yaml'}:2: unknown condition 'colour'")
    assert found[1].startswith(f"{folder}/: no default route: ")


def test_a_broken_file_that_sets_the_default_is_not_also_no_default(
    write_rules: WriteRules,
) -> None:
    folder = write_rules(routing="rules: []\ndefault: {refer: [nobody]}\n")

    assert [line for line in refused(folder) if "no default route" in line] == []


# --- categories as slugs ----------------------------------------------------------------


@given(st.text(max_size=40))
def test_category_slug_is_idempotent(text: str) -> None:
    assert category_slug(category_slug(text)) == category_slug(text)


@pytest.mark.parametrize(
    ("written", "slug"),
    [
        ("Belästigung", "belästigung"),
        ("BELÄSTIGUNG", "belästigung"),
        ("騷擾", "騷擾"),
        ("हिंसा", "हिंसा"),  # vowel signs stay with their letters
        ("Aflonyddu rhywiol", "aflonyddu-rhywiol"),
        ("ＨＡＴＥ crime", "hate-crime"),  # full-width letters (NFKC)
    ],
)
def test_categories_in_any_script_keep_their_letters(written: str, slug: str) -> None:
    assert category_slug(written) == slug


@pytest.mark.parametrize("written", ["Hate Crime", "hate_crime", " HATE-CRIME ", "Hate  Crime!"])
def test_hate_crime_is_one_category_however_written(written: str) -> None:
    assert category_slug(written) == "hate-crime"


@settings(max_examples=60, deadline=None)
@given(written=st.text(min_size=1, max_size=30).filter(category_slug))
def test_a_rule_category_matches_however_a_form_or_a_report_spells_it(written: str) -> None:
    routing = {
        "rules": [{"name": "r", "when": {"category": [written]}, "stop": True}],
        "default": {"refer": ["advice-centre"]},
    }
    with tempfile.TemporaryDirectory() as folder:
        files = {"services.yaml": EXAMPLE_SERVICES, "routing.yaml": yaml.safe_dump(routing)}
        ruleset = load_ruleset(write_rules_into(Path(folder), files))

    assert evaluate(ruleset, new_report("x", category=category_slug(written))).rules == ["r"]
    assert evaluate(ruleset, new_report("x", category=written)).rules == ["r"]
    assert known_categories(ruleset) == {category_slug(written)}


def test_a_category_a_rule_sets_is_kept_as_its_slug(
    write_rules: WriteRules, make_report: MakeReport
) -> None:
    routing = (
        "rules:\n"
        "  - {name: tag, when: {any_keyword: [racist]}, set: {category: Hate Crime}}\n"
        "  - {name: route, when: {category: [hate_crime]}, refer: [student-services]}\n"
        f"{DEFAULT}"
    )
    ruleset = load_ruleset(write_rules(routing=routing))

    decision = evaluate(ruleset, make_report("a racist remark"))

    assert decision.category == "hate-crime"
    assert decision.rules == ["tag", "route"]
    assert ruleset.rules[0].updates == {"category": "hate-crime"}
    assert known_categories(ruleset) == {"hate-crime"}


def test_a_category_without_letters_is_refused(write_rules: WriteRules) -> None:
    routing = (
        f"rules:\n  - {{name: a, when: {{category: ['--']}}, set: {{category: '!'}}}}\n{DEFAULT}"
    )

    found = refused(write_rules(routing=routing))

    assert len(found) == 2
    assert (
        "condition 'category' in rule 'a' must name a category with a letter or digit" in found[0]
    )
    assert "'category' in 'set' in rule 'a' must have a letter or digit, not '!'" in found[1]


# --- warnings ---------------------------------------------------------------------------


def test_warnings_read_file_line_warning_message() -> None:
    problem = Problem(Path("rules/routing.yaml"), 4, "something is odd", warning=True)

    assert str(problem) == "rules/routing.yaml:4: warning: something is odd"


def test_rules_after_a_catch_all_stop_can_never_fire(write_rules: WriteRules) -> None:
    routing = """\
    rules:
      - {name: first, refer: [advice-centre]}
      - {name: everything, stop: true}
      - {name: late, when: {anonymous: true}, refer: [student-services]}
    default: {refer: [advice-centre]}
    """
    later = "rules:\n  - {name: later-file, acknowledge: none}\n"

    found = warnings(load_ruleset(write_rules(routing=routing, zz=later)))

    assert found == [
        (
            "routing.yaml",
            4,
            "rule 'late' can never fire: rule 'everything' (routing.yaml:3) has no 'when', "
            "so it matches every report, and stops",
        ),
        (
            "zz.yaml",
            2,
            "rule 'later-file' can never fire: rule 'everything' (routing.yaml:3) has no "
            "'when', so it matches every report, and stops",
        ),
    ]


def test_a_stop_rule_with_conditions_hides_nothing(write_rules: WriteRules) -> None:
    routing = """\
    rules:
      - {name: anonymous, when: {anonymous: true}, stop: true}
      - {name: late, refer: [student-services]}
    default: {refer: [advice-centre]}
    """
    assert warnings(load_ruleset(write_rules(routing=routing))) == []


def test_duplicate_conditions_and_repeated_values(write_rules: WriteRules) -> None:
    routing = """\
    rules:
      - name: one
        when: {category: [Hate Crime, stalking], source: email}
        refer: [advice-centre]
      - name: two
        when: {source: EMAIL, category: [stalking, hate_crime]}
        refer: [student-services]
      - name: three
        when:
          any_keyword: [help, Help]
        set: {category: stalking}
    default: {refer: [advice-centre]}
    """
    found = warnings(load_ruleset(write_rules(routing=routing)), forms_give_categories=True)

    assert found == [
        (
            "routing.yaml",
            6,
            "rule 'two' has the same conditions as rule 'one' (routing.yaml:2); "
            "merge the two, or make their conditions differ",
        ),
        ("routing.yaml", 10, "condition 'any_keyword' in rule 'three' lists 'Help' twice"),
    ]


def test_a_category_nothing_produces_is_warned_about(write_rules: WriteRules) -> None:
    routing = """\
    rules:
      - {name: early, when: {category: stalking}, refer: [student-services]}
      - {name: tag, when: {any_keyword: [stalked]}, set: {category: Stalking}}
      - {name: late, when: {category: [stalking, hate-crime]}, refer: [student-services]}
    default: {refer: [advice-centre]}
    """
    ruleset = load_ruleset(write_rules(routing=routing))
    nothing = "which nothing produces: no earlier rule sets it and no [[forms]] entry maps"

    found = warnings(ruleset)

    assert found == [
        (
            "routing.yaml",
            2,
            f"rule 'early' asks for category 'stalking', {nothing} a 'category' column",
        ),
        (
            "routing.yaml",
            4,
            f"rule 'late' asks for category 'hate-crime', {nothing} a 'category' column",
        ),
    ]
    assert warnings(ruleset, forms_give_categories=True) == []


def test_a_service_no_rule_refers_to(write_rules: WriteRules) -> None:
    routing = "rules:\n  - {name: a, when: {anonymous: true}, acknowledge: none}\n" + DEFAULT

    assert warnings(load_ruleset(write_rules(routing=routing))) == [
        (
            "services.yaml",
            7,
            "service 'student-services' is never referred to: "
            "no rule, nor the default, lists it in 'refer'",
        )
    ]


def test_the_shipped_rules_give_no_warning() -> None:
    ruleset = load_ruleset(REPO / "rules")

    assert warnings(ruleset, forms_give_categories=True) == []
    assert warnings(ruleset) == []  # every category asked for is set by an earlier rule


# --- templates --------------------------------------------------------------------------


def template_folder(tmp_path: Path, **texts: str) -> Renderer:
    folder = tmp_path / "templates"
    shutil.copytree(REPO / "templates", folder)
    for name, text in texts.items():
        (folder / f"{name}.txt").write_text(text)
    return Renderer(folder)


def test_the_shipped_templates_pass(tmp_path: Path) -> None:
    renderer = template_folder(tmp_path)
    ruleset = load_ruleset(REPO / "rules")
    kinds = template_kinds(ruleset, renderer.names)
    by_kind = samples()

    assert kinds == {
        "ack-default": {"acknowledgement"},
        "ack-too-large": {"acknowledgement"},
        "referral-default": {"referral"},
    }
    for name, used_as in kinds.items():
        assert check_template(renderer, name, [by_kind[k] for k in used_as]) == []


def test_every_undefined_name_in_a_template_is_named_with_its_line(tmp_path: Path) -> None:
    text = (
        "Subject: {{ referense }}\n\n"
        "{% if anonymous %}{{ reporter_name }}{% else %}{{ services | join(', ') }}{% endif %}\n"
        "{% for name in services %}{{ name }}{% endfor %}\n"
        "{{ urgent_level }}\n"
    )
    renderer = template_folder(tmp_path, **{"ack-default": text})
    path = renderer.path("ack-default")
    gets = "an acknowledgement template gets anonymous, reference, services, urgent"

    assert check_template(renderer, "ack-default", [samples()["acknowledgement"]]) == [
        f"{path}:1: 'referense' is undefined: {gets}",
        f"{path}:3: 'reporter_name' is undefined: {gets}",
        f"{path}:5: 'urgent_level' is undefined: {gets}",
    ]


def test_attributes_are_checked_on_branches_not_taken_and_in_loops(tmp_path: Path) -> None:
    text = (
        "{{ report.body }}\n"
        "{% if report.urgent and report.anonymous %}{{ report.bodyy }}{% endif %}\n"
        "{% for a in report.attachments %}{{ a.filenme }}{% endfor %}\n"
        "{% for k, v in report.fields.items() %}{{ k }}{% endfor %}\n"
    )
    renderer = template_folder(tmp_path, **{"referral-default": text})
    path = renderer.path("referral-default")

    found = check_template(renderer, "referral-default", [samples()["referral"]])

    assert [line.split(": ", 1)[0] for line in found] == [f"{path}:2", f"{path}:3"]
    assert "'report.bodyy' is undefined: report has anonymous," in found[0]
    assert "filenme" in found[1]


def test_every_broken_expression_line_is_named(tmp_path: Path) -> None:
    text = "Subject: {{ reference | }}\n\n{{ services | nosuchfilter }}\nfine\n{{ x + }}\n{{ y }}\n"
    renderer = template_folder(tmp_path, **{"ack-default": text})
    path = renderer.path("ack-default")

    found = check_template(renderer, "ack-default", [samples()["acknowledgement"]])

    assert [line.split(": ", 1)[0] for line in found] == [f"{path}:{n}" for n in (1, 3, 5, 6)]
    assert "No filter named 'nosuchfilter'" in found[1]
    assert "'y' is undefined" in found[3]  # the lines after a syntax error are checked too


def test_a_broken_block_is_named_once(tmp_path: Path) -> None:
    renderer = template_folder(tmp_path, **{"ack-default": "{% if anonymous %}\nhello\n"})

    found = check_template(renderer, "ack-default", [samples()["acknowledgement"]])

    assert len(found) == 1 and "Unexpected end of template" in found[0]


def test_a_template_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "ack-x.txt").write_bytes(b"fine\ncaf\xe9\n")

    found = check_template(Renderer(folder), "ack-x", [samples()["acknowledgement"]])

    assert found == [f"{folder / 'ack-x.txt'}:2: the template is not UTF-8 text"]


# --- the renderer keeps what it read --------------------------------------------------


def test_the_renderer_keeps_the_templates_it_was_made_with(tmp_path: Path) -> None:
    folder = tmp_path / "templates"
    folder.mkdir()
    template = folder / "t.txt"
    template.write_text("Subject: first\n\nversion one {{ x }}\n")
    renderer = Renderer(folder)

    template.write_text("Subject: broken\n\n{{ x }\n")
    assert renderer.render("t", {"x": 1}).body == "version one 1\n"
    template.unlink()
    assert renderer.render("t", {"x": 2}).body == "version one 2\n"
    assert renderer.names == {"t"}


# --- what a decision shows ------------------------------------------------------------


def test_a_decision_names_who_decided_and_only_the_addresses_rules_name(
    write_rules: WriteRules, make_report: MakeReport
) -> None:
    routing = (
        "rules:\n"
        "  - {name: staff, when: {to_address: [Staff@example.ac.uk]}, refer: [student-services]}\n"
        "  - {name: quiet, when: {anonymous: true}, acknowledge: none}\n"
        "default: {refer: [advice-centre], acknowledge: ack-default}\n"
    )
    ruleset = load_ruleset(write_rules(routing=routing))
    to = ["friend@example.org", "staff@example.ac.uk"]

    named = evaluate(ruleset, make_report("x", source="email", to_addresses=to))
    anonymous = evaluate(ruleset, make_report("x", anonymous=True, reporter_role="Staff"))

    assert named.to_json_dict()["decided_by"] == {"refer": ["staff"], "acknowledge": "default"}
    assert named.to_json_dict()["to_addresses"] == ["staff@example.ac.uk"]
    assert named.to_json_dict()["source"] == "email"
    assert anonymous.to_json_dict()["decided_by"] == {"refer": ["default"], "acknowledge": "quiet"}
    assert anonymous.to_json_dict()["reporter_role"] == "Staff"
