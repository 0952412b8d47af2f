"""Outbox: queued mail rows in, mail handed to the transport out, and a `DrainResult`.

Due rows are listed in batches (`BATCH` ids, urgent mail first, then oldest), then each is
claimed under a row lock (SKIP LOCKED on PostgreSQL, so several instances share the work: a row
another instance holds, or sent meanwhile, is passed over), sent, and its new state committed
on its own. After each batch the reports whose mail went are settled (`settle`: queued to
delivered once none of their mail waits) in one statement, and a drain first settles any report
a stopped drain did not. A drain sends over one SMTP connection (`deliver.one_connection`:
opened again after a failure, and when the server dropped it before a mail reached DATA).
SQLite has no row locks:
there drains take turns (`drain_turn`, a file lock held for the whole drain), so two processes
on one SQLite database never both send a row (one is the rule: `daemon.instance_lock`). A
temporary failure retries with exponential backoff and jitter (the first retry within
`retry_seconds`) until the queue lifetime runs out; a permanent or expired one is a dead
letter (`failed`). Dead letters are announced together: one alert per hour naming their
references (`kind` "dead-letter"). An alert mail that fails is logged and listed, never alerted
about.
An unreachable server ends the drain (the rest waits). A configuration fault (SMTP 530, 535,
5.7.x: credentials refused, authentication or TLS required) holds the whole queue: the row
keeps its state and attempts, nothing is dead-lettered, one alert per hour (`kind` "smtp"),
and the next drain simply tries again. `DrainResult.held` says why mail could not be handed
over. A drain tries each row at most once and at most `MAX_ROWS` rows: it always ends.
An acknowledgement's address and mail are decrypted only to send them, and erased (set NULL)
once sent, dead-lettered or expired; a drain that erased something checkpoints SQLite's WAL
(`database.reclaim`). Every resend of a mail carries the same Message-ID.

Mail the SMTP server took is recorded as sent, whatever it takes: between the server's 250 and
the commit a `Handover` file names the mail (its Message-ID), so a drain after a crash records
it as sent instead of sending it again; a commit the database refuses (SQLite locked beyond its
busy timeout, a PostgreSQL connection lost) is retried with backoff for `RECORD_PATIENCE`
seconds, and should the database still refuse, the drain stops (`SentNotRecorded`: no more mail
is sent while it refuses writes) and the next drain records the file's mail before sending
anything. A lock file or handover folder this user cannot use stops the outbox with
`OutboxBlocked`, naming the file and the fix; it is recorded as the outbox's health (kind
"outbox", listed by `intake status`) and alerted once an hour.

`release_held` re-encrypts held referrals once their service's pinned key is usable;
`reseal_outbox` seals again, with the outbox passphrase, every row sealed to an outbox key
without passphrase (the upgrade from it); `requeue` puts dead letters back, except
acknowledgements already erased.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import pwd
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, update
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, col, select

from pipeline import audit
from pipeline.alerts import daily_key, hourly_key, raise_alert
from pipeline.config import Config
from pipeline.crypto import Crypto, CryptoError, ensure_private_dir
from pipeline.deliver import (
    SendError,
    Transport,
    add_recipient,
    one_connection,
    referral_subject,
    wrap_pgp_mime,
)
from pipeline.faults import crash_point
from pipeline.logs import log_context
from pipeline.models import OutboxRow, OutboxState, ReportRow, ReportState, utcnow
from pipeline.rules import Service
from pipeline.sources import OUTBOX, health_cause, record_health
from pipeline.store import due_ids, reading, reclaim, settle_reports, sqlite_path

log = logging.getLogger(__name__)

MAX_BACKOFF = timedelta(hours=1)
UNREACHABLE_ALERT = timedelta(minutes=15)  # a server down this long is alerted (restarts are not)
MAX_ROWS = 2000  # rows one drain tries at most; the rest waits for the next drain
BATCH = 50  # due rows listed at once, then claimed one by one: urgent mail queued meanwhile
# goes after the batch being sent
ERASED = "address erased"
RECORD_PATIENCE = 300.0  # seconds a mail the SMTP server took waits to be recorded as sent
RECORD_BACKOFF = (0.5, 30.0)  # the first and the longest wait between two tries to record it
BLOCKED = "outbox"  # the outbox's health kind when a file it needs cannot be used


@dataclass
class DrainResult:
    """What one drain did. `held`: why mail could not be handed to the SMTP server (names the
    server and the config keys to check, never a secret); None when it could."""

    sent: int = 0
    retrying: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    held: str | None = None
    full: bool = False  # stopped at MAX_ROWS: more may be due at once (`run --once` goes on)

    def add(self, later: DrainResult) -> None:
        """Count a later drain's figures in with these (`run --once` drains until done)."""
        self.sent += later.sent
        self.retrying += later.retrying
        self.failed += later.failed
        self.errors += later.errors
        self.held = self.held or later.held
        self.full = later.full


class QueueHeld(Exception):
    """Nothing more can be sent now (server unreachable, our configuration refused)."""

    def __init__(self, error: SendError) -> None:
        super().__init__(str(error))
        self.error = error


class Erased(Exception):
    """An acknowledgement whose address was erased: it can never be sent."""


class OutboxBlocked(Exception):
    """A file the outbox needs (its lock, its handover folder) cannot be used by this user: the
    message names it and says how to fix it."""


class SentNotRecorded(Exception):
    """The SMTP server took a mail, but the database refused to record it as sent for
    `RECORD_PATIENCE` seconds: the drain stops; its handover file keeps it from being sent
    again."""


def _user() -> str:
    """This process's user, for a `chown` hint."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _blocked(what: str, path: Path, error: OSError, chown: str) -> OutboxBlocked:
    return OutboxBlocked(
        f"cannot use the outbox's {what} {path}: {error.strerror}; the user the daemon runs as "
        f"must own it: {chown} {_user()} {path} (or remove it: the daemon makes it again)"
    )


def erase(row: OutboxRow) -> bool:
    """Forget an acknowledgement's sealed address and mail; whether there was anything."""
    if row.kind != "ack" or (row.sealed is None and row.payload is None):
        return False
    row.sealed = None
    row.payload = None
    return True


def backoff(attempts: int, base_seconds: float) -> timedelta:
    """Delay before retry number `attempts` (1-based): doubling, capped, with full jitter in its
    upper half, so the first retry comes within `base_seconds`."""
    delay = min(base_seconds * 2 ** (attempts - 1), MAX_BACKOFF.total_seconds())
    return timedelta(seconds=delay * random.uniform(0.5, 1.0))


def _message(crypto: Crypto, row: OutboxRow) -> tuple[str, bytes]:
    if row.kind == "ack":
        if row.sealed is None or row.payload is None:
            raise Erased(ERASED)
        recipient = crypto.decrypt_outbox(row.sealed).decode()
        return recipient, add_recipient(crypto.decrypt_outbox(row.payload), recipient)
    assert row.recipient is not None and row.payload is not None
    return row.recipient, row.payload


def _claim(session: Session, row_id: int, now: datetime) -> tuple[OutboxRow, str] | None:
    """The row and its report's reference ("alert" for alert mail), the row locked for this
    drain until the session commits, if it is still queued and due and no other instance holds
    it (SKIP LOCKED on PostgreSQL; SQLite: `drain_turn`)."""
    query = (
        select(OutboxRow, ReportRow.reference)
        .outerjoin(ReportRow, col(ReportRow.id) == col(OutboxRow.report_id))
        .where(
            OutboxRow.id == row_id,
            OutboxRow.state == OutboxState.QUEUED,
            OutboxRow.next_attempt_at <= now,
        )
        .with_for_update(skip_locked=True, of=OutboxRow)  # type: ignore[arg-type]
    )
    found = session.exec(query).first()
    if found is None:
        return None
    row, reference = found
    return row, reference or "alert"


def _reference(session: Session, row: OutboxRow) -> str:
    found = select(ReportRow.reference).where(ReportRow.id == row.report_id)
    reference = session.exec(found).first() if row.report_id else None
    return reference or "alert"


def settle(engine: Engine, report_ids: set[int] | None = None) -> bool:
    """`settle_reports` in a transaction of its own (after the commits that sent the mail);
    whether it was committed. A database that refuses leaves the reports queued (logged) for
    the next drain's first look (`Drain.run`)."""
    try:
        with Session(engine) as session:
            settle_reports(session, report_ids)
            session.commit()
    except DBAPIError as error:
        log.warning("reports whose mail went stay queued to the next drain: %s", _cause(error))
        return False
    return True


@contextmanager
def drain_turn(engine: Engine) -> Iterator[None]:
    """On SQLite, this process's turn to drain: an exclusive flock on `<database>.outbox.lock`,
    waited for. Without it two processes would both select the same queued row (SQLite has no
    row locks: FOR UPDATE does nothing) and both send it; after the wait the second finds it
    sent. The kernel drops the lock of a process that dies. PostgreSQL: nothing to take.
    OutboxBlocked when this user cannot open the lock file."""
    database = sqlite_path(engine.url)
    if database is None:
        yield
        return
    lock = database.with_name(database.name + ".outbox.lock")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as error:  # e.g. root made it: say so, or no mail goes out, quietly
        raise _blocked("lock file", lock, error, "chown") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class Handover:
    """Mail the SMTP server took that is not yet recorded as sent: one file per mail in
    `folder`, holding its Message-ID (our own, random: nothing of the report), written and
    synced before the commit and removed after it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @classmethod
    def of(cls, config: Config, engine: Engine) -> Handover:
        """Beside a SQLite database (`<database>.handover`), else in data_dir."""
        database = sqlite_path(engine.url)
        if database is None:
            return cls(config.data_dir / "outbox.handover")
        return cls(database.with_name(database.name + ".handover"))

    def pending(self) -> list[tuple[Path, str]]:
        """The files left by an earlier drain and their Message-IDs (making the folder);
        OutboxBlocked when this user cannot use it."""
        try:
            ensure_private_dir(self.folder)
            found = sorted(path for path in self.folder.iterdir() if path.is_file())
            return [(path, text) for path in found if (text := _read_if_there(path)) is not None]
        except OSError as error:
            raise _blocked("handover folder", self.folder, error, "chown -R") from None
        except CryptoError as error:  # readable by others
            raise OutboxBlocked(f"the outbox's handover folder: {error}") from None

    def note(self, message_id: str) -> Path | None:
        """Write the file for a mail the server took; None (logged) when it cannot be written:
        the commit that follows is the record that counts."""
        path = self.folder / hashlib.sha256(message_id.encode()).hexdigest()[:32]
        partial = path.with_suffix(".partial")  # renamed whole: no empty file after a crash
        try:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, message_id.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(partial, path)
        except OSError as error:
            log.error("outbox: cannot write %s: %s", path, error.strerror)
            return None
        return path

    @staticmethod
    def done(path: Path | None) -> None:
        """The mail is recorded as sent: its file goes."""
        if path is not None:
            path.unlink(missing_ok=True)


def _read_if_there(path: Path) -> str | None:
    """A handover file's text; None when it went meanwhile (instances sharing data_dir on
    PostgreSQL: another one recorded its mail)."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _mark_sent(row: OutboxRow) -> None:
    row.state = OutboxState.SENT  # an acknowledgement's address is erased by the caller
    row.sent_at = utcnow()
    row.attempts += 1


def _save(session: Session, row: OutboxRow) -> None:
    """Commit a row's new state (its report's is `settle`'s, after the commit)."""
    session.add(row)
    session.commit()


def record_sent(engine: Engine, message_id: str) -> bool:
    """Record the mail `message_id` as sent (erasing an acknowledgement's address), unless it
    is already or no longer there; whether it erased something. DBAPIError when the database
    refuses."""
    with Session(engine) as session:
        query = select(OutboxRow).where(OutboxRow.message_id == message_id).with_for_update()
        row = session.exec(query).first()
        if row is None or row.state == OutboxState.SENT:
            return False
        _mark_sent(row)
        erased = erase(row)
        with log_context(reference=_reference(session, row)):
            log.info("%s to %s recorded as sent (the SMTP server took it)", row.kind, row.target)
        report_id = row.report_id
        _save(session, row)
    if report_id:
        settle(engine, {report_id})
    return erased


def _cause(error: DBAPIError) -> str:
    """The database's own first line (no statement, no parameters), or the error's class."""
    text = str(error.orig).strip() if error.orig is not None else ""
    return text.splitlines()[0] if text else type(error).__name__


class Drain:
    """One pass over the due outbox rows, for one configured deployment."""

    def __init__(self, config: Config, engine: Engine, crypto: Crypto, transport: Transport):
        self.config = config
        self.engine = engine
        self.crypto = crypto
        self.transport = transport
        self.result = DrainResult()
        self.erased = 0
        self.tried: set[int] = set()  # the rows claimed: each at most once per drain
        self.passed: set[int] = set()  # listed, but sent or claimed elsewhere meanwhile
        self.sent_for: set[int] = set()  # reports with mail sent, not yet settled
        self.dead: list[tuple[str, str]] = []  # (reference, what failed) not yet announced
        self.fault: SendError | None = None  # the configuration fault that held the queue
        self.handover = Handover.of(config, engine)

    def run(self) -> DrainResult:
        try:
            with drain_turn(self.engine), one_connection(self.transport):
                self._record_handed_over()
                self._settle(None)  # what a stopped drain sent but did not settle
                self._drain()
        except OutboxBlocked as blocked:
            self._record_blocked(blocked)
            raise
        if self.erased:
            reclaim(self.engine)  # SQLite: the erased rows' old pages leave the WAL
        return self.result

    def _record_handed_over(self) -> None:
        """Mail an earlier drain handed over but could not record (a crash, a database that
        refused) is recorded as sent before anything is sent; SentNotRecorded while the
        database refuses."""
        for path, message_id in self.handover.pending():
            try:
                self.erased += record_sent(self.engine, message_id)
            except DBAPIError as error:
                raise SentNotRecorded(
                    f"mail the SMTP server took ({path}) cannot be recorded as sent: the "
                    f"database refuses ({_cause(error)}); nothing is sent until it accepts writes"
                ) from None
            self.handover.done(path)

    def _drain(self) -> None:
        while len(self.tried) < MAX_ROWS and self.result.held is None:
            batch = self._due_batch()
            # An empty queue ends the drain, unless announcing dead letters queued alert mail.
            if not batch and not self._announce_dead_letters():
                break
            for row_id in batch:
                if self.result.held is not None:
                    break
                self._send_listed(row_id)
            self._settle(self.sent_for)
        self.result.full = len(self.tried) >= MAX_ROWS
        self._announce_dead_letters()
        self._record_health()

    def _due_batch(self) -> list[int]:
        """The next due rows (`BATCH` at most, within `MAX_ROWS`) this drain has not listed."""
        limit = min(BATCH, MAX_ROWS - len(self.tried))
        with reading(self.engine) as session:
            return due_ids(session, utcnow(), limit, self.tried | self.passed)

    def _settle(self, report_ids: set[int] | None) -> None:
        """Settle the reports whose mail this drain sent (None: every queued report)."""
        if settle(self.engine, report_ids) and report_ids is not None:
            report_ids.clear()

    def _send_listed(self, row_id: int) -> None:
        """Claim a listed row and send it; passed over when it is no longer due or another
        instance has it (PostgreSQL: SKIP LOCKED)."""
        with Session(self.engine) as session:
            claimed = _claim(session, row_id, utcnow())
            if claimed is None:
                self.passed.add(row_id)
                return
            self.tried.add(row_id)
            row, reference = claimed
            with log_context(reference=reference):
                try:
                    outcome = self._send_row(session, row, reference)
                except QueueHeld as held:
                    session.commit()
                    self._hold(held.error)
                    return
                setattr(self.result, outcome, getattr(self.result, outcome) + 1)
                if outcome in ("sent", "failed"):
                    self.erased += erase(row)
                if outcome == "sent":
                    if row.report_id:
                        self.sent_for.add(row.report_id)
                    self._save_sent(session, row, reference)
                else:
                    _save(session, row)

    def _save_sent(self, session: Session, row: OutboxRow, reference: str) -> None:
        """Commit a mail the SMTP server took as sent: its handover file first, then the
        commit, retried while the database refuses it (`_record_late`)."""
        handed_at = time.monotonic()
        message_id, what = row.message_id, f"{reference} {row.kind} to {row.target}"
        path = self.handover.note(message_id)
        crash_point("after-smtp")
        try:
            _save(session, row)
        except DBAPIError as error:
            session.rollback()
            self._record_late(message_id, what, error, handed_at + RECORD_PATIENCE)
        self.handover.done(path)

    def _record_late(self, message_id: str, what: str, error: DBAPIError, deadline: float) -> None:
        """Record as sent a mail whose commit the database refused, trying again with backoff
        until `deadline` (monotonic); SentNotRecorded then, which ends the drain."""
        log.warning(
            "%s: the SMTP server took it, but the database refused to record it as sent (%s); "
            "trying again for up to %.0f s",
            what,
            _cause(error),
            RECORD_PATIENCE,
        )
        wait, longest = RECORD_BACKOFF
        while time.monotonic() + wait < deadline:
            time.sleep(wait)
            wait = min(wait * 2, longest)
            try:
                self.erased += record_sent(self.engine, message_id)
            except DBAPIError as again:
                error = again
                continue
            log.info("%s recorded as sent after all", what)
            return
        raise SentNotRecorded(
            f"{what}: the SMTP server took it, but the database refused to record it as sent "
            f"for {RECORD_PATIENCE:.0f} s ({_cause(error)}); the outbox stops until it accepts "
            f"writes (its handover file in {self.handover.folder} keeps it from being sent again)"
        )

    def _send_row(self, session: Session, row: OutboxRow, reference: str) -> str:
        try:
            recipient, message = _message(self.crypto, row)
            self.transport.send(self.config.smtp.from_, recipient, message)
        except SendError as error:
            return self._failed(session, row, reference, error)
        except Erased:
            self._dead_letter(session, row, reference, ERASED)
            return "failed"
        except CryptoError as error:  # the outbox key cannot open it: keep it, say so
            self.result.errors.append(f"{reference} {row.kind}: {error}")
            if utcnow() - row.created_at >= self._lifetime():
                self._dead_letter(session, row, reference, f"outbox key: {type(error).__name__}")
                return "failed"
            self._retry_later(row, f"outbox key: {type(error).__name__}")
            return "retrying"
        except Exception as error:  # anything else is this mail's (e.g. an address smtplib
            # cannot encode): it must not stop the mail behind it. Its class only: a message
            # could quote the mail.
            log.error("%s %s to %s: %s", reference, row.kind, row.target, type(error).__name__)
            self._dead_letter(session, row, reference, f"could not send: {type(error).__name__}")
            return "failed"
        _mark_sent(row)  # an acknowledgement's address is erased by _next
        if row.kind == "alert":
            log.info("alert mail %s sent", row.target)
        else:
            log.info("%s %s to %s sent", reference, row.kind, row.target)
        return "sent"

    def _failed(self, session: Session, row: OutboxRow, reference: str, error: SendError) -> str:
        if error.fault:  # not this mail's fault: it keeps its state and attempts
            session.rollback()
            raise QueueHeld(error)
        if error.temporary and utcnow() - row.created_at < self._lifetime():
            self._retry_later(row, str(error))
            log.warning("%s %s to %s: %s (will retry)", reference, row.kind, row.target, error)
            if error.unreachable:
                session.add(row)
                raise QueueHeld(error)
            return "retrying"
        self._dead_letter(session, row, reference, str(error))
        return "failed"

    def _hold(self, error: SendError) -> None:
        smtp = self.config.smtp
        server = f"the SMTP server {smtp.host}:{smtp.port}"
        if error.fault:
            self.fault = error
            self.result.held = (
                f"{server} refuses our mail ({error}): the outbox is held until it accepts "
                f"mail again; check {error.fault}"
            )
        else:
            self.result.held = (
                f"{server} is not taking mail ({error}): the rest of the outbox waits; "
                f"check {error.check or 'smtp.host and smtp.port, and the server'}"
            )
        log.error("outbox: %s", self.result.held)

    def _retry_later(self, row: OutboxRow, error: str) -> None:
        row.attempts += 1
        row.last_error = error
        row.next_attempt_at = utcnow() + backoff(row.attempts, self.config.smtp.retry_seconds)

    def _lifetime(self) -> timedelta:
        return timedelta(days=self.config.smtp.queue_lifetime_days)

    def _dead_letter(self, session: Session, row: OutboxRow, reference: str, error: str) -> None:
        row.attempts += 1
        row.last_error = error
        row.state = OutboxState.FAILED
        audit.record(session, "state", reference, f"{row.kind} to {row.target}: failed, {error}")
        if row.kind == "alert":  # an alert about alert mail would be mail again: log it only
            log.error("alert mail %s could not be delivered: %s", row.target, error)
            return
        log.error("%s %s to %s could not be delivered: %s", reference, row.kind, row.target, error)
        self.dead.append((reference, f"{row.kind} to {row.target}: {error}"))

    def _announce_dead_letters(self) -> bool:
        """One alert for the dead letters of this drain (one per hour); whether it queued it."""
        if not self.dead:
            return False
        dead, self.dead = self.dead, []
        references = list(dict.fromkeys(reference for reference, _ in dead))
        named = ", ".join(references[:3]) + (", ..." if len(references) > 3 else "")
        subject = f"{len(dead)} mail(s) could not be delivered: {named}"
        lines = [f"{reference}: {what}" for reference, what in dead]
        text = (
            "These mails failed for good:\n" + "\n".join(lines) + "\n\n"
            "`intake status` lists every dead letter, also those after this alert. Once the "
            "cause is fixed (the server, a full mailbox): intake retry --reference REFERENCE "
            "(or intake retry for all). A referral is retried to the address and key it was "
            "made with: if the service's address or key is what was wrong, a records keyholder "
            "reads the report with `intake show` and refers it by another way."
        )
        key = hourly_key("dead-letter")
        return raise_alert(self.engine, self.config, key, subject, text, kind="dead-letter")

    def _record_health(self) -> None:
        """The SMTP server's health for `intake status` (kind `smtp`) and its alert: a refused
        configuration at once, a server not taking mail once it lasts `UNREACHABLE_ALERT`;
        each at most once an hour. A drain that sent something clears it; one that ran at all
        clears a blocked outbox (kind "outbox")."""
        held = self.result.held
        if held is None:
            if self.result.sent or health_cause(self.engine, OUTBOX) == BLOCKED:
                record_health(self.engine, OUTBOX, None)  # a blocked outbox drained again
            return
        since = record_health(self.engine, OUTBOX, "smtp", held)
        if self.fault is None and since and utcnow() - since < UNREACHABLE_ALERT:
            return
        if self.fault is not None:
            subject = f"outbox held: the SMTP server refuses our mail (check {self.fault.fault})"
        else:
            subject = f"outbox waiting: the SMTP server is not taking mail since {since:%H:%M} UTC"
        text = (
            f"{held}.\n\nNo mail is lost and none is given up: every mail keeps its place in "
            "the queue, and sending resumes by itself once the server takes mail again. "
            "`intake status` lists it (kind smtp) until then."
        )
        raise_alert(self.engine, self.config, hourly_key("smtp"), subject, text, kind="smtp")

    def _record_blocked(self, blocked: OutboxBlocked) -> None:
        """A file the outbox needs cannot be used: `intake status` lists it (kind "outbox")
        and the admins hear of it once an hour."""
        since = record_health(self.engine, OUTBOX, BLOCKED, str(blocked))
        subject = f"outbox stopped since {since:%H:%M} UTC: a file it needs cannot be used"
        text = (
            f"{blocked}.\n\nNo mail is sent until it is fixed, and none is lost: every mail "
            "keeps its place in the queue (this alert's mail too), and sending resumes at the "
            "next outbox run. `intake status` lists it (kind outbox) until then."
        )
        raise_alert(self.engine, self.config, hourly_key(BLOCKED), subject, text, kind=BLOCKED)


def drain(config: Config, engine: Engine, crypto: Crypto, transport: Transport) -> DrainResult:
    """Send every queued mail that is due, one committed row at a time."""
    return Drain(config, engine, crypto, transport).run()


def release_held(
    config: Config, engine: Engine, crypto: Crypto, services: dict[str, Service]
) -> list[str]:
    """Encrypt held referrals whose service key is usable now and queue them; their references.

    Each row is released in its own transaction, by an UPDATE that holds only while the row is
    still `held`: another instance (or `intake retry`) that released and sent it meanwhile is
    never overwritten, so a referral is never queued twice."""
    with Session(engine) as session:
        held = list(session.exec(select(OutboxRow.id).where(OutboxRow.state == OutboxState.HELD)))
    released = []
    for row_id in held:
        reference = _release_one(config, engine, crypto, services, row_id) if row_id else None
        if reference:
            released.append(reference)
    return released


def _release_one(
    config: Config, engine: Engine, crypto: Crypto, services: dict[str, Service], row_id: int
) -> str | None:
    with Session(engine) as session:
        row = session.get(OutboxRow, row_id)
        service = services.get(row.target) if row else None
        if row is None or row.state != OutboxState.HELD or service is None:
            return None
        if not _key_usable(crypto, service):
            return None
        reference = _reference(session, row)
        try:
            inner = crypto.decrypt_outbox(row.sealed or b"")
            armored = crypto.encrypt(inner, [service.fingerprint])
        except CryptoError as error:  # e.g. sealed by another instance's outbox key
            row.last_error = f"held: cannot be released here ({type(error).__name__})"
            session.add(row)
            session.commit()
            _alert_not_released(config, engine, reference, row, error)
            return None
        subject = referral_subject(reference, row.urgent, config.referrals.urgent_marker)
        payload = wrap_pgp_mime(
            armored, config.smtp.from_, service.email, subject, row.message_id, urgent=row.urgent
        )
        changed = session.exec(  # type: ignore[call-overload]
            update(OutboxRow)
            .where(col(OutboxRow.id) == row_id, col(OutboxRow.state) == OutboxState.HELD)
            .values(
                payload=payload,
                recipient=service.email,
                sealed=None,
                state=OutboxState.QUEUED,
                next_attempt_at=utcnow(),
            )
        )
        if not changed.rowcount:
            session.rollback()
            return None  # released by someone else first
        _unhold_report(session, row.report_id)
        session.commit()
    log.info("%s referral to %s released: key usable", reference, service.id)
    return reference


def _alert_not_released(
    config: Config, engine: Engine, reference: str, row: OutboxRow, error: CryptoError
) -> None:
    """A held referral whose service key is usable again but that this instance cannot open
    (its outbox key is not the one it was sealed with): it stays held, the rest of the outbox
    goes on, and the admins hear of it once a day."""
    log.error("%s referral to %s not released: %s", reference, row.target, type(error).__name__)
    subject = f"{reference}: the held referral to {row.target} cannot be released here"
    text = (
        f"The key of {row.target} is usable again, but this instance's outbox key does not "
        f"open the held referral {reference} ({type(error).__name__}). Every instance must "
        "share the gpg home (or a copy of its outbox key) and the outbox passphrase; run "
        "intake retry on an instance that has the key it was sealed with."
    )
    key = daily_key("not-released", str(row.id))
    raise_alert(engine, config, key, subject, text, kind="held")


def _key_usable(crypto: Crypto, service: Service) -> bool:
    try:
        crypto.check_key(service.fingerprint)
    except CryptoError:
        return False
    return True


def _unhold_report(session: Session, report_id: int | None) -> None:
    report = session.get(ReportRow, report_id) if report_id else None
    if report is None or report.state != ReportState.HELD:
        return
    still_held = session.exec(
        select(OutboxRow).where(
            OutboxRow.report_id == report_id, OutboxRow.state == OutboxState.HELD
        )
    ).first()
    if still_held is None:
        report.state = ReportState.QUEUED
        session.add(report)
        audit.record(session, "state", report.reference, f"{ReportState.QUEUED}: key fixed")


def requeue(engine: Engine, reference: str | None, now: datetime | None = None) -> int:
    """Put dead letters (of one report, or all) back in the queue; how many. Mail whose content
    was erased (retention) and an acknowledgement whose address was erased stay failed, with
    that reason."""
    count = 0
    with Session(engine) as session:
        query = select(OutboxRow).where(OutboxRow.state == OutboxState.FAILED)
        if reference:
            query = query.join(ReportRow).where(ReportRow.reference == reference)
        for row in session.exec(query).all():
            if row.payload is None or (row.kind == "ack" and row.sealed is None):
                if row.kind == "ack":
                    row.last_error = ERASED
                    session.add(row)
                log.warning(
                    "%s %s not requeued: %s", _reference(session, row), row.kind, row.last_error
                )
                continue
            row.state = OutboxState.QUEUED
            row.attempts = 0
            row.created_at = row.next_attempt_at = now or utcnow()
            session.add(row)
            count += 1
        session.commit()
    return count


def reseal_outbox(engine: Engine, crypto: Crypto) -> int:
    """Seal again, with the outbox passphrase, every outbox row's gpg-sealed data (and an
    acknowledgement's mail), in one transaction; how many rows. Rows no key of ours opens, and
    rows sealed with the passphrase already, stay as they are."""
    count = 0
    with Session(engine) as session:
        query = (
            select(OutboxRow)
            .where(
                col(OutboxRow.sealed).is_not(None)
                | ((col(OutboxRow.kind) == "ack") & col(OutboxRow.payload).is_not(None))
            )
            .order_by(col(OutboxRow.id))
            .with_for_update()
        )
        for row in session.exec(query).all():
            fields = ["sealed", "payload"] if row.kind == "ack" else ["sealed"]
            changed = False
            for name in fields:
                data = getattr(row, name)
                sealed = crypto.reseal(data) if data is not None else None
                if sealed is not None:
                    setattr(row, name, sealed)
                    changed = True
            if changed:
                session.add(row)
                count += 1
        session.commit()
    return count
