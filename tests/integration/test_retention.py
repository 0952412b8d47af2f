"""Retention and the audit log: purge leaves metadata and an audit line, never content."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

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
    assert "would purge R-" in dry.stdout and "1 report(s) due" in dry.stdout
    assert database.execute("SELECT count(*) FROM encrypted_record").fetchone() == (2,)

    run = deployment.intake("purge")
    assert run.returncode == 0, run.stderr
    assert database.execute("SELECT count(*) FROM encrypted_record").fetchone() == (0,)
    (purged_at, state) = database.execute("SELECT purged_at, state FROM report").fetchone()
    assert purged_at is not None and state == "delivered"  # metadata stays for statistics
    actions = [row[0] for row in database.execute("SELECT action FROM audit ORDER BY id")]
    assert actions[:2] == ["state", "state"]  # received (queued), then delivered
    assert actions[-2:] == ["command", "purge"]
    assert "Old report" not in str(database.execute("SELECT * FROM audit").fetchall())
    assert "0 report(s) purged" in deployment.intake("purge").stdout  # nothing twice


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
