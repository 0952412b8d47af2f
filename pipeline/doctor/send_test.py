"""`intake doctor --send-test SERVICE`: a service id in, one encrypted test referral sent to
that service and a `Check` saying so out.

The test referral is built and sent by the code real referrals go through
(`deliver.build_referral`, PGP/MIME encrypted to the service's pinned key as keys_dir holds it;
`SmtpTransport` to the configured server), so a service that can read it can read referrals.
It is plainly a test and holds no report. The attempt is written to the audit log before the
mail is sent, and its outcome after.
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime

from sqlmodel import Session

from pipeline import audit
from pipeline.audit import current_user
from pipeline.config import Config
from pipeline.crypto import CryptoError, scratch_keyring
from pipeline.deliver import SendError, SmtpTransport, build_referral, new_message_id
from pipeline.doctor.mail import smtp_failure
from pipeline.doctor.result import FAIL, PASS, Check
from pipeline.render import Rendered
from pipeline.rules import RuleError, Service, load_ruleset
from pipeline.store import make_engine

SUBJECT = "Test referral from report-intake (no report)"
HEADER = b"X-Report-Intake: test-referral\r\n"
BODY = """\
This is a test referral from report-intake. It holds no report.

It was sent by `intake doctor --send-test {service}` on {host} at {when} UTC, encrypted
to the key pinned for {name} ({fingerprint}), the way referrals are. That you can read it
shows that referrals reach {email} and that your key opens them.

Nothing needs doing: please tell the report-intake administrators that it arrived, then
delete it.
"""


def _record(config: Config, action: str, detail: str) -> None:
    """One audit line by the OS user who ran the command."""
    engine = make_engine(config.database_url)
    try:
        with Session(engine) as session:
            audit.record(session, action, None, detail, current_user())
            session.commit()
    finally:
        engine.dispose()


def _service(config: Config, service_id: str) -> Service | Check:
    name = f"send-test {service_id}"
    try:
        services = load_ruleset(config.rules.dir).services
    except RuleError as exc:
        first = str(exc).splitlines()[0]
        return Check(name, FAIL, first, f"intake check-rules --config {config.source}")
    if service_id not in services:
        known = ", ".join(services) or "none"
        detail = f"no service '{service_id}' in services.yaml (known: {known})"
        return Check(name, FAIL, detail, "name a service id from services.yaml")
    return services[service_id]


def build_test_referral(config: Config, service: Service, message_id: str) -> bytes:
    """The test referral's bytes: PGP/MIME to the service's pinned key, as referrals are."""
    body = BODY.format(
        service=service.id,
        host=socket.gethostname(),
        when=datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
        name=service.name,
        fingerprint=service.fingerprint,
        email=service.email,
    )
    with scratch_keyring(config.gpg.binary, config.gpg.keys_dir) as crypto:
        message = build_referral(
            crypto,
            fingerprint=service.fingerprint,
            sender=config.smtp.from_,
            recipient=service.email,
            outer_subject=SUBJECT,
            message_id=message_id,
            rendered=Rendered(SUBJECT, body),
            attachments=[],
        )
    return HEADER + message


def send_test(config: Config, service_id: str) -> Check:
    """Send `service_id` a test referral; PASS naming where it went, or FAIL saying why."""
    found = _service(config, service_id)
    if isinstance(found, Check):
        return found
    service, name = found, f"send-test {service_id}"
    _record(config, "command", f"intake doctor --send-test {service.id}")
    message_id = new_message_id(config.smtp.from_)
    try:
        message = build_test_referral(config, service, message_id)
        SmtpTransport(config.smtp).send(config.smtp.from_, service.email, message)
    except CryptoError as exc:
        _record(config, "test-referral", f"{service.id}: not sent: {exc}")
        fix = f"put the service's current key into {config.gpg.keys_dir} (intake keys import FILE)"
        return Check(name, FAIL, str(exc), fix)
    except SendError as exc:
        _record(config, "test-referral", f"{service.id}: not sent: {exc}")
        return smtp_failure(name, config.smtp, exc)
    _record(config, "test-referral", f"{service.id}: sent, Message-ID {message_id}")
    detail = (
        f"sent to {service.email}, encrypted to {service.fingerprint}, Message-ID {message_id}: "
        "ask the service to confirm they could read it"
    )
    return Check(name, PASS, detail)
