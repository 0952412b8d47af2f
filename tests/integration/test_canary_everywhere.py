"""Issue 8's closing check: canary strings in every field of named, anonymous and form reports,
run through the real daemon at `--verbose`, then searched for everywhere something could be left:
the database file and its WAL (SQLite) or a dump (PostgreSQL), the data folder, the temp folder,
the logs, every folder of the mailbox, and every outgoing mail, decrypted.

Named canaries may appear only inside encrypted data and in the named report's own referral;
anonymous canaries that identify the sender may appear nowhere outside the encrypted record,
not even in the anonymous report's referral.
"""

from __future__ import annotations

import io
import subprocess
import sys
from email.message import EmailMessage

import pytest
from PIL import Image

from pipeline.parse import content_fingerprint
from tests.integration.conftest import ANONYMOUS, REPO, Deployment, Run
from tests.integration.forms_data import PLATFORMS, Response, form_config
from tests.servers.postgres import USER

NAMED_BODY = "CANARY-NAMED-BODY-5k"
NAMED_SECRET = [
    "CANARY-NAMED-SUBJECT-5k",
    "canary.named5k@example.ac.uk",
    "Canary Namedfivek",
    "CANARY-NAMED-FILE-5k",
]
ANON_BODY = "CANARY-ANON-BODY-8m"  # the report itself: travels in the referral, encrypted
ANON_SECRET = [  # who sent it: nowhere but the encrypted original
    "canary.anon8m@example.org",
    "Canary Anoneightm",
    "CANARY-ANON-SUBJECT-8m",
    "203.0.113.88",  # the client IP an Exchange header carries
    "CANARY-ANON-ORG-8m",
    "07700 900888",  # a phone number in the signature
    "CANARY-ANON-EXIF-8m",
    "CANARY-ANON-FILE-8m",
]
FORWARDED_EVIDENCE = "CANARY-FORWARDED-8m"  # a forwarded message's text: evidence, referred
FORM_NAMED = Response(
    "951", "canary.formnamed5k@example.ac.uk", "Canary Formnamedk", False, "CANARY-FORM-5k"
)
FORM_ANON = Response(
    "952", "canary.formanon8m@example.ac.uk", "Canary Formanonm", True, "CANARY-FORM-8m"
)


def _photo(artist: str) -> bytes:
    image = Image.new("RGB", (8, 8), "blue")
    exif = Image.Exif()
    exif[315] = artist  # Artist
    exif[34853] = {1: "N", 2: (51.0, 30.0, 0.0)}  # GPSInfo
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif)
    return out.getvalue()


def named_mail() -> bytes:
    message = EmailMessage()
    message["From"] = f"{NAMED_SECRET[2]} <{NAMED_SECRET[1]}>"
    message["To"] = "report@example.ac.uk"
    message["Subject"] = NAMED_SECRET[0]
    message["Message-ID"] = "<named-5k@example.ac.uk>"
    message.set_content(f"{NAMED_BODY}\n\nThanks,\n{NAMED_SECRET[2]}\n")
    message.add_attachment(
        b"a note\n", maintype="text", subtype="plain", filename=f"{NAMED_SECRET[3]}.txt"
    )
    return message.as_bytes()


def anonymous_mail() -> bytes:
    """An anonymous report as Outlook writes it, with identity in headers, signature, a forwarded
    message naming the reporter as its recipient, and a photo with EXIF."""
    name, address = ANON_SECRET[1], ANON_SECRET[0]
    forwarded = EmailMessage()
    forwarded["From"] = "Harasser <harasser@example.net>"
    forwarded["To"] = f"{name} <{address}>"
    forwarded["Subject"] = "you"
    forwarded.set_content(f"{FORWARDED_EVIDENCE} message from the harasser\n")
    message = EmailMessage()
    message["From"] = f"{name} <{address}>"
    message["To"] = f'"{ANONYMOUS}" <{ANONYMOUS}>'
    message["Subject"] = ANON_SECRET[2]
    message["Message-ID"] = "<anon-8m@example.org>"
    message["Organization"] = ANON_SECRET[4]
    message["X-Forefront-Antispam-Report"] = f"CIP:{ANON_SECRET[3]};CTRY:GB;LANG:en;"
    message["X-MS-Exchange-Organization-AuthAs"] = "Internal"
    message["Disposition-Notification-To"] = address
    message["Autocrypt"] = f"addr={address}; keydata=AAAA"
    message.set_content(f"{ANON_BODY}\n\nKind regards,\n{name}\n{ANON_SECRET[5]}\n{address}\n")
    message.add_attachment(
        _photo(ANON_SECRET[6]), maintype="image", subtype="jpeg", filename=f"{ANON_SECRET[7]}.jpg"
    )
    message.add_attachment(forwarded)
    return message.as_bytes()


def run_verbose(deployment: Deployment) -> Run:
    argv = [sys.executable, str(REPO / "run_daemon.py"), "--config", str(deployment.config_path)]
    run = deployment._run([*argv, "--once", "--verbose"])
    deployment.logs.append(run.stderr)
    return run


def prepare(deployment: Deployment) -> list[bytes]:
    """Two mails in the mailbox and a form export in its folder; the mails as sent."""
    deployment.write(extra=form_config(PLATFORMS["generic"], "report-form", "exports"))
    (deployment.root / "exports").mkdir()
    PLATFORMS["generic"].write(
        deployment.root / "exports" / "x.csv", [FORM_NAMED, FORM_ANON], "utf-8", ","
    )
    raws = [named_mail(), anonymous_mail()]
    for raw in raws:
        deployment.imap.append(raw)
    return raws


def outgoing_texts(deployment: Deployment) -> list[str]:
    """Every mail the daemon sent as text: referrals decrypted, acknowledgements without the
    To header (the reporter's own address)."""
    texts = []
    for received in deployment.smtp.messages:
        inner = deployment.decrypted(received)
        if inner is not None:
            texts.append(inner.decode("utf-8", "replace"))
        else:  # an acknowledgement: addressed to the reporter, by design; what else it says
            message = received.message
            texts.append(f"{message['Subject']}\n{message.get_content()}")
    return texts


def mailbox_contents(deployment: Deployment) -> bytes:
    return b"".join(
        raw for folder in deployment.imap.folders() for raw in deployment.imap.fetch_all(folder)
    )


def check_everywhere(deployment: Deployment, database_bytes: bytes) -> None:
    everything_secret = [*NAMED_SECRET, NAMED_BODY, *ANON_SECRET, ANON_BODY, FORWARDED_EVIDENCE]
    everything_secret += [FORM_NAMED.email, FORM_NAMED.name, FORM_NAMED.description]
    everything_secret += [FORM_ANON.email, FORM_ANON.name, FORM_ANON.description]
    files = [p for p in deployment.root.rglob("*") if p.is_file() and "rules" not in p.parts]
    assert deployment.data_dir / "intake.db" in files or database_bytes
    deployment.assert_nowhere(everything_secret, files)  # data folder, WAL, temp folder, logs
    for canary in everything_secret:
        assert canary.encode() not in database_bytes, canary
    assert mailbox_contents(deployment) == b"", "the mailbox keeps no original by default"

    texts = outgoing_texts(deployment)
    anonymous_referrals = [t for t in texts if ANON_BODY in t or FORM_ANON.description in t]
    assert len([t for t in anonymous_referrals if ANON_BODY in t]) >= 1
    assert any(FORWARDED_EVIDENCE in t for t in anonymous_referrals), "forwarded evidence referred"
    for text in texts:
        for canary in [*ANON_SECRET, FORM_ANON.email, FORM_ANON.name]:
            assert canary not in text, f"{canary} left in an outgoing mail"
    named = next(t for t in texts if NAMED_BODY in t)
    assert NAMED_SECRET[1] in named and NAMED_SECRET[2] in named  # a named referral names them


def test_canaries_nowhere_on_sqlite(deployment: Deployment) -> None:
    raws = prepare(deployment)
    run = run_verbose(deployment)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "DEBUG" in run.stderr  # verbose really was on
    database = b"".join(
        p.read_bytes() for p in deployment.data_dir.glob("intake.db*") if p.is_file()
    )
    check_everywhere(deployment, database)
    # The fingerprint is keyed: the sender's own copy of the mail does not find its row.
    for raw in raws:
        assert content_fingerprint(raw).encode() not in database
    assert len(deployment.referrals()) >= 4


@pytest.mark.postgres
def test_canaries_nowhere_on_postgresql(deployment: Deployment, pg_url: str) -> None:
    deployment.database_url = pg_url
    prepare(deployment)
    run = run_verbose(deployment)
    assert run.returncode == 0, run.stderr[-2000:]
    name = pg_url.rsplit("/", 1)[1]
    dump = subprocess.run(
        ["pg_dump", "-h", "127.0.0.1", "-U", USER, "--data-only", "--inserts", name],
        capture_output=True,
        check=True,
    ).stdout
    assert b"INSERT INTO" in dump
    check_everywhere(deployment, dump)
