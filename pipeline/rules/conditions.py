"""The conditions a rule's `when:` may use, one small function each, registered by name.

In: a condition's YAML value (checked once by its validator when the rules load) and the
`Facts` of a report. Out: yes or no. `CONDITIONS` maps each `when:` key to its `Condition`;
to add one, write a check decorated with `@condition("key", validate=...)` here. Neither the
loader nor the engine changes. All text comparisons ignore case; a list means "any of";
categories compare as slugs (`categories.py`: "Hate Crime" is `hate-crime`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from pipeline.rules.categories import category_slug
from pipeline.rules.facts import Facts

Validator = Callable[[object], str | None]  # an error message ("must be ..."), or None if fine
Check = Callable[[Facts, object], bool]


@dataclass(frozen=True)
class Condition:
    """A `when:` key: how to validate its value, and how to check it against the facts."""

    key: str
    validate: Validator
    check: Check
    description: str


CONDITIONS: dict[str, Condition] = {}


def condition(key: str, validate: Validator) -> Callable[[Check], Check]:
    """Register the decorated check under `key`, with `validate` for its YAML value."""

    def register(check: Check) -> Check:
        if key in CONDITIONS:
            raise ValueError(f"condition '{key}' is registered twice")
        lines = (check.__doc__ or "").strip().splitlines()
        CONDITIONS[key] = Condition(key, validate, check, lines[0] if lines else "")
        return check

    return register


def matches(when: Mapping[str, object], facts: Facts) -> bool:
    """True when every condition of a `when:` holds (an empty `when:` always holds)."""
    return all(CONDITIONS[key].check(facts, value) for key, value in when.items())


# --- validators -------------------------------------------------------------------------


def describe(value: object) -> str:
    """A YAML value as a person would name it in a message."""
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return f"the true/false value {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the text '{_shorten(value)}'"
    if isinstance(value, list | tuple):
        return "a list" if value else "an empty list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__} ({_shorten(str(value))})"


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def words(value: object) -> str | None:
    """A word or phrase, or a non-empty list of them."""
    expected = "must be a word or a list of words, e.g. [first, second]"
    if isinstance(value, str):
        return None if value.strip() else f"{expected}, not empty text"
    if not isinstance(value, list) or not value:
        return f"{expected}, not {describe(value)}"
    for item in value:
        if not isinstance(item, str) or not item.strip():
            return f"{expected}; one entry is {describe(item)}"
    return None


def flag(value: object) -> str | None:
    """true or false."""
    return None if isinstance(value, bool) else f"must be true or false, not {describe(value)}"


def categories(value: object) -> str | None:
    """A category or a list of them, each with a letter or digit (compared as slugs)."""
    error = words(value)
    if error is not None:
        return error
    for word in as_words(value):
        if not category_slug(word):
            return f"must name a category with a letter or digit, not '{_shorten(word)}'"
    return None


def one_of(*choices: str) -> Validator:
    """One of `choices`, or a non-empty list of them."""
    allowed = ", ".join(choices)

    def validate(value: object) -> str | None:
        error = words(value)
        if error is not None:
            return f"{error} (allowed: {allowed})"
        for word in as_words(value):
            if word.casefold() not in choices:
                return f"must be one of {allowed} (or a list of them), not '{_shorten(word)}'"
        return None

    return validate


def addresses(value: object) -> str | None:
    """An email address, or a non-empty list of them."""
    error = words(value)
    if error is not None:
        return error.replace("a word or a list of words", "an address or a list of addresses")
    for word in as_words(value):
        if "@" not in word:
            return f"must be an email address (with '@'), not '{_shorten(word)}'"
    return None


def as_words(value: object) -> list[str]:
    """A validated string-or-list value as a list of strings."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, Sequence):
        return [item for item in value if isinstance(item, str)]
    return []


def _folded(value: object) -> set[str]:
    return {word.casefold() for word in as_words(value)}


def _is_one_of(text: str | None, value: object) -> bool:
    return text is not None and text.casefold() in _folded(value)


# --- conditions -------------------------------------------------------------------------


@condition("category", validate=categories)
def category(facts: Facts, value: object) -> bool:
    """The category (as reported, or as set by an earlier rule) is one of these, as slugs."""
    if facts.category is None:
        return False
    wanted = {category_slug(word) for word in as_words(value)}
    return category_slug(facts.category) in wanted


@condition("any_keyword", validate=words)
def any_keyword(facts: Facts, value: object) -> bool:
    """Any of these whole words or phrases appears in the subject or the body."""
    patterns = [keyword_pattern(word) for word in as_words(value)]
    return any(p.search(text) for p in patterns for text in (facts.subject, facts.body))


@lru_cache(maxsize=1024)
def keyword_pattern(phrase: str) -> re.Pattern[str]:
    """A whole-word, case-insensitive pattern; a space in `phrase` matches any whitespace."""
    body = r"\s+".join(re.escape(word) for word in phrase.split())
    return re.compile(rf"(?<!\w){body}(?!\w)", re.IGNORECASE)


@condition("anonymous", validate=flag)
def anonymous(facts: Facts, value: object) -> bool:
    """The report is (true) or is not (false) anonymous."""
    return facts.anonymous == value


@condition("source", validate=one_of("email", "form"))
def source(facts: Facts, value: object) -> bool:
    """The report came in by this route: email or form."""
    return _is_one_of(facts.source, value)


@condition("reporter_role", validate=words)
def reporter_role(facts: Facts, value: object) -> bool:
    """The reporter's role (as reported, or as set by an earlier rule) is one of these."""
    return _is_one_of(facts.reporter_role, value)


@condition("to_address", validate=addresses)
def to_address(facts: Facts, value: object) -> bool:
    """The report was sent to one of these addresses."""
    return any(_is_one_of(address, value) for address in facts.to_addresses)


@condition("form", validate=words)
def form(facts: Facts, value: object) -> bool:
    """The report came from one of these forms (by form id)."""
    return _is_one_of(facts.form_id, value)
