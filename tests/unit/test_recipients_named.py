"""Named mail stays named (recipients.py): anonymity must not overreach. A configured address
with a plus tag matches only itself, the text search stops at address boundaries, `+anonymous`
counts only at our own domains, and recipient lists real clients write (semicolons, `<>`,
empty groups, `unknown-8bit`, an unquoted comma in a name) are readable. Each named control
has an anonymous twin, so the fix cannot pass by ignoring the field."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.recipients import Unreadable, decoded_text, sent_to_anonymous
from tests.unit.test_anonymity_shapes import message

#: As in intake.example.toml.
CONFIGURED = ["anonymous@example.ac.uk", "report+anonymous@example.ac.uk"]
INTAKE = "report@example.ac.uk"


# --- 1. a configured address with a plus tag matches only itself --------------------------------

NAMED_TO_THE_INTAKE = {
    "plain": f"To: {INTAKE}",
    "named": f'To: "Report and Support" <{INTAKE}>',
    "upper": f"To: {INTAKE.upper()}",
    "envelope": f"To: {INTAKE}\r\nDelivered-To: {INTAKE}\r\nX-Original-To: <{INTAKE}>",
    "received": f"To: {INTAKE}\r\nReceived: from pc by mx for <{INTAKE}>; Tue, 1 Dec 2026",
    "other-tag": "To: report+web@example.ac.uk",
    "tag-after-tag": "To: report+anonymous+x@example.ac.uk",
}


@pytest.mark.parametrize("fields", NAMED_TO_THE_INTAKE.values(), ids=NAMED_TO_THE_INTAKE.keys())
def test_mail_to_the_intake_is_named_when_its_plus_variant_is_configured(fields: str) -> None:
    assert not sent_to_anonymous(message(fields), CONFIGURED)


@pytest.mark.parametrize(
    "fields",
    [
        "To: report+anonymous@example.ac.uk",
        "To: Report+Anonymous@Example.AC.UK",
        'To: "report+anonymous"@example.ac.uk',
        "Delivered-To: report+anonymous@example.ac.uk",
        "To: anonymous+web@example.ac.uk",  # an untagged configured address keeps its variants
        "X-Original-To: Anonymous+Web@example.ac.uk.",
    ],
)
def test_a_configured_plus_address_and_the_plain_ones_variants_are_anonymous(fields: str) -> None:
    assert sent_to_anonymous(message(f"To: {INTAKE}", fields), CONFIGURED)


# --- 2. the text search stops at address boundaries ---------------------------------------------

BOUNDARIES = {
    "prefix-dash": "Cc: not-anonymous@example.ac.uk",
    "prefix-dot": "Cc: not.anonymous@example.ac.uk",
    "prefix-underscore": "Cc: not_anonymous@example.ac.uk",
    "prefix-plus": "Cc: x+anonymous@example.ac.uk.evil.com",
    "suffix-domain": "Delivered-To: anonymous@example.ac.uk.evil.com",
    "suffix-dash": "X-Original-To: anonymous@example.ac.uk-evil.com",
    "suffix-word": "Received: from a by b for <anonymous@example.ac.ukx>; Tue, 1 Dec 2026",
    "in-a-name": 'Cc: "not-anonymous@example.ac.uk" <friend@example.org>',
}


@pytest.mark.parametrize("fields", BOUNDARIES.values(), ids=BOUNDARIES.keys())
def test_an_address_that_only_contains_the_anonymous_one_is_named(fields: str) -> None:
    assert not sent_to_anonymous(message(f"To: {INTAKE}", fields), CONFIGURED)


@pytest.mark.parametrize(
    "fields",
    [
        "Delivered-To: anonymous@example.ac.uk",
        "Delivered-To: anonymous@example.ac.uk.",
        "X-Original-To: <anonymous@example.ac.uk>",
        "Envelope-To: friend@example.org,anonymous@example.ac.uk;x@y",
        "Received: from a by b for <ANONYMOUS@example.ac.uk>; Tue, 1 Dec 2026",
        "X-Forwarded-To: (anonymous@example.ac.uk)",
        "X-Rcpt-To: 'anonymous@example.ac.uk'",
        'X-Envelope-To: "anonymous@example.ac.uk"',
    ],
)
def test_the_anonymous_address_between_boundaries_is_anonymous(fields: str) -> None:
    assert sent_to_anonymous(message(f"To: {INTAKE}", fields), CONFIGURED)


# --- 3. `+anonymous` counts only at the domains of the anonymous addresses ----------------------


@pytest.mark.parametrize(
    "fields",
    [
        "Cc: someone+anonymous@gmail.com",
        "Delivered-To: someone+anonymous@gmail.com",
        "Cc: Friend <friend+anonymous@example.org>",
    ],
)
def test_plus_anonymous_elsewhere_is_named(fields: str) -> None:
    assert not sent_to_anonymous(message(f"To: {INTAKE}", fields), CONFIGURED)


@pytest.mark.parametrize(
    "fields",
    [
        "To: support+anonymous@example.ac.uk",
        "Delivered-To: Support+Anonymous@EXAMPLE.ac.uk",
    ],
)
def test_plus_anonymous_at_our_domain_is_anonymous(fields: str) -> None:
    assert sent_to_anonymous(message(fields), ["anonymous@example.ac.uk"])


# --- 4. recipient lists real clients write are readable -----------------------------------------

READABLE = {
    "semicolons": f"To: {INTAKE}\r\nCc: a@x.com; b@x.com",
    "semicolons-angles": f"To: {INTAKE}\r\nCc: <a@x>; <b@x>",
    "semicolons-names": f"To: Report <{INTAKE}>; Pat <p@x.com>;",
    "empty-angle": f"To: {INTAKE}\r\nCc: Student Services <>",
    "empty-group-after": f'To: "R" <{INTAKE}>, undisclosed-recipients:;',
    "empty-group-before": f"To: undisclosed-recipients:;, {INTAKE}",
    "unknown-8bit": f"To: =?unknown-8bit?q?R=E9port?= <{INTAKE}>",
    "unquoted-comma": f"To: {INTAKE}\r\nCc: O'Brien, Pat <p@x.com>",
    "unquoted-comma-intake": f"To: Support, Report <{INTAKE}>",
}


@pytest.mark.parametrize("fields", READABLE.values(), ids=READABLE.keys())
def test_lists_real_clients_write_are_read_as_named(fields: str) -> None:
    assert not sent_to_anonymous(message(fields), CONFIGURED)


@pytest.mark.parametrize(
    "fields",
    [
        f"To: {INTAKE}\r\nCc: a@x.com; anonymous@example.ac.uk",
        f"To: {INTAKE}\r\nCc: <a@x>; <Anonymous@example.ac.uk>",
        "To: Student Services <>, anonymous@example.ac.uk",
        f'To: "R" <{INTAKE}>, undisclosed-recipients:;, "x" <anonymous+w@example.ac.uk>',
        "To: =?unknown-8bit?q?anonymous=40example.ac.uk?= <report@example.ac.uk>",
        "To: O'Brien, Pat <anonymous@example.ac.uk>",
        "To: anonymous, Pat <p@x.com>",  # a bare anonymous local part: ambiguous, fail closed
        "To: Report+Anonymous, Pat <p@x.com>",
    ],
)
def test_the_same_lists_naming_the_anonymous_address_are_anonymous(fields: str) -> None:
    assert sent_to_anonymous(message(fields), CONFIGURED)


@pytest.mark.parametrize(
    "to",
    [
        f"=?utf-8?b?####?= <{INTAKE}>",  # an encoded word that does not decode
        f"=?x-no-such-charset?q?Sam?= <{INTAKE}>",
        f'"broken <{INTAKE}>',
        "Report and Support",  # a name without an address: it may be the alias's name
        "O'Brien",
        f"O'Brien, {INTAKE}",  # no display name follows: not a name with a comma
        f"Report <{INTAKE}>; Pat",
    ],
)
def test_what_could_still_hide_an_address_stays_anonymous(to: str) -> None:
    assert sent_to_anonymous(message(f"To: {to}"), CONFIGURED)


def test_unknown_8bit_words_decode_as_ascii_compatible_bytes() -> None:
    assert decoded_text("=?unknown-8bit?b?YW5vbnltb3VzQGV4YW1wbGUuYWMudWs=?=") == (
        "anonymous@example.ac.uk"
    )
    with pytest.raises(Unreadable):
        decoded_text("=?x-unknown?q?Sam?=")


_LOCAL = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,10}[a-z0-9]", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(
    local=_LOCAL.filter(lambda s: s not in ("anonymous", "report")),
    glue=st.sampled_from(["-", ".", "_", "+"]),
    field=st.sampled_from(["Cc", "Delivered-To", "X-Original-To", "Envelope-To"]),
)
def test_no_other_address_around_the_anonymous_one_is_anonymous(
    local: str, glue: str, field: str
) -> None:
    """`x-anonymous@…`, `anonymous@….evil` and the like are someone else's addresses."""
    before = f"{local}{glue}anonymous@example.ac.uk"
    after = f"anonymous@example.ac.uk{glue if glue != '+' else '.'}{local}"
    if glue == "+":  # `x+anonymous@` is ours by rule 3; not at another domain
        before = f"{local}+anonymous@example.org"
    for address in (before, after):
        assert not sent_to_anonymous(message(f"To: {INTAKE}", f"{field}: {address}"), CONFIGURED)


_NAMED_ITEM = st.sampled_from(
    [
        INTAKE,
        f"<{INTAKE}>",
        f'"Report and Support" <{INTAKE}>',
        "Friend <friend@example.org>",
        "Student Services <>",
        "undisclosed-recipients:;",
        "=?unknown-8bit?q?R=E9port?= <r@example.org>",
        "O'Brien, Pat <pat@example.org>",
        "someone+anonymous@gmail.com",
        "not-anonymous@example.ac.uk",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    items=st.lists(_NAMED_ITEM, min_size=1, max_size=6),
    separators=st.lists(st.sampled_from([", ", "; ", ",", ";"]), min_size=7, max_size=7),
    at=st.integers(0, 6),
    anonymous=st.sampled_from(["anonymous@example.ac.uk", "<report+anonymous@example.ac.uk>"]),
    field=st.sampled_from(["To", "Cc", "Bcc"]),
)
def test_a_list_of_named_items_is_named_until_the_anonymous_address_joins_it(
    items: list[str], separators: list[str], at: int, anonymous: str, field: str
) -> None:
    def joined(parts: list[str]) -> str:
        return "".join(
            part + sep for part, sep in zip(parts, separators[: len(parts)], strict=True)
        )

    assert not sent_to_anonymous(message(f"{field}: {joined(items)}"), CONFIGURED)
    with_anonymous = [*items[:at], anonymous, *items[at:]]
    assert sent_to_anonymous(message(f"{field}: {joined(with_anonymous)}"), CONFIGURED)


def test_hostile_lists_are_read_in_linear_time() -> None:
    import time

    for value in ("a, " * 20000, "x, Pat <p@x>, " * 4000, ";" * 60000, "<>, " * 15000):
        started = time.monotonic()
        sent_to_anonymous(message(f"To: {value}"), CONFIGURED)
        assert time.monotonic() - started < 1.0, value[:10]
