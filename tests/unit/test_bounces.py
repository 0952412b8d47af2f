"""bounces.py: a parsed message → the Bounce it is (outbox Message-IDs, permanence), or None."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st
from sqlalchemy import Engine
from sqlmodel import Session, select

from pipeline.bounces import Bounce, recognise_bounce
from pipeline.models import AuditRow, OutboxRow, OutboxState, ReportRow
from pipeline.store import make_engine, record_bounce


def parse(raw: bytes) -> EmailMessage:
    return BytesParser(policy=policy.default).parsebytes(raw)  # type: ignore[return-value]


POSTFIX = b"""Return-Path: <>
Delivered-To: intake@uni.example
Received: by mx.uni.example (Postfix) id 4XYZ1a2b3c; Wed, 25 Nov 2026 09:30:02 +0000 (UTC)
Date: Wed, 25 Nov 2026 09:30:02 +0000 (UTC)
From: MAILER-DAEMON@mx.uni.example (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: intake@uni.example
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="4XYZ1a2b3c.1795599002/mx.uni.example"
Content-Transfer-Encoding: 8bit
Message-Id: <20261125093002.4XYZ1a2b3c@mx.uni.example>

This is a MIME-encapsulated message.

--4XYZ1a2b3c.1795599002/mx.uni.example
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.uni.example.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

                   The mail system

<safety@services.example>: host mx.services.example[192.0.2.10] said: 550 5.1.1
    <safety@services.example>: Recipient address rejected: User unknown in
    local recipient table (in reply to RCPT TO command)

--4XYZ1a2b3c.1795599002/mx.uni.example
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.uni.example
X-Postfix-Queue-ID: 4XYZ1a2b3c
X-Postfix-Sender: rfc822; intake@uni.example
Original-Envelope-Id: <envid.R-2026-0042@intake.uni.example>
Arrival-Date: Wed, 25 Nov 2026 09:30:01 +0000 (UTC)

Final-Recipient: rfc822; safety@services.example
Original-Recipient: rfc822;safety@services.example
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx.services.example
Diagnostic-Code: smtp; 550 5.1.1 <safety@services.example>: Recipient address
    rejected: User unknown in local recipient table

--4XYZ1a2b3c.1795599002/mx.uni.example
Content-Description: Undelivered Message
Content-Type: message/rfc822

Return-Path: <intake@uni.example>
Received: from intake.uni.example (intake.uni.example [192.0.2.4])
\tby mx.uni.example (Postfix) with ESMTPS id 4XYZ1a2b3c
\tfor <safety@services.example>; Wed, 25 Nov 2026 09:30:01 +0000 (UTC)
From: Report Intake <intake@uni.example>
To: safety@services.example
Subject: Referral R-2026-0042
Date: Wed, 25 Nov 2026 09:30:00 +0000
Message-ID: <referral.R-2026-0042@intake.uni.example>
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii

(the encrypted referral)

--4XYZ1a2b3c.1795599002/mx.uni.example--
"""

EXCHANGE = b"""From: Microsoft Outlook <postmaster@uni.example>
To: <intake@uni.example>
Date: Wed, 25 Nov 2026 09:31:10 +0000
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="b1f8e3a0-6c2d-4d52-9a53-0d5b2b5d1c11"
X-MS-Exchange-Message-Is-Ndr:
Content-Language: en-GB
Message-ID: <9b2e7c4a-0a3e-4f7e-b3b6-6e1c0a6f2e01@AM6PR01MB1234.eurprd01.prod.exchangelabs.com>
In-Reply-To: <ack.R-2026-0042@intake.uni.example>
References: <ack.R-2026-0042@intake.uni.example>
Subject: Undeliverable: Your report has been received
MIME-Version: 1.0

--b1f8e3a0-6c2d-4d52-9a53-0d5b2b5d1c11
Content-Type: multipart/alternative;
\tboundary="a0e2f4c6-1111-2222-3333-444455556666"

--a0e2f4c6-1111-2222-3333-444455556666
Content-Type: text/plain; charset="us-ascii"
Content-Transfer-Encoding: quoted-printable

Your message to reporter@example.com couldn't be delivered.
reporter wasn't found at example.com.

--a0e2f4c6-1111-2222-3333-444455556666
Content-Type: text/html; charset="us-ascii"
Content-Transfer-Encoding: quoted-printable

<html><body><p>Your message to reporter@example.com couldn't be delivered.</p></body></html>

--a0e2f4c6-1111-2222-3333-444455556666--

--b1f8e3a0-6c2d-4d52-9a53-0d5b2b5d1c11
Content-Type: message/delivery-status

Reporting-MTA: dns;AM6PR01MB1234.eurprd01.prod.exchangelabs.com
Received-From-MTA: dns;mail.uni.example
Arrival-Date: Wed, 25 Nov 2026 09:31:08 +0000

Final-Recipient: rfc822;reporter@example.com
Action: failed
Status: 5.1.10
Diagnostic-Code: smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup
Remote-MTA: dns;mx.example.com
X-Display-Name: reporter


--b1f8e3a0-6c2d-4d52-9a53-0d5b2b5d1c11
Content-Type: message/rfc822

Received: from mail.uni.example (192.0.2.5) by AM6PR01MB1234.eurprd01.prod.exchangelabs.com
From: Report Intake <intake@uni.example>
To: <reporter@example.com>
Subject: Your report has been received
Date: Wed, 25 Nov 2026 09:31:00 +0000
Message-ID: <ack.R-2026-0042@intake.uni.example>
Content-Type: text/plain; charset="us-ascii"
MIME-Version: 1.0

Thank you for your report.

--b1f8e3a0-6c2d-4d52-9a53-0d5b2b5d1c11--
""".replace(b"\n", b"\r\n")


def gmail(kind: str, action: str, status: str) -> bytes:
    return f"""Delivered-To: intake@uni.example
Return-Path: <>
From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
To: intake@uni.example
Auto-Submitted: auto-replied
Subject: Delivery Status Notification ({kind})
References: <ack.R-2026-0051@intake.uni.example>
In-Reply-To: <ack.R-2026-0051@intake.uni.example>
X-Failed-Recipients: nobody.here@gmail.com
Message-ID: <6740a1b2.050a0220.1c2d3e.0000.GMR@mx.google.com>
Date: Wed, 25 Nov 2026 01:32:00 -0800 (PST)
MIME-Version: 1.0
Content-Type: multipart/report; boundary="000000000000a1b2c3"; report-type=delivery-status

--000000000000a1b2c3
Content-Type: multipart/related; boundary="000000000000d4e5f6"

--000000000000d4e5f6
Content-Type: multipart/alternative; boundary="000000000000g7h8i9"

--000000000000g7h8i9
Content-Type: text/plain; charset="UTF-8"


** Message {"not delivered" if kind == "Failure" else "delayed"} **

There was a problem delivering your message to nobody.here@gmail.com.

--000000000000g7h8i9
Content-Type: text/html; charset="UTF-8"

<html><body><h2>Message {kind}</h2></body></html>

--000000000000g7h8i9--
--000000000000d4e5f6
Content-Type: image/png; name="icon.png"
Content-Disposition: attachment; filename="icon.png"
Content-Transfer-Encoding: base64
Content-ID: <icon.png>

iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==
--000000000000d4e5f6--
--000000000000a1b2c3
Content-Type: message/delivery-status

Reporting-MTA: dns; googlemail.com
Received-From-MTA: dns; intake.uni.example
Arrival-Date: Wed, 25 Nov 2026 01:31:58 -0800 (PST)
X-Original-Message-ID: <ack.R-2026-0051@intake.uni.example>

Final-Recipient: rfc822; nobody.here@gmail.com
Action: {action}
Status: {status}
Remote-MTA: dns; gmail-smtp-in.l.google.com. (2a00:1450:400c:c0b::1b, the server for the domain gmail.com.)
Diagnostic-Code: smtp; {status[0]}50-{status} The email account that you tried to reach is unavailable.
Last-Attempt-Date: Wed, 25 Nov 2026 01:32:00 -0800 (PST)

--000000000000a1b2c3
Content-Type: message/rfc822

From: Report Intake <intake@uni.example>
To: nobody.here@gmail.com
Subject: Your report has been received
Message-ID: <ack.R-2026-0051@intake.uni.example>
Date: Wed, 25 Nov 2026 09:31:57 +0000

Thank you for your report.

--000000000000a1b2c3--
""".encode()


SENDMAIL_HEADERS_ONLY = b"""Return-Path: <>
From: Mail Delivery Subsystem <MAILER-DAEMON@relay.services.example>
To: <intake@uni.example>
Subject: Returned mail: see transcript for details
Auto-Submitted: auto-generated (failure)
MIME-Version: 1.0
Content-Type: multipart/report; report-type="delivery-status";
\tboundary="5APUTNb2022811@relay.services.example"

--5APUTNb2022811@relay.services.example
Content-Type: text/plain

The original message was received at Wed, 25 Nov 2026 09:40:00 GMT
   ----- The following addresses had permanent fatal errors -----
<counselling@services.example>

--5APUTNb2022811@relay.services.example
Content-Type: message/delivery-status

Reporting-MTA: dns; relay.services.example

Final-Recipient: RFC822; counselling@services.example
Action: failed
Status: 5.2.2
Diagnostic-Code: SMTP; 552 5.2.2 Mailbox full

--5APUTNb2022811@relay.services.example
Content-Type: text/rfc822-headers

Return-Path: <intake@uni.example>
Received: from intake.uni.example (intake.uni.example [192.0.2.4])
\tby relay.services.example (8.17.1/8.17.1) with ESMTP id 5APUTNb2022811
Subject: Referral R-2026-0043
Message-ID:
 <referral.R-2026-0043@intake.uni.example>
From: Report Intake <intake@uni.example>

--5APUTNb2022811@relay.services.example--
"""

QMAIL = b"""Return-Path: <>
Received: (qmail 29911 invoked for bounce); 25 Nov 2026 09:45:03 -0000
Date: 25 Nov 2026 09:45:03 -0000
From: MAILER-DAEMON@mail.oldhost.example
To: intake@uni.example
Subject: failure notice

Hi. This is the qmail-send program at mail.oldhost.example.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<warden@oldhost.example>:
192.0.2.25 does not like recipient.
Remote host said: 550 5.1.1 <warden@oldhost.example>... User unknown
Giving up on 192.0.2.25.

--- Below this line is a copy of the message.

Return-Path: <intake@uni.example>
Received: (qmail 29905 invoked from network); 25 Nov 2026 09:45:02 -0000
Received: from intake.uni.example (HELO intake.uni.example) (192.0.2.4)
  by mail.oldhost.example with SMTP; 25 Nov 2026 09:45:02 -0000
From: Report Intake <intake@uni.example>
To: warden@oldhost.example
Subject: Referral R-2026-0044
Message-ID: <referral.R-2026-0044@intake.uni.example>

(the encrypted referral)
"""

EXIM_TEXT = b"""Return-path: <>
From: Mail Delivery System <Mailer-Daemon@exim.example>
To: intake@uni.example
Subject: Mail delivery failed: returning message to sender
Auto-Submitted: auto-replied
Message-Id: <E1tFxyz-0001Ab-Cd@exim.example>

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  helpdesk@exim.example
    Unrouteable address

------ This is a copy of the message, including all the headers. ------

Return-path: <intake@uni.example>
Received: from intake.uni.example ([192.0.2.4])
\tby exim.example with esmtps (Exim 4.94.2)
\tid 1tFxyz-0001Aa-Bc; Wed, 25 Nov 2026 09:50:00 +0000
Message-ID: <referral.R-2026-0045@intake.uni.example>
Subject: Referral R-2026-0045

(the encrypted referral)
"""


def two_recipients() -> bytes:
    """A DSN whose first recipient is only delayed and whose second failed."""
    return SENDMAIL_HEADERS_ONLY.replace(
        b"Final-Recipient: RFC822; counselling@services.example\nAction: failed\nStatus: 5.2.2\n",
        b"Final-Recipient: rfc822; slow@services.example\nAction: delayed\nStatus: 4.4.7\n"
        b"Will-Retry-Until: Fri, 27 Nov 2026 09:40:00 GMT\n\n"
        b"Final-Recipient: rfc822; counselling@services.example\nAction: failed\nStatus: 5.2.2\n",
    )


# --- recognised ------------------------------------------------------------------------------


def test_postfix_failure_names_the_referral_and_ignores_the_envelope_id() -> None:
    bounce = recognise_bounce(parse(POSTFIX))
    assert bounce == Bounce(
        message_ids=("<referral.R-2026-0042@intake.uni.example>",),
        permanent=True,
        status="5.1.1",
        action="failed",
        recipients=("safety@services.example",),
    )


def test_exchange_ndr_from_postmaster_with_nested_alternative_and_crlf() -> None:
    bounce = recognise_bounce(parse(EXCHANGE))
    assert bounce == Bounce(
        ("<ack.R-2026-0042@intake.uni.example>",),
        True,
        "5.1.10",
        "failed",
        ("reporter@example.com",),
    )


def test_gmail_failure() -> None:
    bounce = recognise_bounce(parse(gmail("Failure", "failed", "5.1.1")))
    ids = ("<ack.R-2026-0051@intake.uni.example>",)
    assert bounce == Bounce(ids, True, "5.1.1", "failed", ("nobody.here@gmail.com",))


def test_gmail_delay_is_temporary() -> None:
    bounce = recognise_bounce(parse(gmail("Delay", "delayed", "4.4.1")))
    ids = ("<ack.R-2026-0051@intake.uni.example>",)
    assert bounce == Bounce(ids, False, "4.4.1", "delayed", ("nobody.here@gmail.com",))


def test_headers_only_dsn_reads_a_folded_message_id() -> None:
    bounce = recognise_bounce(parse(SENDMAIL_HEADERS_ONLY))
    ids = ("<referral.R-2026-0043@intake.uni.example>",)
    assert bounce == Bounce(ids, True, "5.2.2", "failed", ("counselling@services.example",))


def test_one_failed_and_one_delayed_recipient_is_permanent_with_the_failed_status() -> None:
    bounce = recognise_bounce(parse(two_recipients()))
    ids = ("<referral.R-2026-0043@intake.uni.example>",)
    # only the failed recipient: the delayed one's mail did not bounce
    assert bounce == Bounce(ids, True, "5.2.2", "failed", ("counselling@services.example",))


def test_qmail_text_bounce_takes_the_code_from_the_explanation() -> None:
    bounce = recognise_bounce(parse(QMAIL))
    ids = ("<referral.R-2026-0044@intake.uni.example>",)
    assert bounce == Bounce(ids, True, "5.1.1", None, ("warden@oldhost.example",))


def test_exim_text_bounce_does_not_read_a_version_number_as_a_status() -> None:
    bounce = recognise_bounce(parse(EXIM_TEXT))
    ids = ("<referral.R-2026-0045@intake.uni.example>",)
    assert bounce == Bounce(ids, True, None, None, ("helpdesk@exim.example",))


def test_dsn_without_the_original_is_still_a_bounce() -> None:
    raw = POSTFIX.split(b"--4XYZ1a2b3c.1795599002/mx.uni.example\nContent-Description: Undel")[0]
    bounce = recognise_bounce(parse(raw + b"--4XYZ1a2b3c.1795599002/mx.uni.example--\n"))
    assert bounce == Bounce((), True, "5.1.1", "failed", ("safety@services.example",))


def test_several_originals_are_listed_once_in_order() -> None:
    extra = (
        b"--5APUTNb2022811@relay.services.example\nContent-Type: message/rfc822\n\n"
        b"Message-ID: <second@intake.uni.example>\n\nx\n"
        b"--5APUTNb2022811@relay.services.example\nContent-Type: message/rfc822\n\n"
        b"Message-ID: <referral.R-2026-0043@intake.uni.example>\n\nx\n"
    )
    raw = SENDMAIL_HEADERS_ONLY.replace(
        b"--5APUTNb2022811@relay.services.example--",
        extra + b"--5APUTNb2022811@relay.services.example--",
    )
    bounce = recognise_bounce(parse(raw))
    assert bounce is not None
    assert bounce.message_ids == (
        "<referral.R-2026-0043@intake.uni.example>",
        "<second@intake.uni.example>",
    )


def test_base64_encoded_delivery_status_is_decoded() -> None:
    status = b"Reporting-MTA: dns; mx\n\nFinal-Recipient: rfc822; a@b.example\nAction: delayed\nStatus: 4.4.1\n"
    raw = POSTFIX.replace(
        b"Content-Type: message/delivery-status\n",
        b"Content-Type: message/delivery-status\nContent-Transfer-Encoding: base64\n",
    )
    start = raw.index(b"Reporting-MTA")
    end = raw.index(b"--4XYZ", start)
    raw = raw[:start] + base64.encodebytes(status) + b"\n" + raw[end:]
    bounce = recognise_bounce(parse(raw))
    assert bounce is not None
    assert (bounce.permanent, bounce.status, bounce.action) == (False, "4.4.1", "delayed")


def test_successful_delivery_notice_is_recognised_but_not_a_failure() -> None:
    raw = POSTFIX.replace(b"Action: failed\nStatus: 5.1.1", b"Action: delivered\nStatus: 2.0.0")
    assert recognise_bounce(parse(raw)) == Bounce(
        ("<referral.R-2026-0042@intake.uni.example>",),
        False,
        "2.0.0",
        "delivered",
        ("safety@services.example",),
    )


def test_unknown_charset_and_broken_headers_do_not_hide_a_bounce() -> None:
    raw = POSTFIX.replace(
        b"charset=us-ascii\n\nThis is the mail", b"charset=x-no-such-charset\n\nThis is the mail"
    )
    raw = raw.replace(
        b"Date: Wed, 25 Nov 2026 09:30:02 +0000 (UTC)\n",
        b"Date: \xff\xfe not a date\nTo: ,,,<<@>\n",
    )
    bounce = recognise_bounce(parse(raw))
    assert bounce is not None and bounce.message_ids == (
        "<referral.R-2026-0042@intake.uni.example>",
    )


# --- not bounces -----------------------------------------------------------------------------


def test_report_that_talks_about_a_bounce_is_not_one() -> None:
    raw = b"""From: Sam Student <sam@student.uni.example>
To: intake@uni.example
Subject: my email bounced
Message-ID: <report-1@student.uni.example>

I tried to write to the counsellor but got "Undelivered Mail Returned to Sender".
Here is what it said:

  550 5.1.1 User unknown
  Message-ID: <abc@student.uni.example>

Please help, this is about harassment in my residence hall.
"""
    assert recognise_bounce(parse(raw)) is None


def test_forwarded_bounce_attached_by_a_person_is_not_one() -> None:
    raw = (
        b"From: Sam Student <sam@student.uni.example>\nTo: intake@uni.example\n"
        b"Subject: Fwd: Undelivered Mail Returned to Sender\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="FWD"\n\n'
        b"--FWD\nContent-Type: text/plain\n\nMy report did not arrive, see the attached bounce.\n"
        b"--FWD\nContent-Type: message/rfc822\nContent-Disposition: attachment\n\n"
        + POSTFIX
        + b"\n--FWD--\n"
    )
    assert recognise_bounce(parse(POSTFIX)) is not None  # the same DSN on its own is one
    assert recognise_bounce(parse(raw)) is None


def test_dsn_shaped_mail_from_a_person_is_not_one() -> None:
    raw = POSTFIX.replace(b"Return-Path: <>", b"Return-Path: <sam@student.uni.example>")
    raw = raw.replace(
        b"From: MAILER-DAEMON@mx.uni.example (Mail Delivery System)",
        b"From: sam@student.uni.example",
    )
    assert recognise_bounce(parse(raw)) is None


def test_out_of_office_reply_quoting_our_headers_is_not_one() -> None:
    raw = b"""Return-Path: <>
From: Dr Alex Warden <a.warden@services.example>
To: intake@uni.example
Subject: Automatic reply: Referral R-2026-0042
Auto-Submitted: auto-replied
X-Autoreply: yes

I am out of the office until Monday.

-----Original Message-----
From: Report Intake <intake@uni.example>
Message-ID: <referral.R-2026-0042@intake.uni.example>
Subject: Referral R-2026-0042
"""
    assert recognise_bounce(parse(raw)) is None


def test_read_receipt_is_not_one() -> None:
    raw = b"""Return-Path: <>
From: Dr Alex Warden <a.warden@services.example>
To: intake@uni.example
Subject: Read: Referral R-2026-0042
MIME-Version: 1.0
Content-Type: multipart/report; report-type=disposition-notification; boundary="MDN"

--MDN
Content-Type: text/plain

Your message was displayed.
--MDN
Content-Type: message/disposition-notification

Reporting-UA: mail.services.example; Thunderbird
Final-Recipient: rfc822;a.warden@services.example
Original-Message-ID: <referral.R-2026-0042@intake.uni.example>
Disposition: manual-action/MDN-sent-manually; displayed

--MDN
Content-Type: text/rfc822-headers

Message-ID: <referral.R-2026-0042@intake.uni.example>
Subject: Referral R-2026-0042

--MDN--
"""
    assert recognise_bounce(parse(raw)) is None


def test_postmaster_forwarding_a_phish_with_full_headers_is_a_report() -> None:
    raw = b"""Return-Path: <postmaster@uni.example>
From: Uni Postmaster <postmaster@uni.example>
To: intake@uni.example
Subject: Phishing campaign targeting students

Several students received this; full headers below.

Received: from evil.example (evil.example [203.0.113.9])
Message-ID: <phish-123@evil.example>
Subject: Your account will be closed
"""
    assert recognise_bounce(parse(raw)) is None
    # The same text from the mail system itself is a bounce.
    daemon = raw.replace(b"Return-Path: <postmaster@uni.example>", b"Return-Path: <>")
    assert recognise_bounce(parse(daemon)) == Bounce(
        ("<phish-123@evil.example>",), True, None, None
    )


def test_mailer_daemon_text_without_a_quoted_message_id_is_not_recognised() -> None:
    raw = b"From: MAILER-DAEMON@mx.example\nReturn-Path: <>\nSubject: failure notice\n\nSomething failed.\n"
    assert recognise_bounce(parse(raw)) is None


def test_unreadable_dsn_from_a_mailer_is_still_a_bounce_not_a_report() -> None:
    raw = b"From: MAILER-DAEMON@x\nContent-Type: message/delivery-status\nContent-Transfer-Encoding: base64\n\n!!!=\n"
    assert recognise_bounce(parse(raw)) == Bounce((), True, None, None)
    delayed = raw.replace(b"From:", b"Subject: Delayed Mail (still being retried)\nFrom:")
    assert recognise_bounce(parse(delayed)) == Bounce((), False, None, None)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\xff\xfe garbage with no headers",
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=\n\n--\n--\n",
        b'From: =?x-unknown?q?=FF?= <MAILER-DAEMON@x>\nContent-Type: text/plain; charset="\xff"\n\nMessage-ID:\n',
    ],
)
def test_garbage_is_none(raw: bytes) -> None:
    assert recognise_bounce(parse(raw)) is None


def test_deep_nesting_stops_reading_instead_of_recursing() -> None:
    depth = 60
    head = b"From: MAILER-DAEMON@mx.example\nReturn-Path: <>\n"
    body = POSTFIX.split(b"\n\n", 1)[1]  # the DSN's parts, without its top-level headers
    inner = (
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="4XYZ1a2b3c.1795599002/mx.uni.example"\n\n'
        + body
    )
    for level in range(depth):
        boundary = f"L{level}".encode()
        inner = (
            b'Content-Type: multipart/mixed; boundary="'
            + boundary
            + b'"\n\n--'
            + boundary
            + b"\n"
            + inner
            + b"\n--"
            + boundary
            + b"--\n"
        )
    assert recognise_bounce(parse(head + inner)) is None  # the DSN lies beyond the depth limit


# --- never raises ----------------------------------------------------------------------------


def _recognise_raw(raw: bytes) -> Bounce | None:
    try:
        msg = parse(raw)
    except Exception:  # CPython's parser itself can fail on rare inputs; read_message owns that
        reject()
    return recognise_bounce(msg)


def _is_bounce_or_none(result: object) -> bool:
    if result is None:
        return True
    return (
        isinstance(result, Bounce)
        and all(i.startswith("<") and i.endswith(">") for i in result.message_ids)
        and len(set(result.message_ids)) == len(result.message_ids)
        and all("@" in r and r == r.lower() for r in result.recipients)
    )


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    assert _is_bounce_or_none(_recognise_raw(raw))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([POSTFIX, EXCHANGE, SENDMAIL_HEADERS_ONLY, QMAIL]), st.data())
def test_damaged_bounces_never_raise(raw: bytes, data: st.DataObject) -> None:
    position = data.draw(st.integers(0, len(raw)))
    cut = data.draw(st.integers(0, 64))
    noise = data.draw(st.binary(max_size=64))
    assert _is_bounce_or_none(_recognise_raw(raw[:position] + noise + raw[position + cut :]))


# --- recorded: only a matching Message-ID *and* recipient changes mail ----------------------


def _store(tmp_path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'intake.db'}")
    with Session(engine) as session:
        report = ReportRow(
            reference="R-2026-000042",
            source="email",
            fingerprint="f",
            received_at=datetime(2026, 11, 25, tzinfo=UTC),
            month="2026-11",
            state="delivered",
        )
        session.add(report)
        session.flush()
        for kind, target, message_id, recipient in [
            (
                "referral",
                "advice",
                "<referral.R-2026-0042@intake.uni.example>",
                "Safety@services.example",
            ),
            ("ack", "reporter", "<ack.R-2026-0042@intake.uni.example>", None),
        ]:
            session.add(
                OutboxRow(
                    report_id=report.id,
                    kind=kind,
                    target=target,
                    message_id=message_id,
                    recipient=recipient,
                    state=OutboxState.SENT,
                )
            )
        session.commit()
    return engine


def _rows(engine: Engine) -> dict[str, tuple[str, str | None]]:
    with Session(engine) as session:
        return {r.kind: (r.state, r.last_error) for r in session.exec(select(OutboxRow))}


def _audit(engine: Engine) -> list[tuple[str, str | None, str]]:
    with Session(engine) as session:
        rows = session.exec(select(AuditRow).where(AuditRow.action == "input")).all()
        return [(a.action, a.reference, a.detail) for a in rows]


def test_a_bounce_naming_message_id_and_recipient_marks_the_mail(tmp_path: Path) -> None:
    engine = _store(tmp_path)
    bounce = recognise_bounce(parse(POSTFIX))
    assert bounce is not None
    assert record_bounce(engine, bounce) == [("advice", "R-2026-000042")]
    assert _rows(engine)["referral"] == ("bounced", "bounced: failed 5.1.1")
    assert _audit(engine) == [("input", "R-2026-000042", "bounce: referral, bounced: failed 5.1.1")]


def test_a_forged_bounce_with_the_right_message_id_but_another_recipient_changes_nothing(
    tmp_path: Path,
) -> None:
    engine = _store(tmp_path)
    forged = POSTFIX.replace(b"safety@services.example", b"attacker@evil.example")
    bounce = recognise_bounce(parse(forged))
    assert bounce is not None and bounce.recipients == ("attacker@evil.example",)
    assert record_bounce(engine, bounce) == []
    assert _rows(engine)["referral"] == ("sent", None)
    assert _audit(engine) == [
        ("input", "R-2026-000042", "bounce: referral, recipient does not match")
    ]
    without_recipient = Bounce(bounce.message_ids, True, "5.1.1", "failed", ())
    assert record_bounce(engine, without_recipient) == []
    assert _rows(engine)["referral"] == ("sent", None)


def test_a_bounce_for_an_acknowledgement_is_recorded_only(tmp_path: Path) -> None:
    engine = _store(tmp_path)
    bounce = recognise_bounce(parse(EXCHANGE))
    assert bounce is not None
    assert record_bounce(engine, bounce) == []
    assert _rows(engine)["ack"] == ("sent", None)
    assert _audit(engine) == [("input", "R-2026-000042", "bounce: ack, no recipient kept")]


def test_an_unmatched_bounce_is_counted_without_an_address(tmp_path: Path) -> None:
    engine = _store(tmp_path)
    bounce = recognise_bounce(parse(QMAIL))
    assert bounce is not None
    assert record_bounce(engine, bounce) == []
    assert _audit(engine) == [("input", None, "bounce: unmatched")]
    assert all("@" not in detail for _, _, detail in _audit(engine))


def test_x_failed_recipients_and_original_recipient_are_read() -> None:
    raw = POSTFIX.replace(
        b"Original-Recipient: rfc822;safety@services.example",
        b"Original-Recipient: rfc822;Alias@Services.example",
    )
    bounce = recognise_bounce(parse(raw))
    assert bounce is not None
    assert bounce.recipients == ("safety@services.example", "alias@services.example")
    text = EXIM_TEXT.replace(
        b"Auto-Submitted", b"X-Failed-Recipients: other@exim.example\nAuto-Submitted"
    )
    bounce = recognise_bounce(parse(text))
    assert bounce is not None
    assert bounce.recipients == ("other@exim.example", "helpdesk@exim.example")
