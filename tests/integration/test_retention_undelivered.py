"""Retention of reports that never reached a service (held, dead-lettered, bounced): never
purged under `delivered`; under `[retention] undelivered` only after the admins were told a
week ahead."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from email import message_from_bytes
from email.policy import default

import pytest
from sqlalchemy import Connection, Engine, text

from pipeline.app import App
from pipeline.daemon import purge_job
from pipeline.models import utcnow
from pipeline.outbox import DrainResult, drain
from pipeline.retention import (
    GIVEN_UP,
    NOTICE_ACTION,
    announce_undelivered,
    due_for_purge,
    purge,
)
from pipeline.store import make_engine
from tests.integration.conftest import ADMIN, Deployment, Intake, email

OLD = "2020-01-01 00:00:00.000000"


@contextmanager
def opened(deployment: Deployment) -> Iterator[App]:
    os.environ["TEST_IMAP_PASSWORD"] = deployment.imap.password
    app = App.open(deployment.config())
    try:
        yield app
    finally:
        app.close()
        del os.environ["TEST_IMAP_PASSWORD"]


def reports(deployment: Deployment, states: list[tuple[str, str, str, str]]) -> Engine:
    """One report per (report state, referral state, acknowledgement state, updated_at), taken
    in and sent for real, then put in that state at that time (its mail sent then too); ids 1,
    2, ... in order."""
    for n in range(len(states)):
        deployment.imap.append(email(f"CANARY-{n} text.", message_id=f"<r{n}@example.ac.uk>"))
    assert deployment.run_in_process() == 0
    engine = make_engine(deployment.config().database_url)
    with engine.begin() as connection:
        for number, (report, referral, ack, updated) in enumerate(states, start=1):
            connection.execute(
                text("UPDATE report SET state = :s, updated_at = :t WHERE id = :id"),
                {"s": report, "t": updated, "id": number},
            )
            for kind, state in (("referral", referral), ("ack", ack)):
                mail = {"s": state, "t": updated, "id": number, "k": kind}
                for change in ("state = :s", "sent_at = :t"):
                    connection.execute(
                        text(f"UPDATE outbox SET {change} WHERE report_id = :id AND kind = :k"),
                        mail,
                    )
    return engine


def send_queued(app: App) -> DrainResult:
    """Send what waits in the outbox (here: alert mail), without releasing held referrals."""
    return drain(app.config, app.engine, app.crypto, app.transport)


def column(engine: Engine, query: str) -> dict[object, object]:
    with engine.connect() as connection:
        return {row[0]: row[1] for row in connection.execute(text(query))}


def days_ago(days: int) -> str:
    return f"{utcnow() - timedelta(days=days):%Y-%m-%d %H:%M:%S.%f}"


def test_reports_that_never_reached_a_service_are_not_purged_under_delivered(
    deployment: Deployment, intake: Intake
) -> None:
    deployment.write(extra="[retention]\ndelivered = 30\n")
    engine = reports(
        deployment,
        [
            ("queued", "failed", "sent", OLD),  # 1: its referral was dead-lettered
            ("held", "held", "sent", OLD),  # 2: held for a service key that never came
            ("delivered", "bounced", "sent", OLD),  # 3: sent, then bounced
            ("queued", "sent", "failed", OLD),  # 4: referred; only the acknowledgement failed
            ("delivered", "sent", "sent", OLD),  # 5: delivered
        ],
    )
    refs = column(engine, "SELECT id, reference FROM report")

    dry = intake("purge", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    listed = [line.split()[2] for line in dry.stdout.splitlines() if "would purge R-" in line]
    assert listed == [refs[4], refs[5]]
    assert "2 report(s) and 0 form archive(s) due" in dry.stdout

    with opened(deployment) as app:
        assert purge_job(app)
    purged = column(engine, "SELECT id, purged_at IS NOT NULL FROM report")
    assert purged == {1: False, 2: False, 3: False, 4: True, 5: True}
    kept = column(engine, "SELECT DISTINCT report_id, 1 FROM encrypted_record")
    assert set(kept) == {1, 2, 3}
    errors = column(engine, "SELECT last_error, count(*) FROM outbox GROUP BY last_error")
    assert GIVEN_UP not in errors  # the held referral is not given up
    assert column(engine, "SELECT kind, count(*) FROM alert GROUP BY kind").get("retention") is None
    engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_undelivered_reports_are_announced_a_week_ahead_then_purged(
    deployment: Deployment, backend: str, request: pytest.FixtureRequest
) -> None:
    if backend == "postgres":
        deployment.database_url = request.getfixturevalue("pg_url")
    deployment.write(extra="[retention]\ndelivered = 30\nundelivered = 30\n")
    engine = reports(
        deployment,
        [
            ("queued", "failed", "sent", OLD),  # 1: past its period, never announced
            ("held", "held", "sent", days_ago(25)),  # 2: due in 5 days
            ("delivered", "bounced", "sent", days_ago(10)),  # 3: due in 20 days
            ("delivered", "sent", "sent", OLD),  # 4: delivered, past its period
        ],
    )
    refs = column(engine, "SELECT id, reference FROM report")

    policy = deployment.config().retention
    with opened(deployment) as app:
        assert purge_job(app) and purge_job(app)  # the second tells nobody again
        purged = column(engine, "SELECT id, purged_at IS NOT NULL FROM report")
        assert purged == {1: False, 2: False, 3: False, 4: True}  # 1 waits for its notice
        # its mail not sent yet, the notice names nobody: nothing goes, however late
        assert due_for_purge(engine, policy, utcnow() + timedelta(days=365)) == []
        assert send_queued(app).sent == 1  # the alert mail
    alerts = column(engine, "SELECT subject, kind FROM alert")
    assert len(alerts) == 1 and set(alerts.values()) == {"retention"}
    (subject,) = alerts
    assert isinstance(subject, str)
    assert refs[1] in subject and refs[2] in subject and refs[3] not in subject
    notices = column(
        engine,
        f"SELECT reference, count(*) FROM audit WHERE action = '{NOTICE_ACTION}' GROUP BY reference",
    )
    assert notices == {refs[1]: 1, refs[2]: 1}
    with engine.connect() as connection:
        (recipient, payload) = connection.execute(
            text("SELECT recipient, payload FROM outbox WHERE kind = 'alert'")
        ).one()
    mail = message_from_bytes(bytes(payload), policy=default).get_body().get_content()
    assert recipient == ADMIN and f"{refs[2]}: held" in mail and "CANARY" not in mail

    assert due_for_purge(engine, policy, utcnow() + timedelta(days=6)) == []  # a week from sent
    due = due_for_purge(engine, policy, utcnow() + timedelta(days=8))
    assert [(item.reference, item.period) for item in due] == [
        (refs[1], "undelivered"),
        (refs[2], "undelivered"),
    ]
    assert purge(engine, due, "test") == 2
    purged = column(engine, "SELECT id, purged_at IS NOT NULL FROM report")
    assert purged == {1: True, 2: True, 3: False, 4: True}
    given_up = column(
        engine, "SELECT report_id, last_error FROM outbox WHERE kind = 'referral' AND report_id = 2"
    )
    assert given_up == {2: GIVEN_UP}
    engine.dispose()


def test_purge_dry_run_lists_undelivered_reports_announced_a_week_ago(
    deployment: Deployment, intake: Intake
) -> None:
    deployment.write(extra="[retention]\nundelivered = 30\n")
    engine = reports(
        deployment,
        [
            ("held", "held", "sent", OLD),  # 1: its alert mail was sent long ago
            ("queued", "failed", "sent", OLD),  # 2: never named
            ("held", "held", "sent", OLD),  # 3: named, but its alert mail failed
            ("held", "held", "sent", OLD),  # 4: named, but its alert mail bounced
            ("held", "held", "sent", OLD),  # 5: named, its alert mail still waits
        ],
    )
    refs = column(engine, "SELECT id, reference FROM report")
    with engine.begin() as connection:
        for number, state in ((1, "sent"), (3, "failed"), (4, "bounced"), (5, "queued")):
            told_long_ago(connection, str(refs[number]), state)
    dry = intake("purge", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would purge {refs[1]} (held since 2020-01-01)" in dry.stdout
    assert "1 report(s) and 0 form archive(s) due" in dry.stdout
    engine.dispose()


def told_long_ago(connection: Connection, reference: str, mail: str = "sent") -> None:
    """A purge notice for `reference` in 2020-06, its alert mail (to one admin) in state `mail`
    (sent then when `sent`)."""
    key = f"retention:undelivered:2020-06-01:{reference}"
    connection.execute(
        text(
            "INSERT INTO audit (at, actor, action, reference, detail) VALUES "
            "('2020-06-01 00:00:00.000000', 'daemon', :a, :r, :d)"
        ),
        {"a": NOTICE_ACTION, "r": reference, "d": f"held; alert mail {key}"},
    )
    connection.execute(
        text(
            "INSERT INTO outbox (kind, target, message_id, recipient, payload, state, urgent, "
            "attempts, next_attempt_at, sent_at, created_at) VALUES ('alert', :t, :m, :to, "
            "NULL, :s, false, 1, :at, :sent, :at)"
        ),
        {
            "t": f"{key}#0",
            "m": f"<{key}@example.ac.uk>",
            "to": ADMIN,
            "s": mail,
            "at": "2020-06-01 00:00:00.000000",
            "sent": "2020-06-01 00:01:00.000000" if mail == "sent" else None,
        },
    )


def as_if_yesterday(engine: Engine) -> None:
    """The alerts raised so far were raised yesterday (their mail and notices name them as
    they were)."""
    today, yesterday = f"{utcnow():%Y-%m-%d}", f"{utcnow() - timedelta(days=1):%Y-%m-%d}"
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE alert SET key = replace(key, :t, :y)"), {"t": today, "y": yesterday}
        )


def named_in(deployment: Deployment, references: list[str]) -> list[list[str]]:
    """For each mail the SMTP sink got, which of these references it names."""
    return [
        [reference for reference in references if reference in received.data.decode()]
        for received in deployment.smtp.messages
    ]


def test_each_days_notice_is_mailed_though_an_earlier_one_still_waits(
    deployment: Deployment,
) -> None:
    deployment.write(extra="[retention]\nundelivered = 30\n")
    engine = reports(
        deployment,
        [("queued", "failed", "sent", OLD), ("delivered", "sent", "sent", OLD)],
    )
    refs = [str(reference) for reference in column(engine, "SELECT reference, id FROM report")]
    deployment.smtp.clear()
    config = deployment.config()
    assert announce_undelivered(engine, config) == [refs[0]]  # its mail waits: SMTP is down
    as_if_yesterday(engine)
    with engine.begin() as connection:  # today report 2's referral bounces
        connection.execute(
            text("UPDATE outbox SET state = 'bounced' WHERE report_id = 2 AND kind = 'referral'")
        )
    assert announce_undelivered(engine, config) == [refs[1]]
    assert announce_undelivered(engine, config) == []  # once a day
    mails = column(engine, "SELECT target, state FROM outbox WHERE kind = 'alert'")
    assert list(mails.values()) == ["queued", "queued"]  # each day's notice has its own mail

    policy = config.retention
    assert due_for_purge(engine, policy, utcnow() + timedelta(days=365)) == []  # none sent
    with opened(deployment) as app:
        assert send_queued(app).sent == 2
    assert sorted(named_in(deployment, refs)) == [[refs[0]], [refs[1]]]
    due = due_for_purge(engine, policy, utcnow() + timedelta(days=8))
    assert [item.reference for item in due] == refs
    engine.dispose()


def test_a_notice_whose_mail_failed_names_nobody_and_is_given_again(
    deployment: Deployment,
) -> None:
    deployment.write(extra="[retention]\nundelivered = 30\n")
    engine = reports(deployment, [("queued", "failed", "sent", OLD)])
    (reference,) = column(engine, "SELECT reference, id FROM report")
    deployment.smtp.clear()
    policy = deployment.config().retention
    with opened(deployment) as app:
        assert purge_job(app)
        deployment.smtp.script("550 5.1.1 no such mailbox", at="RCPT")
        assert send_queued(app).failed == 1  # the admin's address is refused: a dead letter
        assert due_for_purge(engine, policy, utcnow() + timedelta(days=365)) == []
        assert purge_job(app)
        assert send_queued(app).sent == 0  # named already today
        as_if_yesterday(engine)
        assert purge_job(app)  # the next day: named again, in a new mail
        assert send_queued(app).sent == 1
    assert named_in(deployment, [str(reference)]) == [[reference]]
    notices = column(engine, f"SELECT id, reference FROM audit WHERE action = '{NOTICE_ACTION}'")
    assert list(notices.values()) == [reference, reference]
    assert due_for_purge(engine, policy, utcnow() + timedelta(days=6)) == []
    due = due_for_purge(engine, policy, utcnow() + timedelta(days=8))
    assert [item.reference for item in due] == [reference]
    engine.dispose()


def test_a_report_whose_last_mail_just_went_is_not_due_before_it_is_settled(
    deployment: Deployment,
) -> None:
    """Its mail is committed as sent before the report is settled (moved to `delivered`, its
    `updated_at` set): in between, its period counts from when the mail went, not from its
    last change of state (a dead letter retried a year on, a held referral released)."""
    deployment.write(extra="[retention]\ndelivered = 30\n")
    engine = reports(deployment, [("queued", "sent", "sent", OLD), ("queued", "sent", "sent", OLD)])
    with engine.begin() as connection:  # the first one's referral went just now
        connection.execute(text("UPDATE outbox SET sent_at = :t WHERE id = 1"), {"t": days_ago(0)})
    with opened(deployment) as app:
        assert [due.reference for due in due_for_purge(app.engine, app.config.retention)] == [
            column(engine, "SELECT id, reference FROM report")[2]
        ]
    engine.dispose()
