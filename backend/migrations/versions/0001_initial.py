"""Users and projects, with each database's own full-text index over projects.

Revision ID: 0001_initial
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from config.database import UTCDateTime

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None

SQLITE_FTS = [
    # External-content FTS5 keyed on the projects rowid; triggers keep it in step.
    "CREATE VIRTUAL TABLE projects_fts USING fts5(name, description, content='projects', "
    "content_rowid='rowid', tokenize='porter unicode61 remove_diacritics 2')",
    "CREATE TRIGGER projects_fts_ai AFTER INSERT ON projects BEGIN "
    "INSERT INTO projects_fts(rowid, name, description) "
    "VALUES (new.rowid, new.name, new.description); END",
    "CREATE TRIGGER projects_fts_ad AFTER DELETE ON projects BEGIN "
    "INSERT INTO projects_fts(projects_fts, rowid, name, description) "
    "VALUES ('delete', old.rowid, old.name, old.description); END",
    "CREATE TRIGGER projects_fts_au AFTER UPDATE OF name, description ON projects BEGIN "
    "INSERT INTO projects_fts(projects_fts, rowid, name, description) "
    "VALUES ('delete', old.rowid, old.name, old.description); "
    "INSERT INTO projects_fts(rowid, name, description) "
    "VALUES (new.rowid, new.name, new.description); END",
]

POSTGRES_FTS = [
    "ALTER TABLE projects ADD COLUMN search_vector tsvector GENERATED ALWAYS AS ("
    "setweight(to_tsvector('english', coalesce(name, '')), 'A') || "
    "setweight(to_tsvector('english', coalesce(description, '')), 'B')) STORED",
    "CREATE INDEX ix_projects_search_vector ON projects USING gin (search_vector)",
]


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.String(30), primary_key=True),
        sa.Column("clerk_id", sa.String(255), nullable=False),
        sa.Column("email", sa.String(320)),
        sa.Column("name", sa.String(200)),
        sa.Column("image_url", sa.Text),
        sa.Column("plan", sa.String(20), nullable=False),
        sa.Column("credits", sa.Integer, nullable=False),
        sa.Column("onboarding_completed", sa.Boolean, nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("deleted_at", UTCDateTime()),
        sa.CheckConstraint("credits >= 0", name=op.f("ck_users_credits_non_negative")),
        sa.UniqueConstraint("clerk_id", name=op.f("uq_users_clerk_id")),
    )
    op.create_index("ix_users_email", "users", ["email"])
    op.create_index("ix_users_plan_created_at", "users", ["plan", "created_at"])
    op.create_table(
        "projects",
        sa.Column("id", sa.String(30), primary_key=True),
        sa.Column(
            "user_id", sa.String(30), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("settings", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_projects_user_id_id", "projects", ["user_id", "id"])
    op.create_index("ix_projects_user_id_status_id", "projects", ["user_id", "status", "id"])
    statements = POSTGRES_FTS if op.get_bind().dialect.name == "postgresql" else SQLITE_FTS
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE IF EXISTS projects_fts")
    op.drop_table("projects")
    op.drop_table("users")
