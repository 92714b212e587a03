"""webhook: alert events, incidents and the action history

Revision ID: wh0001
Revises:
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "wh0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_event",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("fingerprint", sa.String(128), nullable=False),
        sa.Column("starts_at", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("alertname", sa.String(255), nullable=False, server_default=""),
        sa.Column("cluster", sa.String(128), nullable=True),
        sa.Column("vmid", sa.Integer, nullable=True),
        sa.Column("node", sa.String(128), nullable=False, server_default=""),
        sa.Column("name", sa.String(255), nullable=False, server_default=""),
        sa.Column("action", sa.String(32), nullable=False, server_default=""),
        sa.Column("labels", sa.Text, nullable=False, server_default="{}"),
        sa.Column("actor", sa.String(255), nullable=False, server_default="alertmanager"),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.Column("force", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("received_at", sa.Float, nullable=False),
        sa.Column("deliveries", sa.Integer, nullable=False, server_default="1"),
        sa.Column("state", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("claimed_by", sa.String(128), nullable=True),
        sa.Column("claimed_at", sa.Float, nullable=True),
        sa.Column("retry_after", sa.Float, nullable=True),
        sa.Column("result", sa.Text, nullable=False, server_default=""),
        sa.UniqueConstraint("fingerprint", "starts_at", "status", name="uq_webhook_event_key"),
    )
    op.create_index("ix_webhook_event_state", "webhook_event", ["state"])
    op.create_table(
        "webhook_incident",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("cluster", sa.String(128), nullable=False),
        sa.Column("vmid", sa.Integer, nullable=False),
        sa.Column("open_key", sa.String(160), nullable=True, unique=True),
        sa.Column("fingerprint", sa.String(128), nullable=False, server_default=""),
        sa.Column("starts_at", sa.String(64), nullable=False, server_default=""),
        sa.Column("alertname", sa.String(255), nullable=False, server_default=""),
        sa.Column("state", sa.String(16), nullable=False, server_default="open"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("opened_at", sa.Float, nullable=False),
        sa.Column("closed_at", sa.Float, nullable=True),
        sa.Column("last_attempt_at", sa.Float, nullable=True),
        sa.Column("next_attempt_at", sa.Float, nullable=True),
    )
    op.create_index("ix_webhook_incident_vm", "webhook_incident", ["cluster", "vmid"])
    op.create_table(
        "webhook_action",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("cluster", sa.String(128), nullable=False, server_default=""),
        sa.Column("node", sa.String(128), nullable=False, server_default=""),
        sa.Column("vmid", sa.Integer, nullable=True),
        sa.Column("name", sa.String(255), nullable=False, server_default=""),
        sa.Column("fingerprint", sa.String(128), nullable=False, server_default=""),
        sa.Column("event_id", sa.Integer, sa.ForeignKey("webhook_event.id"), nullable=True),
        sa.Column("incident_id", sa.Integer, sa.ForeignKey("webhook_incident.id"), nullable=True),
        sa.Column("attempt", sa.Integer, nullable=True),
        sa.Column("action", sa.String(32), nullable=False, server_default=""),
        sa.Column("outcome", sa.String(64), nullable=False),
        sa.Column("upid", sa.String(255), nullable=True),
        sa.Column("exitstatus", sa.Text, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("actor", sa.String(255), nullable=False, server_default="alertmanager"),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.UniqueConstraint("incident_id", "attempt", name="uq_webhook_action_attempt"),
    )
    op.create_index("ix_webhook_action_vm", "webhook_action", ["cluster", "vmid", "at"])


def downgrade() -> None:
    op.drop_table("webhook_action")
    op.drop_table("webhook_incident")
    op.drop_table("webhook_event")
