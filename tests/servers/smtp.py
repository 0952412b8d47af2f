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

With ``tls_context`` (a server context, e.g. ``tests.servers.tls.server_context``) the sink
requires STARTTLS before MAIL and AUTH, or with ``implicit_tls=True`` speaks TLS from the
first byte (SMTPS). With ``xoauth2_check(user, token) -> bool`` it also offers
``AUTH XOAUTH2`` and, like Gmail, answers a refused token with a 334 JSON error challenge and
then 535. ``sign_ins`` lists ``(mechanism, user)`` for every sign-in; each ``Received``
carries the sign-in of its session (``auth``) and whether it came over TLS (``tls``).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
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

#: ``xoauth2_check(user, bearer_token)``: whether the token lets ``user`` send.
XOAuth2Check = Callable[[str, str], bool]

#: What Gmail sends (base64) as the 334 challenge before refusing a bearer token.
XOAUTH2_ERROR = {"status": "401", "schemes": "Bearer", "scope": "https://mail.google.com/"}
XOAUTH2_REFUSED = "535 5.7.8 Username and Password not accepted"


@dataclass(frozen=True)
class Received:
    """One accepted message: the envelope and the raw bytes after DATA."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    #: ``(mechanism, user)`` of the session's sign-in, e.g. ``("XOAUTH2", "a@b")``.
    auth: tuple[str, str] | None = None
    #: Whether the session was encrypted (STARTTLS or implicit TLS).
    tls: bool = False

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
        """Any password is good (refusals come from ``refuse``/``script`` at AUTH)."""
        assert isinstance(data, LoginPassword)
        user = data.login.decode()
        with self.sink._lock:
            self.sink.logins.append(user)
        return self._signed_in(mechanism, user)

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        """AUTH XOAUTH2 (``user=U ^A auth=Bearer T ^A ^A`` in base64, ^A being 0x01), checked
        by ``xoauth2_check``; offered only when the sink has one."""
        check = self.sink.xoauth2_check
        assert check is not None  # excluded from EHLO and refused by aiosmtpd otherwise
        blob = await _initial_response(server, args)
        if blob is None:
            return AuthResult(success=False, handled=True)
        parsed = _parse_xoauth2(blob)
        if parsed is None:
            await server.push("501 5.5.2 Malformed XOAUTH2 response")
            return AuthResult(success=False, handled=True)
        user, token = parsed
        if check(user, token):
            return self._signed_in("XOAUTH2", user)
        # Gmail's way: a 334 with the error as JSON, the client answers an empty line.
        answer = await server.challenge_auth(json.dumps(XOAUTH2_ERROR))
        if answer is MISSING:  # the client aborted; aiosmtpd has answered it
            return AuthResult(success=False, handled=True)
        return AuthResult(success=False, handled=False, message=XOAUTH2_REFUSED)

    def _signed_in(self, mechanism: str, user: str) -> AuthResult:
        with self.sink._lock:
            self.sink.sign_ins.append((mechanism, user))
        return AuthResult(success=True, auth_data=(mechanism, user))

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
        auth = session.auth_data if isinstance(session.auth_data, tuple) else None
        tls = server.transport is not None and bool(server.transport.get_extra_info("ssl_object"))
        self.sink._record(
            Received(str(envelope.mail_from), [str(r) for r in envelope.rcpt_tos], data, auth, tls)
        )
        return "250 Message accepted for delivery"


class SmtpSink:
    """A real SMTP server on 127.0.0.1 that stores every message it accepts; see the module
    docstring for ``tls_context``, ``implicit_tls`` and ``xoauth2_check``."""

    def __init__(
        self,
        *,
        tls_context: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
        xoauth2_check: XOAuth2Check | None = None,
        data_size_limit: int = 32 * 2**20,
    ) -> None:
        if implicit_tls and tls_context is None:
            raise ValueError("implicit_tls needs a tls_context (the server's certificate).")
        self.tls_context = tls_context
        self.implicit_tls = implicit_tls
        self.xoauth2_check = xoauth2_check
        self.data_size_limit = data_size_limit  # the largest message taken (aiosmtpd: 32 MiB)
        self.messages: list[Received] = []
        self.refusals: list[tuple[Stage, str]] = []
        self.logins: list[str] = []
        self.sign_ins: list[tuple[str, str]] = []
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
                **self._tls_parameters(),
                auth_exclude_mechanism=[] if self.xoauth2_check else ["XOAUTH2"],
                data_size_limit=self.data_size_limit,
            )
            try:
                controller.start()
            except Exception:
                if self._port or attempt == 2:
                    raise
                continue  # the free port was taken in between: try another
            self._controller, self._port = controller, port
            return

    def _tls_parameters(self) -> dict[str, Any]:
        """Controller arguments for plain SMTP, STARTTLS required, or implicit TLS."""
        if self.tls_context is None:
            return {"auth_require_tls": False}
        if self.implicit_tls:
            return {"ssl_context": self.tls_context, "auth_require_tls": False}
        return {"tls_context": self.tls_context, "require_starttls": True, "auth_require_tls": True}

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
            self.sign_ins.clear()
            self._handler.standing.clear()
            for queue in self._handler.scripted.values():
                queue.clear()

    def _record(self, received: Received) -> None:
        with self._arrived:
            self.messages.append(received)
            self._arrived.notify_all()


async def _initial_response(server: SMTP, args: list[str]) -> bytes | None:
    """The SASL initial response of ``AUTH <mech> [<base64>]``, asked for with an empty 334
    when absent; None when the client aborted or sent bad base64 (already answered)."""
    if len(args) == 1:
        answer = await server.challenge_auth("")
        return answer if isinstance(answer, bytes) else None
    try:
        return base64.b64decode(args[1], validate=True)
    except binascii.Error:
        await server.push("501 5.5.2 Can't decode base64")
        return None


def _parse_xoauth2(blob: bytes) -> tuple[str, str] | None:
    """``(user, token)`` from ``user=U ^A auth=Bearer T ^A ^A`` (^A: 0x01), or None."""
    fields = dict(
        part.split("=", 1) for part in blob.decode("utf-8", "replace").split("\x01") if "=" in part
    )
    user, auth = fields.get("user", ""), fields.get("auth", "")
    scheme, _, token = auth.partition(" ")
    if not user or scheme.lower() != "bearer" or not token:
        return None
    return user, token


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


@pytest.fixture
def smtp_sink_factory() -> Iterator[Callable[..., SmtpSink]]:
    """Make started sinks for one test, stopped afterwards:
    ``smtp_sink_factory(tls_context=server_context(tls_files), xoauth2_check=check)`` (any of
    `SmtpSink`'s options)."""
    sinks: list[SmtpSink] = []

    def make(**options: Any) -> SmtpSink:
        sink = SmtpSink(**options)
        sinks.append(sink)
        sink.start()
        return sink

    try:
        yield make
    finally:
        for sink in sinks:
            sink.stop()
