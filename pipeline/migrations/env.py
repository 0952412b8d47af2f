"""Alembic environment: runs on the connection `database.migrate` hands over (no alembic.ini, no
URL of its own), so the schema changes inside the caller's transaction and advisory lock."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

from pipeline import models  # noqa: F401  (registers the tables on SQLModel.metadata)

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying
    transactional_ddl=True,
)
with context.begin_transaction():
    context.run_migrations()
