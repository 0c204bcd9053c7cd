"""Crons: one row per registered cron with its next due time (claimed by a conditional UPDATE)
and its last run; runs get an index to find the oldest active ones of all threads.

Revision ID: 0009_crons
Revises: 0008_workflows
"""

import sqlalchemy as sa
from alembic import op

from config.database import UTCDateTime

revision = "0009_crons"
down_revision = "0008_workflows"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "crons",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("schedule", sa.String(100), nullable=False),
        sa.Column("next_due_at", UTCDateTime(), nullable=False),
        sa.Column("last_claimed_at", UTCDateTime(), nullable=True),
        sa.Column("last_started_at", UTCDateTime(), nullable=True),
        sa.Column("last_status", sa.String(20), nullable=True),
        sa.Column("last_duration_ms", sa.Float(), nullable=True),
        sa.Column("last_result", sa.Text(), nullable=True),
    )
    op.create_index("ix_runs_status_created_at", "runs", ["status", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_runs_status_created_at", table_name="runs")
    op.drop_table("crons")
