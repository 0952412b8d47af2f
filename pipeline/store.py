"""Store: encrypted reports and their outbox mail in, committed rows out.

One transaction per report writes the report's metadata, its encrypted records, its outbox mail
(transactional outbox) and the source identity that took it in, so a crash leaves either all of
it or none of it. Unique constraints (source key, content fingerprint, one mail per report and
target) are the last line of defence against processing a report twice.

Opening the database, its schema and its locks are `pipeline.database`'s; their names are
re-exported here (`make_engine`, `open_current`, `schema_revision`, `DatabaseError`, ...).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Collection, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, delete, exists, func, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel, col, select

from pipeline import audit
from pipeline.bounces import Bounce
from pipeline.database import (
    BASELINE,
    MIGRATIONS,
    UPGRADE,
    URL_FORMS,
    DatabaseError,
    cannot_open,
    database_url,
    known_revisions,
    make_engine,
    migrate,
    migration_lock,
    open_current,
    open_engine,
    reclaim,
    schema_lag,
    schema_revision,
    shown,
    source_lease,
    sqlite_path,
    upgrade,
)
from pipeline.models import (
    AckSent,
    EncryptedRecord,
    OutboxRow,
    OutboxState,
    ReportRow,
    ReportState,
    SourceItem,
    utcnow,
)

__all__ = [
    "BASELINE",
    "BUNDLE",
    "MIGRATIONS",
    "RELEASABLE",
    "UPGRADE",
    "URL_FORMS",
    "AckLimiter",
    "Build",
    "DatabaseError",
    "anonymous_thread",
    "bundle_record",
    "cannot_open",
    "database_url",
    "decision_json",
    "due_ids",
    "has_acknowledgement",
    "input_outcome",
    "keep_quarantined",
    "known_revisions",
    "make_engine",
    "mark_source",
    "migrate",
    "migration_lock",
    "open_current",
    "open_engine",
    "quarantined_input",
    "reading",
    "reclaim",
    "record_bounce",
    "reference_for",
    "release_report",
    "report_by_fingerprint",
    "save_report",
    "schema_lag",
    "schema_revision",
    "settle_reports",
    "shown",
    "source_lease",
    "source_name",
    "source_seen",
    "sqlite_path",
    "unbundle_record",
    "upgrade",
]


def reading(engine: Engine) -> Session:
    """A session for reads that need no transaction of their own (one statement each, or
    statements that need not agree): on autocommit, so a read is one round trip to the server,
    without a BEGIN and a ROLLBACK around it."""
    return Session(engine.execution_options(isolation_level="AUTOCOMMIT"))


class AckLimiter:
    """At most `per_hour` acknowledgements to one sender in the last hour. A sender is known
    only by an HMAC keyed with a secret derived from the outbox passphrase (`use_secret`), so
    the table names nobody and the data folder alone cannot test an address against it. Rows
    are kept for the window only (`prune`)."""

    WINDOW = timedelta(hours=1)

    def __init__(self, engine: Engine, data_dir: Path, per_hour: int) -> None:
        self.engine = engine
        self.per_hour = per_hour
        self.legacy_key_file = data_dir / "ack-limit.key"  # before issue 8: key in the data dir
        self._secret: bytes | None = None

    def use_secret(self, secret: bytes) -> None:
        """Key the hashes with `secret`; rows keyed with an old key file go, and so does it."""
        self._secret = secret
        if self.legacy_key_file.exists():
            with Session(self.engine) as session:
                session.exec(delete(AckSent))  # type: ignore[call-overload]
                session.commit()
            self.legacy_key_file.unlink()
        self.prune()

    def _hash(self, address: str) -> str:
        if self._secret is None:
            raise RuntimeError("AckLimiter: no secret given (App.open calls use_secret)")
        return hmac.new(self._secret, address.lower().encode(), hashlib.sha256).hexdigest()

    def allow(self, address: str) -> bool:
        since = utcnow() - self.WINDOW
        with reading(self.engine) as session:
            sent = session.exec(
                select(func.count())
                .select_from(AckSent)
                .where(AckSent.sender_hash == self._hash(address), AckSent.sent_at >= since)
            ).one()
        return sent < self.per_hour

    def entry(self, address: str) -> AckSent:
        """The row that counts one acknowledgement to `address`, for the caller to commit with
        the report that queues it (`save_report`'s `also`); `prune` forgets it after the
        window."""
        return AckSent(sender_hash=self._hash(address))

    def prune(self, now: datetime | None = None) -> int:
        """Forget sends older than the window; how many rows went."""
        cutoff = (now or utcnow()) - self.WINDOW
        with Session(self.engine) as session:
            gone = session.exec(delete(AckSent).where(col(AckSent.sent_at) < cutoff))  # type: ignore[call-overload]
            session.commit()
        return int(gone.rowcount or 0)


def source_seen(engine: Engine, source_key: str) -> bool:
    with reading(engine) as session:
        found = select(SourceItem.source_key).where(SourceItem.source_key == source_key)
        return session.exec(found).first() is not None


def report_by_fingerprint(engine: Engine, fingerprint: str) -> ReportRow | None:
    with reading(engine) as session:
        return session.exec(select(ReportRow).where(ReportRow.fingerprint == fingerprint)).first()


def source_name(source_key: str) -> str:
    """The source an input's key belongs to: the key without the item's own part
    (`imap:<user>@<host>/<folder>` without `:<UIDVALIDITY>:<UID>`, `maildir:<path>` without
    `:<key>`, `form:<id>` without anything after the form id: a key from before issue 8 holds
    the response id itself)."""
    kind, _, rest = source_key.partition(":")
    if kind == "form":
        return f"form:{rest.partition(':')[0]}"
    return source_key.rsplit(":", 2 if kind == "imap" else 1)[0]


def input_outcome(state: str) -> str:
    """What an input that became a report counts as in the `inputs` ledger: its state when
    stored where an admin must act on it (quarantined, unrouted, held), else `stored`."""
    acting = (ReportState.QUARANTINED, ReportState.UNROUTED, ReportState.HELD)
    return state if state in acting else "stored"


def _source_item(source_key: str, report_id: int | None, outcome: str) -> SourceItem:
    return SourceItem(
        source_key=source_key, report_id=report_id, outcome=outcome, source=source_name(source_key)
    )


def mark_source(engine: Engine, source_key: str, report_id: int | None, outcome: str) -> None:
    """Record that an input was taken in as `outcome` (`duplicate` of `report_id`, `bounce`,
    `auto_reply`): once per source key, whichever instance comes first."""
    with Session(engine) as session:
        session.add(_source_item(source_key, report_id, outcome))
        try:
            session.commit()
        except IntegrityError:
            session.rollback()  # already recorded by an earlier run or another instance


def reference_for(report_id: int, received_at: datetime) -> str:
    return f"R-{received_at.year}-{report_id:06d}"


Build = Callable[[str], tuple[dict[str, bytes], list[OutboxRow]]]

# A stored report's one encrypted record (`bundle_record`); reports stored before it have two,
# "original" and "report" (the parsed report's JSON). A quarantined input has "original" only.
BUNDLE = "bundle"
_BUNDLE_FORMAT = "report-intake record v2"


def bundle_record(report: dict[str, object], original: bytes) -> bytes:
    """The plaintext of a report's one encrypted record (one gpg run per report): a first line
    of JSON (`format`, the parsed `report`, `original_bytes`), then the original input byte for
    byte. A keyholder reads it with gpg alone: the first line is the report, the rest the
    original."""
    head = {"format": _BUNDLE_FORMAT, "report": report, "original_bytes": len(original)}
    return json.dumps(head).encode() + b"\n" + original


def unbundle_record(data: bytes) -> tuple[dict[str, object], bytes]:
    """The parsed report and the original input of a decrypted `bundle_record`; ValueError
    when `data` is not one (or was cut short)."""
    first, _, original = data.partition(b"\n")
    head = json.loads(first)
    if not isinstance(head, dict) or head.get("format") != _BUNDLE_FORMAT:
        raise ValueError("not a report-intake record")
    if head.get("original_bytes") != len(original):
        raise ValueError("the record's original is not whole")
    return head["report"], original


def save_report(
    engine: Engine, report: ReportRow, source_key: str, build: Build, also: Sequence[SQLModel] = ()
) -> str | None:
    """Commit a report, its encrypted records, its outbox mail, its source identity (with its
    `inputs` outcome, `input_outcome`) and the rows `also` (an `AckLimiter.entry`) at once.

    `build(reference)` encrypts the records and renders the outbox mail; it runs inside the
    transaction, after the reference is allocated and before anything is committed. Returns the
    new reference, or None when the report was already stored (a duplicate).
    """
    with Session(engine) as session:
        session.add(report)
        try:
            session.flush()
        except IntegrityError:
            session.rollback()
            return None
        assert report.id is not None
        reference = report.reference = reference_for(report.id, report.received_at)
        records, outbox = build(reference)
        for kind, data in records.items():
            session.add(EncryptedRecord(report_id=report.id, kind=kind, data=data))
        for row in outbox:
            row.report_id = report.id
            session.add(row)
        session.add(_source_item(source_key, report.id, input_outcome(report.state)))
        session.add_all(also)
        audit.record(session, "state", reference, f"{report.source}: {report.state}")
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            return None
        return reference  # not report.reference: that would load the committed row again


def record_bounce(engine: Engine, bounce: Bounce) -> list[tuple[str, str]]:
    """Record a bounce; (target, reference) of each outbox mail it changed.

    A mail changes (`last_error`; `bounced` when the bounce is permanent) only when both its
    Message-ID and its recipient are named by the bounce: a forged bounce that knows a
    Message-ID changes nothing. An acknowledgement keeps no recipient, so a bounce for one is
    recorded only. Every bounce writes one audit line per mail it names, or one
    `bounce: unmatched` line, never an address."""
    matched: list[tuple[str, str]] = []
    recipients = {address.lower() for address in bounce.recipients}
    ids = list(bounce.message_ids)
    with Session(engine) as session:
        rows = list(session.exec(select(OutboxRow).where(col(OutboxRow.message_id).in_(ids))))
        for row in rows:
            report = session.get(ReportRow, row.report_id) if row.report_id else None
            reference = report.reference if report and report.reference else "alert"
            if row.recipient is None or row.recipient.lower() not in recipients:
                why = "no recipient kept" if row.recipient is None else "recipient does not match"
                audit.record(session, "input", reference, f"bounce: {row.kind}, {why}")
                continue
            matched.append((row.target, reference))
            row.last_error = f"bounced: {bounce.action or 'failed'} {bounce.status or ''}".strip()
            if bounce.permanent:
                row.state = OutboxState.BOUNCED
            session.add(row)
            audit.record(session, "input", reference, f"bounce: {row.kind}, {row.last_error}")
        if not rows:
            audit.record(session, "input", None, "bounce: unmatched")
        session.commit()
    return matched


def decision_json(refer: list[str], acknowledge: str | None, rules: list[str]) -> str:
    return json.dumps({"refer": refer, "acknowledge": acknowledge, "rules": rules})


def due_ids(session: Session, now: datetime, limit: int, skip: Collection[int] = ()) -> list[int]:
    """The ids of queued mail whose time has come, urgent mail first, then oldest first, except
    the rows in `skip`: a batch for the outbox to claim one by one (ids only: a mail is loaded
    when it is sent)."""
    query = (
        select(OutboxRow.id)
        .where(OutboxRow.state == OutboxState.QUEUED, OutboxRow.next_attempt_at <= now)
        .order_by(col(OutboxRow.urgent).desc(), col(OutboxRow.id))
        .limit(limit)
    )
    if skip:
        query = query.where(col(OutboxRow.id).not_in(skip))
    return [row_id for row_id in session.exec(query) if row_id is not None]


def settle_reports(session: Session, report_ids: Collection[int] | None = None) -> list[str]:
    """Move each of these reports (None: every report) that is queued and has no mail waiting
    any more to `delivered`, in one statement; the references moved, audited in `session`,
    which the caller commits. Run after the commit that recorded mail as sent, never in it:
    when two instances each send one of a report's mails, the later of the two looks sees both
    sent, and the state test lets only one of them move it. The drain looks at every report
    when it starts, for mail a stopped process recorded as sent without looking."""
    unsent = col(OutboxRow.state) != OutboxState.SENT
    waiting = exists().where(col(OutboxRow.report_id) == col(ReportRow.id), unsent)
    query = update(ReportRow).where(col(ReportRow.state) == ReportState.QUEUED, ~waiting)
    if report_ids is not None:
        if not report_ids:
            return []
        query = query.where(col(ReportRow.id).in_(sorted(report_ids)))
    query = query.values(state=ReportState.DELIVERED, updated_at=utcnow())
    moved = session.exec(  # type: ignore[call-overload]
        query.returning(col(ReportRow.reference)).execution_options(synchronize_session=False)
    )
    references = sorted(reference for (reference,) in moved if reference)
    for reference in references:
        audit.record(session, "state", reference, ReportState.DELIVERED)
    return references


def anonymous_thread(engine: Engine, references: list[str], message_ids: list[str]) -> list[str]:
    """The references of the anonymous reports a message belongs with: it names their reference,
    or replies to mail we sent about them (our Message-IDs are unique). Empty when none."""
    if not references and not message_ids:
        return []
    with reading(engine) as session:
        by_reference = select(ReportRow.reference).where(
            col(ReportRow.reference).in_(references), col(ReportRow.anonymous).is_(True)
        )
        by_reply = (
            select(ReportRow.reference)
            .join(OutboxRow, col(ReportRow.id) == col(OutboxRow.report_id))
            .where(col(OutboxRow.message_id).in_(message_ids), col(ReportRow.anonymous).is_(True))
        )
        found = [*session.exec(by_reference.limit(20)), *session.exec(by_reply.limit(20))]
    return sorted({reference for reference in found if reference})


# -- Release from quarantine (`intake quarantine release`, a re-exported form response) -----


# A keyholder takes these in again (`intake quarantine release`): a quarantined input once its
# cause is fixed, an unrouted report once the rules refer it to a service.
RELEASABLE = (ReportState.QUARANTINED, ReportState.UNROUTED)
_RELEASED_FIELDS = (
    *("form_id", "category", "anonymous", "urgent", "decision", "state", "reason"),
    *("received_at", "month"),  # an input released as anonymous keeps its time to the hour only
)


def release_report(
    engine: Engine,
    report_id: int,
    actor: str,
    taken: ReportRow,
    build: Build,
    also: Sequence[SQLModel] = (),
) -> str | None:
    """Commit a quarantined (or unrouted) report taken in again, in place, in one transaction:
    the row keeps its id, reference and fingerprint and takes the new take's fields (`taken`,
    its state set by `build`; its received time too, which the take rounds to the hour when it
    is anonymous); its encrypted records are replaced, its outbox mail added (one per target:
    a service or reporter already written to is not written to again), its inputs counted by
    the new outcome, the rows `also` added, and one audit line names `actor`. Returns the
    reference, or None when the report is not releasable (any more: another release came
    first)."""
    with Session(engine) as session:
        stored = session.get(ReportRow, report_id, with_for_update=True)
        if stored is None or stored.state not in RELEASABLE or not stored.reference:
            return None
        before = stored.state
        reference = stored.reference
        records, outbox = build(reference)
        for name in _RELEASED_FIELDS:
            setattr(stored, name, getattr(taken, name))
        stored.updated_at = utcnow()
        session.add(stored)
        session.exec(delete(EncryptedRecord).where(col(EncryptedRecord.report_id) == report_id))  # type: ignore[call-overload]
        for kind, data in records.items():
            session.add(EncryptedRecord(report_id=report_id, kind=kind, data=data))
        for row in outbox:
            row.report_id = report_id
            session.add(row)
        _count_inputs_as(session, report_id, input_outcome(stored.state))
        session.add_all(also)
        detail = f"{stored.source}: released from {before}: {stored.state}"
        if before == ReportState.QUARANTINED:
            detail = f"{stored.source}: released from quarantine: {stored.state}"
        audit.record(session, "release", reference, detail, actor)
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            return None
        return reference


def _count_inputs_as(session: Session, report_id: int, outcome: str) -> None:
    query = select(SourceItem).where(
        SourceItem.report_id == report_id, col(SourceItem.outcome).in_(RELEASABLE)
    )
    for item in session.exec(query):
        item.outcome = outcome
        session.add(item)


def keep_quarantined(engine: Engine, report_id: int, reason: str, actor: str) -> None:
    """A released report that still cannot be read stays quarantined with the new reason."""
    with Session(engine) as session:
        stored = session.get(ReportRow, report_id, with_for_update=True)
        if stored is None or stored.state != ReportState.QUARANTINED:
            return
        stored.reason = reason
        stored.updated_at = utcnow()
        session.add(stored)
        audit.record(session, "release", stored.reference, f"still quarantined: {reason}", actor)
        session.commit()


def quarantined_input(engine: Engine, source_keys: list[str]) -> ReportRow | None:
    """The quarantined report an input (by any of its source keys) was taken in as, if any."""
    with Session(engine) as session:
        query = (
            select(ReportRow)
            .join(SourceItem, col(SourceItem.report_id) == col(ReportRow.id))
            .where(
                col(SourceItem.source_key).in_(source_keys),
                ReportRow.state == ReportState.QUARANTINED,
            )
        )
        return session.exec(query).first()


def has_acknowledgement(engine: Engine, report_id: int) -> bool:
    """Whether the reporter was written to about this report already (one mail per target)."""
    with Session(engine) as session:
        query = select(OutboxRow.id).where(
            OutboxRow.report_id == report_id, OutboxRow.target == "reporter"
        )
        return session.exec(query).first() is not None
