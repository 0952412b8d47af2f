"""Issue 9, nothing reaches nobody: input outcomes (the `inputs` ledger), per-source status,
urgent outbox rows first, alert kinds and subjects for `intake status`.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("source_item", sa.Column("outcome", sa.String(), nullable=True))
    op.add_column("source_item", sa.Column("source", sa.String(), nullable=True))
    op.create_index("ix_source_item_outcome", "source_item", ["outcome"])
    op.create_table(
        "source_status",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("last_success_at", WHEN, nullable=True),
        sa.Column("last_error", sa.String(), nullable=True),
        sa.Column("error_cause", sa.String(), nullable=True),
        sa.Column("error_since", WHEN, nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )
    op.add_column(
        "outbox",
        sa.Column("urgent", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column("alert", sa.Column("kind", sa.String(), nullable=True))
    op.add_column("alert", sa.Column("subject", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("alert") as batch:
        batch.drop_column("subject")
        batch.drop_column("kind")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("urgent")
    op.drop_table("source_status")
    op.drop_index("ix_source_item_outcome", table_name="source_item")
    with op.batch_alter_table("source_item") as batch:
        batch.drop_column("source")
        batch.drop_column("outcome")
