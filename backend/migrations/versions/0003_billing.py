"""Billing: credits ledger, reservations, usage events with their daily rollup, webhook events.

Revision ID: 0003_billing
Revises: 0002_threads
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from config.database import UTCDateTime

revision = "0003_billing"
down_revision = "0002_threads"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")
COST = sa.Numeric(18, 10)


def _user_fk() -> sa.Column[str]:
    return sa.Column(
        "user_id", sa.String(30), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )


def upgrade() -> None:
    op.create_table(
        "credit_ledger",
        sa.Column("id", sa.String(30), primary_key=True),
        _user_fk(),
        sa.Column("delta", sa.Integer, nullable=False),
        sa.Column("balance_after", sa.Integer, nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=False),
        sa.Column("run_id", sa.String(30)),
        sa.Column("metadata", JSON, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_credit_ledger_idempotency_key")),
    )
    op.create_index("ix_credit_ledger_user_id_id", "credit_ledger", ["user_id", "id"])
    op.create_table(
        "credit_reservations",
        sa.Column("run_id", sa.String(30), primary_key=True),
        _user_fk(),
        sa.Column("reserved", sa.Integer, nullable=False),
        sa.Column("used", sa.Integer, nullable=False),
        sa.Column("released", sa.Boolean, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "usage_events",
        sa.Column("id", sa.String(30), primary_key=True),
        sa.Column("llm_call_id", sa.String(30), nullable=False),
        _user_fk(),
        sa.Column("thread_id", sa.String(64)),
        sa.Column("run_id", sa.String(30)),
        sa.Column("agent", sa.String(64), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("generation_id", sa.String(200)),
        sa.Column("prompt_tokens", sa.Integer, nullable=False),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
        sa.Column("cached_tokens", sa.Integer, nullable=False),
        sa.Column("reasoning_tokens", sa.Integer, nullable=False),
        sa.Column("cost_usd", COST, nullable=False),
        sa.Column("credits", sa.Integer, nullable=False),
        sa.Column("priced_by", sa.String(20), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("autumn_synced_at", UTCDateTime()),
        sa.UniqueConstraint("llm_call_id", name=op.f("uq_usage_events_llm_call_id")),
    )
    op.create_index("ix_usage_events_user_id_id", "usage_events", ["user_id", "id"])
    op.create_index("ix_usage_events_user_id_created_at", "usage_events", ["user_id", "created_at"])
    op.create_index("ix_usage_events_created_at", "usage_events", ["created_at"])
    op.create_index(
        "ix_usage_events_autumn_synced_at_id", "usage_events", ["autumn_synced_at", "id"]
    )
    op.create_table(
        "usage_daily",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _user_fk(),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("agent", sa.String(64), nullable=False),
        sa.Column("requests", sa.Integer, nullable=False),
        sa.Column("prompt_tokens", sa.Integer, nullable=False),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
        sa.Column("cost_usd", COST, nullable=False),
        sa.Column("credits", sa.Integer, nullable=False),
        sa.UniqueConstraint(
            "user_id", "day", "model", "agent", name=op.f("uq_usage_daily_user_id")
        ),
    )
    op.create_index("ix_usage_daily_day", "usage_daily", ["day"])
    op.create_table(
        "webhook_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("provider", sa.String(20), nullable=False),
        sa.Column("event_id", sa.String(200), nullable=False),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("payload", JSON, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("provider", "event_id", name=op.f("uq_webhook_events_provider")),
    )


def downgrade() -> None:
    for table in (
        "webhook_events",
        "usage_daily",
        "usage_events",
        "credit_reservations",
        "credit_ledger",
    ):
        op.drop_table(table)
