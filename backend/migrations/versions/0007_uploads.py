"""Uploads: one row per stored file; the object itself lives in local storage or on R2/S3.

Revision ID: 0007_uploads
Revises: 0006_presence
"""

import sqlalchemy as sa
from alembic import op

from config.database import UTCDateTime

revision = "0007_uploads"
down_revision = "0006_presence"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "uploads",
        sa.Column("id", sa.String(30), primary_key=True),
        sa.Column(
            "user_id",
            sa.String(30),
            sa.ForeignKey("users.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("content_type", sa.String(255), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_uploads_user_id_id", "uploads", ["user_id", "id"])


def downgrade() -> None:
    op.drop_table("uploads")
