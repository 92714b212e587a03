"""webhook: quarantine table, forced flag and action timings, index on action time

Revision ID: wh0002
Revises: wh0001
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "wh0002"
down_revision = "wh0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_quarantine",
        sa.Column("cluster", sa.String(128), primary_key=True),
        sa.Column("vmid", sa.Integer, primary_key=True),
        sa.Column("since", sa.Float, nullable=False),
        sa.Column("incident_id", sa.Integer, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
    )
    with op.batch_alter_table("webhook_action") as batch:
        batch.add_column(sa.Column("forced", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("received_at", sa.Float, nullable=True))
        batch.add_column(sa.Column("acted_at", sa.Float, nullable=True))
        batch.add_column(sa.Column("finished_at", sa.Float, nullable=True))
    op.create_index("ix_webhook_action_at", "webhook_action", ["at"])


def downgrade() -> None:
    op.drop_index("ix_webhook_action_at", "webhook_action")
    with op.batch_alter_table("webhook_action") as batch:
        batch.drop_column("finished_at")
        batch.drop_column("acted_at")
        batch.drop_column("received_at")
        batch.drop_column("forced")
    op.drop_table("webhook_quarantine")
