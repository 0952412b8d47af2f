"""Retention: the `[retention]` policy in, purged encrypted records and audit lines out.

A report whose state has a retention period (days, e.g. `delivered = 365`) and that has not
changed for longer loses its encrypted records and the payloads of its finished mail (sent,
failed, bounced); its metadata row stays (for statistics and the audit trail), marked
`purged_at`. Each purge leaves one audit line with the reference and the dates, and no content.
After a purge the database gives the space back (`store.reclaim`: SQLite WAL checkpoint,
PostgreSQL VACUUM). `purge_due` is the daemon's daily job; `intake purge` runs the same.
Purging a report twice is harmless: the row lock and `purged_at` make the second a no-op, so
several instances on one PostgreSQL database may run the job.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete
from sqlmodel import Session, col, select

from pipeline import audit
from pipeline.config import RetentionConfig
from pipeline.models import EncryptedRecord, OutboxRow, OutboxState, ReportRow, utcnow
from pipeline.store import reclaim

# Mail that is finished with: its payload is not needed any more once the report is purged.
FINISHED = (OutboxState.SENT, OutboxState.FAILED, OutboxState.BOUNCED)


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
                ReportRow.state == state,
                col(ReportRow.purged_at).is_(None),
                ReportRow.updated_at < now - timedelta(days=days),
            )
            found += [
                Due(r.reference or "", r.state, r.received_at, r.updated_at)
                for r in session.exec(query)
            ]
    return sorted(found, key=lambda due: due.reference)


def purge(engine: Engine, due: list[Due], actor: str) -> int:
    """Remove the encrypted records of these reports; one audit line each. How many."""
    count = 0
    with Session(engine) as session:
        for item in due:
            report = session.exec(
                select(ReportRow).where(ReportRow.reference == item.reference).with_for_update()
            ).one()
            if report.purged_at is not None:  # another instance was first
                continue
            session.exec(delete(EncryptedRecord).where(col(EncryptedRecord.report_id) == report.id))  # type: ignore[call-overload]
            for row in session.exec(select(OutboxRow).where(OutboxRow.report_id == report.id)):
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
