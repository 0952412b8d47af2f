"""The same path with the machine's PostgreSQL server as the database."""

from __future__ import annotations

import json

import psycopg

from tests.integration.conftest import Deployment, email


def test_email_end_to_end_on_postgresql(deployment: Deployment, pg_url: str) -> None:
    deployment.database_url = pg_url
    deployment.write()
    marker = "PG-MARKER-e41b"
    deployment.imap.append(email(f"Someone spiked my drink. {marker}", subject="PG-SUBJECT-77"))

    assert deployment.run_once().returncode == 0
    assert deployment.run_once().returncode == 0  # a second run sends nothing new

    messages = deployment.smtp.wait_for(3)
    assert len(messages) == 3
    counts = json.loads(deployment.intake("status", "--json").stdout)
    assert counts["reports"]["delivered"] == 1
    assert counts["outbox"] == {"queued": 0, "sent": 3, "held": 0, "failed": 0, "bounced": 0}
    with psycopg.connect(pg_url.replace("postgresql+psycopg", "postgresql")) as connection:
        dump = "\n".join(
            str(row)
            for table in ("report", "encrypted_record", "outbox", "source_item")
            for row in connection.execute(f"SELECT * FROM {table}").fetchall()
        )
    assert "R-" in dump
    for secret in (marker, "PG-SUBJECT-77", "sam.student"):
        assert secret not in dump
