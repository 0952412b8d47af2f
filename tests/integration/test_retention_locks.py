"""The retention purge beside the daemon's other work: it writes one report at a time, so a
drain recording a mail as sent never waits long for SQLite's write lock; and a report whose
referral bounces while it is purged keeps its records (its re-check and its delete are one
locked step, on SQLite and on PostgreSQL)."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine, event, make_url, text
from sqlmodel import Session

from pipeline.config import RetentionConfig
from pipeline.models import EncryptedRecord, OutboxRow, OutboxState, ReportRow, ReportState
from pipeline.retention import due_for_purge, purge
from pipeline.store import make_engine

OLD = datetime(2020, 1, 1, tzinfo=UTC)
POLICY = RetentionConfig(delivered=30)
BOUNCE = (
    "UPDATE outbox SET state = 'bounced' WHERE kind = 'referral' AND report_id = "
    "(SELECT id FROM report WHERE reference = {})"
)


def delivered_reports(engine: Engine, count: int) -> list[str]:
    """`count` reports delivered in 2020 (past `delivered = 30`), each with an encrypted record
    and a sent referral; their references."""
    references = [f"R-2020-{number:06d}" for number in range(1, count + 1)]
    with Session(engine) as session:
        for reference in references:
            report = ReportRow(
                reference=reference,
                source="email",
                fingerprint=reference,
                received_at=OLD,
                month="2020-01",
                state=ReportState.DELIVERED,
                created_at=OLD,
                updated_at=OLD,
            )
            session.add(report)
            session.flush()
            assert report.id is not None
            session.add(EncryptedRecord(report_id=report.id, kind="report", data=b"sealed"))
            referral = OutboxRow(
                report_id=report.id,
                kind="referral",
                target="advice-centre",
                message_id=f"<{reference}@example.ac.uk>",
                recipient="advice@example.ac.uk",
                payload=b"encrypted mail",
                state=OutboxState.SENT,
                sent_at=OLD,
            )
            session.add(referral)
        session.commit()
    return references


@contextmanager
def before_each_statement(engine: Engine, hook: Callable[[str], None]) -> Iterator[None]:
    """Call `hook(statement)` before every statement the engine's connections run."""

    def run(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        hook(statement)

    event.listen(engine, "before_cursor_execute", run)
    try:
        yield
    finally:
        event.remove(engine, "before_cursor_execute", run)


@contextmanager
def on_commit(engine: Engine, hook: Callable[[], None]) -> Iterator[None]:
    def run(_conn: object) -> None:
        hook()

    event.listen(engine, "commit", run)
    try:
        yield
    finally:
        event.remove(engine, "commit", run)


def test_a_long_purge_lets_a_drain_record_its_mail(tmp_path: Path) -> None:
    """Twelve reports whose records take 0.25 s each to go (secure_delete of big records): one
    transaction for them all kept the drain's commit of `sent` waiting past its busy timeout."""
    database = tmp_path / "intake.db"
    engine = make_engine(f"sqlite:///{database}")
    delivered_reports(engine, 12)
    due = due_for_purge(engine, POLICY)
    assert len(due) == 12

    def slow_delete(statement: str) -> None:
        if statement.startswith("DELETE FROM encrypted_record"):
            time.sleep(0.25)

    waits: list[float] = []
    errors: list[str] = []
    purging = threading.Event()

    def drain() -> None:  # records a mail as sent every 50 ms, waiting at most 2 s to write
        connection = sqlite3.connect(database, timeout=2.0)
        while purging.is_set():
            started = time.monotonic()
            try:
                with connection:
                    connection.execute("UPDATE outbox SET attempts = attempts + 1 WHERE id = 1")
            except sqlite3.OperationalError as error:
                errors.append(str(error))
            waits.append(time.monotonic() - started)
            time.sleep(0.05)
        connection.close()

    drainer = threading.Thread(target=drain)
    purging.set()
    drainer.start()
    started = time.monotonic()
    try:
        with before_each_statement(engine, slow_delete):
            assert purge(engine, due, "test") == 12
    finally:
        purging.clear()
        drainer.join()
    assert time.monotonic() - started > 3  # longer than the drain waits
    assert errors == []  # "database is locked" before: the drain's commit gave up
    assert len(waits) >= 5 and max(waits) < 2.0
    with engine.connect() as connection:
        purged = connection.execute(text("SELECT count(*) FROM report WHERE purged_at IS NOT NULL"))
        assert purged.scalar() == 12
    engine.dispose()


class Bouncer:
    """Records a bounce of a report's referral from a connection of its own, waiting for no
    lock (as `store.record_bounce` would, but without waiting its turn)."""

    def __init__(self, url: str) -> None:
        self.url = make_url(url)

    def __call__(self, reference: str) -> bool:
        """Whether the bounce was committed (False: a lock kept it out)."""
        if self.url.get_backend_name() == "sqlite":
            try:
                with sqlite3.connect(str(self.url.database), timeout=0) as connection:
                    connection.execute(BOUNCE.format("?"), (reference,))
            except sqlite3.OperationalError:
                return False
            return True
        address = self.url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(address) as connection:
            connection.execute("SET lock_timeout = '100ms'")
            try:
                connection.execute(BOUNCE.format("%s"), (reference,))
            except psycopg.errors.LockNotAvailable:
                return False
        return True


def purge_one(engine: Engine, reference: str, hook: Callable[[str], None]) -> None:
    """Purge the report, calling `hook` before each statement until the purge commits."""
    committed: list[bool] = []

    def before(statement: str) -> None:
        if not committed:
            hook(statement)

    due = [item for item in due_for_purge(engine, POLICY) if item.reference == reference]
    assert len(due) == 1
    with before_each_statement(engine, before), on_commit(engine, lambda: committed.append(True)):
        purge(engine, due, "test")


def bounce_while_purging(engine: Engine, bounce: Bouncer, reference: str, before: int) -> bool:
    """Purge the report with a bounce of its referral just before the purge's statement number
    `before` (from 0); whether the bounce was committed then."""
    seen: list[str] = []
    bounced: list[bool] = []

    def hook(statement: str) -> None:
        if len(seen) == before:
            bounced.append(bounce(reference))
        seen.append(statement)

    purge_one(engine, reference, hook)
    assert bounced, f"the purge ran fewer than {before + 1} statements"
    return bounced[0]


def kept(engine: Engine, reference: str) -> tuple[bool, int]:
    """Whether the report is not purged, and how many encrypted records it has."""
    with engine.connect() as connection:
        whole, records = connection.execute(
            text(
                "SELECT r.purged_at IS NULL, count(e.kind) FROM report r LEFT JOIN "
                "encrypted_record e ON e.report_id = r.id WHERE r.reference = :r "
                "GROUP BY r.purged_at"
            ),
            {"r": reference},
        ).one()
    return bool(whole), records


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_referral_bouncing_while_its_report_is_purged_keeps_the_report(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    """A bounce is committed just before each statement the purge of a report runs, in turn:
    either it comes before the report is checked again (the report is kept, records and all),
    or it waits until the purge is committed (the report was delivered when it went)."""
    if backend == "postgres":
        url = request.getfixturevalue("pg_url")
    else:
        url = f"sqlite:///{tmp_path / 'intake.db'}"
    engine = make_engine(url)
    references = delivered_reports(engine, 12)
    statements: list[str] = []  # what purging one report runs before its commit
    purge_one(engine, references[0], statements.append)
    assert 3 <= len(statements) < len(references)

    outcomes = {}
    for number, reference in enumerate(references[1 : len(statements) + 1]):
        bounced = bounce_while_purging(engine, Bouncer(url), reference, number)
        outcomes[number] = (bounced, kept(engine, reference))
        if bounced:  # before the purge looked again: the report stays whole
            assert outcomes[number] == (True, (True, 1)), f"bounced before {statements[number]}"
        else:  # it waited for the purge: the report went while it was delivered
            assert outcomes[number] == (False, (False, 0))
    # some bounces came first, and the lock kept the others out until the purge was committed
    assert {bounced for bounced, _ in outcomes.values()} == {True, False}, outcomes
    engine.dispose()
