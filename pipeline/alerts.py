"""Alerts: an event that needs an admin in, a log line at ERROR and (once per key) a queued mail
to the `[alerts] admin` addresses out. An alert names references, services, keys and reasons;
it never carries report content.
"""

from __future__ import annotations

import logging

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from pipeline.config import Config
from pipeline.deliver import build_plain, new_message_id
from pipeline.models import AlertRow, OutboxRow, utcnow
from pipeline.render import Rendered

log = logging.getLogger(__name__)


def daily_key(*parts: str) -> str:
    """An alert key that lets the same alert out once a day."""
    return ":".join([*parts, utcnow().strftime("%Y-%m-%d")])


def hourly_key(*parts: str) -> str:
    """An alert key that lets the same alert out once an hour."""
    return ":".join([*parts, utcnow().strftime("%Y-%m-%dT%H")])


def raise_alert(
    engine: Engine, config: Config, key: str, subject: str, text: str, *, kind: str = "other"
) -> bool:
    """Log the alert and queue it for the admins, unless an alert with `key` went out already.
    `kind` (e.g. "source", "dead-letter", "smtp", "rules", "key") is what `intake status` shows."""
    log.error("alert: %s", subject)
    admins = config.alerts.admin
    if not admins:
        return False
    sender = config.smtp.from_
    with Session(engine) as session:
        session.add(AlertRow(key=key, kind=kind, subject=subject))
        try:
            session.flush()
        except IntegrityError:
            session.rollback()
            return False
        for number, admin in enumerate(admins):
            message_id = new_message_id(sender)
            rendered = Rendered(f"[report-intake] {subject}", text + "\n")
            session.add(
                OutboxRow(
                    kind="alert",
                    target=f"{key}#{number}",
                    message_id=message_id,
                    recipient=admin,
                    payload=build_plain(sender, message_id, rendered, to=admin),
                )
            )
        session.commit()
    return True
