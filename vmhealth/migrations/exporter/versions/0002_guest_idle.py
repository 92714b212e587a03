"""exporter: guests seen I/O-idle, kept across a restart

Revision ID: exp0002
Revises: exp0001
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "exp0002"
down_revision = "exp0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "exporter_guest_idle",
        sa.Column("cluster", sa.String(128), primary_key=True),
        sa.Column("vmid", sa.Integer, primary_key=True),
        sa.Column("node", sa.String(128), nullable=False, server_default=""),
        sa.Column("io_bytes", sa.Float, nullable=False),
        sa.Column("seen_at", sa.Float, nullable=False),
        sa.Column("idle_since", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("exporter_guest_idle")
