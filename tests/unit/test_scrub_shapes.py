"""scrub.py and scrub/sender.py against shapes an attacker found: a signature with no sign-off
and no `-- ` line, reply attributions in any language (found by their address and the quoted
text under them), the reporter's From lines in nested quoted header blocks, and display names
that are common or role words ("Lecturer", "Not telling") replacing words of the story."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.scrub import SIGNATURE_NOTE, notes_for, scrub_text
from pipeline.scrub.sender import ROLE_WORDS, SENDER

NAME, ADDRESS = "Jane Canary", "jane.canary@example.ac.uk"
ALIAS, PRIVATE = "Janey Privat", "jcanary99@gmail.com"
HINTS = [NAME, ADDRESS, ALIAS, PRIVATE]
STORY = "It happened on Friday."
IDENTITY = ["Jane", "Canary", "Janey", "Privat", "jcanary99", "20231234", "07700", "Psychology"]


def _scrubbed(text: str, hints: list[str] = HINTS) -> tuple[str, set[str]]:
    result = scrub_text(text, hints)
    for identity in IDENTITY:
        assert identity not in result.text, identity
    return result.text, result.removed


# --- 1. a signature that starts with the sender's name, with no sign-off -------------------------

SIGNATURE = "BSc Psychology, Year 2\nStudent ID 20231234\nM: 07700 900123"


@pytest.mark.parametrize(
    "signature",
    [
        f"Jane Canary\n{SIGNATURE}",
        f"{SENDER}\n{SIGNATURE}",
        f"Jane\n{SIGNATURE}",
        "Jane Canary | BSc Psychology\nStudent ID 20231234\nhttps://example.ac.uk/~jc",
        f"Janey Privat\nPsychology Society, Treasurer\n{PRIVATE}",
    ],
)
@pytest.mark.parametrize("gap", ["\n\n", "\n"], ids=["paragraph", "last-lines"])
def test_a_trailing_block_under_the_senders_name_is_a_signature(signature: str, gap: str) -> None:
    text, removed = _scrubbed(f"{STORY}{gap}{signature}")
    assert text.rstrip("\n") == STORY
    assert SIGNATURE_NOTE in notes_for(removed)


@pytest.mark.parametrize(
    "text",
    [
        f"{STORY}\n\nJane Canary\nand then he left the room laughing at me.",
        f"{STORY}\n\nJane, my flatmate, saw it\nHe ran off",
        f"{STORY}\n\nJane Canary\nHe said I was making it all up, which is not true.",
        f"{STORY}\n\nHarry Bad\nBSc Psychology, Year 3\nM: 07123 456789",
    ],
    ids=["sentence-under-name", "first-name-in-a-sentence", "long-sentence", "someone-else"],
)
def test_a_trailing_block_that_is_story_or_someone_elses_stays(text: str) -> None:
    result = scrub_text(text, HINTS)
    assert "signature" not in result.removed
    assert result.text.count("\n") == text.count("\n")


# --- 2. attributions in any language, and the reporter's From lines in quoted header blocks ------


@pytest.mark.parametrize(
    "line",
    [
        f"пн, 2 мар. 2026 г. в 10:00, {ALIAS} <{PRIVATE}>:",
        f"2 Mar 2026 Pzt, saat 10:00 tarihinde {ALIAS} <{PRIVATE}> şunu yazdı:",
        f"2026년 3월 2일 (월) 오전 10:00, {ALIAS} <{PRIVATE}>님이 작성:",
        f"2026年3月2日(月) 10:00 {ALIAS} <{PRIVATE}>:",
        f"{ALIAS} wrote on 2 Mar 2026, at 10:00:",
        "Janey wrote on 2 Mar 2026, at 10:00:",
        f"{ALIAS} <{PRIVATE}> wrote on 2 Mar 2026, at 10:00:  ",
        f"2 Mar 2026 Pzt, saat 10:00 tarihinde {ALIAS}\n<{PRIVATE}> şunu yazdı:",
        f"> пн, 2 мар. 2026 г. в 10:00, {ALIAS} <{PRIVATE}>:",
    ],
    ids=["ru", "tr", "ko", "ja", "wrote-on", "wrote-on-nickname", "wrote-on-address",
         "wrapped", "quoted"],
)  # fmt: skip
@pytest.mark.parametrize("blank", ["", "\n"], ids=["adjacent", "blank-line"])
def test_an_address_line_ending_in_a_colon_over_quoted_text_is_an_attribution(
    line: str, blank: str
) -> None:
    text, removed = _scrubbed(f"{STORY}\n\n{line}\n{blank}> > what I wrote before\n")
    assert text == f"{STORY}\n\n{blank}> > what I wrote before\n"
    assert "attribution" in removed


@pytest.mark.parametrize(
    "text",
    [
        f"{STORY}\nThen at 10:00 he wrote to me from h.bad@example.org:\nyou will regret it",
        f"{STORY}\nHe wrote on Instagram:\n> you will regret it",
        f"{STORY}\nHis address is h.bad@example.org:\n",
    ],
)
def test_a_colon_line_not_over_quoted_text_stays(text: str) -> None:
    assert scrub_text(text, HINTS).text == text


OWN_FROM = [
    f"From: {ALIAS} [mailto:{PRIVATE}]",
    f"*From:* {ALIAS} <{PRIVATE}>",
    f"**From:** {NAME}",
    f"De: {ALIAS} <{PRIVATE}>",
    f"Von: {NAME} <{ADDRESS}>",
    f"Van: {ALIAS}",
]


@pytest.mark.parametrize("own", OWN_FROM)
@pytest.mark.parametrize("quote", ["", "> ", "> > "], ids=["plain", "quoted", "nested"])
def test_the_reporters_from_line_goes_and_the_harassers_stays(own: str, quote: str) -> None:
    harasser = (
        "> From: Harry Bad [mailto:h.bad@example.org]\n> Sent: Monday, March 2, 2026 22:10\n"
        f"> To: {NAME} <{ADDRESS}>\n> Subject: you\n>\n> You will regret it.\n>\n"
    )
    mine = (
        f"{quote}{own}\n{quote}Sent: Sunday, March 1, 2026 09:00\n"
        f"{quote}Subject: please stop\n{quote.rstrip()}\n{quote}Please stop messaging me.\n"
    )
    text, removed = _scrubbed(f"{STORY}\n\n{harasser}{mine}")
    assert "> From: Harry Bad [mailto:h.bad@example.org]" in text
    assert "> You will regret it." in text and "Please stop messaging me." in text
    assert "Subject: please stop" in text and "From:" not in text.replace("> From: Harry", "")
    assert {"attribution", "recipients"} <= removed


# --- 3. display names that are common or role words ---------------------------------------------

SENTENCE = (
    "My lecturer told me he would help. A student, someone, not telling anyone. "
    "Anonymous notes. Me too. Lecturer STUDENT Help"
)


@pytest.mark.parametrize(
    "name",
    ["Lecturer", "Help", "Student", "Not telling", "Anonymous", "Me", "Someone", "HELPDESK",
     "not telling", "Anonymous Student", "Dr Lecturer"],
)  # fmt: skip
def test_a_display_name_of_role_words_replaces_no_word_of_the_story(name: str) -> None:
    result = scrub_text(f"{SENTENCE}\nwrite to x9k2q@example.com", [name, "x9k2q@example.com"])
    assert result.text == f"{SENTENCE}\nwrite to {SENDER}"


def test_a_role_word_in_a_real_name_goes_only_with_the_whole_name() -> None:
    text = "Sam Student said my student rep was there. Student Union. Sam left."
    result = scrub_text(text, ["Sam Student", "sam@example.ac.uk"]).text
    assert result == f"{SENDER} said my student rep was there. Student Union. {SENDER} left."


def test_a_one_word_common_name_goes_only_as_written() -> None:
    result = scrub_text("Grace said it was by the grace of god.", ["Grace", "g@example.org"])
    assert result.text == f"{SENDER} said it was by the grace of god."


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(sorted(ROLE_WORDS)), min_size=1, max_size=3),
    st.lists(st.sampled_from(sorted(ROLE_WORDS)), max_size=40),
    st.sampled_from([str.lower, str.title, str.upper]),
)
def test_role_word_names_never_replace_role_words(
    name: list[str], words: list[str], case: object
) -> None:
    assert callable(case)
    text = " ".join(case(word) for word in words)
    display = " ".join(word.title() for word in name)
    assert scrub_text(text, [display, "zz9q@example.org"]).text == text
