"""webhook: automatic remediation paused at runtime, fleet-wide or per cluster

Revision ID: wh0005
Revises: wh0004
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "wh0005"
down_revision = "wh0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_pause",
        sa.Column("scope", sa.String(128), primary_key=True),
        sa.Column("since", sa.Float, nullable=False),
        sa.Column("actor", sa.String(255), nullable=False, server_default=""),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
    )


def downgrade() -> None:
    op.drop_table("webhook_pause")
