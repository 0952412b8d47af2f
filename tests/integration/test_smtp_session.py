"""A drain sends over one SMTP connection, and a connection the server ends mid-drain loses no
mail and sends none twice: dropped or closed with 421 before the mail reached DATA, the mail
goes over a new connection; dropped once DATA began, it waits for a later drain (the server may
have taken it), as a failure always did. Due rows are listed in batches, and a drain still
tries at most `MAX_ROWS` rows. Real Dovecot, gpg, SQLite and aiosmtpd: the server below is the
test sink, counting the connections (the client's address and port) its mail came over."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlmodel import Session as DbSession
from sqlmodel import select

from pipeline import outbox
from pipeline.app import App
from pipeline.models import OutboxRow, OutboxState
from tests.integration.conftest import Deployment
from tests.integration.test_double_send import REPORTS, once_each, queue_mail
from tests.servers.smtp import SmtpSink, _Handler

End = Literal["drop at MAIL", "421 at MAIL", "drop in DATA"]
TOO_MANY = "421 4.7.0 Too many messages in this session, closing connection"


@dataclass
class SessionHandler(_Handler):
    """The sink's hooks, noting each MAIL's connection; once a connection carried `limit`
    messages it is ended at the next one (`end`): dropped without a reply at MAIL, answered
    421 at MAIL (aiosmtpd leaves the closing to the client), or dropped once the message's
    data arrived, before the reply (the message is not kept)."""

    limit: int | None = None
    end: End = "drop at MAIL"
    mails: list[Any] = field(default_factory=list)  # the connection of every MAIL command
    taken: Counter[Any] = field(default_factory=Counter)  # messages kept, per connection

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        self.mails.append(session.peer)
        if self._at_limit(session) and self.end == "421 at MAIL":
            return TOO_MANY
        if self._at_limit(session) and self.end == "drop at MAIL":
            assert server.transport is not None
            server.transport.close()
            return TOO_MANY  # never arrives: the connection is gone
        return await super().handle_MAIL(server, session, envelope, address, options)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self._at_limit(session) and self.end == "drop in DATA":
            assert server.transport is not None
            server.transport.close()
            return TOO_MANY  # never arrives
        reply = await super().handle_DATA(server, session, envelope)
        self.taken[session.peer] += 1
        return reply

    def _at_limit(self, session: Session) -> bool:
        return self.limit is not None and self.taken[session.peer] >= self.limit

    @property
    def connections(self) -> int:
        return len(set(self.mails))


class SessionSink(SmtpSink):
    def __init__(self) -> None:
        super().__init__()
        self.handler = SessionHandler(self)
        self._handler = self.handler


@pytest.fixture
def sink(deployment: Deployment) -> Iterator[SessionSink]:
    started = SessionSink()
    with started:
        deployment.smtp = started
        deployment.write()
        yield started


def drain(deployment: Deployment) -> outbox.DrainResult:
    app = App.open(deployment.config())
    try:
        return app.drain()
    finally:
        app.close()


def states(deployment: Deployment) -> Counter[tuple[str, int]]:
    """(state, attempts) of every outbox row."""
    app = App.open(deployment.config())
    try:
        with DbSession(app.engine) as session:
            return Counter((row.state, row.attempts) for row in session.exec(select(OutboxRow)))
    finally:
        app.close()


def test_a_drain_sends_every_mail_over_one_connection(
    deployment: Deployment, sink: SessionSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox, "BATCH", 3)  # several batches
    queued = queue_mail(deployment, monkeypatch)

    result = drain(deployment)

    assert result.sent == queued == 2 * REPORTS and result.held is None
    assert len(once_each(sink.messages)) == queued
    assert sink.handler.connections == 1
    assert states(deployment) == {(OutboxState.SENT, 1): queued}


@pytest.mark.parametrize("end", ["drop at MAIL", "421 at MAIL"])
def test_a_connection_the_server_ends_before_a_mail_is_replaced_and_each_mail_goes_once(
    deployment: Deployment, sink: SessionSink, monkeypatch: pytest.MonkeyPatch, end: End
) -> None:
    sink.handler.limit, sink.handler.end = 3, end  # every third mail ends the connection
    queued = queue_mail(deployment, monkeypatch)

    result = drain(deployment)

    assert result.sent == queued and result.held is None and result.retrying == 0
    assert len(once_each(sink.messages)) == queued
    assert sink.handler.connections == 3  # 8 mails, 3 a connection
    assert len(sink.handler.mails) == queued + 2  # one MAIL again on each new connection
    assert states(deployment) == {(OutboxState.SENT, 1): queued}


def test_a_connection_dropped_once_data_began_is_not_retried_at_once(
    deployment: Deployment, sink: SessionSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink.handler.limit, sink.handler.end = 2, "drop in DATA"
    queued = queue_mail(deployment, monkeypatch)

    result = drain(deployment)

    assert result.sent == 2 and result.held and "is not taking mail" in result.held
    assert len(once_each(sink.messages)) == 2
    assert len(sink.handler.mails) == 3 and sink.handler.connections == 1  # no new connection
    assert states(deployment) == {
        (OutboxState.SENT, 1): 2,
        (OutboxState.QUEUED, 1): 1,  # it waits for its retry: the server may have it
        (OutboxState.QUEUED, 0): queued - 3,
    }


def test_a_drain_tries_at_most_max_rows_listed_in_batches(
    deployment: Deployment, sink: SessionSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox, "MAX_ROWS", 5)
    monkeypatch.setattr(outbox, "BATCH", 2)
    queued = queue_mail(deployment, monkeypatch)

    first, second = drain(deployment), drain(deployment)
    assert (first.sent, first.full) == (5, True)  # `run --once` would drain again at once
    assert (second.sent, second.full) == (queued - 5, False)
    assert len(once_each(sink.messages)) == queued
    assert sink.handler.connections == 2  # one a drain


def test_run_once_drains_again_while_a_drain_stops_at_max_rows(
    deployment: Deployment, sink: SessionSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox, "MAX_ROWS", 2)
    queued = queue_mail(deployment, monkeypatch)
    assert queued > 4

    assert deployment.run_in_process() == 0
    assert len(once_each(sink.messages)) == queued
    assert states(deployment) == {(OutboxState.SENT, 1): queued}
