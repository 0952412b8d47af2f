"""Quarantine is recoverable: `intake quarantine list`, `intake quarantine release` by a records
keyholder and `intake show`, through the real daemon on Dovecot, the SMTP sink and gpg.

The records secret key lives in the session's `KeySet.home` (tests/servers/gpg.py), which
stands for a keyholder's own GnuPG home; the daemon's homedir never holds it. The `intake`
commands run in this process (`pipeline.cli.main`, as the console script does): a process
start costs seconds on a loaded machine.
"""

from __future__ import annotations

import csv
import getpass
import io
import json
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import gnupg
import pytest

from tests.integration.conftest import ANONYMOUS, Deployment, Intake, email
from tests.integration.forms_data import PLATFORMS, QUESTIONS, form_config
from tests.integration.test_status_attention import run_referring_nobody_by_default, status_json
from tests.servers.gpg import generate_key

LIMIT = "[limits]\nmessage_bytes = 2000\n"
QUARANTINED_BIT = 8  # run --once: a report was quarantined or routed to nobody


def big_email(marker: str, **headers: str) -> bytes:
    body = f"Someone followed me home from the library. {marker}\r\n" + "x" * 60 + "\r\n"
    return email(body * 60, **headers)


def quarantined(intake: Intake) -> list[dict[str, object]]:
    run = intake("quarantine", "list", "--json")
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def keyholder(deployment: Deployment) -> str:
    return str(deployment.keys.home)


def database(deployment: Deployment) -> sqlite3.Connection:
    return sqlite3.connect(deployment.data_dir / "intake.db")


def audit_lines(deployment: Deployment, reference: str) -> list[tuple[str, str, str]]:
    query = "SELECT actor, action, detail FROM audit WHERE reference = ? ORDER BY id"
    return list(database(deployment).execute(query, (reference,)))


@pytest.fixture
def stranger_home(tmp_path: Path) -> Iterator[Path]:
    """A GnuPG home with a secret key that is not a records key."""
    home = tmp_path / "stranger"
    home.mkdir(mode=0o700)
    generate_key(gnupg.GPG(gnupghome=str(home)), "Stranger", "stranger@example.org", None)
    yield home
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False)


def test_too_large_message_is_listed_released_after_the_limit_is_raised_and_referred_once(
    deployment: Deployment, intake: Intake
) -> None:
    deployment.write(extra=LIMIT)
    deployment.imap.append(big_email("BIG-MARK-1"))

    assert deployment.run_in_process() & QUARANTINED_BIT
    notices = len(deployment.smtp.messages)  # the too-large notice to the named sender
    (item,) = quarantined(intake)
    reference = str(item["reference"])
    assert item["channel"] == "email" and item["form"] is None and item["anonymous"] is False
    assert str(item["source"]).startswith("imap:")
    assert "message_bytes" in str(item["reason"]) and str(item["when"]).endswith("Z")
    listed = intake("quarantine", "list")
    assert reference in listed.stdout and "message_bytes" in listed.stdout
    assert "BIG-MARK" not in listed.stdout + json.dumps(item)

    still = intake("quarantine", "release", reference, "--gnupghome", keyholder(deployment))
    assert still.returncode == 1  # the limit is still too low
    assert f"{reference}: still quarantined" in still.stdout and "message_bytes" in still.stdout

    deployment.write()  # the default limits: 50 MB
    done = intake("quarantine", "release", reference, "--gnupghome", keyholder(deployment))

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{reference}: released: queued"
    assert quarantined(intake) == []
    assert deployment.run_once().returncode == 0  # the real daemon, in its own process
    (referral,) = deployment.referrals()
    assert b"BIG-MARK-1" in referral and reference.encode() in referral
    assert len(deployment.smtp.messages) == notices + 1  # the sender is not written to again
    assert deployment.run_in_process() == 0
    assert len(deployment.smtp.messages) == notices + 1  # sent once
    user = getpass.getuser()
    lines = audit_lines(deployment, reference)
    assert (user, "command", "intake quarantine release") in lines
    assert (user, "release", "email: released from quarantine: queued") in lines
    assert any(a == user and d.startswith("still quarantined: ") for a, _, d in lines)
    again = intake("quarantine", "release", reference, "--gnupghome", keyholder(deployment))
    assert again.returncode == 1 and "not quarantined" in again.stderr

    shown = intake("show", reference, "--gnupghome", keyholder(deployment))

    assert shown.returncode == 0, shown.stderr
    assert f"reference: {reference}" in shown.stdout and "state: delivered" in shown.stdout
    assert "BIG-MARK-1" in shown.stdout and "sam.student@example.ac.uk" in shown.stdout
    assert "mail: referral to advice-centre: sent" in shown.stdout
    assert "mail: ack to reporter: sent" in shown.stdout  # the too-large notice
    assert "attachments: none" in shown.stdout
    assert (user, "command", "intake show") in audit_lines(deployment, reference)  # who read it


def test_anonymous_quarantined_message_stays_anonymous_when_released(
    deployment: Deployment, intake: Intake
) -> None:
    deployment.write(extra=LIMIT)
    sender = "hidden.sender@example.ac.uk"
    deployment.imap.append(big_email("ANON-BIG-1", to=ANONYMOUS, sender=f"Hid Den <{sender}>"))
    deployment.run_in_process()
    (item,) = quarantined(intake)
    reference = str(item["reference"])
    assert item["anonymous"] is True
    deployment.write()

    done = intake("quarantine", "release", reference, "--gnupghome", keyholder(deployment))

    assert done.returncode == 0, done.stderr
    assert deployment.run_in_process() == 0
    (referral,) = deployment.referrals()
    assert b"ANON-BIG-1" in referral
    assert sender.encode() not in referral and b"Hid Den" not in referral
    assert all(sender not in m.rcpt_tos for m in deployment.smtp.messages)
    shown = intake("show", reference, "--gnupghome", keyholder(deployment))
    assert "anonymous: yes" in shown.stdout and "from: anonymous" in shown.stdout
    assert "ANON-BIG-1" in shown.stdout and sender not in shown.stdout


@pytest.mark.parametrize(
    "subject",
    [
        "=?windows-874?q?[anonymous]_?=Something happened",  # a charset Python cannot decode
        "[anonymous] Something\x07 happened",  # a stray control character
    ],
)
def test_a_marker_only_the_header_parser_reads_quarantines_as_anonymous(
    deployment: Deployment, intake: Intake, subject: str
) -> None:
    """Anonymity at quarantine fails closed: the subject as either reader decodes it counts.
    A report released as anonymous keeps its received time to the hour only."""
    deployment.write(extra=LIMIT)
    sender = "thai.outlook@example.ac.uk"
    deployment.imap.append(big_email("ANON-CS-1", subject=subject, sender=f"T O <{sender}>"))
    deployment.run_in_process()
    (item,) = quarantined(intake)
    assert item["anonymous"] is True
    deployment.write()

    reference = str(item["reference"])
    done = intake("quarantine", "release", reference, "--gnupghome", keyholder(deployment))

    assert done.returncode == 0, done.stderr
    shown = intake("show", reference, "--gnupghome", keyholder(deployment)).stdout
    received = next(line for line in shown.splitlines() if line.startswith("received:"))
    assert received.endswith(":00 UTC") and sender not in shown


def test_release_and_show_without_the_records_key_fail_clearly(
    deployment: Deployment, intake: Intake, stranger_home: Path
) -> None:
    deployment.write(extra=LIMIT)
    deployment.imap.append(big_email("NOKEY-MARK"))
    deployment.run_in_process()
    (item,) = quarantined(intake)
    reference = str(item["reference"])
    deployment.write()
    nowhere = deployment.root / "no-such-home"

    wrong = intake("quarantine", "release", reference, "--gnupghome", str(stranger_home))
    missing = intake("quarantine", "release", reference, "--gnupghome", str(nowhere))
    shown = intake("show", reference, "--gnupghome", str(stranger_home))
    unknown = intake("show", "R-2026-999999", "--gnupghome", keyholder(deployment))

    for run in (wrong, missing, shown):
        assert run.returncode == 1
        assert run.stderr.startswith("--gnupghome ") and run.stdout == ""
    assert "gpg.records_keys" in wrong.stderr and deployment.keys.records_fpr in wrong.stderr
    assert missing.stderr == (
        f"--gnupghome {nowhere}: No such file or directory; give a GnuPG home holding a records "
        "secret key\n"
    )
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == "R-2026-999999: no report with this reference"
    assert [i["reference"] for i in quarantined(intake)] == [reference]
    assert not nowhere.exists()


# -- Forms ------------------------------------------------------------------------------------

AMBIGUOUS = "03/04/2026 10:00"  # day and month could be swapped: the row is quarantined
DATE_FORMAT = 'date_format = "%d/%m/%Y %H:%M"\n'


def write_export(deployment: Deployment, marker: str) -> Path:
    """A generic export: one good response and one whose submission time is ambiguous."""
    folder = deployment.root / "exports"
    folder.mkdir(exist_ok=True)
    good = ["201", "2026-11-24T10:00:00Z", "good@example.ac.uk", "Good", "Bullying", "Fine"]
    late = ["202", AMBIGUOUS, "late@example.ac.uk", "Late", "Sexual harassment", marker]
    rows = [["id", "submitted", "email", "name", *QUESTIONS]]
    rows += [[*answers, "No", "Student", "Library"] for answers in (good, late)]
    buffer = io.StringIO(newline="")
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    path = folder / "export.csv"
    path.write_text(buffer.getvalue())
    return path


def form_setup(deployment: Deployment, after: str, date_format: str = "") -> None:
    config = form_config(PLATFORMS["generic"], "report-form", "exports", after)
    deployment.write(
        extra=config.replace("settle_seconds = 0\n", f"settle_seconds = 0\n{date_format}")
    )


def test_form_row_quarantined_by_its_date_is_released_from_the_archive(
    deployment: Deployment, intake: Intake
) -> None:
    form_setup(deployment, "archive-encrypted")
    export = write_export(deployment, "FORM-MARK-1")
    deployment.run_in_process()
    assert not export.exists()  # archived, encrypted
    (item,) = quarantined(intake)
    assert item["channel"] == "form" and item["form"] == "report-form"
    assert item["source"] == "form:report-form"
    assert str(item["reason"]).startswith("export.csv:3: 'submitted': day and month are ambiguous")
    reference = str(item["reference"])
    sent = len(deployment.referrals())

    form_setup(deployment, "archive-encrypted", DATE_FORMAT)
    done = intake("quarantine", "release", reference, "--gnupghome", keyholder(deployment))

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{reference}: released: queued"
    assert deployment.run_in_process() == 0
    new = deployment.referrals()[sent:]
    assert len(new) == 2 and all(b"FORM-MARK-1" in r for r in new)  # both services
    shown = intake("show", reference, "--gnupghome", keyholder(deployment))
    assert "FORM-MARK-1" in shown.stdout and "source: form (form report-form)" in shown.stdout
    # read day first, as configured, in the form's zone (Europe/London: BST on 3 April)
    assert "sent: 2026-04-03T09:00:00+00:00" in shown.stdout


def test_re_exported_form_row_that_reads_now_is_taken_in_not_seen(
    deployment: Deployment, intake: Intake
) -> None:
    form_setup(deployment, "keep")
    write_export(deployment, "FORM-MARK-2")
    deployment.run_in_process()
    (item,) = quarantined(intake)
    sent = len(deployment.referrals())
    deployment.run_in_process()
    assert len(quarantined(intake)) == 1  # still unreadable: it stays as it was

    form_setup(deployment, "keep", DATE_FORMAT)
    assert deployment.run_in_process() == 0

    assert quarantined(intake) == []
    new = deployment.referrals()[sent:]
    assert len(new) == 2 and all(b"FORM-MARK-2" in r for r in new)
    released = ("daemon", "release", "form: released from quarantine: queued")
    assert released in audit_lines(deployment, str(item["reference"]))
    assert deployment.run_in_process() == 0
    assert len(deployment.referrals()) == sent + 2  # the kept export is seen from now on


def test_an_unrouted_report_is_routed_again_once_the_rules_refer_it(
    deployment: Deployment, intake: Intake
) -> None:
    """The rules in force referred a report to nobody (the loader refuses such a default now,
    so the daemon's jobs run with the loaded default emptied); a keyholder releases it under
    the rules on disk and its referral goes out once; the reporter is not acknowledged twice."""
    deployment.imap.append(email("Nobody got this one. UNROUTED-1", message_id="<u1@x>"))
    assert run_referring_nobody_by_default(deployment) & QUARANTINED_BIT
    (item,) = [i for i in status_json(deployment)["attention"] if i["kind"] == "unrouted"]
    reference = str(item["reference"])
    assert deployment.referrals() == []
    acknowledgements = len(deployment.smtp.messages)

    done = intake("quarantine", "release", reference, "--gnupghome", keyholder(deployment))

    assert done.returncode == 0, done.stderr
    assert f"{reference}: released: queued" in done.stdout
    assert deployment.run_in_process() == 0
    (referral,) = deployment.referrals()
    assert b"UNROUTED-1" in referral
    assert len(deployment.smtp.messages) == acknowledgements + 1  # the referral only
    assert not [i for i in status_json(deployment)["attention"] if i["kind"] == "unrouted"]
    assert status_json(deployment)["inputs"]["unrouted"] == 0
    lines = audit_lines(deployment, reference)
    assert (getpass.getuser(), "release", "email: released from unrouted: queued") in lines
