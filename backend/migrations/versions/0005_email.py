"""Email outbox: one row per email to send, followed by the provider's delivery events.

Revision ID: 0005_email
Revises: 0004_plan_event_order
"""

import sqlalchemy as sa
from alembic import op

from config.database import UTCDateTime

revision = "0005_email"
down_revision = "0004_plan_event_order"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "emails",
        sa.Column("id", sa.String(30), primary_key=True),
        sa.Column("to", sa.String(320), nullable=False),
        sa.Column("subject", sa.String(998), nullable=False),
        sa.Column("html", sa.Text()),
        sa.Column("text", sa.Text()),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("provider_id", sa.String(100)),
        sa.Column("idempotency_key", sa.String(200), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("sent_at", UTCDateTime()),
        sa.UniqueConstraint("provider_id", name=op.f("uq_emails_provider_id")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_emails_idempotency_key")),
    )
    op.create_index("ix_emails_status_created_at", "emails", ["status", "created_at"])


def downgrade() -> None:
    op.drop_table("emails")
