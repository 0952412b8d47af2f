"""Audit: state changes and admin commands in, append-only `audit` rows out.

Each line says who (the daemon, or the OS user who ran an admin command), when, what and on
which reference; never report content. A database trigger refuses UPDATE and DELETE on the
table, so the log can only grow.
"""

from __future__ import annotations

import getpass

from sqlalchemy import Connection, text
from sqlmodel import Session

from pipeline.models import AuditRow

_SQLITE_TRIGGERS = [
    f"CREATE TRIGGER IF NOT EXISTS audit_no_{verb.lower()} BEFORE {verb} ON audit "
    "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END"
    for verb in ("UPDATE", "DELETE")
]
_POSTGRES_TRIGGERS = [
    "CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$",
    "CREATE OR REPLACE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit "
    "FOR EACH ROW EXECUTE FUNCTION audit_append_only()",
]


def make_append_only(connection: Connection) -> None:
    """Install the triggers that keep the audit table append-only (idempotent)."""
    dialect = connection.dialect.name
    statements = _POSTGRES_TRIGGERS if dialect == "postgresql" else _SQLITE_TRIGGERS
    for statement in statements:
        connection.execute(text(statement))


def current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def record(
    session: Session,
    action: str,
    reference: str | None = None,
    detail: str = "",
    actor: str = "daemon",
) -> None:
    """Add one audit line to the session's transaction (committed with the change it records)."""
    session.add(AuditRow(actor=actor, action=action, reference=reference, detail=detail))
