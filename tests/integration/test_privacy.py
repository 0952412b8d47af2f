"""The canary test: named, anonymous and form reports leave no plaintext anywhere at rest, and
an anonymous report's referral carries its body and nothing of its sender."""

from __future__ import annotations

from tests.integration.conftest import ANONYMOUS, Deployment, email
from tests.integration.forms_data import PLATFORMS, Response, form_config

NAMED = ["CANARY-NB-1a", "canary.named@example.ac.uk", "Canary Namedperson", "CANARY-NS-1b"]
ANON = ["CANARY-AB-2a", "canary.anon@example.org", "Canary Anonperson", "CANARY-AS-2b"]
FORM_NAMED = Response(
    "901", "canary.formnamed@example.ac.uk", "Canary Formnamed", False, "CANARY-FB-3a"
)
FORM_ANON = Response(
    "902", "canary.formanon@example.ac.uk", "Canary Formanon", True, "CANARY-FB-4a"
)


def test_canaries_nowhere_at_rest_and_anonymous_referral_keeps_only_the_body(
    deployment: Deployment,
) -> None:
    deployment.write(extra=form_config(PLATFORMS["generic"], "report-form", "exports"))
    (deployment.root / "exports").mkdir()
    PLATFORMS["generic"].write(
        deployment.root / "exports" / "x.csv", [FORM_NAMED, FORM_ANON], "utf-8", ","
    )
    for body, address, name, subject in (NAMED, ANON):
        to = ANONYMOUS if body == ANON[0] else "report@example.ac.uk"
        deployment.imap.append(
            email(
                body, sender=f"{name} <{address}>", subject=subject, to=to, message_id=f"<{body}@x>"
            )
        )

    assert deployment.run_once().returncode == 0
    assert deployment.intake("status").returncode == 0

    canaries = [*NAMED, *ANON, FORM_NAMED.email, FORM_NAMED.name, FORM_NAMED.description]
    canaries += [FORM_ANON.email, FORM_ANON.name, FORM_ANON.description]
    files = [p for p in deployment.root.rglob("*") if p.is_file() and "rules" not in p.parts]
    assert any(p.name == "intake.db" for p in files)
    assert any(p.suffix == ".asc" for p in files)  # the export, archived encrypted
    deployment.assert_nowhere(canaries, files)
    referrals = []
    for received in deployment.smtp.messages:
        if received.message.get_content_type() == "multipart/encrypted":
            encrypted = received.message.get_payload()[1].get_payload(decode=True)  # type: ignore[index,union-attr]
            referrals.append(deployment.keys.decrypt(encrypted).decode())
    anonymous = [r for r in referrals if ANON[0] in r or FORM_ANON.description in r]
    assert any(ANON[0] in r for r in anonymous) and any(
        FORM_ANON.description in r for r in anonymous
    )
    for referral in anonymous:
        for canary in (*ANON[1:], FORM_ANON.email, FORM_ANON.name):
            assert canary not in referral
    named = next(r for r in referrals if NAMED[0] in r)
    assert all(canary in named for canary in NAMED)
