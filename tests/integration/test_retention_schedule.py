"""The retention purge the daemon runs itself: every `[schedule] purge_hours`, over reports whose
mail was given up or held (`undelivered`) as well as delivered ones, and over the forms'
encrypted archives."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

from pipeline.config import RetentionConfig
from pipeline.daemon import purge_job
from pipeline.retention import GIVEN_UP, archived_at, archives_due
from pipeline.store import make_engine
from tests.integration.conftest import REPO, Deployment, email
from tests.integration.test_forms_privacy import FORMS, HEADER, row, write_csv
from tests.integration.test_retention_undelivered import OLD, opened, told_long_ago


def wait_until(check: str, database: sqlite3.Connection, timeout: float = 20) -> None:
    """Until the SQL `check` gives a true first column."""
    deadline = time.monotonic() + timeout
    while not database.execute(check).fetchone()[0]:
        assert time.monotonic() < deadline, f"not within {timeout} s: {check}"
        time.sleep(0.2)


def test_the_daemon_purges_every_purge_hours(deployment: Deployment) -> None:
    schedule = "[schedule]\npoll_seconds = 1\noutbox_seconds = 1\npurge_hours = 0.0005\n"
    deployment.write(extra=f"[retention]\ndelivered = 30\n{schedule}")  # every 1.8 s
    deployment.imap.append(email("Delivered, then past its period."))
    daemon = subprocess.Popen(
        [sys.executable, str(REPO / "run_daemon.py"), "--config", str(deployment.config_path)],
        env=deployment.env(),
        cwd=deployment.root,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deployment.smtp.wait_for(2, timeout=30)
        database = sqlite3.connect(deployment.data_dir / "intake.db", timeout=10)
        wait_until("SELECT count(*) FROM report WHERE state = 'delivered'", database)
        # the purge at start found nothing due; the next one, purge_hours later, finds this
        with database:
            database.execute(f"UPDATE report SET updated_at = '{OLD}'")
        wait_until("SELECT count(*) FROM report WHERE purged_at IS NOT NULL", database)
        assert database.execute("SELECT count(*) FROM encrypted_record").fetchone() == (0,)
        database.close()
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, stderr = daemon.communicate(timeout=30)
    assert daemon.returncode == 0, stderr
    assert "purge every 0.0005h" in stderr and "retention: 1 report(s) purged" in stderr


def test_given_up_and_held_mail_go_with_their_report_waiting_mail_keeps_it(
    deployment: Deployment,
) -> None:
    deployment.write(extra="[retention]\ndelivered = 30\nundelivered = 30\n")
    for n in range(3):
        deployment.imap.append(email(f"Report {n}.", message_id=f"<r{n}@example.ac.uk>"))
    assert deployment.run_once().returncode == 0
    database = sqlite3.connect(deployment.data_dir / "intake.db")
    with database:
        # 1: its referral was dead-lettered (the report stays queued); 2: its referral is held
        # for a key that never came; 3: its referral still waits for the SMTP server
        for report, report_state, mail_state in (
            (1, "queued", "failed"),
            (2, "held", "held"),
            (3, "queued", "queued"),
        ):
            database.execute(
                "UPDATE report SET state = ?, updated_at = ? WHERE id = ?",
                (report_state, OLD, report),
            )
            database.execute(
                "UPDATE outbox SET state = ?, sealed = CASE WHEN ? = 'held' THEN x'00' END "
                "WHERE report_id = ? AND kind = 'referral'",
                (mail_state, mail_state, report),
            )
    # the admins were told of their purge long ago (a week's notice is the least)
    engine = make_engine(deployment.config().database_url)
    with engine.begin() as connection:
        for (reference,) in database.execute("SELECT reference FROM report"):
            told_long_ago(connection, reference)
    engine.dispose()

    with opened(deployment) as app:
        assert purge_job(app)

    purged = dict(database.execute("SELECT id, purged_at IS NOT NULL FROM report"))
    assert purged == {1: True, 2: True, 3: False}
    records = {r for (r,) in database.execute("SELECT DISTINCT report_id FROM encrypted_record")}
    assert records == {3}
    mail = {
        report: (state, error, erased)
        for report, state, error, erased in database.execute(
            "SELECT report_id, state, last_error, payload IS NULL AND sealed IS NULL "
            "FROM outbox WHERE kind = 'referral'"
        )
    }
    assert mail[1] == ("failed", None, 1)
    assert mail[2] == ("failed", GIVEN_UP, 1)  # given up with its report: never released now
    assert mail[3] == ("queued", None, 0)  # still to be sent: the report waits for it
    purges = database.execute("SELECT reference FROM audit WHERE action = 'purge'").fetchall()
    assert len(purges) == 2
    database.close()


def test_form_archives_older_than_the_longest_period_are_purged(deployment: Deployment) -> None:
    deployment.write(extra=FORMS)
    exports = deployment.root / "exports"
    exports.mkdir()
    write_csv(exports / "responses.csv", [HEADER, row(1, **{HEADER[6]: "No"})])
    assert deployment.run_in_process() == 0
    archive_dir = deployment.data_dir / "archive" / "csv-form"
    (recent,) = archive_dir.iterdir()  # the export, encrypted, as the daemon names it
    written = archived_at(recent)
    assert written is not None and abs(datetime.now(UTC) - written) < timedelta(minutes=5)
    old = archive_dir / "responses.csv.20250101T000000000000Z.asc"  # 30+ days before 2026-12
    shutil.copy(recent, old)
    stranger = archive_dir / "notes.txt"  # not an archive of ours: never touched
    stranger.write_text("kept")
    os.utime(stranger, (0, 0))
    namesake = archive_dir / "backup.20250101T000000000000Z.asc"  # another tool's: kept
    namesake.write_text("kept")

    # no period set: archives are kept, like the records
    forms = [(archive_dir, "exports/*.csv")]
    assert archives_due(forms, RetentionConfig()) == []
    # quarantined responses are kept, and released from the archive: it is kept too
    deployment.write(extra=FORMS + "[retention]\ndelivered = 30\n")
    assert archives_due(forms, deployment.config().retention) == []
    every = "[retention]\ndelivered = 30\nrouted = 30\nundelivered = 30\n"
    deployment.write(extra=FORMS + every + "quarantined = 400\n")
    cutoff = datetime.now(UTC) + timedelta(days=390)  # 390 days on: only the older one is due
    assert archives_due(forms, deployment.config().retention, cutoff) == [old]

    deployment.write(extra=FORMS + every + "quarantined = 60\n")
    with opened(deployment) as app:
        assert purge_job(app)
    assert sorted(archive_dir.iterdir()) == sorted([recent, stranger, namesake])
    with sqlite3.connect(deployment.data_dir / "intake.db") as database:
        (detail,) = database.execute("SELECT detail FROM audit WHERE action = 'purge'").fetchone()
    assert detail == f"form archive purged: {old}"
