"""webhook: the evidence of events (the rules' annotations) and of decisions (what each was based on)

Revision ID: wh0003
Revises: wh0002
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "wh0003"
down_revision = "wh0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default: rows written before this revision simply carry no evidence.
    with op.batch_alter_table("webhook_event") as batch:
        batch.add_column(sa.Column("evidence", sa.Text, nullable=True))
    with op.batch_alter_table("webhook_action") as batch:
        batch.add_column(sa.Column("evidence", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("webhook_action") as batch:
        batch.drop_column("evidence")
    with op.batch_alter_table("webhook_event") as batch:
        batch.drop_column("evidence")
