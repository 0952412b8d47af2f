"""An in-process SMTP server on loopback that keeps what it receives, with scripted faults.

In: SMTP sessions from the code under test. Out: ``SmtpSink.messages``, a list of
``Received(mail_from, rcpt_tos, data)``. ``script("450 try later", times=2)`` makes the
next two DATA answers that reply instead of accepting (``at="RCPT"``, ``"MAIL"`` or
``"AUTH"`` for the other commands), so delivery retries and permanent failures can be tested
against a real server. ``refuse("530 5.7.0 Must issue a STARTTLS command first", at="MAIL")``
answers every such command with that reply until ``accept()``; ``refusals`` lists the replies
given. AUTH (PLAIN, LOGIN) is offered without TLS and accepts any credentials unless refused;
``logins`` lists the user names that logged in. The server is aiosmtpd's ``Controller``: a
thread with an asyncio loop.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any, Literal

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session

from .net import LOOPBACK, free_port

Stage = Literal["MAIL", "RCPT", "DATA", "AUTH"]
STAGES: tuple[Stage, ...] = ("MAIL", "RCPT", "DATA", "AUTH")


@dataclass(frozen=True)
class Received:
    """One accepted message: the envelope and the raw bytes after DATA."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        """``data`` parsed with the modern email policy."""
        parsed = message_from_bytes(self.data, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class _Handler:
    """aiosmtpd hooks: record accepted mail, answer scripted replies first, then standing
    refusals."""

    sink: SmtpSink
    scripted: dict[str, deque[str]] = field(
        default_factory=lambda: {stage: deque() for stage in STAGES}
    )
    standing: dict[str, str] = field(default_factory=dict)

    def next_scripted(self, stage: Stage) -> str | None:
        with self.sink._lock:
            queue = self.scripted[stage]
            reply = queue.popleft() if queue else self.standing.get(stage)
            if reply:
                self.sink.refusals.append((stage, reply))
            return reply

    async def handle_AUTH(
        self, server: SMTP, session: Session, envelope: Envelope, args: list[str]
    ) -> Any:
        return self.next_scripted("AUTH") or MISSING

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        """Any credentials are good (refusals come from ``refuse``/``script`` at AUTH)."""
        if isinstance(data, LoginPassword):
            with self.sink._lock:
                self.sink.logins.append(data.login.decode())
        return AuthResult(success=True)

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        reply = self.next_scripted("MAIL")
        if reply:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        reply = self.next_scripted("RCPT")
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        reply = self.next_scripted("DATA")
        if reply:
            return reply
        content = envelope.original_content or envelope.content or b""
        data = content if isinstance(content, bytes) else content.encode()
        self.sink._record(
            Received(str(envelope.mail_from), [str(r) for r in envelope.rcpt_tos], data)
        )
        return "250 Message accepted for delivery"


class SmtpSink:
    """A real SMTP server on 127.0.0.1 that stores every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[Received] = []
        self.refusals: list[tuple[Stage, str]] = []
        self.logins: list[str] = []
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._handler = _Handler(self)
        self._controller: Controller | None = None
        self._port = 0

    @property
    def host(self) -> str:
        return LOOPBACK

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("The SMTP sink has no port yet: call start() first.")
        return self._port

    def start(self) -> None:
        """Listen on a free port (kept across stop/start) and wait until it answers."""
        if self._controller is not None:
            return
        for attempt in range(3):
            port = self._port or free_port()
            controller = Controller(
                self._handler,
                hostname=LOOPBACK,
                port=port,
                server_hostname="sink.test",  # no DNS lookup of our own name
                ready_timeout=5.0,
                authenticator=self._handler.authenticate,
                auth_require_tls=False,
            )
            try:
                controller.start()
            except Exception:
                if self._port or attempt == 2:
                    raise
                continue  # the free port was taken in between: try another
            self._controller, self._port = controller, port
            return

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def __enter__(self) -> SmtpSink:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def script(self, reply: str, *, times: int = 1, at: Stage = "DATA") -> None:
        """Answer the next ``times`` commands ``at`` with ``reply`` (e.g. "550 no")."""
        _check(reply, at)
        with self._lock:
            self._handler.scripted[at].extend([reply] * times)

    def refuse(self, reply: str, *, at: Stage = "DATA") -> None:
        """Answer every command ``at`` with ``reply`` (after any scripted ones) until
        ``accept()``."""
        _check(reply, at)
        with self._lock:
            self._handler.standing[at] = reply

    def accept(self) -> None:
        """Stop every standing refusal: accept again."""
        with self._lock:
            self._handler.standing.clear()

    def pending_script(self, at: Stage = "DATA") -> int:
        """How many scripted replies for ``at`` have not been used yet."""
        with self._lock:
            return len(self._handler.scripted[at])

    def wait_for(self, n: int, timeout: float = 5.0) -> list[Received]:
        """Wait until at least ``n`` messages arrived; return them all (a copy)."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self.messages) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"The SMTP sink got {len(self.messages)} message(s) in "
                        f"{timeout} s; expected at least {n}."
                    )
                self._arrived.wait(left)
            return list(self.messages)

    def clear(self) -> None:
        """Forget received messages, refusals, logins, unused scripted replies and standing
        refusals."""
        with self._lock:
            self.messages.clear()
            self.refusals.clear()
            self.logins.clear()
            self._handler.standing.clear()
            for queue in self._handler.scripted.values():
                queue.clear()

    def _record(self, received: Received) -> None:
        with self._arrived:
            self.messages.append(received)
            self._arrived.notify_all()


def _check(reply: str, at: str) -> None:
    if not re.fullmatch(r"[245]\d\d( .*)?", reply):
        raise ValueError(f"A scripted SMTP reply starts with a code: got {reply!r}.")
    if at not in STAGES:
        raise ValueError(f"at must be one of {', '.join(STAGES)}, not {at!r}.")


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """A started ``SmtpSink`` for one test, stopped afterwards."""
    sink = SmtpSink()
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()
