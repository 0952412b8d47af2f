"""Retention and the audit log: purge leaves metadata and an audit line, never content."""

from __future__ import annotations

import os
import sqlite3
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from pipeline.app import App
from pipeline.daemon import purge_job
from pipeline.store import make_engine
from tests.integration.conftest import Deployment, email


def test_purge_dry_run_then_purge_leaves_an_audit_trail(deployment: Deployment) -> None:
    deployment.write(extra="[retention]\ndelivered = 30\n")
    deployment.imap.append(email("Old report, past its retention."))
    assert deployment.run_once().returncode == 0
    database = sqlite3.connect(deployment.data_dir / "intake.db")
    database.execute("UPDATE report SET updated_at = '2020-01-01 00:00:00.000000'")
    database.commit()

    dry = deployment.intake("purge", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would purge R-" in dry.stdout and "1 report(s) and 0 form archive(s) due" in dry.stdout
    assert database.execute("SELECT count(*) FROM encrypted_record").fetchone() == (1,)

    run = deployment.intake("purge")
    assert run.returncode == 0, run.stderr
    assert database.execute("SELECT count(*) FROM encrypted_record").fetchone() == (0,)
    (purged_at, state) = database.execute("SELECT purged_at, state FROM report").fetchone()
    assert purged_at is not None and state == "delivered"  # metadata stays for statistics
    actions = [row[0] for row in database.execute("SELECT action FROM audit ORDER BY id")]
    assert actions[:2] == ["state", "state"]  # received (queued), then delivered
    assert actions[-2:] == ["command", "purge"]
    assert "Old report" not in str(database.execute("SELECT * FROM audit").fetchall())
    assert (
        "0 report(s) and 0 form archive(s) purged" in deployment.intake("purge").stdout
    )  # nothing twice


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_audit_log_is_append_only(
    deployment: Deployment, backend: str, request: pytest.FixtureRequest
) -> None:
    url = (
        request.getfixturevalue("pg_url")
        if backend == "postgres"
        else f"sqlite:///{deployment.root / 'a.db'}"
    )
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO audit (at, actor, action, detail) VALUES (CURRENT_TIMESTAMP, 'x', 'state', 'd')"
            )
        )
    for statement in ("UPDATE audit SET detail = 'changed'", "DELETE FROM audit"):
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as connection:
            connection.execute(text(statement))
    with engine.connect() as connection:
        assert connection.execute(text("SELECT detail FROM audit")).scalar_one() == "d"
    engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_daily_purge_job_purges_what_is_due_and_reclaims_space(
    deployment: Deployment, backend: str, request: pytest.FixtureRequest
) -> None:
    if backend == "postgres":
        deployment.database_url = request.getfixturevalue("pg_url")
    deployment.write(extra="[retention]\ndelivered = 30\n")
    deployment.imap.append(email("Old report for the daily job. DAILY-1"))
    deployment.imap.append(email("A recent one. DAILY-2", message_id="<m2@example.ac.uk>"))
    assert deployment.run_once().returncode == 0
    engine = make_engine(deployment.config().database_url)
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE report SET updated_at = :t WHERE id = (SELECT min(id) FROM report)"),
            {"t": datetime(2020, 1, 1, tzinfo=UTC)},
        )
    os.environ["TEST_IMAP_PASSWORD"] = deployment.imap.password
    app = App.open(deployment.config())
    try:
        assert purge_job(app) and purge_job(app)  # the second finds nothing: no error either
    finally:
        app.close()
        del os.environ["TEST_IMAP_PASSWORD"]

    with engine.connect() as connection:
        records = connection.execute(text("SELECT report_id FROM encrypted_record")).all()
        assert {r[0] for r in records} == {2}  # the recent report keeps its records
        payloads = connection.execute(
            text("SELECT report_id, payload IS NULL FROM outbox WHERE kind = 'referral'")
        ).all()
        assert {(rid, erased) for rid, erased in payloads} == {(1, True), (2, False)}
        purges = connection.execute(text("SELECT actor FROM audit WHERE action = 'purge'")).all()
        assert purges == [("daemon",)]  # once, by the daemon
    engine.dispose()
