"""The daemon as operators run it: scheduled, stopped by SIGTERM, facing servers that are down."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from tests.integration.conftest import REPO, Deployment, email


def test_daemon_polls_on_schedule_and_stops_cleanly_on_sigterm(deployment: Deployment) -> None:
    deployment.write(extra="[schedule]\npoll_seconds = 1\noutbox_seconds = 1\n")
    deployment.imap.append(email("Report sent while the daemon runs. SCHED-1"))
    env = {**os.environ, "TEST_IMAP_PASSWORD": deployment.imap.password}
    daemon = subprocess.Popen(
        [sys.executable, str(REPO / "run_daemon.py"), "--config", str(deployment.config_path)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deployment.smtp.wait_for(2, timeout=30)
        deployment.imap.append(
            email("A second one, picked up by the next poll.", message_id="<m2@x>")
        )
        deployment.smtp.wait_for(4, timeout=30)
    finally:
        daemon.send_signal(signal.SIGTERM)
        started = time.monotonic()
        _, stderr = daemon.communicate(timeout=30)
    assert daemon.returncode == 0, stderr
    assert time.monotonic() - started < 10
    assert "daemon stopped" in stderr
    assert deployment.imap.uids("INBOX") == []


def test_imap_down_is_an_error_not_an_empty_mailbox(deployment: Deployment) -> None:
    deployment.imap.append(email("Waiting while the server is down. DOWN-1"))
    deployment.imap.stop()
    try:
        run = deployment.run_once()
        assert run.returncode == 2  # a source could not be read
        assert "poll: imap (" in run.stderr
    finally:
        deployment.imap.start()
    assert len(deployment.imap.uids("INBOX")) == 1  # still there, nothing lost

    run = deployment.run_once()
    assert run.returncode == 0, run.stderr
    assert len(deployment.smtp.wait_for(4)) == 4  # referral, acknowledgement, down, recovered


def test_smtp_down_keeps_mail_queued_until_it_is_back(deployment: Deployment) -> None:
    deployment.imap.append(email("Queued while SMTP is down. SMTPDOWN-1"))
    deployment.smtp.stop()
    try:
        run = deployment.run_once()
    finally:
        deployment.smtp.start()
    assert run.returncode == 4  # the report is stored; the mail waits for its retry
    counts = json.loads(deployment.intake("status", "--json").stdout)
    assert counts["reports"]["queued"] == 1 and counts["outbox"]["queued"] == 2
    assert deployment.imap.uids("INBOX") == []
