"""Alerts: an event that needs an admin in; an `AlertRow` (listed by `intake status`), a log line
at ERROR and a queued mail to each `[alerts] admin` out, once per key. An alert names
references, services, keys and reasons; it never carries report content.

Keys made by `hourly_key` or `daily_key` let the same alert out again in the next hour or day;
its mail is not queued again while the earlier one still waits in the outbox (the SMTP server
is not taking mail), so no pile of alert mail grows while nothing can be sent. Without admins
the alert is recorded and logged only.
"""

from __future__ import annotations

import logging
import re

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from pipeline.config import Config
from pipeline.deliver import build_plain, new_message_id
from pipeline.models import AlertRow, OutboxRow, OutboxState, utcnow
from pipeline.render import Rendered

log = logging.getLogger(__name__)

_STAMP = re.compile(r":\d{4}-\d{2}-\d{2}(T\d{2})?$")  # what daily_key and hourly_key append


def daily_key(*parts: str) -> str:
    """An alert key that lets the same alert out once a day."""
    return ":".join([*parts, utcnow().strftime("%Y-%m-%d")])


def hourly_key(*parts: str) -> str:
    """An alert key that lets the same alert out once an hour."""
    return ":".join([*parts, utcnow().strftime("%Y-%m-%dT%H")])


def raise_alert(
    engine: Engine,
    config: Config,
    key: str,
    subject: str,
    text: str,
    *,
    kind: str = "other",
    urgent: bool = False,
    level: int = logging.ERROR,
) -> bool:
    """Record and log (at `level`) the alert and queue its mail for the admins, unless an alert
    with `key` was raised already; whether it was new. `kind` (e.g. "source", "dead-letter",
    "smtp", "rules", "key") is what `intake status` shows; `urgent` mail is sent first."""
    with Session(engine) as session:
        session.add(AlertRow(key=key, kind=kind, subject=subject))
        try:
            session.flush()
        except IntegrityError:
            session.rollback()
            log.warning("alert raised already (%s): %s", key, subject)
            return False
        log.log(level, "alert: %s", subject)
        if not _still_waiting(session, key):
            _queue_mail(session, config, key, subject, text, urgent)
        session.commit()
    return True


def _queue_mail(
    session: Session, config: Config, key: str, subject: str, text: str, urgent: bool
) -> None:
    sender = config.smtp.from_
    rendered = Rendered(f"[report-intake] {subject}", text + "\n")
    for number, admin in enumerate(config.alerts.admin):
        message_id = new_message_id(sender)
        session.add(
            OutboxRow(
                kind="alert",
                target=f"{key}#{number}",
                message_id=message_id,
                recipient=admin,
                payload=build_plain(sender, message_id, rendered, to=admin),
                urgent=urgent,
            )
        )


def _still_waiting(session: Session, key: str) -> bool:
    """Whether the same alert of an earlier hour or day (its key but the time stamp) has mail
    still waiting in the outbox: that mail tells the admins already."""
    stem = _STAMP.sub("", key)
    if stem == key:
        return False
    query = select(OutboxRow.target).where(
        OutboxRow.kind == "alert",
        OutboxRow.state == OutboxState.QUEUED,
        col(OutboxRow.target).startswith(f"{stem}:", autoescape=True),
    )
    return any(_STAMP.sub("", target.rpartition("#")[0]) == stem for target in session.exec(query))
