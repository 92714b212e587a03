"""exporter: last-seen state per guest

Revision ID: exp0001
Revises:
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "exp0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "exporter_guest_state",
        sa.Column("cluster", sa.String(128), primary_key=True),
        sa.Column("vmid", sa.Integer, primary_key=True),
        sa.Column("node", sa.String(128), nullable=False, server_default=""),
        sa.Column("hostname", sa.String(255), nullable=False, server_default=""),
        sa.Column("last_heartbeat", sa.Float, nullable=False),
        sa.Column("report", sa.Text, nullable=False, server_default="{}"),
    )


def downgrade() -> None:
    op.drop_table("exporter_guest_state")
