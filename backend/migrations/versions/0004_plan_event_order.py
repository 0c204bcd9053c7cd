"""Users remember the Stripe event that last set their plan, so an older one delivered later is
ignored.

Revision ID: 0004_plan_event_order
Revises: 0003_billing
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_plan_event_order"
down_revision = "0003_billing"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("users", sa.Column("plan_event_created", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:  # SQLite drops columns by rebuilding
        batch.drop_column("plan_event_created")
