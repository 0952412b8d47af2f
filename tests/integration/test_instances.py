"""Several daemons on one PostgreSQL database share the work: each referral exactly once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter

from tests.integration.conftest import REPO, Deployment, email

BACKLOG = 500


def test_three_daemons_on_one_database_send_each_referral_once(
    deployment: Deployment, pg_url: str
) -> None:
    deployment.database_url = pg_url
    deployment.write(extra="[schedule]\npoll_seconds = 1\noutbox_seconds = 1\n")
    with deployment.imap.client() as imap:
        for n in range(BACKLOG):
            sender = f"Student {n} <student{n}@example.ac.uk>"
            imap.append("INBOX", email(f"Backlog {n}", sender=sender, message_id=f"<b{n}@x>"))
    argv = [sys.executable, str(REPO / "run_daemon.py"), "--config", str(deployment.config_path)]
    started = time.monotonic()
    log_files = [(deployment.root / f"daemon-{n}.log").open("w") for n in range(3)]
    daemons = [  # logs to files: a full stderr pipe would block the daemon
        subprocess.Popen(argv, env=deployment.env(), stderr=out, text=True) for out in log_files
    ]
    try:
        deployment.smtp.wait_for(2 * BACKLOG, timeout=240)
        elapsed = time.monotonic() - started
        time.sleep(2)  # anything sent twice would arrive now
    finally:
        for daemon in daemons:
            daemon.send_signal(signal.SIGTERM)
        for daemon, out in zip(daemons, log_files, strict=True):
            daemon.wait(timeout=30)
            out.close()
    logs = [(deployment.root / f"daemon-{n}.log").read_text() for n in range(3)]
    assert [daemon.returncode for daemon in daemons] == [0, 0, 0], logs
    ids = Counter(str(m.message["Message-ID"]) for m in deployment.smtp.messages)
    assert len(ids) == 2 * BACKLOG
    assert max(ids.values()) == 1
    senders = [log.count(" sent\n") for log in logs]
    assert sum(senders) == 2 * BACKLOG
    assert sum(1 for n in senders if n) >= 2  # the outbox work was shared
    counts = json.loads(deployment.intake("status", "--json").stdout)
    assert sum(counts["reports"].values()) == BACKLOG  # every report stored once
    assert counts["outbox"]["sent"] == 2 * BACKLOG
    print(f"{BACKLOG} reports through 3 daemons in {elapsed:.1f} s; mail sent per daemon {senders}")
