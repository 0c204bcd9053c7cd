"""The conversation store: threads, messages, runs, run events and LLM calls.

Revision ID: 0002_threads
Revises: 0001_initial
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from config.database import UTCDateTime

revision = "0002_threads"
down_revision = "0001_initial"
branch_labels = None
depends_on = None

# Written out rather than imported from threads.models, so later model changes cannot alter what
# this revision creates. Statuses are plain VARCHARs (no CHECK), as in the models.
ID = 30
THREAD_ID = 64
USER_ID = 64
NAME = 64
MODEL = 200
STATUS = 32
JSON = sa.JSON().with_variant(JSONB(), "postgresql")
COST = sa.Numeric(18, 10)


def upgrade() -> None:
    op.create_table(
        "threads",
        sa.Column("id", sa.String(THREAD_ID), nullable=False),
        sa.Column("user_id", sa.String(USER_ID), nullable=False),
        sa.Column("title", sa.String(200)),
        sa.Column("agent", sa.String(NAME), nullable=False),
        sa.Column("status", sa.String(STATUS), nullable=False),
        sa.Column("metadata", JSON, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_threads")),
    )
    op.create_index("ix_threads_user_id_updated_at", "threads", ["user_id", "updated_at", "id"])

    op.create_table(
        "messages",
        sa.Column("id", sa.String(ID), nullable=False),
        sa.Column("thread_id", sa.String(THREAD_ID), nullable=False),
        sa.Column("run_id", sa.String(ID)),
        sa.Column("role", sa.String(STATUS), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("parts", JSON, nullable=False),
        sa.Column("metadata", JSON, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
        sa.ForeignKeyConstraint(
            ["thread_id"],
            ["threads.id"],
            name=op.f("fk_messages_thread_id_threads"),
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_messages_thread_id_seq", "messages", ["thread_id", "seq"], unique=True)

    op.create_table(
        "runs",
        sa.Column("id", sa.String(ID), nullable=False),
        sa.Column("thread_id", sa.String(THREAD_ID), nullable=False),
        sa.Column("user_id", sa.String(USER_ID), nullable=False),
        sa.Column("agent", sa.String(NAME), nullable=False),
        sa.Column("model", sa.String(MODEL), nullable=False),
        sa.Column("status", sa.String(STATUS), nullable=False),
        sa.Column("finish_reason", sa.String(NAME)),
        sa.Column("error", JSON),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("cost_usd", COST),
        sa.Column("usage", JSON, nullable=False),
        sa.Column("request", JSON, nullable=False),
        sa.Column("assistant_message_id", sa.String(ID)),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime()),
        sa.Column("finished_at", UTCDateTime()),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
        sa.ForeignKeyConstraint(
            ["thread_id"],
            ["threads.id"],
            name=op.f("fk_runs_thread_id_threads"),
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_runs_thread_id_created_at", "runs", ["thread_id", "created_at"])
    op.create_index("ix_runs_thread_id_status", "runs", ["thread_id", "status"])

    op.create_table(
        "run_events",
        sa.Column("run_id", sa.String(ID), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("chunk", JSON, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "seq", name=op.f("pk_run_events")),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_run_events_run_id_runs"), ondelete="CASCADE"
        ),
    )

    op.create_table(
        "llm_calls",
        sa.Column("id", sa.String(ID), nullable=False),
        sa.Column("run_id", sa.String(ID), nullable=False),
        sa.Column("user_id", sa.String(USER_ID), nullable=False),
        sa.Column("thread_id", sa.String(THREAD_ID), nullable=False),
        sa.Column("agent", sa.String(NAME), nullable=False),
        sa.Column("model", sa.String(MODEL), nullable=False),
        sa.Column("generation_id", sa.String(MODEL)),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("cached_tokens", sa.Integer(), nullable=False),
        sa.Column("reasoning_tokens", sa.Integer(), nullable=False),
        sa.Column("cost_usd", COST),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_llm_calls")),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_llm_calls_run_id_runs"), ondelete="CASCADE"
        ),
    )
    op.create_index("ix_llm_calls_run_id", "llm_calls", ["run_id"])


def downgrade() -> None:
    # Children first; dropping a table drops its indexes.
    for table in ("llm_calls", "run_events", "runs", "messages", "threads"):
        op.drop_table(table)
