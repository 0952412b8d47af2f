"""Store: encrypted reports and their outbox mail in, committed rows out.

One transaction per report writes the report's metadata, its encrypted records, its outbox mail
(transactional outbox) and the source identity that took it in, so a crash leaves either all of
it or none of it. Unique constraints (source key, content fingerprint, one mail per report and
target) are the last line of defence against processing a report twice.

Opening the database takes `database.url` (SQLite or PostgreSQL; anything else is a
DatabaseError saying what to fix). `make_engine` (the daemon, and commands run as its user)
upgrades its schema with the Alembic migrations in `migrations/`, one process at a time;
`open_current` (commands that only read, whoever runs them) creates and changes nothing and
refuses a schema that is not current; `schema_revision` tells whether it is.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import URL, Connection, Engine, delete, event, func, inspect, make_url, text
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError, OperationalError
from sqlmodel import Session, col, create_engine, select

from pipeline import audit
from pipeline.audit import make_append_only
from pipeline.bounces import Bounce
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


class DatabaseError(Exception):
    """The database at `database.url` cannot be used as it is: the message says why and what to
    check, and shows the URL without its password."""


URL_FORMS = "sqlite:///PATH or postgresql+psycopg://USER@HOST/NAME"
MIGRATIONS = Path(__file__).with_name("migrations")
BASELINE = "0001"  # the schema `create_all` made before migrations existed


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA secure_delete=ON")  # freed and rewritten space is zeroed
    cursor.close()


def shown(url: URL) -> str:
    """A database URL fit for a message: its password hidden."""
    return url.render_as_string(hide_password=True)


def database_url(url: str) -> URL:
    """`url` parsed: SQLite, or PostgreSQL (with psycopg 3 unless the URL names a driver)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseError(f"not a database URL: use {URL_FORMS}") from None
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise DatabaseError(
            f"{shown(parsed)}: unknown database dialect {backend!r}: use {URL_FORMS}"
        )
    if parsed.drivername == "postgresql":  # SQLAlchemy's default would be psycopg2
        return parsed.set(drivername="postgresql+psycopg")
    return parsed


def sqlite_path(url: URL) -> Path | None:
    """The file of a SQLite database; None for an in-memory one or another dialect."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return None if url.query.get("uri") else Path(str(url.database))


def open_engine(url: str) -> Engine:
    """An engine for `url` (SQLite in WAL mode, or PostgreSQL); nothing is connected, created or
    migrated yet. DatabaseError for another dialect, a driver that is not installed, or a SQLite
    file whose folder is not there."""
    parsed = database_url(url)
    path = sqlite_path(parsed)
    if path is not None and not path.parent.is_dir():
        raise DatabaseError(f"{shown(parsed)}: the folder {path.parent} does not exist")
    try:  # hide_parameters: no data in errors
        engine = create_engine(parsed, pool_pre_ping=True, hide_parameters=True)
    except (ImportError, NoSuchModuleError):
        driver = parsed.get_driver_name()
        fix = "pip install 'report-intake[postgres]'" if driver == "psycopg" else f"use {URL_FORMS}"
        raise DatabaseError(f"{shown(parsed)}: driver {driver!r} is not installed: {fix}") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def cannot_open(url: URL, error: OperationalError) -> str:
    """One line on a database that could not be opened, with what to check."""
    cause = str(error.orig).strip().splitlines()[0] if error.orig else type(error).__name__
    if url.get_backend_name() == "postgresql":
        hint = "is the server up, does the database exist (createdb), may this user connect?"
    else:
        hint = "may this user read and write the file and its folder?"
    return f"cannot open {shown(url)}: {cause} ({hint})"


@contextmanager
def _transaction(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction; DatabaseError when the database cannot be opened."""
    try:
        connection = engine.connect()
    except OperationalError as exc:
        raise DatabaseError(cannot_open(engine.url, exc)) from None
    with connection, connection.begin():
        yield connection


@contextmanager
def migration_lock(engine: Engine) -> Iterator[None]:
    """One process at a time upgrades a SQLite file: an exclusive `flock` on the folder that
    holds it, opened read-only. No lock file is made, so none is left that the daemon's user
    cannot open after root ran an upgrade (a directory takes a flock like a file). Nothing to do
    elsewhere: PostgreSQL takes an advisory lock in the upgrade's own transaction, and an
    in-memory database is one process's own."""
    path = sqlite_path(engine.url)
    if path is None:
        yield
        return
    try:
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise DatabaseError(
            f"{shown(engine.url)}: cannot open {path.parent}: {exc.strerror}"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # and with it the lock


def _scripts() -> ScriptDirectory:
    return ScriptDirectory(str(MIGRATIONS))


def known_revisions() -> set[str]:
    return {script.revision for script in _scripts().walk_revisions()}


def migrate(connection: Connection) -> str | None:
    """Bring the schema to the newest migration, in the caller's transaction; the revision it
    was at (None: a new database). A database made before migrations (tables, no
    `alembic_version`) is stamped at the baseline first. DatabaseError for a revision this
    version does not know (a newer version upgraded the database)."""
    settings = AlembicConfig()
    settings.set_main_option("script_location", str(MIGRATIONS))
    settings.attributes["connection"] = connection
    before = MigrationContext.configure(connection).get_current_revision()
    if before is None and "report" in inspect(connection).get_table_names():
        command.stamp(settings, BASELINE)
        before = BASELINE
    elif before is not None and before not in known_revisions():
        head = str(_scripts().get_current_head())
        raise DatabaseError(": ".join(schema_lag(connection.engine.url, before, head)))
    command.upgrade(settings, "head")
    return before


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Bring the schema to the newest migration, one process at a time (PostgreSQL: an advisory
    lock for the transaction; SQLite: `migration_lock`), with the audit log's append-only
    triggers; an upgrade of an existing schema is one audit line. (revision before, after)."""
    head = str(_scripts().get_current_head())
    with migration_lock(engine), _transaction(engine) as connection:
        if engine.dialect.name == "postgresql":  # instances starting together take turns
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _lock_key("schema")})
        before = migrate(connection)
        make_append_only(connection)
        if before not in (None, head):
            with Session(connection) as session:
                detail = f"schema upgraded from {before} to {head}"
                audit.record(session, "schema", None, detail, audit.current_user())
                session.flush()
    return before, head


def schema_revision(engine: Engine) -> tuple[str | None, str]:
    """(the database's schema revision, the newest this version knows), changing nothing (a
    SQLite file that is not there is not made). The first is None for a database without a
    schema or one made before migrations. DatabaseError when it cannot be opened."""
    head = str(_scripts().get_current_head())
    path = sqlite_path(engine.url)
    if path is not None and not path.exists():
        return None, head
    with _transaction(engine) as connection:
        return MigrationContext.configure(connection).get_current_revision(), head


UPGRADE = "run intake db upgrade as the daemon's user, or start the daemon (it upgrades at start)"


def schema_lag(url: URL, current: str | None, head: str) -> tuple[str, str]:
    """What a schema that is not at `head` means (a database to be made, one behind, one a
    newer version upgraded) and what to do: (found, fix), for a command that never upgrades."""
    where = shown(url)
    path = sqlite_path(url)
    if current is None and path is not None and not path.exists():
        fix = "start the daemon (it creates it), or run intake db upgrade as the daemon's user"
        return f"{where}: no database yet", fix
    if current is None:
        return f"{where}: no schema, or one from before migrations (newest: {head})", UPGRADE
    if current not in known_revisions():
        found = f"{where}: schema at revision {current}, which this version does not know"
        return found, f"a newer version (newest here: {head}) upgraded it: run that version"
    return f"{where}: schema at revision {current}, this version's newest is {head}", UPGRADE


def open_current(url: str) -> Engine:
    """An engine for `url` whose schema is the newest, for a command that only reads: nothing
    is created, migrated or locked (no file is left that the daemon's user could not open).
    DatabaseError when it cannot be opened or its schema is not current (`schema_lag`)."""
    engine = open_engine(url)
    try:
        current, head = schema_revision(engine)
    except BaseException:
        engine.dispose()
        raise
    if current != head:
        engine.dispose()
        raise DatabaseError(": ".join(schema_lag(engine.url, current, head)))
    return engine


def make_engine(url: str) -> Engine:
    """An engine for `url` (`open_engine`) with the schema upgraded to the newest version
    (`upgrade`): for the daemon and the commands that run as its user. DatabaseError when the
    database cannot be opened or upgraded."""
    engine = open_engine(url)
    try:
        upgrade(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine


def reclaim(engine: Engine, *, vacuum: bool = False) -> None:
    """Leave no erased data in the database files where the database allows it. SQLite (with
    secure_delete on) checkpoints the WAL into the main file and truncates it; PostgreSQL, with
    `vacuum`, VACUUMs the tables that held sealed or encrypted data (outside a transaction)."""
    if engine.dialect.name == "sqlite":
        with engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    elif vacuum and engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            for table in ("outbox", "encrypted_record", "ack_sent"):
                connection.exec_driver_sql(f"VACUUM {table}")


def _lock_key(name: str) -> int:
    """A PostgreSQL advisory lock number for a name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextmanager
def source_lease(engine: Engine, name: str) -> Iterator[bool]:
    """Whether this instance may poll the source `name` now: on PostgreSQL one instance at a
    time holds a session advisory lock for it; SQLite is single-instance, so always."""
    if engine.dialect.name != "postgresql":
        yield True
        return
    key = _lock_key(f"source:{name}")
    with engine.connect() as connection:
        got = bool(connection.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
        connection.commit()
        try:
            yield got
        finally:
            if got:
                connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                connection.commit()


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
        with Session(self.engine) as session:
            sent = session.exec(
                select(func.count())
                .select_from(AckSent)
                .where(AckSent.sender_hash == self._hash(address), AckSent.sent_at >= since)
            ).one()
        return sent < self.per_hour

    def record(self, address: str) -> None:
        with Session(self.engine) as session:
            session.add(AckSent(sender_hash=self._hash(address)))
            session.commit()
        self.prune()

    def prune(self, now: datetime | None = None) -> int:
        """Forget sends older than the window; how many rows went."""
        cutoff = (now or utcnow()) - self.WINDOW
        with Session(self.engine) as session:
            gone = session.exec(delete(AckSent).where(col(AckSent.sent_at) < cutoff))  # type: ignore[call-overload]
            session.commit()
        return int(gone.rowcount or 0)


def source_seen(engine: Engine, source_key: str) -> bool:
    with Session(engine) as session:
        return session.get(SourceItem, source_key) is not None


def report_by_fingerprint(engine: Engine, fingerprint: str) -> ReportRow | None:
    with Session(engine) as session:
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


def save_report(engine: Engine, report: ReportRow, source_key: str, build: Build) -> str | None:
    """Commit a report, its encrypted records, its outbox mail and its source identity (with
    its `inputs` outcome, `input_outcome`) at once.

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
        report.reference = reference_for(report.id, report.received_at)
        records, outbox = build(report.reference)
        for kind, data in records.items():
            session.add(EncryptedRecord(report_id=report.id, kind=kind, data=data))
        for row in outbox:
            row.report_id = report.id
            session.add(row)
        session.add(_source_item(source_key, report.id, input_outcome(report.state)))
        audit.record(session, "state", report.reference, f"{report.source}: {report.state}")
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            return None
        return report.reference


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


def claim_due(
    session: Session, now: datetime, limit: int = 50, skip: Collection[int] = ()
) -> list[OutboxRow]:
    """Queued mail whose time has come, urgent mail first, then oldest first, except the rows
    in `skip` (tried already in this drain); locked for this instance (SKIP LOCKED on
    PostgreSQL)."""
    query = (
        select(OutboxRow)
        .where(OutboxRow.state == OutboxState.QUEUED, OutboxRow.next_attempt_at <= now)
        .order_by(col(OutboxRow.urgent).desc(), col(OutboxRow.id))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    if skip:
        query = query.where(col(OutboxRow.id).not_in(skip))
    return list(session.exec(query))


def settle_report(session: Session, report_id: int) -> None:
    """Move a queued report to `delivered` once none of its mail is still waiting."""
    report = session.get(ReportRow, report_id, with_for_update=True)  # instances take turns
    waiting = session.exec(
        select(func.count())
        .select_from(OutboxRow)
        .where(OutboxRow.report_id == report_id, OutboxRow.state != OutboxState.SENT)
    ).one()
    if report is not None and waiting == 0 and report.state == ReportState.QUEUED:
        report.state = ReportState.DELIVERED
        report.updated_at = utcnow()
        session.add(report)
        audit.record(session, "state", report.reference, ReportState.DELIVERED)


def anonymous_thread(engine: Engine, references: list[str], message_ids: list[str]) -> list[str]:
    """The references of the anonymous reports a message belongs with: it names their reference,
    or replies to mail we sent about them (our Message-IDs are unique). Empty when none."""
    if not references and not message_ids:
        return []
    with Session(engine) as session:
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
    engine: Engine, report_id: int, actor: str, taken: ReportRow, build: Build
) -> str | None:
    """Commit a quarantined (or unrouted) report taken in again, in place, in one transaction:
    the row keeps its id, reference and fingerprint and takes the new take's fields (`taken`,
    its state set by `build`; its received time too, which the take rounds to the hour when it
    is anonymous); its encrypted records are replaced, its outbox mail added (one per target:
    a service or reporter already written to is not written to again), its inputs counted by
    the new outcome, and one audit line names `actor`. Returns the reference, or None when the
    report is not releasable (any more: another release came first)."""
    with Session(engine) as session:
        stored = session.get(ReportRow, report_id, with_for_update=True)
        if stored is None or stored.state not in RELEASABLE or not stored.reference:
            return None
        before = stored.state
        records, outbox = build(stored.reference)
        for name in _RELEASED_FIELDS:
            setattr(stored, name, getattr(taken, name))
        stored.updated_at = utcnow()
        session.add(stored)
        for kind, data in records.items():
            session.merge(EncryptedRecord(report_id=report_id, kind=kind, data=data))
        for row in outbox:
            row.report_id = report_id
            session.add(row)
        _count_inputs_as(session, report_id, input_outcome(stored.state))
        detail = f"{stored.source}: released from {before}: {stored.state}"
        if before == ReportState.QUARANTINED:
            detail = f"{stored.source}: released from quarantine: {stored.state}"
        audit.record(session, "release", stored.reference, detail, actor)
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            return None
        return stored.reference


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
