"""An SMTP server that refuses never makes the daemon loop (issue 9): a configuration fault
(530, 535, 5.7.x) holds the whole queue with one alert and sending resumes by itself; dead
letters are announced once an hour; an alert mail that fails raises nothing; urgent mail goes
first and stands out. Real daemon runs (`run_daemon.py --once`), Dovecot, gpg, aiosmtpd."""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import timedelta
from typing import TypeVar

import pytest
from sqlalchemy import text
from sqlmodel import Session, SQLModel, create_engine, select

from pipeline.config import SmtpConfig
from pipeline.deliver import SendError, SmtpTransport
from pipeline.models import AlertRow, OutboxRow, ReportRow, utcnow
from tests.integration.conftest import ADMIN, Deployment, email
from tests.integration.test_faults import set_smtp
from tests.servers.smtp import SmtpSink, Stage

Row = TypeVar("Row", bound=SQLModel)
STARTTLS_FIRST = "530 5.7.0 Must issue a STARTTLS command first"


def rows(deployment: Deployment, model: type[Row]) -> list[Row]:
    engine = create_engine(deployment.config().database_url)
    try:
        with Session(engine) as session:
            return list(session.exec(select(model)))
    finally:
        engine.dispose()


def outbox(deployment: Deployment) -> Counter[tuple[str, str, int]]:
    """(kind, state, attempts) of every outbox row."""
    return Counter((r.kind, r.state, r.attempts) for r in rows(deployment, OutboxRow))


def alert_kinds(deployment: Deployment) -> list[str | None]:
    return [alert.kind for alert in rows(deployment, AlertRow)]


def timed_run(deployment: Deployment) -> str:
    """One `--once` run, which must end quickly whatever the server says; its log."""
    started = time.monotonic()
    run = deployment.run_once()
    assert time.monotonic() - started < 60, "the drain did not end"
    return run.stderr


def assert_sent_once_each(deployment: Deployment, count: int) -> None:
    received = deployment.smtp.wait_for(count)
    ids = Counter(str(m.message["Message-ID"]) for m in received)
    assert len(ids) == count and set(ids.values()) == {1}
    assert {state for _, state, _ in outbox(deployment)} == {"sent"}


def test_530_holds_the_whole_queue_then_sending_resumes_by_itself(
    deployment: Deployment,
) -> None:
    deployment.smtp.refuse(STARTTLS_FIRST, at="MAIL")
    for n in range(2):
        deployment.imap.append(email(f"Held by a 530, {n}", message_id=f"<held-{n}@x>"))

    log = timed_run(deployment)

    assert len(deployment.smtp.refusals) == 1  # one try, then the queue is held
    held = {("referral", "queued", 0): 2, ("ack", "queued", 0): 2, ("alert", "queued", 0): 1}
    assert outbox(deployment) == held  # nothing dead-lettered, no attempt used up
    assert alert_kinds(deployment) == ["smtp"]
    assert f"{deployment.smtp.host}:{deployment.smtp.port}" in log and "smtp.security" in log
    assert [item["reason"] for item in attention(deployment, "smtp")] == [
        f"the SMTP server {deployment.smtp.host}:{deployment.smtp.port} refuses our mail "
        "(SMTP 530 5.7.0 at MAIL): the outbox is held until it accepts mail again; check "
        "smtp.security"
    ]

    deployment.smtp.accept()
    timed_run(deployment)
    assert_sent_once_each(deployment, 5)
    [alert] = [m for m in deployment.smtp.messages if m.rcpt_tos == [ADMIN]]
    assert "outbox held" in str(alert.message["Subject"])
    assert attention(deployment, "smtp") == []  # listed until it works again


def attention(deployment: Deployment, kind: str) -> list[dict[str, object]]:
    status = json.loads(deployment.intake("status", "--json").stdout)
    return [item for item in status["attention"] if item["kind"] == kind]


def test_a_server_down_is_listed_at_once_and_alerted_once_it_lasts(
    deployment: Deployment,
) -> None:
    deployment.imap.append(email("While the server is down", message_id="<down-1@x>"))
    deployment.smtp.stop()
    timed_run(deployment)
    (listed,) = attention(deployment, "smtp")
    assert "is not taking mail" in str(listed["reason"])
    assert alert_kinds(deployment) == []  # a restart of the server is not worth a mail

    engine = create_engine(deployment.config().database_url)
    with engine.begin() as connection:  # as if the first failure were 20 minutes ago
        connection.execute(
            text("UPDATE source_status SET error_since = :t WHERE name = 'outbox'"),
            {"t": utcnow() - timedelta(minutes=20)},
        )
    engine.dispose()
    timed_run(deployment)
    assert alert_kinds(deployment) == ["smtp"]


def test_535_at_auth_holds_the_queue_and_names_the_keys_not_the_password(
    deployment: Deployment,
) -> None:
    set_smtp(deployment, 'username = "intake"\npassword = "pw-8d2e-never-logged"')
    deployment.smtp.refuse("535 5.7.8 Authentication credentials invalid", at="AUTH")
    deployment.imap.append(email("Held by a 535", message_id="<auth@x>"))

    log = timed_run(deployment)

    assert {stage for stage, _ in deployment.smtp.refusals} == {"AUTH"}
    assert outbox(deployment) == {
        ("referral", "queued", 0): 1,
        ("ack", "queued", 0): 1,
        ("alert", "queued", 0): 1,
    }
    assert alert_kinds(deployment) == ["smtp"]
    assert "smtp.username and smtp.password" in log and "pw-8d2e" not in log

    deployment.smtp.accept()
    timed_run(deployment)
    assert_sent_once_each(deployment, 3)
    assert deployment.smtp.logins == ["intake"]  # one sign-in: the drain's one connection
    assert [m.auth for m in deployment.smtp.messages] == [("PLAIN", "intake")] * 3


def test_a_failed_alert_mail_makes_no_more_mail_and_dead_letters_make_one_alert_an_hour(
    deployment: Deployment,
) -> None:
    hour = utcnow().hour
    deployment.smtp.refuse("550 5.1.1 no such mailbox", at="RCPT")  # every mail, for good
    deployment.imap.append(email("Nobody can be reached", message_id="<dead-1@x>"))

    timed_run(deployment)

    assert outbox(deployment) == {
        ("referral", "failed", 1): 1,
        ("ack", "failed", 1): 1,
        ("alert", "failed", 1): 1,  # the dead-letter alert failed too: logged and listed only
    }
    assert len(deployment.smtp.refusals) == 3 and deployment.smtp.messages == []
    [alert] = rows(deployment, AlertRow)
    [reference] = [report.reference for report in rows(deployment, ReportRow)]
    assert (alert.kind, alert.subject) == (
        "dead-letter",
        f"2 mail(s) could not be delivered: {reference}",
    )

    deployment.smtp.accept()
    deployment.smtp.script("550 5.1.1 no such mailbox", times=1, at="RCPT")
    deployment.imap.append(email("Another dead letter", message_id="<dead-2@x>"))
    timed_run(deployment)
    if utcnow().hour != hour:
        pytest.skip("the hour turned between the runs: a second alert is right then")

    assert outbox(deployment)[("referral", "failed", 1)] == 2
    assert len(rows(deployment, AlertRow)) == 1  # the same hour: no second alert, no mail
    assert [m.rcpt_tos for m in deployment.smtp.messages] == [["sam.student@example.ac.uk"]]


def test_urgent_mail_goes_first_and_its_referral_stands_out(deployment: Deployment) -> None:
    deployment.write(extra='[referrals]\nurgent_marker = "[URGENT]"\n')
    deployment.imap.append(email("Something happened at the social", message_id="<old@x>"))
    deployment.imap.append(email("I feel in danger at my flat", message_id="<urgent@x>"))

    timed_run(deployment)

    received = deployment.smtp.messages
    referrals = [m for m in received if m.message.get_content_type() == "multipart/encrypted"]
    normal, urgent = sorted(referrals, key=lambda m: str(m.message["Subject"]))
    assert received[0] is urgent  # sent before the older, normal report's mail
    older, newer = (str(m.message["Subject"]).split()[1] for m in (normal, urgent))
    assert older < newer and str(normal.message["Subject"]) == f"Referral {older}"
    assert str(urgent.message["Subject"]) == f"Referral {newer} [URGENT]"
    assert (urgent.message["Importance"], urgent.message["Priority"]) == ("high", "urgent")
    assert normal.message["Importance"] is None and normal.message["Priority"] is None
    assert b"danger" not in urgent.data  # the marker says urgent, never why


@pytest.mark.parametrize(
    ("reply", "at", "fault"),
    [
        (STARTTLS_FIRST, "MAIL", "smtp.security"),
        ("530 5.7.0 Authentication required", "RCPT", "smtp.username"),
        ("554 5.7.1 Relay access denied", "RCPT", "smtp.username"),
        ("530 5.7.57 Client not authenticated to send mail", "MAIL", "smtp.username"),
        ("535 5.7.8 Authentication credentials invalid", "AUTH", "smtp.username and"),
    ],
)
def test_auth_and_tls_refusals_are_configuration_faults(
    smtp_sink: SmtpSink, reply: str, at: Stage, fault: str
) -> None:
    transport = SmtpTransport(
        SmtpConfig(host=smtp_sink.host, port=smtp_sink.port, username="u", password="p")
        if at == "AUTH"
        else SmtpConfig(host=smtp_sink.host, port=smtp_sink.port)
    )
    smtp_sink.refuse(reply, at=at)
    with pytest.raises(SendError) as raised:
        transport.send("i@example.ac.uk", "s@example.ac.uk", b"Subject: x\r\n\r\nx\r\n")
    assert raised.value.fault is not None and raised.value.fault.startswith(fault)
    assert not raised.value.unreachable


@pytest.mark.parametrize(
    ("reply", "temporary", "unreachable"),
    [
        ("550 5.1.1 no such mailbox", False, False),
        ("550 5.7.1 Message refused: content policy", False, False),
        ("451 4.3.0 later", True, False),
        ("421 4.3.2 closing", True, True),
    ],
)
def test_other_refusals_are_the_mails_or_the_servers(
    smtp_sink: SmtpSink, reply: str, temporary: bool, unreachable: bool
) -> None:
    smtp_sink.refuse(reply, at="RCPT")
    with pytest.raises(SendError) as raised:
        SmtpTransport(SmtpConfig(host=smtp_sink.host, port=smtp_sink.port)).send(
            "i@example.ac.uk", "s@example.ac.uk", b"Subject: x\r\n\r\nx\r\n"
        )
    error = raised.value
    assert (error.fault, error.temporary, error.unreachable) == (None, temporary, unreachable)
    assert "no such mailbox" not in str(error)  # the server's words are never kept


def test_a_mail_smtplib_cannot_send_is_a_dead_letter_not_a_blocked_queue(
    deployment: Deployment,
) -> None:
    """A service address with a non-ASCII domain (services.yaml takes it) makes smtplib raise
    UnicodeEncodeError: that mail is dead-lettered and listed, the mail behind it goes out."""
    services = deployment.rules_dir / "services.yaml"
    services.write_text(
        services.read_text().replace("advice@su.example.ac.uk", "beratung@universität.example")
    )
    deployment.imap.append(email("Something happened in the lab", message_id="<p1@x>"))

    run = deployment.run_once()

    assert run.returncode & 4, run.stderr
    sender = "sam.student@example.ac.uk"  # email()'s
    acknowledgement = [m for m in deployment.smtp.messages if m.rcpt_tos == [sender]]
    assert len(acknowledgement) == 1  # queued after the referral, sent all the same
    status = json.loads(deployment.intake("status", "--json").stdout)
    (failed,) = [item for item in status["attention"] if item["kind"] == "failed"]
    assert "could not send: UnicodeEncodeError" in failed["reason"]
