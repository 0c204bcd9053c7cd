"""Presence: a user's live sessions per room, one row a session, upserted by heartbeats.

Revision ID: 0006_presence
Revises: 0005_email
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from config.database import UTCDateTime

revision = "0006_presence"
down_revision = "0005_email"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "presence",
        sa.Column("room", sa.String(100), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column(
            "user_id", sa.String(30), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("data", sa.JSON().with_variant(JSONB(), "postgresql")),
        sa.Column("joined_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("room", "session_id", "user_id", name=op.f("pk_presence")),
    )
    op.create_index("ix_presence_room_last_seen", "presence", ["room", "last_seen"])
    op.create_index("ix_presence_last_seen", "presence", ["last_seen"])


def downgrade() -> None:
    op.drop_table("presence")
