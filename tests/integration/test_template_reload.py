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
