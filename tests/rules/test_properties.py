"""Properties: the loader fails only with RuleError; evaluate never fails and stays consistent."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.report import Report
from pipeline.rules import Rule, RuleError, RuleSet, evaluate, load_ruleset
from pipeline.rules.categories import category_slug

SERVICE_IDS = ["advice-centre", "student-services"]
TEMPLATES = ["none", "ack-default", "ack-urgent"]
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def load_texts(files: dict[str, str | bytes]) -> RuleSet:
    """load_ruleset on a fresh folder holding `files` (name -> text or bytes)."""
    with tempfile.TemporaryDirectory() as folder:
        for name, content in files.items():
            path = Path(folder) / name
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content, encoding="utf-8")
        return load_ruleset(Path(folder))


# --- strategies -------------------------------------------------------------------------

YAML_PIECES = [
    "services:",
    "rules:",
    "default:",
    "\n",
    "\n  - ",
    "\n    ",
    "- ",
    ": ",
    "name: ",
    "when: ",
    "set: ",
    "refer: ",
    "acknowledge: ",
    "stop: ",
    "id: ",
    "email: ",
    "fingerprint: ",
    "template: ",
    "category",
    "any_keyword",
    "anonymous",
    "source",
    "to_address",
    "form",
    "{",
    "}",
    "[",
    "]",
    ", ",
    "&a ",
    "*a",
    "*b",
    "!!binary ",
    "!!python/object:os.system ",
    "!custom ",
    "2024-13-45",
    "2024-01-01",
    "~",
    "null",
    "yes",
    "no",
    "12",
    "1e999",
    "'",
    '"',
    "# c",
    "\t",
    "|",
    ">",
    "? ",
    "<<: ",
    "---\n",
    "...\n",
    "%YAML 1.1\n",
    "\x00",
    "\ufeff",
    "é",
    "advice-centre",
    "none",
    "0123456789ABCDEF0123456789ABCDEF01234567",
    "a@b",
]
yamlish_text = st.lists(st.sampled_from(YAML_PIECES), max_size=40).map("".join)

KEYS = [
    "services",
    "rules",
    "default",
    "name",
    "when",
    "set",
    "refer",
    "acknowledge",
    "stop",
    "id",
    "email",
    "fingerprint",
    "template",
    "description",
    "category",
    "urgent",
    "reporter_role",
    "any_keyword",
    "anonymous",
    "source",
    "to_address",
    "form",
]
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.sampled_from(SERVICE_IDS + TEMPLATES + ["email", "form", "a@b.org"])
    | st.dates()
)
nested_data = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=25,
)
# Data shaped like a rules file, with anything at the leaves: reaches the deeper checks.
shaped_items = st.lists(st.dictionaries(st.sampled_from(KEYS), nested_data, max_size=6), max_size=4)
shaped_data = st.fixed_dictionaries(
    {},
    optional={
        "services": shaped_items | nested_data,
        "rules": shaped_items | nested_data,
        "default": st.dictionaries(st.sampled_from(KEYS), nested_data, max_size=3),
    },
)
dumped_data = (nested_data | shaped_data).map(lambda data: yaml.safe_dump(data, allow_unicode=True))
any_file: st.SearchStrategy[str | bytes] = (
    yamlish_text | dumped_data | st.text(max_size=200) | st.binary(max_size=100)
)

words = st.text(min_size=1, max_size=12).filter(str.strip)
word_or_words = words | st.lists(words, min_size=1, max_size=3)
category_words = words.filter(category_slug)  # a category needs a letter or digit
conditions = st.fixed_dictionaries(
    {},
    optional={
        "category": category_words
        | st.lists(category_words, min_size=1, max_size=3)
        | st.sampled_from(["hate-crime", "Sexual Violence"]),
        "any_keyword": word_or_words | st.sampled_from(["racist", "in danger"]),
        "anonymous": st.booleans(),
        "source": st.sampled_from(["email", "form", ["email", "form"]]),
        "reporter_role": word_or_words,
        "to_address": st.sampled_from(["report@example.ac.uk", ["a@b.org", "c@d.org"]]),
        "form": word_or_words,
    },
)
updates = st.fixed_dictionaries(
    {},
    optional={"category": category_words, "urgent": st.booleans(), "reporter_role": words},
).filter(bool)
actions = st.fixed_dictionaries(
    {},
    optional={
        "set": updates,
        "refer": st.lists(st.sampled_from(SERVICE_IDS), min_size=1, max_size=3),
        "acknowledge": st.sampled_from(TEMPLATES),
        "stop": st.just(True),
    },
).filter(bool)
rule_bodies = st.tuples(conditions, actions).map(lambda pair: {"when": pair[0], **pair[1]})
routing_data = st.fixed_dictionaries(
    {
        "rules": st.lists(rule_bodies, max_size=6),
        "default": st.fixed_dictionaries(  # a rule set without a default route is refused
            {"refer": st.lists(st.sampled_from(SERVICE_IDS), min_size=1, max_size=2)},
            optional={"acknowledge": st.sampled_from(TEMPLATES)},
        ),
    },
)

reports = st.builds(
    Report,
    source=st.sampled_from(["email", "form"]) | st.text(max_size=8),
    subject=st.text(max_size=60),
    body=st.text(max_size=300),
    received_at=st.just(datetime(2024, 5, 1, tzinfo=UTC)),
    anonymous=st.booleans(),
    to_addresses=st.lists(st.sampled_from(["report@example.ac.uk", "a@b.org"]) | st.text()),
    category=st.none() | st.sampled_from(["hate-crime", "Sexual-Violence"]) | words,
    reporter_role=st.none() | words,
    urgent=st.booleans(),
    form_id=st.none() | words,
)


def named_rules(data: Mapping[str, object]) -> dict[str, object]:
    """Give the generated rules unique names, in order."""
    rules = data["rules"]
    assert isinstance(rules, list)
    return {**data, "rules": [{"name": f"rule-{i}", **rule} for i, rule in enumerate(rules)]}


# --- the loader -------------------------------------------------------------------------


@FAST
@given(services=any_file, routing=any_file)
def test_loader_fails_only_with_rule_error(services: str | bytes, routing: str | bytes) -> None:
    try:
        ruleset = load_texts({"services.yaml": services, "routing.yaml": routing})
    except RuleError as error:
        assert error.problems
        assert all(problem.line >= 0 and problem.message for problem in error.problems)
        assert all(str(problem).count(":") >= 2 for problem in error.problems)
    else:
        assert isinstance(ruleset, RuleSet)


@FAST
@given(routing=any_file)
def test_loader_with_good_services_fails_only_with_rule_error(
    example_files: dict[str, str], routing: str | bytes
) -> None:
    try:
        load_texts({"services.yaml": example_files["services.yaml"], "routing.yaml": routing})
    except RuleError as error:
        assert all(
            problem.file.name == "routing.yaml" or problem.folder for problem in error.problems
        )


# --- evaluate ---------------------------------------------------------------------------


@FAST
@given(data=routing_data.map(named_rules), report=reports)
def test_evaluate_never_fails_and_refers_each_known_service_once(
    example_files: dict[str, str], data: dict[str, object], report: Report
) -> None:
    routing = yaml.safe_dump(data, allow_unicode=True)
    ruleset = load_texts({"services.yaml": example_files["services.yaml"], "routing.yaml": routing})

    decision = evaluate(ruleset, report)

    assert len(decision.refer) == len(set(decision.refer))
    assert set(decision.refer) <= set(ruleset.services)
    names = [rule.name for rule in ruleset.rules]
    assert decision.rules == [name for name in names if name in decision.rules]
    assert decision.acknowledge in {None, "ack-default", "ack-urgent"}
    assert decision.refer, "the default route refers every report somewhere"
    assert set(decision.to_json_dict()) >= {
        "category",
        "anonymous",
        "urgent",
        "refer",
        "acknowledge",
        "rules",
    }


@FAST
@given(report=reports)
def test_example_rules_never_fail(example_ruleset: RuleSet, report: Report) -> None:
    decision = evaluate(example_ruleset, report)

    assert decision.refer, "the example default refers every report somewhere"
    assert len(decision.refer) == len(set(decision.refer))
    assert decision.anonymous == report.anonymous
    assert (decision.acknowledge is None) == ("anonymous-no-ack" in decision.rules)


@FAST
@given(
    keyword=st.text(min_size=1, max_size=20).filter(str.strip),
    before=st.text(max_size=40),
    after=st.text(max_size=40),
    report=reports,
)
def test_a_keyword_surrounded_by_spaces_always_matches(
    keyword: str, before: str, after: str, report: Report
) -> None:
    rule = Rule("k", Path("routing.yaml"), 1, when={"any_keyword": (keyword,)}, stop=True)
    ruleset = RuleSet(services={}, rules=[rule])
    report.body = f"{before} {keyword} {after}"

    assert evaluate(ruleset, report).rules == ["k"]
