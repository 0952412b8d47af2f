"""Deliver: rendered mail in, bytes on the wire out.

`build_referral` wraps a referral as PGP/MIME (RFC 3156 `multipart/encrypted`) encrypted to the
service's pinned key: the outer message carries only a generic subject, the addresses and the
Message-ID; the report, its real subject and its attachments exist only inside the encrypted
part. `build_acknowledgement` makes the reporter's reply (with `Auto-Submitted: auto-replied` and
`X-Report-Intake: acknowledgement`).
`SmtpTransport` sends one message and says whether a failure is temporary or permanent.
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.utils import formatdate, make_msgid, parseaddr
from typing import Protocol

from pipeline.config import SmtpConfig
from pipeline.crypto import Crypto
from pipeline.render import Rendered, one_line
from pipeline.report import Attachment


class SendError(Exception):
    """A send failed; `temporary` says whether a retry may succeed."""

    def __init__(
        self, message: str, temporary: bool, unreachable: bool = False, auth: bool = False
    ) -> None:
        super().__init__(message)
        self.temporary = temporary
        self.unreachable = unreachable  # the server itself is down: stop trying other mail
        self.auth = auth  # our credentials were refused: a configuration fault, not the mail's


class Transport(Protocol):
    def send(self, sender: str, recipient: str, message: bytes) -> None: ...


def new_message_id(from_header: str) -> str:
    domain = parseaddr(from_header)[1].partition("@")[2] or "report-intake.invalid"
    return make_msgid(domain=domain)


def referral_inner(rendered: Rendered, attachments: list[Attachment]) -> EmailMessage:
    """The part that gets encrypted: the rendered referral with its attachments."""
    inner = EmailMessage()
    inner["Subject"] = rendered.subject  # protected header (read by Thunderbird and others)
    inner.set_content(rendered.body, charset="utf-8")
    for item in attachments:
        maintype, _, subtype = item.content_type.partition("/")
        inner.add_attachment(
            item.data, maintype=maintype, subtype=subtype or "octet-stream", filename=item.filename
        )
    inner.replace_header(
        "Content-Type", inner.get("Content-Type", "text/plain") + '; protected-headers="v1"'
    )
    return inner


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
) -> bytes:
    """The referral as PGP/MIME bytes, encrypted to the one pinned `fingerprint`."""
    inner = referral_inner(rendered, attachments).as_bytes()
    return wrap_pgp_mime(
        crypto.encrypt(inner, [fingerprint]), sender, recipient, outer_subject, message_id
    )


def wrap_pgp_mime(
    armored: bytes, sender: str, recipient: str, outer_subject: str, message_id: str
) -> bytes:
    """An RFC 3156 multipart/encrypted message around an ASCII-armoured OpenPGP message."""
    outer = MIMEMultipart("encrypted", protocol="application/pgp-encrypted")
    version = MIMEApplication("Version: 1\n", "pgp-encrypted", _encoder=_noop)
    version["Content-Description"] = "PGP/MIME version identification"
    payload = MIMEApplication(armored.decode("ascii"), "octet-stream", _encoder=_noop)
    payload.set_param("name", "encrypted.asc")
    payload["Content-Description"] = "OpenPGP encrypted message"
    payload["Content-Disposition"] = 'inline; filename="encrypted.asc"'
    outer.attach(version)
    outer.attach(payload)
    _envelope_headers(outer, sender, one_line(outer_subject), message_id)
    outer["To"] = recipient
    return outer.as_bytes()


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
    """SMTP line endings (smtplib leaves bare LF in bytes alone, and servers refuse it)."""
    return message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


class SmtpTransport:
    """Sends through an SMTP server: plain, STARTTLS or TLS, optional authentication."""

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config

    def _connect(self) -> smtplib.SMTP:
        cfg = self.config
        if cfg.security == "tls":
            context = ssl.create_default_context()
            return smtplib.SMTP_SSL(
                cfg.host, cfg.port, timeout=cfg.timeout_seconds, context=context
            )
        client = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout_seconds)
        if cfg.security == "starttls":
            client.starttls(context=ssl.create_default_context())
        return client

    def send(self, sender: str, recipient: str, message: bytes) -> None:
        envelope_from = parseaddr(sender)[1]
        try:
            with self._connect() as client:
                if self.config.username:
                    client.login(self.config.username, self.config.secret() or "")
                refused = client.sendmail(envelope_from, [recipient], crlf(message))
        except smtplib.SMTPAuthenticationError as exc:
            raise SendError(f"SMTP {exc.smtp_code} authentication", True, auth=True) from None
        except smtplib.SMTPResponseException as exc:
            raise SendError(f"SMTP {exc.smtp_code}", temporary=exc.smtp_code < 500) from None
        except smtplib.SMTPRecipientsRefused as exc:
            code = next(iter(exc.recipients.values()))[0]
            raise SendError(f"SMTP {code} for recipient", temporary=code < 500) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise SendError(
                f"SMTP connection: {type(exc).__name__}", temporary=True, unreachable=True
            ) from None
        if refused:
            code = next(iter(refused.values()))[0]
            raise SendError(f"SMTP {code} for recipient", temporary=code < 500)
