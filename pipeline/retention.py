"""Retention: the `[retention]` policy in, purged encrypted records, mail and form archives and
audit lines out.

A report whose state has a retention period (days, e.g. `delivered = 365`) and that has not
changed for longer loses its encrypted records and the payloads of its mail; its metadata row
stays (for statistics and the audit trail), marked `purged_at`. A report that stopped short of
`delivered` follows the `delivered` period: one whose mail was given up (a dead letter keeps it
`queued`) or whose referral is held for a service key that never came (`held`), as long as none
of its mail still waits to be sent. Its held referrals are given up with it (`failed`, "purged
under retention"). Each purge leaves one audit line with the reference and the dates, and no
content. After a purge the database gives the space back (`store.reclaim`: SQLite WAL
checkpoint, PostgreSQL VACUUM). Purging a report twice is harmless: the row lock, `purged_at`
and a state that must not have changed since it was found due make the second a no-op, so
several instances on one PostgreSQL database may run the job.

A form's encrypted export archives (`forms.archive_dir`) hold responses of every state, so an
archive goes once it is older than the longest period set (none set: archives are kept, like the
records); a quarantined response cannot be released from a purged archive.

`purge_due` is the daemon's job (every `[schedule] purge_hours`); `intake purge` purges the
same reports.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import ColumnElement, Engine, delete, exists
from sqlmodel import Session, col, select

from pipeline import audit
from pipeline.config import RetentionConfig
from pipeline.models import (
    EncryptedRecord,
    OutboxRow,
    OutboxState,
    ReportRow,
    ReportState,
    as_utc,
    utcnow,
)
from pipeline.store import reclaim

# Mail that is finished with: its payload is not needed any more once the report is purged.
FINISHED = (OutboxState.SENT, OutboxState.FAILED, OutboxState.BOUNCED)
# States a report stays in for good when its mail is given up or held: the `delivered` period.
SHORT_OF_DELIVERED = (ReportState.QUEUED, ReportState.HELD)
GIVEN_UP = "purged under retention"
# An archive as forms.FormSource.finish names it: `<export file>.<UTC stamp>.asc`.
ARCHIVE_NAME = re.compile(r"\.(\d{8}T\d{12}Z)\.asc$")


@dataclass(frozen=True)
class Due:
    reference: str
    state: str
    received_at: datetime
    updated_at: datetime


def due_for_purge(
    engine: Engine, policy: RetentionConfig, now: datetime | None = None
) -> list[Due]:
    """Reports past their state's retention period whose records are still there."""
    now = now or utcnow()
    found = []
    with Session(engine) as session:
        for state, days in policy.model_dump().items():
            if days is None:
                continue
            query = select(ReportRow).where(
                _in_period_of(state),
                col(ReportRow.purged_at).is_(None),
                ReportRow.updated_at < now - timedelta(days=days),
            )
            found += [
                Due(r.reference or "", r.state, r.received_at, r.updated_at)
                for r in session.exec(query)
            ]
    return sorted(found, key=lambda due: due.reference)


def _in_period_of(state: str) -> ColumnElement[bool]:
    """Reports whose retention period is `state`'s: those in it, and for `delivered` those
    that stopped short of it with none of their mail still waiting to be sent."""
    if state != ReportState.DELIVERED:
        return col(ReportRow.state) == state
    waiting = exists().where(
        col(OutboxRow.report_id) == col(ReportRow.id), col(OutboxRow.state) == OutboxState.QUEUED
    )
    stuck = col(ReportRow.state).in_(SHORT_OF_DELIVERED) & ~waiting
    return (col(ReportRow.state) == state) | stuck


def purge(engine: Engine, due: list[Due], actor: str) -> int:
    """Remove the encrypted records of these reports; one audit line each. How many."""
    count = 0
    with Session(engine) as session:
        for item in due:
            report = session.exec(
                select(ReportRow).where(ReportRow.reference == item.reference).with_for_update()
            ).one()
            # another instance was first, or it changed since (a held referral released)
            if report.purged_at is not None or report.state != item.state:
                continue
            session.exec(delete(EncryptedRecord).where(col(EncryptedRecord.report_id) == report.id))  # type: ignore[call-overload]
            for row in session.exec(select(OutboxRow).where(OutboxRow.report_id == report.id)):
                if row.state == OutboxState.HELD:
                    row.state, row.last_error = OutboxState.FAILED, GIVEN_UP
                if row.state in FINISHED:
                    row.payload = row.sealed = None
                    session.add(row)
            report.purged_at = utcnow()
            session.add(report)
            detail = (
                f"records purged: {item.state} since {item.updated_at:%Y-%m-%d}, "
                f"received {item.received_at:%Y-%m-%d}"
            )
            audit.record(session, "purge", item.reference, detail, actor=actor)
            count += 1
        session.commit()
    reclaim(engine, vacuum=True)
    return count


def purge_due(engine: Engine, policy: RetentionConfig, actor: str = "daemon") -> int:
    """The scheduled job: purge whatever is due now (then reclaim the space); how many."""
    return purge(engine, due_for_purge(engine, policy), actor)


def archive_period(policy: RetentionConfig) -> timedelta | None:
    """How long a form's export archive is kept: the longest period set; None when none is."""
    days = [d for d in policy.model_dump().values() if d is not None]
    return timedelta(days=max(days)) if days else None


def archived_at(path: Path) -> datetime | None:
    """When an archive was written, from its name; None for a file that is no archive of ours."""
    match = ARCHIVE_NAME.search(path.name)
    if match is None:
        return None
    return datetime.strptime(match.group(1), "%Y%m%dT%H%M%S%fZ").replace(tzinfo=UTC)


def archives_due(
    folders: Iterable[Path], policy: RetentionConfig, now: datetime | None = None
) -> list[Path]:
    """The form archives in these folders older than `archive_period`."""
    period = archive_period(policy)
    if period is None:
        return []
    cutoff = as_utc(now or utcnow()) - period
    found = [
        path
        for folder in folders
        if folder.is_dir()
        for path in folder.iterdir()
        if (written := archived_at(path)) is not None and written < cutoff
    ]
    return sorted(found)


def purge_archives(engine: Engine, paths: list[Path], actor: str = "daemon") -> int:
    """Delete these archives; one audit line each (the file's name: the export's name and a
    time, no content). How many."""
    count = 0
    with Session(engine) as session:
        for path in paths:
            path.unlink(missing_ok=True)
            audit.record(session, "purge", None, f"form archive purged: {path}", actor=actor)
            count += 1
        session.commit()
    return count
