"""acks.py: who may be acknowledged, what is an automatic reply, and the RFC 8601 reader.

Header shapes are those real clients write: Exchange Online / Outlook out-of-office replies,
Gmail's vacation responder, web-form mailers, ordinary Outlook mail (which carries
X-Auto-Response-Suppress without being automatic), mailing lists, and our own acknowledgement.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.acks import (
    AckPolicy,
    auto_reply_reason,
    base_address,
    parse_authentication_results,
    sender_verified,
)
from pipeline.config import load_config
from pipeline.deliver import build_acknowledgement, new_message_id
from pipeline.parse import parse_email, read_message
from pipeline.render import Rendered

NOW = datetime(2026, 11, 25, tzinfo=UTC)
FPR = "0123456789ABCDEF0123456789ABCDEF01234567"
SENDER = "Sam Student <sam.student@student.uni.example>"

OUTLOOK_OOF = b"""Received: from AM6PR01MB1234.eurprd01.prod.exchangelabs.com by mx.uni.example
From: Dr Alex Warden <a.warden@uni.example>
To: Report and Support <report@uni.example>
Subject: Automatic reply: Your report R-2026-000042 has been received
Thread-Topic: Your report R-2026-000042 has been received
Thread-Index: AQHZ1x2yAbCdEfGhIjKlMnOpQrStUv==
Date: Wed, 25 Nov 2026 09:31:10 +0000
Message-ID: <AM6PR01MB12345A1B2C3D4E5F60718293A4B5C6D7@AM6PR01MB1234.eurprd01.prod.exchangelabs.com>
In-Reply-To: <174000000000.1234.99887766554433221100@uni.example>
Auto-Submitted: auto-generated
X-MS-Has-Attach:
X-MS-Exchange-Inbox-Rules-Loop: a.warden@uni.example
X-MS-TNEF-Correlator:
X-Auto-Response-Suppress: All
Content-Language: en-GB
Content-Type: text/plain; charset="us-ascii"
MIME-Version: 1.0

I am out of the office until Monday 30 November with no access to email.
"""

# Exchange Online's own shape: no In-Reply-To to us, a German subject, no reference.
OUTLOOK_OOF_DE = (
    OUTLOOK_OOF.replace(
        b"Subject: Automatic reply: Your report R-2026-000042 has been received",
        b"Subject: =?iso-8859-1?Q?Automatische_Antwort:_Termin?=",
    )
    .replace(b"In-Reply-To: <174000000000.1234.99887766554433221100@uni.example>\n", b"")
    .replace(b"Auto-Submitted: auto-generated\n", b"")
)

GMAIL_VACATION = b"""Delivered-To: report@uni.example
Return-Path: <sam.student@gmail.com>
From: Sam Student <sam.student@gmail.com>
To: report@uni.example
Subject: Away until January
Date: Wed, 25 Nov 2026 01:32:00 -0800
Message-ID: <CAF=vacation.123@mail.gmail.com>
X-Autoreply: yes
Auto-Submitted: auto-replied
Content-Type: text/plain; charset="UTF-8"

I am travelling and will reply when I am back.
"""

WEB_FORM = b"""From: Web Forms <forms@uni.example>
To: report@uni.example
Subject: New submission: incident report
Auto-Submitted: auto-generated
Precedence: bulk
Content-Type: text/plain

Name: Sam
What happened: someone followed me home from the library.
"""

OUTLOOK_PERSON = b"""From: Sam Student <sam.student@student.uni.example>
To: report@uni.example
Subject: Harassment in halls
Thread-Topic: Harassment in halls
Thread-Index: AQHZ1x2yAbCdEfGhIjKlMnOpQrStUv==
X-Auto-Response-Suppress: All
X-MS-Has-Attach:
X-MS-TNEF-Correlator:
Content-Type: text/plain

My flatmate keeps shouting slurs at me.
"""


def policy(tmp_path: Path, extra: str = "") -> AckPolicy:
    (tmp_path / "intake.toml").write_text(
        f"""[smtp]
from = "Report and Support <Support@Uni.example>"
[intake]
intake_addresses = ["report@uni.example"]
anonymous_addresses = ["anonymous@uni.example"]
{extra}
[gpg]
records_keys = ["{FPR}"]
"""
    )
    return AckPolicy.from_config(load_config(tmp_path / "intake.toml"))


def message(raw: bytes):  # type: ignore[no-untyped-def]
    return read_message(raw.replace(b"\n", b"\r\n"))


def ack_reason(acks: AckPolicy, raw: bytes) -> str | None:
    msg = message(raw)
    report = parse_email(raw, NOW)
    return acks.blocked_reason(msg, report.sender_address, report.subject)


# --- automatic replies ------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [OUTLOOK_OOF, OUTLOOK_OOF_DE, GMAIL_VACATION])
def test_out_of_office_and_vacation_replies_are_automatic_replies(raw: bytes) -> None:
    report = parse_email(raw, NOW)
    assert auto_reply_reason(message(raw), report.subject)
    assert report.ack_address is None


@pytest.mark.parametrize(
    "headers",
    [
        b"X-Autorespond: yes\n",
        b"X-Autoresponder: Will not send another autoreply for 86400 seconds\n",
        b"Precedence: auto_reply\n",
        b"X-Precedence: auto_reply\n",
        b"Auto-Submitted: Auto-Replied; owner-email=x@y.example\n",
    ],
)
def test_other_auto_reply_headers(headers: bytes) -> None:
    raw = b"From: a@x.example\nSubject: hello\n" + headers + b"\nbody\n"
    assert auto_reply_reason(message(raw), "hello")
    assert parse_email(raw, NOW).ack_address is None


def test_web_form_mail_stays_a_report_but_is_not_acknowledged() -> None:
    report = parse_email(WEB_FORM, NOW)
    assert auto_reply_reason(message(WEB_FORM), report.subject) is None  # a report
    assert "followed me home" in report.body
    assert report.ack_address is None  # auto-generated, bulk: never answered


def test_an_ordinary_outlook_mail_is_acknowledged_whatever_its_suppress_header() -> None:
    report = parse_email(OUTLOOK_PERSON, NOW)
    assert auto_reply_reason(message(OUTLOOK_PERSON), report.subject) is None
    assert report.ack_address == "sam.student@student.uni.example"


@pytest.mark.parametrize(
    "subject", ["Automatic reply: my report", "Out of Office: hi", "Abwesenheitsnotiz: x"]
)
def test_an_out_of_office_subject_alone_is_a_report(subject: str) -> None:
    raw = f"From: {SENDER}\nSubject: {subject}\n\nThis is a real report.\n".encode()
    report = parse_email(raw, NOW)
    assert auto_reply_reason(message(raw), report.subject) is None
    assert report.ack_address == "sam.student@student.uni.example"


def test_a_forwarded_out_of_office_is_a_report() -> None:
    raw = OUTLOOK_PERSON.replace(b"Subject: Harassment", b"Subject: FW: Automatic reply: x")
    report = parse_email(raw, NOW)
    assert auto_reply_reason(message(raw), report.subject) is None


@pytest.mark.parametrize(
    "headers",
    [
        b"Precedence: bulk\n",
        b"Precedence: list\n",
        b"Precedence: junk\n",
        b"List-Id: <students.lists.uni.example>\n",
        b"List-Unsubscribe: <mailto:leave@lists.uni.example>\n",
        b"Auto-Submitted: auto-generated\n",
        b"Auto-Submitted: auto-notified\n",
        b"Auto-Submitted:\n",
        b"X-MS-Exchange-Generated-Message-Source: Mailbox Rules Agent\n",
        b"X-MS-Exchange-Inbox-Rules-Loop: someone@uni.example\n",
    ],
)
def test_automatic_and_list_mail_is_a_report_without_acknowledgement(headers: bytes) -> None:
    raw = b"From: a@x.example\nSubject: s\n" + headers + b"\nbody\n"
    assert auto_reply_reason(message(raw), "s") is None
    assert parse_email(raw, NOW).ack_address is None


def test_auto_submitted_no_is_acknowledged() -> None:
    raw = b"From: a@x.example\nSubject: s\nAuto-Submitted: no\n\nbody\n"
    assert parse_email(raw, NOW).ack_address == "a@x.example"


# --- our own addresses and our own mail -------------------------------------------------------


@pytest.mark.parametrize(
    "sender",
    [
        "report@uni.example",
        "Report+x@UNI.example",
        "anonymous+whatever@uni.example",
        "ANONYMOUS@uni.example",
        "support@uni.example",  # [smtp] from
        "support+loop@uni.example",
    ],
)
def test_own_addresses_in_any_form_are_never_acknowledged(tmp_path: Path, sender: str) -> None:
    acks = policy(tmp_path)
    raw = f"From: {sender}\nSubject: s\n\nbody\n".encode()
    assert acks.is_own(sender)
    assert ack_reason(acks, raw) == "the sender is the intake itself"
    assert ack_reason(acks, raw.replace(sender.encode(), b"sam@x.example")) is None


def test_base_address() -> None:
    assert base_address(" Report+Anon+x@Uni.Example ") == "report@uni.example"


def test_an_echo_of_our_acknowledgement_is_not_acknowledged(tmp_path: Path) -> None:
    acks = policy(tmp_path)
    message_id = new_message_id("Report and Support <support@uni.example>")
    ack = build_acknowledgement("support@uni.example", message_id, Rendered("Received", "Hi\n"))
    # e.g. a reporter's forwarding rule that sends it back to the intake
    echo = ack.replace(b"From: support@uni.example", b"From: sam@x.example")
    msg = read_message(echo)
    assert msg["X-Report-Intake"] == "acknowledgement"
    assert auto_reply_reason(msg, "Received")  # auto-replied: not even a report
    assert acks.blocked_reason(msg, "sam@x.example", "Received") is not None
    stripped = echo.replace(b"Auto-Submitted: auto-replied\n", b"")
    assert ack_reason(acks, stripped) == "it carries our own acknowledgement's header (an echo)"


@pytest.mark.parametrize("name", [b"In-Reply-To", b"References", b"Message-ID"])
def test_mail_naming_one_of_our_message_ids_is_not_acknowledged(
    tmp_path: Path, name: bytes
) -> None:
    acks = policy(tmp_path)
    ours = new_message_id("Report and Support <support@uni.example>").encode()
    raw = b"From: sam@x.example\nSubject: thanks\n" + name + b": <a@b.example> " + ours + b"\n\nx\n"
    assert ack_reason(acks, raw) == "it refers to mail we sent (an echo or a follow-up)"
    theirs = raw.replace(ours, b"<17400.1234.5678@elsewhere.example>")
    assert ack_reason(acks, theirs) is None


def test_a_reference_in_the_subject_is_not_acknowledged(tmp_path: Path) -> None:
    raw = b"From: sam@x.example\nSubject: Re: Your report R-2026-000123\n\nmore\n"
    assert ack_reason(policy(tmp_path), raw) == (
        "its subject carries a reference (an echo or a follow-up)"
    )
    assert parse_email(raw, NOW).body == "more"  # still a report


# --- Authentication-Results -------------------------------------------------------------------


def authenticated(*fields: str) -> bytes:
    lines = "".join(f"Authentication-Results: {field}\n" for field in fields)
    return f"{lines}From: sam@x.example\nSubject: s\n\nbody\n".encode()


@pytest.mark.parametrize(
    ("fields", "verified"),
    [
        (["mx.uni.example; dmarc=pass header.from=x.example"], True),
        (["MX.Uni.Example; spf=pass smtp.mailfrom=x.example"], True),
        (["mx.uni.example 1; dkim=pass header.d=x.example; dmarc=none"], True),
        (["mx.uni.example; spf=pass smtp.mailfrom=x.example; dmarc=fail"], False),
        (["mx.uni.example; spf=softfail; dkim=none; dmarc=none"], False),
        (["mx.uni.example; none"], False),
        ([], False),
        (["other.example; dmarc=pass"], False),  # another host's word counts for nothing
        # the topmost field from our host wins; a pass below it came with the message
        (["mx.uni.example; dmarc=fail", "mx.uni.example; dmarc=pass"], False),
        (["mx.uni.example; dmarc=pass", "mx.uni.example; dmarc=fail"], True),
        # comments and quoted strings may hold ";" and "=" and must not be read as results
        (['mx.uni.example; spf=fail (dmarc=pass; dkim=pass) smtp.mailfrom="a;dmarc=pass"'], False),
        (["mx.uni.example (our (nested) host); dkim=pass (good sig) header.i=@x.example"], True),
        # Exchange Online writes no authserv-id: it cannot be ours
        (["spf=pass (sender IP is 192.0.2.1) smtp.mailfrom=x.example; dmarc=pass"], False),
    ],
)
def test_sender_verified_by_our_host(fields: list[str], verified: bool, tmp_path: Path) -> None:
    msg = message(authenticated(*fields))
    assert sender_verified(msg, "mx.uni.example") is verified
    acks = policy(tmp_path, 'authserv_id = "mx.uni.example"')
    blocked = acks.blocked_reason(msg, "sam@x.example", "s")
    assert (blocked is None) is verified


def test_without_authserv_id_there_is_no_check(tmp_path: Path) -> None:
    raw = authenticated("mx.uni.example; dmarc=fail")
    assert ack_reason(policy(tmp_path), raw) is None


def test_a_dmarc_failure_is_still_a_report(tmp_path: Path) -> None:
    raw = authenticated("mx.uni.example; dmarc=fail")
    report = parse_email(raw, NOW, acks=policy(tmp_path, 'authserv_id = "mx.uni.example"'))
    assert report.body == "body" and report.sender_address == "sam@x.example"
    assert report.ack_address is None


_TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.", min_size=1, max_size=12)
_WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyzXYZ", min_size=1, max_size=8)
_COMMENT = st.text(alphabet='abc ;=()\\"x', max_size=20).map(
    lambda text: "(" + text.replace("\\", "").replace("(", "").replace(")", "") + ")"
)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_any_text_gives_results_or_none(value: str) -> None:
    parsed = parse_authentication_results(value)
    if parsed is not None:
        assert parsed.authserv_id and "=" not in parsed.authserv_id
        assert all(method == method.lower() for method, _ in parsed.results)


@settings(max_examples=300, deadline=None)
@given(
    _TOKEN.filter(lambda t: "=" not in t),
    st.lists(st.tuples(_WORD, _WORD, st.one_of(st.just(""), _COMMENT)), max_size=8),
    st.one_of(st.just(""), _COMMENT),
)
def test_well_formed_fields_read_back(
    authserv: str, results: list[tuple[str, str, str]], head_comment: str
) -> None:
    value = f"{authserv.upper()} {head_comment}" + "".join(
        f";\r\n\t{method}={result} {comment} prop.x=y" for method, result, comment in results
    )
    parsed = parse_authentication_results(value)
    assert parsed is not None
    assert parsed.authserv_id == authserv
    assert parsed.results == tuple((m.lower(), r.lower()) for m, r, _ in results)


def test_an_overlong_field_is_not_read() -> None:
    assert parse_authentication_results("mx.example; dmarc=pass " + "x" * 10_000) is None
