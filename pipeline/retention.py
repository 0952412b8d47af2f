"""Retention: the `[retention]` policy in, purged encrypted records, mail and form archives,
alerts to the admins and audit lines out.

A report whose retention period (days, e.g. `delivered = 365`) is over, counted from its last
change of state, loses its encrypted records and the payloads of its mail; its metadata row
stays (for statistics and the audit trail), marked `purged_at`. Once none of its mail still
waits to be sent, a report follows one period:
- `delivered`: every referral reached its service (`delivered`; `queued` when only its
  acknowledgement was given up);
- `undelivered`: a referral did not, so no service has the report: held for a service key that
  never came (`held`), given up (a dead letter) or bounced. Unset, these are kept for ever. Set
  (it needs `[alerts] admin`), the admins are told first: once a day one alert mail (references
  and states, no content; its own key, `retention:undelivered:<day>:<digest of the references>`)
  names the reports come within `NOTICE` of their purge that no alert mail names yet (sent or
  waiting). An audit line each records the notice and its alert's key, and a report goes no
  sooner than `NOTICE` after a mail of that alert was sent: while it waits, it holds the report;
  if it fails or bounces, it names nobody and the report is named again. Its held referrals are
  given up with it (`failed`, "purged under retention");
- `routed`, `quarantined`: the reports in that state. Unrouted reports are kept.
Each report is purged in its own short transaction, with one audit line (the reference and the
dates, no content). It is first marked purged by an UPDATE that holds only while the report is
still in its period and not purged yet, and that takes the write lock before it checks (SQLite);
PostgreSQL locks the report's mail rows first. So a bounce, a release or a retry committed
meanwhile keeps the report, and several instances on one PostgreSQL database may run the job.
On SQLite the purge lets other writers in (`PAUSE`) after writing for `TURN`: a drain never
waits long to record a mail sent. After the purge the database gives the space back
(`database.reclaim`: SQLite WAL checkpoint, PostgreSQL VACUUM).

A form's encrypted export archives (`forms.archive_dir`) hold responses of every state, and a
quarantined response is released from them: an archive is kept for ever while quarantined,
routed or undelivered reports are (their period unset), else until it is older than the longest
period. Only a form's own archives are looked at (`<export file>.<UTC stamp>.asc`, the export's
name matching the form's `path`): the folder may be shared.

`purge_due` is the daemon's job (every `[schedule] purge_hours`); `intake purge` purges the
same reports.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from pathlib import Path

from sqlalchemy import ColumnElement, Engine, delete, exists, update
from sqlmodel import Session, col, select

from pipeline import audit
from pipeline.alerts import daily_key, raise_alert
from pipeline.config import Config, RetentionConfig
from pipeline.models import (
    AlertRow,
    AuditRow,
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
# A referral in one of these never reached its service: its report is `undelivered`.
UNREACHED = (OutboxState.HELD, OutboxState.FAILED, OutboxState.BOUNCED)
UNDELIVERED = "undelivered"
# The periods of reports that may still need their form's archive.
NEED_ARCHIVES = (ReportState.QUARANTINED, ReportState.ROUTED, UNDELIVERED)
NOTICE = timedelta(days=7)  # how long before an undelivered report goes the admins are told
NOTICE_ACTION = "purge notice"  # the audit line recording that they were
NOTICE_MAIL = re.compile(r"; alert mail (\S+)$")  # how that line names its alert's key
GIVEN_UP = "purged under retention"
TURN = 1.0  # SQLite: seconds the purge writes before it lets other writers in
PAUSE = 0.15  # longer than SQLite's longest busy-wait sleep (100 ms): a waiting writer gets in
# An archive as forms.FormSource.finish names it: `<export file>.<UTC stamp>.asc`.
ARCHIVE_NAME = re.compile(r"\.(\d{8}T\d{12}Z)\.asc$")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Due:
    reference: str
    state: str
    received_at: datetime
    updated_at: datetime
    period: str  # the `[retention]` key it is due under
    before: datetime  # its period began before this (`_in_period_of`)


def due_for_purge(
    engine: Engine, policy: RetentionConfig, now: datetime | None = None
) -> list[Due]:
    """Reports past their retention period whose records are still there (an undelivered one
    only when an alert mail naming it was sent at least `NOTICE` before `now`)."""
    now = now or utcnow()
    found = []
    with Session(engine) as session:
        for period, days in policy.model_dump().items():
            if days is None:
                continue
            before = now - timedelta(days=days)
            query = select(ReportRow).where(
                _in_period_of(period, before), col(ReportRow.purged_at).is_(None)
            )
            reports = session.exec(query).all()
            if period == UNDELIVERED:
                reports = [r for r in reports if _told(session, r, before=now - NOTICE)]
            found += [
                Due(r.reference or "", r.state, r.received_at, r.updated_at, period, before)
                for r in reports
            ]
    return sorted(found, key=lambda due: due.reference)


def _mail(*conditions: ColumnElement[bool]) -> ColumnElement[bool]:
    """Reports with mail that meets the conditions."""
    return exists().where(col(OutboxRow.report_id) == col(ReportRow.id), *conditions)


def _in_period_of(period: str, before: datetime) -> ColumnElement[bool]:
    """Reports whose retention period is `period` (a `[retention]` key) and began before
    `before` (their last change of state). A queued report whose mail went is settled (moved
    to `delivered`, its `updated_at` set) after the commit that sent its last mail: until then,
    and for good when only its acknowledgement was given up, its period began when its last
    mail was sent."""
    began = col(ReportRow.updated_at) < before
    if period not in (ReportState.DELIVERED, UNDELIVERED):
        return (col(ReportRow.state) == period) & began
    waiting = _mail(col(OutboxRow.state) == OutboxState.QUEUED)
    unreached = _mail(col(OutboxRow.kind) == "referral", col(OutboxRow.state).in_(UNREACHED))
    settled = col(ReportRow.state).in_((ReportState.DELIVERED, ReportState.QUEUED))
    if period == ReportState.DELIVERED:
        sent_since = _mail(col(OutboxRow.sent_at) >= before)
        went = (col(ReportRow.state) == ReportState.DELIVERED) | ~sent_since
        return settled & ~unreached & ~waiting & began & went
    return ((col(ReportRow.state) == ReportState.HELD) | (settled & unreached)) & ~waiting & began


def _notice_mail(session: Session, report: ReportRow) -> list[tuple[str, datetime | None]]:
    """The alert mails of the purge notices that named `report` since it last changed: (state,
    sent_at) of each (one per admin)."""
    details = session.exec(
        select(AuditRow.detail).where(
            AuditRow.action == NOTICE_ACTION,
            AuditRow.reference == report.reference,
            col(AuditRow.at) >= report.updated_at,
        )
    ).all()
    mail: list[tuple[str, datetime | None]] = []
    for detail in details:
        if named := NOTICE_MAIL.search(detail):
            mail += session.exec(
                select(OutboxRow.state, OutboxRow.sent_at).where(
                    OutboxRow.kind == "alert",
                    col(OutboxRow.target).startswith(f"{named.group(1)}#", autoescape=True),
                )
            ).all()
    return mail


def _told(session: Session, report: ReportRow, before: datetime) -> bool:
    """Whether an alert mail naming `report` was sent (and has not bounced) before `before`."""
    return any(
        state == OutboxState.SENT and sent_at is not None and as_utc(sent_at) < before
        for state, sent_at in _notice_mail(session, report)
    )


def _being_told(session: Session, report: ReportRow) -> bool:
    """Whether an alert mail naming `report` was sent or still waits to be."""
    sent_or_waiting = (OutboxState.SENT, OutboxState.QUEUED)
    return any(state in sent_or_waiting for state, _ in _notice_mail(session, report))


def announce_undelivered(engine: Engine, config: Config) -> list[str]:
    """Tell the admins (one alert mail a day) of the undelivered reports come within `NOTICE`
    of their purge that no alert mail names yet; an audit line each naming the alert's key,
    once its mail is queued. Their references."""
    days = config.retention.undelivered
    if days is None:
        return []
    today = daily_key("retention", UNDELIVERED)
    if _raised(engine, today):
        return []  # others were named today: these tomorrow
    coming = _coming(engine, days, utcnow())
    if not coming:
        return []
    digest = hashlib.sha256("\n".join(coming).encode()).hexdigest()[:12]
    key = f"{today}:{digest}"  # not ending in a day: its mail is queued whatever else waits
    if not _alert(engine, config, key, coming, days):
        return []
    with Session(engine) as session:
        for reference, what in coming.items():
            detail = f"{what} ({UNDELIVERED} = {days}); alert mail {key}"
            audit.record(session, NOTICE_ACTION, reference, detail)
        session.commit()
    return list(coming)


def _raised(engine: Engine, prefix: str) -> bool:
    """Whether an alert whose key starts with `prefix` was raised."""
    query = select(AlertRow.key).where(col(AlertRow.key).startswith(prefix, autoescape=True))
    with Session(engine) as session:
        return session.exec(query).first() is not None


def _coming(engine: Engine, days: int, now: datetime) -> dict[str, str]:
    """The undelivered reports that go within `NOTICE` and that no alert mail names yet:
    reference -> its state, its referrals' and when it goes (no content)."""
    query = select(ReportRow).where(
        _in_period_of(UNDELIVERED, now + NOTICE - timedelta(days=days)),
        col(ReportRow.purged_at).is_(None),
    )
    coming = {}
    with Session(engine) as session:
        for report in session.exec(query.order_by(col(ReportRow.reference))).all():
            if _being_told(session, report):
                continue
            referrals = session.exec(
                select(OutboxRow.state)
                .where(OutboxRow.report_id == report.id, OutboxRow.kind == "referral")
                .where(col(OutboxRow.state).in_(UNREACHED))
                .distinct()
            )
            goes = max(as_utc(report.updated_at) + timedelta(days=days), now + NOTICE)
            coming[report.reference or ""] = (
                f"{report.state} (referral {', '.join(sorted(referrals))}), "
                f"purged on or after {goes:%Y-%m-%d}"
            )
    return coming


def _alert(engine: Engine, config: Config, key: str, coming: dict[str, str], days: int) -> bool:
    """Raise the alert `key` naming these reports; whether its mail is queued."""
    named = ", ".join(list(coming)[:3]) + (", ..." if len(coming) > 3 else "")
    subject = f"{len(coming)} undelivered report(s) will be purged under retention: {named}"
    lines = [f"{reference}: {what}" for reference, what in coming.items()]
    text = (
        f"These reports never reached every service they were referred to, and [retention] "
        f"{UNDELIVERED} = {days} purges their encrypted records, each no sooner than a week "
        "after this mail was sent:\n" + "\n".join(lines) + "\n\n"
        "To keep one, get it to its services: `intake status` lists its held referrals, dead "
        "letters and bounces; intake retry --reference REFERENCE sends held referrals whose key "
        "is fixed and dead letters again; or a records keyholder reads it with `intake show` "
        "and refers it by another way. To keep them all longer, raise or remove "
        f"[retention] {UNDELIVERED}."
    )
    if not raise_alert(engine, config, key, subject, text, kind="retention", level=logging.WARNING):
        return False
    query = select(OutboxRow.id).where(
        OutboxRow.kind == "alert", col(OutboxRow.target).startswith(f"{key}#", autoescape=True)
    )
    with Session(engine) as session:
        return session.exec(query).first() is not None


def purge(engine: Engine, due: list[Due], actor: str) -> int:
    """Remove the encrypted records of these reports, each in its own transaction; one audit
    line each. How many. On SQLite other writers get a turn (`PAUSE`) every `TURN`."""
    count = 0
    turn = time.monotonic()
    for item in due:
        count += _purge_one(engine, item, actor)
        if engine.dialect.name == "sqlite" and time.monotonic() - turn > TURN:
            time.sleep(PAUSE)
            turn = time.monotonic()
    reclaim(engine, vacuum=True)
    return count


def _purge_one(engine: Engine, item: Due, actor: str) -> bool:
    """Purge one report if it is still due; whether it was. It is marked purged first, by an
    UPDATE that holds only while it is still in its period and not purged: on SQLite that
    statement takes the write lock before it checks, on PostgreSQL its mail rows are locked
    first, so no change to its mail (a bounce, a release) slips in before its records go."""
    reference = col(ReportRow.reference) == item.reference
    with Session(engine) as session:
        connection = session.connection()
        if engine.dialect.name == "postgresql":
            report_id = select(ReportRow.id).where(reference).scalar_subquery()
            mail = select(OutboxRow.id).where(col(OutboxRow.report_id) == report_id)
            mail = mail.order_by(col(OutboxRow.id))  # by id: a fixed lock order
            connection.execute(mail.with_for_update()).all()
        marked = connection.execute(
            update(ReportRow)
            .where(
                reference,
                col(ReportRow.purged_at).is_(None),
                col(ReportRow.state) == item.state,
                _in_period_of(item.period, item.before),
            )
            .values(purged_at=utcnow())
        )
        # another instance was first, or it changed since (a held referral released, a dead
        # letter put back in the queue, a bounce)
        if marked.rowcount != 1:
            session.rollback()
            return False
        report = session.exec(select(ReportRow).where(reference)).one()
        session.exec(delete(EncryptedRecord).where(col(EncryptedRecord.report_id) == report.id))  # type: ignore[call-overload]
        for row in session.exec(select(OutboxRow).where(OutboxRow.report_id == report.id)):
            if row.state == OutboxState.HELD:
                row.state, row.last_error = OutboxState.FAILED, GIVEN_UP
            if row.state in FINISHED:
                row.payload = row.sealed = None
                session.add(row)
        detail = (
            f"records purged: {item.state} since {item.updated_at:%Y-%m-%d}, "
            f"received {item.received_at:%Y-%m-%d}"
        )
        audit.record(session, "purge", item.reference, detail, actor=actor)
        session.commit()
    return True


def purge_due(engine: Engine, config: Config, actor: str = "daemon") -> int:
    """The scheduled job: tell the admins of undelivered reports about to go, purge whatever
    is due now (then reclaim the space); how many were purged."""
    announce_undelivered(engine, config)
    return purge(engine, due_for_purge(engine, config.retention), actor)


def archive_period(policy: RetentionConfig) -> timedelta | None:
    """How long a form's export archive is kept: None (for ever) while the reports of a period
    in `NEED_ARCHIVES` are; else the longest period set."""
    periods = policy.model_dump()
    if any(periods[period] is None for period in NEED_ARCHIVES):
        return None
    return timedelta(days=max(days for days in periods.values() if days is not None))


def archived_at(path: Path, exports: str = "*") -> datetime | None:
    """When an archive of an export whose name matches `exports` (a glob) was written, from its
    name; None for a file that is no such archive."""
    match = ARCHIVE_NAME.search(path.name)
    if match is None or not fnmatchcase(path.name[: match.start()], exports):
        return None
    return datetime.strptime(match.group(1), "%Y%m%dT%H%M%S%fZ").replace(tzinfo=UTC)


def archives_due(
    forms: Iterable[tuple[Path, str]], policy: RetentionConfig, now: datetime | None = None
) -> list[Path]:
    """Each form's own archives older than `archive_period`; `forms`: (its archive folder, its
    `path` glob, whose last part names its exports)."""
    period = archive_period(policy)
    if period is None:
        return []
    cutoff = as_utc(now or utcnow()) - period
    found = {
        path
        for folder, exports in forms
        if folder.is_dir()
        for path in folder.iterdir()
        if (written := archived_at(path, Path(exports).name)) is not None and written < cutoff
    }
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
