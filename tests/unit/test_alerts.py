"""Alerts and the outbox order on a real SQLite database: an alert is recorded even without
admins, mailed once per key, not mailed again while its earlier mail still waits; urgent mail
is claimed first; an urgent referral's outer message stands out without saying more."""

from __future__ import annotations

from datetime import timedelta
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from pipeline.alerts import hourly_key, raise_alert
from pipeline.config import Config
from pipeline.deliver import referral_subject, wrap_pgp_mime
from pipeline.models import AlertRow, OutboxRow, OutboxState, utcnow
from pipeline.store import due_ids, make_engine

ADMINS = ["one@example.ac.uk", "two@example.ac.uk"]


def config(admins: list[str]) -> Config:
    return Config.model_validate({"gpg": {"records_keys": ["A" * 40]}, "alerts": {"admin": admins}})


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return make_engine(f"sqlite:///{tmp_path / 'intake.db'}")


def alerts(engine: Engine) -> list[AlertRow]:
    with Session(engine) as session:
        return list(session.exec(select(AlertRow)))


def alert_mail(engine: Engine) -> list[OutboxRow]:
    with Session(engine) as session:
        return list(session.exec(select(OutboxRow).where(OutboxRow.kind == "alert")))


def test_without_admins_the_alert_is_recorded_but_not_mailed(engine: Engine) -> None:
    assert raise_alert(engine, config([]), "k:1", "the subject", "text", kind="smtp")

    [row] = alerts(engine)
    assert (row.key, row.kind, row.subject) == ("k:1", "smtp", "the subject")
    assert alert_mail(engine) == []


def test_one_mail_per_admin_once_per_key(engine: Engine) -> None:
    assert raise_alert(engine, config(ADMINS), "k:1", "subject", "text", kind="rules")
    assert not raise_alert(engine, config(ADMINS), "k:1", "subject", "text", kind="rules")

    mails = alert_mail(engine)
    assert sorted(m.recipient or "" for m in mails) == ADMINS
    assert len(alerts(engine)) == 1


def test_an_hourly_alert_is_not_mailed_again_while_its_earlier_mail_waits(
    engine: Engine,
) -> None:
    cfg = config(ADMINS[:1])
    earlier = "smtp:2020-01-01T09"
    raise_alert(engine, cfg, earlier, "outbox held", "text", kind="smtp")
    raise_alert(engine, cfg, "smtp-other:2020-01-01T09", "another", "text", kind="smtp")

    assert raise_alert(engine, cfg, hourly_key("smtp"), "outbox held", "text", kind="smtp")
    assert len(alert_mail(engine)) == 2  # recorded (3 alerts), not queued again
    assert len(alerts(engine)) == 3

    with Session(engine) as session:  # the earlier mail went out
        for row in session.exec(select(OutboxRow).where(OutboxRow.target == f"{earlier}#0")):
            row.state = OutboxState.SENT
            session.add(row)
        session.commit()
    assert raise_alert(engine, cfg, "smtp:2020-01-01T11", "outbox held", "text", kind="smtp")
    assert len(alert_mail(engine)) == 3


def test_urgent_mail_is_claimed_first_then_the_oldest(engine: Engine) -> None:
    raise_alert(engine, config(ADMINS[:1]), "a:1", "older", "text")
    raise_alert(engine, config(ADMINS[:1]), "a:2", "newer but urgent", "text", urgent=True)
    raise_alert(engine, config(ADMINS[:1]), "a:3", "newest", "text")

    with Session(engine) as session:
        due = due_ids(session, utcnow() + timedelta(seconds=1), limit=10)
        targets = [session.get(OutboxRow, row_id).target for row_id in due]  # type: ignore[union-attr]
        assert targets == ["a:2#0", "a:1#0", "a:3#0"]
        skipped = due_ids(session, utcnow() + timedelta(seconds=1), limit=10, skip=due[:1])
        assert skipped == due[1:]


@pytest.mark.parametrize(
    ("urgent", "marker", "subject"),
    [
        (True, "(urgent)", "Referral R-2026-000007 (urgent)"),
        (True, "", "Referral R-2026-000007"),
        (False, "(urgent)", "Referral R-2026-000007"),
    ],
)
def test_an_urgent_referral_stands_out_by_headers_and_marker(
    urgent: bool, marker: str, subject: str
) -> None:
    armored = b"-----BEGIN PGP MESSAGE-----\n\nx\n-----END PGP MESSAGE-----\n"
    outer_subject = referral_subject("R-2026-000007", urgent, marker)
    data = wrap_pgp_mime(armored, "i@x", "s@y", outer_subject, "<m@x>", urgent=urgent)

    message = message_from_bytes(data, policy=policy.default)
    assert message["Subject"] == subject
    assert message.get("Importance") == ("high" if urgent else None)
    assert message.get("Priority") == ("urgent" if urgent else None)
