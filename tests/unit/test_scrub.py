"""scrub.py: an anonymous report's text loses its signature block, reply attributions and the
recipient lines of quoted or forwarded messages, with a note saying so; nothing else changes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.anonymity import apply_anonymity
from pipeline.report import Report
from pipeline.scrub import (
    ATTRIBUTION_NOTE,
    RECIPIENTS_NOTE,
    SIGNATURE_NOTE,
    scrub_report,
    scrub_text,
)
from pipeline.scrub.sender import SENDER

HINTS = ["Sam Student", "sam.student@example.ac.uk"]
IDENTITY = ["Sam Student", "sam.student@example.ac.uk", "07700 900123", "Psychology"]
STORY = "Someone grabbed me at the party on Friday night."


def _clean(text: str) -> str:
    result = scrub_text(text, HINTS).text
    for identity in IDENTITY:
        assert identity not in result, identity
    assert STORY in result
    return result


GMAIL_REPLY = f"""{STORY}

Thanks,
Sam Student
BSc Psychology, Year 2
07700 900123

On Tue, 24 Nov 2026 at 10:00, Report and Support <report@example.ac.uk> wrote:
> Thank you for getting in touch. We have received your report safely.
"""

GMAIL_WRAPPED = f"""{STORY}

On Tue, 24 Nov 2026 at 10:00, Sam Student <sam.student@example.ac.uk>
wrote:

> the first report
"""

APPLE_MAIL = f"""{STORY}

Sent from my iPhone

> On 24 Nov 2026, at 10:00, Sam Student <sam.student@example.ac.uk> wrote:
>
> the first report
"""

OUTLOOK_REPLY = f"""{STORY}

Kind regards

Sam Student
Student Rep | School of Psychology
sam.student@example.ac.uk | +44 7700 900123

________________________________
From: Report and Support <report@example.ac.uk>
Sent: Tuesday, November 24, 2026 10:00 AM
To: Sam Student <sam.student@example.ac.uk>; Another Person
<another@example.ac.uk>
Cc: Sam Student <sam.student@example.ac.uk>
Subject: We have received your report (RS-2026-0001)

Thank you for getting in touch.
"""

OUTLOOK_ORIGINAL = f"""{STORY}

-----Original Message-----
From: Sam Student <sam.student@example.ac.uk>
Sent: 24 November 2026 10:00
To: Report and Support <report@example.ac.uk>
Subject: the first report

the first report
"""

DASHES = f"""{STORY}
--
Sam Student
07700 900123
"""

DASHES_SPACE = f"""{STORY}

-- 
Sam Student | BSc Psychology
07700 900123
"""  # noqa: W291 - the delimiter is dash dash space

GMAIL_FORWARD = f"""{STORY} This is what he sent me.

---------- Forwarded message ---------
From: Harasser Person <h.person@example.org>
Date: Mon, 23 Nov 2026 at 22:10
Subject: you will regret it
To: Sam Student <sam.student@example.ac.uk>
Cc: A Friend <friend@example.org>

You will regret reporting me.
"""


@pytest.mark.parametrize(
    ("text", "notes"),
    [
        (GMAIL_REPLY, {SIGNATURE_NOTE, ATTRIBUTION_NOTE}),
        (GMAIL_WRAPPED, {ATTRIBUTION_NOTE}),
        (APPLE_MAIL, {SIGNATURE_NOTE, ATTRIBUTION_NOTE}),
        (OUTLOOK_REPLY, {SIGNATURE_NOTE, RECIPIENTS_NOTE}),
        (OUTLOOK_ORIGINAL, {ATTRIBUTION_NOTE, RECIPIENTS_NOTE}),
        (DASHES, {SIGNATURE_NOTE}),
        (DASHES_SPACE, {SIGNATURE_NOTE}),
        (GMAIL_FORWARD, {RECIPIENTS_NOTE}),
    ],
    ids=[
        "gmail-reply",
        "gmail-wrapped",
        "apple-mail",
        "outlook-reply",
        "outlook-original",
        "dashes",
        "dashes-space",
        "gmail-forward",
    ],
)
@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_realistic_mail_loses_what_names_the_sender(
    text: str, notes: set[str], newline: str
) -> None:
    report = _report(text.replace("\n", newline))
    scrub_report(report, HINTS)
    _clean(report.body)
    assert set(report.notes) == notes


def test_quoted_text_and_forwarded_evidence_stay() -> None:
    reply = _clean(GMAIL_REPLY)
    assert "> Thank you for getting in touch." in reply and "wrote:" not in reply
    forward = _clean(GMAIL_FORWARD)
    for evidence in (
        "From: Harasser Person <h.person@example.org>",
        "Date: Mon, 23 Nov 2026 at 22:10",
        "Subject: you will regret it",
        "You will regret reporting me.",
    ):
        assert evidence in forward
    assert "friend@example.org" not in forward
    outlook = _clean(OUTLOOK_REPLY)
    assert "Subject: We have received your report" in outlook
    assert "another@example.ac.uk" not in outlook and "Thank you for getting in touch." in outlook
    original = _clean(OUTLOOK_ORIGINAL)
    assert "Original Message" not in original and "the first report" in original


@pytest.mark.parametrize(
    "line",
    [
        "Am Di., 24. Nov. 2026 um 10:00 Uhr schrieb Sam Student <sam.student@example.ac.uk>:",
        "Le mar. 24 nov. 2026 à 10:00, Sam Student <sam.student@example.ac.uk> a écrit :",
        "El mar, 24 nov 2026 a las 10:00, Sam Student (<sam.student@example.ac.uk>) escribió:",
        "Ar Maw 24 Tach 2026 am 10:00, ysgrifennodd Sam Student <sam.student@example.ac.uk>:",
        "Op di 24 nov. 2026 om 10:00 schreef Sam Student <sam.student@example.ac.uk>:",
        "Op 24 nov. 2026 om 10:00 heeft Sam Student <sam.student@example.ac.uk> het volgende "
        "geschreven:",
        "On 24/11/2026 10:00, Sam Student wrote:",
    ],
)
def test_localised_attributions_are_removed(line: str) -> None:
    text = f"{STORY}\n\n{line}\n> the acknowledgement\n"
    result = scrub_text(text, HINTS)
    assert result.text == f"{STORY}\n\n> the acknowledgement\n"
    assert result.removed == {"attribution"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"{STORY}\n\nThanks, Sam", f"{STORY}\n\nThanks,"),
        (f"{STORY}\n\nBest wishes,\nSam\n", f"{STORY}\n\nBest wishes,"),
        (f"{STORY}\nCheers\nSam S.\n(she/her)\n", f"{STORY}\nCheers"),
        (f"{STORY}\nSam Student\n", f"{STORY}"),
    ],
)
def test_closing_salutations_and_a_last_line_naming_the_sender(text: str, expected: str) -> None:
    assert scrub_text(text, HINTS).text.rstrip("\n") == expected


@pytest.mark.parametrize(
    "text",
    [
        f"{STORY}\nThanks\nfor reading this, he was in my seminar group.",
        f"{STORY}\n\nThanks,\nSam\n\nP.S. He also sent messages on Instagram, I have them all.",
        f"{STORY}\n\nThanks\n\nHe is tall and has a beard.",
        f"He said thanks\nand left.\n{STORY}",
        f"{STORY}\n-- he said this twice --\nthen left",
    ],
)
def test_report_text_that_only_looks_like_a_signature_stays(text: str) -> None:
    # the sender's first name is replaced wherever it stands; the lines themselves stay
    assert scrub_text(text, HINTS).text == text.replace("Sam", "[sender]")


def test_named_reports_are_untouched_and_anonymous_ones_scrubbed_in_apply_anonymity() -> None:
    raw = b"From: Sam Student <sam.student@example.ac.uk>\r\nTo: %s\r\nSubject: s\r\n\r\nx\r\n"
    named = _report(GMAIL_REPLY)
    apply_anonymity(named, raw % b"report@example.ac.uk", ["anonymous@example.ac.uk"], "")
    assert named.body == GMAIL_REPLY and named.notes == []
    anonymous = _report(GMAIL_REPLY)
    apply_anonymity(anonymous, raw % b"anonymous@example.ac.uk", ["anonymous@example.ac.uk"], "")
    _clean(anonymous.body)
    assert SIGNATURE_NOTE in anonymous.notes and ATTRIBUTION_NOTE in anonymous.notes


def test_forwarded_entries_lose_their_recipient_lines() -> None:
    report = _report(STORY)
    report.forwarded = [
        "From: Harasser <h@example.org>\nDate: Mon, 23 Nov 2026 22:10:00 +0000\n"
        "Subject: you\nTo: Sam Student <sam.student@example.ac.uk>\nCc: f@example.org\n\n"
        "To: whom it may concern, this line is body text\nYou will regret it.",
    ]
    scrub_report(report, HINTS)
    (entry,) = report.forwarded
    assert "sam.student@example.ac.uk" not in entry and "f@example.org" not in entry
    assert entry.startswith("From: Harasser <h@example.org>\nDate: ")
    assert "To: whom it may concern" in entry and "You will regret it." in entry
    assert report.notes == [RECIPIENTS_NOTE]


def test_a_forwarded_message_keeps_its_authors_signature_unless_the_sender_wrote_it() -> None:
    report = _report(STORY)
    report.forwarded = [
        "From: Harasser <h@example.org>\nSubject: you\n\nYou will regret it.\n\nCheers,\nHarry",
        "From: Sam Student <sam.student@example.ac.uk>\nSubject: my complaint\n\n"
        "He did it again.\n\nThanks,\nSam Student\n07700 900123\n\n"
        "On Mon, 23 Nov 2026 at 09:00, Tutor <tutor@example.ac.uk> wrote:\n> noted",
    ]
    scrub_report(report, HINTS)
    harasser, own = report.forwarded
    assert harasser.endswith("Cheers,\nHarry")  # evidence of who wrote it
    assert own.startswith("Subject: my complaint\n\nHe did it again.")
    for identity in IDENTITY:
        assert identity not in own
    assert "> noted" in own and "wrote:" not in own
    assert set(report.notes) == {SIGNATURE_NOTE, ATTRIBUTION_NOTE}


def _report(body: str) -> Report:
    return Report(
        source="email",
        subject="s",
        body=body,
        received_at=datetime.now(UTC),
        sender_name="Sam Student",
        sender_address="sam.student@example.ac.uk",
    )


# --- properties ---------------------------------------------------------------------------------

FRAGMENTS = [
    "Thanks,",
    "Kind regards",
    "Cheers",
    "Sam Student",
    "Sam",
    "07700 900123",
    "sam.student@example.ac.uk",
    "-- ",
    "--",
    "",
    "> quoted",
    "On Tue, 24 Nov 2026 at 10:00, Sam Student <sam@x.ac.uk>",
    "wrote:",
    "On Tue, 24 Nov 2026 at 10:00, Sam <sam@x.ac.uk> wrote:",
    "---------- Forwarded message ---------",
    "________________________________",
    "-----Original Message-----",
    "From: Sam Student <sam@x.ac.uk>",
    "Sent: Tuesday",
    "Date: Monday",
    "To: Sam <sam@x.ac.uk>",
    "Cc: a@b.c",
    "Subject: s",
    "Sent from my iPhone",
    "P.S. more",
    "He followed me home after the seminar.",
    "Thanks, Sam",
    "Sam Student | BSc Psychology",
    "Student ID 20231234",
    "M: 07700 900123",
    "[sender]",
    "пн, 2 мар. 2026 г. в 10:00, Sam <sam@x.ac.uk>:",
    "2 Mar 2026 Pzt, saat 10:00 tarihinde Sam",
    "<sam@x.ac.uk> şunu yazdı:",
    "Sam wrote on 2 Mar 2026:",
    "> From: Sam Student [mailto:sam@x.ac.uk]",
    "*From:* Harry <h@x.org>",
    "> Sent: Monday",
    ">",
    "My lecturer told me.",
]


def _grew_only_by_sender(before: str, after: str) -> bool:
    """The text did not grow, except by `[sender]` (8 characters) standing in for a name word
    or address of at least 3: at most 5 characters for each new `[sender]`."""
    added = after.count(SENDER) - before.count(SENDER)
    return len(after) <= len(before) + (len(SENDER) - 3) * max(added, 0)


@settings(max_examples=600, deadline=None)
@given(
    st.lists(
        st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=30)),
        max_size=30,
    ),
    st.sampled_from(["\n", "\r\n"]),
)
def test_scrubbing_never_raises_never_grows_and_is_idempotent(
    lines: list[str], newline: str
) -> None:
    text = newline.join(lines)
    once = scrub_text(text, HINTS)
    assert _grew_only_by_sender(text, once.text)
    assert scrub_text(once.text, HINTS).text == once.text
    if once.text == text:
        assert not once.removed  # a note only for something removed


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=3000))
def test_arbitrary_text_never_raises(text: str) -> None:
    result = scrub_text(text, HINTS)
    assert _grew_only_by_sender(text, result.text)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=30)), max_size=20),
    st.text(max_size=30),
    st.text(max_size=30),
)
def test_any_sender_name_never_raises_and_is_idempotent(
    lines: list[str], name: str, address: str
) -> None:
    text = "\n".join(lines)
    once = scrub_text(text, [name, address])
    assert _grew_only_by_sender(text, once.text)
    assert scrub_text(once.text, [name, address]).text == once.text
