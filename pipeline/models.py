"""Tables and states. Metadata only: report text, subjects and reporter addresses never appear
here in plaintext; the report itself lives in `EncryptedRecord` rows as OpenPGP messages.

Report states: `queued` (referrals/acknowledgement waiting in the outbox), `delivered` (every
outbox mail of the report sent), `routed` (nothing to send), `unrouted` (no rule referred it to
any service: an admin must act), `quarantined` (could not be read; the original is kept
encrypted with a reason), `held` (a referral cannot be encrypted yet). A quarantined report
that a keyholder releases (`intake quarantine release`) keeps its row and reference and takes
the state its new take gives.
Outbox states: `queued`, `sent`, `held` (waiting for a usable key), `failed` (dead letter: given
up, an admin was alerted), `bounced` (sent, then a bounce came back for it).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Column, Index, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """A time read back from the database (SQLite may give it without its zone) in UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def to_the_hour(moment: datetime) -> datetime:
    """In UTC, rounded down to the hour: what is kept of an anonymous report's times."""
    return as_utc(moment).replace(minute=0, second=0, microsecond=0)


class ReportState:
    QUEUED = "queued"
    DELIVERED = "delivered"
    ROUTED = "routed"
    UNROUTED = "unrouted"
    QUARANTINED = "quarantined"
    HELD = "held"


class OutboxState:
    QUEUED = "queued"
    SENT = "sent"
    HELD = "held"
    FAILED = "failed"
    BOUNCED = "bounced"


class ReportRow(SQLModel, table=True):
    """One report's metadata: what statistics and the status view need, nothing more."""

    __tablename__ = "report"

    id: int | None = Field(default=None, primary_key=True)
    reference: str | None = Field(default=None, unique=True, index=True)
    source: str  # channel: "email" | "form"
    form_id: str | None = None
    fingerprint: str = Field(unique=True, index=True)
    received_at: datetime
    month: str  # "2026-11", for statistics
    category: str | None = None
    anonymous: bool = False
    urgent: bool = False
    decision: str | None = None  # JSON: refer, acknowledge, matched rule names
    state: str = Field(index=True)
    reason: str | None = None  # why quarantined or held; never content
    purged_at: datetime | None = None  # encrypted records removed under the retention policy
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class EncryptedRecord(SQLModel, table=True):
    """The original message and the parsed report, encrypted to the records keys."""

    __tablename__ = "encrypted_record"

    report_id: int = Field(foreign_key="report.id", primary_key=True)
    kind: str = Field(primary_key=True)  # "bundle" (both in one); before: "original", "report"
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class SourceItem(SQLModel, table=True):
    """An input already taken in (IMAP UIDVALIDITY/UID, Maildir key, form response id)."""

    __tablename__ = "source_item"

    source_key: str = Field(primary_key=True)
    report_id: int | None = Field(default=None, foreign_key="report.id")
    seen_at: datetime = Field(default_factory=utcnow)
    # What the input became when taken: the `inputs` ledger of `intake status` counts these.
    # "stored" | "quarantined" | "duplicate" | "bounce" | "auto_reply" | ...; None before issue 9
    outcome: str | None = Field(default=None, index=True)
    source: str | None = None  # the configured source's name ("imap", "maildir", "form:<id>")


class SourceStatus(SQLModel, table=True):
    """Per configured source: the last successful poll, and the error it is failing with."""

    __tablename__ = "source_status"

    name: str = Field(primary_key=True)
    last_success_at: datetime | None = None
    last_error: str | None = None  # names the source, host:port and config key; never content
    error_cause: str | None = None  # a short stable class of the error, for coalescing alerts
    error_since: datetime | None = None  # None while the source works


class OutboxRow(SQLModel, table=True):
    """A mail to send. A referral is already PGP/MIME; an acknowledgement's recipient and
    payload are encrypted to the outbox key and erased once sent."""

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("report_id", "target"),
        # due mail listed from the index alone (`store.due_ids`), urgent first, then oldest
        Index("ix_outbox_due", "state", "urgent", "id", "next_attempt_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    report_id: int | None = Field(default=None, foreign_key="report.id", index=True)
    kind: str  # "referral" | "ack" | "alert"
    target: str  # service id, "reporter", or the alert's key
    message_id: str = Field(unique=True)
    recipient: str | None = None  # a service's address; None for acknowledgements
    sealed: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    payload: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    state: str = Field(default=OutboxState.QUEUED, index=True)
    urgent: bool = False  # urgent mail is sent before other mail
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utcnow)
    last_error: str | None = None
    sent_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)


class AlertRow(SQLModel, table=True):
    """An admin alert raised once: its key (e.g. `held:advice-centre:2026-11-25`) is unique."""

    __tablename__ = "alert"

    key: str = Field(primary_key=True)
    created_at: datetime = Field(default_factory=utcnow)
    kind: str | None = None  # e.g. "source", "dead-letter", "smtp", "rules", "key"; None before 9
    subject: str | None = None  # the alert mail's subject: names references, never content


class AckSent(SQLModel, table=True):
    """When an acknowledgement went to a sender, by keyed hash only: for the rate limit."""

    __tablename__ = "ack_sent"

    id: int | None = Field(default=None, primary_key=True)
    sender_hash: str = Field(index=True)
    sent_at: datetime = Field(default_factory=utcnow, index=True)


class AuditRow(SQLModel, table=True):
    """Append-only (a trigger refuses UPDATE and DELETE): every state change and admin command,
    with who, when and which reference; never content."""

    __tablename__ = "audit"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, index=True)
    actor: str  # "daemon", or the OS user who ran an admin command
    action: str  # e.g. "state", "purge", "command"
    reference: str | None = Field(default=None, index=True)
    detail: str = ""
