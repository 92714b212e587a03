"""webhook: when an open incident last heard from Alertmanager, so that silent incidents expire

Revision ID: wh0004
Revises: wh0003
Create Date: 2026-12-10
"""

import sqlalchemy as sa
from alembic import op

revision = "wh0004"
down_revision = "wh0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default: an incident opened before this revision counts from its opened_at.
    with op.batch_alter_table("webhook_incident") as batch:
        batch.add_column(sa.Column("last_notified_at", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("webhook_incident") as batch:
        batch.drop_column("last_notified_at")
