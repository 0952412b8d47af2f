"""No mail sent twice when two processes send one outbox at once: `intake retry --send` refuses
while a daemon runs on the same SQLite database (the daemon sends what it requeues), and two
processes draining one queue at once against a slow SMTP server hand every mail over once
(SQLite: their drains take turns; PostgreSQL: each row is claimed with SKIP LOCKED). Mail the
SMTP server took is recorded as sent even when the database refuses the commit for a while (a
writer holding SQLite's lock beyond its busy timeout, PostgreSQL ending the connection), and
never sent again after a kill between
the server's 250 and the commit, nor after a drain that stopped because the database kept
refusing."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import make_url

from pipeline import outbox
from pipeline.app import App
from pipeline.deliver import Transport
from pipeline.outbox import SentNotRecorded
from tests.integration.conftest import Deployment, email
from tests.servers.postgres import admin_connection
from tests.servers.smtp import Received, SmtpSink, _Handler

DELAY = 0.3  # seconds the server takes per message: the window in which the other sends it too
REPORTS = 4
DRAIN = (  # one process that opens the deployment and drains its outbox once
    "import sys\n"
    "from pipeline.app import App\n"
    "from pipeline.config import load_config\n"
    "app = App.open(load_config(sys.argv[1]))\n"
    "print(app.drain().sent)\n"
    "app.close()\n"
)
HOLD = 13.0  # seconds another writer holds SQLite's write lock: beyond its busy_timeout (10 s)


class SlowHandler(_Handler):
    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await asyncio.sleep(DELAY)
        return await super().handle_DATA(server, session, envelope)


class SlowSink(SmtpSink):
    """The test SMTP server, taking DELAY seconds over each message (a loaded relay)."""

    def __init__(self) -> None:
        super().__init__()
        self._handler = SlowHandler(self)


@pytest.fixture
def slow_sink() -> Iterator[SmtpSink]:
    with SlowSink() as sink:
        yield sink


def queue_mail(deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> int:
    """REPORTS reports taken in and their mail queued, nothing sent; how many mails."""
    monkeypatch.setenv("TEST_IMAP_PASSWORD", deployment.imap.password)
    for n in range(REPORTS):
        sender = f"Student {n} <student{n}@example.ac.uk>"
        deployment.imap.append(email(f"Report {n}", sender=sender, message_id=f"<q{n}@x>"))
    app = App.open(deployment.config())
    try:
        results = app.poll()
    finally:
        app.close()
    return sum(result.counts.get("stored", 0) for result in results) * 2  # referral and ack


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_two_processes_draining_one_queue_at_once_send_each_mail_once(
    deployment: Deployment,
    slow_sink: SmtpSink,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    database: str,
) -> None:
    if database == "postgres":
        deployment.database_url = request.getfixturevalue("pg_url")
    deployment.smtp = slow_sink
    deployment.write()
    queued = queue_mail(deployment, monkeypatch)
    assert queued == 2 * REPORTS
    argv = [sys.executable, "-c", DRAIN, str(deployment.config_path)]
    drains = [
        subprocess.Popen(
            argv, env=deployment.env(), cwd=deployment.root, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    sent = [int(drain.communicate(timeout=120)[0]) for drain in drains]
    assert [drain.returncode for drain in drains] == [0, 0]
    ids = Counter(str(m.message["Message-ID"]) for m in slow_sink.messages)
    assert len(ids) == queued and max(ids.values()) == 1, ids
    assert sum(sent) == queued


def once_each(messages: list[Received]) -> Counter[str]:
    """The Message-IDs received, after checking none came twice."""
    ids = Counter(str(m.message["Message-ID"]) for m in messages)
    assert max(ids.values()) == 1, ids
    return ids


def test_a_write_lock_held_beyond_busy_timeout_while_sending_sends_each_mail_once(
    deployment: Deployment, slow_sink: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment.smtp = slow_sink
    deployment.write()
    queued = queue_mail(deployment, monkeypatch)
    argv = [sys.executable, "-c", DRAIN, str(deployment.config_path)]
    env, cwd = deployment.env(), deployment.root
    holder = sqlite3.connect(deployment.data_dir / "intake.db", isolation_level=None, timeout=5)
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    first = subprocess.Popen(argv, env=env, cwd=cwd, text=True, **pipes)
    slow_sink.wait_for(1, timeout=30)  # the drain is sending: the next mail is on its way
    holder.execute("BEGIN IMMEDIATE")  # another writer (a purge, an admin command) takes the lock
    time.sleep(HOLD)
    holder.rollback()
    holder.close()
    out, err = first.communicate(timeout=120)

    second = subprocess.run(argv, env=env, cwd=cwd, text=True, timeout=120, **pipes)  # next run

    assert len(once_each(slow_sink.messages)) == queued
    assert first.returncode == 0, err
    assert "the database refused to record it as sent (database is locked)" in err
    assert int(out) == queued and int(second.stdout) == 0


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_a_kill_between_the_servers_250_and_the_commit_sends_nothing_twice(
    deployment: Deployment, request: pytest.FixtureRequest, database: str
) -> None:
    if database == "postgres":
        deployment.database_url = request.getfixturevalue("pg_url")
        deployment.write()
    for n in range(2):
        sender = f"Student {n} <student{n}@example.ac.uk>"
        deployment.imap.append(email(f"Report {n}", sender=sender, message_id=f"<k{n}@x>"))

    killed = deployment.run_once(crash_at="after-smtp:2")  # the 2nd mail taken, not committed
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(deployment.smtp.messages) == 2
    assert deployment.run_once().returncode == 0

    assert len(once_each(deployment.smtp.messages)) == 4  # two referrals, two acknowledgements
    assert "recorded as sent (the SMTP server took it)" in deployment.logs[-1]


class LockAfterFirst:
    """The real SMTP transport; once it handed a mail over, another writer takes SQLite's
    write lock (and keeps it until the test lets go)."""

    def __init__(self, inner: Transport, holder: sqlite3.Connection) -> None:
        self.inner = inner
        self.holder = holder

    def send(self, sender: str, recipient: str, message: bytes) -> None:
        self.inner.send(sender, recipient, message)
        if not self.holder.in_transaction:
            self.holder.execute("BEGIN IMMEDIATE")


def test_a_database_that_keeps_refusing_stops_the_drain_and_the_next_sends_nothing_twice(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox, "RECORD_PATIENCE", 1.0)  # not minutes: one busy_timeout
    queued = queue_mail(deployment, monkeypatch)
    holder = sqlite3.connect(deployment.data_dir / "intake.db", isolation_level=None, timeout=5)
    app = App.open(deployment.config())
    try:
        transport = app.transport
        app.transport = LockAfterFirst(transport, holder)
        with pytest.raises(
            SentNotRecorded, match=r"refused to record it as sent .*database is locked"
        ):
            app.drain()
        assert len(deployment.smtp.messages) == 1  # no more mail while the database refuses
        assert len(list((deployment.data_dir / "intake.db.handover").iterdir())) == 1
        holder.rollback()
        app.transport = transport

        assert app.drain().sent == queued - 1
    finally:
        app.close()
        holder.close()
    assert len(once_each(deployment.smtp.messages)) == queued
    assert list((deployment.data_dir / "intake.db.handover").iterdir()) == []


class CutAfterFirst:
    """The real SMTP transport; once it handed a mail over, PostgreSQL ends every connection to
    the database (a restart, a failover) before the outbox commits it."""

    def __init__(self, inner: Transport, database: str) -> None:
        self.inner = inner
        self.database = database
        self.cut = False

    def send(self, sender: str, recipient: str, message: bytes) -> None:
        self.inner.send(sender, recipient, message)
        if not self.cut:
            self.cut = True
            with admin_connection() as connection:
                connection.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = %s AND pid <> pg_backend_pid()",
                    (self.database,),
                )


def test_a_postgresql_connection_lost_before_the_commit_sends_each_mail_once(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch, pg_url: str
) -> None:
    deployment.database_url = pg_url
    deployment.write()
    queued = queue_mail(deployment, monkeypatch)
    app = App.open(deployment.config())
    try:
        app.transport = CutAfterFirst(app.transport, str(make_url(pg_url).database))
        assert app.drain().sent == queued
        assert app.drain().sent == 0
    finally:
        app.close()
    assert len(once_each(deployment.smtp.messages)) == queued
