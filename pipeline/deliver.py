"""Deliver: rendered mail in, bytes on the wire out.

`build_referral` wraps a referral as PGP/MIME (RFC 3156 `multipart/encrypted`) encrypted to the
service's pinned key: the outer message carries only a generic subject, the addresses and the
Message-ID; the report, its real subject and its attachments exist only inside the encrypted
part, whose MIME is written once into one buffer (`referral_inner_bytes`).
`build_acknowledgement` makes the reporter's reply (with `Auto-Submitted: auto-replied` and
`X-Report-Intake: acknowledgement`).
An urgent referral's outer message carries `Importance: high`, `Priority: urgent` and
`X-Priority: 1` and, when `[referrals] urgent_marker` is set, the marker in its subject.
`SmtpTransport` sends one message in a `session()` (connected, in TLS and signed in as
configured: a password, or AUTH XOAUTH2 with a token from `pipeline.oauth`, replaced by a new
one once when the server refuses it), or, within `kept_open()` (`one_connection` for any
transport), every message of the block over one session: opened at the first message, opened
again after any failure, and replaced once when the server dropped it (or closed it with 421)
before the message reached DATA, so that message is sent over the new one; a drop once DATA
began is a failure like any other (the server may have taken it: it is never sent again at
once). Pipelining (RFC 2920) is not used: smtplib has no support for it. DATA goes out a slice
of whole lines at a time (`send_data`): a mail is never copied whole on its way. A failure is a
`SendError` that says whether it is the mail's (temporary or permanent), the server's
(unreachable: stop for now) or our configuration's (`fault`: SMTP 530, 535, an authentication or
TLS 5.7.x, or relaying denied, at STARTTLS, AUTH, MAIL, RCPT or DATA; a server certificate that
does not verify (`smtp.ca_file`); no token; the whole queue waits). A token endpoint that cannot
be reached or is failing is like a server that is down (unreachable); anything else that goes
wrong before the session is up is no fault of the mail either: a sign-in problem holds the
queue, it never dead-letters the mail. A refused sign-in says what the mailbox needs where we
know it (Microsoft 365's SMTP AUTH switched off, 5.7.139; the app's permissions for XOAUTH2).
A server's reply text is read to classify it, never kept: it may quote an address.
"""

from __future__ import annotations

import binascii
import io
import logging
import re
import secrets
import smtplib
import ssl
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from email.message import EmailMessage
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.utils import formatdate, make_msgid, parseaddr
from typing import Literal, Protocol, TypeVar, runtime_checkable

from pipeline.config import ConfigError, SmtpConfig
from pipeline.crypto import Crypto
from pipeline.oauth import TokenError, mailbox_access, token_source
from pipeline.render import Rendered, one_line
from pipeline.report import Attachment

log = logging.getLogger(__name__)

T = TypeVar("T")
Stage = Literal["connect", "STARTTLS", "AUTH", "EHLO", "MAIL", "RCPT", "DATA"]


class SendError(Exception):
    """A send failed. `temporary`: a later try of this mail may succeed. `unreachable`: the
    server is not taking mail now (down, closing, overloaded): stop trying other mail.
    `fault`: the config keys to check when the server refuses our configuration (credentials,
    TLS or authentication required): nothing is the mail's fault, the whole queue waits.
    `check`: what to look at when it is unreachable (default: the SMTP server itself)."""

    def __init__(
        self,
        message: str,
        *,
        temporary: bool,
        unreachable: bool = False,
        fault: str | None = None,
        check: str | None = None,
    ) -> None:
        super().__init__(message)
        self.temporary = temporary
        self.unreachable = unreachable
        self.fault = fault
        self.check = check


class Transport(Protocol):
    def send(self, sender: str, recipient: str, message: bytes) -> None: ...


@runtime_checkable
class KeepsOpen(Protocol):
    """A transport that can send the mails of a block over one connection."""

    def kept_open(self) -> AbstractContextManager[None]: ...


def one_connection(transport: Transport) -> AbstractContextManager[None]:
    """The block in which `transport` sends every mail over one connection (its `kept_open`),
    or nothing for a transport that has none: it sends as it always does."""
    return transport.kept_open() if isinstance(transport, KeepsOpen) else nullcontext()


class _Dropped(SendError):
    """The server dropped the connection, or closed it (421), before the mail reached DATA:
    nothing of the mail was handed over."""


def new_message_id(from_header: str) -> str:
    domain = parseaddr(from_header)[1].partition("@")[2] or "report-intake.invalid"
    return make_msgid(domain=domain)


#: Bytes on one line of base64 as the email package writes it (policy.default: 78 // 4 * 3).
_BASE64_LINE = 57


def referral_inner(
    rendered: Rendered, attachments: list[Attachment], data: list[bytes] | None = None
) -> EmailMessage:
    """The part that gets encrypted: the rendered referral with its attachments (or, in their
    place, `data`: the same file names and types with other contents)."""
    inner = EmailMessage()
    inner["Subject"] = rendered.subject  # protected header (read by Thunderbird and others)
    inner.set_content(rendered.body, charset="utf-8")
    contents = [item.data for item in attachments] if data is None else data
    for item, content in zip(attachments, contents, strict=True):
        maintype, _, subtype = item.content_type.partition("/")
        inner.add_attachment(
            content, maintype=maintype, subtype=subtype or "octet-stream", filename=item.filename
        )
    inner.replace_header(
        "Content-Type", inner.get("Content-Type", "text/plain") + '; protected-headers="v1"'
    )
    return inner


def referral_inner_bytes(rendered: Rendered, attachments: list[Attachment]) -> bytes:
    """`referral_inner(rendered, attachments).as_bytes()`, written once into one buffer: the
    email package frames the message around one placeholder line per attachment (base64 goes
    line by line, so the lines around it are what the real contents' would be), and each
    attachment's base64 lines take its placeholder's place. No base64 text of an attachment,
    list of its lines or flattened copy of it is made."""
    stand_ins = [secrets.token_bytes(_BASE64_LINE) for _ in attachments]
    frame = referral_inner(rendered, attachments, stand_ins)
    out = io.BytesIO()
    rest = frame.as_bytes()
    for item, stand_in in zip(attachments, stand_ins, strict=True):
        head, found, rest = rest.partition(binascii.b2a_base64(stand_in))
        assert found, "each stand-in is one base64 line of the frame"
        out.write(head)
        view = memoryview(item.data)
        for start in range(0, len(view), _BASE64_LINE):
            out.write(binascii.b2a_base64(view[start : start + _BASE64_LINE]))
    out.write(rest)
    return out.getvalue()  # the buffer itself, not a copy


def build_referral(
    crypto: Crypto,
    *,
    fingerprint: str,
    sender: str,
    recipient: str,
    outer_subject: str,
    message_id: str,
    rendered: Rendered,
    attachments: list[Attachment],
    urgent: bool = False,
) -> bytes:
    """The referral as PGP/MIME bytes, encrypted to the one pinned `fingerprint`. The plaintext
    is let go as soon as it is encrypted, before the armour is framed."""
    armored = crypto.encrypt(referral_inner_bytes(rendered, attachments), [fingerprint])
    return wrap_pgp_mime(armored, sender, recipient, outer_subject, message_id, urgent=urgent)


URGENT_HEADERS = {"Importance": "high", "Priority": "urgent", "X-Priority": "1 (Highest)"}


def referral_subject(reference: str, urgent: bool, marker: str) -> str:
    """A referral's outer subject: its reference, and `marker` (`[referrals] urgent_marker`,
    none when empty) when the report is urgent. Nothing of the report's content."""
    return f"Referral {reference} {marker}" if urgent and marker else f"Referral {reference}"


def wrap_pgp_mime(
    armored: bytes,
    sender: str,
    recipient: str,
    outer_subject: str,
    message_id: str,
    *,
    urgent: bool = False,
) -> bytes:
    """An RFC 3156 multipart/encrypted message around an ASCII-armoured OpenPGP message; an
    `urgent` one with the headers that make a mail client show it as important. The email
    package frames it around a placeholder, and the armour (7-bit already, and as large as the
    attachments) takes the placeholder's place unread: no text copies of it are made."""
    outer = MIMEMultipart("encrypted", protocol="application/pgp-encrypted")
    version = MIMEApplication("Version: 1\n", "pgp-encrypted", _encoder=_noop)
    version["Content-Description"] = "PGP/MIME version identification"
    placeholder = f"encrypted-{secrets.token_hex(16)}"
    payload = MIMEApplication(placeholder, "octet-stream", _encoder=_noop)
    payload.set_param("name", "encrypted.asc")
    payload["Content-Description"] = "OpenPGP encrypted message"
    payload["Content-Disposition"] = 'inline; filename="encrypted.asc"'
    outer.attach(version)
    outer.attach(payload)
    _envelope_headers(outer, sender, one_line(outer_subject), message_id)
    outer["To"] = recipient
    for name, value in (URGENT_HEADERS if urgent else {}).items():
        outer[name] = value
    head, found, tail = outer.as_bytes().partition(placeholder.encode("ascii"))
    assert found, "the placeholder is in the frame"
    return b"".join((head, armored, tail))


def _noop(part: MIMEApplication) -> None:
    """ASCII armour is already 7-bit; leave it as it is."""
    part["Content-Transfer-Encoding"] = "7bit"


def _envelope_headers(
    msg: EmailMessage | MIMEMultipart, sender: str, subject: str, mid: str
) -> None:
    msg["From"] = sender
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = mid


def build_plain(
    sender: str,
    message_id: str,
    rendered: Rendered,
    *,
    to: str | None = None,
    auto_submitted: str = "auto-generated",
    extra: dict[str, str] | None = None,
) -> bytes:
    """A plain-text mail; without `to` it has no To header (added only when sending)."""
    msg = EmailMessage()
    _envelope_headers(msg, sender, one_line(rendered.subject), message_id)
    if to:
        msg["To"] = to
    msg["Auto-Submitted"] = auto_submitted
    msg["X-Auto-Response-Suppress"] = "All"
    for name, value in (extra or {}).items():
        msg[name] = value
    msg.set_content(rendered.body, charset="utf-8")
    return msg.as_bytes()


ACK_HEADER = ("X-Report-Intake", "acknowledgement")  # an echo of it is never acknowledged


def build_acknowledgement(
    sender: str, message_id: str, rendered: Rendered, *, reply_to: str | None = None
) -> bytes:
    """The acknowledgement without its To header: the address is added only when sending.
    `Auto-Submitted: auto-replied` (RFC 3834) keeps responders quiet, and `X-Report-Intake:
    acknowledgement` lets the intake know its own mail when it comes back. `reply_to` (the
    anonymous address, for an anonymous report) is where a reply to it should go."""
    extra = dict([ACK_HEADER])
    if reply_to:
        extra["Reply-To"] = one_line(reply_to)
    return build_plain(sender, message_id, rendered, auto_submitted="auto-replied", extra=extra)


def add_recipient(message: bytes, recipient: str) -> bytes:
    """Prepend a To header (a clean addr-spec: checked when it was taken in)."""
    return f"To: {one_line(recipient)}\r\n".encode() + message


def crlf(message: bytes) -> bytes:
    """SMTP line endings (smtplib leaves bare LF in bytes alone, and servers refuse it); a
    message that has them already is not copied. `send_data` applies it a slice at a time."""
    if message.count(b"\n") == message.count(b"\r\n"):
        return message
    if b"\r" not in message:  # LF alone (the email package's, ASCII armour's): one copy
        return message.replace(b"\n", b"\r\n")
    return message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def crlf_size(message: bytes) -> int:
    """`len(crlf(message))`, without making it."""
    return len(message) + message.count(b"\n") - message.count(b"\r\n")


#: How much of a mail `send_data` hands to the socket at a time (a whole number of lines).
DATA_SLICE_BYTES = 1024 * 1024
_LEADING_DOT = re.compile(rb"(?m)^\.")


def line_slices(message: bytes, size: int) -> Iterator[bytes]:
    """`message` in slices of about `size` bytes, each ending after a line break (a longer
    line is a slice of its own; the last slice ends where the message does)."""
    start = 0
    while start < len(message):
        cut = message.rfind(b"\n", start, start + size) + 1
        if cut <= start:
            cut = message.find(b"\n", start + size) + 1 or len(message)
        yield message[start:cut]
        start = cut


def send_data(client: smtplib.SMTP, message: bytes) -> tuple[int, bytes]:
    """DATA as `smtplib.SMTP.data` sends it (CRLF line endings, `crlf`; a line starting with a
    dot gets another; CRLF . CRLF at the end), a slice of whole lines at a time: no copy of the
    whole mail is made (smtplib makes three of a 46 MB referral). The server's reply to the
    mail; SMTPDataError when it does not answer DATA with 354."""
    client.putcmd("data")
    code, reply = client.getreply()
    if code != 354:
        raise smtplib.SMTPDataError(code, reply)
    last = b""
    for piece in line_slices(message, DATA_SLICE_BYTES):
        if last:
            client.send(last)
        last = _LEADING_DOT.sub(b"..", crlf(piece))  # a slice starts a line: ^ is right
    # The end goes with the last slice: sent alone, it waited for the server's delayed ACK of
    # the slice before it (Nagle's algorithm), 40 ms a mail.
    client.send(last + (b".\r\n" if last.endswith(b"\r\n") else b"\r\n.\r\n"))
    return client.getreply()


FAULT_CODES = (530, 534, 535, 538)  # auth or TLS required, mechanism too weak, refused
# Enhanced codes of authentication and TLS (RFC 3463, 4954, 5248; Exchange's 5.7.57 and 5.7.60
# "client not authenticated" / "not allowed to send as"). Other 5.7.x, such as 550 5.7.1
# "message refused", are about one mail; 5.7.1 at MAIL or RCPT naming relaying is ours.
FAULT_ENHANCED = {"5.7.0", "5.7.3", "5.7.8", "5.7.9", "5.7.10", "5.7.11", "5.7.14", "5.7.57"}
FAULT_ENHANCED |= {"5.7.60"}
_RELAY = re.compile(r"relay", re.IGNORECASE)
_ENHANCED = re.compile(r"\s*([245]\.\d{1,3}\.\d{1,3})(?!\d)")
_TLS_WORDS = re.compile(r"tls|ssl|encrypt", re.IGNORECASE)


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply


class SmtpTransport:
    """Sends through an SMTP server: plain, STARTTLS or TLS, optional authentication; a
    session per mail, or one for every mail sent within `kept_open()`."""

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self._kept: _KeptSession | None = None

    def send(self, sender: str, recipient: str, message: bytes) -> None:
        envelope = (parseaddr(sender)[1], recipient, message)
        if self._kept is not None:
            self._kept.send(*envelope)
            return
        with self.session() as client:
            self._transfer(client, *envelope)

    @contextmanager
    def kept_open(self) -> Iterator[None]:
        """Within the block `send` reuses one session (see `_KeptSession`), closed (QUIT) when
        the block ends; a block within the block changes nothing. For one thread: mail sent by
        another thread meanwhile would share the session."""
        if self._kept is not None:
            yield
            return
        self._kept = _KeptSession(self)
        try:
            yield
        finally:
            self._kept.close()
            self._kept = None

    @contextmanager
    def session(self) -> Iterator[smtplib.SMTP]:
        """A client connected, in TLS and signed in as configured (or SendError), closed
        (QUIT) when the block ends. `send` uses it; so does `intake doctor` (EHLO and AUTH,
        no mail)."""
        cfg = self.config
        client = self._step("connect", self._connect)
        try:
            if cfg.security == "starttls":
                context = self._step("STARTTLS", cfg.tls_context)
                self._step("STARTTLS", lambda: client.starttls(context=context))
            if cfg.auth == "oauth2":
                self._step("AUTH", lambda: self._xoauth2(client))
            elif cfg.username:
                username = cfg.username
                self._step("AUTH", lambda: client.login(username, cfg.secret() or ""))
            yield client
        finally:
            _close(client)

    def _xoauth2(self, client: smtplib.SMTP) -> None:
        """AUTH XOAUTH2 as smtp.username; a refused token is replaced by a new one once."""
        cfg = self.config
        client.ehlo_or_helo_if_needed()
        if "XOAUTH2" not in client.esmtp_features.get("auth", "").upper().split():
            raise SendError(
                "SMTP AUTH: the server does not offer XOAUTH2: check smtp.auth, and "
                'smtp.security ("starttls" or "tls": many servers offer AUTH only in TLS)',
                temporary=True,
                fault="smtp.auth and smtp.security",
            )
        user = cfg.username or ""
        token_source(cfg).sign_in(
            lambda token: _auth_xoauth2(client, user, token), smtplib.SMTPAuthenticationError
        )

    def _connect(self) -> smtplib.SMTP:
        cfg = self.config
        if cfg.security == "tls":
            context = cfg.tls_context()
            return smtplib.SMTP_SSL(
                cfg.host, cfg.port, timeout=cfg.timeout_seconds, context=context
            )
        return smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout_seconds)

    def _step(self, stage: Stage, action: Callable[[], T]) -> T:
        """Run one step of the session; its failure as a SendError."""
        try:
            return action()
        except SendError:  # already says what it is
            raise
        except ConfigError as exc:  # a password or CA file cannot be read: names the key
            key = str(exc).split(":", 1)[0]
            raise SendError(str(exc), temporary=True, fault=key) from None
        except TokenError as exc:  # no token: names the table, the endpoint and its error
            if exc.transient:  # the token endpoint is down or failing: like a server down
                check = f"the token endpoint of {self.config.credential_key} and the network"
                raise SendError(str(exc), temporary=True, unreachable=True, check=check) from None
            raise SendError(str(exc), temporary=True, fault=self.config.credential_key) from None
        except ssl.SSLCertVerificationError as exc:
            raise SendError(
                f"SMTP {stage}: the server's certificate does not verify ({exc.verify_message}): "
                "check smtp.ca_file (the CA that signed it; default: the system's) and smtp.host "
                "(a name the certificate holds)",
                temporary=True,
                fault="smtp.ca_file",
            ) from None
        except smtplib.SMTPResponseException as exc:
            raise self._refusal(exc.smtp_code, exc.smtp_error, stage) from None
        except smtplib.SMTPServerDisconnected as exc:
            raise _unreachable(exc) from None
        except smtplib.SMTPException as exc:  # STARTTLS or AUTH not offered, no usable mechanism
            fault = "smtp.security" if stage == "STARTTLS" else "smtp.username"
            raise SendError(f"SMTP {stage}: {exc}", temporary=True, fault=fault) from None
        except OSError as exc:
            raise _unreachable(exc) from None
        except Exception as exc:  # anything else before the session is up is no fault of the
            # mail: it waits (a sign-in problem holds the queue). Its class only.
            if stage == "AUTH":
                key = self.config.credential_key
                message = f"SMTP AUTH: sign-in failed ({type(exc).__name__}): check {key}"
                raise SendError(message, temporary=True, fault=key) from None
            raise _unreachable(exc) from None

    def _transfer(self, client: smtplib.SMTP, sender: str, recipient: str, data: bytes) -> None:
        """MAIL, RCPT (one recipient) and DATA (`send_data`: in SMTP line endings); a reply
        other than success as a SendError, `_Dropped` when the connection went (or 421) before
        DATA."""
        stage: Stage = "EHLO"
        try:
            client.ehlo_or_helo_if_needed()
            stage = "MAIL"
            size = [f"SIZE={crlf_size(data)}"] if client.has_extn("size") else []
            self._expect(client.mail(sender, size), "MAIL", (250,))
            stage = "RCPT"
            self._expect(client.rcpt(recipient), "RCPT", (250, 251))
            stage = "DATA"
            self._expect(send_data(client, data), "DATA", (250,))
        except smtplib.SMTPResponseException as exc:  # EHLO refused, DATA not answered by 354
            raise self._refusal(exc.smtp_code, exc.smtp_error, stage) from None
        except (OSError, smtplib.SMTPException) as exc:
            error = _unreachable(exc)
            if stage in ("MAIL", "RCPT"):
                raise _Dropped(str(error), temporary=True, unreachable=True) from None
            raise error from None

    def _expect(self, answer: tuple[int, bytes], stage: Stage, success: tuple[int, ...]) -> None:
        code, reply = answer
        if code in success:
            return
        error = self._refusal(code, reply, stage)
        if code == 421 and stage != "DATA" and error.unreachable:  # closing: it took nothing
            raise _Dropped(str(error), temporary=True, unreachable=True)
        raise error

    def _refusal(self, code: int, reply: bytes | str, stage: Stage) -> SendError:
        """What a reply other than success means: a configuration fault (530, 535, an auth or
        TLS 5.7.x, relaying denied, a STARTTLS or AUTH refused for good), the server not taking
        mail (421, a 4xx before MAIL, anything at connect or EHLO), or this mail's temporary
        (4xx) or permanent (5xx) failure."""
        text = _text(reply)
        found = _ENHANCED.match(text)
        enhanced = found.group(1) if found else ""
        message = " ".join(part for part in (f"SMTP {code}", enhanced, f"at {stage}") if part)
        message += self._hint(code, enhanced, stage)
        relaying = stage in ("MAIL", "RCPT") and enhanced == "5.7.1" and _RELAY.search(text)
        if (
            code in FAULT_CODES
            or enhanced in FAULT_ENHANCED
            or relaying
            or (stage in ("STARTTLS", "AUTH") and code >= 500)
        ):
            return SendError(message, temporary=True, fault=self._fault_keys(code, text, stage))
        if code == 421 or stage not in ("MAIL", "RCPT", "DATA"):
            return SendError(message, temporary=True, unreachable=True)
        return SendError(message, temporary=code < 500)

    def _hint(self, code: int, enhanced: str, stage: Stage) -> str:
        """What to do about a refused sign-in, where we know more than the keys: Microsoft
        365's SMTP AUTH switched off (5.7.139), or what the mail server needs before it takes
        the provider's tokens for the mailbox."""
        cfg = self.config
        if enhanced == "5.7.139":
            return (
                ": SMTP AUTH is disabled for the mailbox (or the tenant): Set-CASMailbox "
                f"-Identity {cfg.username} -SmtpClientAuthenticationDisabled $false (for the "
                "tenant: Set-TransportConfig -SmtpClientAuthenticationDisabled $false)"
            )
        if stage == "AUTH" and code >= 500 and cfg.auth == "oauth2" and cfg.oauth2 is not None:
            return f": {mailbox_access(cfg.oauth2, 'smtp')}"
        return ""

    def _fault_keys(self, code: int, text: str, stage: Stage) -> str:
        """The config keys to check for a configuration fault."""
        cfg = self.config
        if stage == "AUTH" or code == 535:
            return f"smtp.username and {cfg.credential_key}"
        if stage == "STARTTLS" or _TLS_WORDS.search(text):
            return "smtp.security"
        return "smtp.username and smtp.from" if cfg.username else "smtp.username"


class _KeptSession:
    """The session `SmtpTransport.kept_open` reuses: opened at the first mail, closed after
    any failure (a refused mail may leave it mid-transaction) and opened again for the next.
    When a reused session turns out dropped before the mail reached DATA, the mail goes over a
    new one, once: nothing of it was handed over, so nothing is sent twice."""

    def __init__(self, transport: SmtpTransport) -> None:
        self.transport = transport
        self.stack = ExitStack()
        self.client: smtplib.SMTP | None = None

    def send(self, sender: str, recipient: str, data: bytes) -> None:
        reused = self.client is not None
        try:
            self.transport._transfer(self._open(), sender, recipient, data)
        except _Dropped:
            self.close()
            if not reused:
                raise
            log.info("SMTP: the server closed the connection; sending over a new one")
            self.send(sender, recipient, data)  # over a new session: not retried again
        except BaseException:
            self.close()
            raise

    def _open(self) -> smtplib.SMTP:
        if self.client is None:
            self.client = self.stack.enter_context(self.transport.session())
        return self.client

    def close(self) -> None:
        """QUIT (or just close); never raises."""
        self.client = None
        self.stack.close()


def _auth_xoauth2(client: smtplib.SMTP, user: str, token: str) -> None:
    """AUTH XOAUTH2 with the token as the initial response; an error challenge (334 with the
    reason as JSON) is answered with an empty line, after which the server says 535."""

    def respond(challenge: bytes | None = None) -> str:
        return "" if challenge else f"user={user}\x01auth=Bearer {token}\x01\x01"

    client.auth("XOAUTH2", respond, initial_response_ok=True)


def _unreachable(exc: Exception) -> SendError:
    return SendError(f"SMTP connection: {type(exc).__name__}", temporary=True, unreachable=True)


def _close(client: smtplib.SMTP) -> None:
    """QUIT, or just close when the server is gone; never raises (the mail is settled)."""
    try:
        client.quit()
    except (OSError, smtplib.SMTPException):
        client.close()
