"""Issue 11, speed: an index that lists due outbox mail without reading the rows (on SQLite a
row's later columns sit behind its payload, so a query on them read every queued mail whole).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_outbox_due", "outbox", ["state", "urgent", "id", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_outbox_due", table_name="outbox")
