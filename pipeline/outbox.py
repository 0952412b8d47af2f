"""Outbox: queued mail rows in, mail handed to the transport out.

Each row is claimed under a row lock (SKIP LOCKED on PostgreSQL, so several instances share the
work), sent, and its new state committed on its own. A temporary failure retries with
exponential backoff and jitter until the queue lifetime runs out; a permanent one is `failed`.
An acknowledgement's address is decrypted only to send it, and erased once it is sent. Every
resend of a mail carries the same Message-ID.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Engine
from sqlmodel import Session

from pipeline.crypto import Crypto
from pipeline.deliver import SendError, Transport, add_recipient
from pipeline.models import OutboxRow, OutboxState, ReportRow, utcnow
from pipeline.store import claim_due, settle_report

log = logging.getLogger(__name__)

QUEUE_LIFETIME = timedelta(days=5)
MAX_BACKOFF = timedelta(hours=1)


class ServerUnreachable(Exception):
    """The SMTP server cannot be reached: the rest of the queue waits for the next drain."""


@dataclass
class DrainResult:
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


def backoff(attempts: int, base_seconds: int) -> timedelta:
    """Delay before retry number `attempts` (1-based): doubling, capped, with ±20 % jitter."""
    delay = min(base_seconds * 2 ** (attempts - 1), MAX_BACKOFF.total_seconds())
    return timedelta(seconds=delay * random.uniform(0.8, 1.2))


def _message(crypto: Crypto, row: OutboxRow) -> tuple[str, bytes]:
    if row.kind == "ack":
        assert row.sealed is not None and row.payload is not None
        recipient = crypto.decrypt_outbox(row.sealed).decode()
        return recipient, add_recipient(crypto.decrypt_outbox(row.payload), recipient)
    assert row.recipient is not None and row.payload is not None
    return row.recipient, row.payload


def _reference(session: Session, row: OutboxRow) -> str:
    report = session.get(ReportRow, row.report_id)
    return report.reference if report and report.reference else f"report {row.report_id}"


def _record_failure(row: OutboxRow, error: SendError, retry_seconds: int, now: datetime) -> str:
    row.attempts += 1
    row.last_error = str(error)
    if error.temporary and now - row.created_at < QUEUE_LIFETIME:
        row.next_attempt_at = now + backoff(row.attempts, retry_seconds)
        return "retrying"
    row.state = OutboxState.FAILED
    return "failed"


def send_one(
    session: Session, crypto: Crypto, transport: Transport, sender: str, row: OutboxRow
) -> str:
    """Send one claimed row and update it: returns `sent`, `retrying` or `failed`."""
    reference = _reference(session, row)
    recipient, message = _message(crypto, row)
    try:
        transport.send(sender, recipient, message)
    except SendError as error:
        outcome = _record_failure(row, error, _retry_seconds(transport), utcnow())
        level = logging.ERROR if outcome == "failed" else logging.WARNING
        log.log(level, "%s %s to %s: %s (%s)", reference, row.kind, row.target, error, outcome)
        if error.unreachable:
            raise ServerUnreachable(str(error)) from None
        return outcome
    row.state = OutboxState.SENT
    row.sent_at = utcnow()
    row.attempts += 1
    if row.kind == "ack":
        row.sealed = None  # the reporter's address is forgotten once the mail has left
        row.payload = None
    log.info("%s %s to %s sent", reference, row.kind, row.target)
    return "sent"


def _retry_seconds(transport: Transport) -> int:
    config = getattr(transport, "config", None)
    return int(getattr(config, "retry_seconds", 60))


def drain(engine: Engine, crypto: Crypto, transport: Transport, sender: str) -> DrainResult:
    """Send every queued mail that is due, one committed row at a time."""
    result = DrainResult()
    while True:
        with Session(engine) as session:
            rows = claim_due(session, utcnow(), limit=1)
            if not rows:
                return result
            row = rows[0]
            unreachable = False
            try:
                outcome = send_one(session, crypto, transport, sender, row)
            except ServerUnreachable:
                outcome, unreachable = "retrying", True
            except Exception as exc:  # e.g. the outbox key cannot decrypt: keep it, say so
                row.attempts += 1
                row.last_error = type(exc).__name__
                row.next_attempt_at = utcnow() + backoff(row.attempts, _retry_seconds(transport))
                outcome = "retrying"
                result.errors.append(f"outbox {row.id}: {type(exc).__name__}: {exc}")
            setattr(result, outcome, getattr(result, outcome) + 1)
            session.add(row)
            settle_report(session, row.report_id)
            session.commit()
            if unreachable:
                return result
