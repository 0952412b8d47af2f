"""The canary test: named, anonymous and form reports leave no plaintext anywhere at rest, and
an anonymous report's referral carries its body and nothing of its sender."""

from __future__ import annotations

import io
import sqlite3
from email import message_from_bytes, policy
from email.message import EmailMessage

from PIL import Image

from pipeline.store import unbundle_record
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


def _jpeg_with_location() -> bytes:
    image = Image.new("RGB", (8, 8), "red")
    exif = Image.Exif()
    exif[315] = "Jane Smithson"  # Artist
    exif[34853] = {1: "N", 2: (51.0, 30.0, 0.0)}  # GPSInfo
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif)
    return out.getvalue()


def test_anonymous_attachments_are_renamed_cleaned_or_withheld(deployment: Deployment) -> None:
    photo = _jpeg_with_location()
    message = EmailMessage()
    message["From"] = "Hidden <hidden.sender@example.org>"
    message["To"] = ANONYMOUS
    message["Subject"] = "photos"
    message.set_content("See the photo of the damage. ATTACH-BODY")
    message.add_attachment(photo, maintype="image", subtype="jpeg", filename="Jane_Smithson.jpg")
    message.add_attachment(
        b"PK\x03\x04zip", maintype="application", subtype="zip", filename="evidence.zip"
    )
    deployment.imap.append(message.as_bytes())

    assert deployment.run_once().returncode == 0

    referral = next(
        m for m in deployment.smtp.messages if m.message.get_content_type() == "multipart/encrypted"
    )
    encrypted = referral.message.get_payload()[1].get_payload(decode=True)  # type: ignore[index,union-attr]
    inner = message_from_bytes(deployment.keys.decrypt(encrypted), policy=policy.default)
    attachments = list(inner.iter_attachments())  # type: ignore[attr-defined]
    assert [a.get_filename() for a in attachments] == ["attachment-1.jpg"]
    cleaned = Image.open(io.BytesIO(attachments[0].get_payload(decode=True)))
    assert len(cleaned.getexif()) == 0
    text = inner.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    assert "ATTACH-BODY" in text and "withheld" in text and "attachment-2.zip" in text
    assert "Jane_Smithson" not in str(inner) and "Jane Smithson" not in str(inner)
    database = sqlite3.connect(deployment.data_dir / "intake.db")
    (original,) = database.execute(
        "SELECT data FROM encrypted_record WHERE kind='bundle'"
    ).fetchone()
    _, kept = unbundle_record(deployment.keys.decrypt(original))
    assert b"Jane_Smithson.jpg" in kept  # evidence kept, encrypted
