"""No mail sent twice when two processes send one outbox at once: `intake retry --send` refuses
while a daemon runs on the same SQLite database (the daemon sends what it requeues), and two
processes draining one queue at once against a slow SMTP server hand every mail over once
(SQLite: their drains take turns; PostgreSQL: each row is claimed with SKIP LOCKED)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from pipeline.app import App
from tests.integration.conftest import Deployment, email
from tests.servers.smtp import SmtpSink, _Handler

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
