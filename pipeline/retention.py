"""Retention: the `[retention]` policy in, purged encrypted records and audit lines out.

A report whose state has a retention period (days, e.g. `delivered = 365`) and that has not
changed for longer loses its encrypted records and its sent mail's payloads; its metadata row
stays (for statistics and the audit trail), marked `purged_at`. Each purge leaves one audit
line with the reference and the dates, and no content.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete
from sqlmodel import Session, col, select

from pipeline import audit
from pipeline.config import RetentionConfig
from pipeline.models import EncryptedRecord, OutboxRow, OutboxState, ReportRow, utcnow


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
    with Session(engine) as session:
        for item in due:
            report = session.exec(
                select(ReportRow).where(ReportRow.reference == item.reference)
            ).one()
            session.exec(delete(EncryptedRecord).where(col(EncryptedRecord.report_id) == report.id))  # type: ignore[call-overload]
            for row in session.exec(select(OutboxRow).where(OutboxRow.report_id == report.id)):
                if row.state == OutboxState.SENT:
                    row.payload = row.sealed = None
                    session.add(row)
            report.purged_at = utcnow()
            session.add(report)
            detail = (
                f"records purged: {item.state} since {item.updated_at:%Y-%m-%d}, "
                f"received {item.received_at:%Y-%m-%d}"
            )
            audit.record(session, "purge", item.reference, detail, actor=actor)
        session.commit()
    return len(due)
