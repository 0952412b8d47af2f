"""Named mail stays named through the real daemon, with `anonymous_addresses` as in
intake.example.toml (`report+anonymous@…` listed beside the intake address `report@…`): the
recipient shapes that used to make a named report anonymous give a named referral with its
reporter, and mail to a configured anonymous address is still anonymous."""

from __future__ import annotations

from tests.integration.conftest import ANONYMOUS, INTAKE, Deployment, email

PLUS_ANONYMOUS = "report+anonymous@example.ac.uk"

#: Recipient fields of named reports, as real clients write them.
NAMED = {
    "plain": f"To: {INTAKE}",
    "boundary": f"To: {INTAKE}\r\nCc: not-anonymous@example.ac.uk",
    "envelope-suffix": f"To: {INTAKE}\r\nDelivered-To: {ANONYMOUS}.evil.com",
    "gmail-plus": f"To: {INTAKE}\r\nCc: someone+anonymous@gmail.com",
    "semicolons": f"To: {INTAKE}\r\nCc: a@x.example; <b@x.example>",
    "empty-angle": f"To: {INTAKE}\r\nCc: Student Services <>",
    "empty-group": f'To: "R" <{INTAKE}>, undisclosed-recipients:;',
    "unknown-8bit": f"To: =?unknown-8bit?q?R=E9port?= <{INTAKE}>",
    "comma-in-name": f"To: {INTAKE}\r\nCc: O'Brien, Pat <pat@x.example>",
}
ANONYMOUS_SHAPES = {"configured-plus": f"To: {PLUS_ANONYMOUS}", "plain": f"To: {ANONYMOUS}"}


def _message(number: int, key: str, fields: str) -> bytes:
    return (
        f"From: Pat Named{number} <pat.named{number}@example.org>\r\n{fields}\r\n"
        f"Subject: named {number}\r\nMessage-ID: <named-{number}@pc.example.org>\r\n"
        "Date: Tue, 24 Nov 2026 10:17:00 +0000\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        f"Someone keeps shouting at me in the corridor. NAMED-{key}\r\n"
    ).encode()


def test_named_shapes_stay_named_with_the_example_configuration(deployment: Deployment) -> None:
    configured = f'anonymous_addresses = ["{ANONYMOUS}"]'
    text = deployment.config_path.read_text()
    assert configured in text
    deployment.config_path.write_text(
        text.replace(configured, f'anonymous_addresses = ["{ANONYMOUS}", "{PLUS_ANONYMOUS}"]')
    )
    for number, (key, fields) in enumerate(NAMED.items()):
        deployment.imap.append(_message(number, key, fields))
    for number, (key, fields) in enumerate(ANONYMOUS_SHAPES.items(), start=100):
        body = f"A report to the anonymous alias. ANON-{key}"
        sender = f"Pat Anon{number} <pat.anon{number}@example.org>"
        deployment.imap.append(
            email(body, sender=sender, to=fields.removeprefix("To: "), message_id=f"<a{number}@x>")
        )

    run = deployment.run_once()

    assert run.returncode == 0, run.stderr
    referrals = [inner.decode() for inner in deployment.referrals()]
    for number, key in enumerate(NAMED):
        (referral,) = [r for r in referrals if f"NAMED-{key}\n" in r or f"NAMED-{key}\r\n" in r]
        assert "Anonymous:  no" in referral, key
        assert f"pat.named{number}@example.org" in referral, key
    for number, key in enumerate(ANONYMOUS_SHAPES, start=100):
        (referral,) = [r for r in referrals if f"ANON-{key}" in r]
        assert "Anonymous:  yes" in referral, key
        assert f"pat.anon{number}" not in referral and f"Anon{number}" not in referral, key
