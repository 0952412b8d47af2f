"""Issue 8, the sender's identity in an anonymous report's text (scrub.py, scrub/sender.py,
scrub/pgp.py, anonymity.py): the name and address wherever they stand, HTML-mail signatures,
NBSP delimiters, more sign-offs and attribution languages, quoted signatures, inline PGP, the
subject marker after reply prefixes, and text attachments."""

from __future__ import annotations

import codecs
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.anonymity import (
    apply_anonymity,
    clean_attachments,
    is_anonymous_message,
    strip_marker,
)
from pipeline.report import Attachment, Report
from pipeline.scrub import (
    ATTRIBUTION_NOTE,
    PGP_NOTE,
    SENDER_NOTE,
    SIGNATURE_NOTE,
    scrub_report,
    scrub_text,
    scrub_text_attachment,
)

NAME, ADDRESS = "Samantha Jones", "samantha.jones@example.ac.uk"
HINTS = [NAME, ADDRESS]
STORY = "He followed me from the library to the bus stop on Friday."
ADDRESSES = ["anonymous@example.ac.uk"]
MARKER = "[anonymous]"


def _report(body: str, name: str = NAME, address: str = ADDRESS) -> Report:
    return Report(
        source="email",
        subject="what happened",
        body=body,
        received_at=datetime.now(UTC),
        sender_name=name,
        sender_address=address,
        ack_address=address,
    )


def _anonymous_raw(from_: str = f"{NAME} <{ADDRESS}>") -> bytes:
    return f"From: {from_}\r\nTo: {ADDRESSES[0]}\r\nSubject: s\r\n\r\nx\r\n".encode()


# --- 1. the name and address anywhere -----------------------------------------------------------


def test_the_name_and_address_are_replaced_anywhere_in_the_body() -> None:
    body = (
        f"My name is Samantha, people call me SAMANTHA JONES or samantha jones.\n"
        f"Write to Samantha.Jones@Example.ac.uk or samantha.jones@gmail.com.\n"
        f"{STORY} Jones was the only one there who may help.\n"
    )
    report = _report(body)
    report.subject = "[anonymous] Samantha Jones: what happened"
    apply_anonymity(report, _anonymous_raw(), ADDRESSES, MARKER)
    assert report.sender_name is None  # captured before anonymise() cleared it
    assert report.subject == "[sender]: what happened"
    for identity in ("Samantha", "SAMANTHA", "samantha", "Jones"):
        assert identity not in report.body, identity
    assert STORY in report.body and "who may help" in report.body
    assert "[sender]@gmail.com" in report.body  # the local part at another domain
    assert report.notes.count(SENDER_NOTE) == 1


def test_may_the_name_is_replaced_and_may_the_verb_is_not() -> None:
    text = scrub_text("May told me I may go. Mayfair is fine.", ["May Li", "ml@example.org"]).text
    assert text == "[sender] told me I may go. Mayfair is fine."


def test_an_rfc2047_display_name_is_decoded_first() -> None:
    raw = _anonymous_raw("=?utf-8?q?Si=C3=A2n_Ll=C5=B7r?= <sl@example.ac.uk>")
    report = _report(f"{STORY}\nSiân said so.", name="=?utf-8?q?Si=C3=A2n_Ll=C5=B7r?=")
    apply_anonymity(report, raw, ADDRESSES, MARKER)
    assert "Siân" not in report.body and "[sender] said so." in report.body


def test_a_forwarded_harassers_from_line_keeps_a_shared_first_name() -> None:
    report = _report(STORY)
    report.forwarded = [
        "From: Samantha Evil <evil@example.org>\nSubject: Samantha\n\nSamantha, you will regret it."
    ]
    scrub_report(report, HINTS)
    (entry,) = report.forwarded
    assert entry.startswith("From: Samantha Evil <evil@example.org>\n")  # evidence
    assert "Subject: [sender]" in entry and "[sender], you will regret it." in entry


def test_an_inline_forwarded_from_line_keeps_a_shared_first_name() -> None:
    body = (
        f"{STORY}\n\n---------- Forwarded message ---------\n"
        "From: Samantha Evil <evil@example.org>\nDate: Mon, 23 Nov 2026\n\nHi Samantha."
    )
    text = scrub_text(body, HINTS).text
    assert "From: Samantha Evil <evil@example.org>" in text and "Hi [sender]." in text


# --- 2.-4. signatures and attributions as real clients write them --------------------------------


@pytest.mark.parametrize(
    "signature",
    [
        "Kind regards,\n\nSamantha Jones\n\nLLB Law",
        "Kind\u00a0regards,\n\n\u00a0\n\nSamantha Jones\n\nLLB Law, Year 2\n\nSchool of Law",
        "--\u00a0\nSam J\nLLB Law",
        "--\u2009\nSam J\nLLB Law",
        "Love,\nSam J\nLLB Law",
        "Thx\nSam J\nLLB Law",
        "Ta,\nSam J\nLLB Law",
        "Speak soon,\nSam J\nLLB Law",
        "Thanks x\nSam J\nLLB Law",
        "thanks x\n\nSam J\n\nLLB Law",
        "many thanks\nSam J\nLLB Law",
        "All the best,\nSam J\nLLB Law",
        "Take care\nSam J\nLLB Law",
        "Warm regards\nSam J\nLLB Law",
    ],
)
def test_html_mail_and_more_sign_offs_lose_the_signature(signature: str) -> None:
    result = scrub_text(f"{STORY}\n\n{signature}\n", HINTS)
    assert "Sam J" not in result.text and "LLB" not in result.text
    assert result.text.startswith(STORY) and "signature" in result.removed


@pytest.mark.parametrize(
    "line",
    [
        "Den tis 24 nov. 2026 kl 10:00 skrev Samantha Jones <samantha.jones@example.ac.uk>:",
        "Den 24. nov. 2026 kl. 10.00 skrev Samantha Jones <samantha.jones@example.ac.uk>:",
        "tir. 24. nov. 2026 kl. 10:00 skrev Samantha Jones <samantha.jones@example.ac.uk>:",
        "W dniu 24.11.2026 o 10:00, Samantha Jones pisze:",
        "wt., 24 lis 2026 o 10:00 Samantha Jones <samantha.jones@example.ac.uk> napisał(a):",
        "24.11.2026 10:00, Samantha Jones пишет:",
        "вт, 24 нояб. 2026 г. в 10:00, Samantha Jones <sj@example.ac.uk> написал(а):",
        "2026/11/24 10:00、Samantha Jones <samantha.jones@example.ac.uk>のメッセージ:",
        "2026年11月24日 10:00 Samantha Jones は書きました:",
        "Samantha Jones <samantha.jones@example.ac.uk> 于2026年11月24日周二 10:00写道：",
        "Samantha Jones <samantha.jones@example.ac.uk> 於 2026年11月24日 週二 寫道：",
        "24 Kas 2026 Sal, 10:00 tarihinde Samantha Jones <sj@example.ac.uk> şunu yazdı:",
        "In data 24 novembre 2026 10:00, Samantha Jones ha scritto:",
        "Em ter., 24 de nov. de 2026 às 10:00, Samantha Jones <sj@example.ac.uk> escreveu:",
        "-----Ursprungligt meddelande-----",
    ],
)
def test_more_attribution_languages_are_removed(line: str) -> None:
    result = scrub_text(f"{STORY}\n\n{line}\n> the acknowledgement\n", HINTS)
    assert result.text == f"{STORY}\n\n> the acknowledgement\n"
    assert "attribution" in result.removed


def test_an_english_attribution_wrapped_over_four_lines_is_removed() -> None:
    text = (
        f"{STORY}\n\nOn Tue, 24 Nov 2026 at 10:00,\nReport and Support\n"
        "<report@example.ac.uk>\nwrote:\n> the acknowledgement\n"
    )
    assert scrub_text(text, HINTS).text == f"{STORY}\n\n> the acknowledgement\n"


@pytest.mark.parametrize(
    "text",
    [
        f"{STORY}\n\nThanks\n\nHe did it again\n",
        f"{STORY}\n\nKind regards,\n\nPlease help me\n",
        f"{STORY}\nThen at 10:00 he wrote to me:\n",
    ],
)
def test_report_text_after_a_blank_line_stays(text: str) -> None:
    assert scrub_text(text, HINTS).text == text


# --- 5. the reporter's own signature inside quoted text -----------------------------------------


def test_a_quoted_own_signature_loses_name_and_phone() -> None:
    text = (
        f"{STORY}\n\n> It happened again.\n>\n> Kind regards,\n> Samantha Jones\n>> 07700 900123\n"
    )
    result = scrub_text(text, HINTS).text
    assert "07700" not in result and "Samantha" not in result
    assert "> It happened again." in result


def test_a_quoted_strangers_phone_number_stays() -> None:
    text = f"{STORY}\n\n> You will regret it.\n> Cheers,\n> Harry\n> 07123 456789\n"
    assert "07123 456789" in scrub_text(text, HINTS).text


# --- 6. inline PGP --------------------------------------------------------------------------------

CLEARSIGNED = f"""-----BEGIN PGP SIGNED MESSAGE-----
Hash: SHA256

{STORY}

- -- 
Samantha Jones
-----BEGIN PGP SIGNATURE-----

iQEzBAEBCAAdFiEEabcdefKEYIDKEYID1234
=AbCd
-----END PGP SIGNATURE-----
"""  # noqa: W291 - the dash-escaped delimiter is dash dash space


def test_inline_pgp_blocks_go_and_the_signature_under_them_too() -> None:
    report = _report(CLEARSIGNED)
    scrub_report(report, HINTS)
    assert "PGP" not in report.body and "KEYID" not in report.body and "Hash:" not in report.body
    assert report.body.strip() == STORY
    assert PGP_NOTE in report.notes and SIGNATURE_NOTE in report.notes


# --- 7. the subject marker after reply and forward prefixes --------------------------------------


@pytest.mark.parametrize(
    ("subject", "stripped"),
    [
        ("Re: [anonymous] help", "Re: help"),
        ("RE:[Anonymous] help", "RE: help"),
        ("Fwd: FW: [anonymous] help", "Fwd: FW: help"),
        ("AW: WG: [anonymous] help", "AW: WG: help"),
        ("SV: VS: TR: RV: Antw: Odp: [anonymous] help", "SV: VS: TR: RV: Antw: Odp: help"),
        ("re : re: [anonymous]help", "re : re: help"),
    ],
)
def test_the_marker_after_reply_prefixes_is_anonymous_and_stripped(
    subject: str, stripped: str
) -> None:
    raw = b"From: a@example.org\r\nTo: report@example.ac.uk\r\n\r\nx"
    assert is_anonymous_message(raw, subject, ADDRESSES, MARKER)
    assert strip_marker(subject, MARKER) == stripped


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["Re:", "FW :", "aw:", " ", "[anonymous]", "x", ":"]), max_size=8))
def test_strip_marker_never_raises_and_leaves_no_leading_marker(pieces: list[str]) -> None:
    subject = "".join(pieces)
    stripped = strip_marker(subject, MARKER)
    raw = b"To: report@example.ac.uk\r\n\r\nx"
    if is_anonymous_message(raw, subject, ADDRESSES, MARKER):
        assert len(stripped) < len(subject)
    else:
        assert stripped == subject


@pytest.mark.parametrize("subject", ["Re: help [anonymous]", "Regarding [anonymous] help"])
def test_the_marker_elsewhere_is_not_anonymous(subject: str) -> None:
    raw = b"From: a@example.org\r\nTo: report@example.ac.uk\r\n\r\nx"
    assert not is_anonymous_message(raw, subject, ADDRESSES, MARKER)


# --- 8. text attachments --------------------------------------------------------------------------

ATT = f"{STORY}\r\n\r\nKind regards,\r\nSamantha Jones\r\n07700 900123\r\n"


def test_scrub_text_attachment() -> None:
    text, notes = scrub_text_attachment(ATT, NAME, ADDRESS)
    assert "Samantha" not in text and "07700" not in text and STORY in text
    assert SIGNATURE_NOTE in notes


@pytest.mark.parametrize("charset", ["utf-8", "windows-1252", "utf-16"])
def test_an_anonymous_reports_text_attachment_is_scrubbed(charset: str) -> None:
    report = _report(STORY)
    body = ATT.replace("Friday", "Friday café")
    report.attachments = [
        Attachment("ATT00001.txt", f"text/plain; charset={charset}", codecs.encode(body, charset))
    ]
    apply_anonymity(report, _anonymous_raw(), ADDRESSES, MARKER)
    clean_attachments(report, 10_000_000)
    (attachment,) = report.attachments
    assert attachment.content_type.endswith("charset=utf-8")
    text = attachment.data.decode("utf-8")
    assert "café" in text and "Samantha" not in text and "07700" not in text
    assert f"attachment-1.txt: {SIGNATURE_NOTE}" in report.attachment_notes


def test_attributions_in_a_text_attachment_go_too() -> None:
    text, notes = scrub_text_attachment(
        f"{STORY}\nOn Tue, 24 Nov 2026, Samantha Jones <{ADDRESS}> wrote:\n> x", NAME, ADDRESS
    )
    assert "wrote" not in text and ATTRIBUTION_NOTE in notes
