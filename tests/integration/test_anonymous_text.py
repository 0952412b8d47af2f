"""Issue 8, the sender's identity in an anonymous report's text, through the real daemon on
Dovecot and gpg: an HTML-only Outlook reply marked `RE: [anonymous]`, its signature in
MsoNormal paragraphs, the sender's name in the text, and the `ATT00001.txt` Exchange makes of
the text after an inline photo never bring the sender's name or phone to a service."""

from __future__ import annotations

import io
from email import message_from_string, policy
from email.message import EmailMessage

from PIL import Image

from pipeline.scrub import SENDER_NOTE, SIGNATURE_NOTE
from tests.integration.conftest import INTAKE, Deployment

HTML = """<html><head><style>p.MsoNormal {margin:0cm}</style></head><body>
<div class="WordSection1">
<p class="MsoNormal">It happened again after the seminar. HTMLSIG-41<o:p></o:p></p>
<p class="MsoNormal">Samantha was not the only one there.<o:p></o:p></p>
<p class="MsoNormal"><o:p>&nbsp;</o:p></p>
<p class="MsoNormal">Kind regards,<o:p></o:p></p>
<p class="MsoNormal"><o:p>&nbsp;</o:p></p>
<p class="MsoNormal">Samantha Jones<o:p></o:p></p>
<p class="MsoNormal">LLB Law<o:p></o:p></p>
</div></body></html>"""
ATT = "The second photo is from the stairs.\r\n\r\nKind regards,\r\nSamantha Jones\r\n07700 900123\r\n"


def _message() -> bytes:
    photo = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(photo, "JPEG")
    message = EmailMessage()
    message["From"] = "Jones, Samantha <samantha.jones@example.ac.uk>"
    message["To"] = INTAKE
    message["Subject"] = "RE: [anonymous] the seminar"
    message["Message-ID"] = "<htmlsig@pc.example.ac.uk>"
    message.set_content(HTML, subtype="html")
    message.add_attachment(photo.getvalue(), maintype="image", subtype="jpeg", filename="i.jpg")
    message.add_attachment(
        ATT.encode("windows-1252"), maintype="text", subtype="plain", filename="ATT00001.txt"
    )
    return message.as_bytes()


def _referral_parts(deployment: Deployment) -> list[str]:
    texts = []
    for inner in deployment.referrals():
        for part in message_from_string(inner.decode(), policy=policy.default).walk():
            if part.get_content_maintype() == "text":
                texts.append(part.get_content())  # type: ignore[attr-defined]
    return texts


def test_html_mail_and_its_text_attachment_lose_the_sender(deployment: Deployment) -> None:
    deployment.imap.append(_message())

    assert deployment.run_once().returncode == 0

    parts = _referral_parts(deployment)
    whole = "\n".join(parts)
    assert "HTMLSIG-41" in whole and "The second photo is from the stairs." in whole
    for identity in ("Samantha", "Jones", "samantha.jones", "07700", "LLB"):
        assert identity not in whole, identity
    assert "[sender] was not the only one there." in whole
    assert SENDER_NOTE in whole and SIGNATURE_NOTE in whole
    assert "[anonymous]" not in whole
