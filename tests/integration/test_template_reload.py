"""A template broken while the real daemon runs: reports keep flowing with the last good
templates, the admin is alerted (kind "template"), and the fixed template is taken into use."""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.integration.conftest import ADMIN, REPO, Deployment, email
from tests.servers.smtp import Received

SENDER = "sam.student@example.ac.uk"
GREETING = "Thank you for getting in touch."


def acknowledgements(received: list[Received]) -> list[str]:
    return [m.message.get_content() for m in received if m.rcpt_tos == [SENDER]]


def wait_for_log(log: Path, text: str, before: str, timeout: float = 20) -> None:
    """Wait until the daemon's log holds `text` once more than it did in `before`."""
    count = before.count(text) + 1
    deadline = time.monotonic() + timeout
    while log.read_text().count(text) < count:
        assert time.monotonic() < deadline, f"{text!r} not logged again:\n{log.read_text()}"
        time.sleep(0.1)


def test_a_template_broken_while_the_daemon_runs(deployment: Deployment) -> None:
    templates = deployment.root / "templates"
    shutil.copytree(REPO / "templates", templates)
    deployment.write(extra="[schedule]\npoll_seconds = 1\noutbox_seconds = 1\n")
    config = deployment.config_path
    config.write_text(config.read_text().replace(f'"{REPO / "templates"}"', '"templates"'))
    ack = templates / "ack-default.txt"
    good = ack.read_text()
    ack.write_text(good.replace(GREETING, "Version one."))
    log = deployment.root / "daemon.log"
    with log.open("w") as stderr:
        daemon = subprocess.Popen(
            [sys.executable, str(REPO / "run_daemon.py"), "--config", str(config)],
            env=deployment.env(),
            stderr=stderr,
            text=True,
        )
        try:
            deployment.imap.append(email("Before the edit", message_id="<t1@x>"))
            deployment.smtp.wait_for(2, timeout=30)  # referral + acknowledgement

            broken = good.replace(GREETING, "Version two. {{ reporter_nmae }}")
            before = log.read_text()
            ack.write_text(broken + "{{ services | nosuchfilter }}\n")
            wait_for_log(log, "rules and templates not reloaded", before)
            deployment.imap.append(email("While it is broken", message_id="<t2@x>"))
            received = deployment.smtp.wait_for(5, timeout=30)  # + alert, referral, ack
            broken_status = json.loads(deployment.intake("status", "--json").stdout)

            before = log.read_text()
            ack.write_text(good.replace(GREETING, "Version three."))
            wait_for_log(log, "rules and templates reloaded", before)
            deployment.imap.append(email("After the fix", message_id="<t3@x>"))
            received = deployment.smtp.wait_for(7, timeout=30)
            fixed_status = json.loads(deployment.intake("status", "--json").stdout)
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=30)
    assert daemon.returncode == 0, log.read_text()

    first, second, third = acknowledgements(received)
    assert "Version one." in first
    assert "Version one." in second, "the last good template stays in force"
    assert "Version three." in third
    alerts = [m.message for m in received if m.rcpt_tos == [ADMIN]]
    assert len(alerts) == 1
    assert "templates have errors" in str(alerts[0]["Subject"])
    text = alerts[0].get_content()
    assert f"{ack}:3: 'reporter_nmae' is undefined" in text
    assert "No filter named 'nosuchfilter'" in text
    database = sqlite3.connect(deployment.data_dir / "intake.db")
    kinds = [kind for (kind,) in database.execute("SELECT kind FROM alert")]
    database.close()
    assert kinds == ["template"]
    listed = [item for item in broken_status["attention"] if item["kind"] == "template"]
    assert len(listed) == 1 and f"{ack}:3:" in listed[0]["reason"], broken_status["attention"]
    assert "rules and templates" not in broken_status["sources"]
    assert not [item for item in fixed_status["attention"] if item["kind"] == "template"]


def attachment_email() -> bytes:
    return (
        b"From: Sam Student <sam.student@example.ac.uk>\r\nTo: report@example.ac.uk\r\n"
        b"Subject: With a photo\r\nMessage-ID: <att-1@example.ac.uk>\r\n"
        b"Date: Tue, 24 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: text/plain\r\n\r\nSee the note. SECRET-BODY-7\r\n"
        b'--B\r\nContent-Type: text/plain; name="note.txt"\r\n'
        b'Content-Disposition: attachment; filename="note.txt"\r\n\r\nnote\r\n--B--\r\n'
    )


def test_a_template_that_fails_while_rendering_keeps_the_report_in_its_source(
    deployment: Deployment,
) -> None:
    """check-rules cannot take every branch: a referral template that fails only for a report
    with attachments leaves that report in the mailbox (nothing committed), lists the template
    (file:line) in status and alerts; once fixed, the report goes through."""
    templates = deployment.root / "templates"
    shutil.copytree(REPO / "templates", templates)
    deployment.write()
    config = deployment.config_path
    config.write_text(config.read_text().replace(f'"{REPO / "templates"}"', '"templates"'))
    referral = templates / "referral-default.txt"
    good = referral.read_text()
    line = "{% for a in report.attachments %}{% if a.filename == 'note.txt' %}{{ a.bogus.x }}{% endif %}"
    referral.write_text(good + line + "{% endfor %}\n")
    checked = deployment.intake("check-rules")
    assert checked.returncode == 0, checked.stdout  # the branch is never taken there
    deployment.imap.append(attachment_email())

    run = deployment.run_once()

    assert run.returncode & 2, run.stderr  # the item could not be taken: its source failed
    assert len(deployment.imap.uids("INBOX")) == 1  # still in the mailbox: nothing lost
    status = json.loads(deployment.intake("status", "--json").stdout)
    (listed,) = [item for item in status["attention"] if item["kind"] == "template"]
    where = f"{referral}:{good.count(chr(10)) + 1}:"
    assert listed["reason"].startswith(where), listed
    alerts = [m.message for m in deployment.smtp.messages if m.rcpt_tos == [ADMIN]]
    assert any("a template fails while rendering" in str(a["Subject"]) for a in alerts)
    assert all(b"SECRET-BODY-7" not in m.data for m in deployment.smtp.messages)
    assert "SECRET-BODY-7" not in json.dumps(status) + run.stderr

    referral.write_text(good)
    assert deployment.run_once().returncode == 0
    assert deployment.imap.uids("INBOX") == []
    assert len(deployment.referrals()) == 1
    status = json.loads(deployment.intake("status", "--json").stdout)
    assert not [item for item in status["attention"] if item["kind"] == "template"]
